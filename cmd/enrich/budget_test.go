package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// These tests run several enrich processes on the same Green API instances, as pods of one
// Deployment or a CronJob beside a backfill do: the instances' budget (rate, daily cap, a spent
// quota) lives in PostgreSQL and binds them together. Each asserts the "Done when" line.

// budgetAPI serves one simulator to several processes, each on a listener of its own (the same
// instances, ids and tokens behind every address), so that a test can tell whose requests were
// answered. It records every request that reached an instance: when it arrived and when its
// answer left, through which listener, and the answer's status.
type budgetAPI struct {
	sim   *simulator.Simulator
	start time.Time

	mu   sync.Mutex
	reqs []apiRequest
}

// apiRequest is one request to an instance, its times measured from the API's start.
type apiRequest struct {
	arrived, left time.Duration
	listener      int
	instance      string
	// method is the path's method segment, lowercased: "getavatar", "getstateinstance".
	method string
	status int
}

// answered says whether r is a getAvatar call that was answered: a 200, or a 400 "bad request
// data" (no fault is injected in these tests).
func (r apiRequest) answered() bool {
	return r.method == "getavatar" && (r.status == http.StatusOK || r.status == http.StatusBadRequest)
}

func newBudgetAPI(t *testing.T, cfg simulator.Config) *budgetAPI {
	t.Helper()
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &budgetAPI{sim: sim, start: time.Now()}
}

// listen serves the simulator on a new loopback listener and returns its URL; its answers are
// counted as listener n, n being how many listeners were made before it.
func (a *budgetAPI) listen(t *testing.T, n int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /waInstance{id}/{method}/{token}
		parts := strings.Split(r.URL.Path, "/")
		req := apiRequest{arrived: time.Since(a.start), listener: n}
		if len(parts) == 4 {
			req.instance, req.method = strings.TrimPrefix(parts[1], "waInstance"), strings.ToLower(parts[2])
		}
		sw := &statusWriter{ResponseWriter: w}
		a.sim.ServeHTTP(sw, r)
		req.left, req.status = time.Since(a.start), sw.status
		a.mu.Lock()
		a.reqs = append(a.reqs, req)
		a.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// statusWriter remembers the status of the answer written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// since is t as a duration since the API's start.
func (a *budgetAPI) since(t time.Time) time.Duration { return t.Sub(a.start) }

// requests is a copy of every request answered so far, in the order their answers left.
func (a *budgetAPI) requests() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiRequest(nil), a.reqs...)
}

// count is how many getAvatar answers left in [from, to) for which keep is true (nil: all).
func (a *budgetAPI) count(from, to time.Duration, keep func(apiRequest) bool) int {
	n := 0
	for _, r := range a.requests() {
		if r.answered() && r.left >= from && r.left < to && (keep == nil || keep(r)) {
			n++
		}
	}
	return n
}

// rate is the getAvatar answers per second in [from, to).
func (a *budgetAPI) rate(from, to time.Duration, keep func(apiRequest) bool) float64 {
	if to <= from {
		return 0
	}
	return float64(a.count(from, to, keep)) / (to - from).Seconds()
}

// arrivals are the requests to instance id for which keep is true, in the order they arrived.
func (a *budgetAPI) arrivals(id string, keep func(apiRequest) bool) []apiRequest {
	var out []apiRequest
	for _, r := range a.requests() {
		if r.instance == id && (keep == nil || keep(r)) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y apiRequest) int { return cmp.Compare(x.arrived, y.arrived) })
	return out
}

// busiestSecond is the most of reqs (sorted by arrival) that arrived within any sliding one-second
// window (t-1s, t], as the simulator counts, and the window's requests.
func busiestSecond(reqs []apiRequest) []apiRequest {
	var most []apiRequest
	head := 0
	for i, r := range reqs {
		for reqs[head].arrived <= r.arrived-time.Second {
			head++
		}
		if i-head+1 > len(most) {
			most = reqs[head : i+1]
		}
	}
	return most
}

