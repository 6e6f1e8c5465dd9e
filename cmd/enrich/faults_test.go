package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/jackc/pgx/v5"
)

// These tests put the real binary through the faults an operator meets at night: the API gone
// mid-run, a request form the edition refuses, an instance throttled whatever it does, and a
// table locked by another session when the pod is told to stop. Each asserts the issue's "Done
// when" line, and what the table looks like afterwards.

// weightsNoBadRequest is the default truth mix without "bad request data" numbers, for tests in
// which any failed row is a fault.
func weightsNoBadRequest(cfg simulator.Config) simulator.Config {
	cfg.WeightAvatar, cfg.WeightNoPhoto, cfg.WeightHidden, cfg.WeightNoWhatsApp = 0.55, 0.20, 0.10, 0.15
	return cfg
}

// setupFaults is setupProc for a test that serves the API itself (its listener, its handler): a
// database with rows pending numbers and a simulator serving inst. writeConfig points the
// bundle at the server once the test has one.
func setupFaults(t *testing.T, rows int, inst simulator.Instance, simCfg simulator.Config) procBundle {
	t.Helper()
	return seedProc(t, rows, "7902", inst, simCfg)
}

// writeConfig writes the bundle's config file: apiURL, inst, and runToml after them.
func (b *procBundle) writeConfig(t *testing.T, apiURL string, inst simulator.Instance, runToml string) {
	t.Helper()
	b.config = filepath.Join(t.TempDir(), "enrich.toml")
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n\n%s\n",
		apiURL, inst.ID, inst.Token, inst.RPS, runToml)
	if err := os.WriteFile(b.config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for cmd to end, at most limit (then it kills it and fails the test: the process
// hung), and returns its exit code and when it ended.
func waitExit(t *testing.T, cmd *exec.Cmd, out *output, limit time.Duration) (int, time.Time) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitStatus(err), time.Now()
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the run had not ended after %s; killed it. Output:\n%s", limit, out)
		return 0, time.Time{}
	}
}

// tableRow is one row of contacts as a test checks it.
type tableRow struct {
	phone, status     string
	exists, available *bool
	url               *string
	attempts          int
	leased            bool
}

