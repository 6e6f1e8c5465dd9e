package enrich_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// bodyRecorder keeps a copy of what a handler writes.
type bodyRecorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (b *bodyRecorder) Write(p []byte) (int, error) {
	b.buf.Write(p)
	return b.ResponseWriter.Write(p)
}

// TestEndToEnd puts 2,000 rows through real runs: the real client over loopback HTTP to the
// simulator, the real store on PostgreSQL. The simulator restarts one instance for 2 s, makes
// 3% of numbers time out twice, answers 3% first with a 200 carrying no documented field and 5%
// of requests with a 5xx, speaks every edition and both error body forms; the table holds
// invalid numbers and group chatIds. Every row must end
// with the simulator's truth, invalid rows must never reach it, and a run paced at the
// simulator's own limit must get no 429.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	const rps = 200
	ctx := context.Background()

	simCfg := simulator.Config{
		Edition: simulator.EditionMixed, ErrorBody: simulator.ErrorBodyMixed, Seed: 42,
		ServerErrorRate: 0.05, TimeoutRate: 0.03, TimeoutTimes: 2, EmptyRate: 0.03,
		LatencyMedian: 2 * time.Millisecond, LatencyP99: 40 * time.Millisecond,
	}
	// The simulator's bucket holds 50 ms of requests: the jitter between a request leaving the
	// client's limiter and reaching the handler on a loaded 2-core machine, not extra budget.
	burst := rps / 20
	for i, id := range []string{"1101000001", "1101000002"} {
		in := simulator.Instance{ID: id, Token: "token-" + id, RPS: rps, Burst: burst}
		if i == 0 {
			// At its 200th getAvatar request, well inside the first run, whatever the machine's
			// speed: that request and those of the next 2 s are answered "starting".
			in.StartingAfterRequests, in.StartingFor = 200, 2*time.Second
		}
		simCfg.Instances = append(simCfg.Instances, in)
	}
	pool := pgtest.NewPool(t)
	// The store's clock can be moved forward between runs, so rows rescheduled for later come
	// due without the test waiting for them.
	var skew atomic.Int64
	st, err := store.New(pool, store.Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}

	var valid, invalid []string
	for i := range 1900 {
		switch {
		case i%40 == 0:
			valid = append(valid, fmt.Sprintf("7900%07d-%d@g.us", i, 1581234048+i))
		case i%97 == 0:
			valid = append(valid, fmt.Sprintf("1203630%011d@g.us", i))
		case i%13 == 0:
			valid = append(valid, fmt.Sprintf("+7 (900) %03d-%02d-%02d", i/10000, (i/100)%100, i%100))
		case i%11 == 0:
			valid = append(valid, fmt.Sprintf("38050%07d@c.us", i))
		case i%17 == 0: // Brazil's 13 digits
			valid = append(valid, fmt.Sprintf("55119%08d", i))
		case i%19 == 0: // Singapore's 10 digits
			valid = append(valid, fmt.Sprintf("659%07d@c.us", i))
		default:
			valid = append(valid, fmt.Sprintf("7900%07d", i))
		}
	}
	for i := range 100 {
		invalid = append(invalid, []string{
			fmt.Sprintf("%d", 1000+i), fmt.Sprintf("7900%012d", i), fmt.Sprintf("phone %d", i),
			fmt.Sprintf(" 7900%07d@c.us", i), fmt.Sprintf("7900%07d@g.us", i),
		}[i%5])
	}
	insertTargets(t, pool, append(valid, invalid...))

	// The simulator starts now; its starting window opens at instance 1's 200th getAvatar.
	sim, err := simulator.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	// The run meets the starting window either through a GetAvatar answer or, when the instance
	// was already paused (a 5xx on the pre-flight check pauses it as unreachable), through a
	// state probe that finds it starting: both are the pause this test covers.
	var probedStarting atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/getStateInstance/") {
			sim.ServeHTTP(w, r)
			return
		}
		body := &bodyRecorder{ResponseWriter: w}
		sim.ServeHTTP(body, r)
		if strings.Contains(body.buf.String(), `"starting"`) {
			probedStarting.Add(1)
		}
	}))
	t.Cleanup(srv.Close)

	var clients []enrich.Instance
	for _, in := range simCfg.Instances {
		cl, err := greenapi.New(greenapi.Config{APIURL: srv.URL, IDInstance: in.ID, Token: in.Token,
			HTTPClient: greenapi.NewHTTPClient(32)})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, enrich.Instance{API: cl, RPS: rps})
	}
	var runs int
	var starting int64
	for runs = 1; runs <= 10; runs++ {
		r, err := enrich.NewRunner(st, enrich.Config{
			Owner: fmt.Sprintf("e2e-%d", runs), Instances: clients, Workers: 16, BatchSize: 100,
			FlushInterval: 20 * time.Millisecond, Retry: enrich.Backoff{Base: 10 * time.Millisecond, Max: time.Second},
			ProgressInterval: -1, Rand: enrich.LockedRand(uint64(runs)), Budget: st, ConfirmMissing: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		sum, err := r.Run(ctx)
		if err != nil {
			t.Fatalf("run %d: %v (%+v)", runs, err, sum)
		}
		t.Logf("run %d: %+v", runs, sum)
		starting += sum.Calls["getAvatar starting"]
		rep, err := st.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.ByStatus[store.StatusPending] == 0 {
			break
		}
		skew.Add(int64(2 * time.Hour)) // the next night
	}
	t.Logf("the starting window met by %d GetAvatar answers and %d state checks", starting, probedStarting.Load())
	if starting == 0 && probedStarting.Load() == 0 {
		t.Errorf("no call met the starting window: the test does not cover the pause")
	}
	if runs > 4 {
		t.Errorf("took %d runs; rows time out at most twice, so 3 should do", runs)
	}

	stats := sim.Stats()
	for id, in := range stats.Instances {
		if in.TooMany != 0 {
			t.Errorf("instance %s: %d answers 429 with the run paced at the simulator's limit (most in any second: %d)",
				id, in.TooMany, in.MaxInAnySecond)
		}
		t.Logf("instance %s: %d requests, most in any 1 s window %d (limit %d rps + burst %d)",
			id, in.Requests, in.MaxInAnySecond, rps, burst)
	}
	empties := 0
	for _, in := range stats.Instances {
		empties += in.Empty
	}
	if empties == 0 {
		t.Errorf("no 200 without a documented field was answered: the test does not cover them")
	}
	t.Logf("%d answers were 200s without a documented field; their rows were called again", empties)
	if stats.Invalid != 0 {
		t.Errorf("%d requests named an invalid number: local validation must stop them", stats.Invalid)
	}
	for _, bad := range invalid {
		if n := sim.Calls(bad); n != 0 {
			t.Errorf("invalid %q reached the simulator %d times", bad, n)
		}
	}

	rows, err := pool.Query(ctx, `SELECT coalesce(chat_id, phone_number), status, exists_whatsapp, avatar_available,
		url_avatar, reason, attempts, locked_by, exists_source FROM contacts`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		target, status string
		exists, avail  *bool
		url, reason    *string
		attempts       int
		lockedBy       *string
		source         *string
		unchecked      int
		seen           = map[string]bool{}
	)
	isInvalid := map[string]bool{}
	for _, s := range invalid {
		isInvalid[s] = true
	}
	categories := map[string]int{}
	otherLengths := map[string]int{} // rows of 10 or 13 digits, by edition and status
	_, err = pgx.ForEachRow(rows, []any{&target, &status, &exists, &avail, &url, &reason, &attempts, &lockedBy, &source}, func() error {
		seen[target] = true
		if lockedBy != nil {
			t.Errorf("%s left locked by %s", target, *lockedBy)
		}
		if isInvalid[target] {
			if status != "failed" || !strings.HasPrefix(deref(reason), "not a phone number: ") || attempts != 0 {
				t.Errorf("invalid %q: %s/%q attempts %d, want failed/not a phone number, 0 attempts", target, status, deref(reason), attempts)
			}
			return nil
		}
		tr := sim.Truth(target)
		categories[tr.Category.String()+"/"+tr.Edition]++
		if g, err := greenapi.ParseTarget(target); err == nil && !g.SeedLength() {
			otherLengths[tr.Edition+"/"+status]++
		}
		if tr.BadRequest {
			if status != "failed" || deref(reason) != greenapi.ReasonBadRequestData {
				t.Errorf("%s (server says bad request): %s/%q", target, status, deref(reason))
			}
			return nil
		}
		want := tr.Avatar()
		// Existence as a client that checks it records it; a check that failed every try (a
		// 5xx three times) leaves it unknown, and says so.
		wantExists, wantSource := tr.Existence(strings.HasSuffix(target, "@g.us"))
		src := ""
		if source != nil {
			src = *source
		}
		if src == enrich.SourceUnchecked && exists == nil {
			unchecked++
			wantExists, wantSource = nil, enrich.SourceUnchecked
		}
		if status != "done" || !eqBool(exists, wantExists) || src != wantSource || !eqBool(avail, want.Available) ||
			deref(url) != want.URLAvatar || deref(reason) != "" {
			t.Errorf("%s (%s, %s): got %s exists=%v from %q available=%v url=%q reason=%q; want done exists=%v from %q available=%v url=%q",
				target, tr.Category, tr.Edition, status, b2s(exists), src, b2s(avail), deref(url), deref(reason),
				b2s(wantExists), wantSource, b2s(want.Available), want.URLAvatar)
		}
		if sim.Answers(target) < 1 {
			t.Errorf("%s is done but the simulator never answered it", target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(valid)+len(invalid) {
		t.Fatalf("read %d rows, want %d", len(seen), len(valid)+len(invalid))
	}
	t.Logf("categories/editions checked: %v; existence left unchecked (a check failed every try): %d", categories, unchecked)
	if unchecked > 3 {
		t.Errorf("%d rows left unchecked: a check fails every try once in about 8,000 at a 5%% server error rate", unchecked)
	}
	// Numbers of 10 and 13 digits are sent: today's editions answer them, the seed edition
	// refuses them as "bad request data", each its row's own failure, and no run stops.
	t.Logf("rows of 10 or 13 digits, by edition/status: %v", otherLengths)
	for _, ed := range []string{simulator.Edition2023, simulator.EditionCurrent, simulator.EditionCurrentBase64} {
		if otherLengths[ed+"/done"] == 0 || otherLengths[ed+"/failed"] > otherLengths[ed+"/done"]/5 {
			t.Errorf("edition %s: rows of 10 or 13 digits %v: want them answered (done), bar its share of bad requests", ed, otherLengths)
		}
	}
	if otherLengths[simulator.EditionSeed+"/failed"] == 0 || otherLengths[simulator.EditionSeed+"/done"] != 0 {
		t.Errorf("seed edition: rows of 10 or 13 digits %v: want every one failed with its bad request data", otherLengths)
	}
	for _, ed := range []string{simulator.EditionSeed, simulator.Edition2023, simulator.EditionCurrent, simulator.EditionCurrentBase64} {
		if categories["avatar/"+ed] == 0 {
			t.Errorf("no number with an avatar answered in edition %s: the test does not cover it", ed)
		}
	}
}

// insertTargets writes targets as a user's tool would: chatIds (anything with an '@') into
// chat_id, the rest into phone_number, unvalidated.
func insertTargets(t *testing.T, pool *pgxpool.Pool, targets []string) {
	t.Helper()
	var phones, chats []string
	for _, s := range targets {
		if strings.Contains(s, "@") {
			chats = append(chats, s)
		} else {
			phones = append(phones, s)
		}
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO contacts (phone_number) SELECT unnest($1::text[])`, phones); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO contacts (chat_id) SELECT unnest($1::text[])`, chats); err != nil {
		t.Fatal(err)
	}
}

func deref(p *string) string {
	if p == nil {
		return "<NULL>"
	}
	return *p
}

func eqBool(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func b2s(b *bool) string {
	if b == nil {
		return "NULL"
	}
	return fmt.Sprint(*b)
}
