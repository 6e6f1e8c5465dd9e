package store_test

import (
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r, err := b.store.Status(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.ByStatus["pending"] != 0 || r.ByStatus["done"] != 0 || r.ByStatus["failed"] != 0 || r.OldestDue != nil || len(r.Reasons) != 0 {
		t.Fatalf("empty table report %+v", r)
	}

	ids := b.enqueuePhones(t, 10)
	now := b.clock.Now()
	// Two rows most overdue, so the claim below takes them; ids[2] is the oldest left.
	b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = ANY($2)", now.Add(-time.Hour), ids[:2])
	b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = $2", now.Add(-time.Minute), ids[2])
	if got := b.claim(t, "run-a", 6, time.Minute); len(got) != 6 { // ids 0,1,2 and three others
		t.Fatalf("claimed %d, want 6", len(got))
	}
	claimed := []int64{ids[0], ids[1], ids[2]}
	w, err := b.store.Write(b.ctx, "run-a", store.Batch{
		Done:   []store.Done{{Lease: b.lease(claimed[0])}},
		Failed: []store.Failure{{Lease: b.lease(claimed[1]), Reason: "http 400"}},
		Retry:  []store.Retry{{Lease: b.lease(claimed[2]), Reason: "timeout", Delay: time.Hour}},
	})
	if err != nil || w.Total() != 3 {
		t.Fatalf("write: %+v, %v", w, err)
	}
	// Now: 1 done, 1 failed, 8 pending of which 3 leased (run-a), 1 scheduled (retry), 4 due.
	r, err = b.store.Status(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"pending": 8, "done": 1, "failed": 1}
	for k, v := range want {
		if r.ByStatus[k] != v {
			t.Errorf("ByStatus[%s] = %d, want %d", k, r.ByStatus[k], v)
		}
	}
	if r.Due != 4 || r.Leased != 3 || r.Scheduled != 1 {
		t.Errorf("due/leased/scheduled = %d/%d/%d, want 4/3/1", r.Due, r.Leased, r.Scheduled)
	}
	if r.OldestDue == nil || !r.OldestDue.Equal(now) {
		t.Errorf("oldest due %v, want %v", r.OldestDue, now)
	}
	if len(r.Reasons) != 2 || r.Reasons[0] != (store.ReasonCount{Status: "failed", Reason: "http 400", Count: 1}) ||
		r.Reasons[1] != (store.ReasonCount{Status: "pending", Reason: "timeout", Count: 1}) {
		t.Errorf("reasons %+v", r.Reasons)
	}
	if due, err := b.store.Due(b.ctx); err != nil || due != r.Due {
		t.Errorf("Due() = %d, %v; want %d", due, err, r.Due)
	}

	// The leases expire: leased rows are due again; the retry is still scheduled.
	b.clock.Advance(2 * time.Minute)
	r, err = b.store.Status(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Due != 7 || r.Leased != 0 || r.Scheduled != 1 {
		t.Errorf("after expiry due/leased/scheduled = %d/%d/%d, want 7/0/1", r.Due, r.Leased, r.Scheduled)
	}
}
