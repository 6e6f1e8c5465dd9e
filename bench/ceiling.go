package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// The ceiling configuration: no rate limit anywhere and no latency, so that only enrich, the
// simulator, PostgreSQL and the machine set the pace. Workers and batch_size are the defaults,
// which are also the fastest tried on 2 cores (32/500 is as fast; 64 workers with batches of
// 1000, the "big" variant measured beside it, is about half as fast).
const (
	ceilingWorkers      = 16
	ceilingBatchSize    = 200
	ceilingBigWorkers   = 64
	ceilingBigBatchSize = 1000
	ceilingRPS          = 1e6
)

func ceilingSim() simulator.Config {
	return simulator.Config{Seed: 1, Instances: instances(1, -1)}
}

func ceilingConfig(apiURL string, in []simulator.Instance, workers, batchSize int) enrichConfig {
	return enrichConfig{apiURL: apiURL, instances: in, rps: ceilingRPS, workers: workers, batchSize: batchSize}
}

// ceilingRun is one end-to-end run at the ceiling.
type ceilingRun struct {
	Rows        int64   `json:"rows"`
	WallS       float64 `json:"wall_s"`
	RowsPerSec  float64 `json:"rows_per_s"`
	SummaryRate float64 `json:"summary_rows_per_s"`
	// CPU per row: the enrich process (its rusage), this process (the simulator), the local
	// PostgreSQL's processes, and the rest of the machine meanwhile.
	EnrichCPU float64 `json:"enrich_cpu_us_per_row"`
	SimCPU    float64 `json:"simulator_cpu_us_per_row"`
	PgCPU     float64 `json:"postgres_cpu_us_per_row"`
	OtherCPU  float64 `json:"other_cpu_us_per_row"`
	MaxRSSMiB float64 `json:"max_rss_mib"`
	// RusageMaxRSSMiB is ru_maxrss: not enrich's own (it carries the bench's RSS over, see
	// watchHWM), kept to show the difference.
	RusageMaxRSSMiB float64 `json:"rusage_maxrss_mib"`
	Stop            string  `json:"stop"`
}

// runCeiling runs enrich at the ceiling over t with workers and batchSize (0: the ceiling's).
func (e *env) runCeiling(ctx context.Context, t table, workers, batchSize int, wrap ...string) (ceilingRun, error) {
	if workers == 0 {
		workers, batchSize = ceilingWorkers, ceilingBatchSize
	}
	ss, err := serveSim(ceilingSim(), false)
	if err != nil {
		return ceilingRun{}, err
	}
	defer ss.close()
	c0 := readCPU()
	r, err := e.start(ctx, t.url, ceilingConfig(ss.url, ss.sim.Config().Instances, workers, batchSize), wrap...)
	if err != nil {
		return ceilingRun{}, err
	}
	rr, err := r.wait()
	c1 := readCPU()
	if err != nil {
		return ceilingRun{}, err
	}
	n := rr.sum.finished()
	if n == 0 {
		return ceilingRun{}, fmt.Errorf("ceiling run finished no row\n%s", tail(rr.logFile, 20))
	}
	d := c0.to(c1)
	per := func(x time.Duration) float64 { return float64(x.Microseconds()) / float64(n) }
	return ceilingRun{
		Rows: n, WallS: rr.wall.Seconds(), RowsPerSec: float64(n) / rr.wall.Seconds(),
		SummaryRate: float64(n) / rr.elapsed.Seconds(),
		EnrichCPU:   per(rr.cpu), SimCPU: per(d.self), PgCPU: per(d.pg), OtherCPU: per(d.other(rr.cpu)),
		MaxRSSMiB: mib(rr.maxRSS), RusageMaxRSSMiB: mib(rr.rusageMaxRSS), Stop: rr.sum.Stop,
	}, nil
}

// baselineRun is the bare net/http loopback baseline: what the machine's HTTP stack alone allows.
type baselineRun struct {
	Requests  int     `json:"requests"`
	ReqPerSec float64 `json:"req_per_s"`
	CPU       float64 `json:"cpu_us_per_req"`
}

