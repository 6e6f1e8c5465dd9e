package storecontract

// The budget's contract: what the engine relies on from the instances' shared budget (blocks of
// an instance's send slots, the rate cut by a 429 and climbing back, the headroom, Retry-After,
// the daily cap with its refunds and its day, the 466 of the day, the one-at-a-time schedules of
// GetStateInstance and CheckWhatsapp). Outcomes are compared exactly: the budget keeps time to
// the microsecond, and every expectation is computed as the statements compute it.

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// Budget is the instances' shared budget the engine spends (enrich.Budget, restated so the
// contract does not import the engine it describes).
type Budget interface {
	Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error)
	Throttled(ctx context.Context, instance string, sent time.Time, maxRPS float64, retryAfter time.Duration, p store.BudgetPolicy) error
	QuotaSpent(ctx context.Context, instance string, day store.DayStart) error
	ReserveState(ctx context.Context, instance string, maxRPS float64, p store.BudgetPolicy) (slot, now time.Time, err error)
	ReserveCheck(ctx context.Context, instance string, rps float64, p store.BudgetPolicy) (slot, now time.Time, err error)
	HandOver(ctx context.Context, instance, from, to string, p store.BudgetPolicy) (bool, error)
	Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error)
}

// budgetCases are the budget's cases, skipped for a Subject without a Budget.
var budgetCases = []struct {
	name string
	run  func(t *testing.T, s Subject)
}{
	{"BudgetBlocks", budgetBlocks},
	{"BudgetYield", budgetYield},
	{"BudgetTrim", budgetTrim},
	{"BudgetRateCut", budgetRateCut},
	{"BudgetHeadroom", budgetHeadroom},
	{"BudgetRetryAfter", budgetRetryAfter},
	{"BudgetDailyCap", budgetDailyCap},
	{"BudgetRefundTakesTheStoredDay", budgetRefundTakesTheStoredDay},
	{"BudgetDayTurnsDST", budgetDayTurnsDST},
	{"BudgetQuotaSpent", budgetQuotaSpent},
	{"BudgetStateAndCheck", budgetStateAndCheck},
	{"BudgetArguments", budgetArguments},
}

// Policy is the engine's pacing policy (enrich.SharedPolicy), restated, with the guard between
// two runs' blocks.
var Policy = store.BudgetPolicy{Headroom: 0.015, HeadroomStep: 0.015, HeadroomMax: 0.12, HeadroomEase: time.Minute,
	Cut: 0.85, Floor: 0.05, Quiet: 3 * time.Second, Step: 0.05, StepEvery: 500 * time.Millisecond, Guard: 10 * time.Millisecond}

// epoch is the budget's "never" (AnsweredAt of an instance never answered).
var epoch = time.Unix(0, 0)

const inst = "1101000001"

func budgetOf(t *testing.T, s Subject) Budget {
	t.Helper()
	if s.Budget == nil {
		t.Skip("the subject has no Budget")
	}
	return s.Budget
}

// reserve is Reserve of inst at 10 rps unless req says otherwise, failing the test on error.
func reserve(t *testing.T, b Budget, req store.BudgetRequest, p store.BudgetPolicy) store.Grant {
	t.Helper()
	if req.Instance == "" {
		req.Instance = inst
	}
	if req.MaxRPS == 0 {
		req.MaxRPS = 10
	}
	g, err := b.Reserve(ctx, req, p)
	if err != nil {
		t.Fatalf("reserve %+v: %v", req, err)
	}
	return g
}

func throttled(t *testing.T, b Budget, sent time.Time, retryAfter time.Duration, p store.BudgetPolicy) {
	t.Helper()
	if err := b.Throttled(ctx, inst, sent, 10, retryAfter, p); err != nil {
		t.Fatalf("throttled: %v", err)
	}
}

// interval is the slot of a rate with a headroom, as the budget computes it: whole microseconds,
// rounded up.
func interval(headroom, rate float64) time.Duration {
	return time.Duration(math.Ceil(1e6*(1+headroom)/rate)) * time.Microsecond
}

