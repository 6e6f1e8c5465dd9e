package enrich_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/rs/zerolog"
)

// runBounded runs cfg with a context that a hung run cannot outlive: the test then fails saying
// so, rather than the whole package timing out.
func runBounded(t *testing.T, b bundle, cfg enrich.Config, within time.Duration) (enrich.Summary, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	sum, err := runOnce(t, ctx, b.store, cfg)
	if ctx.Err() != nil {
		t.Fatalf("the run did not end by itself within %v (%+v, %v)", within, sum, err)
	}
	return sum, err
}

// TestLastRowOutlivesItsBlock: with the shared budget, the last row's first answer is a 503 that
// comes after the instance's block of slots has expired. Its retry must find a slot; before the
// fix the worker, holding the row, waited for another row to arrive in the queue before
// reserving one (issue 13, defect 1: "1 row, 2 workers, rps 10, a first answer of 503 after
// 1.5 s: never ends").
func TestLastRowOutlivesItsBlock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(1)...)
	api := newFake("1", func(_ greenapi.Target, n int) (greenapi.Avatar, error) {
		if n == 0 {
			time.Sleep(1500 * time.Millisecond) // past the block the call's slot came from
			return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "")
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Workers = 2
	cfg.Instances[0].RPS = 10
	cfg.Budget = b.store
	sum, err := runBounded(t, b, cfg, 20*time.Second)
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	if sum.Done != 1 || api.totalCalls() != 2 {
		t.Fatalf("summary %+v after %d calls: want the row done on its second call", sum, api.totalCalls())
	}
}

// TestLostRowIsNeverCalledAgain: a row whose claim another run took while this run's call for it
// was in flight is not called again by this run after the call fails, and does not keep the run
// waiting for it (issue 13, defect 2: renew dropped a lost row only when it found it queued; a
// row in a call came back through the queue and was called again, or waited there for ever).
func TestLostRowIsNeverCalledAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(1)
	b.insertPhones(t, ps...)
	const lease = 600 * time.Millisecond // renewed every 200 ms
	stolen := make(chan struct{})
	var calls atomic.Int32
	api := newFake("1", func(_ greenapi.Target, n int) (greenapi.Avatar, error) {
		calls.Add(1)
		if n == 0 {
			<-stolen
			// Two renewals at least: the run learns the row is no longer its own.
			time.Sleep(lease)
			return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "")
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Lease = lease
	go func() {
		defer close(stolen)
		ctx := context.Background()
		for calls.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		// Another run takes the row as if its lease had lapsed.
		if _, err := b.pool.Exec(ctx, `UPDATE contacts SET locked_until = now() - interval '1 s',
			next_attempt_at = now() - interval '1 s'`); err != nil {
			t.Error(err)
			return
		}
		if got, err := b.store.Claim(ctx, "thief", 1, 1, time.Hour); err != nil || len(got) != 1 {
			t.Errorf("the thief's claim: %d rows, %v", len(got), err)
		}
	}()
	sum, err := runBounded(t, b, cfg, 20*time.Second)
	if err != nil && !errors.Is(err, enrich.ErrUnwritten) {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	if n := api.callsFor(ps[0]); n != 1 {
		t.Fatalf("the row was called %d times; after its claim was lost it must not be called again (%+v)", n, sum)
	}
	if got := b.count(t, "locked_by = 'thief'"); got != 1 {
		t.Fatalf("the thief's claim was overwritten: %d rows still its own", got)
	}
}

// TestOutInstanceNotHiddenByCapped: one instance spends its daily cap, the other has a wrong
// token. The run needs a person and must not end as a normal "daily cap reached" (issue 13,
// defect 3: Runner.leave ended such a run with errDailyCap, exit 0).
func TestOutInstanceNotHiddenByCapped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(20)...)
	capped := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	wrong := newFake("2", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassUnusable, 401, "wrong apiTokenInstance")
	})
	cfg := config(capped, wrong)
	cfg.Budget = b.store
	cfg.Instances[0].RPS, cfg.Instances[0].MaxPerDay = 100, 5
	cfg.Instances[1].RPS = 100
	sum, err := runBounded(t, b, cfg, 30*time.Second)
	if !errors.Is(err, enrich.ErrNoInstance) {
		t.Fatalf("err = %v (stop %q), want ErrNoInstance: an instance with a wrong token needs a person", err, sum.Stop)
	}
	if !strings.Contains(err.Error(), "2") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the error does not name the instance that is out and why: %v", err)
	}
	if sum.Done != 5 {
		t.Fatalf("done %d, want the capped instance's 5 (%+v)", sum.Done, sum)
	}
}

