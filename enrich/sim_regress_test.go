package enrich_test

import (
	"context"
	"errors"
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
