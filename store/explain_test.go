package store_test

import (
	"strings"
	"testing"
	"time"
)

// TestExplainClaim builds a 1,000,000-row table and checks the claim walks the partial due index
// instead of scanning and sorting the table.
func TestExplainClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()

	start := time.Now()
	// Unlogged: the rows need no WAL, which makes the insert several times faster; the plan is
	// the same.
	b.exec(t, `ALTER TABLE `+b.table+` SET UNLOGGED`)
	// 1M rows: 10% done, 10% failed, the rest pending with next_attempt_at one second apart
	// around the clock (half due), some leased. Ascending next_attempt_at and phone numbers keep
	// index inserts at the right edge of the B-trees: random order is several times slower.
	b.exec(t, `
		INSERT INTO `+b.table+` (phone_number, status, next_attempt_at, locked_by, locked_until)
		SELECT '7' || lpad(i::text, 10, '0'),
		       CASE i % 10 WHEN 0 THEN 'done' WHEN 1 THEN 'failed' ELSE 'pending' END,
		       $1::timestamptz + (i - 500000) * interval '1 second',
		       CASE WHEN i % 97 = 0 THEN 'someone' END,
		       CASE WHEN i % 97 = 0 THEN $1::timestamptz + interval '1 hour' END
		FROM generate_series(1, 1000000) AS i`, now)
	b.exec(t, `ANALYZE `+b.table)
	t.Logf("built and analyzed 1,000,000 rows in %v", time.Since(start).Round(time.Millisecond))

	plan, err := b.store.ExplainClaim(b.ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("claim plan:\n%s", plan)
	if !strings.Contains(plan, `Index Scan using contacts_due_idx on contacts`) {
		t.Fatalf("claim does not walk contacts_due_idx:\n%s", plan)
	}
	for _, bad := range []string{"Seq Scan", "Sort"} {
		if strings.Contains(plan, bad) {
			t.Errorf("claim plan has a %s:\n%s", bad, plan)
		}
	}
	// EXPLAIN must not have run the claim.
	if due, err := b.store.Due(b.ctx); err != nil || due == 0 {
		t.Fatalf("due = %d, %v", due, err)
	}
	var leased int
	if err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+b.table+" WHERE locked_by = 'explain'").Scan(&leased); err != nil || leased != 0 {
		t.Fatalf("EXPLAIN leased %d rows (%v)", leased, err)
	}

	// And a real claim on this table is fast and takes the most overdue rows.
	start = time.Now()
	got := b.claim(t, "run-a", 100, time.Minute)
	t.Logf("claim of %d rows took %v", len(got), time.Since(start).Round(time.Microsecond))
	if len(got) != 100 {
		t.Fatalf("claimed %d, want 100", len(got))
	}
}
