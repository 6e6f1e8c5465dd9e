package enrich_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/greenapi"
)

// confirmAPI reports the numbers ending in 3 or 7 as missing (existsWhatsapp false): those ending
// in 3 have an account (CheckWhatsapp says true), those ending in 7 have none.
func confirmAPI(check func(t greenapi.Target, n int) (bool, error)) *fakeAPI {
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		s := tg.String()
		if strings.HasSuffix(s, "3") || strings.HasSuffix(s, "7") {
			no := false
			return greenapi.Avatar{ExistsWhatsapp: &no}, nil
		}
		return greenapi.Avatar{ExistsWhatsapp: yes(), Available: yes()}, nil
	})
	api.check = check
	return api
}

// TestConfirmMissing: with ConfirmMissing, every "no account" GetAvatar answer is asked again
// with CheckWhatsapp, and the row keeps the confirmed value and where it came from; rows with an
// account are not asked.
func TestConfirmMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(100)...)
	api := confirmAPI(func(tg greenapi.Target, _ int) (bool, error) {
		return strings.HasSuffix(tg.String(), "3"), nil
	})
	cfg := config(api)
	cfg.ConfirmMissing = true
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(api.checked()); got != 20 || sum.Calls["checkWhatsapp ok"] != 20 {
		t.Fatalf("%d CheckWhatsapp calls (summary %v), want 20: the rows reported missing only", got, sum.Calls)
	}
	for where, want := range map[string]int{
		"exists_whatsapp AND exists_source = 'checkWhatsapp'":     10, // ending in 3: corrected
		"NOT exists_whatsapp AND exists_source = 'checkWhatsapp'": 10, // ending in 7: confirmed
		"exists_whatsapp AND exists_source = 'getAvatar'":         80,
		"status = 'done'": 100,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
}

// TestConfirmQuotaStopsOnlyConfirmations: CheckWhatsapp's 466 (its own quota) ends the
// instance's confirmations, not its avatars: the rest of the rows reported missing keep GetAvatar's
// answer, marked as such, and the run ends normally.
func TestConfirmQuotaStopsOnlyConfirmations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(100)...)
	api := confirmAPI(func(tg greenapi.Target, n int) (bool, error) {
		if n >= 4 {
			return false, apiErr(greenapi.ClassUnusable, 466, "QUOTE_EXCEEDED")
		}
		return true, nil
	})
	cfg := config(api)
	cfg.ConfirmMissing = true
	cfg.Workers = 1 // confirmations in order, so exactly the fifth is the first refused
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatalf("run: %v: a spent CheckWhatsapp quota must not stop the run", err)
	}
	if got := len(api.checked()); got != 5 {
		t.Fatalf("%d CheckWhatsapp calls, want 5 (4 answered, then the 466, then none)", got)
	}
	for where, want := range map[string]int{
		"status = 'done'": 100,
		"exists_whatsapp AND exists_source = 'checkWhatsapp'": 4,
		"NOT exists_whatsapp AND exists_source = 'getAvatar'": 16,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d (%+v)", where, got, want, sum)
		}
	}
}

// TestConfirmFailureLeavesTheAnswer: a confirmation that fails for a reason of its own (a 429, a
// server error) is nobody's row fault: the row is answered with GetAvatar's value, marked as
// such, no attempt spent, and the run goes on confirming.
func TestConfirmFailureLeavesTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(40)...)
	api := confirmAPI(func(tg greenapi.Target, n int) (bool, error) {
		if n%2 == 0 {
			return false, apiErr(greenapi.ClassRateLimited, 429, "")
		}
		return true, nil
	})
	cfg := config(api)
	cfg.ConfirmMissing = true
	cfg.Workers = 1
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	for where, want := range map[string]int{
		"status = 'done' AND attempts = 0":                    40,
		"NOT exists_whatsapp AND exists_source = 'getAvatar'": 4, // the refused confirmations
		"exists_whatsapp AND exists_source = 'checkWhatsapp'": 4,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
	if got := len(api.checked()); got != 8 {
		t.Errorf("%d confirmations, want one per row reported missing (8): a failure stops none", got)
	}
}

// keeper is an Avatars that keeps links ending in ".jpg" and fails the others.
type keeper struct{}

func (keeper) Keep(_ context.Context, link string) (string, error) {
	if strings.HasSuffix(link, ".jpg") {
		return strings.Repeat("ab", 32), nil
	}
	return "", errors.New("download failed")
}

// TestKeepAvatarFailureLeavesTheAnswer: a download that fails is nobody's row fault: the row is
// done with its link and no image; a kept image is recorded.
func TestKeepAvatarFailureLeavesTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(20)
	b.insertPhones(t, ps...)
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		url := "https://pps.whatsapp.net/v/" + tg.String() + ".jpg"
		if strings.HasSuffix(tg.String(), "5") {
			url = "https://pps.whatsapp.net/v/" + tg.String() + ".gone"
		}
		return greenapi.Avatar{Available: yes(), URLAvatar: url}, nil
	})
	cfg := config(api)
	cfg.Avatars = keeper{}
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	for where, want := range map[string]int{
		"status = 'done' AND attempts = 0":                             20,
		"url_avatar LIKE '%.gone' AND avatar_sha256 IS NULL":           2,
		"url_avatar LIKE '%.jpg' AND avatar_sha256 = repeat('ab', 32)": 18,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
}