// budgetBlocks: an instance's blocks follow each other at its rate: one run's blocks are
// contiguous, a block going to another run than the last starts Guard later (so does the first
// block of an instance, which no run took before), a read (Want 0) takes nothing, past slots are
// never handed out, and every instance has a schedule of its own.
func budgetBlocks(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	now := s.Now()
	iv := interval(p.Headroom, 10)
	a1 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 10}, p)
	if !a1.Start.Equal(now.Add(p.Guard)) || !a1.Now.Equal(now) || a1.Slots != 10 || a1.Interval != iv || a1.Rate != 10 ||
		a1.Headroom != p.Headroom || a1.Used != 10 || a1.QuotaSpent || !a1.AnsweredAt.Equal(epoch) {
		t.Fatalf("first grant %+v; want 10 slots every %s from a guard after now %v, rate 10, headroom %v, 10 used, never answered",
			a1, iv, now, p.Headroom)
	}
	a2 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 5}, p)
	if !a2.Start.Equal(a1.End()) || a2.Slots != 5 || a2.Used != 15 {
		t.Fatalf("the same run's next grant %+v; want 5 slots from the end of its last block %v, 15 used", a2, a1.End())
	}
	b1 := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 3}, p)
	if !b1.Start.Equal(a2.End().Add(p.Guard)) || b1.Slots != 3 {
		t.Fatalf("another run's grant %+v; want 3 slots from a guard after the last block %v", b1, a2.End().Add(p.Guard))
	}
	b2 := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1}, p)
	if !b2.Start.Equal(b1.End()) {
		t.Fatalf("run-b's second grant starts at %v, want right after its first, %v", b2.Start, b1.End())
	}
	a3 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 2}, p)
	if !a3.Start.Equal(b2.End().Add(p.Guard)) {
		t.Fatalf("run-a's grant after run-b's starts at %v, want %v", a3.Start, b2.End().Add(p.Guard))
	}
	read := reserve(t, b, store.BudgetRequest{Owner: "run-c", Want: 0}, p)
	if read.Slots != 0 || read.Used != 21 || !read.Start.Equal(a3.End().Add(p.Guard)) {
		t.Fatalf("a read %+v; want no slot, 21 used, and where its block would start, %v", read, a3.End().Add(p.Guard))
	}
	if a4 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 1}, p); !a4.Start.Equal(a3.End()) || a4.Used != 22 {
		t.Fatalf("after another run's read, run-a's grant %+v; want right after its last block %v: a read takes nothing", a4, a3.End())
	}
	// Another instance has its own schedule.
	if o := reserve(t, b, store.BudgetRequest{Instance: "1101000002", Owner: "run-a", Want: 3}, p); !o.Start.Equal(now.Add(p.Guard)) || o.Used != 3 {
		t.Fatalf("another instance's first grant %+v; want from a guard after now, 3 used", o)
	}
	// Past slots are not handed out: a schedule that fell behind starts again now.
	later := s.Now().Add(time.Minute)
	s.Advance(time.Minute)
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1}, p); !g.Start.Equal(later) || !g.Now.Equal(later) {
		t.Fatalf("after a minute idle the grant %+v; want it to start now, %v", g, later)
	}
	// A run that had an answer says so: AnsweredAt is that reservation's now, until the next.
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1, Answered: true}, p); !g.AnsweredAt.Equal(later) {
		t.Fatalf("AnsweredAt %v after an answer, want %v", g.AnsweredAt, later)
	}
	s.Advance(time.Second)
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 0}, p); !g.AnsweredAt.Equal(later) {
		t.Fatalf("AnsweredAt %v a second later, want still %v", g.AnsweredAt, later)
	}
	// One block is at most a million slots.
	if g := reserve(t, b, store.BudgetRequest{Instance: "1101000003", MaxRPS: 1e6, Want: 2_000_000}, p); g.Slots != 1_000_000 {
		t.Fatalf("a grant of 2,000,000 slots gave %d, want the bound of 1,000,000", g.Slots)
	}
}

