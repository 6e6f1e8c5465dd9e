package store_test

import (
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestInstances: status reads each instance's shared budget as the runs left it: rate, headroom,
// slots used on the instances' day, the quota spent that day, the last answer and a pause under
// way; the day turning clears the day's figures, and other methods' schedules are left out.
func TestInstances(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := b.clock.Now()
	// A day that turns 12 hours from now, so the test's minutes never cross it.
	day := store.DayStart{Zone: "UTC", Offset: time.Duration((start.Hour()+12)%24) * time.Hour}
	today := func(now time.Time) time.Time {
		d := now.Add(-day.Offset).UTC()
		return time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)
	}

	req := store.InstancesRequest{Day: day, Policy: policy, MaxRPS: map[string]float64{"1101000001": 10, "1101000002": 10}}
	empty, err := b.store.Instances(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(empty.List) != 0 || !empty.TakenAt.Equal(start) || !empty.Today.Equal(today(start)) {
		t.Fatalf("no instance yet: got %+v, want none at %v, day %v", empty, start, today(start))
	}

	const a, bb = "1101000001", "1101000002"
	b.reserve(t, store.BudgetRequest{Instance: a, Want: 10, PerDay: 100, Day: day, Answered: true})
	b.reserve(t, store.BudgetRequest{Instance: bb, Want: 5, Day: day})
	if err := b.store.Throttled(b.ctx, bb, start, 10, 30*time.Second, policy); err != nil {
		t.Fatal(err)
	}
	if err := b.store.QuotaSpent(b.ctx, bb, day); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.store.ReserveCheck(b.ctx, a, 10, policy); err != nil {
		t.Fatal(err)
	}

	got, err := b.store.Instances(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.List) != 2 || got.List[0].ID != a || got.List[1].ID != bb {
		t.Fatalf("instances %+v: want %s and %s, not the CheckWhatsapp schedule's row", got.List, a, bb)
	}
	ia, ib := got.List[0], got.List[1]
	pause := start.Add(30 * time.Second)
	switch {
	case ia.Rate != 10 || ia.Headroom != policy.Headroom || ia.UsedToday != 10 || ia.QuotaSpent:
		t.Errorf("%s: %+v; want rate 10, headroom %v, 10 used today, quota not spent", a, ia, policy.Headroom)
	case ia.AnsweredAt == nil || !ia.AnsweredAt.Equal(start) || ia.PausedUntil != nil || ia.CutAt != nil || !ia.UpdatedAt.Equal(start):
		t.Errorf("%s: %+v; want answered at %v, no pause, no cut, updated at %v", a, ia, start, start)
	case ib.Rate != 10*policy.Cut || ib.Headroom != policy.Headroom+policy.HeadroomStep || ib.UsedToday != 5 || !ib.QuotaSpent:
		t.Errorf("%s: %+v; want rate %v after a 429, headroom %v, 5 used today, quota spent", bb, ib, 10*policy.Cut, policy.Headroom+policy.HeadroomStep)
	case ib.AnsweredAt != nil || ib.PausedUntil == nil || !ib.PausedUntil.Equal(pause) || ib.CutAt == nil || !ib.CutAt.Equal(start):
		t.Errorf("%s: %+v; want never answered, paused until %v, cut at %v", bb, ib, pause, start)
	}

	// The pause ends.
	later := b.clock.Advance(time.Minute)
	got, err = b.store.Instances(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ib := got.List[1]; ib.PausedUntil != nil || !ib.QuotaSpent || ib.UsedToday != 5 || !got.TakenAt.Equal(later) {
		t.Errorf("a minute later: %+v at %v; want no pause, the day's figures kept", ib, got.TakenAt)
	}
	// As a run reserving now would find them: the rate back to rps after the quiet period (3 s,
	// then 5% a second), the headroom eased a step (one a minute); an instance whose rps is not
	// given keeps the rate the last run left.
	if ib := got.List[1]; ib.Rate != 10 || ib.Headroom != policy.Headroom {
		t.Errorf("a minute after the 429: rate %v, headroom %v; want 10 and %v", ib.Rate, ib.Headroom, policy.Headroom)
	}
	noRPS := req
	noRPS.MaxRPS = nil
	if got, err := b.store.Instances(b.ctx, noRPS); err != nil || got.List[1].Rate != 10*policy.Cut {
		t.Errorf("without its rps: %+v, %v; want the rate left at %v", got.List, err, 10*policy.Cut)
	}

	// The day turns: nothing used, the quota back.
	next := b.clock.Advance(24 * time.Hour)
	got, err = b.store.Instances(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Today.Equal(today(next)) || !got.Today.After(today(start)) {
		t.Errorf("the next day: today %v, want %v", got.Today, today(next))
	}
	for _, in := range got.List {
		if in.UsedToday != 0 || in.QuotaSpent {
			t.Errorf("the next day: %+v; want nothing used and the quota back", in)
		}
	}
	if got.List[0].AnsweredAt == nil || !got.List[0].AnsweredAt.Equal(start) {
		t.Errorf("the next day: %s's last answer %v, want %v kept", a, got.List[0].AnsweredAt, start)
	}
}
