package enrich_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
)

// sentAt records when each GetAvatar left, whichever instance and run sent it.
type sentAt struct {
	mu    sync.Mutex
	times []time.Time
}

// timedAPI is slowAPI that records its sends.
type timedAPI struct {
	slowAPI
	sent *sentAt
}

func (a timedAPI) GetAvatar(ctx context.Context, t greenapi.Target) (greenapi.Avatar, error) {
	a.sent.mu.Lock()
	a.sent.times = append(a.sent.times, time.Now())
	a.sent.mu.Unlock()
	return a.slowAPI.GetAvatar(ctx, t)
}

// shareOfBudget runs procs runs at once, each with the same n instances at 10 rps on one shared
// budget, on rows rows until nothing is due, in a synctest bubble, and returns the calls sent a
// second from the first to the last ÷ the budget: ramp-up and tail included, an instance left
// idle while another still calls costing its share.
func shareOfBudget(t *testing.T, procs, n, rows int) float64 {
	t.Helper()
	var share float64
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(nil)
		budget := memstore.NewBudget(nil)
		cs := make([]store.NewContact, rows)
		for i, p := range phones(rows) {
			cs[i] = store.NewContact{PhoneNumber: p}
		}
		st.Enqueue(cs...)
		sent := &sentAt{}
		var runs sync.WaitGroup
		for p := range procs {
			cfg := enrich.Config{Owner: fmt.Sprintf("pod-%d", p), Budget: budget, ProgressInterval: -1,
				Rand: enrich.LockedRand(uint64(p + 1))}
			for i := range n {
				api := timedAPI{slowAPI{id: fmt.Sprintf("1101%06d", i), latency: 300 * time.Millisecond}, sent}
				cfg.Instances = append(cfg.Instances, enrich.Instance{API: api, RPS: 10})
			}
			r, err := enrich.NewRunner(st, cfg)
			if err != nil {
				t.Fatal(err)
			}
			runs.Go(func() {
				if sum, err := r.Run(context.Background()); err != nil {
					t.Errorf("run %d: %v (%+v)", p, err, sum)
				}
			})
		}
		runs.Wait()
		if got := len(sent.times); got != rows {
			t.Fatalf("%d calls for %d rows", got, rows)
		}
		first, last := slices.MinFunc(sent.times, time.Time.Compare), slices.MaxFunc(sent.times, time.Time.Compare)
		share = float64(rows-1) / last.Sub(first).Seconds() / (10 * float64(n))
	})
	return share
}

// TestPodsSpendTheBudget: six runs sharing 20 instances through the budget (six pods of one
// Deployment) spend it nearly as one run does, to the end of the rows. Each holds rows only it
// can call; once nothing more is due, each sizes its blocks by the rows it still holds, spread
// over every instance, so that no instance sits idle while a run still calls on a few. Before,
// a row counted as covered by any slot the run held, however far behind the other runs' blocks,
// and the run's other instances reserved nothing: 0.914 of one run's share here (and in the
// bench, on 50 instances, the last 5 s at a fifth of the budget).
func TestPodsSpendTheBudget(t *testing.T) {
	t.Parallel()
	const n, rows = 20, 4800
	one := shareOfBudget(t, 1, n, rows)
	six := shareOfBudget(t, 6, n, rows)
	t.Logf("%d rows on %d instances at 10 rps: one run spent %.4f of the budget, six runs %.4f (%.4f of one)", rows, n, one, six, six/one)
	if six/one < 0.96 {
		t.Errorf("six runs spent %.4f of the budget, one run %.4f: %.4f of it, want at least 0.96", six, one, six/one)
	}
}
