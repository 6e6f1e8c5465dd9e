package store_test

import (
	"strings"
	"testing"
)

// TestDueBounded: counting the due rows at a run's start reads at most limit+1 of them: a table
// with more gets PostgreSQL's estimate, flagged, instead of a count of every due row (seconds
// per pod at 10M rows). A table within the limit is counted exactly.
func TestDueBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const limit = 100
	b.exec(t, `INSERT INTO `+b.table+` (phone_number, status)
		SELECT '7' || lpad(i::text, 10, '0'), CASE WHEN i % 3 = 0 THEN 'done' ELSE 'pending' END
		FROM generate_series(1, 3000) AS i`)
	b.exec(t, `ANALYZE `+b.table)
	n, estimated, err := b.store.DueUpTo(b.ctx, limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2,000 due rows, limit %d: %d, estimated %v", limit, n, estimated)
	if !estimated || n < 1800 || n > 2200 {
		t.Errorf("DueUpTo(%d) over 2,000 due rows = %d, estimated %v; want the estimate (about 2,000), flagged", limit, n, estimated)
	}
	rows, err := b.pool.Query(b.ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "+b.store.DueQuery(), b.clock.Now(), limit+1)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	p := strings.Join(plan, "\n")
	t.Logf("plan:\n%s", p)
	if !strings.Contains(p, "Limit (actual rows=101 ") || !strings.Contains(p, "contacts_due_idx") || strings.Contains(p, "rows=2000") {
		t.Errorf("the count does not stop at %d rows of the due index:\n%s", limit+1, p)
	}

	// Within the limit: exact.
	if n, estimated, err := b.store.DueUpTo(b.ctx, 5000); err != nil || n != 2000 || estimated {
		t.Errorf("DueUpTo(5000) = %d, %v, %v; want exactly 2000", n, estimated, err)
	}
	if n, err := b.store.Due(b.ctx); err != nil || n != 2000 {
		t.Errorf("Due = %d, %v; want 2000", n, err)
	}
}
