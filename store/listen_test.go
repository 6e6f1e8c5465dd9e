package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestListen: the listener wakes for its own table's rows becoming due (a plain INSERT through
// migration 0016's trigger, Enqueue, Requeue, a user's trigger following the convention) and for
// nothing else: another contacts table's inserts, another payload, a dry run. Notifications
// arrive in order on the connection, so an ignored action is checked by a marker sent after it:
// only the marker's wake may come.
func TestListen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	if _, err := b.pool.Exec(ctx, `CREATE SCHEMA crm`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Migrate(ctx, b.pool, "crm.contacts"); err != nil {
		t.Fatal(err)
	}
	oid, err := b.store.TableOID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wakes := make(chan struct{}, 100)
	listened := make(chan error, 1)
	go func() { listened <- b.store.Listen(ctx, func() { wakes <- struct{}{} }) }()
	waitWake := func(t *testing.T, what string) {
		t.Helper()
		select {
		case <-wakes:
		case err := <-listened:
			t.Fatalf("%s: the listener ended: %v", what, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no wake in 30 s", what)
		}
	}
	waitWake(t, "listening") // the first wake, once listening
	exec := func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := b.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	steps := []struct {
		name string
		do   func(t *testing.T)
		wake bool
	}{
		{"plain INSERT", func(t *testing.T) {
			exec(t, `INSERT INTO contacts (phone_number) VALUES ('79001110001'), ('79001110002')`)
		}, true},
		{"Enqueue", func(t *testing.T) {
			if _, err := b.store.Enqueue(ctx, []store.NewContact{{PhoneNumber: "79001110003"}}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a user's trigger", func(t *testing.T) { exec(t, `SELECT pg_notify('enrich_due', $1::oid::text)`, oid) }, true},
		{"another table's INSERT", func(t *testing.T) {
			exec(t, `INSERT INTO crm.contacts (phone_number) VALUES ('79001110004')`)
		}, false},
		{"another payload", func(t *testing.T) { exec(t, `SELECT pg_notify('enrich_due', '1')`) }, false},
		{"another channel", func(t *testing.T) { exec(t, `SELECT pg_notify('other', $1::oid::text)`, oid) }, false},
		{"Requeue dry run", func(t *testing.T) {
			exec(t, `UPDATE contacts SET status = 'failed', reason = 'x'`)
			if _, err := b.store.Requeue(ctx, store.RequeueFilter{Status: store.StatusFailed}, true); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"Requeue", func(t *testing.T) {
			if n, err := b.store.Requeue(ctx, store.RequeueFilter{Status: store.StatusFailed}, false); err != nil || n != 3 {
				t.Fatalf("requeue: %d rows, %v", n, err)
			}
		}, true},
	}
	for _, s := range steps {
		s.do(t)
		if !s.wake {
			exec(t, `SELECT pg_notify('enrich_due', $1::oid::text)`, oid) // the marker
		}
		waitWake(t, s.name)
		if n := len(wakes); n != 0 {
			t.Errorf("%s: %d wakes more than expected", s.name, n)
			for len(wakes) > 0 {
				<-wakes
			}
		}
	}
	cancel()
	if err := <-listened; err != context.Canceled {
		t.Fatalf("the listener after its context ended: %v, want context.Canceled", err)
	}
}
