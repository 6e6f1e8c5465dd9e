package enrich_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// These tests run in real time against the simulator over loopback, at Green API's own limits:
// what they measure (429s, requests per second, leases) only exists on the clock.

// arrival is one request as the server saw it.
type arrival struct {
	at     time.Duration // since the recorder started
	status int
	method string
}

// recorder wraps a handler and records every request's arrival and answer.
type recorder struct {
	h     http.Handler
	start time.Time
	mu    sync.Mutex
	seen  []arrival
}

func newRecorder(h http.Handler) *recorder { return &recorder{h: h, start: time.Now()} }

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Since(rec.start)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rec.h.ServeHTTP(sw, r)
	method := r.URL.Path
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		method = method[:i]
	}
	method = method[strings.LastIndexByte(method, '/')+1:]
	rec.mu.Lock()
	rec.seen = append(rec.seen, arrival{at: at, status: sw.status, method: method})
	rec.mu.Unlock()
}

// window counts getAvatar requests that arrived in [from, to): all of them and the 429s.
func (rec *recorder) window(from, to time.Duration) (requests, tooMany, accepted int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, a := range rec.seen {
		if a.method != "getAvatar" || a.at < from || a.at >= to {
			continue
		}
		requests++
		if a.status == http.StatusTooManyRequests {
			tooMany++
		} else {
			accepted++
		}
	}
	return requests, tooMany, accepted
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// simClient is a real client for one simulated instance at url.
func simClient(t *testing.T, url string, in simulator.Instance) enrich.Instance {
	t.Helper()
	cl, err := greenapi.New(greenapi.Config{APIURL: url, IDInstance: in.ID, Token: in.Token, HTTPClient: greenapi.NewHTTPClient(32)})
	if err != nil {
		t.Fatal(err)
	}
	return enrich.Instance{API: cl, RPS: in.RPS}
}

// TestMinGapPacing: against a server that refuses any request within 1/rps of the last one it
// accepted (the strictest reading of Green API's limit), a run configured at exactly that rps
// gets under 1% of 429s once settled, and still spends at least 0.8 of the budget: a pacer that
// backs off too far on 429s (or not at all) fails it. The share it spends is measured by make
// bench (0.97 on an idle machine); here, under the race detector on 2 cores, late wake-ups alone
// cost up to a tenth. The run paces as in production, from the instance's budget shared through
// the database.
//
// It runs alone, not in parallel with the package's other tests: it measures arrival gaps to the
// millisecond, and beside them the simulator's own goroutines wait for a core long enough that
// the server, not the client, makes the jitter (a request the handler stamps 8 ms late makes the
// next, on time, look early). The headroom the pacer learns covers a path's jitter, not a server
// starved of CPU.
func TestMinGapPacing(t *testing.T) {
	const rps, runFor, settle = 10, 40 * time.Second, 10 * time.Second
	in := simulator.Instance{ID: "1101000001", Token: "tok-gap", RPS: rps, MinGap: true}
	sim, err := simulator.New(simulator.Config{Instances: []simulator.Instance{in}, Seed: 11,
		LatencyMedian: 150 * time.Millisecond, LatencyP99: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(sim)
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	pool := pgtest.NewPool(t)
	insertTargets(t, pool, phones(1000))
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := enrich.NewRunner(st, enrich.Config{Owner: "gap", Instances: []enrich.Instance{simClient(t, srv.URL, in)},
		MaxDuration: runFor, ProgressInterval: -1, Rand: enrich.LockedRand(5), Budget: st})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	end := time.Since(rec.start)
	requests, tooMany, accepted := rec.window(settle, end)
	all, allTooMany, _ := rec.window(0, end)
	rate := float64(accepted) / (end - settle).Seconds()
	t.Logf("after the first %s: %d getAvatar requests, %d answered 429 (%.2f%%), %.2f accepted/s of %d; "+
		"whole run: %d requests, %d 429s; summary %+v", settle, requests, tooMany, 100*float64(tooMany)/float64(requests),
		rate, rps, all, allTooMany, sum)
	if float64(tooMany) >= 0.01*float64(requests) {
		t.Errorf("%d of %d requests after the first %s were answered 429: want under 1%%", tooMany, requests, settle)
	}
	if rate < 0.8*rps {
		t.Errorf("%.2f requests/s accepted after the first %s: want at least %.1f (0.8 of the budget)", rate, settle, 0.8*rps)
	}
	// A 429 is the instance's to pay: the rows it met were called again or given back, and
	// none of them spent an attempt or stayed leased.
	var done, charged int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status = 'done'),
		count(*) FILTER (WHERE status <> 'failed' AND (attempts > 0 OR locked_by IS NOT NULL))
		FROM contacts`).Scan(&done, &charged); err != nil {
		t.Fatal(err)
	}
	if done != int(sum.Done) || charged != 0 {
		t.Errorf("rows: %d done (the summary says %d), %d not failed but charged an attempt or left leased: want 0",
			done, sum.Done, charged)
	}
}

// TestLeaseHoldsWithSlowCalls: with a 15 s lease and calls that take 2 s, two runs side by side
// for 60 s (as two pods would) never call a number twice: rows in hand are renewed, and a run
// claims no more than it can start within half a lease.
func TestLeaseHoldsWithSlowCalls(t *testing.T) {
	t.Parallel()
	const lease, runFor = 15 * time.Second, 60 * time.Second
	simCfg := simulator.Config{Seed: 21, LatencyMedian: 2 * time.Second}
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
	targets := phones(2000)
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
