package store_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// group is rows of one kind for fill: n rows of a status and reason, due at now+due, leased
// until now+leased when leased > 0.
type group struct {
	n             int
	status        string
	reason        *string
	due, leased   time.Duration
	checkedBefore time.Duration // checked_at = now - checkedBefore, for done and failed rows
}

// fill inserts the groups with generate_series, ids in group order.
func (b *bundle) fill(t *testing.T, gs []group) {
	t.Helper()
	now := b.clock.Now()
	for _, g := range gs {
		var lockedUntil *time.Time
		var lockedBy *string
		if g.leased > 0 {
			lockedUntil, lockedBy = ptr(now.Add(g.leased)), ptr("host:1:lease")
		}
		var checked *time.Time
		if g.status != store.StatusPending {
			checked = ptr(now.Add(-g.checkedBefore))
		}
		b.exec(t, `INSERT INTO `+b.table+` (phone_number, status, reason, next_attempt_at, locked_by, locked_until, checked_at)
			SELECT (79000000000 + coalesce((SELECT max(id) FROM `+b.table+`), 0) + i)::text, $1, $2, $3, $4, $5, $6
			FROM generate_series(1, $7::int) AS i`,
			g.status, g.reason, now.Add(g.due), lockedBy, lockedUntil, checked, g.n)
	}
}

// overviewGroups is a table of every kind of row: 300 rows, 40 due, 30 leased, 20 scheduled.
var overviewGroups = []group{
	{n: 150, status: "done", reason: ptr("")},
	{n: 40, status: "failed", reason: ptr("http 400")},
	{n: 20, status: "failed", reason: ptr("bad data")},
	{n: 40, status: "pending", due: -time.Hour},
	{n: 30, status: "pending", due: time.Hour, leased: time.Hour},
	{n: 20, status: "pending", reason: ptr("timeout"), due: 2 * time.Hour},
}

// TestStatusOverviewSmall: a small table is counted exactly, as Status counts it.
func TestStatusOverviewSmall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fill(t, overviewGroups)
	want, err := b.store.Status(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []store.StatusOptions{{}, {ExactBelow: 300}, {Exact: true, ExactBelow: 10}} {
		ov, err := b.store.Overview(b.ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if !ov.Exact || ov.Small == o.Exact || !ov.Statistics || ov.Rows != 300 || ov.RowsAtLeast ||
			ov.DueCapped || ov.LeasedCapped || ov.ScheduledCapped || !ov.TakenAt.Equal(b.clock.Now()) {
			t.Errorf("%+v: overview %+v", o, ov)
		}
		if !reflect.DeepEqual(ov.Report, want) {
			t.Errorf("%+v: report\n %+v\nwant (Status)\n %+v", o, ov.Report, want)
		}
	}
	if want.Due != 40 || want.Leased != 30 || want.Scheduled != 20 || len(want.Reasons) != 3 {
		t.Errorf("Status: %+v", want)
	}
}

// TestStatusOverviewEstimate: above the limit, a table is not counted: without statistics
// Overview says so; with them, the counts are PostgreSQL's estimates (here of a table ANALYZE
// read whole, so they are the true counts), and due, leased and scheduled stop at the limit.
func TestStatusOverviewEstimate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fill(t, overviewGroups)
	now := b.clock.Now()

	ov, err := b.store.Overview(b.ctx, store.StatusOptions{ExactBelow: 100})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Exact || ov.Small || ov.Statistics || ov.AnalyzedAt != nil || ov.ByStatus != nil || ov.Reasons != nil ||
		ov.Rows != 101 || !ov.RowsAtLeast || ov.Limit != 100 {
		t.Errorf("never analyzed: %+v", ov)
	}
	if ov.Due != 40 || ov.Leased != 30 || ov.Scheduled != 20 || ov.DueCapped || ov.LeasedCapped || ov.ScheduledCapped ||
		ov.OldestDue == nil || !ov.OldestDue.Equal(now.Add(-time.Hour)) {
		t.Errorf("never analyzed: queue %+v", ov)
	}

	before := time.Now().Add(-time.Minute)
	b.exec(t, "ANALYZE "+b.table)
	ov, err = b.store.Overview(b.ctx, store.StatusOptions{ExactBelow: 100})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Exact || ov.Small || !ov.Statistics || ov.AnalyzedAt == nil || ov.AnalyzedAt.Before(before) || ov.Rows != 300 || ov.RowsAtLeast {
		t.Errorf("analyzed: %+v", ov)
	}
	if want := map[string]int64{"pending": 90, "done": 150, "failed": 60}; !reflect.DeepEqual(ov.ByStatus, want) {
		t.Errorf("estimated ByStatus %v, want %v", ov.ByStatus, want)
	}
	wantReasons := []store.ReasonCount{{Reason: "http 400", Count: 40}, {Reason: "bad data", Count: 20}, {Reason: "timeout", Count: 20}}
	if !reflect.DeepEqual(ov.Reasons, wantReasons) {
		t.Errorf("estimated reasons %+v, want %+v", ov.Reasons, wantReasons)
	}

	// A lower limit: due and the rows due later are counted up to it, as lower bounds.
	ov, err = b.store.Overview(b.ctx, store.StatusOptions{ExactBelow: 35})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Due != 35 || !ov.DueCapped || !ov.LeasedCapped || !ov.ScheduledCapped || ov.Leased > 30 || ov.Scheduled > 20 ||
		ov.Leased+ov.Scheduled != 36 || !ov.OldestDue.Equal(now.Add(-time.Hour)) {
		t.Errorf("limit 35: due %d (capped %t), leased %d (%t), scheduled %d (%t), oldest %v", ov.Due, ov.DueCapped,
			ov.Leased, ov.LeasedCapped, ov.Scheduled, ov.ScheduledCapped, ov.OldestDue)
	}

	// A table grown since ANALYZE: the estimate follows its size in pages, as the planner's does.
	b.fill(t, []group{{n: 3000, status: "done", reason: ptr("")}})
	ov, err = b.store.Overview(b.ctx, store.StatusOptions{ExactBelow: 100})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Rows < 2000 || ov.Rows > 5000 {
		t.Errorf("after 3,000 more rows the estimate is %d rows, want about 3,300", ov.Rows)
	}
}

