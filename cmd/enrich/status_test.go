package main

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// seedStatus fills the test's table with rows of every kind (300 rows: 150 done, 60 failed
// under two reasons, 40 pending due, 30 leased, 20 scheduled with a reason) and records three
// runs (finished, failed, still running), against the database's clock as the CLI uses it.
func seedStatus(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	// No autovacuum: an ANALYZE of its own between two commands would change the estimates.
	if _, err := pool.Exec(ctx, "ALTER TABLE contacts SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	groups := []struct {
		n                                int
		status, reason, due, lockedUntil string
	}{
		{150, "done", "''", "now() - interval '3 hours'", "NULL"},
		{40, "failed", "'http 400'", "now() - interval '2 hours'", "NULL"},
		{20, "failed", "'bad data'", "now() - interval '2 hours'", "NULL"},
		{40, "pending", "NULL", "now() - interval '1 hour'", "NULL"},
		{30, "pending", "NULL", "now() + interval '1 hour'", "now() + interval '1 hour'"},
		{20, "pending", "'timeout'", "now() + interval '2 hours'", "NULL"},
	}
	for i, g := range groups {
		if _, err := pool.Exec(ctx, `INSERT INTO contacts (phone_number, status, reason, next_attempt_at, locked_by, locked_until)
			SELECT (79000000000 + $1::int * 1000 + i)::text, $2, `+g.reason+`, `+g.due+`,
			       CASE WHEN `+g.lockedUntil+` IS NULL THEN NULL ELSE 'host:1:lease' END, `+g.lockedUntil+`
			FROM generate_series(1, $3::int) AS i`, i, g.status, g.n); err != nil {
			t.Fatalf("seed group %d: %v", i, err)
		}
	}
	// Links of done rows: 7 expire within 24 h, 5 later, 3 have expired already.
	if _, err := pool.Exec(ctx, `UPDATE contacts SET url_expires_at = now() + CASE
			WHEN id % 150 < 7 THEN interval '12 hours'
			WHEN id % 150 < 12 THEN interval '3 days'
			ELSE interval '-1 hour' END
		WHERE status = 'done' AND id % 150 < 15`); err != nil {
		t.Fatalf("seed links: %v", err)
	}
	// Existence of done rows: 50 known, 10 left unchecked, the other 90 answered before it was
	// checked: 100 unknown.
	if _, err := pool.Exec(ctx, `UPDATE contacts SET exists_whatsapp = CASE WHEN id % 150 >= 100 THEN true END,
			exists_source = CASE WHEN id % 150 >= 100 THEN 'avatar' WHEN id % 150 < 10 THEN 'unchecked' END
		WHERE status = 'done'`); err != nil {
		t.Fatalf("seed existence: %v", err)
	}
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		owner string
		end   *store.RunEnd
	}{
		{"host-a:1:aaaa", &store.RunEnd{Outcome: "finished", Stop: "no due rows left",
			Counts: store.RunCounts{Done: 150, Failed: 60, Rescheduled: 20, Released: 3, Claimed: 233, RateLimited: 4, Calls: 240}}},
		{"host-b:2:bbbb", &store.RunEnd{Outcome: "failed", Stop: "database failure", ExitCode: 3, Error: "write batch: connection refused",
			Counts: store.RunCounts{Done: 1, Claimed: 5, Calls: 2}}},
		{"host-c:3:cccc", nil},
	} {
		id, err := st.StartRun(ctx, store.RunStart{Owner: r.owner, Host: strings.Split(r.owner, ":")[0], Version: "v1.2.3+0123456789ab"})
		if err != nil {
			t.Fatal(err)
		}
		if r.end != nil {
			if err := st.FinishRun(ctx, id, *r.end); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// statusFigure is one number of the table: its value and its mark.
type statusFigure struct {
	n                 int64
	estimate, atLeast bool
}

// statusTable is the table `enrich status` printed, parsed back.
type statusTable struct {
	table, counts string
	figures       map[string]statusFigure // rows, done, failed, pending, due now, leased, scheduled
	oldestDue     *time.Time
	reasons       []reasonJSON
	runs          []runJSON
	// instancesDay and instances are the instances section: its day, and each line's cells.
	instancesDay string
	instanceCols []string
	instances    []map[string]string
}

var (
	figureText = regexp.MustCompile(`^(~ |≥ )?([0-9]+)$`)
	reasonLine = regexp.MustCompile(`^  (\S+) +(~ |≥ )?([0-9]+)  (.*)$`)
	existsLine = regexp.MustCompile(`^((?:~ |≥ )?[0-9]+) \(unchecked ((?:~ |≥ )?[0-9]+)\)$`)
)

func parseFigure(t *testing.T, s string) statusFigure {
	t.Helper()
	m := figureText.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		t.Fatalf("figure %q: not a number with an optional ~ or ≥", s)
	}
	n, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return statusFigure{n: n, estimate: m[1] == "~ ", atLeast: m[1] == "≥ "}
}

// parseStatusTable reads the table back: a label in the first 13 columns and its value, then the
// reasons and the runs.
func parseStatusTable(t *testing.T, out string) statusTable {
	t.Helper()
	st := statusTable{figures: map[string]statusFigure{}}
	section := ""
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		switch {
		case line == "reasons" || strings.HasPrefix(line, "reasons ("):
			section = "reasons"
			continue
		case line == "last runs":
			section = "runs"
			continue
		case line == "claim plan":
			section = "plan"
			continue
		case strings.HasPrefix(line, "instances (day "):
			section, st.instancesDay = "instances", strings.TrimSuffix(strings.TrimPrefix(line, "instances (day "), ")")
			continue
		}
		switch section {
		case "instances":
			f := strings.Fields(line)
			if f[0] == "ID" {
				st.instanceCols = f
				continue
			}
			if f[0] == "none:" {
				continue
			}
			if len(f) != len(st.instanceCols) {
				t.Fatalf("instance line %q has %d cells, the header %d", line, len(f), len(st.instanceCols))
			}
			row := map[string]string{}
			for i, c := range st.instanceCols {
				row[c] = f[i]
			}
			st.instances = append(st.instances, row)
		case "reasons":
			m := reasonLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("reason line %q", line)
			}
			r := reasonJSON{Reason: m[4], Count: parseFigure(t, m[2]+m[3]).n}
			if m[1] != "any" {
				r.Status = &m[1]
			}
			st.reasons = append(st.reasons, r)
		case "runs":
			f := strings.Fields(line)
			if f[0] == "ID" {
				continue
			}
			if len(f) < 15 {
				t.Fatalf("run line %q has %d fields", line, len(f))
			}
			id, _ := strconv.ParseInt(f[0], 10, 64)
			r := runJSON{ID: id, State: strings.ReplaceAll(f[3], "_", " "), Owner: f[12], Host: f[13], Version: f[14],
				Stop: strings.Join(f[15:], " ")}
			r.StartedAt = parseTime(t, f[1])
			if f[2] != "-" {
				fin := parseTime(t, f[2])
				r.FinishedAt = &fin
			}
			if f[4] != "-" {
				code, _ := strconv.Atoi(f[4])
				r.ExitCode = &code
			}
			n := make([]int64, 7)
			for i := range n {
				n[i], _ = strconv.ParseInt(f[5+i], 10, 64)
			}
			r.Counts = runCountsJSON{Done: n[0], Failed: n[1], Rescheduled: n[2], Released: n[3], Claimed: n[4], RateLimited: n[5], Calls: n[6]}
			st.runs = append(st.runs, r)
		case "":
			if len(line) < 13 {
				t.Fatalf("status line %q is shorter than its label", line)
			}
			label, value := strings.TrimSpace(line[:13]), line[13:]
			switch label {
			case "table":
				st.table = value
			case "counts":
				st.counts = value
			case "exists null":
				m := existsLine.FindStringSubmatch(value)
				if m == nil {
					t.Fatalf("exists null line %q", value)
				}
				st.figures[label] = parseFigure(t, m[1])
				st.figures["unchecked"] = parseFigure(t, m[2])
			case "oldest due":
				if value != "-" {
					ts := parseTime(t, strings.Fields(value)[0])
					st.oldestDue = &ts
				}
			default:
				st.figures[label] = parseFigure(t, value)
			}
		}
	}
	return st
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return ts
}

