package enrich_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// The pacing itself (429s against a minimum-gap server, the share of the budget spent) is
// measured by make bench (scenarios budget, shared, mingap, pods), not here: it only exists on
// the clock. What is tested here is what must hold whatever the clock does.

// simClient is a real client for one simulated instance at url.
func simClient(t *testing.T, url string, in simulator.Instance) enrich.Instance {
	t.Helper()
	cl, err := greenapi.New(greenapi.Config{APIURL: url, IDInstance: in.ID, Token: in.Token, HTTPClient: greenapi.NewHTTPClient(32)})
	if err != nil {
		t.Fatal(err)
	}
	return enrich.Instance{API: cl, RPS: in.RPS}
}

// TestLeaseHoldsWithSlowCalls: with a 1.5 s lease and calls that take 200 ms (the proportions of
// a 15 s lease and 2 s calls, ten times faster), two runs side by side for 6 s (as two pods
// would) never call a number twice: rows in hand are renewed, and a run claims no more than it
// can start within half a lease. It asserts on nothing but the rows and calls.
func TestLeaseHoldsWithSlowCalls(t *testing.T) {
	t.Parallel()
	const lease, runFor = 1500 * time.Millisecond, 6 * time.Second
	simCfg := simulator.Config{Seed: 21, LatencyMedian: 200 * time.Millisecond}
	for i := range 2 {
		simCfg.Instances = append(simCfg.Instances, simulator.Instance{ID: fmt.Sprintf("110100010%d", i), Token: fmt.Sprintf("tok-lease-%d", i), RPS: 10})
	}
	sim, err := simulator.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	pool := pgtest.NewPool(t)
	targets := phones(400)
	insertTargets(t, pool, targets)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sums := make([]enrich.Summary, len(simCfg.Instances))
	for i, in := range simCfg.Instances {
		r, err := enrich.NewRunner(st, enrich.Config{Owner: fmt.Sprintf("pod-%d", i), Instances: []enrich.Instance{simClient(t, srv.URL, in)},
			Lease: lease, MaxDuration: runFor, ProgressInterval: -1, Rand: enrich.LockedRand(uint64(i)), Budget: st})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			var err error
			if sums[i], err = r.Run(context.Background()); err != nil {
				t.Errorf("run %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	twice := 0
	for _, p := range targets {
		if n := sim.Calls(p); n > 1 {
			twice++
			if twice <= 5 {
				t.Errorf("%s was called %d times", p, n)
			}
		}
	}
	for i, s := range sums {
		if s.Lost != 0 {
			t.Errorf("run %d lost %d results to another claim", i, s.Lost)
		}
		t.Logf("run %d: %+v", i, s)
	}
	var locked int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM contacts WHERE locked_by IS NOT NULL`).Scan(&locked); err != nil {
		t.Fatal(err)
	}
	if twice > 0 || locked > 0 {
		t.Fatalf("%d numbers called twice, %d rows left locked", twice, locked)
	}
}