// budgetConfig writes a config file for insts of the simulator at apiURL, each with max_per_day
// perDay, whose day starts at dayStartsAt (UTC), with runToml after them, and returns its path.
func budgetConfig(t *testing.T, apiURL, dayStartsAt string, insts []simulator.Instance, perDay int, runToml string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[greenapi]\napi_url = %q\nday_starts_at = %q\ntime_zone = \"UTC\"\n\n", apiURL, dayStartsAt)
	for _, in := range insts {
		fmt.Fprintf(&b, "[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\nmax_per_day = %d\n\n", in.ID, in.Token, in.RPS, perDay)
	}
	b.WriteString(runToml)
	path := filepath.Join(t.TempDir(), "enrich.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// farFromDayTurn is a day_starts_at twelve hours from now, so that no test's day turns between
// its runs, whenever it runs.
func farFromDayTurn() string { return time.Now().UTC().Add(12 * time.Hour).Format("15:04") }

// TestSharedBudget: 3 processes share 2 instances through the budget in the database; one of
// them is killed with -9 while the others go on. Every row written holds the simulator's truth,
// no survivor leaves a row leased, the killed process's leases run out within its lease, no row
// spent an attempt, and no answer is lost but the killed process's own.
//
// It asserts nothing on the clock: how much of the budget the processes spend, and how many
// requests reach an instance in any 1 s, are make bench's figures (scenarios shared and pods),
// and the engine's rps invariant is checked deterministically by the simulation (sim_test.go).
// The second-by-second account it logs is for reading.
func TestSharedBudget(t *testing.T) {
	t.Parallel()
	const (
		rows  = 1000
		procs = 3
		// The survivors outlive the killed process's leases (10 s, renewed until the kill).
		maxDuration = 16 * time.Second
		killAfter   = 4 * time.Second
		// takeUp and warmUp only shape the rates logged: after the kill, and after start-up.
		takeUp   = 2 * time.Second
		warmUp   = time.Second
		wantRate = 18.0
	)
	ctx := context.Background()
	insts := []simulator.Instance{
		{ID: "1101000041", Token: "tok-budget-41", RPS: 10},
		{ID: "1101000042", Token: "tok-budget-42", RPS: 10},
	}
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	targets := insertNumbers(t, pool, rows)
	api := newBudgetAPI(t, simulator.Config{Instances: insts, Seed: 41, Edition: simulator.EditionMixed,
		LatencyMedian: 300 * time.Millisecond, LatencyP99: 400 * time.Millisecond})
	runToml := fmt.Sprintf("[run]\nworkers = 16\nlease = \"10s\"\nmax_duration = %q\n", maxDuration)
	enrichBinary(t) // built before the clock starts

	// The instances' shared rate, as the budget table holds it, sampled while the runs go on.
	rates := newRateSampler(t, pool, api)

	started := time.Now()
	var all []*proc
	for i := range procs {
		b := procBundle{dbURL: dbURL, config: budgetConfig(t, api.listen(t, i), "00:00", insts, 0, runToml)}
		all = append(all, startProc(t, fmt.Sprintf("enrich run #%d", i+1), b, "run", "--log-format", "json"))
	}
	victim, survivors := all[procs-1], all[:procs-1]
	// When each survivor stops claiming and calling (max_duration): the end of the measured rate.
	stoppedAt := make([]time.Time, len(survivors))
	var watching sync.WaitGroup
	for i, p := range survivors {
		stopping := p.out.seen("stopping: no new claims")
		watching.Add(1)
		go func() {
			defer watching.Done()
			select {
			case <-stopping:
				stoppedAt[i] = time.Now()
			case <-p.done:
			}
		}()
	}

	select {
	case <-time.After(time.Until(started.Add(killAfter))):
	case <-victim.done:
		t.Fatalf("%s exited (code %d) before it was to be killed; output:\n%s", victim.name, exitStatus(victim.err), victim.out)
	}
	for _, p := range survivors {
		select {
		case <-p.done:
			t.Fatalf("%s exited (code %d) before the kill; output:\n%s", p.name, exitStatus(p.err), p.out)
		default:
		}
	}
	victimPID := victim.cmd.Process.Pid
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-victim.done

	codes := make([]int, len(survivors))
	for i, p := range survivors {
		codes[i] = p.wait(t)
	}
	watching.Wait()
	ended := time.Now()
	rates.stop()

	// The rates, and a readable second-by-second account.
	start, kill := api.since(started), api.since(killed)
	end := time.Duration(0)
	for i, at := range stoppedAt {
		if at.IsZero() {
			t.Errorf("%s never said it was stopping; output:\n%s", survivors[i].name, survivors[i].out)
			continue
		}
		if end == 0 || api.since(at) < end {
			end = api.since(at)
		}
	}
	reqs := api.requests()
	var table strings.Builder
	for s := time.Duration(0); start+s < api.since(ended); s += time.Second {
		from, to := start+s, start+s+time.Second
		var per []string
		for i := range procs {
			per = append(per, fmt.Sprint(api.count(from, to, func(r apiRequest) bool { return r.listener == i })))
		}
		var perInst []string
		for _, in := range insts {
			n429 := 0
			for _, r := range reqs {
				if r.instance == in.ID && r.status == http.StatusTooManyRequests && r.arrived >= from && r.arrived < to {
					n429++
				}
			}
			perInst = append(perInst, fmt.Sprintf("%d (429s %d, rate %s)", api.count(from, to, func(r apiRequest) bool { return r.instance == in.ID }),
				n429, rates.during(in.ID, from, to)))
		}
		mark := ""
		switch {
		case from <= kill && kill < to:
			mark = "  <- #3 killed with -9"
		case end != 0 && from <= end && end < to:
			mark = "  <- max_duration: the survivors stop"
		}
		fmt.Fprintf(&table, "\nsecond %2d: %2d answers; by process %s; by instance %s%s", s/time.Second,
			api.count(from, to, nil), strings.Join(per, "/"), strings.Join(perInst, ", "), mark)
	}
	t.Logf("getAvatar answers per second since the start (instances %s and %s; the rate is the budget's, sampled):%s",
		insts[0].ID, insts[1].ID, table.String())
	steady := api.rate(start+warmUp, kill, nil)
	after := api.rate(kill+takeUp, end-time.Second, nil)
	survivorsOnly := func(r apiRequest) bool { return r.listener != procs-1 }
	// How soon after the kill the survivors alone first answered wantRate in one second.
	tookUp := time.Duration(-1)
	for d := time.Duration(0); kill+d+time.Second <= end; d += 100 * time.Millisecond {
		if float64(api.count(kill+d, kill+d+time.Second, survivorsOnly)) >= wantRate {
			tookUp = d
			break
		}
	}
	st := api.sim.Stats()
	for _, in := range insts {
		is := st.Instances[in.ID]
		busiest := busiestSecond(api.arrivals(in.ID, nil))
		avatar := busiestSecond(api.arrivals(in.ID, func(r apiRequest) bool { return r.method == "getavatar" }))
		t.Logf("instance %s: %d requests %v, %d answered 429; at most %d requests in any 1 s (%s); getAvatar alone: at most %d",
			in.ID, is.Requests, is.Methods, is.TooMany, is.MaxInAnySecond, describe(busiest, start), len(avatar))
		// Where each getAvatar 429 fell: the request before it on the instance, and whose it was.
		avatars := api.arrivals(in.ID, func(r apiRequest) bool { return r.method == "getavatar" })
		for i, r := range avatars {
			if r.status != http.StatusTooManyRequests || i == 0 {
				continue
			}
			prev := avatars[i-1]
			whose := "the same process"
			if prev.listener != r.listener {
				whose = fmt.Sprintf("process #%d", prev.listener+1)
			}
			t.Logf("instance %s: 429 at %s to process #%d, %s after the request before it (%s, answered %d)", in.ID,
				(r.arrived - start).Round(time.Millisecond), r.listener+1, (r.arrived - prev.arrived).Round(10*time.Microsecond),
				whose, prev.status)
		}
	}
	t.Logf("%.2f answers/s from %s after the start to the kill (at %s); %.2f/s from %s after the kill to 1 s before "+
		"the first survivor stopped (at %s); the survivors alone first answered %g in one second %s after the kill",
		steady, warmUp, (kill - start).Round(time.Millisecond), after, takeUp, (end - start).Round(time.Millisecond),
		wantRate, tookUp)

	for i, p := range survivors {
		sum := summaryLine(t, p.out)
		t.Logf("%s: exit %d after %s; summary: done %d, failed %d, released %d, calls %v, 429s %d, stop %q",
			p.name, codes[i], p.took.Round(time.Millisecond), sum.Done, sum.Failed, sum.Released, sum.Calls,
			sum.RateLimited, sum.Stop)
		if codes[i] != 0 || sum.Stop != "max_duration reached" {
			t.Errorf("%s: exit %d, stop %q; want 0 and \"max_duration reached\"; output:\n%s", p.name, codes[i], sum.Stop, p.out)
		}
	}

	// Every row written holds the simulator's truth; the rows the victim held stay leased until
	// their lease runs out (another run may have taken them since), and no survivor leaves one.
	checked, wrong, err := verifyAgainstTruth(ctx, pool, "contacts", api.sim)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d finished rows differ from the simulator's truth; first ones: %v", len(wrong), checked, wrong[:min(len(wrong), 10)])
	}
	victimOwner := fmt.Sprintf("%%:%d:%%", victimPID)
	var bySurvivor, byVictim, leaseLive, spent int
	var victimUntil *time.Time
	if err := pool.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE locked_by IS NOT NULL AND locked_by NOT LIKE $1),
		count(*) FILTER (WHERE locked_by LIKE $1),
		count(*) FILTER (WHERE locked_until > now()),
		count(*) FILTER (WHERE status = 'pending' AND attempts <> 0),
		max(locked_until) FILTER (WHERE locked_by LIKE $1)
		FROM contacts`, victimOwner).Scan(&bySurvivor, &byVictim, &leaseLive, &spent, &victimUntil); err != nil {
		t.Fatal(err)
	}
	// The victim's leases end no later than a lease after its last renewal, before the kill (the
	// database's clock and this one are the same machine's; 1 s covers a renewal in flight).
	leaseEnd := "none"
	if victimUntil != nil {
		leaseEnd = victimUntil.Sub(killed).Round(time.Millisecond).String() + " after the kill"
		if victimUntil.Sub(killed) > 10*time.Second+time.Second {
			t.Errorf("a row the killed process held is leased until %s after the kill, want within its 10 s lease",
				victimUntil.Sub(killed).Round(time.Millisecond))
		}
	}
	if bySurvivor != 0 {
		t.Errorf("%d rows left leased by the survivors, which exited 0", bySurvivor)
	}
	if leaseLive != 0 {
		t.Errorf("%d rows have a lease running %s after the kill (lease 10 s)", leaseLive, time.Since(killed).Round(time.Second))
	}
	if spent != 0 {
		t.Errorf("%d pending rows spent attempts", spent)
	}
	// An answer given and not written may only be one of the victim's: the survivors write all.
	var lost, twice int
	for _, r := range (procBundle{pool: pool}).rows(t) {
		if r.status == "pending" && api.sim.Answers(r.phone) > 0 && !r.leased {
			lost++
		}
	}
	for _, target := range targets {
		if api.sim.Answers(target) > 1 {
			twice++
		}
	}
	if lost != 0 {
		t.Errorf("%d rows were answered but are pending and not leased by the killed process", lost)
	}
	var done, failed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed')
		FROM contacts`).Scan(&done, &failed); err != nil {
		t.Fatal(err)
	}
	t.Logf("table: %d done, %d failed, all as the simulator answered; %d rows still marked as the killed process's, "+
		"their leases ending at the latest %s; none leased by a survivor; %d numbers answered twice (the killed "+
		"process's unwritten answers, asked again)", done, failed, byVictim, leaseEnd, twice)
}

