package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
)

// planStateTimeout bounds each GetStateInstance of --check-instances: a plan is a question a
// person asks, not a run that may wait out a slow server.
const planStateTimeout = 30 * time.Second

// planView says what plan shows and how.
type planView struct {
	JSON bool
	// Check asks each instance's GetStateInstance (--check-instances).
	Check bool
	// Limit is where each count stops (--exact-below).
	Limit int64
	// Latency is a call's typical duration for the ETA (--latency); 0: not modeled.
	Latency time.Duration
}

func cmdPlan(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "plan", "plan [flags]\n\n"+
		"Rows due now (pending rows due, and done rows run.refresh_after, run.refresh_before_expiry and\n"+
		"greenapi.confirm_missing make due) and rows coming due in the next 24 h (retries and refreshes), the budget\n"+
		"of the configured instances (rps, the shared rate and headroom, max_per_day and what was spent today), how\n"+
		"long a run takes to send the rows due now (the ETA), how many the daily caps leave for another day, and\n"+
		"whether the ETA fits run.max_duration. It changes nothing and calls Green API only with --check-instances.\n"+
		"Each count walks an index and stops at --exact-below rows (marked ≥ when there are more; pending rows\n"+
		"past it are PostgreSQL's estimate, marked ~), so a plan of a table of any size reads a bounded number of rows.")
	tableFlag(f)
	key(f, "workers", fmt.Sprintf("concurrent calls per instance, at most %d (run.workers)", WorkersMax), func(c *Config) *int { return &c.Run.Workers })
	key(f, "max-duration", "the run's limit the ETA is checked against; 0: none (run.max_duration)", func(c *Config) *Duration { return &c.Run.MaxDuration })
	v := planView{}
	f.BoolVar(&v.JSON, "json", false, "print one JSON object with the same figures instead of the table")
	f.BoolVar(&v.Check, "check-instances", false, "ask each instance's state (GetStateInstance, one call each): an instance not "+
		"authorized adds nothing to the ETA. Without it, plan sends Green API nothing")
	f.Int64Var(&v.Limit, "exact-below", store.StatusExactBelow, "each count stops after this many rows (an index walk, never a scan)")
	f.DurationVar(&v.Latency, "latency", 0, "how long one call takes, for the ETA: the workers bound an instance at workers/latency "+
		"requests a second, and the last answer comes this long after the last request; 0: not modeled")
	if _, err := f.parse(args, false); err != nil {
		return err
	}
	// Only the state check needs what calling the API needs (tokens, api_url): checked now that
	// the flags say whether it is asked for.
	if v.Check {
		if err := a.cfg.validate(true); err != nil {
			return err
		}
	}
	// The rates the ETA is made of, as a run refuses them (validate checks them only for the
	// commands that call the API).
	for i, in := range a.cfg.GreenAPI.Instances {
		if rps := instanceRPS(in); math.IsNaN(rps) || math.IsInf(rps, 0) || rps <= 0 {
			return configErrorf("greenapi.instance[%d] (id %s).rps is %g: it must be a finite number greater than 0 (Green API allows 10)", i, in.ID, rps)
		}
	}
	if v.Limit <= 0 {
		return configErrorf("--exact-below %d: must be positive, e.g. %d (the default)", v.Limit, store.StatusExactBelow)
	}
	if v.Latency < 0 {
		return configErrorf("--latency %s: must not be negative (0: not modeled)", v.Latency)
	}
	day, err := a.cfg.day()
	if err != nil {
		return err
	}
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	p, err := a.plan(ctx, st, day, v)
	if err != nil {
		return err
	}
	if v.JSON {
		enc := json.NewEncoder(a.io.out)
		enc.SetIndent("", "  ")
		return enc.Encode(p.json())
	}
	p.print(a.io.out)
	return nil
}

// planReport is everything plan shows.
type planReport struct {
	table       string
	counts      store.PlanCounts
	day         time.Time
	instances   []planInstance
	est         enrich.PlanEstimate
	workers     int
	latency     time.Duration
	maxDuration time.Duration
	checked     bool
}

// planInstance is one configured instance as plan shows it.
type planInstance struct {
	instanceView
	// State is GetStateInstance's answer with --check-instances ("" without), StateErr its
	// error.
	State, StateErr string
	est             enrich.InstanceEstimate
}

