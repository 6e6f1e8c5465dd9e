package enrich_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgconn"
)

// deniedWrites is the model whose writes fail, after a millisecond, with an error no retry
// mends (the role lost its grant), from the first on.
type deniedWrites struct {
	*memstore.Store
	writes atomic.Int64
}

func (d *deniedWrites) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	d.writes.Add(1)
	time.Sleep(time.Millisecond)
	return store.Written{}, &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for table contacts"}
}

// TestFinalWriteBacksOff: the last write of a run whose writes fail with an error not worth
// retrying waits a database backoff between tries. Before, it tried again at once, in a hot loop
// until the final deadline: 1,000 writes a second of a database taking a millisecond each, and in
// a synctest bubble a clock that never moves (simulation seed 101 never ended).
func TestFinalWriteBacksOff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := &deniedWrites{Store: memstore.New(nil)}
		m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
		cfg := config(api)
		cfg.Sleep = nil
		cfg.RetryFor = 10 * time.Second
		sum, err := runOnce(t, context.Background(), m, cfg)
		if !errors.Is(err, enrich.ErrDatabase) {
			t.Fatalf("err = %v, want ErrDatabase (%+v)", err, sum)
		}
		// The run stops at the first write; the last write has finalWriteMin (1 s): a handful of
		// tries 250 ms apart at least.
		if n := m.writes.Load(); n > 8 {
			t.Fatalf("%d writes: the last write did not back off", n)
		}
	})
}

// reclaimDuringWrite is the model with claims that take 50 ms and a first write that takes
// 100 ms, during which the lease of the row it writes lapses (Expire): the run's next claim, in
// flight meanwhile, takes the row again while its result is being written through the old claim.
type reclaimDuringWrite struct {
	*memstore.Store
	writes atomic.Int64
}

func (m *reclaimDuringWrite) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	time.Sleep(50 * time.Millisecond)
	return m.Store.ClaimAfter(ctx, owner, token, n, lease, after)
}

func (m *reclaimDuringWrite) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	if m.writes.Add(1) == 1 {
		for _, d := range b.Done {
			m.Expire(d.ID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m.Store.Write(ctx, owner, b)
}

// TestReclaimedWhileWriting: a row the run claims again (its lease lapsed) while its result is
// being written through the older claim is not left leased to the run when the older write is
// fenced off: the newer claim is given back, or written. Before, the writer forgot the row after
// the fenced write and the newer claim stayed leased until it expired, while the run said no due
// rows were left (simulation seed 902 under -race).
func TestReclaimedWhileWriting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := &reclaimDuringWrite{Store: memstore.New(nil)}
		id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
		cfg := config(api)
		cfg.Sleep = nil
		sum, err := runOnce(t, context.Background(), m, cfg)
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		r, _ := m.Row(id)
		if r.LockedBy != "" || r.Status != store.StatusDone {
			t.Fatalf("row %+v at the end of the run (%+v, %d calls): want it done and not leased", r, sum, api.totalCalls())
		}
	})
}

// TestLoneSuspectDoesNotStall: a run that may hold one row at a time (rps 1, a 3 s lease) whose
// row is answered "bad request data" holds it back as a suspect, which wakes nobody: the claimer
// still settles it, and the run goes on to the next row. Before, the claimer waited for a wake-up
// that never came and the run ended with ErrStalled (simulation seeds 1875 and 1389).
func TestLoneSuspectDoesNotStall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		bad := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		good := m.Enqueue(store.NewContact{PhoneNumber: "79001234568"})[0]
		api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
			if tg.String() == "79001234567" {
				return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData)
			}
			return greenapi.Avatar{Available: yes()}, nil
		})
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Instances[0].RPS = 1
		cfg.Lease = 3 * time.Second
		sum, err := runOnce(t, context.Background(), m, cfg)
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		if r, _ := m.Row(bad); r.Status != store.StatusFailed {
			t.Errorf("the row answered 'bad request data': %+v, want failed", r)
		}
		if r, _ := m.Row(good); r.Status != store.StatusDone {
			t.Errorf("the other row: %+v, want done", r)
		}
	})
}

