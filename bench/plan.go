package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// planTolerance is how far a run may be from `enrich plan`'s ETA (issue 16: within 15%).
const planTolerance = 0.15

// planRun is one `enrich plan --json` and the `enrich run` after it.
type planRun struct {
	Rows       int     `json:"rows"`
	DueNow     int64   `json:"due_now"`
	ETASeconds float64 `json:"eta_seconds"`
	SentRows   int64   `json:"sent_rows"`
	CappedRows int64   `json:"capped_rows"`
	// ElapsedS is the run's own elapsed (its summary's), WallS the process's start to exit.
	ElapsedS float64 `json:"elapsed_s"`
	WallS    float64 `json:"wall_s"`
	Ratio    float64 `json:"elapsed_over_eta"`
	Done     int64   `json:"done"`
	// Finished is done, failed or rescheduled: the rows the run called.
	Finished int64 `json:"finished"`
	// Calls is the run's getAvatar calls, every outcome.
	Calls int64  `json:"getavatar_calls"`
	Stop  string `json:"stop"`
}

// planConfig is the scenario's configuration: two instances at 10 rps with daily caps of a third
// and a half of the rows, so that the plan's caps (a sixth of the rows left for another day) and
// the run's stop on them are measured too.
func planConfig(dbURL, apiURL string, insts []simulator.Instance, caps []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[database]\nurl = %q\n\n[greenapi]\napi_url = %q\nconfirm_missing = false\n\n", dbURL, apiURL)
	for i, in := range insts {
		fmt.Fprintf(&b, "[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n", in.ID, in.Token, in.RPS)
		fmt.Fprintf(&b, "max_per_day = %d\n", caps[i])
		b.WriteString("\n")
	}
	return b.String()
}

// planOnce loads a fresh table, asks `enrich plan --json` for its ETA, then runs `enrich run`
// on the same configuration until no row is due, against the simulator at budget's latency.
func (e *env) planOnce(ctx context.Context, rows int) (planRun, error) {
	res := planRun{Rows: rows}
	t, err := e.loadTable(ctx, "plan", rows)
	if err != nil {
		return res, err
	}
	defer e.dropDB(t.name)
	insts := instances(2, budgetRPS)
	ss, err := serveSim(simulator.Config{Seed: 1, Instances: insts, LatencyMedian: budgetLatencyMedian, LatencyP99: budgetLatencyP99}, false)
	if err != nil {
		return res, err
	}
	defer ss.close()
	f, err := os.CreateTemp(e.tmp, "plan-*.toml")
	if err != nil {
		return res, err
	}
	if _, err := f.WriteString(planConfig(t.url, ss.url, insts, []int{rows / 3, rows / 2})); err != nil {
		return res, err
	}
	if err := f.Close(); err != nil {
		return res, err
	}

	cmd := exec.CommandContext(ctx, e.bin, "plan", "--json", "--config", f.Name(), "--log-format", "json")
	cmd.Env = childEnv(t.url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("enrich plan: %v\n%s", err, stderr.String())
	}
	var p struct {
		DueNow     int64   `json:"due_now"`
		ETASeconds float64 `json:"eta_seconds"`
		SentRows   int64   `json:"sent_rows"`
		CappedRows int64   `json:"capped_rows"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return res, fmt.Errorf("enrich plan --json: %v\n%s", err, out)
	}
	res.DueNow, res.ETASeconds, res.SentRows, res.CappedRows = p.DueNow, p.ETASeconds, p.SentRows, p.CappedRows
	if n := ss.sim.Stats().Requests; n != 0 {
		return res, fmt.Errorf("enrich plan sent the simulator %d requests without --check-instances", n)
	}

	logf, err := os.CreateTemp(e.tmp, "plan-run-*.log")
	if err != nil {
		return res, err
	}
	run := exec.CommandContext(ctx, e.bin, "run", "--config", f.Name(), "--log-format", "json")
	run.Env = childEnv(t.url)
	run.Stdout, run.Stderr = logf, logf
	run.Cancel = func() error { return run.Process.Signal(syscall.SIGTERM) }
	run.WaitDelay = 30 * time.Second
	start := time.Now()
	err = run.Run()
	res.WallS = time.Since(start).Seconds()
	_ = logf.Close()
	sum, ok, perr := readSummary(logf.Name())
	if err != nil || !ok || perr != nil {
		return res, fmt.Errorf("enrich run: %v (summary found: %v, %v)\n%s", err, ok, perr, tail(logf.Name(), 20))
	}
	elapsed, _ := time.ParseDuration(sum.Elapsed)
	// The simulator fails and reschedules a few rows as Green API does: each was one call all
	// the same, as the plan counts them.
	res.ElapsedS, res.Done, res.Finished, res.Stop = elapsed.Seconds(), sum.Done, sum.finished(), sum.Stop
	for k, n := range sum.Calls {
		if strings.HasPrefix(k, "getAvatar") {
			res.Calls += n
		}
	}
	res.Ratio = res.ElapsedS / res.ETASeconds
	return res, nil
}

// plan: `enrich plan --json`, then `enrich run` on the same table and configuration, against the
// simulator with budget's latency: two instances at 10 rps, capped at a third and a half of the
// rows for the day. Figures: the run's elapsed ÷ the plan's ETA (within 15%), median of 3 runs
// (quick: 1), and whether the run called the rows the plan said it would send (done, failed or
// rescheduled), the rest left by the cap.
func (e *env) plan(ctx context.Context, d *details) ([]Figure, error) {
	rows, runs := 900, 3
	if e.quick {
		rows, runs = 150, 1
	}
	var all []planRun
	var ratios, sentOff []float64
	for i := range runs {
		fmt.Fprintf(e.log, "   run %d of %d: %d rows, 2 instances at 10 rps capped at %d and %d\n", i+1, runs, rows, rows/3, rows/2)
		r, err := e.planOnce(ctx, rows)
		all = append(all, r)
		if err != nil {
			d.set("plan", all)
			return nil, err
		}
		fmt.Fprintf(e.log, "   ETA %.1f s (%d rows to send, %d capped); the run took %.1f s (wall %.1f s), %d rows called (%d done) in %d getAvatar calls, stop %q: %.3f of the ETA\n",
			r.ETASeconds, r.SentRows, r.CappedRows, r.ElapsedS, r.WallS, r.Finished, r.Done, r.Calls, r.Stop, r.Ratio)
		ratios = append(ratios, r.Ratio)
		sentOff = append(sentOff, float64(r.Finished-r.SentRows))
	}
	d.set("plan", all)
	ratio := median(ratios)
	m := all[len(all)/2]
	return []Figure{
		Figure{Scenario: "plan", Name: "run elapsed ÷ plan's ETA, deviation", Value: math.Abs(ratio - 1), Unit: "ratio", N: runs, Runs: rounded(ratios),
			Note: fmt.Sprintf("median run ÷ ETA %.3f (runs %v); e.g. ETA %.1f s for %d of %d rows (%d left by the caps), the run %.1f s (process %.1f s), %d getAvatar calls, stop %q; the plan is asked without --latency, so the last answer's time (median 300 ms) and the start-up's round trips are outside the ETA",
				ratio, rounded(ratios), m.ETASeconds, m.SentRows, m.DueNow, m.CappedRows, m.ElapsedS, m.WallS, m.Calls, m.Stop)}.target("<=", planTolerance),
		Figure{Scenario: "plan", Name: "rows called − rows the plan sends (median)", Value: median(sentOff), Unit: "", N: runs}.target("==", 0),
	}, nil
}
