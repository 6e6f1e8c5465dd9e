package enrich_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fakeAPI answers from a script: answer(target, n) is the n-th call (from 0) for that target.
type fakeAPI struct {
	id     string
	answer func(t greenapi.Target, n int) (greenapi.Avatar, error)
	state  func(n int) (string, error)
	// check answers CheckWhatsapp: its n-th call (from 0) of all; nil answers an error.
	check func(t greenapi.Target, n int) (bool, error)

	mu     sync.Mutex
	calls  map[string]int
	states int
	checks []string
}

func newFake(id string, answer func(greenapi.Target, int) (greenapi.Avatar, error)) *fakeAPI {
	return &fakeAPI{id: id, answer: answer, calls: map[string]int{},
		state: func(int) (string, error) { return greenapi.StateAuthorized, nil }}
}

func (f *fakeAPI) ID() string { return f.id }

func (f *fakeAPI) GetAvatar(ctx context.Context, t greenapi.Target) (greenapi.Avatar, error) {
	f.mu.Lock()
	n := f.calls[t.String()]
	f.calls[t.String()]++
	f.mu.Unlock()
	return f.answer(t, n)
}

func (f *fakeAPI) CheckWhatsapp(ctx context.Context, t greenapi.Target) (bool, error) {
	f.mu.Lock()
	n := len(f.checks)
	f.checks = append(f.checks, t.String())
	f.mu.Unlock()
	if f.check == nil {
		return false, errors.New("fakeAPI: CheckWhatsapp not scripted")
	}
	return f.check(t, n)
}

func (f *fakeAPI) checked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.checks...)
}

func (f *fakeAPI) GetStateInstance(ctx context.Context) (string, error) {
	f.mu.Lock()
	n := f.states
	f.states++
	f.mu.Unlock()
	return f.state(n)
}

func (f *fakeAPI) callsFor(target string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[target]
}

func (f *fakeAPI) totalCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

func apiErr(class greenapi.Class, status int, reason string) error {
	return &greenapi.Error{Class: class, Instance: "1", Method: "getAvatar", Status: status, Reason: reason,
		URL: "waInstance1/getAvatar/***"}
}

func yes() *bool { b := true; return &b }

// row is a contacts row as a test reads it back.
type row struct {
	Status         string
	ExistsWhatsapp *bool
	Available      *bool
	URL            *string
	Reason         *string
	Attempts       int
	LockedBy       *string
	CheckedAt      *time.Time
}

// bundle is what each test needs.
type bundle struct {
	pool  *pgxpool.Pool
	store *store.Store
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return bundle{pool: pool, store: st}
}

func (b bundle) insertPhones(t *testing.T, phones ...string) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(),
		`INSERT INTO contacts (phone_number) SELECT unnest($1::text[])`, phones); err != nil {
		t.Fatal(err)
	}
}

func (b bundle) row(t *testing.T, phone string) row {
	t.Helper()
	var r row
	err := b.pool.QueryRow(context.Background(), `SELECT status, exists_whatsapp, avatar_available, url_avatar,
		reason, attempts, locked_by, checked_at FROM contacts WHERE phone_number = $1`, phone).
		Scan(&r.Status, &r.ExistsWhatsapp, &r.Available, &r.URL, &r.Reason, &r.Attempts, &r.LockedBy, &r.CheckedAt)
	if err != nil {
		t.Fatalf("read row %s: %v", phone, err)
	}
	return r
}

