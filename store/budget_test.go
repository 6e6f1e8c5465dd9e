package store_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// policy is the engine's pacing policy, restated so the test reads alone.
var policy = store.BudgetPolicy{Headroom: 0.015, HeadroomStep: 0.015, HeadroomMax: 0.12, HeadroomEase: time.Minute,
	Cut: 0.85, Floor: 0.05, Quiet: 3 * time.Second, Step: 0.05, StepEvery: time.Second}

func (b *bundle) reserve(t *testing.T, req store.BudgetRequest) store.Grant {
	t.Helper()
	if req.Instance == "" {
		req.Instance = "1101000001"
	}
	if req.MaxRPS == 0 {
		req.MaxRPS = 10
	}
	g, err := b.store.Reserve(b.ctx, req, policy)
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}
	return g
}

// TestReserve: blocks of one instance's schedule follow each other at the instance's rate, never
// overlapping, and never start in the past.
func TestReserve(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	iv := time.Duration(float64(time.Second) * (1 + policy.Headroom) / 10).Round(time.Microsecond)
	first := b.reserve(t, store.BudgetRequest{Want: 10})
	if !first.Start.Equal(now) || first.Slots != 10 || first.Interval != iv || first.Rate != 10 || !first.Now.Equal(now) {
		t.Fatalf("first grant %+v; want 10 slots from now every %s", first, iv)
	}
	second := b.reserve(t, store.BudgetRequest{Want: 5})
	if want := now.Add(10 * iv); !second.Start.Equal(want) || second.Slots != 5 {
		t.Fatalf("second grant %+v; want 5 slots from %v", second, want)
	}
	// Another instance has its own schedule.
	if other := b.reserve(t, store.BudgetRequest{Instance: "1101000002", Want: 3}); !other.Start.Equal(now) {
		t.Fatalf("another instance's grant starts at %v, want now", other.Start)
	}
	// Past slots are not handed out: a schedule that fell behind starts again now.
	later := b.clock.Advance(time.Minute)
	if g := b.reserve(t, store.BudgetRequest{Want: 1}); !g.Start.Equal(later) {
		t.Fatalf("after a minute idle the grant starts at %v, want now %v", g.Start, later)
	}
}

