package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// doneRows enqueues one row per expiry, claims them all and writes each done with a link that
// expires then (nil: no link), at the stub clock's now. It returns the ids in the order given.
func (b *bundle) doneRows(t *testing.T, expiries ...*time.Time) []int64 {
	t.Helper()
	ids := b.enqueuePhones(t, len(expiries))
	b.claim(t, "w", len(ids), time.Hour)
	ds := make([]store.Done, len(ids))
	for i, id := range ids {
		ds[i] = store.Done{Lease: b.lease(id), ExistsWhatsapp: ptr(true), AvatarAvailable: ptr(expiries[i] != nil), URLExpiresAt: expiries[i]}
		if expiries[i] != nil {
			ds[i].URLAvatar = "https://pps.whatsapp.net/a.jpg?oe=1"
		}
	}
	if n, err := b.store.Complete(b.ctx, "w", ds); err != nil || n != int64(len(ds)) {
		t.Fatalf("complete: %d, %v; want %d", n, err, len(ds))
	}
	return ids
}

// refresh is Refresh that fails the test on error.
func (b *bundle) refresh(t *testing.T, p store.RefreshPolicy) int64 {
	t.Helper()
	n, err := b.store.Refresh(b.ctx, p)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return n
}

// TestRefreshBeforeExpiry: a row whose link expires in 2 days becomes due 24 h before, not a
// second earlier; it keeps its answer until the new one, starts its attempts again, and is
// claimable once due. The link's expiry is written with the answer.
func TestRefreshBeforeExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := b.clock.Now()
	expires := start.Add(48 * time.Hour)
	id := b.doneRows(t, &expires)[0]
	if got := b.row(t, id).URLExpiresAt; got == nil || !got.Equal(expires) {
		t.Fatalf("url_expires_at %v, want %v", got, expires)
	}
	b.exec(t, "UPDATE "+b.table+" SET attempts = 3 WHERE id = $1", id)
	done := b.row(t, id)
	policy := store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault}

	b.clock.Advance(24*time.Hour - time.Second)
	if n := b.refresh(t, policy); n != 0 {
		t.Fatalf("a second before the refresh time: refreshed %d rows, want 0", n)
	}
	if got := b.claim(t, "r", 10, time.Minute); len(got) != 0 {
		t.Fatalf("claimed %d rows before the refresh time", len(got))
	}
	b.clock.Advance(time.Second)
	if n := b.refresh(t, policy); n != 1 {
		t.Fatalf("at the refresh time: refreshed %d rows, want 1", n)
	}
	want := done
	want.Status, want.Attempts, want.NextAttemptAt = store.StatusPending, 0, start.Add(24*time.Hour)
	got := b.row(t, id)
	want.UpdatedAt = got.UpdatedAt
	checkRow(t, got, want)
	if n := b.refresh(t, policy); n != 0 {
		t.Fatalf("again: refreshed %d rows, want 0 (the row is pending)", n)
	}
	if got := b.claim(t, "r", 10, time.Minute); len(got) != 1 || got[0].ID != id || got[0].Attempts != 0 {
		t.Fatalf("claimed %+v, want row %d with 0 attempts", got, id)
	}
}

// TestRefreshPolicy: which rows a refresh makes due, and when they join the claim order.
func TestRefreshPolicy(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	const stays = time.Duration(-1 << 63) // the row is still done after the refresh
	tests := []struct {
		name    string
		policy  store.RefreshPolicy
		expires time.Duration // from the answer; 0: no link
		advance time.Duration // from the answer to the refresh
		// due is when the row is due after the refresh, from the answer; stays: still done.
		due time.Duration
	}{
		{"no link: by age", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, 0, 7 * day, 7 * day},
		{"no link: not yet", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, 0, 7*day - time.Second, stays},
		{"no link, after 0: never", store.RefreshPolicy{BeforeExpiry: day}, 0, 365 * day, stays},
		{"expired in the past: due at once", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, -time.Hour, 0, -25 * time.Hour},
		{"link outlives the age", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, 14 * day, 7 * day, 7 * day},
		{"link outlives the age: not yet", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, 14 * day, 6 * day, stays},
		{"after 0: by the link", store.RefreshPolicy{BeforeExpiry: day}, 3 * day, 2 * day, 2 * day},
		{"before_expiry 0: at the expiry", store.RefreshPolicy{After: 7 * day}, 3 * day, 3 * day, 3 * day},
		{"overdue: keeps its place", store.RefreshPolicy{After: 7 * day, BeforeExpiry: day}, 2 * day, 30 * day, day},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			answered := b.clock.Now()
			var exp *time.Time
			if tc.expires != 0 {
				exp = ptr(answered.Add(tc.expires))
			}
			id := b.doneRows(t, exp)[0]
			b.clock.Advance(tc.advance)
			n := b.refresh(t, tc.policy)
			got := b.row(t, id)
			if tc.due == stays {
				if n != 0 || got.Status != store.StatusDone {
					t.Fatalf("refreshed %d, row %v; want it still done", n, got)
				}
				return
			}
			if n != 1 || got.Status != store.StatusPending || !got.NextAttemptAt.Equal(answered.Add(tc.due)) {
				t.Fatalf("refreshed %d, row %v; want it pending, due at %v", n, got, answered.Add(tc.due))
			}
			if got.URLExpiresAt == nil != (exp == nil) || got.ExistsWhatsapp == nil || !*got.ExistsWhatsapp {
				t.Errorf("row %v lost its answer", got)
			}
		})
	}
}

