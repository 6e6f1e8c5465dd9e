package memstore_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/internal/storecontract"
	"github.com/enrich-dev/enrich/store"
)

// The model of the budget is what the engine spends and what the contract describes.
var (
	_ enrich.Budget        = (*memstore.Budget)(nil)
	_ storecontract.Budget = (*memstore.Budget)(nil)
)

// clock is the model's clock in the contract: time moves only when the test says so.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestContract runs the store contract against the model; store's TestContract runs the same
// cases against PostgreSQL.
func TestContract(t *testing.T) {
	t.Parallel()
	storecontract.Run(t, func(t *testing.T) storecontract.Subject {
		c := &clock{now: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
		m := memstore.New(c.Now)
		return storecontract.Subject{
			Store:   m,
			Now:     c.Now,
			Advance: c.Advance,
			Enqueue: func(t *testing.T, n int) []int64 {
				cs := make([]store.NewContact, n)
				for i := range cs {
					cs[i].PhoneNumber = fmt.Sprintf("7900%07d", i)
				}
				ids := m.Enqueue(cs...)
				if len(ids) != n {
					t.Fatalf("enqueued %d rows, want %d", len(ids), n)
				}
				return ids
			},
			Row: func(t *testing.T, id int64) storecontract.Row {
				r, ok := m.Row(id)
				if !ok {
					t.Fatalf("no row %d", id)
				}
				return storecontract.Row{Status: r.Status, Attempts: r.Attempts, Reason: r.Reason, NextAttemptAt: r.NextAttemptAt,
					LockedBy: r.LockedBy, LockedUntil: r.LockedUntil, URLAvatar: r.URLAvatar, Exists: r.ExistsWhatsapp}
			},
			SetNextAttempt: func(t *testing.T, id int64, at time.Time) { m.SetNextAttempt(id, at) },
			Budget:         memstore.NewBudget(c.Now),
		}
	})
}

// TestEnqueueSkipsKnownContacts: a contact already in the table is not inserted again, as the
// table's unique indexes make store.Enqueue skip it.
func TestEnqueueSkipsKnownContacts(t *testing.T) {
	t.Parallel()
	m := memstore.New(nil)
	first := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"}, store.NewContact{ChatID: "79001234568@c.us"})
	again := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"}, store.NewContact{ChatID: "79001234568@c.us"},
		store.NewContact{PhoneNumber: "79001234569"})
	if len(first) != 2 || len(again) != 1 || again[0] != first[1]+1 {
		t.Fatalf("enqueued %v then %v, want 2 rows then only the new one", first, again)
	}
}

// TestExpire: an expired lease makes the row due while its claim still names the holder, so the
// holder may renew it until another claim takes it.
func TestExpire(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	m := memstore.New(c.Now)
	id := m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
	ctx := t.Context()
	got, err := m.Claim(ctx, "run-a", 1, 1, time.Hour)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim = %v, %v", got, err)
	}
	m.Expire(id)
	if n, _ := m.Due(ctx); n != 1 {
		t.Fatalf("due = %d after Expire, want 1", n)
	}
	if r, _ := m.Row(id); r.LockedBy != "run-a" || r.Leased(c.Now()) {
		t.Fatalf("row %+v after Expire, want still naming run-a, lease over", r)
	}
	stolen, err := m.Claim(ctx, "thief", 1, 1, time.Hour)
	if err != nil || len(stolen) != 1 {
		t.Fatalf("the thief's claim = %v, %v", stolen, err)
	}
	if ids, _ := m.Renew(ctx, "run-a", []store.Lease{got[0].Lease}, time.Hour); len(ids) != 0 {
		t.Fatalf("run-a renewed %v after the thief took the row", ids)
	}
}