// budgetYield: with a Yield, a run gets no slots of an instance that another run has booked
// more than Yield ahead (Busy, Start where the other's bookings end and its own block would
// start), while the run that booked last goes on; once those bookings end within Yield of now,
// the instance is anyone's. A busy answer changes no schedule, yet takes a refund, and records
// who was refused and when, which every later grant of the instance tells (WantedBy, WantedAt).
func budgetYield(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	p.Yield = 250 * time.Millisecond
	day := store.DayStart{Zone: "UTC"}
	now := s.Now()
	s.Advance(time.Date(now.Year(), now.Month(), now.Day(), 12, 0, 0, 0, time.UTC).Add(24 * time.Hour).Sub(now))
	a1 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: 100, Day: day}, p)
	if a1.Slots != 10 || a1.Busy {
		t.Fatalf("the first grant %+v; want 10 slots: nobody kept the instance", a1)
	}
	if a1.WantedBy != "" || !a1.WantedAt.Equal(epoch) {
		t.Fatalf("the first grant %+v says a run wanted the instance; want nobody, at the epoch", a1)
	}
	asked := s.Now()
	b1 := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 10, PerDay: 100, Day: day, Refund: 2, Kept: 3}, p)
	if b1.Slots != 0 || !b1.Busy || !b1.Start.Equal(a1.End().Add(p.Guard)) || b1.Used != 8 {
		t.Fatalf("another run's grant %+v; want none, busy until %v, and its 2 given back: 8 used", b1, a1.End().Add(p.Guard))
	}
	s.Advance(time.Millisecond)
	a2 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 5, PerDay: 100, Day: day}, p)
	if a2.Slots != 5 || a2.Busy || !a2.Start.Equal(a1.End()) || a2.WantedBy != "run-b" || !a2.WantedAt.Equal(asked) || a2.WantedKept != 3 {
		t.Fatalf("the keeping run's next grant %+v; want 5 slots from %v, wanted by run-b, keeping 3, at %v", a2, a1.End(), asked)
	}
	// A read without an owner (before a run) is told the instance is busy, and is no want.
	if read := reserve(t, b, store.BudgetRequest{Day: day}, p); read.Slots != 0 || !read.Busy || read.WantedBy != "run-b" {
		t.Fatalf("a read by nobody %+v; want busy, still wanted by run-b", read)
	}
	// A look (Want 0) is refused the same way, and recorded as a want.
	if look := reserve(t, b, store.BudgetRequest{Owner: "run-c", Day: day}, p); look.Slots != 0 || !look.Busy || look.WantedBy != "run-c" {
		t.Fatalf("a look by a third run %+v; want busy, wanted by run-c", look)
	}
	// Within Yield of the end of run-a's bookings, run-b may take the instance.
	s.Advance(a2.End().Add(p.Guard).Sub(s.Now()) - p.Yield)
	b2 := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 3, PerDay: 100, Day: day}, p)
	if b2.Slots != 3 || b2.Busy || !b2.Start.Equal(a2.End().Add(p.Guard)) {
		t.Fatalf("run-b's grant %v before run-a's bookings end: %+v; want 3 slots from %v", p.Yield, b2, a2.End().Add(p.Guard))
	}
	if a3 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 5, PerDay: 100, Day: day}, p); a3.Slots != 0 || !a3.Busy || !a3.Start.Equal(b2.End().Add(p.Guard)) {
		t.Fatalf("run-a's grant once run-b keeps the instance: %+v; want none, busy until %v", a3, b2.End().Add(p.Guard))
	}
	// run-b hands the instance over to run-a: its block stands, run-a's comes a guard after it,
	// and a third run gives way to run-a meanwhile. A hand-over by a run that no longer keeps the
	// instance changes nothing.
	if ok, err := b.HandOver(ctx, inst, "run-b", "run-a", p); err != nil || !ok {
		t.Fatalf("run-b hands the instance over to run-a: %v, %v; want done", ok, err)
	}
	if ok, err := b.HandOver(ctx, inst, "run-b", "run-c", p); err != nil || ok {
		t.Fatalf("run-b hands the instance over again, to run-c: %v, %v; want nothing done", ok, err)
	}
	if c := reserve(t, b, store.BudgetRequest{Owner: "run-c", Want: 1, Day: day}, p); c.Slots != 0 || !c.Busy {
		t.Fatalf("a third run's grant after the hand-over: %+v; want none, busy", c)
	}
	if a5 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 2, PerDay: 100, Day: day}, p); a5.Slots != 2 || a5.Busy || !a5.Start.Equal(b2.End().Add(p.Guard)) {
		t.Fatalf("run-a's grant once handed the instance: %+v; want 2 slots from a guard after run-b's block, %v", a5, b2.End().Add(p.Guard))
	}
	// Without a Yield nobody gives way.
	if a4 := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 1, PerDay: 100, Day: day}, Policy); a4.Slots != 1 || a4.Busy {
		t.Fatalf("run-a's grant without a Yield: %+v; want 1 slot", a4)
	}
}

// budgetTrim: a run gives back the slots it booked after a time, and the next block, whoever's,
// starts there; never before now, and only while the run's bookings are the last and end where
// it saw them end (not a block granted to it since).
func budgetTrim(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	day := store.DayStart{Zone: "UTC"}
	a := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: 100, Day: day}, Policy)
	if a.Slots != 10 {
		t.Fatalf("the first grant %+v; want 10 slots", a)
	}
	keep := a.Start.Add(3 * a.Interval)
	if ok, err := b.Trim(ctx, inst, "run-b", a.End(), keep); err != nil || ok {
		t.Fatalf("run-b trims run-a's block: %v, %v; want nothing done", ok, err)
	}
	if ok, err := b.Trim(ctx, inst, "run-a", a.End().Add(-a.Interval), keep); err != nil || ok {
		t.Fatalf("run-a trims bookings that do not end where they do: %v, %v; want nothing done", ok, err)
	}
	if ok, err := b.Trim(ctx, inst, "run-a", a.End(), keep); err != nil || !ok {
		t.Fatalf("run-a trims its block to 3 slots: %v, %v; want done", ok, err)
	}
	if ok, err := b.Trim(ctx, inst, "run-a", keep, keep.Add(a.Interval)); err != nil || ok {
		t.Fatalf("run-a trims its block after its end: %v, %v; want nothing done", ok, err)
	}
	g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 2, PerDay: 100, Day: day}, Policy)
	if g.Slots != 2 || !g.Start.Equal(keep.Add(Policy.Guard)) {
		t.Fatalf("run-b's grant after the trim: %+v; want 2 slots from a guard after run-a's third, %v", g, keep.Add(Policy.Guard))
	}
	// A trim to a time already past gives back every slot still to come: the next starts now.
	if ok, err := b.Trim(ctx, inst, "run-b", g.End(), s.Now().Add(-time.Second)); err != nil || !ok {
		t.Fatalf("run-b trims its block to the past: %v, %v; want done", ok, err)
	}
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1, PerDay: 100, Day: day}, Policy); g.Slots != 1 || !g.Start.Equal(g.Now) {
		t.Fatalf("run-b's grant after trimming to the past: %+v; want 1 slot now", g)
	}
}

