// Command bench measures enrich end to end, in one run: the real binary (built here from
// ./cmd/enrich as the release build is) against the Green API simulator served over loopback
// by this process, and a real PostgreSQL (DATABASE_URL, else 127.0.0.1:5432, else a throw-away
// cluster). It prints a table of figures with their targets and writes them as JSON.
//
//	go run ./bench                 # make bench: full sizes, several minutes
//	go run ./bench --quick         # make bench-quick: small sizes, under a minute
//	go run ./bench --only claim    # one scenario while iterating
//
// Each scenario makes its own databases (enrich_bench_*) and drops them at the end, also on
// failure or Ctrl-C. See bench/README.md for what each figure means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/jackc/pgx/v5"
)

// scenarioNames in the order they run.
var scenarioNames = []string{"budget", "shared", "mingap", "pods", "ceiling", "memory", "claim", "naive", "plan", "follow", "source"}

func main() {
	os.Exit(mainCode())
}

// details collects what scenarios measured beyond their figures, for the JSON.
type details struct {
	mu sync.Mutex
	m  map[string]any
}

func (d *details) set(k string, v any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]any{}
	}
	d.m[k] = v
}

func mainCode() int {
	quick := flag.Bool("quick", false, "small sizes: the whole table in under a minute")
	out := flag.String("out", "", "write the figures, the machine and per-run details as JSON to this file")
	only := flag.String("only", "", "comma-separated scenarios to run (default all): "+strings.Join(scenarioNames, ", "))
	runs := flag.Int("runs", 0, "runs of the cheap scenarios (ceiling, naive), each figure their median (default 5 and 3; --quick: 3 and 1)")
	profile := flag.String("profile", "", "directory for perf reports of one extra ceiling run (needs perf; root or perf_event_paranoid <= 0 for -a)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		known := false
		for _, n := range scenarioNames {
			known = known || n == s
		}
		if !known {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q (want %s)\n", s, strings.Join(scenarioNames, ", "))
			return 2
		}
		want[s] = true
	}
	ceilingRuns, naiveRuns := 5, 3
	if *quick {
		ceilingRuns, naiveRuns = 3, 1
	}
	if *runs > 0 {
		ceilingRuns, naiveRuns = *runs, *runs
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "enrich-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	e := &env{root: root, tmp: tmp, quick: *quick, log: os.Stderr}
	server, stopPG, err := pgcluster.Find(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer stopPG()
	e.server = server
	defer e.dropAll()
	fmt.Fprintf(e.log, "== PostgreSQL at %s\n", pgcluster.Redact(server))
	if err := e.build(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	mode := "full"
	if *quick {
		mode = "quick"
	}
	res := Results{Mode: mode, Machine: machine(ctx, e), Scenarios: map[string]string{}, Loads: map[string]float64{}, Errors: map[string]string{}}
	fmt.Fprintf(e.log, "== %s bench of %s: %d cores, %s, PostgreSQL %s, load %.2f\n", mode, res.Machine.Commit,
		res.Machine.Cores, res.Machine.Go, res.Machine.PostgreSQL, res.Machine.LoadAvg)
	d := &details{}
	scenarios := map[string]func() ([]Figure, error){
		"budget":  func() ([]Figure, error) { return e.budget(ctx, d) },
		"shared":  func() ([]Figure, error) { return e.shared(ctx, d) },
		"mingap":  func() ([]Figure, error) { return e.mingap(ctx, d) },
		"pods":    func() ([]Figure, error) { return e.pods(ctx, d) },
		"ceiling": func() ([]Figure, error) { return e.ceiling(ctx, d, ceilingRuns, *profile) },
		"memory":  func() ([]Figure, error) { return e.memory(ctx, d) },
		"claim":   func() ([]Figure, error) { return e.claimCost(ctx, d) },
		"naive":   func() ([]Figure, error) { return e.naive(ctx, d, naiveRuns) },
		"plan":    func() ([]Figure, error) { return e.plan(ctx, d) },
		"follow":  func() ([]Figure, error) { return e.follow(ctx, d) },
		"source":  func() ([]Figure, error) { return e.source(ctx, d) },
	}
	for _, name := range scenarioNames {
		if len(want) > 0 && !want[name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		res.Loads[name] = loadAvg()
		fmt.Fprintf(e.log, "== %s (load %.2f)\n", name, res.Loads[name])
		t0 := time.Now()
		figs, err := scenarios[name]()
		took := time.Since(t0).Round(100 * time.Millisecond)
		res.Scenarios[name] = took.String()
		res.Figures = append(res.Figures, figs...)
		if err != nil {
			res.Errors[name] = err.Error()
			fmt.Fprintf(e.log, "== %s FAILED after %v: %v\n", name, took, err)
			continue
		}
		fmt.Fprintf(e.log, "== %s done in %v\n", name, took)
	}
	res.Duration = time.Since(began).Round(100 * time.Millisecond).String()
	d.mu.Lock()
	res.Details = d.m
	d.mu.Unlock()

	fmt.Println()
	printTable(os.Stdout, res.Figures)
	fmt.Println()
	fmt.Println("notes:")
	printNotes(os.Stdout, res.Figures)
	fmt.Printf("\n%s run in %s on %d cores (%s), %s, PostgreSQL %s, commit %s\n", mode, res.Duration, res.Machine.Cores,
		res.Machine.CPU, res.Machine.Go, res.Machine.PostgreSQL, res.Machine.Commit)
	if *out != "" {
		if err := writeJSON(*out, res); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		fmt.Printf("figures written to %s\n", *out)
	}
	if len(res.Errors) > 0 || ctx.Err() != nil {
		for n, err := range res.Errors {
			fmt.Fprintf(os.Stderr, "bench: %s failed: %s\n", n, err)
		}
		return 1
	}
	return 0
}

// moduleRoot is the directory of the go.mod the bench belongs to.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the bench from inside the enrich module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

// machine describes where the figures come from.
func machine(ctx context.Context, e *env) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadAvg: loadAvg(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kib); err == nil {
			m.MemoryGiB = float64(int(kib/(1<<20)*10)) / 10
		}
	}
	if conn, err := pgx.Connect(ctx, e.server); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PostgreSQL)
		_ = conn.QueryRow(ctx, "SHOW autovacuum").Scan(&m.Autovacuum)
		conn.Close(ctx)
	}
	m.Commit = "unknown"
	if out, err := exec.Command("git", "-C", e.root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		// Changes outside bench/ and the Makefile change what is measured.
		st, err := exec.Command("git", "-C", e.root, "status", "--porcelain", "--", ".", ":(exclude)bench", ":(exclude)Makefile").Output()
		if err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.Commit += "+changes"
		}
	}
	return m
}