// TestDailyCap: "the daily cap stops an instance exactly at its cap across two runs and two
// processes." Run A alone spends 15 of the day's 40 (--limit 15); B and C together spend the
// other 25 and end at the cap; D, the same day, ends at once without a request. With the default
// lease (10 min) and with the shortest (10 s): a run may claim no more rows than it can start,
// and with a cap that is what is left of the day, so both B and C hold rows and spend the cap.
func TestDailyCap(t *testing.T) {
	t.Parallel()
	for _, lease := range []string{"10m", "10s"} {
		t.Run("lease="+lease, func(t *testing.T) {
			t.Parallel()
			testDailyCap(t, lease)
		})
	}
}

func testDailyCap(t *testing.T, lease string) {
	const (
		rows   = 200
		perDay = 40
		limitA = 15
		id     = "1101000051"
		// atOnce bounds run D: a process start, one reservation that grants nothing, the end.
		atOnce = 5 * time.Second
	)
	inst := simulator.Instance{ID: id, Token: "tok-cap-51", RPS: 10}
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	insertNumbers(t, pool, rows)
	api := newBudgetAPI(t, simulator.Config{Instances: []simulator.Instance{inst}, Seed: 51})
	b := procBundle{pool: pool, dbURL: dbURL,
		config: budgetConfig(t, api.listen(t, 0), farFromDayTurn(), []simulator.Instance{inst}, perDay,
			fmt.Sprintf("[run]\nworkers = 16\nlease = %q\n", lease))}
	avatarCalls := func() int { return api.sim.Stats().Instances[id].Methods["getAvatar"].Requests }
	finished := func() int { return b.count(t, "status <> 'pending'") }
	// counted is the day's count the budget holds: the requests sent (slots reserved and not
	// sent are given back), which the next run's cap goes by.
	counted := func() int {
		var used int
		if err := pool.QueryRow(context.Background(), `SELECT used FROM enrich.enrich_instances WHERE instance_id = $1`, id).Scan(&used); err != nil {
			t.Fatal(err)
		}
		return used
	}

	a := startProc(t, "enrich run A", b, "run", "--log-format", "json", "--limit", fmt.Sprint(limitA))
	if code := a.wait(t); code != 0 {
		t.Fatalf("%s: exit %d, want 0; output:\n%s", a.name, code, a.out)
	}
	sumA := summaryLine(t, a.out)
	t.Logf("%s: exit 0 after %s, stop %q; %d getAvatar requests, %d rows done or failed; the budget counts %d today", a.name,
		a.took.Round(time.Millisecond), sumA.Stop, avatarCalls(), finished(), counted())
	if n := avatarCalls(); n != limitA {
		t.Errorf("run A sent %d getAvatar requests, want %d (--limit %d)", n, limitA, limitA)
	}
	if n, sent := counted(), avatarCalls(); n != sent {
		t.Errorf("after run A the budget counts %d requests today, the instance got %d", n, sent)
	}
	if n := finished(); n != limitA {
		t.Errorf("run A finished %d rows, want %d", n, limitA)
	}

	bc := []*proc{
		startProc(t, "enrich run B", b, "run", "--log-format", "json"),
		startProc(t, "enrich run C", b, "run", "--log-format", "json"),
	}
	for _, p := range bc {
		code := p.wait(t)
		sum := summaryLine(t, p.out)
		aside := logLines(p.out, "instance set aside for the rest of the day")
		t.Logf("%s: exit %d after %s, stop %q; done %d, failed %d, released %d, calls %v; set aside: %v", p.name, code,
			p.took.Round(time.Millisecond), sum.Stop, sum.Done, sum.Failed, sum.Released, sum.Calls, aside)
		if code != 0 || sum.Stop != "daily cap reached" {
			t.Errorf("%s: exit %d, stop %q; want 0 and \"daily cap reached\"; output:\n%s", p.name, code, sum.Stop, p.out)
		}
		if len(aside) != 1 || !strings.Contains(aside[0], `"level":"info"`) || !strings.Contains(aside[0], id) ||
			!strings.Contains(aside[0], fmt.Sprintf("max_per_day %d", perDay)) {
			t.Errorf("%s: want one info line setting instance %s aside, naming max_per_day %d; got %q", p.name, id, perDay, aside)
		}
	}
	st := api.sim.Stats().Instances[id]
	t.Logf("after A, B and C: instance %s got %d getAvatar requests %v (%d answered 429), at most %d in any 1 s; "+
		"the budget counts %d today", id, avatarCalls(), st.Methods, st.TooMany, st.MaxInAnySecond, counted())
	if n, sent := counted(), avatarCalls(); n != sent {
		t.Errorf("after runs B and C the budget counts %d requests today, the instance got %d", n, sent)
	}
	if n := avatarCalls(); n != perDay {
		t.Errorf("the instance got %d getAvatar requests in the day, want exactly max_per_day = %d", n, perDay)
	}
	checkCapTable(t, b, api.sim, perDay)

	before := api.sim.Stats().Instances[id]
	d := startProc(t, "enrich run D", b, "run", "--log-format", "json")
	code := d.wait(t)
	sum := summaryLine(t, d.out)
	after := api.sim.Stats().Instances[id]
	t.Logf("%s (the same day): exit %d after %s, stop %q; %d more getAvatar requests, %d more requests of any method; %v",
		d.name, code, d.took.Round(time.Millisecond), sum.Stop, after.Methods["getAvatar"].Requests-before.Methods["getAvatar"].Requests,
		after.Requests-before.Requests, logLines(d.out, "instance set aside for the rest of the day"))
	if code != 0 || sum.Stop != "daily cap reached" {
		t.Errorf("%s: exit %d, stop %q; want 0 and \"daily cap reached\"; output:\n%s", d.name, code, sum.Stop, d.out)
	}
	if d.took > atOnce {
		t.Errorf("%s took %s to find the day's cap spent, want under %s", d.name, d.took.Round(time.Millisecond), atOnce)
	}
	if n := after.Methods["getAvatar"].Requests - before.Methods["getAvatar"].Requests; n != 0 {
		t.Errorf("%s sent %d getAvatar requests after the day's cap was spent, want 0", d.name, n)
	}
	checkCapTable(t, b, api.sim, perDay)
}