// TestLostRowEmptiesAClosedQueue: the claimer has reached the limit and closed the queue, the
// one row left waits in it for its instance (starting), and another run takes the row. The
// renewal that drops it empties the queue, which must then finish: the run ends at once. Before,
// the queue stayed open for ever and the run waited until the instance left the run
// (ErrNoInstance after starting_timeout) or the watchdog (simulation seed 27410).
func TestLostRowEmptiesAClosedQueue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			return greenapi.Avatar{}, apiErr(greenapi.ClassStarting, 200, greenapi.ReasonStarting)
		})
		api.state = func(n int) (string, error) {
			if n == 0 {
				return greenapi.StateAuthorized, nil
			}
			return greenapi.StateStarting, nil
		}
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Limit = 1
		cfg.Lease = 3 * time.Second
		cfg.StartingTimeout = 5 * time.Minute
		go func() {
			time.Sleep(2 * time.Second) // the row waits in the queue: its instance is starting
			m.Expire(id)
			if got, err := m.Claim(context.Background(), "thief", 1, 1, time.Hour); err != nil || len(got) != 1 {
				t.Errorf("the thief's claim: %v, %v", got, err)
			}
		}()
		start := time.Now()
		sum, err := runOnce(t, context.Background(), m, cfg)
		if err != nil || sum.Stop != "limit reached" {
			t.Fatalf("run: %v, stop %q (%+v); want the limit reached", err, sum.Stop, sum)
		}
		if took := time.Since(start); took > time.Minute {
			t.Fatalf("the run took %v after its last row was taken over at 2 s", took)
		}
		if r, _ := m.Row(id); r.LockedBy != "thief" {
			t.Fatalf("row %+v: the thief's claim was overwritten", r)
		}
	})
}

// failingRenewals is the model whose renewals all fail, retryably.
type failingRenewals struct{ *memstore.Store }

func (failingRenewals) Renew(context.Context, string, []store.Lease, time.Duration) ([]int64, error) {
	return nil, errors.New("renew leases: dial tcp 10.0.0.5:5432: connect: connection refused")
}

// TestReclaimsAreNoProgress: the one row's call hangs (a client with no timeout) and its lease,
// never renewed, lapses every 3 s; the run claims it again each time. Claiming a row it already
// holds is no progress: the watchdog still ends the run with ErrStalled. Before, every re-claim
// counted as a move and the run never ended (simulation seeds 33660 and 28853: 2,936 claims of
// 30 rows in a simulated day).
func TestReclaimsAreNoProgress(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := failingRenewals{memstore.New(nil)}
		m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})
		cfg := config(&hangingAPI{fakeAPI: newFake("1", nil), entered: func() {}})
		cfg.Sleep = nil
		cfg.Lease = 3 * time.Second
		cfg.ShutdownGrace = time.Second
		cfg.StallTimeout = time.Minute
		r, err := enrich.NewRunner(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type outcome struct {
			sum enrich.Summary
			err error
		}
		ended := make(chan outcome, 1)
		go func() {
			sum, err := r.Run(ctx)
			ended <- outcome{sum, err}
		}()
		select {
		case o := <-ended:
			if !errors.Is(o.err, enrich.ErrStalled) {
				t.Fatalf("err = %v, want ErrStalled (%+v)", o.err, o.sum)
			}
		case <-time.After(time.Hour):
			cancel()
			o := <-ended
			t.Fatalf("the run still went on an hour later, with stall_timeout 1m (%+v, %v): re-claims kept the watchdog quiet", o.sum, o.err)
		}
	})
}

