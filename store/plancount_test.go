package store_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// seedPlan fills a table with one group of rows for each case Plan tells apart, relative to the
// stub clock's now, and returns now.
func (b *bundle) seedPlan(t *testing.T) time.Time {
	t.Helper()
	now := b.clock.Now()
	type group struct {
		n   int
		set string // the columns the group's rows get, $1 = now
	}
	groups := []group{
		{5, `status = 'pending', next_attempt_at = $1::timestamptz - interval '1 minute'`},                                                                                                 // due now
		{3, `status = 'pending', next_attempt_at = $1::timestamptz + interval '10 hours', attempts = 1`},                                                                                   // a retry in 10 h
		{2, `status = 'pending', next_attempt_at = $1::timestamptz + interval '30 hours', attempts = 1`},                                                                                   // a retry in 30 h
		{1, `status = 'pending', next_attempt_at = $1::timestamptz + interval '10 minutes', locked_by = 'other', lease_token = 1, locked_until = $1::timestamptz + interval '10 minutes'`}, // leased by a run
		{4, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz, url_expires_at = $1::timestamptz + interval '6 hours'`},                                                // link expires within 24 h
		{2, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz, url_expires_at = $1::timestamptz + interval '40 hours'`},                                               // link expires in 40 h
		{1, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz - interval '8 days'`},                                                                                   // answer older than a week
		{1, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz - interval '156 hours'`},                                                                                // a week old in 12 h
		{1, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz - interval '8 days', url_expires_at = $1::timestamptz + interval '6 hours'`},                            // both
		{1, `status = 'done', exists_whatsapp = NULL, checked_at = $1::timestamptz`},                                                                                                       // existence unknown
		{2, `status = 'done', exists_whatsapp = true, checked_at = $1::timestamptz`},                                                                                                       // fresh, no link
		{2, `status = 'failed', reason = 'bad request data', checked_at = $1::timestamptz - interval '8 days'`},                                                                            // failed: never due
	}
	total := 0
	for _, g := range groups {
		total += g.n
	}
	ids := b.enqueuePhones(t, total)
	i := 0
	for _, g := range groups {
		b.exec(t, fmt.Sprintf(`UPDATE %s SET %s WHERE id = ANY ($2::bigint[])`, b.table, g.set), now, ids[i:i+g.n])
		i += g.n
	}
	return now
}

// TestPlanCounts: on a table with rows due now, retries due in 10 h and in 30 h, a leased row,
// and done rows whose links expire within 24 h or later, whose answers are old or about to be,
// or whose existence is unknown, Plan counts exactly the rows a run would take now and those
// coming due within 24 h, under each refresh policy, each row once; with a limit below the
// counts it says which figures stopped there.
func TestPlanCounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seedPlan(t)
	week, day := store.RefreshAfterDefault, store.RefreshBeforeExpiryDefault
	for _, tc := range []struct {
		name string
		req  store.PlanRequest
		want store.PlanCounts
	}{
		{
			// The defaults: links within 24 h of their expiry are due now, as are the week-old
			// answers and the unknown one; the 40 h links and the 156 h answer come due within 24 h.
			name: "defaults",
			req:  store.PlanRequest{Policy: store.RefreshPolicy{After: week, BeforeExpiry: day, ExistsUnknown: true}},
			want: store.PlanCounts{DuePending: 5, DueRefresh: 4 + 1 + 1 + 1, Retries: 3, Refreshes: 2 + 1},
		},
		{
			// Refreshed at the expiry only, existence not asked: nothing done is due now; the
			// links expiring within 24 h (the one with an old answer too) come due within it.
			name: "at expiry only",
			req:  store.PlanRequest{Policy: store.RefreshPolicy{}},
			want: store.PlanCounts{DuePending: 5, Retries: 3, Refreshes: 4 + 1},
		},
		{
			name: "by age, at expiry",
			req:  store.PlanRequest{Policy: store.RefreshPolicy{After: week, ExistsUnknown: true}},
			want: store.PlanCounts{DuePending: 5, DueRefresh: 1 + 1 + 1, Retries: 3, Refreshes: 4 + 1},
		},
		{
			// A window of 48 h takes in the 30 h retries and the 40 h links (due at 16 h anyway).
			name: "48 h window",
			req:  store.PlanRequest{Policy: store.RefreshPolicy{After: week, BeforeExpiry: day, ExistsUnknown: true}, Window: 48 * time.Hour},
			want: store.PlanCounts{DuePending: 5, DueRefresh: 7, Retries: 3 + 2, Refreshes: 2 + 1},
		},
		{
			name: "limit 2",
			req:  store.PlanRequest{Policy: store.RefreshPolicy{After: week, BeforeExpiry: day, ExistsUnknown: true}, Limit: 2},
			want: store.PlanCounts{DuePending: 2, DuePendingEstimated: true, DueRefresh: 2, DueRefreshCapped: true,
				Retries: 2, RetriesCapped: true, Refreshes: 2 + 1}, // the refreshes' two indexes each hold fewer than 3: exact
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.store.Plan(b.ctx, tc.req)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if !got.TakenAt.Equal(b.clock.Now()) {
				t.Errorf("taken at %v, want the clock's %v", got.TakenAt, b.clock.Now())
			}
			got.TakenAt, got.Window, got.Limit = time.Time{}, 0, 0
			if got != tc.want {
				t.Errorf("plan:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}

	// What the plan says is due now is what a run takes: Refresh moves the done rows it
	// counted, and the claim finds them with the pending ones.
	p := store.RefreshPolicy{After: week, BeforeExpiry: day, ExistsUnknown: true}
	plan, err := b.store.Plan(b.ctx, store.PlanRequest{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.refresh(t, p); n != plan.DueRefresh {
		t.Errorf("refresh moved %d rows, the plan counted %d", n, plan.DueRefresh)
	}
	if got := b.claim(t, "run", 1000, time.Minute); int64(len(got)) != plan.DueNow() {
		t.Errorf("a run claimed %d rows, the plan counted %d due now", len(got), plan.DueNow())
	}
}

// TestPlanBounded: on a table with thousands of rows in every case Plan counts, each of its
// statements walks an index and reads at most the limit + 1 rows of each (never a sequential
// scan), so a plan of 10M rows costs what one of 20,000 does.
func TestPlanBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n, limit = 4000, 100
	now := b.clock.Now()
	b.exec(t, fmt.Sprintf(`INSERT INTO %s (phone_number, status, next_attempt_at, checked_at, url_expires_at, exists_whatsapp)
		SELECT (79000000000 + g)::text,
		       CASE WHEN g %% 5 < 2 THEN 'pending' ELSE 'done' END,
		       CASE g %% 5 WHEN 0 THEN $1::timestamptz - interval '1 hour' ELSE $1::timestamptz + interval '5 hours' END,
		       CASE g %% 5 WHEN 2 THEN $1::timestamptz - interval '8 days' WHEN 3 THEN $1::timestamptz - interval '156 hours' ELSE $1::timestamptz END,
		       CASE g %% 5 WHEN 4 THEN $1::timestamptz + interval '30 hours' WHEN 2 THEN $1::timestamptz + interval '6 hours' END,
		       CASE WHEN g %% 7 = 0 THEN NULL ELSE true END
		FROM generate_series(1, %d) AS g`, b.table, 5*n), now)
	b.exec(t, "VACUUM (ANALYZE) "+b.table)
	p := store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault, ExistsUnknown: true}
	after, before, window := p.After.Microseconds(), p.BeforeExpiry.Microseconds(), store.PlanWindowDefault.Microseconds()
	args := map[string][]any{
		"refresh now":   {now, after, before, int64(limit + 1), true},
		"refresh later": {now, after, before, int64(limit + 1), true, window},
		"retries":       {now, window, int64(limit + 1)},
	}
	for name, sql := range b.store.PlanQueries() {
		t.Run(name, func(t *testing.T) {
			plan := explainAnalyze(t, b, sql, args[name]...)
			if seq := plan.nodes("Seq Scan"); len(seq) > 0 {
				t.Errorf("%s scans the table:\n%s", name, plan.text)
			}
			var walk func(n planNode)
			walk = func(n planNode) {
				if strings.Contains(n.Type, "Scan") && n.Rows*max(n.Loops, 1) > limit+1 {
					t.Errorf("%s: a %s returned %d rows, more than the limit + 1 (%d):\n%s", name, n.Type, n.Rows, limit+1, plan.text)
				}
				for _, c := range n.Plans {
					walk(c)
				}
			}
			walk(plan.root)
		})
	}
	got, err := b.store.Plan(b.ctx, store.PlanRequest{Policy: p, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan of %d rows at limit %d: %+v", 5*n, limit, got)
	if !got.DuePendingEstimated || !got.DueRefreshCapped || !got.RetriesCapped || !got.RefreshesCapped {
		t.Errorf("every count is past the limit, but the plan does not say so: %+v", got)
	}
	if got.DuePending < 6000 || got.DuePending > 10000 {
		t.Errorf("pending rows due: %d, want PostgreSQL's estimate of the 8,000 pending rows (the due ones are not told apart)", got.DuePending)
	}
}