// baselineHTTP sends n POSTs of a GetAvatar body from conc goroutines over loopback to a
// handler that only writes a constant answer, both in this process: greenapi/simulator's
// BenchmarkLoopbackBaseline, at enrich's concurrency and row count.
func baselineHTTP(ctx context.Context, n, conc int) (baselineRun, error) {
	answer := []byte(`{"urlAvatar":"","available":true}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return baselineRun{}, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 2 * conc, MaxIdleConnsPerHost: 2 * conc, IdleConnTimeout: time.Minute, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + "/waInstance1101000001/getAvatar/tok"
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	c0 := readCPU()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			body := make([]byte, 0, 64)
			for i := next.Add(1); i <= int64(n) && ctx.Err() == nil; i = next.Add(1) {
				body = append(body[:0], `{"chatId":"`...)
				body = strconv.AppendInt(body, 79000000000+i, 10)
				body = append(body, `@c.us"}`...)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := c0.to(readCPU()).self
	if err := ctx.Err(); err != nil {
		return baselineRun{}, err
	}
	if f := failed.Load(); f > 0 {
		return baselineRun{}, fmt.Errorf("baseline: %d of %d requests failed", f, n)
	}
	return baselineRun{Requests: n, ReqPerSec: float64(n) / elapsed.Seconds(), CPU: float64(cpu.Microseconds()) / float64(n)}, nil
}

// ceiling: 200,000 rows with no limit and no latency, runs times, each beside a baseline run.
func (e *env) ceiling(ctx context.Context, d *details, runs int, profileDir string) ([]Figure, error) {
	rows := 200_000
	if e.quick {
		rows = 15_000
	}
	fmt.Fprintf(e.log, "   %d rows, %d runs, each beside a bare net/http run of as many requests\n", rows, runs)
	tpl, err := e.loadTable(ctx, "ceiling", rows)
	if err != nil {
		return nil, err
	}
	defer e.dropDB(tpl.name)
	var cr, big []ceilingRun
	var br []baselineRun
	var rate, base, ratio, cpu, sim, pg, other, rss, bigRate []float64
	bigRuns := min(runs, 3)
	if e.quick {
		bigRuns = 1
	}
	for i := range runs {
		b, err := baselineHTTP(ctx, rows, ceilingWorkers)
		if err != nil {
			return nil, err
		}
		t, err := e.clone(ctx, tpl)
		if err != nil {
			return nil, err
		}
		c, err := e.runCeiling(ctx, t, 0, 0)
		_ = e.dropDB(t.name)
		if err != nil {
			return nil, err
		}
		if c.Rows != int64(rows) {
			return nil, fmt.Errorf("ceiling run %d finished %d rows of %d (%s)", i+1, c.Rows, rows, c.Stop)
		}
		fmt.Fprintf(e.log, "   run %d: enrich %.0f rows/s (%.1f µs CPU/row), baseline %.0f req/s\n", i+1, c.RowsPerSec, c.EnrichCPU, b.ReqPerSec)
		cr, br = append(cr, c), append(br, b)
		rate, base, ratio = append(rate, c.RowsPerSec), append(base, b.ReqPerSec), append(ratio, c.RowsPerSec/b.ReqPerSec)
		cpu, sim, pg, other = append(cpu, c.EnrichCPU), append(sim, c.SimCPU), append(pg, c.PgCPU), append(other, c.OtherCPU)
		rss = append(rss, c.MaxRSSMiB)
		if i >= bigRuns {
			continue
		}
		if t, err = e.clone(ctx, tpl); err != nil {
			return nil, err
		}
		c, err = e.runCeiling(ctx, t, ceilingBigWorkers, ceilingBigBatchSize)
		_ = e.dropDB(t.name)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(e.log, "   run %d: enrich with %d workers, batch_size %d: %.0f rows/s\n", i+1, ceilingBigWorkers, ceilingBigBatchSize, c.RowsPerSec)
		big, bigRate = append(big, c), append(bigRate, c.RowsPerSec)
	}
	d.set("ceiling", map[string]any{"rows": rows, "workers": ceilingWorkers, "batch_size": ceilingBatchSize, "runs": cr, "baseline": br,
		"big": map[string]any{"workers": ceilingBigWorkers, "batch_size": ceilingBigBatchSize, "runs": big}})
	label := fmt.Sprintf("%d rows", rows)
	baseCPU := make([]float64, len(br))
	for i, b := range br {
		baseCPU[i] = b.CPU
	}
	figs := []Figure{
		{Scenario: "ceiling", Name: label + ": enrich rows/s end to end", Value: median(rate), Unit: "rows/s", N: runs, Runs: rounded(rate),
			Note: fmt.Sprintf("process start to exit; %d workers, batch_size %d, one unlimited instance, no latency", ceilingWorkers, ceilingBatchSize)},
		{Scenario: "ceiling", Name: "bare net/http loopback baseline", Value: median(base), Unit: "req/s", N: runs, Runs: rounded(base),
			Note: fmt.Sprintf("%d POSTs from %d goroutines to a constant handler, client and server in the bench process; %.1f µs CPU/req", rows, ceilingWorkers, median(baseCPU))},
		Figure{Scenario: "ceiling", Name: "enrich ÷ baseline", Value: median(ratio), Unit: "ratio", N: runs, Runs: rounded(ratio),
			Note: "median of the per-run ratios (each enrich run beside its own baseline run)"}.target(">=", 0.7),
		{Scenario: "ceiling", Name: "enrich CPU per row", Value: median(cpu), Unit: "µs/row", N: runs, Runs: rounded(cpu),
			Note: fmt.Sprintf("user+system of the enrich process ÷ rows; meanwhile the simulator took %.1f, PostgreSQL %.1f and the rest of the machine %.1f µs/row",
				median(sim), median(pg), median(other))},
		{Scenario: "ceiling", Name: label + ": enrich peak RSS", Value: median(rss), Unit: "MiB", N: runs, Runs: rounded(rss)},
		{Scenario: "ceiling", Name: fmt.Sprintf("%s: enrich with %d workers, batch_size %d", label, ceilingBigWorkers, ceilingBigBatchSize),
			Value: median(bigRate), Unit: "rows/s", N: bigRuns, Runs: rounded(bigRate), Note: "for comparison with the defaults above, in the same iterations"},
	}
	if profileDir != "" {
		if err := e.profileCeiling(ctx, tpl, profileDir); err != nil {
			fmt.Fprintf(e.log, "   profile: %v\n", err)
		}
	}
	return figs, nil
}

// profileCeiling runs one more ceiling run (not counted) under `perf record -a -g`, and writes
// reports: CPU by process, and enrich's, PostgreSQL's and the simulator's hottest functions.
func (e *env) profileCeiling(ctx context.Context, tpl table, dir string) error {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return fmt.Errorf("no perf on PATH (apt-get install linux-perf): %w", errSkip)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data := filepath.Join(e.tmp, "ceiling.perf.data")
	t, err := e.clone(ctx, tpl)
	if err != nil {
		return err
	}
	defer e.dropDB(t.name)
	fmt.Fprintf(e.log, "   profile: one more run under perf record -a -g\n")
	c, err := e.runCeiling(ctx, t, 0, 0, perf, "record", "-q", "-a", "-g", "-F", "499", "-o", data, "--")
	if err != nil {
		return err
	}
	header := fmt.Sprintf("# ceiling run under perf record -a -g -F 499: %d rows in %.2f s (%.0f rows/s, slowed by perf)\n", c.Rows, c.WallS, c.RowsPerSec)
	reports := []struct {
		file string
		args []string
	}{
		{"ceiling-by-process.txt", []string{"--sort", "comm", "--no-children", "-g", "none"}},
		{"ceiling-enrich.txt", []string{"--comm", "enrich", "--sort", "sym", "--no-children", "-g", "none", "--percent-limit", "0.4"}},
		{"ceiling-enrich-cumulative.txt", []string{"--comm", "enrich", "--sort", "sym", "--children", "-g", "none", "--percent-limit", "0.8"}},
		{"ceiling-postgres.txt", []string{"--comm", "postgres", "--sort", "sym", "--no-children", "-g", "none", "--percent-limit", "0.5"}},
		{"ceiling-simulator.txt", []string{"--comm", "bench", "--sort", "sym", "--no-children", "-g", "none", "--percent-limit", "0.5"}},
	}
	for _, r := range reports {
		args := append([]string{"report", "-i", data, "--stdio", "--percentage", "absolute"}, r.args...)
		out, err := exec.CommandContext(ctx, perf, args...).Output()
		if err != nil {
			return fmt.Errorf("perf report for %s: %v", r.file, err)
		}
		if err := os.WriteFile(filepath.Join(dir, r.file), append([]byte(header), trimPerf(out)...), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.log, "   profile: reports in %s\n", dir)
	return nil
}

// trimPerf drops perf report's comment header and blank lines.
func trimPerf(out []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 || (bytes.HasPrefix(line, []byte("#")) && !bytes.HasPrefix(line, []byte("# Overhead")) && !bytes.HasPrefix(line, []byte("# Children"))) {
			continue
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// memory: peak RSS of the enrich process at the ceiling over 100,000 and 1,000,000 rows.
func (e *env) memory(ctx context.Context, d *details) ([]Figure, error) {
	sizes := []int{100_000, 1_000_000}
	if e.quick {
		sizes = []int{10_000, 40_000}
	}
	var runs []ceilingRun
	for _, rows := range sizes {
		fmt.Fprintf(e.log, "   %d rows\n", rows)
		t, err := e.loadTable(ctx, "memory", rows)
		if err != nil {
			return nil, err
		}
		c, err := e.runCeiling(ctx, t, 0, 0)
		_ = e.dropDB(t.name)
		if err != nil {
			return nil, err
		}
		runs = append(runs, c)
	}
	d.set("memory", runs)
	var figs []Figure
	for i, c := range runs {
		figs = append(figs, Figure{Scenario: "memory", Name: fmt.Sprintf("peak RSS at %s rows", thousands(sizes[i])), Value: c.MaxRSSMiB, Unit: "MiB", N: 1,
			Note: fmt.Sprintf("ceiling setup; %.0f rows/s, %.1f µs CPU/row", c.RowsPerSec, c.EnrichCPU)}.target("<=", 64))
	}
	figs = append(figs, Figure{Scenario: "memory", Name: fmt.Sprintf("peak RSS %s ÷ %s rows (flat)", thousands(sizes[1]), thousands(sizes[0])),
		Value: runs[1].MaxRSSMiB / runs[0].MaxRSSMiB, Unit: "ratio", N: 1,
		Note: "flat: 10× the rows costs at most a quarter more memory"}.target("<=", 1.25))
	lines := 1_000_000
	if e.quick {
		lines = 100_000
	}
	fmt.Fprintf(e.log, "   enqueue and export of %s lines\n", thousands(lines))
	in, out, err := e.importExport(ctx, lines)
	if err != nil {
		return figs, err
	}
	figs = append(figs,
		Figure{Scenario: "memory", Name: fmt.Sprintf("enqueue %s CSV lines: peak RSS", thousands(lines)), Value: in, Unit: "MiB", N: 1,
			Note: "a messy CSV (two national forms of each number, one line in a thousand not a number), --region RU, through COPY"}.target("<=", 64),
		Figure{Scenario: "memory", Name: "export those rows to a file: peak RSS", Value: out, Unit: "MiB", N: 1,
			Note: "--status all, CSV, one snapshot through a server-side cursor"}.target("<=", 64))
	return figs, nil
}

// thousands writes 1000000 as 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// peakRSS runs the enrich binary with args against dbURL, to its end, and returns its peak RSS
// in bytes (VmHWM, read as a run's is).
func (e *env) peakRSS(ctx context.Context, dbURL string, args ...string) (int64, error) {
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = childEnv(dbURL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &out
	r := &run{cmd: cmd, hwmDone: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	r.hwmWG.Go(r.watchHWM)
	err := cmd.Wait()
	close(r.hwmDone)
	r.hwmWG.Wait()
	if err != nil {
		return 0, fmt.Errorf("enrich %s: %v\n%s", args[0], err, out.String())
	}
	return r.hwm.Load(), nil
}

// importExport: `enrich enqueue` of a messy CSV of lines numbers (each number twice, in two
// national forms, and one line in a thousand not a number), then `enrich export` of the table
// to a file, each with its peak RSS: both stream, so memory must not grow with the input. These
// were the bounds of TestEnqueueMillionLines and TestExportMillion.
func (e *env) importExport(ctx context.Context, lines int) (importMiB, exportMiB float64, err error) {
	path := filepath.Join(e.tmp, "import.csv")
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "name;phone;note")
	for i := range lines - 1 {
		n := i / 2
		switch {
		case i%1000 == 999:
			fmt.Fprintf(w, "bad %d;not a number %d;x\n", i, i)
		case i%2 == 0:
			fmt.Fprintf(w, "\"Contact, %d\";8 (9%02d) %03d-%02d-%02d;\"a \"\"note\"\"\"\n", i, n/10_000_000%100, n/10_000%1000, n/100%100, n%100)
		default:
			fmt.Fprintf(w, "c%d;+7 9%02d %03d %02d %02d;\n", i, n/10_000_000%100, n/10_000%1000, n/100%100, n%100)
		}
	}
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	if err := f.Close(); err != nil {
		return 0, 0, err
	}
	defer os.Remove(path)
	name, url, err := e.createDB(ctx, "import", "")
	if err != nil {
		return 0, 0, err
	}
	defer e.dropDB(name)
	if err := e.migrate(ctx, url); err != nil {
		return 0, 0, err
	}
	in, err := e.peakRSS(ctx, url, "enqueue", "--region", "RU", "--log-format", "json", path)
	if err != nil {
		return 0, 0, err
	}
	dump := filepath.Join(e.tmp, "export.csv")
	defer os.Remove(dump)
	out, err := e.peakRSS(ctx, url, "export", "--status", "all", "--output", dump)
	if err != nil {
		return 0, 0, err
	}
	return float64(in) / (1 << 20), float64(out) / (1 << 20), nil
}