// plan gathers the figures: the counts, the instances' budget, their state when asked, and the
// estimate.
func (a *app) plan(ctx context.Context, st *store.Store, day store.DayStart, v planView) (planReport, error) {
	c := a.cfg
	counts, err := st.Plan(ctx, store.PlanRequest{Policy: c.refreshPolicy(), Window: store.PlanWindowDefault, Limit: v.Limit})
	if err != nil {
		return planReport{}, dbErr("plan", err)
	}
	insts, err := readInstances(ctx, st, statusView{Day: day, Configured: c.GreenAPI.Instances})
	if err != nil {
		return planReport{}, dbErr("plan", err)
	}
	byID := map[string]instanceView{}
	for _, iv := range insts.list {
		byID[iv.ID] = iv
	}
	r := planReport{table: tableName(st), counts: counts, day: insts.day, workers: c.Run.Workers, latency: v.Latency,
		maxDuration: c.Run.MaxDuration.Duration, checked: v.Check}
	in := enrich.PlanInput{Due: counts.DueNow(), Workers: c.Run.Workers, Latency: v.Latency, MaxDuration: c.Run.MaxDuration.Duration}
	for _, ic := range c.GreenAPI.Instances {
		pi := planInstance{instanceView: byID[ic.ID]}
		if v.Check {
			pi.State, pi.StateErr = a.instanceState(ctx, ic)
		}
		p := enrich.PlanInstance{ID: ic.ID, RPS: pi.RPS, MaxPerDay: pi.MaxPerDay, QuotaSpent: pi.QuotaSpent,
			Out: v.Check && pi.State != greenapi.StateAuthorized}
		if pi.Used {
			p.Rate, p.Headroom, p.UsedToday = pi.Rate, pi.Headroom, pi.UsedToday
		}
		in.Instances = append(in.Instances, p)
		r.instances = append(r.instances, pi)
	}
	r.est = enrich.Estimate(in)
	for i := range r.instances {
		r.instances[i].est = r.est.Instances[i]
	}
	return r, nil
}

// instanceState asks one instance's GetStateInstance: its state, or what went wrong, never the
// token (greenapi's errors name the URL with the token masked).
func (a *app) instanceState(ctx context.Context, ic InstanceConfig) (state, errText string) {
	timeout := min(a.cfg.GreenAPI.Timeout.Duration, planStateTimeout)
	cl, err := greenapi.New(greenapi.Config{APIURL: ic.APIURL, IDInstance: ic.ID, Token: ic.Token,
		RequestBy: greenapi.RequestBy(a.cfg.GreenAPI.RequestBy), Timeout: timeout})
	if err != nil {
		return "", plainError(err)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := cl.GetStateInstance(cctx)
	if err != nil {
		var ge *greenapi.Error
		if errors.As(err, &ge) {
			return "", ge.Error()
		}
		return "", "GetStateInstance: " + plainError(err)
	}
	return s, ""
}

// dueFigure renders the rows due now: "~" when the pending rows are an estimate, "≥" when a
// count stopped at the limit.
func (r planReport) dueFigure() string {
	c := r.counts
	return figure(c.DueNow(), c.DuePendingEstimated, c.DueRefreshCapped && !c.DuePendingEstimated)
}

// windowFigure renders the rows coming due within the window.
func (r planReport) windowFigure() string {
	c := r.counts
	return figure(c.DueWindow(), false, c.RetriesCapped || c.RefreshesCapped)
}

// exact says every count is exact, so the ETA is too (as a model).
func (r planReport) exact() bool {
	c := r.counts
	return !c.DuePendingEstimated && !c.DueRefreshCapped && !c.RetriesCapped && !c.RefreshesCapped
}

// seconds renders a duration for people: "1h2m3s (3723 s)".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%s (%d s)", d.Round(time.Second), int64(math.Round(d.Seconds())))
}

