package store_test

import (
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestWrite checks each kind of write-back field by field on a freshly claimed row.
func TestWrite(t *testing.T) {
	t.Parallel()

	const lease = 5 * time.Minute
	tests := []struct {
		name  string
		batch func(l store.Lease) store.Batch
		// want edits the claimed row into the expected one; now is the clock at the write.
		want    func(c *contact, now time.Time)
		written store.Written
	}{
		{
			name: "DoneTrue",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Done: []store.Done{{Lease: l, ExistsWhatsapp: ptr(true), AvatarAvailable: ptr(true), URLAvatar: "https://pps.whatsapp.net/a.jpg"}}}
			},
			want: func(c *contact, now time.Time) {
				c.Status, c.ExistsWhatsapp, c.AvatarAvailable = "done", ptr(true), ptr(true)
				c.URLAvatar, c.Reason, c.CheckedAt = ptr("https://pps.whatsapp.net/a.jpg"), ptr(""), ptr(now) // attempts unchanged
			},
			written: store.Written{Done: 1},
		},
		{
			name: "DoneFalseIsNotNull",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Done: []store.Done{{Lease: l, ExistsWhatsapp: ptr(false), AvatarAvailable: ptr(false)}}}
			},
			want: func(c *contact, now time.Time) {
				c.Status, c.ExistsWhatsapp, c.AvatarAvailable = "done", ptr(false), ptr(false)
				c.URLAvatar, c.Reason, c.CheckedAt = ptr(""), ptr(""), ptr(now)
			},
			written: store.Written{Done: 1},
		},
		{
			name: "DoneUnknownIsNull",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Done: []store.Done{{Lease: l, ExistsWhatsapp: ptr(true), AvatarAvailable: nil}}}
			},
			want: func(c *contact, now time.Time) {
				c.Status, c.ExistsWhatsapp, c.AvatarAvailable = "done", ptr(true), nil
				c.URLAvatar, c.Reason, c.CheckedAt = ptr(""), ptr(""), ptr(now)
			},
			written: store.Written{Done: 1},
		},
		{
			name: "Retry",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Retry: []store.Retry{{Lease: l, Reason: "http 429", Delay: 90 * time.Second}}}
			},
			want: func(c *contact, now time.Time) {
				c.Reason, c.Attempts, c.NextAttemptAt = ptr("http 429"), c.Attempts+1, now.Add(90*time.Second)
			},
			written: store.Written{Retried: 1},
		},
		{
			name: "FailedAfterACall",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Failed: []store.Failure{{Lease: l, Reason: "http 400", Attempted: true}}}
			},
			want: func(c *contact, now time.Time) {
				c.Status, c.Reason, c.Attempts, c.CheckedAt = "failed", ptr("http 400"), c.Attempts+1, ptr(now)
			},
			written: store.Written{Failed: 1},
		},
		{
			name: "FailedValidation",
			batch: func(l store.Lease) store.Batch {
				return store.Batch{Failed: []store.Failure{{Lease: l, Reason: "invalid phone number", Attempted: false}}}
			},
			want: func(c *contact, now time.Time) {
				c.Status, c.Reason, c.CheckedAt = "failed", ptr("invalid phone number"), ptr(now)
			},
			written: store.Written{Failed: 1},
		},
		{
			name:  "Released",
			batch: func(l store.Lease) store.Batch { return store.Batch{Released: []store.Lease{l}} },
			want: func(c *contact, now time.Time) {
				c.NextAttemptAt = now // due again, nothing else changes
			},
			written: store.Written{Released: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ids := b.enqueuePhones(t, 2)
			id := ids[0]
			// A previous retry left a reason and an attempt behind.
			b.exec(t, "UPDATE "+b.table+" SET attempts = 3, reason = 'timeout' WHERE id = $1", id)
			if got := b.claim(t, "run-a", 2, lease); len(got) != 2 {
				t.Fatalf("claimed %d, want 2", len(got))
			}
			claimed := b.row(t, id)
			other := b.row(t, ids[1])
			now := b.clock.Advance(time.Minute)

			w, err := b.store.Write(b.ctx, "run-a", tt.batch(b.lease(id)))
			if err != nil {
				t.Fatalf("write: %v", err)
			}
			if w != tt.written {
				t.Errorf("written %+v, want %+v", w, tt.written)
			}

			got := b.row(t, id)
			want := claimed
			want.LockedBy, want.LockedUntil, want.LeaseToken = nil, nil, nil // every write-back unlocks
			tt.want(&want, now)
			if got.UpdatedAt.Before(claimed.UpdatedAt) {
				t.Errorf("updated_at went back: %v -> %v", claimed.UpdatedAt, got.UpdatedAt)
			}
			want.UpdatedAt = got.UpdatedAt
			checkRow(t, got, want)
			checkRow(t, b.row(t, ids[1]), other) // the neighbour is untouched

			// The row is no longer ours: writing it again changes nothing.
			again, err := b.store.Write(b.ctx, "run-a", tt.batch(b.lease(id)))
			if err != nil {
				t.Fatalf("second write: %v", err)
			}
			if again != (store.Written{}) {
				t.Errorf("second write changed %+v, want nothing", again)
			}
			checkRow(t, b.row(t, id), got)
		})
	}
}