// TestDailyCapCountsSent: the day's count is of requests sent, not of slots reserved: runs that
// find no due row send nothing, and so spend nothing of the cap.
func TestDailyCapCountsSent(t *testing.T) {
	t.Parallel()
	const (
		runs   = 5
		perDay = 40
		id     = "1101000053"
	)
	inst := simulator.Instance{ID: id, Token: "tok-cap-53", RPS: 10}
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	api := newBudgetAPI(t, simulator.Config{Instances: []simulator.Instance{inst}, Seed: 53})
	b := procBundle{pool: pool, dbURL: dbURL,
		config: budgetConfig(t, api.listen(t, 0), farFromDayTurn(), []simulator.Instance{inst}, perDay, "[run]\nworkers = 16\n")}
	var counts []string
	for i := range runs {
		p := startProc(t, fmt.Sprintf("enrich run %d", i+1), b, "run", "--log-format", "json")
		if code := p.wait(t); code != 0 {
			t.Fatalf("%s: exit %d, want 0; output:\n%s", p.name, code, p.out)
		}
		var used int
		if err := pool.QueryRow(context.Background(),
			`SELECT coalesce((SELECT used FROM enrich.enrich_instances WHERE instance_id = $1), 0)`, id).Scan(&used); err != nil {
			t.Fatal(err)
		}
		counts = append(counts, fmt.Sprint(used))
	}
	sent := api.sim.Stats().Instances[id].Methods["getAvatar"].Requests
	t.Logf("%d runs on a table with no due row: %d getAvatar requests; the budget's count for today after each: %s",
		runs, sent, strings.Join(counts, ", "))
	if sent != 0 || counts[len(counts)-1] != "0" {
		t.Errorf("runs with nothing to do sent %d requests and left today's count at %s of max_per_day %d, want 0 and 0",
			sent, counts[len(counts)-1], perDay)
	}
}