// budgetRateCut: a 429 cuts the instance's rate by Cut, once per round of requests sent at the
// old rate; the rate climbs back by Step of MaxRPS every StepEvery once Quiet has passed since
// the cut; it never falls below Floor of MaxRPS, nor stays above MaxRPS.
func budgetRateCut(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	g := reserve(t, b, store.BudgetRequest{Want: 10}, p)
	s.Advance(200 * time.Millisecond)
	cut1 := s.Now()
	throttled(t, b, g.Start.Add(100*time.Millisecond), 0, p)
	throttled(t, b, g.Start.Add(150*time.Millisecond), 0, p) // sent before the cut: the same round
	rate := 10.0
	rate *= p.Cut
	headroom := p.Headroom + p.HeadroomStep
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != rate || g.Headroom != headroom || g.Interval != interval(headroom, rate) {
		t.Fatalf("after one round of 429s: %+v; want rate %v, headroom %v, slots every %s", g, rate, headroom, interval(headroom, rate))
	}
	// Sent after the cut: it cuts again.
	s.Advance(100 * time.Millisecond)
	cut2 := s.Now()
	throttled(t, b, cut1.Add(time.Microsecond), 0, p)
	rate *= p.Cut
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != rate {
		t.Fatalf("rate after a second round = %v, want %v", g.Rate, rate)
	}
	// Nothing moves within Quiet of the cut.
	s.Advance(cut2.Add(p.Quiet - time.Microsecond).Sub(s.Now()))
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != rate {
		t.Fatalf("rate a microsecond before the quiet period ends = %v, want still %v", g.Rate, rate)
	}
	// Quiet and 2 steps (less a microsecond): one step; then another microsecond, the second.
	s.Advance(cut2.Add(p.Quiet + 2*p.StepEvery - time.Microsecond).Sub(s.Now()))
	climbed := rate + float64(10*p.Step*1)
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != climbed {
		t.Fatalf("rate after the quiet period and 1.99 steps = %v, want %v", g.Rate, climbed)
	}
	raised := s.Now()
	s.Advance(p.StepEvery - time.Microsecond)
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != climbed {
		t.Fatalf("rate less than a step after the last climb = %v, want still %v: steps count from the last climb", g.Rate, climbed)
	}
	s.Advance(raised.Add(p.StepEvery).Sub(s.Now()))
	climbed += float64(10 * p.Step * 1)
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != climbed {
		t.Fatalf("rate a step after the last climb = %v, want %v", g.Rate, climbed)
	}
	// Long quiet: back to MaxRPS, not past it.
	s.Advance(time.Minute)
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != 10 {
		t.Fatalf("rate a minute later = %v, want MaxRPS 10", g.Rate)
	}
	// A lower MaxRPS applies at once.
	if g := reserve(t, b, store.BudgetRequest{MaxRPS: 4, Want: 1}, p); g.Rate != 4 || g.Interval != interval(g.Headroom, 4) {
		t.Fatalf("with MaxRPS 4: %+v, want rate 4", g)
	}
	// Many cuts stop at the floor.
	for range 40 {
		s.Advance(time.Millisecond)
		throttled(t, b, s.Now(), 0, p)
	}
	if g := reserve(t, b, store.BudgetRequest{Want: 1}, p); g.Rate != 10*p.Floor {
		t.Fatalf("rate after 40 cuts = %v, want the floor %v", g.Rate, 10*p.Floor)
	}
}

