package main

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// requeueSeed is a row of every kind, named by its phone number's group, as the CLI meets them.
var requeueSeed = []struct {
	group                string
	n                    int
	status, reason       string // reason: SQL
	checked, due, leased string // SQL
}{
	{"done-old", 3, "done", "''", "now() - interval '60 days'", "now()", "NULL"},
	{"done-new", 2, "done", "''", "now() - interval '1 day'", "now()", "NULL"},
	{"failed400-old", 4, "failed", "'http 400'", "now() - interval '45 days'", "now()", "NULL"},
	{"failed400-new", 2, "failed", "'http 400'", "now() - interval '1 hour'", "now()", "NULL"},
	{"failedbad-old", 3, "failed", "'bad data'", "now() - interval '90 days'", "now()", "NULL"},
	{"failed-leased", 1, "failed", "'http 400'", "now() - interval '60 days'", "now()", "now() + interval '1 hour'"},
	{"pending-due", 2, "pending", "NULL", "NULL", "now() - interval '1 minute'", "NULL"},
	{"pending-leased", 2, "pending", "NULL", "NULL", "now() + interval '1 hour'", "now() + interval '1 hour'"},
	{"pending-retry", 2, "pending", "'timeout'", "NULL", "now() + interval '1 hour'", "NULL"},
}

func seedRequeue(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for i, s := range requeueSeed {
		_, err := pool.Exec(context.Background(), `INSERT INTO contacts (phone_number, chat_id, status, reason, attempts, checked_at,
			next_attempt_at, locked_by, locked_until, exists_whatsapp, url_avatar)
			SELECT (79000000000 + $1::int * 100 + i)::text, $2 || ':' || i, $3, `+s.reason+`, 2, `+s.checked+`, `+s.due+`,
			       CASE WHEN `+s.leased+` IS NULL THEN NULL ELSE 'host:1:lease' END, `+s.leased+`,
			       CASE WHEN $3 = 'done' THEN true END, CASE WHEN $3 = 'done' THEN 'https://pps.whatsapp.net/a.jpg' END
			FROM generate_series(1, $4::int) AS i`, i, s.group, s.status, s.n)
		if err != nil {
			t.Fatalf("seed %s: %v", s.group, err)
		}
	}
}

// requeued lists the groups whose rows were put back (pending, attempts 0, no reason, due; every
// row was seeded with 2 attempts), in order, and fails on a group only partly put back or a done
// row that lost its results.
func requeued(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT split_part(chat_id, ':', 1),
		bool_and(status = 'pending' AND attempts = 0 AND reason IS NULL AND locked_by IS NULL AND next_attempt_at <= now()),
		bool_or(status = 'pending' AND attempts = 0 AND reason IS NULL AND locked_by IS NULL AND next_attempt_at <= now()),
		bool_and(status <> 'done' OR (exists_whatsapp AND url_avatar IS NOT NULL AND checked_at IS NOT NULL))
		FROM contacts GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var group string
	var all, some, results bool
	if _, err := pgx.ForEachRow(rows, []any{&group, &all, &some, &results}, func() error {
		switch {
		case all:
			out = append(out, group)
		case some:
			t.Errorf("group %s was put back only in part", group)
		}
		if !results {
			t.Errorf("group %s: a done row lost its results", group)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestRequeueCLI (table-driven, a database each): requeue moves exactly the rows asked for, by
// status, reason and age, never a leased one; --dry-run moves none and says how many it would.
func TestRequeueCLI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		out   string
		moved []string
	}{
		{name: "failed", args: []string{"--status", "failed"}, out: "requeued 9 rows\n",
			moved: []string{"failed400-new", "failed400-old", "failedbad-old"}},
		{name: "failed by reason", args: []string{"--status", "failed", "--reason", "http 400"}, out: "requeued 6 rows\n",
			moved: []string{"failed400-new", "failed400-old"}},
		{name: "reason is exact", args: []string{"--status", "failed", "--reason", "HTTP 400"}, out: "requeued 0 rows\n"},
		{name: "failed by age in days", args: []string{"--status", "failed", "--older-than", "30d"}, out: "requeued 7 rows\n",
			moved: []string{"failed400-old", "failedbad-old"}},
		{name: "failed by reason and age", args: []string{"--status", "failed", "--reason", "http 400", "--older-than", "720h"},
			out: "requeued 4 rows\n", moved: []string{"failed400-old"}},
		{name: "done", args: []string{"--status", "done"}, out: "requeued 5 rows\n", moved: []string{"done-new", "done-old"}},
		{name: "done by age", args: []string{"--status", "done", "--older-than", "48h"}, out: "requeued 3 rows\n", moved: []string{"done-old"}},
		{name: "dry run", args: []string{"--status", "failed", "--dry-run"}, out: "would requeue 9 rows\n"},
		{name: "dry run by age", args: []string{"--status", "done", "--older-than", "2d", "--dry-run"}, out: "would requeue 3 rows\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			pool := pgtest.Connect(t, dbURL)
			seedRequeue(t, pool)
			out, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": dbURL}, append([]string{"requeue"}, tc.args...)...)
			if err != nil {
				t.Fatalf("requeue %v: %v\n%s", tc.args, err, stderr)
			}
			if out != tc.out {
				t.Errorf("requeue %v printed %q, want %q", tc.args, out, tc.out)
			}
			if got := requeued(t, pool); strings.Join(got, " ") != strings.Join(tc.moved, " ") {
				t.Errorf("requeue %v put back %v, want %v", tc.args, got, tc.moved)
			}
		})
	}
}

// TestRequeueCLIRefuses: bad flags are usage errors (exit 1) naming the flag and the fix, found
// before the database is asked anything (it is a closed port here).
func TestRequeueCLIRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"--status is required", "--status failed or --status done"}},
		{[]string{"--status", "pending"}, []string{"--status pending", "in the queue already"}},
		{[]string{"--status", "Failed"}, []string{`--status "Failed"`, "use --status failed or --status done"}},
		{[]string{"--status", "failed", "--older-than", "-1h"}, []string{"--older-than -1h0m0s: must not be negative", "720h or 30d"}},
		{[]string{"--status", "failed", "--older-than", "-2d"}, []string{"--older-than -48h0m0s: must not be negative"}},
		{[]string{"--status", "failed", "--older-than", "a month"}, []string{"older-than", `"a month" is not a duration such as 36h or 30d`}},
		{[]string{"--status", "failed", "--older-than", "1.5d"}, []string{"older-than", `"1.5d" is not a whole number of days`}},
		{[]string{"--status", "failed", "extra"}, []string{`unexpected argument "extra"`}},
	} {
		_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, append([]string{"requeue"}, tc.args...)...)
		if !isConfigError(err) || exitCode(err, nil) != exitConfig {
			t.Errorf("requeue %v: %v; want a usage error (exit 1)", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("requeue %v: %q lacks %q", tc.args, err, w)
			}
		}
	}
}

// TestRequeueHelp: requeue --help lists its flags and says --reason is an exact match.
func TestRequeueHelp(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "requeue", "--help")
	if exitCode(err, nil) != exitOK {
		t.Fatalf("requeue --help: %v", err)
	}
	for _, want := range []string{"Usage: enrich requeue --status failed|done", "\n  -status string", "\n  -reason TEXT",
		"exact match", "\n  -older-than DUR", "30d", "checked_at", "\n  -dry-run", "\n  -table ", "requeued N rows"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("requeue --help lacks %q:\n%s", want, stderr)
		}
	}
}