// TestReserveConcurrent: 8 processes reserving at once get blocks that never overlap and leave no
// gap: together they hold exactly the instance's rate.
func TestReserveConcurrent(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	const procs, rounds = 8, 25
	var (
		mu     sync.Mutex
		grants []store.Grant
		wg     sync.WaitGroup
	)
	for p := range procs {
		pool := pgtest.Connect(t, dbURL)
		st, err := store.New(pool, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for range rounds {
				g, err := st.Reserve(context.Background(), store.BudgetRequest{Instance: "1101000001", MaxRPS: 1000, Want: 7}, policy)
				if err != nil {
					t.Errorf("process %d: %v", p, err)
					return
				}
				mu.Lock()
				grants = append(grants, g)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(grants, func(i, j int) bool { return grants[i].Start.Before(grants[j].Start) })
	for i := 1; i < len(grants); i++ {
		prev, g := grants[i-1], grants[i]
		end := prev.Start.Add(time.Duration(prev.Slots) * prev.Interval)
		if g.Start.Before(end) {
			t.Fatalf("blocks overlap: %v+%d×%s and %v", prev.Start, prev.Slots, prev.Interval, g.Start)
		}
	}
	if len(grants) != procs*rounds {
		t.Fatalf("%d grants, want %d", len(grants), procs*rounds)
	}
}

// TestThrottled: a 429 cuts the instance's rate for everyone, once per round of requests sent at
// the old rate; Retry-After pauses the instance; the rate climbs back after the quiet period.
func TestThrottled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const id = "1101000001"
	g := b.reserve(t, store.BudgetRequest{Want: 10})
	t0 := b.clock.Advance(200 * time.Millisecond)
	if err := b.store.Throttled(b.ctx, id, g.Start.Add(100*time.Millisecond), 10, 0, policy); err != nil {
		t.Fatal(err)
	}
	// A 429 for a request sent before that cut does not cut again.
	if err := b.store.Throttled(b.ctx, id, g.Start.Add(150*time.Millisecond), 10, 0, policy); err != nil {
		t.Fatal(err)
	}
	if g := b.reserve(t, store.BudgetRequest{Want: 1}); g.Rate != 8.5 {
		t.Fatalf("rate after one round of 429s = %v, want 8.5", g.Rate)
	}
	// One sent after the cut cuts again, with a Retry-After.
	b.clock.Advance(100 * time.Millisecond)
	if err := b.store.Throttled(b.ctx, id, t0.Add(50*time.Millisecond), 10, 2*time.Second, policy); err != nil {
		t.Fatal(err)
	}
	pauseEnd := t0.Add(100*time.Millisecond + 2*time.Second)
	g = b.reserve(t, store.BudgetRequest{Want: 1})
	if g.Rate != 8.5*0.85 || g.Start.Before(pauseEnd) {
		t.Fatalf("grant %+v: want rate %.4f from the end of the Retry-After pause %v", g, 8.5*0.85, pauseEnd)
	}
	// Quiet for the quiet period and 2 steps: the rate climbs by 2 × 5% of 10.
	b.clock.Advance(policy.Quiet + 2*policy.StepEvery)
	if g := b.reserve(t, store.BudgetRequest{Want: 1}); fmt.Sprintf("%.4f", g.Rate) != fmt.Sprintf("%.4f", 8.5*0.85+1) {
		t.Fatalf("rate after the quiet period = %v, want %.4f", g.Rate, 8.5*0.85+1)
	}
	// Many cuts stop at the floor.
	for range 40 {
		now := b.clock.Advance(time.Millisecond)
		if err := b.store.Throttled(b.ctx, id, now, 10, 0, policy); err != nil {
			t.Fatal(err)
		}
	}
	if g := b.reserve(t, store.BudgetRequest{Want: 1}); g.Rate != 10*policy.Floor {
		t.Fatalf("rate after 40 cuts = %v, want the floor %v", g.Rate, 10*policy.Floor)
	}
}

// TestThrottledHeadroom: every cut widens the instance's headroom by a step, for every process
// (the slots of the next grant are wider apart), once per round; each HeadroomEase without a cut
// narrows it back by a step, never below the least; it never passes HeadroomMax.
func TestThrottledHeadroom(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const id = "1101000001"
	cut := func(sent time.Time) {
		t.Helper()
		if err := b.store.Throttled(b.ctx, id, sent, 10, 0, policy); err != nil {
			t.Fatal(err)
		}
	}
	// want checks the next grant's headroom and that its slots are spaced by it at the rate.
	want := func(step string, headroom float64) {
		t.Helper()
		g := b.reserve(t, store.BudgetRequest{Want: 1})
		iv := time.Duration(math.Ceil(1e6*(1+headroom)/g.Rate)) * time.Microsecond
		if math.Abs(g.Headroom-headroom) > 1e-9 || g.Interval != iv {
			t.Fatalf("%s: headroom %.4f, slots every %s; want %.4f, every %s", step, g.Headroom, g.Interval, headroom, iv)
		}
	}
	want("a new instance", 0.015)
	first := b.clock.Advance(time.Millisecond)
	cut(first)
	want("after a cut", 0.03)
	cut(first.Add(-time.Microsecond)) // sent before the cut: the same round
	want("after a 429 of the same round", 0.03)
	cut(b.clock.Advance(time.Millisecond))
	want("after a second cut", 0.045)
	b.clock.Advance(policy.HeadroomEase)
	want("a quiet HeadroomEase later", 0.03)
	cut(b.clock.Advance(time.Millisecond))
	want("a cut after the ease widens the eased headroom", 0.045)
	b.clock.Advance(2*policy.HeadroomEase - time.Millisecond)
	want("almost two HeadroomEase later: one step", 0.03)
	b.clock.Advance(time.Hour)
	want("an hour later", 0.015)
	for range 20 {
		cut(b.clock.Advance(time.Millisecond))
	}
	want("after 20 cuts", policy.HeadroomMax)
}

// TestDailyCap: an instance is handed no more than its cap on a day, across every caller;
// unsent slots go back to the day's count; the day turns in the configured time zone; an
// instance that answered 466 gets nothing more that day.
func TestDailyCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Put the clock at 02:30 in Moscow (23:30 UTC the day before), where the day starts at 03:00.
	msk, err := time.LoadLocation("Europe/Moscow")
	if err != nil {
		t.Fatal(err)
	}
	now := b.clock.Now().In(msk)
	start := time.Date(now.Year(), now.Month(), now.Day(), 2, 30, 0, 0, msk).Add(24 * time.Hour)
	b.clock.Advance(start.Sub(b.clock.Now()))
	day := store.DayStart{Zone: "Europe/Moscow", Offset: 3 * time.Hour}
	req := store.BudgetRequest{Want: 10, PerDay: 25, Day: day}
	for i, want := range []int{10, 10, 5, 0} {
		if g := b.reserve(t, req); g.Slots != want {
			t.Fatalf("grant %d: %d slots, want %d (%+v)", i, g.Slots, want, g)
		}
	}
	// Three slots of the last block went unsent: they can be spent again today.
	refund := req
	refund.Refund = 3
	if g := b.reserve(t, refund); g.Slots != 3 || g.Used != 25 {
		t.Fatalf("after a refund of 3: %+v, want 3 slots and 25 used", g)
	}
	// 03:00 in Moscow: a new day.
	b.clock.Advance(30 * time.Minute)
	if g := b.reserve(t, req); g.Slots != 10 || g.Used != 10 {
		t.Fatalf("after the day turned: %+v, want 10 slots and 10 used", g)
	}
	// 466: nothing more today, even with the cap not reached; the next day it is back.
	if err := b.store.QuotaSpent(b.ctx, "1101000001", day); err != nil {
		t.Fatal(err)
	}
	if g := b.reserve(t, req); g.Slots != 0 || !g.QuotaSpent {
		t.Fatalf("after a 466: %+v, want no slot and QuotaSpent", g)
	}
	if g := b.reserve(t, store.BudgetRequest{Want: 0, Day: day}); !g.QuotaSpent {
		t.Fatalf("a read of the day does not say the quota is spent: %+v", g)
	}
	b.clock.Advance(24 * time.Hour)
	if g := b.reserve(t, req); g.Slots != 10 || g.QuotaSpent {
		t.Fatalf("the day after a 466: %+v, want 10 slots", g)
	}
}

// TestReserveGuard: a block that goes to another run starts a guard after the previous one; the
// same run's next block follows at once.
func TestReserveGuard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := policy
	p.Guard = 5 * time.Millisecond
	take := func(owner string, want int) store.Grant {
		t.Helper()
		g, err := b.store.Reserve(b.ctx, store.BudgetRequest{Instance: "1101000001", Owner: owner, MaxRPS: 10, Want: want}, p)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a1 := take("run-a", 10)
	end := a1.Start.Add(10 * a1.Interval)
	if a2 := take("run-a", 10); !a2.Start.Equal(end) {
		t.Fatalf("the same run's next block starts at %v, want %v", a2.Start, end)
	}
	end = end.Add(10 * a1.Interval)
	if b1 := take("run-b", 10); !b1.Start.Equal(end.Add(p.Guard)) {
		t.Fatalf("another run's block starts at %v, want %v (the guard after the last block)", b1.Start, end.Add(p.Guard))
	}
}

// TestReserveState: state checks of an instance are one second apart (with headroom) whoever asks.
func TestReserveState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	first, _, err := b.store.ReserveState(b.ctx, "1101000001", 10, policy)
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := b.store.ReserveState(b.ctx, "1101000001", 10, policy)
	if err != nil {
		t.Fatal(err)
	}
	gap := time.Duration(float64(time.Second) * (1 + policy.Headroom)).Round(time.Millisecond)
	if !first.Equal(now) || second.Sub(first) != gap {
		t.Fatalf("state slots %v and %v, want now and %s later", first, second, gap)
	}
}

// TestReserveCheck: CheckWhatsapp slots of an instance are 1/rps apart (with headroom), on a
// schedule of their own: GetAvatar's budget and the state checks are untouched.
func TestReserveCheck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	var slots []time.Time
	for range 3 {
		slot, _, err := b.store.ReserveCheck(b.ctx, "1101000001", 10, policy)
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, slot)
	}
	gap := time.Duration(float64(100*time.Millisecond) * (1 + policy.Headroom)).Round(time.Microsecond)
	if !slots[0].Equal(now) || slots[1].Sub(slots[0]) != gap || slots[2].Sub(slots[1]) != gap {
		t.Fatalf("check slots %v, want now and then every %s", slots, gap)
	}
	state, _, err := b.store.ReserveState(b.ctx, "1101000001", 10, policy)
	if err != nil || !state.Equal(now) {
		t.Fatalf("state slot %v, %v: want now, untouched by the confirmations", state, err)
	}
	if _, _, err := b.store.ReserveCheck(b.ctx, "1101000001", 0, policy); err == nil {
		t.Fatal("ReserveCheck at 0 rps: no error")
	}
}
