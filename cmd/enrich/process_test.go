package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// These tests run the real binary as a subprocess, as cron or Kubernetes would: signals and
// exit codes are only honest there.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// removeBinary deletes the directory enrichBinary built into, if it built.
func removeBinary() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// enrichBinary builds cmd/enrich once per test process.
func enrichBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "enrich-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "enrich")
		// The release build's flags (Makefile: CGO_ENABLED=0, -trimpath), so the packages
		// compiled here serve make build in TestVersionFromMakeBuild and deploy's tests from
		// the cache: one compile of the dependencies, not three.
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// procBundle is a database with rows, a simulator, and a config file pointing at both.
type procBundle struct {
	pool    *pgxpool.Pool
	dbURL   string
	sim     *simulator.Simulator
	config  string
	targets []string
	// arrived is closed once `after` requests have reached the simulator, answered once it
	// has answered that many.
	arrived, answered chan struct{}
}

// seedProc makes a database with rows pending numbers (prefix, then 7 digits) and a simulator
// serving inst: what every subprocess test starts from.
func seedProc(t *testing.T, rows int, prefix string, inst simulator.Instance, simCfg simulator.Config) procBundle {
	t.Helper()
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	var targets []string
	for i := range rows {
		targets = append(targets, fmt.Sprintf("%s%07d", prefix, i))
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO contacts (phone_number) SELECT unnest($1::text[])`, targets); err != nil {
		t.Fatal(err)
	}
	simCfg.Instances = []simulator.Instance{inst}
	sim, err := simulator.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	return procBundle{pool: pool, dbURL: dbURL, sim: sim, targets: targets}
}

func setupProc(t *testing.T, rows int, inst simulator.Instance, simCfg simulator.Config, runToml string, after int) procBundle {
	t.Helper()
	b := seedProc(t, rows, "7901", inst, simCfg)
	b.arrived, b.answered = make(chan struct{}), make(chan struct{})
	var in, done atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if in.Add(1) == int64(after) {
			close(b.arrived)
		}
		b.sim.ServeHTTP(w, r)
		if done.Add(1) == int64(after) {
			close(b.answered)
		}
	}))
	t.Cleanup(srv.Close)
	b.config = filepath.Join(t.TempDir(), "enrich.toml")
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n\n%s\n",
		srv.URL, inst.ID, inst.Token, inst.RPS, runToml)
	if err := os.WriteFile(b.config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b procBundle) command(t *testing.T, args ...string) (*exec.Cmd, *output) {
	t.Helper()
	cmd := exec.Command(enrichBinary(t), args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+b.dbURL, "ENRICH_CONFIG="+b.config)
	out := &output{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

// output collects a subprocess's output and tells when a text shows up in it, so a test waits
// on what the process says instead of sleeping.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	watches map[string]chan struct{}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.buf.Write(p)
	for text, ch := range o.watches {
		if bytes.Contains(o.buf.Bytes(), []byte(text)) {
			close(ch)
			delete(o.watches, text)
		}
	}
	return n, err
}

// seen is closed once text has been written.
func (o *output) seen(text string) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	ch := make(chan struct{})
	if bytes.Contains(o.buf.Bytes(), []byte(text)) {
		close(ch)
		return ch
	}
	if o.watches == nil {
		o.watches = map[string]chan struct{}{}
	}
	o.watches[text] = ch
	return ch
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (b procBundle) count(t *testing.T, where string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM contacts WHERE "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestSIGTERMMidBatch stops a run with SIGTERM while calls are in flight: it must exit 143
// within shutdown_grace + 2 s, with every answer the simulator gave in the table and no row
// left locked.
func TestSIGTERMMidBatch(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	b := setupProc(t, 2000,
		simulator.Instance{ID: "1101000001", Token: "tok-sigterm", RPS: 100, Burst: 10},
		simulator.Config{Seed: 3, Edition: simulator.EditionMixed, LatencyMedian: 30 * time.Millisecond, LatencyP99: 400 * time.Millisecond},
		fmt.Sprintf("[run]\nworkers = 16\nbatch_size = 100\nshutdown_grace = %q\n", grace), 150)
	cmd, out := b.command(t, "run", "--log-format", "json")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.answered:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the simulator saw too few requests in 60 s; output:\n%s", out)
	}
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	elapsed := time.Since(sent)
	if code := exitStatus(err); code != 143 {
		t.Fatalf("exit code %d, want 143; output:\n%s", code, out)
	}
	if elapsed > grace+2*time.Second {
		t.Fatalf("exited %s after SIGTERM, want within shutdown_grace + 2 s (%s)", elapsed, grace+2*time.Second)
	}
	if n := b.count(t, "locked_by IS NOT NULL"); n != 0 {
		t.Fatalf("%d rows left locked", n)
	}
	answered, missing := 0, 0
	rows, err := b.pool.Query(context.Background(), `SELECT phone_number, status FROM contacts`)
	if err != nil {
		t.Fatal(err)
	}
	var phone, status string
	if _, err := pgx.ForEachRow(rows, []any{&phone, &status}, func() error {
		if b.sim.Answers(phone) > 0 {
			answered++
			if status == "pending" {
				missing++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if answered == 0 || missing != 0 {
		t.Fatalf("%d of %d answers the simulator gave are not in the table; output:\n%s", missing, answered, out)
	}
	if n := b.count(t, "status = 'pending' AND attempts <> 0"); n != 0 {
		t.Fatalf("%d pending rows spent attempts", n)
	}
	if !strings.Contains(out.String(), `"stop":"interrupted"`) {
		t.Fatalf("no summary line with stop=interrupted in:\n%s", out)
	}
	// A signal is a normal stop: said once, at info, and nothing is logged as an error.
	if strings.Contains(out.String(), `"level":"error"`) {
		t.Fatalf("a stop by SIGTERM logged an error line:\n%s", out)
	}
	stopped := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `"message":"stopped by SIGTERM: answers received are written, the rest released"`) &&
			strings.Contains(line, `"level":"info"`) {
			stopped++
		}
	}
	if stopped != 1 {
		t.Fatalf("%d info lines saying SIGTERM stopped the run, want 1:\n%s", stopped, out)
	}
	t.Logf("SIGTERM → exit 143 after %s; %d answers written, %d rows left pending", elapsed.Round(time.Millisecond),
		answered, b.count(t, "status = 'pending'"))
}

// TestNotAuthorizedExits2 runs against an instance whose WhatsApp account is not linked: the
// run exits 2 naming the instance and the remedy, and the rows are untouched.
func TestNotAuthorizedExits2(t *testing.T) {
	t.Parallel()
	for _, newer := range []bool{false, true} {
		t.Run(fmt.Sprintf("newer_wording=%v", newer), func(t *testing.T) {
			t.Parallel()
			b := setupProc(t, 50,
				simulator.Instance{ID: "1101000077", Token: "tok-notauth", RPS: 10, State: simulator.StateNotAuthorized, NewerWording: newer},
				simulator.Config{}, "", 1)
			cmd, out := b.command(t, "run", "--log-format", "json")
			err := cmd.Run()
			if code := exitStatus(err); code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			if !strings.Contains(out.String(), "1101000077") || !strings.Contains(out.String(), "QR code") {
				t.Fatalf("the error does not name the instance and the remedy:\n%s", out)
			}
			if strings.Contains(out.String(), "tok-notauth") {
				t.Fatalf("the token appears in the output:\n%s", out)
			}
			if n := b.count(t, "status = 'pending' AND attempts = 0 AND locked_by IS NULL"); n != 50 {
				t.Fatalf("untouched pending rows = %d, want 50", n)
			}
		})
	}
}

// TestSecondSignalExitsAtOnce: the first SIGTERM waits up to shutdown_grace for calls in
// flight; a second one does not wait: it cuts the calls, gives every row back and prints the
// summary within 5 s (issue 13, defect 10: it exited at once, with no summary and the rows left
// leased for the whole lease).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	b := setupProc(t, 100,
		simulator.Instance{ID: "1101000001", Token: "tok-twice", RPS: 100, Burst: 10},
		// Every request hangs until the client gives up (--timeout): calls stay in flight. The
		// first is the pre-flight state check.
		simulator.Config{HangRate: 1},
		"[run]\nworkers = 4\nshutdown_grace = \"60s\"\nlease = \"1m\"\n", 5)
	cmd, out := b.command(t, "run", "--log-format", "json", "--timeout", "30s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.arrived: // four GetAvatar calls are in flight
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("no calls reached the simulator in 60 s; output:\n%s", out)
	}
	stopping := out.seen(`"why":"interrupted"`)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopping: // the first signal was taken: the run waits for its calls
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("no stopping line after the first SIGTERM; output:\n%s", out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	err := cmd.Wait()
	if code := exitStatus(err); code != 143 {
		t.Fatalf("exit code %d, want 143; output:\n%s", code, out)
	}
	elapsed := time.Since(sent)
	if elapsed > 5*time.Second {
		t.Fatalf("the second SIGTERM took %s to end the process; shutdown_grace is 60 s", elapsed)
	}
	if n := b.count(t, "status <> 'pending' OR attempts <> 0"); n != 0 {
		t.Fatalf("%d rows changed by a run that was stopped before any answer", n)
	}
	if n := b.count(t, "locked_by IS NOT NULL"); n != 0 {
		t.Fatalf("%d rows left leased: a second signal gives them back", n)
	}
	for _, want := range []string{`"message":"told to hurry: cutting the calls in flight now`, `"message":"run finished"`, `"stop":"interrupted"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %s line after the second SIGTERM:\n%s", want, out)
		}
	}
	t.Logf("second SIGTERM → exit 143 after %s, every row given back, summary printed", elapsed.Round(time.Millisecond))
}