// checkCapTable wants exactly perDay rows done or failed, each as the simulator answered it, and
// every other row pending, untouched and unlocked.
func checkCapTable(t *testing.T, b procBundle, sim *simulator.Simulator, perDay int) {
	t.Helper()
	checked, wrong, err := verifyAgainstTruth(context.Background(), b.pool, "contacts", sim)
	if err != nil {
		t.Fatal(err)
	}
	if checked != perDay || len(wrong) > 0 {
		t.Errorf("%d rows done or failed, want exactly %d; %d differ from the simulator's truth: %v", checked, perDay,
			len(wrong), wrong[:min(len(wrong), 10)])
	}
	pending := b.count(t, "status = 'pending'")
	untouched := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL AND locked_until IS NULL")
	if untouched != pending || checked+pending != b.count(t, "true") {
		t.Errorf("%d rows pending, %d of them untouched and unlocked; want all", pending, untouched)
	}
}

// TestQuotaSpentRecorded: an instance that answered 466 is skipped by later runs that day without
// a call. Run 1 meets the 466 after the plan's 5 calls and exits 2 naming the remedy; run 2, the
// same day, exits 2 without sending the instance any request, saying it is skipped until the day
// turns.
func TestQuotaSpentRecorded(t *testing.T) {
	t.Parallel()
	const (
		rows  = 50
		quota = 5
		id    = "1101000052"
		token = "tok-quota-52"
	)
	inst := simulator.Instance{ID: id, Token: token, RPS: 10, Quota: quota}
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	insertNumbers(t, pool, rows)
	api := newBudgetAPI(t, simulator.Config{Instances: []simulator.Instance{inst}, Seed: 52})
	b := procBundle{pool: pool, dbURL: dbURL,
		config: budgetConfig(t, api.listen(t, 0), farFromDayTurn(), []simulator.Instance{inst}, 0, "[run]\nworkers = 16\n")}

	first := startProc(t, "enrich run 1", b, "run", "--log-format", "json")
	code := first.wait(t)
	st := api.sim.Stats().Instances[id]
	t.Logf("%s: exit %d after %s; instance %s got %d requests %v, %d answered 466; %v", first.name, code,
		first.took.Round(time.Millisecond), id, st.Requests, st.Methods, st.QuotaExceeded,
		logLines(first.out, "instance taken out of the run"))
	if code != 2 {
		t.Fatalf("%s: exit %d, want 2; output:\n%s", first.name, code, first.out)
	}
	s := first.out.String()
	for _, want := range []string{id, "466", "upgrade the plan or wait for the quota to renew"} {
		if !strings.Contains(s, want) {
			t.Errorf("%s: the output does not say %q:\n%s", first.name, want, s)
		}
	}
	if st.QuotaExceeded == 0 {
		t.Errorf("the simulator answered no 466")
	}
	checkQuotaTable(t, b, api.sim, quota)

	before := api.sim.Stats()
	second := startProc(t, "enrich run 2", b, "run", "--log-format", "json")
	code = second.wait(t)
	after := api.sim.Stats()
	t.Logf("%s (the same day): exit %d after %s; %d more requests to instance %s (%v before, %v after); %v", second.name,
		code, second.took.Round(time.Millisecond), after.Instances[id].Requests-before.Instances[id].Requests, id,
		before.Instances[id].Methods, after.Instances[id].Methods, logLines(second.out, "instance taken out of the run"))
	if code != 2 {
		t.Errorf("%s: exit %d, want 2; output:\n%s", second.name, code, second.out)
	}
	if n := after.Instances[id].Requests - before.Instances[id].Requests; n != 0 || after.Requests != before.Requests {
		t.Errorf("%s sent %d requests to the instance (%d to the API in all), want none: its 466 was recorded today",
			second.name, n, after.Requests-before.Requests)
	}
	s = second.out.String()
	for _, want := range []string{id, "466", "skipped until the day turns"} {
		if !strings.Contains(s, want) {
			t.Errorf("%s: the output does not say %q:\n%s", second.name, want, s)
		}
	}
	if strings.Contains(first.out.String()+s, token) {
		t.Errorf("the token appears in the output")
	}
	checkQuotaTable(t, b, api.sim, quota)
}