// budgetHeadroom: every cut widens the instance's headroom by a step, once per round, to
// HeadroomMax at most; every HeadroomEase without a cut narrows it a step, never below Headroom;
// the slots of the next grant are spaced by it.
func budgetHeadroom(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	want := func(step string, headroom float64) {
		t.Helper()
		g := reserve(t, b, store.BudgetRequest{Want: 1}, p)
		if g.Headroom != headroom || g.Interval != interval(headroom, g.Rate) {
			t.Fatalf("%s: headroom %v, slots every %s; want %v, every %s", step, g.Headroom, g.Interval, headroom, interval(headroom, g.Rate))
		}
	}
	cut := func() time.Time {
		t.Helper()
		s.Advance(time.Millisecond)
		now := s.Now()
		throttled(t, b, now, 0, p)
		return now
	}
	h1 := p.Headroom + p.HeadroomStep
	h2 := p.HeadroomStep + h1
	want("a new instance", p.Headroom)
	first := cut()
	want("after a cut", h1)
	throttled(t, b, first.Add(-time.Microsecond), 0, p)
	want("after a 429 of the same round", h1)
	cut()
	want("after a second cut", h2)
	s.Advance(p.HeadroomEase - time.Microsecond)
	want("a microsecond short of HeadroomEase", h2)
	s.Advance(time.Microsecond)
	eased := h2 - float64(p.HeadroomStep*1)
	want("HeadroomEase after the cut", eased)
	cut()
	widened := p.HeadroomStep + eased
	want("a cut after the ease widens the eased headroom", widened)
	s.Advance(2*p.HeadroomEase - time.Millisecond)
	want("almost two HeadroomEase later: one step", widened-float64(p.HeadroomStep*1))
	s.Advance(time.Hour)
	want("an hour later: the least", p.Headroom)
	for range 20 {
		cut()
	}
	want("after 20 cuts", p.HeadroomMax)
}

// budgetRetryAfter: a Retry-After pauses the instance for every run from the 429's record (to
// the microsecond, truncated), whether or not the 429 cuts the rate; a shorter one later does
// not shorten it; and a 429 of an instance the budget does not know records nothing.
func budgetRetryAfter(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 1}, p)
	s.Advance(10 * time.Millisecond)
	at := s.Now()
	throttled(t, b, at, 2*time.Second+1500*time.Nanosecond, p)
	// Another 429 of the same round, with a shorter Retry-After: the pause stays the longer.
	throttled(t, b, at.Add(-time.Millisecond), 500*time.Millisecond, p)
	pauseEnd := at.Add(2*time.Second + time.Microsecond)
	g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 2}, p)
	if !g.Start.Equal(pauseEnd) {
		t.Fatalf("a grant during the pause starts at %v, want the pause's end %v", g.Start, pauseEnd)
	}
	s.Advance(time.Millisecond)
	throttled(t, b, s.Now(), 500*time.Millisecond, p)
	if g2 := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1}, p); !g2.Start.Equal(g.End()) {
		t.Fatalf("after a shorter Retry-After the grant starts at %v, want right after the last block %v", g2.Start, g.End())
	}
	s.Advance(5 * time.Second)
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 1}, p); !g.Start.Equal(s.Now()) {
		t.Fatalf("after the pause the grant starts at %v, want now %v", g.Start, s.Now())
	}
	if err := b.Throttled(ctx, "1101000009", s.Now(), 10, time.Hour, p); err != nil {
		t.Fatalf("a 429 of an unknown instance: %v", err)
	}
	if g := reserve(t, b, store.BudgetRequest{Instance: "1101000009", Owner: "run-a", Want: 1}, p); g.Rate != 10 || !g.Start.Equal(s.Now().Add(p.Guard)) {
		t.Fatalf("the unknown instance's first grant %+v: want rate 10 from a guard after now, no pause", g)
	}
}

// budgetDailyCap: grants stop at PerDay, across runs; unsent slots given back (Refund) can be
// handed out again, once: a request repeated after its reply was lost gives nothing back
// twice, and each run's refunds are its own; a refund never takes the count below 0; on a new
// day the count starts from 0 and yesterday's refunds are dropped.
func budgetDailyCap(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	day := store.DayStart{Zone: "UTC"}
	// Noon UTC, so the day does not turn under the test.
	now := s.Now()
	s.Advance(time.Date(now.Year(), now.Month(), now.Day(), 12, 0, 0, 0, time.UTC).Add(24 * time.Hour).Sub(now))
	req := store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: 25, Day: day}
	for i, want := range []struct {
		slots int
		used  int64
	}{{10, 10}, {10, 20}, {5, 25}, {0, 25}} {
		if g := reserve(t, b, req, p); g.Slots != want.slots || g.Used != want.used || g.QuotaSpent {
			t.Fatalf("grant %d: %+v, want %d slots, %d used", i, g, want.slots, want.used)
		}
	}
	refund := req
	refund.Refund = 3
	if g := reserve(t, b, refund, p); g.Slots != 3 || g.Used != 25 {
		t.Fatalf("after giving 3 back: %+v, want 3 slots, 25 used", g)
	}
	if g := reserve(t, b, refund, p); g.Slots != 0 || g.Used != 25 {
		t.Fatalf("the same refund asked again: %+v, want nothing more, 25 used", g)
	}
	next := req
	next.Refunded, next.Refund = 3, 2
	if g := reserve(t, b, next, p); g.Slots != 2 || g.Used != 25 {
		t.Fatalf("a new refund of 2: %+v, want 2 slots, 25 used", g)
	}
	if g := reserve(t, b, next, p); g.Slots != 0 || g.Used != 25 {
		t.Fatalf("the new refund asked again: %+v, want nothing more", g)
	}
	other := store.BudgetRequest{Owner: "run-b", Want: 10, PerDay: 25, Day: day, Refund: 1}
	if g := reserve(t, b, other, p); g.Slots != 1 || g.Used != 25 {
		t.Fatalf("another run's refund of 1: %+v, want 1 slot", g)
	}
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-c", PerDay: 25, Day: day}, p); g.Slots != 0 || g.Used != 25 {
		t.Fatalf("a read: %+v, want no slot, 25 used", g)
	}
	// More given back than the day counts: the count stops at 0.
	big := store.BudgetRequest{Owner: "run-c", Want: 30, PerDay: 25, Day: day, Refund: 100}
	if g := reserve(t, b, big, p); g.Slots != 25 || g.Used != 25 {
		t.Fatalf("after giving 100 back: %+v, want 25 slots (the whole day again), 25 used", g)
	}
	// The next day: a fresh count, and a refund of yesterday's slots is not today's.
	s.Advance(24 * time.Hour)
	late := store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: 25, Day: day, Refunded: 5, Refund: 4}
	if g := reserve(t, b, late, p); g.Slots != 10 || g.Used != 10 {
		t.Fatalf("the next day, giving back yesterday's 4: %+v, want 10 slots, 10 used", g)
	}
	// Without a cap every grant is whole, and still counted.
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 40, Day: day}, p); g.Slots != 40 || g.Used != 50 {
		t.Fatalf("without a cap: %+v, want 40 slots, 50 used", g)
	}
}