// TestLostRowIsNotConfirmed: a row whose claim another run took while its GetAvatar call was in
// flight (a renewal said so) is not asked of CheckWhatsapp when the answer needs confirming: the
// check would spend the instance's check quota on an answer the store then fences off (simulation
// seed 1545).
func TestLostRowIsNotConfirmed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			m.Expire(id)
			if got, err := m.Claim(context.Background(), "thief", 1, 1, time.Hour); err != nil || len(got) != 1 {
				t.Errorf("the thief's claim: %v, %v", got, err)
			}
			time.Sleep(2 * time.Second)                   // renewals every second find the row lost
			return greenapi.Avatar{Available: yes()}, nil // no photo, or no account: to confirm
		})
		api.check = func(greenapi.Target, int) (bool, error) { return true, nil }
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Lease = 3 * time.Second
		cfg.ConfirmMissing = true
		sum, err := runOnce(t, context.Background(), m, cfg)
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		if got := api.checked(); len(got) != 0 {
			t.Fatalf("CheckWhatsapp asked for %v after the row's claim was lost (%+v)", got, sum)
		}
		if r, _ := m.Row(id); r.LockedBy != "thief" {
			t.Fatalf("row %+v: the thief's claim was overwritten", r)
		}
	})
}

// TestShortLeaseIsNotConfirmed: an answer to confirm comes when the row's lease, never renewed
// (the database refuses renewals), has less than a third left: CheckWhatsapp is not asked, as
// no GetAvatar call would start on the row then, and the answer is written unconfirmed
// (simulation seeds with database errors and confirm_missing).
func TestShortLeaseIsNotConfirmed(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := failingRenewals{memstore.New(nil)}
		id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			time.Sleep(2500 * time.Millisecond) // of a 3 s lease
			return greenapi.Avatar{Available: yes()}, nil
		})
		api.check = func(greenapi.Target, int) (bool, error) { return true, nil }
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Lease = 3 * time.Second
		cfg.ConfirmMissing = true
		sum, err := runOnce(t, context.Background(), m, cfg)
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		if got := api.checked(); len(got) != 0 {
			t.Fatalf("CheckWhatsapp asked for %v with half a second of the row's lease left (%+v)", got, sum)
		}
		if r, _ := m.Row(id); r.Status != store.StatusDone || r.ExistsWhatsapp != nil {
			t.Fatalf("row %+v: want done, existence unknown", r)
		}
	})
}

// TestSharedBlockTailKeepsTheRate: two runs spend one instance (5 rps) through the shared
// budget. Run A's second block follows its first, so A takes itself to be alone on the instance
// and, with one worker, lets a call that outlasted a slot (260 ms for a 203 ms slot) push the
// rest of the block late, its last slot included (alone, a slot may be late by half a slot).
// Run B starts meanwhile and takes the next block, which begins only the guard (10 ms) after
// A's block ends: A's late tail and B's first slots put 6 calls within 968 ms on the instance.
// The engine decided "alone" from the block before, but the block after may go to another run:
// the last slot may now be late past the guard only when the next block is known to be this
// run's (shared.oursNext). Simulation seeds 384 and 330.
func TestSharedBlockTailKeepsTheRate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		for _, p := range phones(40) {
			m.Enqueue(store.NewContact{PhoneNumber: p})
		}
		budget := memstore.NewBudget(nil)
		var mu sync.Mutex
		var sends []time.Time
		api := func(latency func(n int) time.Duration) *fakeAPI {
			n := 0
			return newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
				mu.Lock()
				sends = append(sends, time.Now())
				d := latency(n)
				n++
				mu.Unlock()
				time.Sleep(d)
				return greenapi.Avatar{Available: yes()}, nil
			})
		}
		run := func(owner string, a *fakeAPI) {
			cfg := config(a)
			cfg.Owner, cfg.Sleep, cfg.Budget = owner, nil, budget
			cfg.Workers, cfg.BatchSize = 1, 5
			cfg.Instances[0].RPS = 5
			if sum, err := runOnce(t, context.Background(), m, cfg); err != nil {
				t.Errorf("%s: %v (%+v)", owner, err, sum)
			}
		}
		var wg sync.WaitGroup
		// A's sixth call, the first of its second block, takes 260 ms; the others 10 ms.
		wg.Go(func() {
			run("run-a", api(func(n int) time.Duration {
				if n == 5 {
					return 260 * time.Millisecond
				}
				return 10 * time.Millisecond
			}))
		})
		wg.Go(func() {
			time.Sleep(1500 * time.Millisecond)
			run("run-b", api(func(int) time.Duration { return 10 * time.Millisecond }))
		})
		wg.Wait()
		if at, ok := overRate(sends, 5, 0); !ok {
			i := slices.Index(sends, at)
			var ds []time.Duration
			for _, s := range sends[i : i+6] {
				ds = append(ds, s.Sub(sends[0]))
			}
			t.Errorf("6 calls within 1 s on an instance of 5 rps, at %v from the first call", ds)
		}
	})
}