// checkQuotaTable wants the rows the plan's quota answered done or failed as the simulator
// answered them, and every other row pending, untouched and unlocked.
func checkQuotaTable(t *testing.T, b procBundle, sim *simulator.Simulator, quota int) {
	t.Helper()
	checked, wrong, err := verifyAgainstTruth(context.Background(), b.pool, "contacts", sim)
	if err != nil {
		t.Fatal(err)
	}
	if checked != quota || len(wrong) > 0 {
		t.Errorf("%d rows done or failed, want %d (the plan's quota); %d differ from the simulator's truth: %v", checked,
			quota, len(wrong), wrong[:min(len(wrong), 10)])
	}
	pending := b.count(t, "status = 'pending'")
	if n := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL AND locked_until IS NULL"); n != pending {
		t.Errorf("%d rows pending, %d of them untouched and unlocked; want all", pending, n)
	}
}

// describe says what reqs are: how many of each method, from which process, from when to when
// (since start).
func describe(reqs []apiRequest, start time.Duration) string {
	if len(reqs) == 0 {
		return "none"
	}
	byMethod, byProc := map[string]int{}, map[int]int{}
	for _, r := range reqs {
		byMethod[r.method]++
		byProc[r.listener+1]++
	}
	return fmt.Sprintf("%v by process %v, arriving from %s to %s", byMethod, byProc,
		(reqs[0].arrived - start).Round(time.Millisecond), (reqs[len(reqs)-1].arrived - start).Round(time.Millisecond))
}

