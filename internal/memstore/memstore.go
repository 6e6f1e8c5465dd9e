// Package memstore is an in-memory model of the contacts table as store.Store serves the engine:
// claims under a lease and a claim token, renewals, fenced write-backs and the due count, with
// the same outcomes as the SQL of package store. It exists so that the engine can be run in a
// testing/synctest bubble, where no real database can be reached, for thousands of simulated
// runs a minute. Budget (budget.go) is the same for the instances' shared budget (enrich.Budget).
// The contract tests of internal/storecontract run against both this model and PostgreSQL, so
// the model cannot drift from the real store.
//
// Time is the injected clock's (time.Now inside a bubble is fine). NULL columns are the zero
// value: LockedBy "", LockedUntil zero, LeaseToken 0 (the engine's claim tokens start at 1).
package memstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// Row is one contacts row as the engine's statements see and change it.
type Row struct {
	ID          int64
	PhoneNumber *string
	ChatID      *string
	// Status is store.StatusPending, StatusDone or StatusFailed.
	Status   string
	Attempts int
	Reason   string
	// NextAttemptAt orders the due rows; a claim moves it to the end of the lease.
	NextAttemptAt time.Time
	// LockedBy, LockedUntil and LeaseToken are the current claim; zero when none.
	LockedBy    string
	LockedUntil time.Time
	LeaseToken  int64
	// The answer of a done row.
	ExistsWhatsapp  *bool
	AvatarAvailable *bool
	URLAvatar       *string
	ExistsSource    string
	CheckedAt       time.Time
	// Writes counts the write-backs that landed on the row (done, retry, failed, released).
	Writes int
}

// Leased reports whether the row is held by a claim whose lease has not ended at now.
func (r Row) Leased(now time.Time) bool { return r.LockedBy != "" && r.LockedUntil.After(now) }

// due reports whether a claim at now may take the row.
func (r *Row) due(now time.Time) bool {
	return r.Status == store.StatusPending && !r.NextAttemptAt.After(now) &&
		(r.LockedUntil.IsZero() || !r.LockedUntil.After(now))
}

// Store is the model. It is safe for concurrent use.
type Store struct {
	now func() time.Time

	mu     sync.Mutex
	rows   map[int64]*Row
	nextID int64
}

// New returns an empty table whose clock is now (time.Now when nil).
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{now: now, rows: make(map[int64]*Row)}
}

// Now is the model's clock.
func (s *Store) Now() time.Time { return s.now() }

// Enqueue inserts pending rows due now, skipping a contact whose phone number or chat id is
// already in the table (as store.Enqueue does), and returns the new rows' ids in order.
func (s *Store) Enqueue(cs ...store.NewContact) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var ids []int64
next:
	for _, c := range cs {
		for _, r := range s.rows {
			if c.PhoneNumber != "" && r.PhoneNumber != nil && *r.PhoneNumber == c.PhoneNumber ||
				c.ChatID != "" && r.ChatID != nil && *r.ChatID == c.ChatID {
				continue next
			}
		}
		s.nextID++
		r := &Row{ID: s.nextID, Status: store.StatusPending, NextAttemptAt: now}
		if c.PhoneNumber != "" {
			r.PhoneNumber = ptr(c.PhoneNumber)
		}
		if c.ChatID != "" {
			r.ChatID = ptr(c.ChatID)
		}
		s.rows[r.ID] = r
		ids = append(ids, r.ID)
	}
	return ids
}

// Row returns a copy of row id.
func (s *Store) Row(id int64) (Row, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[id]
	if !ok {
		return Row{}, false
	}
	return *r, true
}

// Rows returns a copy of every row, by id.
func (s *Store) Rows() []Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Row, 0, len(s.rows))
	for _, r := range s.rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Row) int { return cmpInt(a.ID, b.ID) })
	return out
}

// SetNextAttempt moves a row's next_attempt_at, as a test's UPDATE would.
func (s *Store) SetNextAttempt(id int64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rows[id]; ok {
		r.NextAttemptAt = at
	}
}

// Expire ends the lease of row id now, as if its holder had not renewed it in time: the row is
// due again (for anyone, its holder included) while its claim still names the holder.
func (s *Store) Expire(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rows[id]; ok && r.LockedBy != "" {
		now := s.now()
		r.LockedUntil, r.NextAttemptAt = now, now
	}
}

// Claim is ClaimAfter from the start of the claim order.
func (s *Store) Claim(ctx context.Context, owner string, token int64, n int, lease time.Duration) ([]store.Claimed, error) {
	return s.ClaimAfter(ctx, owner, token, n, lease, store.Cursor{})
}

