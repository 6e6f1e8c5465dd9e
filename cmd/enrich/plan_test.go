package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// planAPI is a Green API that records every request: GetStateInstance answers each instance's
// scripted state; anything else fails the test, as does any request at all when strict.
type planAPI struct {
	t      *testing.T
	strict bool
	states map[string]string // idInstance → stateInstance

	mu   sync.Mutex
	seen []string // method of each request, with the instance
}

func (a *planAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /waInstance{id}/{method}/{token}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	method, id := "?", "?"
	if len(parts) >= 2 {
		id, method = strings.TrimPrefix(parts[0], "waInstance"), parts[1]
	}
	a.mu.Lock()
	a.seen = append(a.seen, id+" "+method)
	strict := a.strict
	a.mu.Unlock()
	if strict {
		a.t.Errorf("plan sent Green API a request without --check-instances: %s %s", r.Method, id+" "+method)
	}
	if method != "getStateInstance" {
		a.t.Errorf("plan sent %s to instance %s: only GetStateInstance is allowed", method, id)
		http.Error(w, "no", http.StatusNotFound)
		return
	}
	fmt.Fprintf(w, `{"stateInstance":%q}`, a.states[id])
}

func (a *planAPI) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// TestPlan: `enrich plan --json` on a seeded table: the rows due now (pending ones and done rows
// whose links expire within refresh_before_expiry), those coming due within 24 h (a retry in
// 10 h, links expiring in 40 h; not a retry in 30 h), each configured instance's budget (rps, the
// shared rate and headroom, slots used today of max_per_day), the ETA as enrich.Estimate gives it
// for the same inputs, the rows the caps leave, and max_duration. Without --check-instances not
// one request reaches Green API (a server that fails the test on any); with it, each instance's
// GetStateInstance is asked once, and the one not authorized adds nothing to the ETA and is
// named. No token is ever printed.
func TestPlan(t *testing.T) {
	t.Parallel()
	const (
		a, b     = "1101000001", "1101000002"
		tokA     = "planTokenA0001"
		tokB     = "planTokenB0002"
		usedA    = 100
		maxA     = 130
		maxB     = 10
		dueNow   = 40
		expiring = 5 // done, link expires in 6 h: due now with refresh_before_expiry 24h
	)
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	seed := func(n int, from int, set string) {
		t.Helper()
		if _, err := pool.Exec(ctx, fmt.Sprintf(`INSERT INTO contacts (phone_number) SELECT (79000000000 + g)::text FROM generate_series(%d, %d) g`,
			from, from+n-1)); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, fmt.Sprintf(`UPDATE contacts SET %s WHERE phone_number::bigint BETWEEN %d AND %d`, set,
			79000000000+from, 79000000000+from+n-1)); err != nil {
			t.Fatal(err)
		}
	}
	seed(dueNow, 1, `next_attempt_at = now() - interval '1 minute'`)
	seed(7, 1001, `next_attempt_at = now() + interval '10 hours', attempts = 1`)
	seed(3, 2001, `next_attempt_at = now() + interval '30 hours', attempts = 1`)
	seed(expiring, 3001, `status = 'done', exists_whatsapp = true, checked_at = now(), url_expires_at = now() + interval '6 hours'`)
	seed(2, 4001, `status = 'done', exists_whatsapp = true, checked_at = now(), url_expires_at = now() + interval '40 hours'`)

	// Instance a spent 100 of its 130 today; b has never been used.
	dayStarts := farFromDayTurn()
	h, _ := strconv.Atoi(dayStarts[:2])
	m, _ := strconv.Atoi(dayStarts[3:])
	day := store.DayStart{Zone: "UTC", Offset: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute}
	if _, err := st.Reserve(ctx, store.BudgetRequest{Instance: a, Owner: "earlier", MaxRPS: 10, Want: usedA, PerDay: maxA, Day: day, Answered: true},
		enrich.SharedPolicy()); err != nil {
		t.Fatal(err)
	}

	api := &planAPI{t: t, strict: true, states: map[string]string{a: "authorized", b: "notAuthorized"}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	conf := fmt.Sprintf(`[greenapi]
api_url = %q
day_starts_at = %q
time_zone = "UTC"

[[greenapi.instance]]
id = %q
token = %q
rps = 10
max_per_day = %d

[[greenapi.instance]]
id = %q
token = %q
rps = 5
max_per_day = %d

[run]
max_duration = "2s"
`, srv.URL, dayStarts, a, tokA, maxA, b, tokB, maxB)
	cfgPath := writeFile(t, t.TempDir(), "enrich.toml", conf)
	env := map[string]string{"DATABASE_URL": dbURL}

	plan := func(t *testing.T, args ...string) (planJSON, string) {
		t.Helper()
		out, stderr, err := runCLI(t, env, append([]string{"plan", "--config", cfgPath}, args...)...)
		if err != nil {
			t.Fatalf("plan %v: %v\n%s", args, err, stderr)
		}
		for _, tok := range []string{tokA, tokB} {
			if strings.Contains(out, tok) || strings.Contains(stderr, tok) {
				t.Errorf("plan %v printed a token:\n%s\n%s", args, out, stderr)
			}
		}
		var j planJSON
		if len(args) > 0 && args[0] == "--json" {
			dec := json.NewDecoder(strings.NewReader(out))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&j); err != nil {
				t.Fatalf("plan --json: %v\n%s", err, out)
			}
		}
		return j, out
	}
	// The estimate for the same inputs: a at its shared rate (10) and headroom (the least), 30
	// slots left; b at 5 rps, 10 left.
	want := enrich.Estimate(enrich.PlanInput{Due: dueNow + expiring, Workers: enrich.WorkersDefault, MaxDuration: 2 * time.Second,
		Instances: []enrich.PlanInstance{{ID: a, RPS: 10, Rate: 10, Headroom: enrich.SharedPolicy().Headroom, MaxPerDay: maxA, UsedToday: usedA},
			{ID: b, RPS: 5, MaxPerDay: maxB}}})

	// The subtests run one after the other: they share the API's record of requests.
	t.Run("json", func(t *testing.T) {
		j, _ := plan(t, "--json")
		if got := api.requests(); len(got) != 0 {
			t.Fatalf("requests without --check-instances: %v", got)
		}
		if j.DueNow != dueNow+expiring || j.DueNowPending != dueNow || j.DueNowRefresh != expiring || j.DueNowEstimated || !j.Exact {
			t.Errorf("due now %d (pending %d, refresh %d, estimated %v, exact %v); want %d (%d + %d), exact",
				j.DueNow, j.DueNowPending, j.DueNowRefresh, j.DueNowEstimated, j.Exact, dueNow+expiring, dueNow, expiring)
		}
		if j.Due24h != 7+2 || j.Due24hRetries != 7 || j.Due24hRefreshes != 2 || j.Due24hCapped {
			t.Errorf("due in 24 h %d (retries %d, refreshes %d, capped %v); want 9 (7 + 2)", j.Due24h, j.Due24hRetries, j.Due24hRefreshes, j.Due24hCapped)
		}
		if len(j.Instances) != 2 {
			t.Fatalf("instances %+v, want a and b", j.Instances)
		}
		ia, ib := j.Instances[0], j.Instances[1]
		if ia.ID != a || ia.RPS != 10 || ia.Rate == nil || *ia.Rate != 10 || ia.Headroom == nil || ia.UsedToday != usedA ||
			ia.MaxPerDay != maxA || ia.LeftToday == nil || *ia.LeftToday != maxA-usedA || ia.Rows != maxA-usedA || ia.State != nil || ia.Out {
			t.Errorf("instance a: %+v", ia)
		}
		if ib.ID != b || ib.RPS != 5 || ib.Rate != nil || ib.Budget != instUnused || ib.LeftToday == nil || *ib.LeftToday != maxB || ib.Rows != maxB {
			t.Errorf("instance b: %+v", ib)
		}
		if math.Abs(j.ETASeconds-want.ETA.Seconds()) > 1e-6 || math.Abs(j.ETASeconds-30*0.101) > 0.001 {
			t.Errorf("eta %v s; want %v (30 slots of 101 ms on a)", j.ETASeconds, want.ETA.Seconds())
		}
		if j.SentRows != 40 || j.CappedRows != 5 || j.FitsMaxDuration || j.RowsWithinMaxDuration == nil ||
			*j.RowsWithinMaxDuration != want.WithinMaxDuration || j.MaxDurationSeconds != 2 || j.NoInstance {
			t.Errorf("sent %d, capped %d, fits %v, within %v, max %v; want 40, 5, false, %d, 2",
				j.SentRows, j.CappedRows, j.FitsMaxDuration, j.RowsWithinMaxDuration, j.MaxDurationSeconds, want.WithinMaxDuration)
		}
		if math.Abs(j.RowsPerSecond-(1/0.101+1/0.202)) > 1e-9 {
			t.Errorf("rows per second %v", j.RowsPerSecond)
		}
	})

	t.Run("table", func(t *testing.T) {
		_, out := plan(t)
		if got := api.requests(); len(got) != 0 {
			t.Fatalf("requests without --check-instances: %v", got)
		}
		for _, w := range []string{"due now      45 (pending 40, done rows due again 5)", "due 24h      9 (retries 7, refreshes 2)",
			"eta          3s (3 s) to send 40 rows", "capped       5 rows", "max duration 2s: does not fit", a + "  unchecked"} {
			if !strings.Contains(out, w) {
				t.Errorf("the table lacks %q:\n%s", w, out)
			}
		}
	})

	t.Run("check-instances", func(t *testing.T) {
		api.mu.Lock()
		api.strict = false
		api.mu.Unlock()
		j, _ := plan(t, "--json", "--check-instances")
		got := api.requests()
		if len(got) != 2 || got[0] != a+" getStateInstance" || got[1] != b+" getStateInstance" {
			t.Fatalf("requests %v, want one GetStateInstance per instance; plan: %+v", got, j)
		}
		ia, ib := j.Instances[0], j.Instances[1]
		if ia.State == nil || *ia.State != "authorized" || ia.Out || ib.State == nil || *ib.State != "notAuthorized" || !ib.Out || ib.Rows != 0 {
			t.Errorf("states: a %+v, b %+v; want a authorized, b notAuthorized and out", ia, ib)
		}
		// b adds nothing: a's 30 slots, the rest left for another day.
		if j.SentRows != 30 || j.CappedRows != 15 || math.Abs(j.RowsPerSecond-1/0.101) > 1e-9 || math.Abs(j.ETASeconds-30*0.101) > 0.001 {
			t.Errorf("sent %d, capped %d, %v rows/s, eta %v; want 30, 15, a's rate alone", j.SentRows, j.CappedRows, j.RowsPerSecond, j.ETASeconds)
		}
		_, out := plan(t, "--check-instances")
		if !strings.Contains(out, b+" adds nothing to the ETA: its state is notAuthorized") {
			t.Errorf("the table does not name the instance not authorized:\n%s", out)
		}
	})
}