// TestRefreshChunks: more rows due than one chunk holds, through both indexes, are all moved,
// and rows not due stay.
func TestRefreshChunks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	exps := make([]*time.Time, store.RefreshChunk+50)
	for i := range exps {
		if i%2 == 0 {
			exps[i] = ptr(now.Add(time.Hour)) // due by the link at once
		}
	}
	exps = append(exps, ptr(now.Add(72*time.Hour))) // not due
	b.doneRows(t, exps...)
	// Rows with no link were answered a week ago: due by age.
	b.exec(t, "UPDATE "+b.table+" SET checked_at = checked_at - interval '8 days' WHERE url_expires_at IS NULL")
	if n := b.refresh(t, store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault}); n != int64(len(exps)-1) {
		t.Fatalf("refreshed %d rows, want %d", n, len(exps)-1)
	}
	var done int64
	if err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+b.table+" WHERE status = 'done'").Scan(&done); err != nil || done != 1 {
		t.Fatalf("%d rows still done (%v), want 1", done, err)
	}
}

func TestRefreshPolicyValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p  store.RefreshPolicy
		ok bool
	}{
		{store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault}, true},
		{store.RefreshPolicy{}, true},
		{store.RefreshPolicy{After: -time.Second}, false},
		{store.RefreshPolicy{BeforeExpiry: -time.Second}, false},
		{store.RefreshPolicy{BeforeExpiry: store.RefreshBeforeExpiryMax}, false},
		{store.RefreshPolicy{BeforeExpiry: store.RefreshBeforeExpiryMax - time.Second}, true},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok %v", tc.p, err, tc.ok)
		}
	}
}

// TestExpiringLinks counts done rows whose link expires within the window, not those expired
// already, those further off, or rows without a link; and stops at the limit.
func TestExpiringLinks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	b.doneRows(t, ptr(now.Add(time.Hour)), ptr(now.Add(23*time.Hour)), ptr(now.Add(24*time.Hour)),
		ptr(now.Add(25*time.Hour)), ptr(now.Add(-time.Hour)), nil)
	for _, tc := range []struct {
		limit  int64
		want   int64
		capped bool
	}{{0, 3, false}, {3, 3, false}, {2, 2, true}} {
		n, capped, err := b.store.ExpiringLinks(b.ctx, store.ExpiringWithin, tc.limit)
		if err != nil || n != tc.want || capped != tc.capped {
			t.Errorf("limit %d: %d, capped %v, %v; want %d, capped %v", tc.limit, n, capped, err, tc.want, tc.capped)
		}
	}
}

// TestExplainRefresh builds a 300,000-row table, two thirds done (answered over the last 30
// days, half with links expiring over the next 14), and checks that a refresh chunk walks the
// two partial indexes of done rows, never the table, and that the count of expiring links reads
// the expiry index alone.
func TestExplainRefresh(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	b.exec(t, `ALTER TABLE `+b.table+` SET UNLOGGED`)
	b.exec(t, `
		INSERT INTO `+b.table+` (phone_number, status, checked_at, url_expires_at, next_attempt_at)
		SELECT '7' || lpad(i::text, 10, '0'),
		       CASE WHEN i % 3 = 0 THEN 'pending' ELSE 'done' END,
		       CASE WHEN i % 3 <> 0 THEN $1::timestamptz - (300000 - i) * interval '8 seconds' END,
		       CASE WHEN i % 3 = 1 THEN $1::timestamptz + (i % 14000) * interval '86 seconds' END,
		       $1::timestamptz
		FROM generate_series(1, 300000) AS i`, now)
	b.exec(t, `ANALYZE `+b.table)
	plan, err := b.store.ExplainRefresh(b.ctx, store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("refresh plan:\n%s", plan)
	// The expiry arm may be a bitmap scan of the index and a sort when few links are due, as
	// here: what it reads is still bounded by the index range, never the table.
	for _, want := range []string{"Index Scan using contacts_refresh_age_idx on contacts", "contacts_refresh_expiry_idx",
		"using contacts_pkey on contacts t"} {
		if !strings.Contains(plan, want) {
			t.Errorf("refresh plan lacks %q", want)
		}
	}
	if strings.Contains(plan, "Seq Scan") {
		t.Errorf("refresh plan has a Seq Scan")
	}
	// The done rows here have no existence (answered by today's edition before it was
	// checked): with ExistsUnknown a chunk walks migrations/0015's partial index for them.
	plan, err = b.store.ExplainRefresh(b.ctx, store.RefreshPolicy{After: store.RefreshAfterDefault,
		BeforeExpiry: store.RefreshBeforeExpiryDefault, ExistsUnknown: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("refresh plan with ExistsUnknown:\n%s", plan)
	if !strings.Contains(plan, "contacts_exists_unknown_idx") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("refresh plan with ExistsUnknown does not walk contacts_exists_unknown_idx, or scans the table")
	}
	var pending int
	if err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+b.table+" WHERE status = 'pending'").Scan(&pending); err != nil || pending != 100000 {
		t.Fatalf("%d pending rows (%v): EXPLAIN ran the refresh", pending, err)
	}
	start := time.Now()
	n := b.refresh(t, store.RefreshPolicy{After: store.RefreshAfterDefault, BeforeExpiry: store.RefreshBeforeExpiryDefault})
	t.Logf("refresh moved %d rows in %v", n, time.Since(start).Round(time.Millisecond))
	var want int64
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM `+b.table+` WHERE status = 'pending' AND checked_at IS NOT NULL`).Scan(&want); err != nil || n != want || n == 0 {
		t.Errorf("refresh moved %d rows, %d are pending with an answer (%v)", n, want, err)
	}
}
