package enrich_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
)

// slowAPI answers every GetAvatar after latency (fake time, in a synctest bubble): an instance
// that is authorized and answers every row.
type slowAPI struct {
	id      string
	latency time.Duration
}

func (a slowAPI) ID() string { return a.id }

func (a slowAPI) GetAvatar(ctx context.Context, _ greenapi.Target) (greenapi.Avatar, error) {
	select {
	case <-time.After(a.latency):
		return greenapi.Avatar{Available: yes(), URLAvatar: "https://pps.whatsapp.net/v/a.jpg"}, nil
	case <-ctx.Done():
		return greenapi.Avatar{}, ctx.Err()
	}
}

func (a slowAPI) GetStateInstance(context.Context) (string, error) {
	return greenapi.StateAuthorized, nil
}

func (a slowAPI) CheckWhatsapp(context.Context, greenapi.Target) (bool, error) { return true, nil }

// TestPlanETAIsMet: the ETA Estimate gives for the rows due, from the inputs `enrich plan` uses
// (the rows due, each instance's rps and daily cap, the shared budget's rate and headroom, the
// workers), is what the engine then takes to work them off: the real Runner, on the in-memory
// store and shared budget, against instances that answer every row after a latency, in a
// synctest bubble (fake time). The run's elapsed time is within 15% of the ETA, and it answers
// the rows the estimate says it sends (the rest left by the daily caps).
func TestPlanETAIsMet(t *testing.T) {
	t.Parallel()
	type inst struct {
		rps       float64
		maxPerDay int64
		// cuts is how many 429s an earlier run drew just before this one starts: each cuts the
		// shared rate by 15% and widens the headroom by 1.5%.
		cuts int
	}
	for _, tc := range []struct {
		name    string
		rows    int
		insts   []inst
		workers int
		latency time.Duration
	}{
		{name: "one instance", rows: 600, insts: []inst{{rps: 10}}, workers: 16, latency: 200 * time.Millisecond},
		{name: "three instances", rows: 3000, insts: []inst{{rps: 10}, {rps: 10}, {rps: 5}}, workers: 16, latency: 300 * time.Millisecond},
		{name: "daily caps", rows: 2000, insts: []inst{{rps: 10, maxPerDay: 300}, {rps: 10, maxPerDay: 900}}, workers: 16, latency: 200 * time.Millisecond},
		{name: "one capped, one not", rows: 1500, insts: []inst{{rps: 10, maxPerDay: 200}, {rps: 10}}, workers: 16, latency: 200 * time.Millisecond},
		{name: "workers are the bottleneck", rows: 400, insts: []inst{{rps: 10}}, workers: 2, latency: time.Second},
		{name: "a cut rate and a wide headroom", rows: 3000, insts: []inst{{rps: 10, cuts: 5}}, workers: 16, latency: 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				st := memstore.New(nil)
				budget := memstore.NewBudget(nil)
				cs := make([]store.NewContact, tc.rows)
				for i, p := range phones(tc.rows) {
					cs[i] = store.NewContact{PhoneNumber: p}
				}
				st.Enqueue(cs...)

				// The plan: what `enrich plan` reads, then the estimate.
				due, err := st.Due(ctx)
				if err != nil {
					t.Fatal(err)
				}
				in := enrich.PlanInput{Due: due, Workers: tc.workers, Latency: tc.latency}
				cfg := enrich.Config{Owner: "plan", Workers: tc.workers, Budget: budget, ProgressInterval: -1, Rand: enrich.LockedRand(1)}
				for i, ic := range tc.insts {
					id := fmt.Sprintf("11010000%02d", i)
					pi := enrich.PlanInstance{ID: id, RPS: ic.rps, MaxPerDay: ic.maxPerDay}
					if ic.cuts > 0 {
						p := enrich.SharedPolicy()
						if _, err := budget.Reserve(ctx, store.BudgetRequest{Instance: id, Owner: "earlier", MaxRPS: ic.rps, Want: 1}, p); err != nil {
							t.Fatal(err)
						}
						for range ic.cuts {
							if err := budget.Throttled(ctx, id, time.Now(), ic.rps, 0, p); err != nil {
								t.Fatal(err)
							}
						}
						row, _ := budget.Row(id)
						pi.Rate, pi.Headroom = row.Rate, row.Headroom // as store.Instances reads them now
					}
					in.Instances = append(in.Instances, pi)
					cfg.Instances = append(cfg.Instances, enrich.Instance{API: slowAPI{id: id, latency: tc.latency}, RPS: ic.rps, MaxPerDay: ic.maxPerDay})
				}
				est := enrich.Estimate(in)

				r, err := enrich.NewRunner(st, cfg)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				sum, err := r.Run(ctx)
				elapsed := time.Since(start)
				if err != nil {
					t.Fatalf("run: %v (%+v)", err, sum)
				}
				ratio := elapsed.Seconds() / est.ETA.Seconds()
				t.Logf("%+v; %d rows due: ETA %v (%d sent, %d capped, %.2f rows/s); the run took %v (%d done, stop %q): %.3f of the ETA",
					in.Instances, due, est.ETA, est.Sent, est.CappedRows, est.RowsPerSecond, elapsed, sum.Done, sum.Stop, ratio)
				if ratio < 0.85 || ratio > 1.15 {
					t.Errorf("the run took %v, the plan said %v: %.3f of it, want within 15%%", elapsed, est.ETA, ratio)
				}
				if sum.Done != est.Sent {
					t.Errorf("the run answered %d rows, the plan said it sends %d (%d left by the caps)", sum.Done, est.Sent, est.CappedRows)
				}
			})
		})
	}
}