func (b bundle) count(t *testing.T, where string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM contacts WHERE "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// config is a fast, deterministic run: no real sleeping in backoffs, seeded jitter.
func config(apis ...enrich.API) enrich.Config {
	c := enrich.Config{
		Owner:            "test-run",
		Workers:          4,
		BatchSize:        20,
		FlushInterval:    10 * time.Millisecond,
		Retry:            enrich.Backoff{Base: time.Hour, Max: 2 * time.Hour},
		StartingBackoff:  enrich.Backoff{Base: time.Millisecond, Max: time.Millisecond},
		ProgressInterval: -1,
		Sleep:            func(ctx context.Context, d time.Duration) error { return ctx.Err() },
		Rand:             enrich.LockedRand(1),
	}
	for _, a := range apis {
		c.Instances = append(c.Instances, enrich.Instance{API: a, RPS: 1e6})
	}
	return c
}

func runOnce(t *testing.T, ctx context.Context, st enrich.Store, cfg enrich.Config) (enrich.Summary, error) {
	t.Helper()
	r, err := enrich.NewRunner(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r.Run(ctx)
}

func phones(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("7900%07d", i)
	}
	return out
}

func TestRunAnswersEveryRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(300)
	b.insertPhones(t, ps...)
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		return greenapi.Avatar{ExistsWhatsapp: yes(), URLAvatar: "https://pps.whatsapp.net/" + tg.String()}, nil
	})
	sum, err := runOnce(t, context.Background(), b.store, config(api))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Done != 300 || sum.Failed != 0 || sum.Released != 0 || sum.Stop != "no due rows left" {
		t.Fatalf("summary = %+v", sum)
	}
	if got := b.count(t, "status = 'done' AND locked_by IS NULL AND checked_at IS NOT NULL AND reason = ''"); got != 300 {
		t.Fatalf("done rows = %d, want 300", got)
	}
	r := b.row(t, ps[7])
	if *r.URL != "https://pps.whatsapp.net/"+ps[7] || !*r.ExistsWhatsapp || r.Available != nil {
		t.Fatalf("row = %+v", r)
	}
	if api.totalCalls() != 300 {
		t.Fatalf("calls = %d, want one per row", api.totalCalls())
	}
}

// TestRunClasses checks what each answer class does to a row.
func TestRunClasses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		attempts    int // attempts the row already has
		answer      func(n int) (greenapi.Avatar, error)
		wantStatus  string
		wantReason  string
		wantAttempt int
		wantCalls   int
		wantDue     bool // next_attempt_at in the future (rescheduled) is !wantDue
	}{
		{name: "answer", answer: func(int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil },
			wantStatus: "done", wantReason: "", wantCalls: 1},
		// Retried in the run; then, with nothing else to show the instance alive, the instance is
		// probed, and a row that fails again once it is known alive is charged: one more call.
		{name: "transient retried in run then rescheduled",
			answer:     func(int) (greenapi.Avatar, error) { return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "") },
			wantStatus: "pending", wantReason: "HTTP 503", wantAttempt: 1, wantCalls: 4},
		{name: "transient then answer in run",
			answer: func(n int) (greenapi.Avatar, error) {
				if n < 2 {
					return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 500, "")
				}
				return greenapi.Avatar{Available: yes()}, nil
			},
			wantStatus: "done", wantCalls: 3},
		{name: "transient at the last attempt fails",
			attempts:   4,
			answer:     func(int) (greenapi.Avatar, error) { return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 502, "") },
			wantStatus: "failed", wantReason: "HTTP 502", wantAttempt: 5, wantCalls: 4, wantDue: true},
		{name: "avatar timeout rescheduled at once",
			answer: func(int) (greenapi.Avatar, error) {
				return greenapi.Avatar{}, apiErr(greenapi.ClassAvatarTimeout, 200, greenapi.ReasonAvatarTimeout)
			},
			wantStatus: "pending", wantReason: greenapi.ReasonAvatarTimeout, wantAttempt: 1, wantCalls: 1},
		{name: "avatar timeout at the last attempt fails",
			attempts: 4,
			answer: func(int) (greenapi.Avatar, error) {
				return greenapi.Avatar{}, apiErr(greenapi.ClassAvatarTimeout, 200, greenapi.ReasonAvatarTimeout)
			},
			wantStatus: "failed", wantReason: greenapi.ReasonAvatarTimeout, wantAttempt: 5, wantCalls: 1, wantDue: true},
		{name: "invalid fails for good",
			answer: func(int) (greenapi.Avatar, error) {
				return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, "Validation failed. Details: 'chatId' is required")
			},
			// A lone one is the row's own failure, and the reason keeps the API's words.
			wantStatus: "failed", wantReason: "Validation failed. Details: 'chatId' is required", wantAttempt: 1, wantCalls: 1, wantDue: true},
		{name: "rate limited spends no attempt",
			answer: func(n int) (greenapi.Avatar, error) {
				if n < 3 {
					return greenapi.Avatar{}, apiErr(greenapi.ClassRateLimited, 429, "")
				}
				return greenapi.Avatar{Available: yes()}, nil
			},
			wantStatus: "done", wantCalls: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.insertPhones(t, "79001234567")
			if _, err := b.pool.Exec(context.Background(), `UPDATE contacts SET attempts = $1`, tc.attempts); err != nil {
				t.Fatal(err)
			}
			api := newFake("1", func(_ greenapi.Target, n int) (greenapi.Avatar, error) { return tc.answer(n) })
			if _, err := runOnce(t, context.Background(), b.store, config(api)); err != nil {
				t.Fatal(err)
			}
			r := b.row(t, "79001234567")
			if r.Status != tc.wantStatus || r.Attempts != tc.wantAttempt || r.LockedBy != nil {
				t.Fatalf("row = status %s attempts %d locked %v; want %s %d unlocked", r.Status, r.Attempts, r.LockedBy, tc.wantStatus, tc.wantAttempt)
			}
			if r.Reason == nil || *r.Reason != tc.wantReason {
				t.Fatalf("reason = %v, want %q", r.Reason, tc.wantReason)
			}
			if got := api.callsFor("79001234567"); got != tc.wantCalls {
				t.Fatalf("calls = %d, want %d", got, tc.wantCalls)
			}
			due := b.count(t, "next_attempt_at <= now()") == 1
			if tc.wantStatus == "pending" && due {
				t.Fatalf("rescheduled row is due at once")
			}
		})
	}
}

func TestRunInvalidRowsNeverReachTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	bad := []string{"123", "7900123456789012", "abc", "+7 (900) 123-45-6x"}
	b.insertPhones(t, bad...)
	if _, err := b.pool.Exec(ctx, `INSERT INTO contacts (chat_id) VALUES (' 79001234567@c.us'), ('79001234567@g.us'), ('120363043968066561@g.us')`); err != nil {
		t.Fatal(err)
	}
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	sum, err := runOnce(t, ctx, b.store, config(api))
	if err != nil {
		t.Fatal(err)
	}
	// Refused locally, in words of their own: "bad request data" is only ever the API's.
	if got := b.count(t, "status = 'failed' AND reason LIKE 'not a phone number: %' AND attempts = 0"); got != 6 {
		t.Fatalf("failed invalid rows = %d, want 6", got)
	}
	for phone, why := range map[string]string{"123": "3 digits; a phone number is 10 to 15 digits", "abc": "unexpected character 'a'",
		"7900123456789012": "16 digits"} {
		if r := b.row(t, phone); r.Reason == nil || !strings.HasPrefix(*r.Reason, "not a phone number: ") || !strings.Contains(*r.Reason, why) {
			t.Errorf("%s: reason %v, want not a phone number, saying %q", phone, r.Reason, why)
		}
	}
	if api.totalCalls() != 1 || api.callsFor("120363043968066561@g.us") != 1 {
		t.Fatalf("calls = %v, want only the valid group", api.calls)
	}
	if sum.InvalidLocal != 6 {
		t.Fatalf("summary invalid_local = %d", sum.InvalidLocal)
	}
}

