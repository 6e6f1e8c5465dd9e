package store_test

import (
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/storecontract"
)

// TestContract runs the store contract the engine relies on against PostgreSQL; memstore's
// TestContract runs the same cases against the in-memory model of the engine's simulation.
func TestContract(t *testing.T) {
	t.Parallel()
	storecontract.Run(t, func(t *testing.T) storecontract.Subject {
		b := setup(t)
		return storecontract.Subject{
			Store:   b.store,
			Now:     b.clock.Now,
			Advance: func(d time.Duration) { b.clock.Advance(d) },
			Enqueue: b.enqueuePhones,
			Row: func(t *testing.T, id int64) storecontract.Row {
				c := b.row(t, id)
				r := storecontract.Row{Status: c.Status, Attempts: c.Attempts, NextAttemptAt: c.NextAttemptAt,
					URLAvatar: c.URLAvatar, Exists: c.ExistsWhatsapp}
				if c.Reason != nil {
					r.Reason = *c.Reason
				}
				if c.LockedBy != nil {
					r.LockedBy = *c.LockedBy
				}
				if c.LockedUntil != nil {
					r.LockedUntil = *c.LockedUntil
				}
				return r
			},
			SetNextAttempt: func(t *testing.T, id int64, at time.Time) {
				b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = $2", at, id)
			},
		}
	})
}