// TestStatusOverviewMissing: a table that does not exist is an error naming it.
func TestStatusOverviewMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := store.New(b.pool, store.Config{Table: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Overview(b.ctx, store.StatusOptions{}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Overview of a missing table: %v", err)
	}
}

// TestStatusPlans: on a large analyzed table, Overview's counts walk the due index and stop at
// the limit: no statement scans the table.
func TestStatusPlans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	b.exec(t, `ALTER TABLE `+b.table+` SET UNLOGGED`)
	// 200,000 rows: 80% done, 5% failed, the rest pending around the clock, some leased.
	b.exec(t, `
		INSERT INTO `+b.table+` (phone_number, status, next_attempt_at, locked_by, locked_until)
		SELECT '7' || lpad(i::text, 10, '0'),
		       CASE WHEN i % 20 < 16 THEN 'done' WHEN i % 20 = 16 THEN 'failed' ELSE 'pending' END,
		       $1::timestamptz + (i - 100000) * interval '1 second',
		       CASE WHEN i % 97 = 0 THEN 'someone' END,
		       CASE WHEN i % 97 = 0 THEN $1::timestamptz + (i - 100000) * interval '1 second' END
		FROM generate_series(1, 200000) AS i`, now)
	b.exec(t, `ANALYZE `+b.table)
	for name, sql := range b.store.StatusQueries() {
		args := []any{now, int64(1001)}
		if name == "oldest_due" {
			args = args[:1]
		}
		rows, err := b.pool.Query(b.ctx, "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		var lines []string
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "contacts_due_idx") || strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Sort") {
			t.Errorf("%s does not walk the due index:\n%s", name, plan)
		}
	}
	ov, err := b.store.Overview(b.ctx, store.StatusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Exact || !ov.Statistics || ov.Rows < 180000 || ov.Rows > 220000 || ov.Due < 14000 || ov.DueCapped {
		t.Errorf("overview of 200,000 rows: %+v", ov)
	}
}
