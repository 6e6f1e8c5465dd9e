package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// TestRenew: a renewal moves the lease of rows still held under their claim, and only those.
func TestRenew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.enqueuePhones(t, 3)
	b.claim(t, "run-a", 3, time.Minute)
	// Row 2 is written back: it is no longer held and must not be renewed.
	if n, err := b.store.Complete(b.ctx, "run-a", []store.Done{{Lease: b.lease(ids[2])}}); err != nil || n != 1 {
		t.Fatalf("complete: %d, %v", n, err)
	}
	now := b.clock.Advance(50 * time.Second)
	leases := []store.Lease{b.lease(ids[0]), {ID: ids[1], Token: b.lease(ids[1]).Token + 1}, b.lease(ids[2])}
	got, err := b.store.Renew(b.ctx, "run-a", leases, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{ids[0]}) {
		t.Fatalf("renewed %v, want only %d (row %d has another token, row %d was written)", got, ids[0], ids[1], ids[2])
	}
	r := b.row(t, ids[0])
	if r.LockedUntil == nil || !r.LockedUntil.Equal(now.Add(time.Minute)) || !r.NextAttemptAt.Equal(now.Add(time.Minute)) {
		t.Errorf("renewed row %v: want locked_until = next_attempt_at = %v", r, now.Add(time.Minute))
	}
	if r := b.row(t, ids[1]); !r.LockedUntil.Equal(now.Add(10 * time.Second)) {
		t.Errorf("row with the wrong token was renewed: %v", r)
	}
	// Another owner cannot renew run-a's rows.
	if got, err := b.store.Renew(b.ctx, "run-b", leases[:1], time.Minute); err != nil || len(got) != 0 {
		t.Errorf("run-b renewed %v, %v", got, err)
	}
	// Past the original lease the renewed row is still not due; the other one is.
	b.clock.Advance(20 * time.Second)
	if c := b.claim(t, "run-b", 3, time.Minute); len(c) != 1 || c[0].ID != ids[1] {
		t.Fatalf("after the old lease ended run-b claimed %+v, want only row %d", c, ids[1])
	}
	if _, err := b.store.Renew(b.ctx, "", leases, time.Minute); err == nil {
		t.Error("empty owner accepted")
	}
	if _, err := b.store.Renew(b.ctx, "run-a", leases, 0); err == nil {
		t.Error("zero lease accepted")
	}
}

// TestOwnStaleClaimIsFenced: a run whose lease ran out and that claimed the same row again holds
// two claims of it; only the newer one may write.
func TestOwnStaleClaimIsFenced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.enqueuePhones(t, 1)
	b.claim(t, "run-a", 1, time.Minute)
	stale := b.lease(ids[0])
	b.clock.Advance(2 * time.Minute)
	b.claim(t, "run-a", 1, time.Minute)
	fresh := b.lease(ids[0])
	if fresh.Token == stale.Token {
		t.Fatal("the second claim reused the token")
	}
	if w, err := b.store.Write(b.ctx, "run-a", store.Batch{Done: []store.Done{{Lease: stale, URLAvatar: "stale"}}}); err != nil || w.Total() != 0 {
		t.Fatalf("write through the stale claim changed %+v, %v; want nothing", w, err)
	}
	if w, err := b.store.Write(b.ctx, "run-a", store.Batch{Done: []store.Done{{Lease: fresh, URLAvatar: "fresh"}}}); err != nil || w.Done != 1 {
		t.Fatalf("write through the fresh claim = %+v, %v", w, err)
	}
	if r := b.row(t, ids[0]); *r.URLAvatar != "fresh" || r.LeaseToken != nil {
		t.Errorf("row %v, want the fresh answer and no lease token", r)
	}
}

// TestCheck: a missing table or one from an older migration is named with the remedy.
func TestCheck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.store.Check(b.ctx); err != nil {
		t.Fatalf("migrated table: %v", err)
	}
	pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
	missing, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := missing.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "enrich migrate") {
		t.Errorf("missing table: %v, want a remedy naming enrich migrate", err)
	}
	// The instances' budget before migration 0010 fails the check, not the first reservation.
	b.exec(t, "ALTER TABLE enrich.enrich_instances DROP COLUMN headroom")
	if err := b.store.Check(b.ctx); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("budget without headroom: %v, want a remedy naming the upgrade", err)
	}
	b.exec(t, "ALTER TABLE enrich.enrich_instances ADD COLUMN headroom double precision NOT NULL DEFAULT 0")
	if err := b.store.Check(b.ctx); err != nil {
		t.Fatalf("budget with headroom again: %v", err)
	}
	// A table before migration 0014: its exists_source check refuses this version's sources.
	b.exec(t, "ALTER TABLE "+b.table+" DROP CONSTRAINT contacts_exists_source_check")
	b.exec(t, "ALTER TABLE "+b.table+" ADD CHECK (exists_source IN ('getAvatar', 'checkWhatsapp'))")
	if err := b.store.Check(b.ctx); err == nil || !strings.Contains(err.Error(), "0014") || !strings.Contains(err.Error(), "enrich migrate") {
		t.Errorf("exists_source check of 0008: %v, want a remedy naming migration 0014 and enrich migrate", err)
	}
	b.exec(t, "ALTER TABLE "+b.table+" DROP CONSTRAINT contacts_exists_source_check")
	if err := b.store.Check(b.ctx); err != nil {
		t.Fatalf("no exists_source check: %v", err)
	}
	b.exec(t, "ALTER TABLE "+b.table+" DROP COLUMN lease_token")
	if err := b.store.Check(b.ctx); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("old table: %v, want a remedy naming the upgrade", err)
	}
}