func TestWriteBatch(t *testing.T) {
	t.Parallel()

	t.Run("AllKindsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 6)
		b.claim(t, "run-a", 6, time.Minute)
		w, err := b.store.Write(b.ctx, "run-a", store.Batch{
			Done:     []store.Done{{Lease: b.lease(ids[0])}, {Lease: b.lease(ids[1])}},
			Retry:    []store.Retry{{Lease: b.lease(ids[2]), Reason: "timeout"}},
			Failed:   []store.Failure{{Lease: b.lease(ids[3]), Reason: "bad", Attempted: true}},
			Released: []store.Lease{b.lease(ids[4]), b.lease(ids[5]), {ID: 999999, Token: 1}}, // unknown ids are not counted
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := (store.Written{Done: 2, Retried: 1, Failed: 1, Released: 2}); w != want {
			t.Fatalf("written %+v, want %+v", w, want)
		}
		// Retry with no delay and released rows are due at once.
		if due, err := b.store.Due(b.ctx); err != nil || due != 3 {
			t.Fatalf("due = %d, %v; want 3", due, err)
		}
	})

	t.Run("OneTransaction", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 2)
		b.claim(t, "run-a", 2, time.Minute)
		before := b.row(t, ids[0])
		// PostgreSQL rejects a NUL byte in text: the second statement fails, so the first,
		// already executed, must be rolled back with it.
		_, err := b.store.Write(b.ctx, "run-a", store.Batch{
			Done:   []store.Done{{Lease: b.lease(ids[0]), ExistsWhatsapp: ptr(true)}},
			Failed: []store.Failure{{Lease: b.lease(ids[1]), Reason: "bad\x00byte"}},
		})
		if err == nil {
			t.Fatal("write with a NUL byte succeeded")
		}
		t.Logf("expected error: %v", err)
		checkRow(t, b.row(t, ids[0]), before)
		// And the connection is fine afterwards.
		if n, err := b.store.Complete(b.ctx, "run-a", []store.Done{{Lease: b.lease(ids[0])}}); err != nil || n != 1 {
			t.Fatalf("complete after failed batch: %d, %v", n, err)
		}
	})

	t.Run("Wrappers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ids := b.enqueuePhones(t, 4)
		b.claim(t, "run-a", 4, time.Minute)
		check := func(name string, n int64, err error) {
			t.Helper()
			if err != nil || n != 1 {
				t.Errorf("%s = %d, %v; want 1, nil", name, n, err)
			}
		}
		n, err := b.store.Complete(b.ctx, "run-a", []store.Done{{Lease: b.lease(ids[0])}})
		check("Complete", n, err)
		n, err = b.store.Reschedule(b.ctx, "run-a", []store.Retry{{Lease: b.lease(ids[1]), Delay: time.Hour}})
		check("Reschedule", n, err)
		n, err = b.store.Fail(b.ctx, "run-a", []store.Failure{{Lease: b.lease(ids[2])}})
		check("Fail", n, err)
		n, err = b.store.Release(b.ctx, "run-a", []store.Lease{b.lease(ids[3])})
		check("Release", n, err)
		if n, err := b.store.Release(b.ctx, "run-a", nil); err != nil || n != 0 {
			t.Errorf("empty release = %d, %v", n, err)
		}
		if _, err := b.store.Write(b.ctx, "", store.Batch{Released: []store.Lease{b.lease(ids[0])}}); err == nil {
			t.Error("empty owner accepted")
		}
	})

	t.Run("LargerThanAChunk", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const n = store.ChunkSize + 123
		ids := b.enqueuePhones(t, n)
		if got := b.claim(t, "run-a", n, time.Minute); len(got) != n {
			t.Fatalf("claimed %d, want %d", len(got), n)
		}
		done := make([]store.Done, n)
		for i, id := range ids {
			done[i] = store.Done{Lease: b.lease(id), ExistsWhatsapp: ptr(i%2 == 0)}
		}
		if got, err := b.store.Complete(b.ctx, "run-a", done); err != nil || got != n {
			t.Fatalf("complete = %d, %v; want %d", got, err, n)
		}
	})
}