// print writes the plan as people read it: a label in the first 13 columns, its figure after.
func (r planReport) print(w io.Writer) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-13s"+format+"\n", append([]any{label}, args...)...)
	}
	c, est := r.counts, r.est
	line("table", "%s", r.table)
	line("taken at", "%s", c.TakenAt.UTC().Format(time.RFC3339))
	if r.exact() {
		line("counts", "exact (each count stops at %d rows; none reached it)", c.Limit)
	} else {
		line("counts", "~ is PostgreSQL's estimate of the pending rows, ≥ a count that stopped at %d rows (--exact-below)", c.Limit)
	}
	line("due now", "%s (pending %s, done rows due again %s)", r.dueFigure(),
		figure(c.DuePending, c.DuePendingEstimated, false), figure(c.DueRefresh, false, c.DueRefreshCapped))
	line("due 24h", "%s (retries %s, refreshes %s)", r.windowFigure(),
		figure(c.Retries, false, c.RetriesCapped), figure(c.Refreshes, false, c.RefreshesCapped))
	fmt.Fprintf(w, "instances (day %s)\n", r.day.Format(time.DateOnly))
	if len(r.instances) == 0 {
		fmt.Fprintf(w, "  none configured: add a [[greenapi.instance]] (or GREENAPI_ID_INSTANCE) for an ETA\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  ID\tSTATE\tBUDGET\tRPS\tRATE\tHEADROOM\tROWS/S\tUSED_TODAY\tMAX_PER_DAY\tLEFT_TODAY\tROWS\n")
		num := func(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }
		for _, pi := range r.instances {
			state, rate, headroom, perDay, left := "unchecked", "-", "-", "none", "-"
			if r.checked {
				state = pi.State
				if pi.StateErr != "" {
					state = "error"
				}
			}
			if pi.Used {
				rate, headroom = num(pi.Rate), num(pi.Headroom)
			}
			if pi.MaxPerDay > 0 {
				perDay = strconv.FormatInt(pi.MaxPerDay, 10)
			}
			if pi.est.Left >= 0 {
				left = strconv.FormatInt(pi.est.Left, 10)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%.3f\t%d\t%s\t%s\t%d\n", pi.ID, state, pi.instanceView.State, num(pi.RPS),
				rate, headroom, pi.est.RowsPerSecond, pi.UsedToday, perDay, left, pi.est.Rows)
		}
		_ = tw.Flush()
		for _, pi := range r.instances {
			switch {
			case pi.StateErr != "":
				fmt.Fprintf(w, "  %s adds nothing to the ETA: %s\n", pi.ID, pi.StateErr)
			case r.checked && pi.State != greenapi.StateAuthorized:
				fmt.Fprintf(w, "  %s adds nothing to the ETA: its state is %s, not authorized\n", pi.ID, pi.State)
			case pi.QuotaSpent:
				fmt.Fprintf(w, "  %s adds nothing to the ETA: its quota is spent today (466)\n", pi.ID)
			case pi.est.WorkersBound:
				fmt.Fprintf(w, "  %s is bound by its workers: %d per instance at %s a call\n", pi.ID, r.workers, r.latency)
			}
		}
	}
	line("rows/s", "%.3f (each instance's slots: 1/rps widened by its headroom; a cut rate climbs back, a wide headroom eases)", est.RowsPerSecond)
	switch {
	case est.NoInstance && est.Due > 0:
		line("eta", "none: no instance can take a row")
	default:
		bound := ""
		if !r.exact() && (c.DuePendingEstimated || c.DueRefreshCapped) {
			bound = " at least, for the rows counted"
		}
		line("eta", "%s%s to send %d rows", seconds(est.ETA), bound, est.Sent)
	}
	line("capped", "%d rows left for another day by the daily caps and spent quotas", est.CappedRows)
	switch {
	case r.maxDuration == 0:
		line("max duration", "none: fits")
	case est.Fits:
		line("max duration", "%s: fits", r.maxDuration)
	default:
		line("max duration", "%s: does not fit; a run sends about %d rows within it, the next runs the rest", r.maxDuration, est.WithinMaxDuration)
	}
	if r.latency > 0 {
		line("workers", "%d per instance at %s a call: at most %.3f requests/s each", r.workers, r.latency, float64(r.workers)/r.latency.Seconds())
	} else {
		top := RPSDefault
		for i, pi := range r.instances {
			if i == 0 || pi.RPS > top {
				top = pi.RPS
			}
		}
		line("workers", "%d per instance: not the bottleneck unless a call takes longer than %s at %g rps (--latency models it)",
			r.workers, time.Duration(float64(r.workers)/top*float64(time.Second)).Round(time.Millisecond), top)
	}
	line("not modeled", "retries and timeouts (one call a row), CheckWhatsapp (its own budget), other runs on the same instances, a day turning")
}

// planJSON is `enrich plan --json`: stable snake_case keys, documented in docs/operations.md.
type planJSON struct {
	Table   string    `json:"table"`
	TakenAt time.Time `json:"taken_at"`
	// Limit is where each count stops (--exact-below); Exact says none reached it.
	Limit int64 `json:"limit"`
	Exact bool  `json:"exact"`
	// DueNow is the rows a run would work off now; DueNowEstimated says it is an estimate or a
	// lower bound (see its parts).
	DueNow                 int64              `json:"due_now"`
	DueNowEstimated        bool               `json:"due_now_estimated"`
	DueNowPending          int64              `json:"due_now_pending"`
	DueNowPendingEstimated bool               `json:"due_now_pending_estimated"`
	DueNowRefresh          int64              `json:"due_now_refresh"`
	DueNowRefreshCapped    bool               `json:"due_now_refresh_capped"`
	Due24h                 int64              `json:"due_24h"`
	Due24hCapped           bool               `json:"due_24h_capped"`
	Due24hRetries          int64              `json:"due_24h_retries"`
	Due24hRetriesCapped    bool               `json:"due_24h_retries_capped"`
	Due24hRefreshes        int64              `json:"due_24h_refreshes"`
	Due24hRefreshesCapped  bool               `json:"due_24h_refreshes_capped"`
	InstancesDay           string             `json:"instances_day"`
	Instances              []planInstanceJSON `json:"instances"`
	RowsPerSecond          float64            `json:"rows_per_second"`
	ETASeconds             float64            `json:"eta_seconds"`
	SentRows               int64              `json:"sent_rows"`
	CappedRows             int64              `json:"capped_rows"`
	NoInstance             bool               `json:"no_instance"`
	MaxDurationSeconds     float64            `json:"max_duration_seconds"`
	FitsMaxDuration        bool               `json:"fits_max_duration"`
	RowsWithinMaxDuration  *int64             `json:"rows_within_max_duration"`
	Workers                int                `json:"workers"`
	LatencySeconds         float64            `json:"latency_seconds"`
	InstancesChecked       bool               `json:"instances_checked"`
}

