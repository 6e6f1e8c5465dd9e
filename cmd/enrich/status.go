package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// statusRunsDefault is how many of the last runs status shows unless --runs says otherwise.
const statusRunsDefault = 5

// statusView says what status shows and how.
type statusView struct {
	// JSON prints one JSON object instead of the table.
	JSON bool
	// Explain adds the claim's plan.
	Explain bool
	// Runs is how many of the last runs to show.
	Runs int
	// Options are the store's: --exact and --exact-below.
	Options store.StatusOptions
	// Day says when the instances' day turns (greenapi.day_starts_at, time_zone), for the slots
	// used today; Configured are the config's instances, for their rps and max_per_day.
	Day        store.DayStart
	Configured []InstanceConfig
}

func cmdStatus(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "status", "status [flags]\n\n"+
		"Counts by status and by reason, rows due now, leased and scheduled, the oldest due row, done rows whose avatar\n"+
		"link expires within 24 h, the last runs, and each Green API instance's shared budget: its state, rate and\n"+
		"headroom, slots used today of its max_per_day (from the config, when it names the instance), whether its\n"+
		"quota is spent today, and its last answer.\n"+
		"A table of more than --exact-below rows is not scanned: its counts by status and reason are PostgreSQL's\n"+
		"estimates from the last ANALYZE (marked ~), and its due, leased and scheduled rows are counted through the\n"+
		"due index up to --exact-below (marked ≥ when there are more), the expiring links through their index likewise.\n"+
		"--exact counts every row (a full scan).")
	tableFlag(f)
	v := statusView{}
	f.BoolVar(&v.Explain, "explain", false, "also print PostgreSQL's plan for the claim query (it should use the due index)")
	f.BoolVar(&v.JSON, "json", false, "print one JSON object with the same figures instead of the table")
	f.BoolVar(&v.Options.Exact, "exact", false, "count every row exactly, whatever the table's size (a scan of the whole table)")
	f.Int64Var(&v.Options.ExactBelow, "exact-below", store.StatusExactBelow, "count a table of at most this many rows exactly; "+
		"larger ones are estimated, and their due, leased and scheduled counts stop here")
	f.IntVar(&v.Runs, "runs", statusRunsDefault, fmt.Sprintf("how many of the last runs to show, 0 to %d", store.RunsMax))
	if _, err := f.parse(args, false); err != nil {
		return err
	}
	if v.Options.ExactBelow <= 0 {
		return configErrorf("--exact-below %d: must be positive, e.g. %d (the default)", v.Options.ExactBelow, store.StatusExactBelow)
	}
	if v.Runs < 0 || v.Runs > store.RunsMax {
		return configErrorf("--runs %d: use 0 (no runs) to %d", v.Runs, store.RunsMax)
	}
	day, err := a.cfg.day()
	if err != nil {
		return err
	}
	v.Day, v.Configured = day, a.cfg.GreenAPI.Instances
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	return writeStatus(ctx, a.io.out, st, v)
}

// printStatus writes the status report people read after a run.
func printStatus(ctx context.Context, w io.Writer, st *store.Store, explain bool) error {
	return writeStatus(ctx, w, st, statusView{Explain: explain, Runs: statusRunsDefault, Day: store.DayStart{Zone: "UTC"}})
}

// writeStatus gathers the figures and writes them as v says: the table or the JSON object, the
// same figures either way.
func writeStatus(ctx context.Context, w io.Writer, st *store.Store, v statusView) error {
	ov, err := st.Overview(ctx, v.Options)
	if err != nil {
		return dbErr("status", err)
	}
	runs, err := st.LastRuns(ctx, v.Runs)
	if err != nil {
		return dbErr("status", err)
	}
	// Counted through the expiry index, up to the limit the other counts stop at (all of them
	// with --exact): a figure for a person, never a scan.
	var exp expiring
	limit := ov.Limit
	if v.Options.Exact {
		limit = 0
	}
	if exp.n, exp.capped, err = st.ExpiringLinks(ctx, store.ExpiringWithin, limit); err != nil {
		return dbErr("status", err)
	}
	insts, err := readInstances(ctx, st, v)
	if err != nil {
		return dbErr("status", err)
	}
	var plan string
	if v.Explain {
		if plan, err = st.ExplainClaim(ctx, store.ChunkSize); err != nil {
			return dbErr("explain", err)
		}
	}
	if v.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(newStatusJSON(st, ov, exp, runs, insts, plan))
	}
	printStatusTable(w, st, ov, exp, runs, insts, plan)
	return nil
}