// budgetRefundTakesTheStoredDay: a refund is taken off the day the budget stores, whatever day
// the slots given back were handed out on: once another run has reserved on a new day, slots of
// yesterday's block given back lower today's count. The budget cannot tell (a request carries no
// day), so the engine gives back only slots of the day their block was granted and drops the
// rest (enrich's TestRefundKeepsToItsDay); the simulation's seed 3218 handed out 14 slots on a day
// capped at 10 before it did.
func budgetRefundTakesTheStoredDay(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	day := store.DayStart{Zone: "UTC"}
	now := s.Now()
	s.Advance(time.Date(now.Year(), now.Month(), now.Day(), 23, 59, 59, 0, time.UTC).Add(24 * time.Hour).Sub(now))
	a := store.BudgetRequest{Owner: "run-a", Want: 10, PerDay: 10, Day: day}
	if g := reserve(t, b, a, p); g.Slots != 10 {
		t.Fatalf("run-a's block a second before midnight: %+v, want 10 slots", g)
	}
	s.Advance(2 * time.Second)
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-b", Want: 10, PerDay: 10, Day: day}, p); g.Slots != 10 || g.Used != 10 {
		t.Fatalf("run-b's block after midnight: %+v, want the new day's 10 slots", g)
	}
	a.Refund = 4
	if g := reserve(t, b, a, p); g.Slots != 4 || g.Used != 10 {
		t.Fatalf("run-a gives back 4 slots after the day turned: %+v, want them taken off today's count: 4 slots, 10 used", g)
	}
}

