package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// These tests run the real binary against a database that misbehaves as production ones do: a
// PostgreSQL restarted under a run, and a PgBouncer in transaction mode between many processes
// and the server.

// runTimeout bounds every enrich process of these tests; a healthy one ends in well under it.
const runTimeout = 3 * time.Minute

// loopbackSim is a simulator served over loopback that tells when it has answered a number of
// getAvatar calls, so a test can act mid-run without sleeping.
type loopbackSim struct {
	sim *simulator.Simulator
	url string
	// answered is closed once `after` getAvatar calls have been answered (whatever the answer).
	answered chan struct{}
	calls    atomic.Int64
}

func newLoopbackSim(t *testing.T, cfg simulator.Config, after int) *loopbackSim {
	t.Helper()
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls := &loopbackSim{sim: sim, answered: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sim.ServeHTTP(w, r)
		if strings.Contains(strings.ToLower(r.URL.Path), "/getavatar/") && ls.calls.Add(1) == int64(after) {
			close(ls.answered)
		}
	}))
	t.Cleanup(srv.Close)
	ls.url = srv.URL
	return ls
}

// writeConfig writes a config file for one instance of the simulator at apiURL, with extra TOML
// ([database] and [run] tables) after it, and returns its path.
func writeConfig(t *testing.T, apiURL string, in simulator.Instance, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "enrich.toml")
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n\n%s\n",
		apiURL, in.ID, in.Token, in.RPS, extra)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// insertNumbers adds n pending phone numbers and returns them.
func insertNumbers(t *testing.T, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	targets := make([]string, n)
	for i := range targets {
		targets[i] = fmt.Sprintf("7902%07d", i)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO contacts (phone_number) SELECT unnest($1::text[])`, targets); err != nil {
		t.Fatal(err)
	}
	return targets
}

// proc is an enrich process started in the background.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *output
	done chan struct{} // closed when it has exited; err is then set
	err  error
	took time.Duration
}

func startProc(t *testing.T, name string, b procBundle, args ...string) *proc {
	t.Helper()
	cmd, out := b.command(t, args...)
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		p.took = time.Since(start)
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for p to exit, at most runTimeout, and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(runTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %s; output:\n%s", p.name, runTimeout, p.out)
	}
	return exitStatus(p.err)
}

// logLines are the JSON log lines of out whose message contains one of texts.
func logLines(out *output, texts ...string) []string {
	var lines []string
	for _, line := range strings.Split(out.String(), "\n") {
		var l struct{ Message string }
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		for _, text := range texts {
			if strings.Contains(l.Message, text) {
				lines = append(lines, line)
				break
			}
		}
	}
	return lines
}

// summary is the "run finished" line's summary of out.
func summary(t *testing.T, out *output) map[string]any {
	t.Helper()
	for _, line := range logLines(out, "run finished") {
		var l struct{ Summary map[string]any }
		if err := json.Unmarshal([]byte(line), &l); err == nil && l.Summary != nil {
			return l.Summary
		}
	}
	t.Fatalf("no run finished line with a summary in:\n%s", out)
	return nil
}

// dbFailures are the messages a run logs when a database call fails and it retries.
var dbFailures = []string{"claiming rows failed", "writing results failed", "renewing the leases"}

// dbMessages are what a run logs about a failing database, its return, and rows it lost.
var dbMessages = append([]string{"the database is back", "no longer this run's", "results not written"}, dbFailures...)

// checkRows asserts what every finished run must leave behind: no row pending or locked, every
// row as the simulator's truth says, and no number answered twice (which would mean a run asked
// again for a number whose answer it already had, or that two runs took the same row).
func checkRows(t *testing.T, pool *pgxpool.Pool, sim *simulator.Simulator, targets []string) {
	t.Helper()
	ctx := context.Background()
	var pending, locked int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'pending'),
		count(*) FILTER (WHERE locked_by IS NOT NULL OR locked_until IS NOT NULL) FROM contacts`).Scan(&pending, &locked); err != nil {
		t.Fatal(err)
	}
	if pending != 0 || locked != 0 {
		t.Errorf("%d rows still pending and %d locked after the runs; want none", pending, locked)
	}
	checked, wrong, err := verifyAgainstTruth(ctx, pool, "contacts", sim)
	if err != nil {
		t.Fatal(err)
	}
	if checked != len(targets) || len(wrong) > 0 {
		t.Errorf("%d finished rows of %d checked against the simulator's truth, %d wrong; first ones: %v",
			checked, len(targets), len(wrong), wrong[:min(len(wrong), 10)])
	}
	var twice []string
	for _, target := range targets {
		if n := sim.Answers(target); n > 1 {
			twice = append(twice, fmt.Sprintf("%s answered %d times", target, n))
		}
	}
	if len(twice) > 0 {
		t.Errorf("%d numbers answered more than once; first ones: %v", len(twice), twice[:min(len(twice), 10)])
	}
}

