package enrich_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
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
// instance's confirmations, not its avatars: the rest of the rows reported missing are answered
// with existence unknown (NULL, unchecked) for a later run, and the run ends normally.
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
		"exists_whatsapp AND exists_source = 'checkWhatsapp'":     4,
		"exists_whatsapp IS NULL AND exists_source = 'unchecked'": 16,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d (%+v)", where, got, want, sum)
		}
	}
}

// TestConfirmFailureLeavesTheAnswer: a confirmation that fails for a reason of its own (a 429, a
// server error) is nobody's row fault: it is tried again after a backoff (RetryInRun times), and
// when it still fails the row is answered with GetAvatar's avatar and existence unknown
// (unchecked, for a later run), no attempt spent, and the run goes on confirming.
func TestConfirmFailureLeavesTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(40)...)
	var mu sync.Mutex
	tries := map[string]int{}
	api := confirmAPI(func(tg greenapi.Target, _ int) (bool, error) {
		mu.Lock()
		tries[tg.String()]++
		first := tries[tg.String()] == 1
		mu.Unlock()
		switch {
		case strings.HasSuffix(tg.String(), "7"):
			return false, apiErr(greenapi.ClassTransient, 502, "server error (HTTP 502)")
		case first:
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
		"status = 'done' AND attempts = 0":                        40,
		"exists_whatsapp IS NULL AND exists_source = 'unchecked'": 4, // ending in 7: every try failed
		"exists_whatsapp AND exists_source = 'checkWhatsapp'":     4, // ending in 3: a 429, then the answer
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
	if got := len(api.checked()); got != 4*3+4*2 {
		t.Errorf("%d confirmations, want 20: 3 tries for each row ending in 7, 2 for each ending in 3", got)
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

// todayAPI answers as today's edition does, by the number's last digit: 0-3 a link, 4 available
// false (hidden), 5 an inlined base64Avatar and no link, 6-9 {"urlAvatar":"","available":true};
// of those, CheckWhatsapp says 6 and 7 have an account, 8 and 9 none. Groups answer with a link
// or not, by the same rule.
func todayAPI(check func(tg greenapi.Target, n int) (bool, error)) *fakeAPI {
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		s := strings.TrimSuffix(strings.TrimSuffix(tg.String(), "@c.us"), "@g.us")
		switch d := s[len(s)-1]; {
		case d <= '3':
			return greenapi.Avatar{Available: yes(), URLAvatar: "https://pps.whatsapp.net/v/" + s + ".jpg"}, nil
		case d == '4':
			no := false
			return greenapi.Avatar{Available: &no}, nil
		case d == '5':
			return greenapi.Avatar{Available: yes(), Base64Avatar: "/9j/4AAQSkZJRg=="}, nil
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	if check == nil {
		check = func(tg greenapi.Target, _ int) (bool, error) {
			d := tg.String()[len(tg.String())-1]
			return d == '6' || d == '7', nil
		}
	}
	api.check = check
	return api
}

// TestExistenceToday: against today's edition ({urlAvatar, available}) every personal row gets
// its existence: a link, an inlined image or available false say it exists (source avatar, no
// CheckWhatsapp call); {"urlAvatar":"","available":true} is asked of CheckWhatsapp (source
// checkWhatsapp, true or false). Groups are never asked, and keep existence NULL.
func TestExistenceToday(t *testing.T) {
	t.Parallel()
	b := setup(t)
	insertTargets(t, b.pool, append(phones(100), "79000000003-1581234048@g.us", "79000000008-1581234048@g.us"))
	api := todayAPI(nil)
	cfg := config(api)
	cfg.ConfirmMissing = true
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(api.checked()); got != 40 {
		t.Errorf("%d CheckWhatsapp calls, want 40: the personal rows without a link, an image or available false", got)
	}
	for _, c := range api.checked() {
		if strings.HasSuffix(c, "@g.us") {
			t.Errorf("group %s asked of CheckWhatsapp", c)
		}
	}
	for where, want := range map[string]int{
		"status = 'done'": 102,
		"exists_whatsapp AND exists_source = 'avatar' AND url_avatar <> ''":                     40,
		"exists_whatsapp AND exists_source = 'avatar' AND NOT avatar_available":                 10,
		"exists_whatsapp AND exists_source = 'avatar' AND avatar_available AND url_avatar = ''": 10, // the inlined image
		"exists_whatsapp AND exists_source = 'checkWhatsapp'":                                   20,
		"NOT exists_whatsapp AND exists_source = 'checkWhatsapp'":                               20,
		"chat_id LIKE '%@g.us' AND exists_whatsapp IS NULL AND exists_source IS NULL":           2,
		"exists_whatsapp IS NULL AND chat_id IS NULL":                                           0,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
	want := map[string]int64{"avatar": 60, "checkWhatsapp": 40, "none": 2}
	for k, v := range want {
		if sum.Existence[k] != v {
			t.Errorf("summary existence %v, want %v", sum.Existence, want)
			break
		}
	}
	if sum.ExistsUnknown != 0 {
		t.Errorf("summary exists unknown %d, want 0", sum.ExistsUnknown)
	}
}

// TestExistenceChecksOff: with ConfirmMissing off (greenapi.confirm_missing = false) no
// CheckWhatsapp call is made; what the avatar says is still recorded, and the rest is left
// unchecked (NULL), which a later run with the checks on takes up again (Refresh with
// ExistsUnknown) and completes.
func TestExistenceChecksOff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(50)...)
	api := todayAPI(nil)
	sum, err := runOnce(t, context.Background(), b.store, config(api))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(api.checked()); got != 0 {
		t.Fatalf("%d CheckWhatsapp calls with the checks off", got)
	}
	if got := b.count(t, "exists_whatsapp IS NULL AND exists_source = 'unchecked'"); got != 20 || sum.ExistsUnknown != 20 {
		t.Fatalf("%d rows unchecked (summary %d), want 20", got, sum.ExistsUnknown)
	}
	// Refresh without ExistsUnknown leaves them; with it, they are pending again.
	if n, err := b.store.Refresh(context.Background(), store.RefreshPolicy{}); err != nil || n != 0 {
		t.Fatalf("refresh without the checks moved %d, %v", n, err)
	}
	if n, err := b.store.Refresh(context.Background(), store.RefreshPolicy{ExistsUnknown: true}); err != nil || n != 20 {
		t.Fatalf("refresh with the checks moved %d, %v; want the 20 unchecked rows", n, err)
	}
	cfg := config(api)
	cfg.ConfirmMissing = true
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "status = 'done' AND exists_whatsapp IS NOT NULL"); got != 50 || len(api.checked()) != 20 {
		t.Errorf("after the second run %d rows with existence known, %d checks; want 50 and 20", got, len(api.checked()))
	}
}

// TestBadPhoneNumberIsTheRows: CheckWhatsapp's "bad phone number, valid 11 or 12 digits" is the
// row's own and permanent: the row keeps GetAvatar's answer, done, no attempt spent, existence
// NULL with exists_source badPhoneNumber; it is asked once, and a later run does not take it up
// again.
func TestBadPhoneNumberIsTheRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(30)...)
	api := todayAPI(func(tg greenapi.Target, _ int) (bool, error) {
		if strings.HasSuffix(tg.String(), "9") {
			return false, apiErr(greenapi.ClassInvalid, 400, "bad phone number, valid 11 or 12 digits")
		}
		return true, nil
	})
	cfg := config(api)
	cfg.ConfirmMissing = true
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	for where, want := range map[string]int{
		"status = 'done' AND attempts = 0": 30,
		"exists_whatsapp IS NULL AND exists_source = 'badPhoneNumber' AND avatar_available AND url_avatar = ''": 3,
		"exists_whatsapp IS NULL AND exists_source IS DISTINCT FROM 'badPhoneNumber'":                           0,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
	if got := len(api.checked()); got != 12 {
		t.Errorf("%d CheckWhatsapp calls, want 12 (each no-link row once)", got)
	}
	if n, err := b.store.Refresh(context.Background(), store.RefreshPolicy{ExistsUnknown: true}); err != nil || n != 0 {
		t.Errorf("refresh moved %d rows (%v): a number CheckWhatsapp refused must not be asked again", n, err)
	}
}

// inlineKeeper is a keeper that also keeps inlined images.
type inlineKeeper struct{ keeper }

func (inlineKeeper) KeepData(_ context.Context, b64 string) (string, error) {
	return strings.Repeat("cd", 32), nil
}

// TestKeepInlinedAvatar: an answer's base64Avatar counts as an avatar (the account exists) and,
// with images kept, is kept from the answer itself, link or not.
func TestKeepInlinedAvatar(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(10)...)
	cfg := config(todayAPI(nil))
	cfg.ConfirmMissing = true
	cfg.Avatars = inlineKeeper{}
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	for where, want := range map[string]int{
		"url_avatar = '' AND avatar_sha256 = repeat('cd', 32) AND exists_whatsapp AND exists_source = 'avatar'": 1,
		"url_avatar LIKE '%.jpg' AND avatar_sha256 = repeat('ab', 32)":                                          4,
	} {
		if got := b.count(t, where); got != want {
			t.Errorf("rows where %s: %d, want %d", where, got, want)
		}
	}
}

// TestCheckWaitsOutStarting: a check that meets the instance starting pauses the instance, as a
// GetAvatar call would, and is made again once it runs: the row gets CheckWhatsapp's answer, not
// unchecked.
func TestCheckWaitsOutStarting(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(10)...)
	api := todayAPI(func(tg greenapi.Target, n int) (bool, error) {
		if n == 0 {
			return false, apiErr(greenapi.ClassStarting, 400, greenapi.ReasonStarting)
		}
		return true, nil
	})
	cfg := config(api)
	cfg.ConfirmMissing = true
	cfg.Workers = 1
	if _, err := runOnce(t, context.Background(), b.store, cfg); err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "exists_whatsapp AND exists_source = 'checkWhatsapp'"); got != 4 || len(api.checked()) != 5 {
		t.Errorf("%d rows from checkWhatsapp after %d checks, want 4 after 5 (the starting one made again)", got, len(api.checked()))
	}
}