// TestLeaseLost: a run whose lease expired and whose rows were claimed by another run cannot
// overwrite the newer work; the new holder's writes land.
func TestLeaseLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.enqueuePhones(t, 2)
	if got := b.claim(t, "slow", 2, time.Minute); len(got) != 2 {
		t.Fatalf("claimed %d, want 2", len(got))
	}
	old := []store.Lease{b.lease(ids[0]), b.lease(ids[1])}
	b.clock.Advance(2 * time.Minute)
	if got := b.claim(t, "fresh", 2, time.Minute); len(got) != 2 {
		t.Fatalf("after expiry claimed %d, want 2", len(got))
	}
	// The new holder finishes one row, the other is still in flight.
	if n, err := b.store.Complete(b.ctx, "fresh", []store.Done{{Lease: b.lease(ids[0]), ExistsWhatsapp: ptr(true), URLAvatar: "new"}}); err != nil || n != 1 {
		t.Fatalf("fresh complete = %d, %v", n, err)
	}
	doneRow, inFlight := b.row(t, ids[0]), b.row(t, ids[1])

	w, err := b.store.Write(b.ctx, "slow", store.Batch{
		Done:     []store.Done{{Lease: old[0], ExistsWhatsapp: ptr(false), URLAvatar: "old"}},
		Retry:    []store.Retry{{Lease: old[1], Reason: "old"}},
		Failed:   []store.Failure{{Lease: old[1], Reason: "old", Attempted: true}},
		Released: old,
	})
	if err != nil {
		t.Fatal(err)
	}
	if w != (store.Written{}) {
		t.Fatalf("stale holder wrote %+v, want nothing", w)
	}
	checkRow(t, b.row(t, ids[0]), doneRow)
	checkRow(t, b.row(t, ids[1]), inFlight)

	if n, err := b.store.Fail(b.ctx, "fresh", []store.Failure{{Lease: b.lease(ids[1]), Reason: "new", Attempted: true}}); err != nil || n != 1 {
		t.Fatalf("fresh fail = %d, %v", n, err)
	}
	if r := b.row(t, ids[1]); r.Status != "failed" || *r.Reason != "new" || r.Attempts != 1 {
		t.Errorf("row after fresh write: %v", r)
	}
}