// TestPlanUsage: plan is in enrich --help, its --help lists its flags, and a bad flag, a stray
// argument, an rps of 0 or --check-instances without a token stop it with exit 1 before it
// connects (the database URL points at a closed port).
func TestPlanUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	noToken := writeFile(t, dir, "notoken.toml", "[[greenapi.instance]]\nid = \"1101000001\"\n")
	zeroRPS := writeFile(t, dir, "zerorps.toml", "[[greenapi.instance]]\nid = \"1101000001\"\nrps = 0.0\n")
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		out     string // in stdout
		errText string // in stderr or the error
	}{
		{name: "enrich --help", args: []string{"--help"}, code: exitOK, out: "\n  plan       rows due now and in the next 24 h"},
		{name: "plan --help", args: []string{"plan", "--help"}, code: exitOK, errText: "Usage: enrich plan"},
		{name: "plan --help flags", args: []string{"plan", "-h"}, code: exitOK, errText: "\n  -check-instances\n"},
		{name: "stray argument", args: []string{"plan", "now"}, code: exitConfig, errText: `unexpected argument "now"`},
		{name: "negative latency", args: []string{"plan", "--latency", "-1s"}, code: exitConfig, errText: "--latency -1s"},
		{name: "zero exact-below", args: []string{"plan", "--exact-below", "0"}, code: exitConfig, errText: "--exact-below 0"},
		{name: "rps 0", args: []string{"plan", "--config", zeroRPS}, code: exitConfig, errText: "rps is 0"},
		{name: "check without a token", args: []string{"plan", "--check-instances", "--config", noToken}, code: exitConfig, errText: "has no token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, tc.args...)
			if code := exitCode(err, nil); code != tc.code {
				t.Errorf("exit code %d, want %d: %v\n%s", code, tc.code, err, stderr)
			}
			if !strings.Contains(out, tc.out) {
				t.Errorf("stdout lacks %q:\n%s", tc.out, out)
			}
			msg := stderr
			if err != nil {
				msg += err.Error()
			}
			if !strings.Contains(msg, tc.errText) {
				t.Errorf("stderr and error lack %q:\n%s", tc.errText, msg)
			}
		})
	}
}