// expiring is how many done rows' avatar links expire within store.ExpiringWithin (24 h), not
// counting links expired already; capped says the count stopped at the limit.
type expiring struct {
	n      int64
	capped bool
}

// tableName is the table as people write it: its identifiers are plain (store.ParseTable), so
// the quotes add nothing.
func tableName(st *store.Store) string { return strings.ReplaceAll(st.Table(), `"`, "") }

// figure renders a count as the table shows it: "~ N" for an estimate, "≥ N" for a count that
// stopped at the limit.
func figure(n int64, estimate, capped bool) string {
	switch {
	case capped:
		return "≥ " + strconv.FormatInt(n, 10)
	case estimate:
		return "~ " + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10)
}

// ago is how long before the figures t was, rounded for people.
func ago(taken, t time.Time) string {
	d := taken.Sub(t)
	switch {
	case d < 0:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Minute:
		return d.Round(time.Second).String() + " ago"
	}
	return d.Round(time.Minute).String() + " ago"
}

// printStatusTable writes the report as a table: a label in the first 13 columns, its figure
// after.
func printStatusTable(w io.Writer, st *store.Store, ov store.Overview, exp expiring, runs []store.Run, insts instancesView, plan string) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-13s"+format+"\n", append([]any{label}, args...)...)
	}
	line("table", "%s", tableName(st))
	if src := st.SourceTable(); src != "" {
		line("source", "%s (the table is its state: [source])", src)
	}
	est := !ov.Exact
	switch {
	case ov.Exact && ov.Small:
		line("counts", "exact (a small table: at most %d rows, so every row is counted)", ov.Limit)
	case ov.Exact:
		line("counts", "exact (--exact: every row counted)")
	case !ov.Statistics:
		line("counts", "unknown: the table has never been analyzed and has more than %d rows; run ANALYZE %s "+
			"(autovacuum does so by itself after enough writes), or use --exact (a scan of the whole table)", ov.Limit, tableName(st))
	case ov.AnalyzedAt != nil:
		line("counts", "~ estimated from PostgreSQL's statistics, analyzed %s (%s); --exact counts every row",
			ov.AnalyzedAt.UTC().Format(time.RFC3339), ago(ov.TakenAt, *ov.AnalyzedAt))
	default:
		line("counts", "~ estimated from PostgreSQL's statistics (when last analyzed is unknown); --exact counts every row")
	}
	line("rows", "%s", figure(ov.Rows, est, ov.RowsAtLeast))
	for _, s := range sortedKeys(ov.ByStatus) {
		line("  "+s, "%s", figure(ov.ByStatus[s], est, false))
	}
	line("due now", "%s", figure(ov.Due, false, ov.DueCapped))
	line("leased", "%s", figure(ov.Leased, false, ov.LeasedCapped))
	line("scheduled", "%s", figure(ov.Scheduled, false, ov.ScheduledCapped))
	if ov.OldestDue != nil {
		line("oldest due", "%s (%s)", ov.OldestDue.UTC().Format(time.RFC3339), ago(ov.TakenAt, *ov.OldestDue))
	} else {
		line("oldest due", "-")
	}
	// Links of done rows that die before a nightly run comes back: refresh_before_expiry makes
	// them due; a large figure with nothing due means no run has refreshed them yet.
	line("expiring 24h", "%s", figure(exp.n, false, exp.capped))
	// Done personal rows whose existence is still unknown: a run with greenapi.confirm_missing
	// takes them up again; of them, those a run left unchecked (CheckWhatsapp's quota spent).
	line("exists null", "%s (unchecked %s)", figure(ov.ExistsUnknown, false, ov.ExistsUnknownCapped),
		figure(ov.Unchecked, false, ov.ExistsUnknownCapped))
	if len(ov.Reasons) > 0 {
		if est {
			fmt.Fprintf(w, "reasons (any status: PostgreSQL's statistics are per column; --exact splits them by status)\n")
		} else {
			fmt.Fprintf(w, "reasons\n")
		}
		for _, r := range ov.Reasons {
			status := r.Status
			if status == "" {
				status = "any"
			}
			fmt.Fprintf(w, "  %-8s %10s  %s\n", status, figure(r.Count, est, false), r.Reason)
		}
	}
	if len(runs) > 0 {
		fmt.Fprintf(w, "last runs\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  ID\tSTARTED\tFINISHED\tSTATE\tEXIT\tDONE\tFAILED\tRESCHEDULED\tRELEASED\tCLAIMED\tRATE_LIMITED\tCALLS\tOWNER\tHOST\tVERSION\tSTOP\n")
		for _, r := range runs {
			finished, exit := "-", "-"
			if r.FinishedAt != nil {
				finished = r.FinishedAt.UTC().Format(time.RFC3339)
			}
			if r.ExitCode != nil {
				exit = strconv.Itoa(*r.ExitCode)
			}
			stop := r.Stop
			if r.State == store.RunLost {
				stop = "no heartbeat since " + r.SeenAt.UTC().Format(time.RFC3339)
			}
			if r.Error != "" {
				stop += ": " + clip(r.Error, 160)
			}
			c := r.Counts
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", r.ID,
				r.StartedAt.UTC().Format(time.RFC3339), finished, strings.ReplaceAll(r.State, " ", "_"), exit,
				c.Done, c.Failed, c.Rescheduled, c.Released, c.Claimed, c.RateLimited, c.Calls,
				r.Owner, r.Host, strings.ReplaceAll(r.Version, " ", "_"), stop)
		}
		_ = tw.Flush()
	}
	printInstances(w, insts)
	if plan != "" {
		fmt.Fprintf(w, "claim plan\n%s", indent(plan, "  "))
	}
}