func TestRunStartingPausesThenResumes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(50)
	b.insertPhones(t, ps...)
	var ready atomic.Bool
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		if !ready.Load() {
			return greenapi.Avatar{}, apiErr(greenapi.ClassStarting, 400, greenapi.ReasonStarting)
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	api.state = func(n int) (string, error) {
		switch {
		case n == 0:
			return greenapi.StateAuthorized, nil // the pre-flight check: the restart comes later
		case n < 3:
			return greenapi.StateStarting, nil
		}
		ready.Store(true)
		return greenapi.StateAuthorized, nil
	}
	cfg := config(api)
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Done != 50 {
		t.Fatalf("done = %d, want 50 (%+v)", sum.Done, sum)
	}
	// Every worker may have been in a call when the instance began starting, but no more.
	if s := sum.Calls["getAvatar starting"]; s < 1 || s > int64(cfg.Workers) {
		t.Fatalf("starting answers = %d, want 1..%d: one shared pause, not workers hammering", s, cfg.Workers)
	}
	if got := b.count(t, "attempts = 0"); got != 50 {
		t.Fatalf("rows with attempts 0 = %d: starting must not spend attempts", got)
	}
}

func TestRunStartingTooLongGivesRowsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(30)...)
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassStarting, 400, greenapi.ReasonStartingOrNotAuth)
	})
	api.state = func(int) (string, error) { return greenapi.StateStarting, nil }
	cfg := config(api)
	cfg.StartingTimeout = 50 * time.Millisecond
	cfg.StartingBackoff = enrich.Backoff{Base: 5 * time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Sleep = nil // real timers: the timeout is measured on the clock
	_, err := runOnce(t, context.Background(), b.store, cfg)
	if !errors.Is(err, enrich.ErrNoInstance) {
		t.Fatalf("err = %v, want ErrNoInstance", err)
	}
	if got := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL AND next_attempt_at <= now()"); got != 30 {
		t.Fatalf("untouched due rows = %d, want 30", got)
	}
}

func TestRunUnusableInstance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		err   error
		state string
	}{
		{"not authorized", apiErr(greenapi.ClassUnusable, 400, greenapi.ReasonNotAuthorized), greenapi.StateNotAuthorized},
		{"wrong token", apiErr(greenapi.ClassUnusable, 401, "wrong apiTokenInstance"), greenapi.StateAuthorized},
		{"quota", apiErr(greenapi.ClassUnusable, 466, "QUOTE_EXCEEDED"), greenapi.StateAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.insertPhones(t, phones(40)...)
			bad := newFake("1101000001", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{}, tc.err })
			bad.state = func(int) (string, error) { return tc.state, nil }
			_, err := runOnce(t, context.Background(), b.store, config(bad))
			if !errors.Is(err, enrich.ErrNoInstance) {
				t.Fatalf("err = %v, want ErrNoInstance", err)
			}
			if got := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); got != 40 {
				t.Fatalf("untouched rows = %d, want 40", got)
			}
		})
	}
}

func TestRunUnusableInstanceOthersCarryOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(100)...)
	bad := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassUnusable, 403, "")
	})
	good := newFake("2", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	sum, err := runOnce(t, context.Background(), b.store, config(bad, good))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "status = 'done'"); got != 100 {
		t.Fatalf("done = %d, want 100 (%+v)", got, sum)
	}
	if sum.Calls["getAvatar unusable"] > 4 {
		t.Fatalf("unusable instance kept being called: %v", sum.Calls)
	}
}

