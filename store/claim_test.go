package store_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

func TestClaim(t *testing.T) {
	t.Parallel()

	t.Run("LeasesDueRowsWithoutTouchingAttempts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 3)
		b.exec(t, "UPDATE "+b.table+" SET attempts = 2 WHERE id = $1", ids[1])
		before := b.row(t, ids[1])
		now := b.clock.Now()

		got := b.claim(t, "run-a", 10, time.Minute)
		if len(got) != 3 {
			t.Fatalf("claimed %d rows, want 3", len(got))
		}
		sort.Slice(got, func(i, j int) bool { return got[i].ID < got[j].ID })
		wantClaimed := store.Claimed{Lease: b.lease(ids[1]), PhoneNumber: ptr("79000000001"), ChatID: nil, Attempts: 2}
		if g := got[1]; g.Lease != wantClaimed.Lease || *g.PhoneNumber != *wantClaimed.PhoneNumber || g.ChatID != nil || g.Attempts != 2 {
			t.Errorf("claimed %+v, want %+v", g, wantClaimed)
		}

		after := b.row(t, ids[1])
		if after.UpdatedAt.Before(before.UpdatedAt) {
			t.Errorf("updated_at went back: %v -> %v", before.UpdatedAt, after.UpdatedAt)
		}
		want := before
		want.LockedBy = ptr("run-a")
		want.LockedUntil = ptr(now.Add(time.Minute))
		want.LeaseToken = ptr(b.lease(ids[1]).Token)
		want.NextAttemptAt = now.Add(time.Minute)
		want.UpdatedAt = after.UpdatedAt
		checkRow(t, after, want)
	})

	t.Run("ChatIDRow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if _, err := b.store.Enqueue(b.ctx, []store.NewContact{{ChatID: "79001112233@c.us"}}); err != nil {
			t.Fatal(err)
		}
		got := b.claim(t, "run-a", 1, time.Minute)
		if len(got) != 1 || got[0].PhoneNumber != nil || got[0].ChatID == nil || *got[0].ChatID != "79001112233@c.us" {
			t.Fatalf("claimed %+v, want the chat id row", got)
		}
	})

	t.Run("OldestFirstAndLimited", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 5)
		now := b.clock.Now()
		// Make the last rows the most overdue.
		for i, id := range ids {
			b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = $2", now.Add(-time.Duration(i)*time.Minute), id)
		}
		first := claimedIDs(b.claim(t, "run-a", 2, time.Minute))
		if !first[ids[4]] || !first[ids[3]] || len(first) != 2 {
			t.Fatalf("first claim got %v, want the two most overdue %d and %d", first, ids[4], ids[3])
		}
		second := claimedIDs(b.claim(t, "run-a", 2, time.Minute))
		if !second[ids[2]] || !second[ids[1]] || len(second) != 2 {
			t.Fatalf("second claim got %v, want %d and %d", second, ids[2], ids[1])
		}
	})

	t.Run("NeverClaimsNotDueDoneOrFailed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 4)
		now := b.clock.Now()
		b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = $2", now.Add(time.Second), ids[0])
		b.exec(t, "UPDATE "+b.table+" SET status = 'done' WHERE id = $1", ids[1])
		b.exec(t, "UPDATE "+b.table+" SET status = 'failed' WHERE id = $1", ids[2])

		got := b.claim(t, "run-a", 10, time.Minute)
		if len(got) != 1 || got[0].ID != ids[3] {
			t.Fatalf("claimed %+v, want only row %d", got, ids[3])
		}
		if n, err := b.store.Complete(b.ctx, "run-a", []store.Done{{Lease: b.lease(ids[3])}}); err != nil || n != 1 {
			t.Fatalf("complete: %d, %v", n, err)
		}
		// Done and failed rows stay out whatever the clock says; the scheduled row comes due.
		b.clock.Advance(time.Hour * 24 * 365)
		got = b.claim(t, "run-a", 10, time.Minute)
		if len(got) != 1 || got[0].ID != ids[0] {
			t.Fatalf("a year later claimed %+v, want only the scheduled row %d", got, ids[0])
		}
	})

	t.Run("LeasedRowsComeBackWhenTheLeaseExpires", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 2)
		if got := b.claim(t, "crashed", 10, time.Minute); len(got) != 2 {
			t.Fatalf("claimed %d, want 2", len(got))
		}
		// The holder is killed -9: nothing is written back.
		if got := b.claim(t, "run-b", 10, time.Minute); len(got) != 0 {
			t.Fatalf("leased rows claimed again before expiry: %+v", got)
		}
		b.clock.Advance(time.Minute - time.Microsecond)
		if got := b.claim(t, "run-b", 10, time.Minute); len(got) != 0 {
			t.Fatalf("claimed %+v a microsecond before the lease ends", got)
		}
		b.clock.Advance(time.Microsecond)
		got := b.claim(t, "run-b", 10, time.Minute)
		if len(got) != 2 {
			t.Fatalf("after expiry claimed %d rows, want 2", len(got))
		}
		for _, id := range ids {
			if r := b.row(t, id); r.LockedBy == nil || *r.LockedBy != "run-b" || r.Attempts != 0 {
				t.Errorf("row %v: want locked by run-b with attempts 0", r)
			}
		}
	})

	t.Run("DatabaseClockAndPlainInsert", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.NewPool(t)
		s, err := store.New(pool, store.Config{}) // production: the database's clock
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := pool.Exec(ctx, `INSERT INTO contacts (phone_number) VALUES ('79000000000')`); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO contacts (chat_id) VALUES ('79000000001@c.us')`); err != nil {
			t.Fatal(err)
		}
		got, err := s.Claim(ctx, "run-a", 1, 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("claimed %d rows inserted with only phone_number / chat_id, want 2", len(got))
		}
		var secs float64
		if err := pool.QueryRow(ctx, `SELECT extract(epoch FROM locked_until - now())::float8 FROM contacts LIMIT 1`).Scan(&secs); err != nil {
			t.Fatal(err)
		}
		if secs < 50 || secs > 60 {
			t.Errorf("lease ends in %.3fs, want about a minute from the database's now()", secs)
		}
	})

	t.Run("BadArguments", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.enqueuePhones(t, 1)
		if _, err := b.store.Claim(b.ctx, "", 1, 1, time.Minute); err == nil {
			t.Error("empty owner accepted")
		}
		if _, err := b.store.Claim(b.ctx, "run-a", 1, 1, 0); err == nil {
			t.Error("zero lease accepted")
		}
		if got, err := b.store.Claim(b.ctx, "run-a", 1, 0, time.Minute); err != nil || len(got) != 0 {
			t.Errorf("n=0: got %v, %v; want nothing", got, err)
		}
	})
}

// TestClaimConcurrent has 8 claimers drain 10,000 rows at once: no row may be handed out twice.
func TestClaimConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rows, workers, batch = 10_000, 8, 50
	b.enqueuePhones(t, rows)

	var (
		mu   sync.Mutex
		seen = make(map[int64]string, rows)
		dups []string
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := 0; w < workers; w++ {
		owner := fmt.Sprintf("worker-%d", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for token := int64(1); ; token++ {
				got, err := b.store.Claim(b.ctx, owner, token, batch, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					if prev, ok := seen[c.ID]; ok {
						dups = append(dups, fmt.Sprintf("%d by %s and %s", c.ID, prev, owner))
					}
					seen[c.ID] = owner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("claim: %v", err)
	}
	if len(dups) > 0 {
		t.Fatalf("%d rows claimed twice, e.g. %v", len(dups), dups[0])
	}
	if len(seen) != rows {
		t.Fatalf("claimed %d distinct rows, want %d", len(seen), rows)
	}
	perOwner := map[string]int{}
	for _, o := range seen {
		perOwner[o]++
	}
	t.Logf("rows per worker: %v", perOwner)
}