// clip cuts s to at most n runes, marking the cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// statusJSON is `enrich status --json`: stable snake_case keys, documented in docs/operations.md.
type statusJSON struct {
	Table string `json:"table"`
	// Source is the source table whose state Table is ([source]); absent for a contacts table.
	Source          string           `json:"source,omitempty"`
	TakenAt         time.Time        `json:"taken_at"`
	Exact           bool             `json:"exact"`
	SmallTable      bool             `json:"small_table"`
	Statistics      bool             `json:"statistics"`
	AnalyzedAt      *time.Time       `json:"analyzed_at"`
	Limit           int64            `json:"limit"`
	Rows            int64            `json:"rows"`
	RowsAtLeast     bool             `json:"rows_at_least"`
	ByStatus        map[string]int64 `json:"by_status"`
	Reasons         []reasonJSON     `json:"reasons"`
	DueNow          int64            `json:"due_now"`
	DueNowCapped    bool             `json:"due_now_capped"`
	Leased          int64            `json:"leased"`
	LeasedCapped    bool             `json:"leased_capped"`
	Scheduled       int64            `json:"scheduled"`
	ScheduledCapped bool             `json:"scheduled_capped"`
	OldestDue       *time.Time       `json:"oldest_due"`
	// LinksExpiring24h counts done rows whose avatar link expires within the next 24 hours
	// (expired ones not included); capped when the count stopped at limit.
	LinksExpiring24h       int64 `json:"links_expiring_24h"`
	LinksExpiring24hCapped bool  `json:"links_expiring_24h_capped"`
	// ExistsUnknown counts done personal rows whose exists_whatsapp is NULL that a run with the
	// checks on completes (store.Report.ExistsUnknown), Unchecked those of them a run left
	// unchecked; capped when the counts stopped at limit.
	ExistsUnknown       int64     `json:"exists_unknown"`
	ExistsUnchecked     int64     `json:"exists_unchecked"`
	ExistsUnknownCapped bool      `json:"exists_unknown_capped"`
	Runs                []runJSON `json:"runs"`
	// InstancesDay is the instances' day (greenapi.day_starts_at in time_zone) that used_today
	// and quota_spent count, as YYYY-MM-DD.
	InstancesDay string         `json:"instances_day"`
	Instances    []instanceJSON `json:"instances"`
	ClaimPlan    *string        `json:"claim_plan,omitempty"`
}

