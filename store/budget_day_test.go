package store_test

import (
	"testing"
	"time"

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