func TestRunInterruptWritesAnswersAndGivesBackTheRest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(200)...)
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Int32
	release := make(chan struct{})
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		if n := started.Add(1); n > 10 {
			if n == 11 {
				cancel() // the "signal" arrives while calls are in flight
			}
			<-release
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.ShutdownGrace = time.Minute
	go func() {
		<-ctx.Done()
		close(release) // in-flight calls finish within the grace
	}()
	sum, err := runOnce(t, ctx, b.store, cfg)
	if !errors.Is(err, enrich.ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	done := b.count(t, "status = 'done'")
	if int64(done) != sum.Done || done != api.totalCalls() {
		t.Fatalf("done rows %d, summary %d, answers given %d: every answer must be written", done, sum.Done, api.totalCalls())
	}
	if got := b.count(t, "locked_by IS NOT NULL"); got != 0 {
		t.Fatalf("%d rows left locked", got)
	}
	if got := b.count(t, "status = 'pending' AND attempts = 0"); got != 200-done {
		t.Fatalf("pending untouched = %d, want %d", got, 200-done)
	}
}

func TestRunGraceCutsHungCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(10)...)
	ctx, cancel := context.WithCancel(context.Background())
	var inFlight atomic.Int32
	hung := &hangingAPI{fakeAPI: newFake("1", nil), entered: func() {
		if inFlight.Add(1) == 4 {
			cancel()
		}
	}}
	cfg := config(hung)
	cfg.ShutdownGrace = 20 * time.Millisecond
	_, err := runOnce(t, ctx, b.store, cfg)
	if !errors.Is(err, enrich.ErrInterrupted) {
		t.Fatalf("err = %v", err)
	}
	if got := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); got != 10 {
		t.Fatalf("untouched rows = %d, want 10", got)
	}
}

// hangingAPI never answers GetAvatar until its context ends.
type hangingAPI struct {
	*fakeAPI
	entered func()
}

func (h *hangingAPI) GetAvatar(ctx context.Context, _ greenapi.Target) (greenapi.Avatar, error) {
	h.entered()
	<-ctx.Done()
	return greenapi.Avatar{}, ctx.Err()
}

func TestRunLimitAndDeadline(t *testing.T) {
	t.Parallel()
	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, phones(100)...)
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
		cfg := config(api)
		cfg.Limit = 35
		sum, err := runOnce(t, context.Background(), b.store, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Done != 35 || b.count(t, "status = 'done'") != 35 || sum.Stop != "limit reached" {
			t.Fatalf("summary = %+v", sum)
		}
	})
	t.Run("max duration", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, phones(100)...)
		gate := make(chan struct{})
		api := newFake("1", func(_ greenapi.Target, _ int) (greenapi.Avatar, error) {
			<-gate
			return greenapi.Avatar{Available: yes()}, nil
		})
		cfg := config(api)
		cfg.MaxDuration = 30 * time.Millisecond
		go func() {
			time.Sleep(60 * time.Millisecond) // let the deadline pass with calls in flight
			close(gate)
		}()
		sum, err := runOnce(t, context.Background(), b.store, cfg)
		if err != nil {
			t.Fatalf("deadline must end the run normally: %v", err)
		}
		done := b.count(t, "status = 'done'")
		if sum.Stop != "max_duration reached" || done != api.totalCalls() || done > cfg.Workers {
			t.Fatalf("stop %q, done %d, calls %d", sum.Stop, done, api.totalCalls())
		}
		if got := b.count(t, "locked_by IS NOT NULL"); got != 0 {
			t.Fatalf("%d rows left locked", got)
		}
	})
}

// TestRunTwiceAtOnce runs two runs on one table at the same moment, as two pods would: every
// row is answered once, by one of them, and both finish cleanly.
func TestRunTwiceAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(600)...)
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	var wg sync.WaitGroup
	sums := make([]enrich.Summary, 2)
	for i := range sums {
		wg.Go(func() {
			cfg := config(api)
			cfg.Owner = fmt.Sprintf("pod-%d", i)
			sum, err := runOnce(t, context.Background(), b.store, cfg)
			if err != nil {
				t.Errorf("run %d: %v", i, err)
			}
			sums[i] = sum
		})
	}
	wg.Wait()
	if got := b.count(t, "status = 'done' AND locked_by IS NULL"); got != 600 {
		t.Fatalf("done rows = %d, want 600", got)
	}
	if sums[0].Done+sums[1].Done != 600 {
		t.Fatalf("runs wrote %d + %d rows, want 600 in all", sums[0].Done, sums[1].Done)
	}
	for _, p := range phones(600) {
		if n := api.callsFor(p); n != 1 {
			t.Fatalf("%s was called %d times, want once", p, n)
		}
	}
}