// TestLostWhileWaitingForABlock: a row must not be called once a renewal found its claim lost,
// however long the instance's next block is in coming. The engine used to take the row first and
// then wait for the slot with it in hand (Runner.work, then c.send), and to call it when the block
// came; its dispatcher now takes a row only at a slot it holds. Here the first call of the only
// row fails after 5 s and is retried; another run has taken the next 20 s of the instance, and
// takes the row 1 s later, which the next renewal says: no call may leave for it. Simulation seeds
// 1216 and 566.
func TestLostWhileWaitingForABlock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
		budget := memstore.NewBudget(nil)
		var mu sync.Mutex
		var calls []string
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			r, _ := m.Row(id)
			mu.Lock()
			n := len(calls)
			calls = append(calls, fmt.Sprintf("%v: row locked by %s", time.Now().Format("15:04:05.000"), r.LockedBy))
			mu.Unlock()
			if n == 0 {
				time.Sleep(5 * time.Second)
				return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 502, "")
			}
			return greenapi.Avatar{Available: yes()}, nil
		})
		cfg := config(api)
		cfg.Owner, cfg.Sleep, cfg.Budget = "run-a", nil, budget
		cfg.Workers, cfg.RetryInRun, cfg.Lease = 2, 1, 9*time.Second
		cfg.Retry = enrich.Backoff{Base: time.Millisecond, Max: time.Millisecond}
		cfg.Instances[0].RPS = 2
		go func() {
			time.Sleep(2 * time.Second) // another run takes the next 20 s of the instance
			if _, err := budget.Reserve(context.Background(), store.BudgetRequest{Instance: "1", Owner: "run-b", MaxRPS: 2, Want: 40},
				enrich.SharedPolicy()); err != nil {
				t.Error(err)
			}
			time.Sleep(4 * time.Second) // and at 6 s the row
			m.Expire(id)
			if got, err := m.Claim(context.Background(), "run-b", 1, 1, time.Hour); err != nil || len(got) != 1 {
				t.Errorf("run-b's claim: %v, %v", got, err)
			}
		}()
		sum, err := runOnce(t, context.Background(), m, cfg)
		mu.Lock()
		defer mu.Unlock()
		for _, c := range calls {
			if !strings.HasSuffix(c, "run-a") {
				t.Errorf("a call left for a row run-a no longer held (%v; %+v): calls %v", err, sum, calls)
				break
			}
		}
	})
}

// TestLateAnswerSaysNothingAfterItLeft: an answer shows the instance alive when its request
// left, not when it came back. Row A's call leaves first and is answered after 500 ms; row B's,
// sent 100 ms after A's, fails to connect, and so does its retry (at about 800 ms), and the
// instance never answers again. Nothing has shown the instance alive since B began to fail, so B
// goes back untouched as the outage's, not charged an attempt, and the run ends out of
// instances. Before (f86ec64), A's late answer counted as alive at 500 ms: B was rescheduled,
// paying for the outage, and the run exited 0 (TestInstanceOutage failed once in ten make test
// runs so: calls in flight finish in any order).
func TestLateAnswerSaysNothingAfterItLeft(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := memstore.New(nil)
		ids := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"}, store.NewContact{PhoneNumber: "79001234568"})
		api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
			if tg.String() == "79001234567" {
				time.Sleep(500 * time.Millisecond)
				return greenapi.Avatar{Available: yes()}, nil
			}
			return greenapi.Avatar{}, netErr()
		})
		api.state = func(n int) (string, error) {
			if n == 0 {
				return greenapi.StateAuthorized, nil // the outage begins after the pre-flight check
			}
			return "", netErr()
		}
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Workers, cfg.BatchSize, cfg.RetryInRun = 2, 1, 1
		cfg.Instances[0].RPS = 10
		cfg.StartingTimeout = 10 * time.Second
		cfg.StartingBackoff = enrich.Backoff{Base: time.Second, Max: time.Second}
		sum, err := runOnce(t, context.Background(), m, cfg)
		if !errors.Is(err, enrich.ErrNoInstance) {
			t.Fatalf("err = %v, want ErrNoInstance (%+v)", err, sum)
		}
		a, _ := m.Row(ids[0])
		b, _ := m.Row(ids[1])
		if a.Status != store.StatusDone {
			t.Errorf("row A %+v: want it done by its late answer", a)
		}
		if b.Status != store.StatusPending || b.Attempts != 0 || b.LockedBy != "" {
			t.Errorf("row B %+v after %d calls for it: want it untouched, the outage's (%+v)", b, api.callsFor("79001234568"), sum)
		}
	})
}