// TestStallWatchdog: calls that never come back (a client with no timeout) and nothing else
// moving: the run ends by itself with ErrStalled once StallTimeout passes, logs what each row
// waits on, and gives every row back untouched.
func TestStallWatchdog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(10)...)
	hung := &hangingAPI{fakeAPI: newFake("1", nil), entered: func() {}}
	cfg := config(hung)
	cfg.Workers = 2
	cfg.ShutdownGrace = 20 * time.Millisecond
	cfg.StallTimeout = 500 * time.Millisecond
	var logs syncBuffer
	log := zerolog.New(&logs)
	cfg.Logger = &log
	sum, err := runBounded(t, b, cfg, 20*time.Second)
	if !errors.Is(err, enrich.ErrStalled) || sum.Stop != "stalled" {
		t.Fatalf("err = %v, stop %q: want ErrStalled", err, sum.Stop)
	}
	if got := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); got != 10 {
		t.Fatalf("untouched rows = %d, want all 10 given back", got)
	}
	out := logs.String()
	for _, want := range []string{`"message":"stalled: instance"`, `"instance":"1"`, `"state":"running"`,
		`"waits":"in a call, or a retry's backoff"`, `"waits":"in the queue for an instance's send slot"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the stall report lacks %s:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHurryCutsCallsAtOnce: after a stop, closing Config.Hurry (a second SIGTERM) cuts the calls
// in flight at once instead of after ShutdownGrace (here an hour): the answers received are
// written and every other row goes back untouched (issue 13, defect 10).
func TestHurryCutsCallsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(100)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hurry := make(chan struct{})
	api := &answerThenHang{fakeAPI: newFake("1", nil), answer: 10, onHang: func(n int32) {
		if n == 4 { // four calls hang: the first signal, then the second
			cancel()
			close(hurry)
		}
	}}
	cfg := config(api)
	cfg.ShutdownGrace = time.Hour
	cfg.Hurry = hurry
	r, err := enrich.NewRunner(b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		sum enrich.Summary
		err error
	}
	ended := make(chan outcome, 1)
	go func() {
		sum, err := r.Run(ctx)
		ended <- outcome{sum, err}
	}()
	var sum enrich.Summary
	select {
	case o := <-ended:
		sum, err = o.sum, o.err
	case <-time.After(30 * time.Second):
		t.Fatal("the run still waits for its calls 30 s after Hurry: it did not cut them")
	}
	if !errors.Is(err, enrich.ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted (%+v)", err, sum)
	}
	if got := b.count(t, "status = 'done'"); got != 10 || sum.Done != 10 {
		t.Fatalf("done rows %d (summary %d), want the 10 answered", got, sum.Done)
	}
	if got := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); got != 90 {
		t.Fatalf("untouched rows = %d, want 90", got)
	}
}

// answerThenHang answers its first `answer` GetAvatar calls, then hangs every later one until
// its context ends, telling onHang how many hang.
type answerThenHang struct {
	*fakeAPI
	answer         int32
	onHang         func(n int32)
	answered, hung atomic.Int32
}

func (a *answerThenHang) GetAvatar(ctx context.Context, _ greenapi.Target) (greenapi.Avatar, error) {
	if a.answered.Add(1) <= a.answer {
		return greenapi.Avatar{Available: yes()}, nil
	}
	a.onHang(a.hung.Add(1))
	<-ctx.Done()
	return greenapi.Avatar{}, ctx.Err()
}

// TestShortRunSettlesTheBudget: a run shorter than its first block of slots still gives its
// unsent slots back to the day's count and records its last answer, with no daily cap set
// (before, both waited for a next reservation the run never made: 5 rows sent, 10 slots counted,
// and no last answer).
func TestShortRunSettlesTheBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(5)...)
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	cfg := config(api)
	cfg.Instances[0].RPS = 10
	cfg.Budget = b.store
	if sum, err := runBounded(t, b, cfg, 20*time.Second); err != nil || sum.Done != 5 {
		t.Fatalf("run: %+v, %v", sum, err)
	}
	var used int64
	var answered time.Time
	if err := b.pool.QueryRow(context.Background(), `SELECT used, answered_at FROM enrich.enrich_instances WHERE instance_id = '1'`).
		Scan(&used, &answered); err != nil {
		t.Fatal(err)
	}
	if used != 5 || time.Since(answered) > time.Minute {
		t.Fatalf("the budget after a 5-row run: used %d, last answer %v; want 5 and just now", used, answered)
	}
}

// TestNothingDueEndsBesideAKeeper: TestRunWithNothingToDoEnds on PostgreSQL and its shared
// budget: a run that starts while another keeps their only instance and has claimed every row
// asks the table whether any row is due (Store.DueUpTo, one row's walk, not 100,000), hears
// none, and ends with no due rows left, long before the other has called its rows.
func TestNothingDueEndsBesideAKeeper(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rows = 20 // 20 s at 1 rps
	b.insertPhones(t, phones(rows)...)
	first := make(chan struct{})
	var once sync.Once
	answer := func(greenapi.Target, int) (greenapi.Avatar, error) {
		once.Do(func() { close(first) })
		return greenapi.Avatar{Available: yes()}, nil
	}
	keeper, late := newFake("1", answer), newFake("1", answer)
	cfg := func(owner string, api enrich.API) enrich.Config {
		c := config(api)
		c.Owner, c.Budget, c.Instances[0].RPS = owner, b.store, 1
		return c
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kept := make(chan error, 1)
	r, err := enrich.NewRunner(b.store, cfg("keeper", keeper))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := r.Run(ctx)
		kept <- err
	}()
	<-first
	sum, err := runBounded(t, b, cfg("late", late), 30*time.Second)
	if err != nil || sum.Stop != "no due rows left" || sum.Claimed != 0 || late.totalCalls() != 0 {
		t.Fatalf("the late run: %v, %+v after %d calls; want no due rows left, nothing claimed or called", err, sum, late.totalCalls())
	}
	if n := keeper.totalCalls(); n >= rows {
		t.Errorf("the late run ended only after the keeper had called all %d rows", n)
	}
	cancel()
	if err := <-kept; err != nil && !errors.Is(err, enrich.ErrInterrupted) {
		t.Errorf("the keeper: %v", err)
	}
}