func (b procBundle) rows(t *testing.T) []tableRow {
	t.Helper()
	rows, err := b.pool.Query(context.Background(),
		`SELECT phone_number, status, exists_whatsapp, avatar_available, url_avatar, attempts, locked_by IS NOT NULL FROM contacts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var all []tableRow
	var r tableRow
	if _, err := pgx.ForEachRow(rows, []any{&r.phone, &r.status, &r.exists, &r.available, &r.url, &r.attempts, &r.leased}, func() error {
		all = append(all, r)
		r.exists, r.available, r.url = nil, nil, nil // the next row gets pointers of its own
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all
}

// checkWritten fails the test for every row written with something the simulator did not
// answer: a done row must hold its number's truth (as its edition says it), a failed row must
// be a number the simulator answered "bad request data". It returns how many of each.
func (b procBundle) checkWritten(t *testing.T, rows []tableRow) (done, failed int) {
	t.Helper()
	eq := func(a, b *bool) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
	for _, r := range rows {
		tr := b.sim.Truth(r.phone)
		switch r.status {
		case "done":
			done++
			want := tr.Avatar()
			// Existence as a client that checks it records it, or unknown when its check was
			// cut short (unchecked: a later run completes it).
			wantExists, _ := tr.Existence(false)
			if b.sim.Answers(r.phone) == 0 {
				t.Errorf("row %s is done, but the simulator never answered it", r.phone)
			} else if tr.BadRequest || r.url == nil || *r.url != want.URLAvatar || r.exists != nil && !eq(r.exists, wantExists) || !eq(r.available, want.Available) {
				t.Errorf("row %s is done with url=%v exists=%v available=%v; the simulator answered %+v", r.phone,
					deref(r.url), deref(r.exists), deref(r.available), tr)
			}
		case "failed":
			failed++
			if b.sim.Answers(r.phone) == 0 || !tr.BadRequest {
				t.Errorf("row %s failed, but the simulator did not answer it \"bad request data\" (answers %d, truth %+v)",
					r.phone, b.sim.Answers(r.phone), tr)
			}
		}
	}
	return done, failed
}

// deref is *p, or nil, for messages.
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// checkUntouched fails the test unless no row is failed, none is leased and no pending row
// spent an attempt: what an instance's trouble (not the rows') must leave.
func (b procBundle) checkUntouched(t *testing.T, out *output) {
	t.Helper()
	if n := b.count(t, "status = 'failed'"); n != 0 {
		t.Errorf("%d rows failed; output:\n%s", n, out)
	}
	if n := b.count(t, "locked_by IS NOT NULL"); n != 0 {
		t.Errorf("%d rows left locked", n)
	}
	if n := b.count(t, "status = 'pending' AND attempts <> 0"); n != 0 {
		t.Errorf("%d pending rows spent attempts on the instance's trouble", n)
	}
}

// runSummary is what the tests read of the "run finished" line.
type runSummary struct {
	Done, Failed, Released, Unwritten, Claimed int64
	RateLimited                                int64 `json:"rate_limited"`
	Elapsed, Stop                              string
	Calls                                      map[string]int64
}

// summaryLine decodes the "run finished" line's summary, failing the test when there is none.
func summaryLine(t *testing.T, out *output) runSummary {
	t.Helper()
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.Contains(line, `"message":"run finished"`) {
			continue
		}
		var l struct{ Summary *runSummary }
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Summary == nil {
			t.Fatalf("the summary line does not decode (%v): %s", err, line)
		}
		return *l.Summary
	}
	t.Fatalf("no summary line in the output:\n%s", out)
	return runSummary{}
}

// refusableAPI serves a simulator until refuse is called; from then on the API refuses: its
// listener is closed at once, so a new connection is refused (ECONNREFUSED, what a client of a
// service that went away sees), and a request arriving on a kept-alive connection is dropped
// without an answer. Calls already in the simulator finish and their answers are delivered
// before their connections close, so the simulator's Answers count exactly what the run
// received.
type refusableAPI struct {
	srv     *httptest.Server
	sim     *simulator.Simulator
	refused atomic.Bool
	// drained is closed once, after refuse, every call has finished and every connection is
	// closed.
	drained chan struct{}

	answered atomic.Int64
	// late counts the answers of calls that were in flight when the API began to refuse.
	late atomic.Int64
	// enough is closed when `after` calls have been answered.
	after  int64
	enough chan struct{}
}

func newRefusableAPI(t *testing.T, sim *simulator.Simulator, after int) *refusableAPI {
	a := &refusableAPI{sim: sim, drained: make(chan struct{}), after: int64(after), enough: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.refused.Load() {
			panic(http.ErrAbortHandler) // the connection is closed without a response
		}
		a.sim.ServeHTTP(w, r)
		if a.refused.Load() {
			a.late.Add(1)
		}
		if a.answered.Add(1) == a.after {
			close(a.enough)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// refuse makes the API refuse from now on and returns when it began to.
func (a *refusableAPI) refuse() time.Time {
	a.refused.Store(true)
	at := time.Now()
	_ = a.srv.Listener.Close()
	go func() {
		// Close closes idle connections (their last answer was flushed before they went
		// idle), turns keep-alives off, and waits for the calls in flight, whose connections
		// close once their answers are out.
		a.srv.Close()
		close(a.drained)
	}()
	return at
}

// TestAPIRefusedMidRun: "API refused mid-run: the run exits 2 within starting_timeout plus a
// margin; 0 rows failed, 0 locked, 0 attempts spent by the outage." Also when the API refuses
// from the start.
func TestAPIRefusedMidRun(t *testing.T) {
	t.Parallel()
	const (
		startingTimeout = 5 * time.Second
		// margin is what may pass between the end of starting_timeout and the exit. The
		// outage is seen within a few calls (a refused connection fails in microseconds); what
		// is left is the probe that notices the deadline (GetStateInstance is probed about
		// once a second at first, slower later) and the end of the run: one write of the last
		// answers and the rows given back, then the process exits, on a machine running every
		// test of the package in parallel under -race. 10 s is twice starting_timeout: a run
		// past it is not keeping to the setting.
		margin = 10 * time.Second
		id     = "1101000031"
		token  = "tok-refused-31"
	)
	runToml := fmt.Sprintf("[run]\nworkers = 16\nbatch_size = 100\nstarting_timeout = %q\n", startingTimeout)

	t.Run("mid-run", func(t *testing.T) {
		t.Parallel()
		inst := simulator.Instance{ID: id, Token: token, RPS: 50, Burst: 5}
		b := setupFaults(t, 2000, inst, weightsNoBadRequest(simulator.Config{
			Seed: 31, Edition: simulator.EditionMixed, LatencyMedian: 50 * time.Millisecond, LatencyP99: 200 * time.Millisecond,
		}))
		// 300 answers at 50 rps: about 6 s into a run of 40 s.
		api := newRefusableAPI(t, b.sim, 300)
		b.writeConfig(t, api.srv.URL, inst, runToml)
		cmd, out := b.command(t, "run", "--log-format", "json")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-api.enough:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the simulator answered %d calls in 60 s; output:\n%s", api.answered.Load(), out)
		}
		refusedAt := api.refuse()
		unreachable := out.seen("is unreachable")
		code, ended := waitExit(t, cmd, out, startingTimeout+margin+60*time.Second)
		elapsed := ended.Sub(refusedAt)
		<-api.drained
		if code != 2 {
			t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
		}
		select {
		case <-unreachable:
		default:
			t.Errorf("the output never says the instance is unreachable:\n%s", out)
		}
		if elapsed < startingTimeout || elapsed > startingTimeout+margin {
			t.Errorf("exited %s after the API began to refuse, want between starting_timeout (%s) and starting_timeout + %s",
				elapsed.Round(time.Millisecond), startingTimeout, margin)
		}
		b.checkUntouched(t, out)
		rows := b.rows(t)
		done, _ := b.checkWritten(t, rows)
		for _, r := range rows {
			if b.sim.Answers(r.phone) > 0 && r.status != "done" {
				t.Errorf("row %s was answered by the simulator but is %s", r.phone, r.status)
			}
		}
		if done == 0 {
			t.Errorf("no row is done; the API answered %d calls before it refused", api.answered.Load())
		}
		checkOutage(t, out, id, token)
		st := b.sim.Stats().Instances[id]
		t.Logf("refused after %d answers (%d of them to calls in flight at the refusal); exit 2 after %s "+
			"(starting_timeout %s); %d done, %d pending untouched; %d requests reached the instance",
			api.answered.Load(), api.late.Load(), elapsed.Round(time.Millisecond), startingTimeout,
			done, b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"), st.Requests)
	})

	t.Run("from the start", func(t *testing.T) {
		t.Parallel()
		inst := simulator.Instance{ID: id, Token: token, RPS: 50}
		b := setupFaults(t, 200, inst, simulator.Config{})
		// A port that was listened on and closed: every connection to it is refused.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		b.writeConfig(t, "http://"+addr, inst, runToml)
		cmd, out := b.command(t, "run", "--log-format", "json")
		started := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		code, ended := waitExit(t, cmd, out, startingTimeout+margin+60*time.Second)
		elapsed := ended.Sub(started)
		if code != 2 {
			t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
		}
		if elapsed < startingTimeout || elapsed > startingTimeout+margin {
			t.Errorf("exited %s after the start, want between starting_timeout (%s) and starting_timeout + %s",
				elapsed.Round(time.Millisecond), startingTimeout, margin)
		}
		b.checkUntouched(t, out)
		if n := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); n != 200 {
			t.Errorf("untouched pending rows = %d, want 200", n)
		}
		checkOutage(t, out, id, token)
		t.Logf("API refused from the start: exit 2 after %s (starting_timeout %s); rows untouched",
			elapsed.Round(time.Millisecond), startingTimeout)
	})
}

// checkOutage wants the output to name the instance and say it is unreachable, and never to
// show the token.
func checkOutage(t *testing.T, out *output, id, token string) {
	t.Helper()
	s := out.String()
	if !strings.Contains(s, fmt.Sprintf("instance %s has been unreachable", id)) {
		t.Errorf("the output does not say that instance %s is unreachable:\n%s", id, s)
	}
	if strings.Contains(s, token) {
		t.Errorf("the token appears in the output:\n%s", s)
	}
}

// TestPhoneNumberRefused: "phoneNumber refused by the edition: exit 1 naming request_by; 0 rows
// failed; under 50 calls."
func TestPhoneNumberRefused(t *testing.T) {
	t.Parallel()
	const id = "1101000032"
	b := setupProc(t, 200,
		simulator.Instance{ID: id, Token: "tok-phone-32", RPS: 10},
		simulator.Config{Seed: 32, Edition: simulator.EditionCurrent},
		"[run]\nworkers = 16\n", 1)
	cmd, out := b.command(t, "run", "--log-format", "json", "--request-by", "phoneNumber")
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code, ended := waitExit(t, cmd, out, 60*time.Second)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, out)
	}
	s := out.String()
	for _, want := range []string{"greenapi.request_by", "phoneNumber", "Validation failed", "'chatId' is required"} {
		if !strings.Contains(s, want) {
			t.Errorf("the output does not say %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "tok-phone-32") {
		t.Errorf("the token appears in the output:\n%s", s)
	}
	b.checkUntouched(t, out)
	if n := b.count(t, "status = 'pending'"); n != 200 {
		t.Errorf("pending rows = %d, want 200", n)
	}
	calls := b.sim.Stats().Instances[id].Methods["getAvatar"].Requests
	if calls >= 50 {
		t.Errorf("%d getAvatar calls reached the simulator, want under 50", calls)
	}
	t.Logf("phoneNumber refused: exit 1 after %s, %d getAvatar calls, rows untouched",
		ended.Sub(started).Round(time.Millisecond), calls)
}

// TestEveryCall429: "Every call answered 429: the instance averages under 3 requests/s, leaves
// after starting_timeout, exit 2, rows untouched."
func TestEveryCall429(t *testing.T) {
	t.Parallel()
	const (
		startingTimeout = 10 * time.Second
		// margin: the instance learns how long it has been throttled only when a 429 comes
		// back, and at its floor (5% of 10 rps, or Retry-After 2 s) one comes every 2 s; the
		// process start and the end of the run (rows given back) take well under a second
		// each, on a loaded machine a few more.
		margin = 5 * time.Second
	)
	for _, retryAfter := range []time.Duration{0, 2 * time.Second} {
		t.Run(fmt.Sprintf("retry_after=%s", retryAfter), func(t *testing.T) {
			t.Parallel()
			id, token := "1101000033", "tok-429-33"
			b := setupProc(t, 300,
				simulator.Instance{ID: id, Token: token, RPS: 10, TooManyAll: true},
				simulator.Config{Seed: 33, RetryAfter: retryAfter},
				fmt.Sprintf("[run]\nworkers = 16\nstarting_timeout = %q\n", startingTimeout), 1)
			cmd, out := b.command(t, "run", "--log-format", "json")
			started := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			code, ended := waitExit(t, cmd, out, startingTimeout+margin+60*time.Second)
			elapsed := ended.Sub(started)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			st := b.sim.Stats().Instances[id]
			perSecond := float64(st.Requests) / elapsed.Seconds()
			t.Logf("every call 429 (Retry-After %s): exit 2 after %s; %d requests (%v), %.2f/s on average, at most %d in any second",
				retryAfter, elapsed.Round(time.Millisecond), st.Requests, st.Methods, perSecond, st.MaxInAnySecond)
			if perSecond >= 3 {
				t.Errorf("%d requests in %s: %.2f/s, want under 3/s", st.Requests, elapsed.Round(time.Millisecond), perSecond)
			}
			if elapsed < startingTimeout || elapsed > startingTimeout+margin {
				t.Errorf("exited after %s, want between starting_timeout (%s) and starting_timeout + %s",
					elapsed.Round(time.Millisecond), startingTimeout, margin)
			}
			b.checkUntouched(t, out)
			if n := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); n != 300 {
				t.Errorf("untouched pending rows = %d, want 300", n)
			}
			s := out.String()
			if !strings.Contains(s, "instance "+id+" has answered nothing but 429") {
				t.Errorf("the output does not say that instance %s answered nothing but 429:\n%s", id, s)
			}
			if strings.Contains(s, token) {
				t.Errorf("the token appears in the output:\n%s", s)
			}
		})
	}
}

// TestSIGTERMWhileTableLocked: "SIGTERM while another session holds an exclusive lock on the
// table: exit within shutdown_grace + 2 s." The table must not be corrupted: every row written
// holds what the simulator answered, and the rows the run could not write back stay leased
// (they come back when the lease expires).
func TestSIGTERMWhileTableLocked(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	ctx := context.Background()
	b := setupProc(t, 1000,
		simulator.Instance{ID: "1101000034", Token: "tok-locked-34", RPS: 100, Burst: 10},
		// Latency capped at 10 × p99 = 2 s, under shutdown_grace: no call is cut, so every
		// answer the simulator gave reached the run.
		simulator.Config{Seed: 34, Edition: simulator.EditionMixed, LatencyMedian: 30 * time.Millisecond, LatencyP99: 200 * time.Millisecond},
		fmt.Sprintf("[run]\nworkers = 16\nbatch_size = 100\nshutdown_grace = %q\n", grace), 100)
	cmd, out := b.command(t, "run", "--log-format", "json")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	kill := func() { _ = cmd.Process.Kill(); <-exited }
	select {
	case <-b.answered:
	case <-time.After(60 * time.Second):
		kill()
		t.Fatalf("the simulator answered too few calls in 60 s; output:\n%s", out)
	}

	// Another session takes the table, on a connection of its own, and holds it.
	locker, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		kill()
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		kill()
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := tx.Rollback(ctx); err != nil {
				t.Errorf("releasing the lock: %v", err)
			}
		}
	}
	defer release()
	if _, err := tx.Exec(ctx, `LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE`); err != nil {
		kill()
		t.Fatal(err)
	}
	lockedAt := time.Now()

	// Wait until the run is blocked on it: one of its backends waits for the lock (the only
	// other sessions on this test's database are the test's own).
	var blocked string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(30 * time.Second)
	for blocked == "" {
		if err := b.pool.QueryRow(ctx, `SELECT coalesce(string_agg(left(regexp_replace(query, '\s+', ' ', 'g'), 60), ' | '), '') FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`,
			locker.PgConn().PID()).Scan(&blocked); err != nil {
			kill()
			t.Fatal(err)
		}
		if blocked != "" {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the run ended (exit %d) while the table was locked, before SIGTERM; output:\n%s", exitStatus(err), out)
		case <-tick.C:
		case <-giveUp:
			kill()
			t.Fatalf("no backend of the run waited for the lock within 30 s; output:\n%s", out)
		}
	}
	blockedAfter := time.Since(lockedAt)
	answeredAtSignal := b.sim.Stats().Instances["1101000034"].Accepted

	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		kill()
		t.Fatal(err)
	}
	var code int
	select {
	case err := <-exited:
		code = exitStatus(err)
	case <-time.After(grace + 60*time.Second):
		kill()
		t.Fatalf("the run had not exited %s after SIGTERM; killed it. Output:\n%s", grace+60*time.Second, out)
	}
	elapsed := time.Since(sent)
	if code != 143 {
		t.Errorf("exit code %d, want 143; output:\n%s", code, out)
	}
	if elapsed > grace+2*time.Second {
		t.Errorf("exited %s after SIGTERM, want within shutdown_grace + 2 s (%s); output:\n%s",
			elapsed.Round(time.Millisecond), grace+2*time.Second, out)
	}
	// A statement the run left waiting on the lock would run once it is released, after the
	// run is gone: there must be none.
	var left int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`, locker.PgConn().PID()).Scan(&left); err != nil {
		t.Fatal(err)
	}
	release()
	if left > 0 {
		t.Errorf("%d statements of the exited run were still waiting on the lock", left)
	}

	rows := b.rows(t)
	done, failed := b.checkWritten(t, rows)
	leased, unwrittenRows, untouched := 0, 0, 0
	for _, r := range rows {
		if r.status != "pending" {
			continue
		}
		if r.attempts != 0 {
			t.Errorf("pending row %s spent %d attempts", r.phone, r.attempts)
		}
		answered := b.sim.Answers(r.phone) > 0
		switch {
		case r.leased:
			leased++
			if answered {
				unwrittenRows++
			}
		case answered:
			t.Errorf("row %s was answered, is not written and not leased: its answer is lost until the next run asks again", r.phone)
		default:
			untouched++
		}
	}
	sum := summaryLine(t, out)
	if sum.Stop != "interrupted" {
		t.Errorf("the summary says stop=%q, want interrupted", sum.Stop)
	}
	if sum.Unwritten != int64(unwrittenRows) {
		t.Errorf("the summary says %d answers could not be written; %d answered rows are not written", sum.Unwritten, unwrittenRows)
	}
	t.Logf("locked after 100 answers; the run waited on the lock %s later (%s); %d calls accepted at SIGTERM; "+
		"exit %d %s after SIGTERM (shutdown_grace %s)", blockedAfter.Round(time.Millisecond), blocked, answeredAtSignal, code,
		elapsed.Round(time.Millisecond), grace)
	t.Logf("table: %d done, %d failed (bad request data), %d pending still leased (%d of them answered, unwritten; "+
		"summary unwritten=%d, released=%d), %d pending untouched", done, failed, leased, unwrittenRows, sum.Unwritten,
		sum.Released, untouched)
}