// downFromRenewal is the model whose database goes away at the first lease renewal: that
// renewal and every later claim, renewal and write fail as a connection that cannot be made does.
type downFromRenewal struct {
	*memstore.Store
	down     atomic.Bool
	renewals atomic.Int64
}

func (d *downFromRenewal) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	if d.down.Load() {
		return nil, errRefused
	}
	return d.Store.ClaimAfter(ctx, owner, token, n, lease, after)
}

func (d *downFromRenewal) Renew(ctx context.Context, owner string, leases []store.Lease, lease time.Duration) ([]int64, error) {
	d.down.Store(true)
	d.renewals.Add(1)
	return nil, fmt.Errorf("renew leases: %w", errRefused) // as store.Store says it
}

func (d *downFromRenewal) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	if d.down.Load() {
		return store.Written{}, errRefused
	}
	return d.Store.Write(ctx, owner, b)
}

// TestRenewalsFailingEndTheRun (simulation seed 1003549): the database goes away at the first
// renewal while the run holds all the rows it may (4) and their calls fail with 503s: their leases
// run short, so nothing is called, claimed or written, and only the lease renewals meet the
// outage. They end the run with ErrDatabase once the database has been away
// for RetryFor, as claims and writes do. Before, a renewal's failure was only logged: the run
// waited, its rows never callable again, until the stall watchdog ended it as stalled.
func TestRenewalsFailingEndTheRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := &downFromRenewal{Store: memstore.New(nil)}
		for _, p := range phones(30) {
			m.Enqueue(store.NewContact{PhoneNumber: p})
		}
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "")
		})
		cfg := config(api)
		cfg.Sleep = nil
		cfg.Workers = 1
		cfg.BatchSize = 10
		cfg.Instances[0].RPS = 1 // the run holds rate × lease / 2 = 4 rows, and claims no more
		cfg.Lease = 9 * time.Second
		cfg.Retry = enrich.Backoff{Base: 20 * time.Second, Max: 20 * time.Second}
		cfg.RetryInRun = 5
		cfg.RetryFor = 30 * time.Second
		start := time.Now()
		sum, err := runOnce(t, context.Background(), m, cfg)
		if !errors.Is(err, enrich.ErrDatabase) || !strings.Contains(err.Error(), "renew") {
			t.Fatalf("err = %v (stop %q), want ErrDatabase from the renewals", err, sum.Stop)
		}
		// The first renewal fails a third of a lease in (3 s); the run ends at the first one
		// RetryFor after it, at most a third of a lease later.
		if took := time.Since(start); took > 3*time.Second+cfg.RetryFor+cfg.Lease/3 {
			t.Fatalf("the run ended after %v, want within RetryFor (%v) of the first failed renewal", took, cfg.RetryFor)
		}
		if n := m.renewals.Load(); n < 10 {
			t.Fatalf("%d renewals: the run ended before the database had been away for RetryFor", n)
		}
		// The database's fault costs no row anything: none is failed or charged an attempt.
		for _, row := range m.Rows() {
			if row.Status != store.StatusPending || row.Attempts != 0 || row.Writes != 0 {
				t.Errorf("row %d after the outage: %s, %d attempts, %d writes; want pending and untouched",
					row.ID, row.Status, row.Attempts, row.Writes)
			}
		}
	})
}
