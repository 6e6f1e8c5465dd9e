package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/jackc/pgx/v5"
)

// env is what every scenario shares: the enrich binary, the PostgreSQL server, the databases
// made on it (dropped at the end), and a scratch directory.
type env struct {
	root   string // the module's root: where go build runs
	tmp    string
	bin    string
	server string // URL of the PostgreSQL server, database "postgres"
	quick  bool
	log    io.Writer

	mu  sync.Mutex
	dbs []string
}

// build compiles cmd/enrich as the release build does: static, no local paths.
func (e *env) build(ctx context.Context) error {
	e.bin = filepath.Join(e.tmp, "enrich")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", e.bin, "./cmd/enrich")
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/enrich: %v\n%s", err, out)
	}
	return nil
}

// connectServer opens a connection to the server's maintenance database.
func (e *env) connectServer(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, e.server)
}

// dbName is a fresh database name for what.
func dbName(what string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "enrich_bench_" + what + "_" + hex.EncodeToString(b[:])
}

// createDB makes a database (a copy of template when it is not empty) and returns its URL; it is
// dropped by dropDB or, at the latest, by dropAll.
func (e *env) createDB(ctx context.Context, what, template string) (name, url string, err error) {
	name = dbName(what)
	conn, err := e.connectServer(ctx)
	if err != nil {
		return "", "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return "", "", fmt.Errorf("create database %s: %w", name, err)
	}
	e.mu.Lock()
	e.dbs = append(e.dbs, name)
	e.mu.Unlock()
	url, err = pgcluster.WithDatabase(e.server, name)
	return name, url, err
}