// TestPostgresRestartMidRun stops PostgreSQL for 15 s in the middle of a run, as a restart or a
// failover does: the run must wait it out (retry_for is 1 m), keep the answers it got meanwhile,
// write them when the server is back, and finish with exit 0, every row right and no number
// asked twice.
func TestPostgresRestartMidRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		rows        = 1500
		stopAfter   = 300 // getAvatar answers before the server goes down
		outage      = 15 * time.Second
		instanceRPS = 100
	)
	// A private server: stopping it must not touch the other tests' databases.
	c, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	admin, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE DATABASE enrich_restart`); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	dbURL, err := pgcluster.WithDatabase(c.URL, "enrich_restart")
	if err != nil {
		t.Fatal(err)
	}

	inst := simulator.Instance{ID: "1101000001", Token: "tok-restart", RPS: instanceRPS, Burst: 10}
	ls := newLoopbackSim(t, simulator.Config{Instances: []simulator.Instance{inst}, Seed: 11,
		Edition: simulator.EditionMixed, LatencyMedian: 20 * time.Millisecond, LatencyP99: 100 * time.Millisecond}, stopAfter)
	b := procBundle{dbURL: dbURL, config: writeConfig(t, ls.url, inst, "[run]\nworkers = 16\nbatch_size = 100\n")}

	migrate := startProc(t, "enrich migrate", b, "migrate", "--log-format", "json")
	if code := migrate.wait(t); code != 0 {
		t.Fatalf("enrich migrate: exit code %d; output:\n%s", code, migrate.out)
	}
	pool := pgtest.Connect(t, dbURL)
	targets := insertNumbers(t, pool, rows)

	run := startProc(t, "enrich run", b, "run", "--log-format", "json")
	select {
	case <-ls.answered:
	case <-run.done:
		t.Fatalf("the run ended (exit %d) before %d answers; output:\n%s", exitStatus(run.err), stopAfter, run.out)
	case <-time.After(runTimeout):
		t.Fatalf("fewer than %d getAvatar answers within %s; output:\n%s", stopAfter, runTimeout, run.out)
	}
	var failing []<-chan struct{}
	for _, msg := range dbFailures {
		failing = append(failing, run.out.seen(msg))
	}
	downAt := time.Now()
	if err := c.Down(ctx); err != nil {
		t.Fatal(err)
	}
	callsAtDown := ls.calls.Load()
	t.Logf("PostgreSQL stopped (pg_ctl stop -m fast) after %d getAvatar answers, in %s",
		callsAtDown, time.Since(downAt).Round(time.Millisecond))
	time.Sleep(outage) // the outage itself: the one deliberate wait
	noticed := false
	for _, ch := range failing {
		select {
		case <-ch:
			noticed = true
		default:
		}
	}
	callsInOutage := ls.calls.Load() - callsAtDown
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	t.Logf("PostgreSQL up again after %s down; %d getAvatar answers while it was down; the run had logged a failure: %v",
		upAt.Sub(downAt).Round(time.Millisecond), callsInOutage, noticed)

	code := run.wait(t)
	t.Logf("the run exited %d, %s after the server came back, %s in all", code,
		time.Since(upAt).Round(time.Millisecond), run.took.Round(time.Millisecond))
	for _, line := range logLines(run.out, dbMessages...) {
		t.Logf("run: %s", line)
	}
	sum := summary(t, run.out)
	t.Logf("summary: %v", sum)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", code, run.out)
	}
	if len(logLines(run.out, dbFailures...)) == 0 || len(logLines(run.out, "the database is back")) == 0 {
		t.Errorf("the run did not log both a database failure and the database's return; output:\n%s", run.out)
	}
	checkRows(t, pool, ls.sim, targets)
	if st := ls.sim.Stats(); st.Invalid != 0 {
		t.Errorf("the simulator saw %d invalid requests", st.Invalid)
	}
}

// TestThroughPgBouncer runs enrich through a real PgBouncer in transaction mode, whose few server
// connections every client shares one transaction at a time: four migrations at once, then two
// runs at once, each with its own Green API instance.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const migrators = 4

	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files: %v, %v", files, err)
	}

	// migrateAll runs `enrich migrate` in n processes at once and returns them once all exited.
	migrateAll := func(t *testing.T, b procBundle, n int) []*proc {
		t.Helper()
		var procs []*proc
		for i := range n {
			procs = append(procs, startProc(t, fmt.Sprintf("enrich migrate #%d", i+1), b, "migrate", "--log-format", "json"))
		}
		for _, p := range procs {
			p.wait(t)
		}
		return procs
	}

	t.Run("PoolerTransaction", func(t *testing.T) {
		t.Parallel()
		const (
			rows        = 1000
			instanceRPS = 100
			serverConns = 2
		)
		dbURL := pgtest.NewEmptyDB(t)
		bouncerURL := pgbouncer.Start(t, dbURL, pgbouncer.Options{Mode: pgbouncer.ModeTransaction, PoolSize: serverConns})
		insts := []simulator.Instance{
			{ID: "1101000001", Token: "tok-bouncer-1", RPS: instanceRPS, Burst: 10},
			{ID: "1101000002", Token: "tok-bouncer-2", RPS: instanceRPS, Burst: 10},
		}
		ls := newLoopbackSim(t, simulator.Config{Instances: insts, Seed: 12, Edition: simulator.EditionMixed,
			LatencyMedian: 20 * time.Millisecond, LatencyP99: 100 * time.Millisecond}, 1)
		const dbToml = "[database]\npooler = \"transaction\"\n\n[run]\nworkers = 16\nbatch_size = 100\n"
		bundles := make([]procBundle, len(insts))
		for i, in := range insts {
			bundles[i] = procBundle{dbURL: bouncerURL, config: writeConfig(t, ls.url, in, dbToml)}
		}

		start := time.Now()
		applied := 0
		for _, p := range migrateAll(t, bundles[0], migrators) {
			if code := exitStatus(p.err); code != 0 {
				t.Fatalf("%s: exit code %d; output:\n%s", p.name, code, p.out)
			}
			applied += strings.Count(p.out.String(), "applied ")
		}
		t.Logf("%d concurrent enrich migrate through pgbouncer (transaction mode, %d server connections): all exit 0 in %s; %d files applied",
			migrators, serverConns, time.Since(start).Round(time.Millisecond), applied)
		pool := pgtest.Connect(t, dbURL)
		var versions, records int
		if err := pool.QueryRow(ctx, `SELECT count(DISTINCT version), count(*) FROM enrich_schema_migrations
			WHERE table_name = 'contacts'`).Scan(&versions, &records); err != nil {
			t.Fatal(err)
		}
		if versions != len(files) || records != len(files) || applied != len(files) {
			t.Fatalf("%d migration files: %d versions recorded in %d rows, %d applied by the processes; want each once",
				len(files), versions, records, applied)
		}

		targets := insertNumbers(t, pool, rows)
		start = time.Now()
		runs := make([]*proc, len(bundles))
		for i, b := range bundles {
			runs[i] = startProc(t, fmt.Sprintf("enrich run #%d (instance %s)", i+1, insts[i].ID), b, "run", "--log-format", "json")
		}
		var total float64
		for _, p := range runs {
			code := p.wait(t)
			sum := summary(t, p.out)
			t.Logf("%s: exit %d in %s; summary: %v", p.name, code, p.took.Round(time.Millisecond), sum)
			for _, line := range logLines(p.out, dbMessages...) {
				t.Logf("%s: %s", p.name, line)
			}
			if code != 0 {
				t.Errorf("%s: exit code %d, want 0; output:\n%s", p.name, code, p.out)
			}
			done, _ := sum["done"].(float64)
			failed, _ := sum["failed"].(float64)
			total += done + failed
		}
		t.Logf("two concurrent runs through pgbouncer finished %d rows in %s; the simulator saw %d requests",
			int(total), time.Since(start).Round(time.Millisecond), ls.sim.Stats().Requests)
		if int(total) != rows {
			t.Errorf("the runs' summaries count %d rows done or failed, want %d", int(total), rows)
		}
		checkRows(t, pool, ls.sim, targets)
	})

	// The control: the same migrations through the same kind of PgBouncer without
	// database.pooler fail, which proves the setting matters. With one server connection it is
	// deterministic: the first process prepares its statements there under pgx's stmtcache_
	// names, and every later one, whose own cache is empty, prepares the same names on the same
	// server connection.
	t.Run("WithoutPoolerMigrateFails", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewEmptyDB(t)
		bouncerURL := pgbouncer.Start(t, dbURL, pgbouncer.Options{Mode: pgbouncer.ModeTransaction, PoolSize: 1})
		inst := simulator.Instance{ID: "1101000001", Token: "tok-unused", RPS: 10}
		b := procBundle{dbURL: bouncerURL, config: writeConfig(t, "http://127.0.0.1:1", inst, "")}
		var ok, prepared int
		var example string
		for _, p := range migrateAll(t, b, migrators) {
			switch code, out := exitStatus(p.err), p.out.String(); {
			case code == 0:
				ok++
			case code == 3 && strings.Contains(out, "42P05") && strings.Contains(out, "stmtcache_") && strings.Contains(out, "already exists"):
				prepared++
				example = strings.TrimSpace(out)
			default:
				t.Errorf("%s: exit code %d; want 0, or 3 with 42P05 (prepared statement already exists); output:\n%s", p.name, code, out)
			}
		}
		t.Logf("without database.pooler: %d of %d concurrent enrich migrate exit 0, %d exit 3 with 42P05, e.g.:\n%s",
			ok, migrators, prepared, example)
		if ok != 1 || prepared != migrators-1 {
			t.Errorf("%d succeeded and %d failed with 42P05; want 1 and %d", ok, prepared, migrators-1)
		}
	})
}