// rateSampler reads the instances' shared rate from the budget table every 100 ms, so that a
// failure can show how it moved.
type rateSampler struct {
	api  *budgetAPI
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples map[string][]rateSample
}

type rateSample struct {
	at   time.Duration
	rate float64
}

func newRateSampler(t *testing.T, pool *pgxpool.Pool, api *budgetAPI) *rateSampler {
	s := &rateSampler{api: api, quit: make(chan struct{}), done: make(chan struct{}), samples: map[string][]rateSample{}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
			rows, err := pool.Query(context.Background(), `SELECT instance_id, rate FROM enrich.enrich_instances`)
			if err != nil {
				continue // the table is made by the first reservation; a failed read is a gap
			}
			var id string
			var rate float64
			at := time.Since(api.start)
			_, _ = pgx.ForEachRow(rows, []any{&id, &rate}, func() error {
				s.mu.Lock()
				s.samples[id] = append(s.samples[id], rateSample{at, rate})
				s.mu.Unlock()
				return nil
			})
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop ends the sampling; it may be called more than once.
func (s *rateSampler) stop() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
}

// during is the lowest and highest rate of instance id sampled in [from, to).
func (s *rateSampler) during(id string, from, to time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lo, hi, n := 0.0, 0.0, 0
	for _, x := range s.samples[id] {
		if x.at < from || x.at >= to {
			continue
		}
		if n == 0 || x.rate < lo {
			lo = x.rate
		}
		if n == 0 || x.rate > hi {
			hi = x.rate
		}
		n++
	}
	switch {
	case n == 0:
		return "-"
	case lo == hi:
		return fmt.Sprintf("%.2f", lo)
	}
	return fmt.Sprintf("%.2f-%.2f", lo, hi)
}
