package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// TestDailyCapDSTFallBack: a day that starts in the hour the clocks repeat (Europe/Berlin,
// 02:30, on 2026-10-25 when 03:00 CEST turns back to 02:00 CET) is counted once: from 02:00 CET
// the day key would say the day before, and at 02:30 CET the day again, and a day compared with
// = handed the cap out anew at each. The key only moves forward, so the cap holds until the
// next day's 02:30.
func TestDailyCapDSTFallBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	day := store.DayStart{Zone: "Europe/Berlin", Offset: 2*time.Hour + 30*time.Minute}
	const perDay = 100
	req := store.BudgetRequest{Want: 40, PerDay: perDay, Day: day}
	// 02:30 CEST is 00:30 UTC; 02:00 and 02:30 CET, the repeated hour, are 01:00 and 01:30 UTC.
	// The next day starts at 02:30 CET on the 26th, 01:30 UTC.
	from := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)
	next := time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC)
	b.clock.Advance(from.Sub(b.clock.Now()))
	granted := 0
	for now := from; now.Before(next); now = b.clock.Advance(10 * time.Minute) {
		g := b.reserve(t, req)
		granted += g.Slots
		if g.Slots > 0 {
			t.Logf("%s (%s): %d slots, %d used", now.Format("01-02 15:04Z"), now.In(berlin(t)).Format("15:04 MST"), g.Slots, g.Used)
		}
	}
	if granted != perDay {
		t.Errorf("%d slots handed out from 02:30 CEST on 2026-10-25 to 02:30 CET the next day, want the cap of %d", granted, perDay)
	}
	b.clock.Advance(next.Sub(b.clock.Now()))
	if g := b.reserve(t, req); g.Slots != 40 || g.Used != 40 {
		t.Errorf("at 02:30 CET on 2026-10-26: %+v, want a new day: 40 slots, 40 used", g)
	}
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestRefundOnce: a reservation that gave unsent slots back committed, but its reply was lost,
// so the run asks again with the same slots to give back: they go back to the day's count once,
// and the day's cap still holds. A later refund of new unsent slots goes back as well.
func TestRefundOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	day := store.DayStart{Zone: "UTC"}
	const perDay = 25
	req := store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: perDay, Day: day}
	granted := 0
	for range 3 {
		granted += b.reserve(t, req).Slots
	}
	// 3 slots of the last block went unsent: given back, they can be taken again.
	refund := req
	refund.Refund = 3
	first := b.reserve(t, refund)
	granted += first.Slots
	// The reply was lost: the run does not know its 3 went back, and asks again.
	again := b.reserve(t, refund)
	granted += again.Slots
	t.Logf("after the refund: %d slots, %d used; asked again: %d slots, %d used", first.Slots, first.Used, again.Slots, again.Used)
	if first.Slots != 3 || first.Used != perDay || again.Slots != 0 || again.Used != perDay {
		t.Errorf("refund %+v then the same refund again %+v: want 3 slots, then none, %d used", first, again, perDay)
	}
	// The second reply arrived: the run counts its 3 given back, and later gives back 2 more.
	next := req
	next.Refunded, next.Refund = 3, 2
	if g := b.reserve(t, next); g.Slots != 2 || g.Used != perDay {
		t.Errorf("a new refund of 2: %+v, want 2 slots, %d used", g, perDay)
	} else {
		granted += g.Slots
	}
	if want := perDay + 3 + 2; granted != want {
		t.Errorf("%d slots handed out today, want %d (the cap and the 5 slots given back once)", granted, want)
	}
	// Another run's refunds are its own.
	other := store.BudgetRequest{Owner: "run-b", Want: 10, PerDay: perDay, Day: day, Refund: 1}
	if g := b.reserve(t, other); g.Slots != 1 {
		t.Errorf("another run's refund of 1: %+v, want 1 slot", g)
	}
}

// TestReserveAfterLockWait: a reservation that waits for another's lock on the instance's row
// places its grant by the database's clock after the wait, not at its transaction's start: the
// caller measures its clock's offset from Grant.Now, and a grant dated before the wait would
// put its slots early, over the block of the process that held the row.
func TestReserveAfterLockWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	st, err := store.New(pool, store.Config{}) // the database's clock, as in production
	if err != nil {
		t.Fatal(err)
	}
	req := store.BudgetRequest{Instance: "1101000001", Owner: "run-a", MaxRPS: 1000, Want: 1}
	if _, err := st.Reserve(ctx, req, policy); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT FROM enrich.enrich_instances WHERE instance_id = '1101000001' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		g   store.Grant
		err error
	}
	res := make(chan result, 1)
	go func() {
		g, err := st.Reserve(ctx, store.BudgetRequest{Instance: "1101000001", Owner: "run-b", MaxRPS: 1000, Want: 5}, policy)
		res <- result{g, err}
	}()
	waitForLockWait(t, pool, "%WITH ref AS%") // sqlReserve (the start: pg_stat_activity keeps 1 kB)
	var released time.Time
	if err := holder.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&released); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("lock released at %s; grant made at %s, first slot %s", released.Format("15:04:05.000000"),
		r.g.Now.Format("15:04:05.000000"), r.g.Start.Format("15:04:05.000000"))
	if r.g.Now.Before(released) || r.g.Start.Before(released) {
		t.Errorf("grant dated %s, first slot %s: %s before the lock it waited for was released",
			r.g.Now.Format("15:04:05.000000"), r.g.Start.Format("15:04:05.000000"), released.Sub(r.g.Now))
	}
}
