package enrich

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestTableEnd: what a claim says of the end of the table. A full claim of rows other runs gave
// back is not the end: runs give rows back when they hand an instance over. Before, such a claim
// marked the end, had the run give back its slots beyond 200 ms (Runner.reachEnd), and then
// cleared the mark, in the middle of the rows. A build that kept the mark gave back its rows and
// slots seconds before the end (six processes spent 0.978-0.984 of the budget in three bench
// runs, against 0.980-0.985). A short claim from the start now reaches the end too: it marked it,
// but never gave back the slots.
func TestTableEnd(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	rows := func(n int, due time.Time) []store.Claimed {
		b := make([]store.Claimed, n)
		for i := range b {
			b[i] = store.Claimed{Lease: store.Lease{ID: int64(i + 1)}, Due: due}
		}
		return b
	}
	old, back := t0.Add(-time.Hour), t0.Add(-100*time.Millisecond) // due long ago; given back just now
	for _, tc := range []struct {
		name                   string
		drained                bool
		shortAt                time.Duration // since t0, when the end was last seen
		batch                  []store.Claimed
		fromStart, sharing     bool
		end                    bool
		wantDrained, wantReach bool
	}{
		{name: "full claim, due long ago", batch: rows(10, old), sharing: true},
		{name: "short claim after a cursor", batch: rows(3, old), sharing: true},
		{name: "short claim from the start", batch: rows(3, old), fromStart: true, wantDrained: true},
		{name: "short claim from the start, sharing", batch: rows(3, old), fromStart: true, sharing: true,
			wantDrained: true, wantReach: true},
		{name: "empty claim from the start, sharing", fromStart: true, sharing: true, wantDrained: true, wantReach: true},
		{name: "full claim of rows given back, sharing", batch: rows(10, back), sharing: true},
		{name: "short claim after a cursor of rows given back, sharing", batch: rows(3, back), sharing: true,
			wantDrained: true, wantReach: true},
		{name: "short claim after a cursor of rows given back, alone", batch: rows(3, back)},
		{name: "full claim at the end, within endFor", drained: true, shortAt: -time.Second, batch: rows(10, old),
			sharing: true, end: true, wantDrained: true},
		{name: "full claim at the end, after endFor", drained: true, shortAt: -endFor, batch: rows(10, old),
			sharing: true, end: true},
		{name: "full claim, drained but not sharing", drained: true, shortAt: -time.Second, batch: rows(10, old)},
		{name: "empty claim from the start at the end", drained: true, fromStart: true, sharing: true, end: true,
			wantDrained: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var drained atomic.Bool
			drained.Store(tc.drained)
			e := tableEnd{drained: &drained, shortAt: t0.Add(tc.shortAt)}
			reached := e.claimed(tc.batch, 10, t0, t0, tc.fromStart, tc.sharing, tc.end)
			if drained.Load() != tc.wantDrained || reached != tc.wantReach {
				t.Errorf("drained %v, reached the end %v; want %v, %v", drained.Load(), reached, tc.wantDrained, tc.wantReach)
			}
		})
	}
}