// ClaimAfter leases up to n due rows after the cursor, in the claim order (next_attempt_at, id),
// to owner under token, as store.Store.ClaimAfter does.
func (s *Store) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	if owner == "" {
		return nil, errors.New("claim batch: empty owner: give each run a unique owner")
	}
	if n <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, fmt.Errorf("claim batch: lease %v: must be positive", lease)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claim batch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var due []*Row
	for _, r := range s.rows {
		if !r.due(now) {
			continue
		}
		if after != (store.Cursor{}) && !(r.NextAttemptAt.After(after.Due) || r.NextAttemptAt.Equal(after.Due) && r.ID > after.ID) {
			continue
		}
		due = append(due, r)
	}
	slices.SortFunc(due, func(a, b *Row) int {
		if c := a.NextAttemptAt.Compare(b.NextAttemptAt); c != 0 {
			return c
		}
		return cmpInt(a.ID, b.ID)
	})
	if len(due) > n {
		due = due[:n]
	}
	out := make([]store.Claimed, 0, len(due))
	until := now.Add(lease)
	for _, r := range due {
		out = append(out, store.Claimed{Lease: store.Lease{ID: r.ID, Token: token}, PhoneNumber: r.PhoneNumber,
			ChatID: r.ChatID, Attempts: r.Attempts, Due: r.NextAttemptAt})
		r.LockedBy, r.LeaseToken, r.LockedUntil, r.NextAttemptAt = owner, token, until, until
	}
	return out, nil
}

// Renew extends the leases still held by owner under their claims to now + lease and returns
// the ids it renewed, as store.Store.Renew does.
func (s *Store) Renew(ctx context.Context, owner string, leases []store.Lease, lease time.Duration) ([]int64, error) {
	if owner == "" {
		return nil, errors.New("renew leases: empty owner")
	}
	if lease <= 0 {
		return nil, fmt.Errorf("renew leases: lease %v: must be positive", lease)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	until := s.now().Add(lease)
	renewed := make([]int64, 0, len(leases))
	for _, l := range leases {
		if r := s.held(owner, l); r != nil {
			r.LockedUntil, r.NextAttemptAt = until, until
			renewed = append(renewed, l.ID)
		}
	}
	return renewed, nil
}

// held is the row l names while owner holds it under l's claim, or nil. s.mu must be held.
func (s *Store) held(owner string, l store.Lease) *Row {
	r, ok := s.rows[l.ID]
	if !ok || r.LockedBy != owner || r.LeaseToken != l.Token {
		return nil
	}
	return r
}

// unlock clears the claim of r and counts the write. s.mu must be held.
func unlock(r *Row) {
	r.LockedBy, r.LockedUntil, r.LeaseToken = "", time.Time{}, 0
	r.Writes++
}

// Write applies b fenced on each row's claim, in the order Done, Retry, Failed, Released, all
// or nothing, as store.Store.Write does, and counts the rows it changed.
func (s *Store) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	var w store.Written
	if owner == "" {
		return w, errors.New("write batch: empty owner")
	}
	if b.Len() == 0 {
		return w, nil
	}
	for _, r := range b.Retry {
		if r.Delay < 0 {
			return w, fmt.Errorf("write batch: retry of row %d: negative delay %v", r.ID, r.Delay)
		}
	}
	if err := ctx.Err(); err != nil {
		return w, fmt.Errorf("write batch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, d := range b.Done {
		r := s.held(owner, d.Lease)
		if r == nil {
			continue
		}
		r.Status, r.Reason, r.CheckedAt = store.StatusDone, "", now
		r.ExistsWhatsapp, r.AvatarAvailable, r.URLAvatar = d.ExistsWhatsapp, d.AvatarAvailable, ptr(d.URLAvatar)
		r.ExistsSource = ""
		if d.ExistsWhatsapp != nil {
			r.ExistsSource = d.ExistsSource
		}
		unlock(r)
		w.Done++
	}
	for _, rt := range b.Retry {
		r := s.held(owner, rt.Lease)
		if r == nil {
			continue
		}
		r.Attempts++
		r.NextAttemptAt, r.Reason = now.Add(rt.Delay), rt.Reason
		unlock(r)
		w.Retried++
	}
	for _, f := range b.Failed {
		r := s.held(owner, f.Lease)
		if r == nil {
			continue
		}
		r.Status, r.Reason, r.CheckedAt = store.StatusFailed, f.Reason, now
		if f.Attempted {
			r.Attempts++
		}
		unlock(r)
		w.Failed++
	}
	for _, l := range b.Released {
		r := s.held(owner, l)
		if r == nil {
			continue
		}
		r.NextAttemptAt = now
		unlock(r)
		w.Released++
	}
	return w, nil
}

// Due counts the rows a claim would take now, as store.Store.Due does.
func (s *Store) Due(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("count due: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var n int64
	for _, r := range s.rows {
		if r.due(now) {
			n++
		}
	}
	return n, nil
}

func ptr[T any](v T) *T { return &v }

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