// flakyStore is the real store with writes that fail on demand, to see what a run does when
// the database goes away under it.
type flakyStore struct {
	*store.Store
	fail func(n int) bool // whether the n-th Write (from 0) fails
	n    atomic.Int32
}

func (f *flakyStore) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	if f.fail(int(f.n.Add(1) - 1)) {
		return store.Written{}, errors.New("connection reset by peer")
	}
	return f.Store.Write(ctx, owner, b)
}

func TestRunDatabaseFailures(t *testing.T) {
	t.Parallel()
	answer := func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil }
	t.Run("a write that fails a few times is retried", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, phones(100)...)
		st := &flakyStore{Store: b.store, fail: func(n int) bool { return n < 2 }}
		sum, err := runOnce(t, context.Background(), st, config(newFake("1", answer)))
		if err != nil {
			t.Fatal(err)
		}
		if got := b.count(t, "status = 'done' AND locked_by IS NULL"); got != 100 || sum.Done != 100 {
			t.Fatalf("done rows = %d (summary %d), want 100", got, sum.Done)
		}
	})
	t.Run("a database that stays down stops the run and corrupts nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, phones(100)...)
		st := &flakyStore{Store: b.store, fail: func(int) bool { return true }}
		cfg := config(newFake("1", answer))
		cfg.RetryFor = 300 * time.Millisecond
		sum, err := runOnce(t, context.Background(), st, cfg)
		if !errors.Is(err, enrich.ErrDatabase) {
			t.Fatalf("err = %v, want ErrDatabase", err)
		}
		if sum.Unwritten == 0 || !strings.Contains(err.Error(), fmt.Sprintf("%d answers could not be written", sum.Unwritten)) {
			t.Fatalf("err = %v (unwritten %d): it must say how many answers it could not write", err, sum.Unwritten)
		}
		// Nothing was written: the claimed rows stay leased until the lease expires, and no
		// row changed otherwise.
		if got := b.count(t, "status = 'pending' AND attempts = 0"); got != 100 {
			t.Fatalf("untouched pending rows = %d, want 100", got)
		}
		if got := b.count(t, "locked_by IS NOT NULL AND locked_until > now()"); got == 0 {
			t.Fatalf("no row is leased: the run claimed nothing before the database failed?")
		}
	})
}

// TestRunClaimsAheadBoundedly checks that rows are claimed at most two batches ahead of the
// workers, up to the end: a deadline, the run's own or the caller's, must not turn into a
// storm of claims and give-backs (rate.Limiter.Wait fails at once on a wait that would pass a
// context's deadline).
func TestRunClaimsAheadBoundedly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		deadline bool // the caller's ctx has the deadline, not MaxDuration
	}{{"max duration", false}, {"caller's deadline", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.insertPhones(t, phones(1000)...)
			api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
			cfg := config(api)
			cfg.Instances[0].RPS = 20 // 50 ms a call: the run ends with workers waiting on the limiter
			ctx := context.Background()
			if tc.deadline {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
				defer cancel()
			} else {
				cfg.MaxDuration = 500 * time.Millisecond
			}
			sum, _ := runOnce(t, ctx, b.store, cfg)
			if limit := int64(2*cfg.BatchSize + cfg.Workers); sum.Claimed-sum.Done > limit {
				t.Fatalf("claimed %d rows for %d answers; at most %d may be claimed ahead (%+v)", sum.Claimed, sum.Done, limit, sum)
			}
			if got := b.count(t, "locked_by IS NOT NULL"); got != 0 {
				t.Fatalf("%d rows left locked", got)
			}
		})
	}
}