// dropDB drops a database createDB made, with anything still connected to it.
func (e *env) dropDB(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := e.connectServer(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	e.mu.Lock()
	for i, n := range e.dbs {
		if n == name {
			e.dbs = append(e.dbs[:i], e.dbs[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	return nil
}

// dropAll drops every database still left, also after a failure or a signal.
func (e *env) dropAll() {
	e.mu.Lock()
	left := append([]string(nil), e.dbs...)
	e.mu.Unlock()
	for _, n := range left {
		if err := e.dropDB(n); err != nil {
			fmt.Fprintf(e.log, "bench: %v; drop it yourself\n", err)
		}
	}
}

// table is a migrated database holding rows pending phone numbers, all due.
type table struct {
	name, url string
	rows      int
}

// loadTable makes a database, migrates it with `enrich migrate`, inserts rows due numbers in
// one statement, and vacuums and analyzes it, so that every run starts from a settled table
// (autovacuum would otherwise visit it in the middle of a measurement).
func (e *env) loadTable(ctx context.Context, what string, rows int) (table, error) {
	name, url, err := e.createDB(ctx, what, "")
	if err != nil {
		return table{}, err
	}
	t := table{name: name, url: url, rows: rows}
	if err := e.migrate(ctx, url); err != nil {
		return t, err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return t, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// 11-digit numbers from 79000000001 on: valid, distinct, and in id order.
	if _, err := conn.Exec(ctx, `INSERT INTO contacts (phone_number, next_attempt_at)
		SELECT (79000000000 + g)::text, now() - interval '1 hour' FROM generate_series(1, $1::int) AS g`, rows); err != nil {
		return t, fmt.Errorf("load %d rows: %w", rows, err)
	}
	if _, err := conn.Exec(ctx, `VACUUM (ANALYZE) contacts`); err != nil {
		return t, fmt.Errorf("vacuum: %w", err)
	}
	return t, nil
}

// clone copies a loaded table's database (CREATE DATABASE ... TEMPLATE), so that runs of one
// scenario each start from the same rows without loading them again.
func (e *env) clone(ctx context.Context, t table) (table, error) {
	name, url, err := e.createDB(ctx, "run", t.name)
	return table{name: name, url: url, rows: t.rows}, err
}

// migrate runs `enrich migrate` against url.
func (e *env) migrate(ctx context.Context, url string) error {
	cmd := exec.CommandContext(ctx, e.bin, "migrate", "--log-format", "json")
	cmd.Env = childEnv(url)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("enrich migrate: %v\n%s", err, out)
	}
	return nil
}

// childEnv is the environment of an enrich process: ours without anything that would override
// its configuration file, and DATABASE_URL.
func childEnv(dbURL string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "DATABASE_URL" || k == "ENRICH_CONFIG" || strings.HasPrefix(k, "GREENAPI_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "DATABASE_URL="+dbURL)
}

// simServer serves a simulator on 127.0.0.1, and records the arrival of every getAvatar request
// when rec is set.
type simServer struct {
	sim *simulator.Simulator
	srv *http.Server
	url string
	rec *recorder
}

// serveSim starts a simulator for cfg; record makes it note every getAvatar arrival.
func serveSim(cfg simulator.Config, record bool) (*simServer, error) {
	sim, err := simulator.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &simServer{sim: sim, url: "http://" + ln.Addr().String()}
	var h http.Handler = sim
	if record {
		s.rec = &recorder{start: time.Now()}
		h = s.rec.wrap(sim)
	}
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *simServer) close() { _ = s.srv.Close() }

// instances is n simulator instances at rps.
func instances(n int, rps float64) []simulator.Instance {
	out := make([]simulator.Instance, n)
	for i := range out {
		out[i] = simulator.Instance{ID: fmt.Sprintf("%d", 1101000001+i), Token: fmt.Sprintf("bench-token-%d", i+1), RPS: rps}
	}
	return out
}

// recorder notes when each getAvatar request arrived and whether it was let through.
type recorder struct {
	start  time.Time
	mu     sync.Mutex
	events []arrival
}

type arrival struct {
	at       time.Duration // since start, when the request reached the handler
	instance string
	accepted bool // not a 429
}

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		path := req.URL.Path
		if !strings.Contains(path, "/getAvatar/") {
			h.ServeHTTP(w, req)
			return
		}
		at := time.Since(r.start)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, req)
		id, _, _ := strings.Cut(strings.TrimPrefix(path, "/waInstance"), "/")
		r.mu.Lock()
		r.events = append(r.events, arrival{at: at, instance: id, accepted: sw.status != http.StatusTooManyRequests})
		r.mu.Unlock()
	})
}

// arrivals returns the events sorted by arrival.
func (r *recorder) arrivals() []arrival {
	r.mu.Lock()
	ev := append([]arrival(nil), r.events...)
	r.mu.Unlock()
	sort.Slice(ev, func(i, j int) bool { return ev[i].at < ev[j].at })
	return ev
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// steady is the accepted getAvatar rate of the steady part of a run: the window from one second
// after the first accepted arrival to one second before the last (any instance), and within it,
// per instance, (accepted arrivals - 1) ÷ the time from its first to its last one, summed over
// instances. Counting intervals rather than arrivals keeps a 20-call window from being off by
// a whole call.
type steady struct {
	from, to time.Duration
	// rate is the summed per-instance accepted rate; perInstance by id.
	rate        float64
	perInstance map[string]float64
	// offered is every getAvatar arrival in the window (429s included) per second.
	offered float64
	// accepted and total count the whole run's getAvatar arrivals.
	accepted, total int
	first, last     time.Duration
}

func measureSteady(ev []arrival, trim time.Duration) steady {
	var s steady
	s.perInstance = map[string]float64{}
	var firstAcc, lastAcc time.Duration = -1, -1
	for _, a := range ev {
		s.total++
		if a.accepted {
			s.accepted++
			if firstAcc < 0 {
				firstAcc = a.at
			}
			lastAcc = a.at
		}
	}
	if firstAcc < 0 {
		return s
	}
	s.first, s.last = firstAcc, lastAcc
	s.from, s.to = firstAcc+trim, lastAcc-trim
	if s.to <= s.from {
		return s
	}
	type span struct {
		first, last time.Duration
		n           int
	}
	per := map[string]*span{}
	offered := 0
	for _, a := range ev {
		if a.at < s.from || a.at > s.to {
			continue
		}
		offered++
		if !a.accepted {
			continue
		}
		sp := per[a.instance]
		if sp == nil {
			sp = &span{first: a.at}
			per[a.instance] = sp
		}
		sp.last = a.at
		sp.n++
	}
	for id, sp := range per {
		if sp.n >= 2 && sp.last > sp.first {
			r := float64(sp.n-1) / (sp.last - sp.first).Seconds()
			s.perInstance[id] = r
			s.rate += r
		}
	}
	s.offered = float64(offered) / (s.to - s.from).Seconds()
	return s
}

// enrichConfig is what a scenario sets in the binary's TOML file.
type enrichConfig struct {
	apiURL      string
	instances   []simulator.Instance // id and token; rps below
	rps         float64
	workers     int // 0: the default
	batchSize   int // 0: the default
	maxDuration time.Duration
	// follow runs `enrich run --follow` (run.follow = true).
	follow bool
}

func (c enrichConfig) toml(dbURL string) string {
	var b strings.Builder
	// The scenarios measure GetAvatar's pacing and throughput, as their results before existence
	// was checked for every row did: CheckWhatsapp (a budget of its own, on by default) is off.
	fmt.Fprintf(&b, "[database]\nurl = %q\n\n[greenapi]\napi_url = %q\nconfirm_missing = false\n\n", dbURL, c.apiURL)
	for _, in := range c.instances {
		fmt.Fprintf(&b, "[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n\n", in.ID, in.Token, c.rps)
	}
	b.WriteString("[run]\n")
	if c.workers > 0 {
		fmt.Fprintf(&b, "workers = %d\n", c.workers)
	}
	if c.batchSize > 0 {
		fmt.Fprintf(&b, "batch_size = %d\n", c.batchSize)
	}
	if c.maxDuration > 0 {
		fmt.Fprintf(&b, "max_duration = %q\n", c.maxDuration.String())
	}
	if c.follow {
		b.WriteString("follow = true\n")
	}
	return b.String()
}

// summary is the "run finished" line's summary object.
type summary struct {
	Done        int64            `json:"done"`
	Failed      int64            `json:"failed"`
	Rescheduled int64            `json:"rescheduled"`
	Released    int64            `json:"released"`
	Claimed     int64            `json:"claimed"`
	Lost        int64            `json:"lost"`
	RateLimited int64            `json:"rate_limited"`
	Elapsed     string           `json:"elapsed"`
	RowsPerSec  float64          `json:"rows_per_second"`
	Stop        string           `json:"stop"`
	Calls       map[string]int64 `json:"calls"`
}

// finished is rows that reached a final or rescheduled state.
func (s summary) finished() int64 { return s.Done + s.Failed + s.Rescheduled }

// runResult is one `enrich run`: its summary and what the kernel says it cost.
type runResult struct {
	sum     summary
	elapsed time.Duration // the summary's own elapsed
	wall    time.Duration // from start to exit of the process
	maxRSS  int64         // bytes: VmHWM
	// rusageMaxRSS is ru_maxrss, which includes the bench's own RSS (see watchHWM).
	rusageMaxRSS int64
	cpu          time.Duration // user + system
	logFile      string
}

// run is an `enrich run` started by start.
type run struct {
	cmd     *exec.Cmd
	started time.Time
	logFile string
	logf    *os.File
	// hwm is the process's peak RSS in bytes, as last read from /proc; hwmDone stops the reader.
	hwm     atomic.Int64
	hwmDone chan struct{}
	hwmWG   sync.WaitGroup
}

// hwmEvery is how often a run's peak RSS is read from /proc.
const hwmEvery = 20 * time.Millisecond

// watchHWM reads VmHWM (the peak resident set of the process's own memory since its exec) until
// the run ends. The rusage's ru_maxrss would not do: the go runtime starts children with
// clone(CLONE_VM|CLONE_VFORK), so the kernel carries the parent's peak RSS at exec over into
// the child's maxrss, and every child of a bench that serves a big simulator would report the
// bench's RSS. VmHWM only grows, so the last reading is the peak up to hwmEvery before the exit.
func (r *run) watchHWM() {
	path := fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid)
	t := time.NewTicker(hwmEvery)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kib int64
					if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err == nil && kib*1024 > r.hwm.Load() {
						r.hwm.Store(kib * 1024)
					}
				}
			}
		}
		select {
		case <-r.hwmDone:
			return
		case <-t.C:
		}
	}
}