// reasonJSON is one entry of "reasons"; status is null for an estimate.
type reasonJSON struct {
	Status *string `json:"status"`
	Reason string  `json:"reason"`
	Count  int64   `json:"count"`
}

// runJSON is one entry of "runs".
type runJSON struct {
	ID         int64         `json:"id"`
	Owner      string        `json:"owner"`
	Host       string        `json:"host"`
	Version    string        `json:"version"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt *time.Time    `json:"finished_at"`
	SeenAt     time.Time     `json:"seen_at"`
	State      string        `json:"state"`
	Stop       string        `json:"stop"`
	ExitCode   *int          `json:"exit_code"`
	Counts     runCountsJSON `json:"counts"`
	Error      string        `json:"error"`
}

// runCountsJSON is a run's "counts".
type runCountsJSON struct {
	Done        int64 `json:"done"`
	Failed      int64 `json:"failed"`
	Rescheduled int64 `json:"rescheduled"`
	Released    int64 `json:"released"`
	Claimed     int64 `json:"claimed"`
	RateLimited int64 `json:"rate_limited"`
	Calls       int64 `json:"calls"`
}

// utc is t in UTC, nil stays nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func newStatusJSON(st *store.Store, ov store.Overview, exp expiring, runs []store.Run, insts instancesView, plan string) statusJSON {
	j := statusJSON{
		Table: tableName(st), Source: st.SourceTable(), TakenAt: ov.TakenAt.UTC(), Exact: ov.Exact, SmallTable: ov.Small,
		Statistics: ov.Statistics, AnalyzedAt: utc(ov.AnalyzedAt), Limit: ov.Limit,
		Rows: ov.Rows, RowsAtLeast: ov.RowsAtLeast, ByStatus: ov.ByStatus,
		Reasons: []reasonJSON{},
		DueNow:  ov.Due, DueNowCapped: ov.DueCapped, Leased: ov.Leased, LeasedCapped: ov.LeasedCapped,
		Scheduled: ov.Scheduled, ScheduledCapped: ov.ScheduledCapped, OldestDue: utc(ov.OldestDue),
		LinksExpiring24h: exp.n, LinksExpiring24hCapped: exp.capped,
		ExistsUnknown: ov.ExistsUnknown, ExistsUnchecked: ov.Unchecked, ExistsUnknownCapped: ov.ExistsUnknownCapped,
		Runs:         []runJSON{},
		InstancesDay: insts.day.Format(time.DateOnly),
		Instances:    []instanceJSON{},
	}
	for _, in := range insts.list {
		j.Instances = append(j.Instances, in.json())
	}
	for _, r := range ov.Reasons {
		rj := reasonJSON{Reason: r.Reason, Count: r.Count}
		if r.Status != "" {
			s := r.Status
			rj.Status = &s
		}
		j.Reasons = append(j.Reasons, rj)
	}
	for _, r := range runs {
		c := r.Counts
		j.Runs = append(j.Runs, runJSON{
			ID: int64(r.ID), Owner: r.Owner, Host: r.Host, Version: r.Version, StartedAt: r.StartedAt.UTC(),
			FinishedAt: utc(r.FinishedAt), SeenAt: r.SeenAt.UTC(), State: r.State, Stop: r.Stop, ExitCode: r.ExitCode,
			Counts: runCountsJSON{Done: c.Done, Failed: c.Failed, Rescheduled: c.Rescheduled, Released: c.Released,
				Claimed: c.Claimed, RateLimited: c.RateLimited, Calls: c.Calls},
			Error: r.Error,
		})
	}
	if plan != "" {
		j.ClaimPlan = &plan
	}
	return j
}
