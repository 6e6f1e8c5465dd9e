package store_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
)

// requeueGroups is a table of every kind of row, each group's ids in chunks of their own (the
// ids jump by more than RequeueChunk between groups), so that Requeue crosses chunks.
var requeueGroups = []struct {
	name string
	g    group
}{
	{"done old", group{n: 3, status: "done", reason: ptr(""), checkedBefore: 60 * 24 * time.Hour}},
	{"done recent", group{n: 2, status: "done", reason: ptr(""), checkedBefore: 24 * time.Hour}},
	{"failed 400 old", group{n: 4, status: "failed", reason: ptr("http 400"), checkedBefore: 45 * 24 * time.Hour}},
	{"failed 400 recent", group{n: 2, status: "failed", reason: ptr("http 400"), checkedBefore: time.Hour}},
	{"failed bad data old", group{n: 3, status: "failed", reason: ptr("bad data"), checkedBefore: 90 * 24 * time.Hour}},
	// Never written by enrich, but a lease is a lease: requeue leaves it alone.
	{"failed leased", group{n: 1, status: "failed", reason: ptr("http 400"), checkedBefore: 60 * 24 * time.Hour, leased: time.Hour}},
	{"pending due", group{n: 2, status: "pending", due: -time.Minute}},
	{"pending leased", group{n: 2, status: "pending", due: time.Hour, leased: time.Hour}},
	{"pending scheduled", group{n: 2, status: "pending", reason: ptr("timeout"), due: time.Hour}},
}

func TestRequeue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		filter store.RequeueFilter
		dryRun bool
		moved  []string // the groups put back
	}{
		{name: "every failed row", filter: store.RequeueFilter{Status: "failed"},
			moved: []string{"failed 400 old", "failed 400 recent", "failed bad data old"}},
		{name: "failed by reason", filter: store.RequeueFilter{Status: "failed", Reason: ptr("http 400")},
			moved: []string{"failed 400 old", "failed 400 recent"}},
		{name: "reason is an exact match", filter: store.RequeueFilter{Status: "failed", Reason: ptr("HTTP 400")}},
		{name: "reason is not a pattern", filter: store.RequeueFilter{Status: "failed", Reason: ptr("http%")}},
		{name: "failed by age", filter: store.RequeueFilter{Status: "failed", OlderThan: 30 * 24 * time.Hour},
			moved: []string{"failed 400 old", "failed bad data old"}},
		{name: "failed by reason and age", filter: store.RequeueFilter{Status: "failed", Reason: ptr("http 400"), OlderThan: 30 * 24 * time.Hour},
			moved: []string{"failed 400 old"}},
		{name: "every done row", filter: store.RequeueFilter{Status: "done"}, moved: []string{"done old", "done recent"}},
		{name: "done by age", filter: store.RequeueFilter{Status: "done", OlderThan: 30 * 24 * time.Hour}, moved: []string{"done old"}},
		{name: "done with an empty reason", filter: store.RequeueFilter{Status: "done", Reason: ptr("")}, moved: []string{"done old", "done recent"}},
		{name: "older than everything", filter: store.RequeueFilter{Status: "failed", OlderThan: 1000 * 24 * time.Hour}},
		{name: "dry run", filter: store.RequeueFilter{Status: "failed"}, dryRun: true,
			moved: []string{"failed 400 old", "failed 400 recent", "failed bad data old"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			groupOf := map[int64]string{}
			for i, rg := range requeueGroups {
				b.exec(t, "ALTER TABLE "+b.table+" ALTER COLUMN id RESTART WITH "+
					strconv.Itoa((i+1)*(store.RequeueChunk+7)))
				var first int64
				if err := b.pool.QueryRow(b.ctx, "SELECT coalesce(max(id), 0) FROM "+b.table).Scan(&first); err != nil {
					t.Fatal(err)
				}
				b.fill(t, []group{rg.g})
				rows, err := b.pool.Query(b.ctx, "SELECT id FROM "+b.table+" WHERE id > $1", first)
				if err != nil {
					t.Fatal(err)
				}
				ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range ids {
					groupOf[id] = rg.name
				}
			}
			// Results and attempts on finished rows, to see what requeue keeps and resets.
			b.exec(t, "UPDATE "+b.table+" SET attempts = 3 WHERE status <> 'pending' OR reason = 'timeout'")
			b.exec(t, "UPDATE "+b.table+" SET exists_whatsapp = true, avatar_available = true, url_avatar = 'https://pps.whatsapp.net/a.jpg' WHERE status = 'done'")
			before := map[int64]contact{}
			for id := range groupOf {
				before[id] = b.row(t, id)
			}
			moved := map[string]bool{}
			var want int64
			for _, g := range tc.moved {
				moved[g] = true
			}
			for _, name := range groupOf {
				if moved[name] {
					want++
				}
			}

			n, err := b.store.Requeue(b.ctx, tc.filter, tc.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Errorf("Requeue = %d rows, want %d (%v)", n, want, tc.moved)
			}
			now := b.clock.Now()
			for id, name := range groupOf {
				got, old := b.row(t, id), before[id]
				if !moved[name] || tc.dryRun {
					checkRow(t, got, old)
					continue
				}
				want := old
				want.Status, want.Attempts, want.Reason, want.NextAttemptAt = "pending", 0, nil, now
				want.LockedBy, want.LockedUntil, want.LeaseToken = nil, nil, nil
				want.UpdatedAt = got.UpdatedAt
				if got.UpdatedAt.Before(old.UpdatedAt) {
					t.Errorf("row %d (%s): updated_at went back from %v to %v", id, name, old.UpdatedAt, got.UpdatedAt)
				}
				checkRow(t, got, want)
			}
			// Requeued rows are claimable at once, and a second requeue finds nothing more.
			if !tc.dryRun && want > 0 {
				if n, err := b.store.Requeue(b.ctx, tc.filter, false); err != nil || n != 0 {
					t.Errorf("second Requeue = %d, %v; want 0", n, err)
				}
				got := b.claim(t, "run-a", 100, time.Minute)
				if due := int64(len(got)); due != want+2 { // and the two pending due rows
					t.Errorf("claimed %d rows after requeue, want %d", due, want+2)
				}
			}
		})
	}
}

func TestRequeueRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range []store.RequeueFilter{{Status: "pending"}, {Status: ""}, {Status: "Failed"}, {Status: "failed", OlderThan: -time.Hour}} {
		if n, err := b.store.Requeue(b.ctx, f, false); err == nil || n != 0 || !strings.Contains(err.Error(), "requeue") {
			t.Errorf("Requeue(%+v) = %d, %v; want an error", f, n, err)
		}
	}
	// An empty table: nothing to do.
	if n, err := b.store.Requeue(b.ctx, store.RequeueFilter{Status: "failed"}, false); err != nil || n != 0 {
		t.Errorf("Requeue of an empty table = %d, %v", n, err)
	}
}