// budgetDayTurnsDST: the day turns at its offset in its time zone, and only forward: a day that
// starts in the hour the clocks repeat (Europe/Berlin at 02:30 on 2026-10-25, when 03:00 CEST
// turns back to 02:00 CET) is counted once; the local time says the day before for half an
// hour, and then the day again, and neither resets the count. A 466 recorded in that half hour
// is the stored day's.
func budgetDayTurnsDST(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	day := store.DayStart{Zone: "Europe/Berlin", Offset: 2*time.Hour + 30*time.Minute}
	const perDay = 100
	req := store.BudgetRequest{Owner: "run-a", Want: 40, PerDay: perDay, Day: day}
	// 00:20 UTC is 02:20 CEST, the 24th's day still; 02:30 CEST is 00:30 UTC; 02:00 and 02:30
	// CET, the repeated hour, are 01:00 and 01:30 UTC. The next day starts at 02:30 CET on the
	// 26th, 01:30 UTC.
	from := time.Date(2026, 10, 25, 0, 20, 0, 0, time.UTC)
	turn := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)
	next := time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC)
	s.Advance(from.Sub(s.Now()))
	if g := reserve(t, b, req, p); g.Slots != 40 || g.Used != 40 {
		t.Fatalf("at 02:20 CEST on the 25th (the 24th's day): %+v, want 40 slots, 40 used", g)
	}
	s.Advance(turn.Add(-time.Microsecond).Sub(s.Now()))
	if g := reserve(t, b, req, p); g.Slots != 40 || g.Used != 80 {
		t.Fatalf("a microsecond before 02:30 CEST: %+v, want 40 slots, 80 used (still the 24th)", g)
	}
	granted := 0
	for now := turn; now.Before(next); now = now.Add(10 * time.Minute) {
		s.Advance(now.Sub(s.Now()))
		g := reserve(t, b, req, p)
		granted += g.Slots
		if int64(granted) != g.Used {
			t.Fatalf("at %v: %+v, want %d used: the 25th's count", now, g, granted)
		}
	}
	if granted != perDay {
		t.Errorf("%d slots handed out from 02:30 CEST on the 25th to 02:30 CET on the 26th, want the cap of %d", granted, perDay)
	}
	s.Advance(next.Sub(s.Now()))
	if g := reserve(t, b, req, p); g.Slots != 40 || g.Used != 40 {
		t.Errorf("at 02:30 CET on the 26th: %+v, want a new day: 40 slots, 40 used", g)
	}
	// A 466 at 02:10 CET on the 25th (the local time says the 24th) is the 25th's: the day after
	// it, the instance is back.
	const other = "1101000002"
	s.Advance(time.Date(2026, 10, 25, 0, 50, 0, 0, time.UTC).Sub(s.Now()))
	oreq := store.BudgetRequest{Instance: other, Owner: "run-a", Want: 5, Day: day}
	if g := reserve(t, b, oreq, p); g.Slots != 5 {
		t.Fatalf("the other instance at 02:50 CEST: %+v", g)
	}
	s.Advance(time.Date(2026, 10, 25, 1, 10, 0, 0, time.UTC).Sub(s.Now()))
	if err := b.QuotaSpent(ctx, other, day); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{time.Date(2026, 10, 25, 1, 20, 0, 0, time.UTC), time.Date(2026, 10, 25, 1, 40, 0, 0, time.UTC),
		time.Date(2026, 10, 26, 1, 29, 0, 0, time.UTC)} {
		s.Advance(at.Sub(s.Now()))
		if g := reserve(t, b, oreq, p); g.Slots != 0 || !g.QuotaSpent {
			t.Fatalf("at %v, after a 466 at 02:10 CET: %+v, want no slot and QuotaSpent", at, g)
		}
	}
	s.Advance(next.Sub(s.Now()))
	if g := reserve(t, b, oreq, p); g.Slots != 5 || g.QuotaSpent {
		t.Fatalf("at 02:30 CET on the 26th: %+v, want 5 slots, the 466 was yesterday's", g)
	}
}

// budgetQuotaSpent: a 466 recorded today grants nothing more today, cap or none, and a read says
// so; the next day the instance is back; a 466 of an instance the budget does not know records
// nothing.
func budgetQuotaSpent(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	// 02:30 in Moscow, where the day starts at 03:00.
	msk := time.FixedZone("MSK", 3*3600)
	now := s.Now().In(msk)
	s.Advance(time.Date(now.Year(), now.Month(), now.Day(), 2, 30, 0, 0, msk).Add(24 * time.Hour).Sub(s.Now()))
	day := store.DayStart{Zone: "Europe/Moscow", Offset: 3 * time.Hour}
	if err := b.QuotaSpent(ctx, inst, day); err != nil {
		t.Fatalf("a 466 of an unknown instance: %v", err)
	}
	req := store.BudgetRequest{Owner: "run-a", Want: 10, Day: day}
	if g := reserve(t, b, req, p); g.Slots != 10 || g.QuotaSpent {
		t.Fatalf("the first grant: %+v, want 10 slots, no 466 recorded", g)
	}
	if err := b.QuotaSpent(ctx, inst, day); err != nil {
		t.Fatal(err)
	}
	if g := reserve(t, b, req, p); g.Slots != 0 || !g.QuotaSpent || g.Used != 10 {
		t.Fatalf("after a 466: %+v, want no slot, QuotaSpent, 10 used", g)
	}
	capped := req
	capped.PerDay = 100
	if g := reserve(t, b, capped, p); g.Slots != 0 || !g.QuotaSpent {
		t.Fatalf("after a 466, with a cap not reached: %+v, want no slot", g)
	}
	if g := reserve(t, b, store.BudgetRequest{Day: day}, p); !g.QuotaSpent {
		t.Fatalf("a read after a 466: %+v, want QuotaSpent", g)
	}
	// 03:00 in Moscow: a new day.
	s.Advance(30 * time.Minute)
	if g := reserve(t, b, req, p); g.Slots != 10 || g.QuotaSpent || g.Used != 10 {
		t.Fatalf("the day after a 466: %+v, want 10 slots", g)
	}
}