// TestStatusJSONMatchesTable runs status and status --json on the same database and checks that
// the JSON parses and carries the table's figures, marks included, on the exact path (a small
// table, and --exact) and on the estimated one (before and after ANALYZE).
func TestStatusJSONMatchesTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		analyze bool
		args    []string
		// want are figures known from the seed; estimated and capped as the path makes them.
		exact, small, statistics bool
		want                     map[string]statusFigure
	}{
		{name: "small table, exact", exact: true, small: true, statistics: true,
			want: map[string]statusFigure{"rows": {n: 300}, "done": {n: 150}, "failed": {n: 60}, "pending": {n: 90},
				"due now": {n: 40}, "leased": {n: 30}, "scheduled": {n: 20}}},
		{name: "--exact", args: []string{"--exact", "--exact-below", "35"}, exact: true, statistics: true,
			want: map[string]statusFigure{"rows": {n: 300}, "done": {n: 150}, "failed": {n: 60}, "pending": {n: 90},
				"due now": {n: 40}, "leased": {n: 30}, "scheduled": {n: 20}}},
		{name: "estimated", analyze: true, args: []string{"--exact-below", "100"}, statistics: true,
			// ANALYZE reads a table this small whole: the estimates are the counts.
			want: map[string]statusFigure{"rows": {n: 300, estimate: true}, "done": {n: 150, estimate: true},
				"failed": {n: 60, estimate: true}, "pending": {n: 90, estimate: true},
				"due now": {n: 40}, "leased": {n: 30}, "scheduled": {n: 20}}},
		{name: "estimated and capped", analyze: true, args: []string{"--exact-below", "35"}, statistics: true,
			want: map[string]statusFigure{"rows": {n: 300, estimate: true}, "done": {n: 150, estimate: true},
				"failed": {n: 60, estimate: true}, "pending": {n: 90, estimate: true}, "due now": {n: 35, atLeast: true}}},
		{name: "no statistics", args: []string{"--exact-below", "100"},
			want: map[string]statusFigure{"rows": {n: 101, atLeast: true}, "due now": {n: 40}, "leased": {n: 30}, "scheduled": {n: 20}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			pool := pgtest.Connect(t, dbURL)
			seedStatus(t, pool)
			if tc.analyze {
				if _, err := pool.Exec(context.Background(), "ANALYZE contacts"); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{"DATABASE_URL": dbURL}
			args := append([]string{"status", "--runs", "10"}, tc.args...)
			out, stderr, err := runCLI(t, env, args...)
			if err != nil {
				t.Fatalf("status: %v\n%s", err, stderr)
			}
			jout, stderr, err := runCLI(t, env, append(args, "--json")...)
			if err != nil {
				t.Fatalf("status --json: %v\n%s", err, stderr)
			}
			t.Logf("table:\n%s", out)
			var j statusJSON
			dec := json.NewDecoder(strings.NewReader(jout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&j); err != nil {
				t.Fatalf("status --json does not parse: %v\n%s", err, jout)
			}
			if dec.More() {
				t.Fatalf("status --json printed more than one object:\n%s", jout)
			}
			tab := parseStatusTable(t, out)

			if j.Table != "contacts" || tab.table != "contacts" {
				t.Errorf("table %q in JSON, %q in the table", j.Table, tab.table)
			}
			if j.Exact != tc.exact || j.SmallTable != tc.small || j.Statistics != tc.statistics {
				t.Errorf("JSON exact %t, small_table %t, statistics %t; want %t, %t, %t", j.Exact, j.SmallTable, j.Statistics,
					tc.exact, tc.small, tc.statistics)
			}
			switch {
			case tc.exact && !strings.HasPrefix(tab.counts, "exact"),
				!tc.exact && tc.statistics && !strings.HasPrefix(tab.counts, "~ estimated"),
				!tc.statistics && !strings.Contains(tab.counts, "never been analyzed"):
				t.Errorf("table's counts line %q for exact %t, statistics %t", tab.counts, tc.exact, tc.statistics)
			}
			if (j.AnalyzedAt != nil) != tc.analyze || (tc.analyze && !strings.Contains(tab.counts, j.AnalyzedAt.Format(time.RFC3339))) {
				t.Errorf("analyzed_at %v; the table says %q", j.AnalyzedAt, tab.counts)
			}

			// The JSON's figures, as the table would mark them.
			est := !j.Exact
			fromJSON := map[string]statusFigure{
				"rows":         {n: j.Rows, estimate: est && !j.RowsAtLeast, atLeast: j.RowsAtLeast},
				"due now":      {n: j.DueNow, atLeast: j.DueNowCapped},
				"leased":       {n: j.Leased, atLeast: j.LeasedCapped},
				"scheduled":    {n: j.Scheduled, atLeast: j.ScheduledCapped},
				"expiring 24h": {n: j.LinksExpiring24h, atLeast: j.LinksExpiring24hCapped},
				"exists null":  {n: j.ExistsUnknown, atLeast: j.ExistsUnknownCapped},
				"unchecked":    {n: j.ExistsUnchecked, atLeast: j.ExistsUnknownCapped},
			}
			for s, n := range j.ByStatus {
				fromJSON[s] = statusFigure{n: n, estimate: est}
			}
			if !reflect.DeepEqual(tab.figures, fromJSON) {
				t.Errorf("figures differ:\ntable %+v\n JSON %+v", tab.figures, fromJSON)
			}
			if !j.ExistsUnknownCapped && (j.ExistsUnknown != 100 || j.ExistsUnchecked != 10) {
				t.Errorf("exists unknown %d, unchecked %d; want 100 and 10", j.ExistsUnknown, j.ExistsUnchecked)
			}
			if got := tab.figures["expiring 24h"]; got != (statusFigure{n: 7}) {
				t.Errorf("expiring 24h = %+v, want 7 (not the 5 later, nor the 3 expired)", got)
			}
			for label, want := range tc.want {
				if got := tab.figures[label]; got != want {
					t.Errorf("%s = %+v, want %+v", label, got, want)
				}
			}
			if tc.statistics != (j.ByStatus != nil) {
				t.Errorf("by_status %v with statistics %t", j.ByStatus, tc.statistics)
			}
			if (j.OldestDue == nil) != (tab.oldestDue == nil) ||
				j.OldestDue != nil && !j.OldestDue.Truncate(time.Second).Equal(*tab.oldestDue) {
				t.Errorf("oldest due %v in JSON, %v in the table", j.OldestDue, tab.oldestDue)
			}
			if j.OldestDue == nil || time.Since(*j.OldestDue) < 59*time.Minute || time.Since(*j.OldestDue) > 2*time.Hour {
				t.Errorf("oldest due %v, want about an hour ago", j.OldestDue)
			}

			// Reasons: exact ones by status, estimated ones across statuses.
			var want []reasonJSON
			switch {
			case j.Exact:
				failed, pending := "failed", "pending"
				want = []reasonJSON{{&failed, "http 400", 40}, {&failed, "bad data", 20}, {&pending, "timeout", 20}}
			case j.Statistics:
				want = []reasonJSON{{nil, "http 400", 40}, {nil, "bad data", 20}, {nil, "timeout", 20}}
			}
			if !reflect.DeepEqual(j.Reasons, orEmpty(want)) || !reflect.DeepEqual(tab.reasons, want) {
				t.Errorf("reasons:\n JSON %s\ntable %s\n want %s", reasonsText(j.Reasons), reasonsText(tab.reasons), reasonsText(want))
			}

			// Runs: the same in both, newest first, each as recorded.
			if len(j.Runs) != 3 || len(tab.runs) != 3 {
				t.Fatalf("%d runs in JSON, %d in the table; want 3", len(j.Runs), len(tab.runs))
			}
			for i, r := range j.Runs {
				tr := tab.runs[i]
				jr := r
				jr.StartedAt = jr.StartedAt.Truncate(time.Second)
				if jr.FinishedAt != nil {
					fin := jr.FinishedAt.Truncate(time.Second)
					jr.FinishedAt = &fin
				}
				// The table shows neither seen_at nor the error apart: the error follows the stop.
				jr.SeenAt, jr.Error = time.Time{}, ""
				if r.Error != "" {
					tr.Stop = strings.TrimSuffix(tr.Stop, ": "+r.Error)
				}
				if !reflect.DeepEqual(jr, tr) {
					t.Errorf("run %d:\n JSON %+v\ntable %+v", i, jr, tr)
				}
			}
			states := []string{j.Runs[0].State, j.Runs[1].State, j.Runs[2].State}
			if !reflect.DeepEqual(states, []string{"running", "failed", "finished"}) || j.Runs[1].Error != "write batch: connection refused" ||
				j.Runs[2].Counts.Calls != 240 || *j.Runs[1].ExitCode != 3 || j.Runs[0].FinishedAt != nil || j.Runs[0].Host != "host-c" {
				t.Errorf("runs %+v", j.Runs)
			}
		})
	}
}

func orEmpty(rs []reasonJSON) []reasonJSON {
	if rs == nil {
		return []reasonJSON{}
	}
	return rs
}

func reasonsText(rs []reasonJSON) string {
	var b strings.Builder
	for _, r := range rs {
		s := "any"
		if r.Status != nil {
			s = *r.Status
		}
		b.WriteString("[" + s + " " + r.Reason + " " + strconv.FormatInt(r.Count, 10) + "] ")
	}
	return b.String()
}

// TestStatusFlags: bad values of status's own flags are usage errors naming the flag, found
// before the database is asked anything; --runs 0 shows no runs; --explain still shows the plan.
func TestStatusFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--runs", "-1"}, "--runs -1: use 0 (no runs) to 1000"},
		{[]string{"--runs", "1001"}, "--runs 1001"},
		{[]string{"--exact-below", "0"}, "--exact-below 0: must be positive"},
	} {
		_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, append([]string{"status"}, tc.args...)...)
		var ce *configError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("status %v: %v; want a usage error with %q", tc.args, err, tc.want)
		}
	}

	dbURL := pgtest.NewDB(t)
	seedStatus(t, pgtest.Connect(t, dbURL))
	out, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": dbURL}, "status", "--runs", "0", "--explain")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	if strings.Contains(out, "last runs") || !strings.Contains(out, "claim plan\n") || !strings.Contains(out, "contacts_due_idx") {
		t.Errorf("status --runs 0 --explain:\n%s", out)
	}
	out, _, err = runCLI(t, map[string]string{"DATABASE_URL": dbURL}, "status", "--json", "--explain", "--runs", "1")
	var j statusJSON
	if err != nil || json.Unmarshal([]byte(out), &j) != nil || j.ClaimPlan == nil || !strings.Contains(*j.ClaimPlan, "contacts_due_idx") ||
		len(j.Runs) != 1 {
		t.Errorf("status --json --explain: %v\n%s", err, out)
	}
}

// TestStatusHelp: status --help lists its flags and says what is estimated.
func TestStatusHelp(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "status", "--help")
	if exitCode(err, nil) != exitOK {
		t.Fatalf("status --help: %v", err)
	}
	for _, want := range []string{"Usage: enrich status", "\n  -json", "\n  -exact\n", "\n  -exact-below int", "\n  -runs int",
		"\n  -explain", "\n  -table ", "(default 100000)", "(default 5)", "ANALYZE"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("status --help lacks %q:\n%s", want, stderr)
		}
	}
}