// start writes the configuration and starts `enrich run` on it; wrap, when not empty, is a
// command line the binary runs under (a profiler).
func (e *env) start(ctx context.Context, dbURL string, c enrichConfig, wrap ...string) (*run, error) {
	f, err := os.CreateTemp(e.tmp, "enrich-*.toml")
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(c.toml(dbURL)); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp(e.tmp, "enrich-*.log")
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), wrap...), e.bin, "run", "--config", f.Name(), "--log-format", "json")
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = childEnv(dbURL)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	r := &run{cmd: cmd, logFile: logf.Name(), logf: logf, hwmDone: make(chan struct{})}
	r.started = time.Now()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, err
	}
	r.hwmWG.Go(r.watchHWM)
	return r, nil
}

// wait waits for the run to exit 0 and reads its summary and rusage.
func (r *run) wait() (runResult, error) {
	err := r.cmd.Wait()
	wall := time.Since(r.started)
	close(r.hwmDone)
	r.hwmWG.Wait()
	_ = r.logf.Close()
	res := runResult{wall: wall, logFile: r.logFile, maxRSS: r.hwm.Load()}
	if ru, ok := r.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		res.rusageMaxRSS = ru.Maxrss * 1024 // KiB on Linux; see watchHWM
	}
	sum, ok, perr := readSummary(r.logFile)
	if err != nil || !ok || perr != nil {
		return res, fmt.Errorf("enrich run: %v (summary found: %v, %v)\n%s", err, ok, perr, tail(r.logFile, 20))
	}
	res.sum = sum
	res.elapsed, _ = time.ParseDuration(sum.Elapsed)
	return res, nil
}

// runEnrich starts a run and waits for it.
func (e *env) runEnrich(ctx context.Context, dbURL string, c enrichConfig) (runResult, error) {
	r, err := e.start(ctx, dbURL, c)
	if err != nil {
		return runResult{}, err
	}
	return r.wait()
}

// readSummary finds the "run finished" line in a JSON log.
func readSummary(path string) (summary, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return summary{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var found summary
	ok := false
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"run finished"`)) {
			continue
		}
		var l struct {
			Message string   `json:"message"`
			Summary *summary `json:"summary"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return summary{}, false, err
		}
		if l.Message == "run finished" && l.Summary != nil {
			found, ok = *l.Summary, true
		}
	}
	return found, ok, sc.Err()
}

// tail is the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// errSkip marks a figure that could not be measured here (no perf, a remote server).
var errSkip = errors.New("skipped")