// planInstanceJSON is one entry of "instances" in `enrich plan --json`.
type planInstanceJSON struct {
	ID string `json:"id"`
	// State is GetStateInstance's answer, StateError what went wrong asking; both null without
	// --check-instances.
	State      *string `json:"state"`
	StateError *string `json:"state_error"`
	// Budget is the state `enrich status` gives the instance's shared budget.
	Budget string  `json:"budget"`
	RPS    float64 `json:"rps"`
	// Rate and Headroom are null for an instance no run has used.
	Rate          *float64 `json:"rate"`
	Headroom      *float64 `json:"headroom"`
	RowsPerSecond float64  `json:"rows_per_second"`
	WorkersBound  bool     `json:"workers_bound"`
	UsedToday     int64    `json:"used_today"`
	MaxPerDay     int64    `json:"max_per_day"`
	// LeftToday is null without a cap.
	LeftToday  *int64 `json:"left_today"`
	QuotaSpent bool   `json:"quota_spent"`
	// Out says it adds nothing to the ETA (not authorized, its state unknown, or its quota spent).
	Out  bool  `json:"out"`
	Rows int64 `json:"rows"`
}

func (r planReport) json() planJSON {
	c, est := r.counts, r.est
	j := planJSON{Table: r.table, TakenAt: c.TakenAt.UTC(), Limit: c.Limit, Exact: r.exact(),
		DueNow: c.DueNow(), DueNowEstimated: c.DuePendingEstimated || c.DueRefreshCapped,
		DueNowPending: c.DuePending, DueNowPendingEstimated: c.DuePendingEstimated,
		DueNowRefresh: c.DueRefresh, DueNowRefreshCapped: c.DueRefreshCapped,
		Due24h: c.DueWindow(), Due24hCapped: c.RetriesCapped || c.RefreshesCapped,
		Due24hRetries: c.Retries, Due24hRetriesCapped: c.RetriesCapped, Due24hRefreshes: c.Refreshes, Due24hRefreshesCapped: c.RefreshesCapped,
		InstancesDay: r.day.Format(time.DateOnly), Instances: []planInstanceJSON{},
		RowsPerSecond: est.RowsPerSecond, ETASeconds: est.ETA.Seconds(), SentRows: est.Sent, CappedRows: est.CappedRows,
		NoInstance: est.NoInstance, MaxDurationSeconds: r.maxDuration.Seconds(), FitsMaxDuration: est.Fits,
		Workers: r.workers, LatencySeconds: r.latency.Seconds(), InstancesChecked: r.checked}
	if !est.Fits && !est.NoInstance {
		n := est.WithinMaxDuration
		j.RowsWithinMaxDuration = &n
	}
	for _, pi := range r.instances {
		ij := planInstanceJSON{ID: pi.ID, Budget: pi.instanceView.State, RPS: pi.RPS, RowsPerSecond: pi.est.RowsPerSecond,
			WorkersBound: pi.est.WorkersBound, UsedToday: pi.UsedToday, MaxPerDay: pi.MaxPerDay, QuotaSpent: pi.QuotaSpent,
			Out: pi.est.Out, Rows: pi.est.Rows}
		if r.checked {
			if pi.StateErr != "" {
				e := pi.StateErr
				ij.StateError = &e
			} else {
				s := pi.State
				ij.State = &s
			}
		}
		if pi.Used {
			rate, headroom := pi.Rate, pi.Headroom
			ij.Rate, ij.Headroom = &rate, &headroom
		}
		if pi.est.Left >= 0 {
			l := pi.est.Left
			ij.LeftToday = &l
		}
		j.Instances = append(j.Instances, ij)
	}
	return j
}