// budgetStateAndCheck: GetStateInstance slots are a second apart (with Headroom, rounded to the
// microsecond) whoever asks; CheckWhatsapp slots 1/rps apart on a schedule of their own
// (store.CheckKey); neither touches the other nor GetAvatar's schedule; past slots are not
// handed out.
func budgetStateAndCheck(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	now := s.Now()
	gap := func(every time.Duration) time.Duration {
		return time.Duration(math.RoundToEven((1+p.Headroom)*float64(every.Microseconds()))) * time.Microsecond
	}
	state := func(want time.Time) {
		t.Helper()
		slot, at, err := b.ReserveState(ctx, inst, 10, p)
		if err != nil || !slot.Equal(want) || !at.Equal(s.Now()) {
			t.Fatalf("state slot %v at %v, %v; want %v at %v", slot, at, err, want, s.Now())
		}
	}
	check := func(instance string, rps float64, want time.Time) {
		t.Helper()
		slot, at, err := b.ReserveCheck(ctx, instance, rps, p)
		if err != nil || !slot.Equal(want) || !at.Equal(s.Now()) {
			t.Fatalf("check slot of %s at %v rps: %v at %v, %v; want %v", instance, rps, slot, at, err, want)
		}
	}
	state(now)
	state(now.Add(gap(time.Second)))
	state(now.Add(2 * gap(time.Second)))
	rps10, rps3 := 10.0, 3.0
	every := time.Duration(float64(time.Second) / rps10)
	check(inst, 10, now)
	check(inst, 10, now.Add(gap(every)))
	// 3 a second: 333,333 µs, widened to 338,332.995 µs, rounded to 338,333.
	every3 := time.Duration(float64(time.Second) / rps3)
	check("1101000002", 3, now)
	check("1101000002", 3, now.Add(gap(every3)))
	check("1101000002", 3, now.Add(2*gap(every3)))
	// GetAvatar's schedule starts where the state check made the row: now, and a guard.
	if g := reserve(t, b, store.BudgetRequest{Owner: "run-a", Want: 1}, p); !g.Start.Equal(now.Add(p.Guard)) {
		t.Fatalf("GetAvatar's first grant starts at %v, want %v", g.Start, now.Add(p.Guard))
	}
	state(now.Add(3 * gap(time.Second)))
	s.Advance(10 * time.Second)
	state(s.Now())
	check(inst, 10, s.Now())
	if _, _, err := b.ReserveCheck(ctx, inst, 0, p); err == nil {
		t.Fatal("ReserveCheck at 0 rps: no error")
	}
	if _, _, err := b.ReserveCheck(ctx, inst, -1, p); err == nil {
		t.Fatal("ReserveCheck at -1 rps: no error")
	}
}

// budgetArguments: bad requests and policies are refused, a time zone the budget does not know
// fails, and a call on a cancelled context fails and changes nothing.
func budgetArguments(t *testing.T, s Subject) {
	b := budgetOf(t, s)
	p := Policy
	now := s.Now()
	good := store.BudgetRequest{Instance: inst, Owner: "run-a", MaxRPS: 10, Want: 1}
	for _, bad := range []func(r *store.BudgetRequest){
		func(r *store.BudgetRequest) { r.Instance = "" },
		func(r *store.BudgetRequest) { r.MaxRPS = 0 },
		func(r *store.BudgetRequest) { r.MaxRPS = math.NaN() },
		func(r *store.BudgetRequest) { r.Want = -1 },
		func(r *store.BudgetRequest) { r.Refund = -1 },
		func(r *store.BudgetRequest) { r.Refunded = -1 },
		func(r *store.BudgetRequest) { r.PerDay = -1 },
	} {
		req := good
		bad(&req)
		if _, err := b.Reserve(ctx, req, p); err == nil {
			t.Errorf("reserve %+v: no error", req)
		}
	}
	badPolicy := p
	badPolicy.HeadroomEase = 0
	if _, err := b.Reserve(ctx, good, badPolicy); err == nil {
		t.Error("reserve with a headroom that never eases: no error")
	}
	if err := b.Throttled(ctx, inst, now, 10, 0, badPolicy); err == nil {
		t.Error("throttled with a headroom that never eases: no error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Reserve(cancelled, good, p); !errors.Is(err, context.Canceled) {
		t.Errorf("reserve on a cancelled context: %v, want context.Canceled", err)
	}
	g := reserve(t, b, good, p)
	if !g.Start.Equal(now.Add(p.Guard)) || g.Used != 1 {
		t.Fatalf("the first grant after refused and cancelled ones: %+v, want the instance's first", g)
	}
	if err := b.Throttled(cancelled, inst, now, 10, time.Hour, p); err == nil {
		t.Error("throttled on a cancelled context: no error")
	}
	if _, _, err := b.ReserveState(cancelled, inst, 10, p); err == nil {
		t.Error("reserve state on a cancelled context: no error")
	}
	if g2 := reserve(t, b, good, p); !g2.Start.Equal(g.End()) || g2.Rate != 10 {
		t.Fatalf("after a cancelled 429: %+v, want the next slot at rate 10, nothing cut or paused", g2)
	}
	zoned := good
	zoned.Day = store.DayStart{Zone: "Mars/Olympus_Mons"}
	if _, err := b.Reserve(ctx, zoned, p); err == nil {
		t.Error("reserve in an unknown time zone: no error")
	}
	if err := b.QuotaSpent(ctx, inst, zoned.Day); err == nil {
		t.Error("a 466 in an unknown time zone: no error")
	}
}
