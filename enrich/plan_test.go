package enrich_test

import (
	"math"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
)

// TestPlanEstimate: Estimate's arithmetic, case by case. At 10 rps and the least headroom (1%) a
// slot is 101 ms, 9.90099 rows a second.
func TestPlanEstimate(t *testing.T) {
	t.Parallel()
	const slot = 0.101 // seconds
	ten := func(id string) enrich.PlanInstance { return enrich.PlanInstance{ID: id, RPS: 10} }
	secs := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	for _, tc := range []struct {
		name string
		in   enrich.PlanInput
		// eta is the ETA wanted, within a millisecond; etaMin and etaMax bound it instead.
		eta, etaMin, etaMax time.Duration
		sent, capped        int64
		rows                []int64 // each instance's
		fits                bool
		within              int64
		noInstance          bool
	}{
		{name: "nothing due", in: enrich.PlanInput{Instances: []enrich.PlanInstance{ten("a")}}, fits: true, rows: []int64{0}},
		{name: "one instance", in: enrich.PlanInput{Due: 1000, Instances: []enrich.PlanInstance{ten("a")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{1000}, fits: true},
		{name: "two instances share", in: enrich.PlanInput{Due: 1000, Instances: []enrich.PlanInstance{ten("a"), ten("b")}},
			eta: secs(500 * slot), sent: 1000, rows: []int64{500, 500}, fits: true},
		{name: "latency adds the last answer", in: enrich.PlanInput{Due: 1000, Latency: 300 * time.Millisecond, Instances: []enrich.PlanInstance{ten("a")}},
			eta: secs(1000*slot + 0.3), sent: 1000, rows: []int64{1000}, fits: true},
		{name: "daily cap leaves rows for another day", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, MaxPerDay: 600, UsedToday: 200}}},
			eta: secs(400 * slot), sent: 400, capped: 600, rows: []int64{400}, fits: true},
		{name: "a capped instance's rows go to the other", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, MaxPerDay: 100}, ten("b")}},
			eta: secs(900 * slot), sent: 1000, rows: []int64{100, 900}, fits: true},
		{name: "quota spent takes nothing", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, QuotaSpent: true}, ten("b")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{0, 1000}, fits: true},
		{name: "an instance out takes nothing", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, Out: true}, ten("b")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{0, 1000}, fits: true},
		{name: "a rate of 0 takes nothing", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 0}, ten("b")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{0, 1000}, fits: true},
		{name: "every quota spent", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, QuotaSpent: true}}}, capped: 1000, rows: []int64{0}, fits: true},
		{name: "every instance out", in: enrich.PlanInput{Due: 1000,
			Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, Out: true}}}, rows: []int64{0}, noInstance: true},
		{name: "workers are the bottleneck", in: enrich.PlanInput{Due: 1000, Workers: 2, Latency: time.Second,
			Instances: []enrich.PlanInstance{ten("a")}}, eta: secs(500 + 1), sent: 1000, rows: []int64{1000}, fits: true},
		{name: "workers are not the bottleneck", in: enrich.PlanInput{Due: 1000, Workers: 16, Latency: time.Second,
			Instances: []enrich.PlanInstance{ten("a")}}, eta: secs(1000*slot + 1), sent: 1000, rows: []int64{1000}, fits: true},
		{name: "beyond max_duration", in: enrich.PlanInput{Due: 1000, MaxDuration: time.Minute, Instances: []enrich.PlanInstance{ten("a")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{1000}, within: 594},
		{name: "within max_duration", in: enrich.PlanInput{Due: 1000, MaxDuration: 2 * time.Minute, Instances: []enrich.PlanInstance{ten("a")}},
			eta: secs(1000 * slot), sent: 1000, rows: []int64{1000}, fits: true},
		{
			// Cut to 5 rps: it climbs back by 0.5 rps every 500 ms, 10 steps, about 1.4 s of
			// slots lost.
			name: "a cut rate climbs back", in: enrich.PlanInput{Due: 1000, Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, Rate: 5}}},
			etaMin: secs(1000*slot + 1), etaMax: secs(1000*slot + 3), sent: 1000, rows: []int64{1000}, fits: true,
		},
		{
			// A headroom of 10% eases a step a minute: 6 minutes to the least, about 25 s of
			// slots lost over a run of 6,000 rows.
			name: "a wide headroom eases", in: enrich.PlanInput{Due: 6000, Instances: []enrich.PlanInstance{{ID: "a", RPS: 10, Headroom: 0.1}}},
			etaMin: secs(6000*slot + 15), etaMax: secs(6000*slot + 30), sent: 6000, rows: []int64{6000}, fits: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := enrich.Estimate(tc.in)
			if tc.etaMax > 0 {
				if got.ETA < tc.etaMin || got.ETA > tc.etaMax {
					t.Errorf("ETA %v, want within [%v, %v]", got.ETA, tc.etaMin, tc.etaMax)
				}
			} else if d := got.ETA - tc.eta; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("ETA %v, want %v", got.ETA, tc.eta)
			}
			if got.Sent != tc.sent || got.CappedRows != tc.capped || got.Fits != tc.fits || got.NoInstance != tc.noInstance ||
				got.WithinMaxDuration != tc.within {
				t.Errorf("sent %d capped %d fits %v within %d no instance %v; want %d, %d, %v, %d, %v",
					got.Sent, got.CappedRows, got.Fits, got.WithinMaxDuration, got.NoInstance, tc.sent, tc.capped, tc.fits, tc.within, tc.noInstance)
			}
			var rows []int64
			for _, ie := range got.Instances {
				rows = append(rows, ie.Rows)
			}
			if len(rows) != len(tc.rows) {
				t.Fatalf("rows %v, want %v", rows, tc.rows)
			}
			for i := range rows {
				if rows[i] != tc.rows[i] {
					t.Errorf("rows %v, want %v", rows, tc.rows)
					break
				}
			}
		})
	}
	// The summed rate is each usable instance's steady rate.
	got := enrich.Estimate(enrich.PlanInput{Due: 1, Instances: []enrich.PlanInstance{{ID: "a", RPS: 10}, {ID: "b", RPS: 5}, {ID: "c", RPS: 10, Out: true}}})
	if want := 1/0.101 + 1/0.202; math.Abs(got.RowsPerSecond-want) > 1e-9 {
		t.Errorf("rows per second %v, want %v", got.RowsPerSecond, want)
	}
}
