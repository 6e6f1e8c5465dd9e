// Package storecontract is the contract of what the engine relies on from its store: claim
// order, limit and lease, claiming again after a lease lapsed, fencing of a stale claim, renewals
// that return the ids they renewed, the outcome of every kind of write-back, and the due count;
// and of the instances' shared budget it spends each instance's rate through (budget.go).
// Run runs it against a Subject: store's tests run it against PostgreSQL, memstore's against the
// in-memory model the engine's simulation uses, so the model cannot drift from the real store.
package storecontract

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// Store is what the engine calls (enrich.Store, restated so the contract does not import the
// engine it describes).
type Store interface {
	ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error)
	Renew(ctx context.Context, owner string, leases []store.Lease, lease time.Duration) ([]int64, error)
	Write(ctx context.Context, owner string, b store.Batch) (store.Written, error)
	Due(ctx context.Context) (int64, error)
}

// Row is what the contract reads back of a row. LockedBy is "" when the row is not claimed.
type Row struct {
	Status        string
	Attempts      int
	Reason        string
	NextAttemptAt time.Time
	LockedBy      string
	LockedUntil   time.Time
	URLAvatar     *string
	Exists        *bool
}

// Subject is one store under test, on an empty table of its own, with a clock the test moves.
type Subject struct {
	Store Store
	// Now is the store's clock; Advance moves it by d.
	Now     func() time.Time
	Advance func(d time.Duration)
	// Enqueue inserts n rows with distinct phone numbers, pending and due now, and returns their
	// ids in the order inserted.
	Enqueue func(t *testing.T, n int) []int64
	// Row reads row id.
	Row func(t *testing.T, id int64) Row
	// SetNextAttempt sets row id's next_attempt_at.
	SetNextAttempt func(t *testing.T, id int64, at time.Time)
	// Budget is the instances' shared budget, empty, on the same clock; nil skips the budget's
	// cases.
	Budget Budget
}

// Run runs every case of the contract, each on a Subject of its own from newSubject.
func Run(t *testing.T, newSubject func(t *testing.T) Subject) {
	cases := []struct {
		name string
		run  func(t *testing.T, s Subject)
	}{
		{"ClaimOrderLimitAndLease", claimOrderLimitAndLease},
		{"ClaimAfterCursor", claimAfterCursor},
		{"ClaimAgainAfterLapse", claimAgainAfterLapse},
		{"StaleClaimIsFenced", staleClaimIsFenced},
		{"Renew", renew},
		{"WriteOutcomes", writeOutcomes},
		{"OneWritePerClaim", oneWritePerClaim},
		{"ArgumentsAndCancel", argumentsAndCancel},
	}
	cases = append(cases, budgetCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, newSubject(t))
		})
	}
}

var ctx = context.Background()

func claim(t *testing.T, s Subject, owner string, token int64, n int, lease time.Duration, after store.Cursor) []store.Claimed {
	t.Helper()
	got, err := s.Store.ClaimAfter(ctx, owner, token, n, lease, after)
	if err != nil {
		t.Fatalf("claim by %s: %v", owner, err)
	}
	for _, c := range got {
		if c.Token != token {
			t.Fatalf("claimed row %d under token %d, want %d", c.ID, c.Token, token)
		}
	}
	return got
}

// ids are the claimed rows' ids, sorted: a claim's slice is in no guaranteed order.
func ids(cs []store.Claimed) []int64 {
	out := make([]int64, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	slices.Sort(out)
	return out
}

func sorted(xs ...int64) []int64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs
}

func leases(cs []store.Claimed) map[int64]store.Lease {
	m := make(map[int64]store.Lease, len(cs))
	for _, c := range cs {
		m[c.ID] = c.Lease
	}
	return m
}

func due(t *testing.T, s Subject) int64 {
	t.Helper()
	n, err := s.Store.Due(ctx)
	if err != nil {
		t.Fatalf("due: %v", err)
	}
	return n
}

func write(t *testing.T, s Subject, owner string, b store.Batch) store.Written {
	t.Helper()
	w, err := s.Store.Write(ctx, owner, b)
	if err != nil {
		t.Fatalf("write by %s: %v", owner, err)
	}
	return w
}

// claimOrderLimitAndLease: most overdue first, no more than asked, leased to the owner until
// now + lease with next_attempt_at moved there too, attempts untouched, Due the old place in the
// order.
func claimOrderLimitAndLease(t *testing.T, s Subject) {
	id := s.Enqueue(t, 5)
	now := s.Now()
	for i, x := range id {
		s.SetNextAttempt(t, x, now.Add(-time.Duration(i)*time.Minute))
	}
	first := claim(t, s, "run-a", 1, 2, time.Minute, store.Cursor{})
	if got, want := ids(first), sorted(id[4], id[3]); !slices.Equal(got, want) {
		t.Fatalf("first claim took %v, want the two most overdue %v", got, want)
	}
	for _, c := range first {
		want := now.Add(-time.Duration(slices.Index(id, c.ID)) * time.Minute)
		if !c.Due.Equal(want) || c.Attempts != 0 || c.PhoneNumber == nil || c.ChatID != nil {
			t.Errorf("claimed %+v, want Due %v, attempts 0 and a phone number", c, want)
		}
		r := s.Row(t, c.ID)
		if r.LockedBy != "run-a" || !r.LockedUntil.Equal(now.Add(time.Minute)) || !r.NextAttemptAt.Equal(now.Add(time.Minute)) ||
			r.Status != store.StatusPending || r.Attempts != 0 {
			t.Errorf("claimed row %d = %+v, want pending, leased to run-a until %v", c.ID, r, now.Add(time.Minute))
		}
	}
	second := claim(t, s, "run-b", 1, 2, time.Minute, store.Cursor{})
	if got, want := ids(second), sorted(id[2], id[1]); !slices.Equal(got, want) {
		t.Fatalf("second claim took %v, want %v", got, want)
	}
	if n := due(t, s); n != 1 {
		t.Fatalf("due = %d, want the one row left", n)
	}
}

// claimAfterCursor: only rows after the cursor in (next_attempt_at, id) order.
func claimAfterCursor(t *testing.T, s Subject) {
	id := s.Enqueue(t, 4)
	at := s.Now().Add(-time.Hour)
	s.SetNextAttempt(t, id[0], at)
	s.SetNextAttempt(t, id[1], at)
	s.SetNextAttempt(t, id[2], at.Add(time.Minute))
	got := claim(t, s, "run-a", 1, 10, time.Minute, store.Cursor{Due: at, ID: id[0]})
	if got, want := ids(got), sorted(id[1], id[2], id[3]); !slices.Equal(got, want) {
		t.Fatalf("claim after (%v, %d) took %v, want %v", at, id[0], got, want)
	}
	if got := claim(t, s, "run-a", 2, 10, time.Minute, store.Cursor{}); !slices.Equal(ids(got), []int64{id[0]}) {
		t.Fatalf("claim from the start took %v, want the row before the cursor, %d", ids(got), id[0])
	}
}

// claimAgainAfterLapse: leased rows are not due until the lease ends, then anyone may claim them,
// attempts untouched, Due where the lapsed lease left them.
func claimAgainAfterLapse(t *testing.T, s Subject) {
	id := s.Enqueue(t, 2)
	start := s.Now()
	claim(t, s, "crashed", 1, 10, time.Minute, store.Cursor{})
	if got := claim(t, s, "run-b", 1, 10, time.Minute, store.Cursor{}); len(got) != 0 {
		t.Fatalf("leased rows claimed again before the lease ended: %v", ids(got))
	}
	s.Advance(time.Minute - time.Millisecond)
	if n := due(t, s); n != 0 {
		t.Fatalf("due = %d a millisecond before the lease ends, want 0", n)
	}
	if got := claim(t, s, "run-b", 1, 10, time.Minute, store.Cursor{}); len(got) != 0 {
		t.Fatalf("claimed %v a millisecond before the lease ends", ids(got))
	}
	s.Advance(time.Millisecond)
	if n := due(t, s); n != 2 {
		t.Fatalf("due = %d once the lease ended, want 2", n)
	}
	got := claim(t, s, "run-b", 2, 10, time.Minute, store.Cursor{})
	if !slices.Equal(ids(got), sorted(id...)) {
		t.Fatalf("after the lapse run-b claimed %v, want %v", ids(got), id)
	}
	for _, c := range got {
		if !c.Due.Equal(start.Add(time.Minute)) || c.Attempts != 0 {
			t.Errorf("claimed again %+v, want Due at the lapsed lease's end %v and attempts 0", c, start.Add(time.Minute))
		}
		if r := s.Row(t, c.ID); r.LockedBy != "run-b" {
			t.Errorf("row %d locked by %q, want run-b", c.ID, r.LockedBy)
		}
	}
}

// staleClaimIsFenced: after a lapse, only the row's newest claim may write or renew, even when
// the same owner made both; another owner never can.
func staleClaimIsFenced(t *testing.T, s Subject) {
	id := s.Enqueue(t, 1)
	stale := claim(t, s, "run-a", 1, 1, time.Minute, store.Cursor{})[0].Lease
	s.Advance(2 * time.Minute)
	fresh := claim(t, s, "run-a", 2, 1, time.Minute, store.Cursor{})[0].Lease
	if w := write(t, s, "run-a", store.Batch{Done: []store.Done{{Lease: stale, URLAvatar: "stale"}},
		Released: []store.Lease{stale}}); w != (store.Written{}) {
		t.Fatalf("a write through the stale claim changed %+v, want nothing", w)
	}
	if got, err := s.Store.Renew(ctx, "run-a", []store.Lease{stale}, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("renewing the stale claim = %v, %v; want nothing renewed", got, err)
	}
	if w := write(t, s, "run-b", store.Batch{Done: []store.Done{{Lease: fresh, URLAvatar: "other"}}}); w != (store.Written{}) {
		t.Fatalf("another owner's write changed %+v, want nothing", w)
	}
	if w := write(t, s, "run-a", store.Batch{Done: []store.Done{{Lease: fresh, URLAvatar: "fresh"}}}); w != (store.Written{Done: 1}) {
		t.Fatalf("the write through the fresh claim changed %+v, want one done", w)
	}
	if r := s.Row(t, id[0]); r.Status != store.StatusDone || r.URLAvatar == nil || *r.URLAvatar != "fresh" || r.LockedBy != "" {
		t.Fatalf("row %+v, want done with the fresh answer and unlocked", r)
	}
}

// renew: only rows still held under their claim are renewed, and their ids returned; a lapsed
// lease not yet claimed by anyone is still the owner's to renew.
func renew(t *testing.T, s Subject) {
	id := s.Enqueue(t, 4)
	l := leases(claim(t, s, "run-a", 1, 4, time.Minute, store.Cursor{}))
	if w := write(t, s, "run-a", store.Batch{Done: []store.Done{{Lease: l[id[2]]}}}); w.Done != 1 {
		t.Fatalf("write = %+v, want one done", w)
	}
	start := s.Now()
	s.Advance(50 * time.Second)
	now := s.Now()
	wrong := l[id[1]]
	wrong.Token++
	got, err := s.Store.Renew(ctx, "run-a", []store.Lease{l[id[0]], wrong, l[id[2]]}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{id[0]}) {
		t.Fatalf("renewed %v, want only %d (row %d named another token, row %d was written)", got, id[0], id[1], id[2])
	}
	if r := s.Row(t, id[0]); !r.LockedUntil.Equal(now.Add(time.Minute)) || !r.NextAttemptAt.Equal(now.Add(time.Minute)) {
		t.Errorf("renewed row %+v, want locked_until = next_attempt_at = %v", r, now.Add(time.Minute))
	}
	if r := s.Row(t, id[1]); !r.LockedUntil.Equal(start.Add(time.Minute)) {
		t.Errorf("the row renewed under a wrong token moved: %+v", r)
	}
	if got, err := s.Store.Renew(ctx, "run-b", []store.Lease{l[id[0]]}, time.Minute); err != nil || len(got) != 0 {
		t.Errorf("another owner renewed %v, %v", got, err)
	}
	// Past the old lease: rows 1 and 3 lapsed. Row 3, not claimed by anyone, is still run-a's to
	// renew; row 1 goes to run-b, and is no longer run-a's.
	s.Advance(20 * time.Second)
	if got, err := s.Store.Renew(ctx, "run-a", []store.Lease{l[id[3]]}, time.Minute); err != nil || !slices.Equal(got, []int64{id[3]}) {
		t.Fatalf("renewing a lapsed lease nobody took = %v, %v; want %d renewed", got, err, id[3])
	}
	if got := claim(t, s, "run-b", 1, 4, time.Minute, store.Cursor{}); !slices.Equal(ids(got), []int64{id[1]}) {
		t.Fatalf("run-b claimed %v, want only the lapsed row %d", ids(got), id[1])
	}
	if got, err := s.Store.Renew(ctx, "run-a", []store.Lease{l[id[1]]}, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("run-a renewed %v, %v after run-b took the row", got, err)
	}
}

// writeOutcomes: every kind of write-back, its count, and what it does to the row; the same
// write again changes nothing.
func writeOutcomes(t *testing.T, s Subject) {
	id := s.Enqueue(t, 6)
	l := leases(claim(t, s, "run-a", 1, 6, time.Minute, store.Cursor{}))
	s.Advance(30 * time.Second)
	now := s.Now()
	yes := true
	b := store.Batch{
		Done:     []store.Done{{Lease: l[id[0]], ExistsWhatsapp: &yes, AvatarAvailable: &yes, URLAvatar: "https://pps.whatsapp.net/a"}},
		Retry:    []store.Retry{{Lease: l[id[1]], Reason: "HTTP 503", Delay: 90 * time.Second}},
		Failed:   []store.Failure{{Lease: l[id[2]], Reason: "bad request data", Attempted: true}, {Lease: l[id[3]], Reason: "invalid phone number"}},
		Released: []store.Lease{l[id[4]], {ID: id[5] + 1000, Token: 1}},
	}
	if w, want := write(t, s, "run-a", b), (store.Written{Done: 1, Retried: 1, Failed: 2, Released: 1}); w != want {
		t.Fatalf("written %+v, want %+v (an unknown id counts nothing)", w, want)
	}
	rows := make([]Row, len(id))
	for i, x := range id {
		rows[i] = s.Row(t, x)
	}
	for i, r := range rows[:5] {
		if r.LockedBy != "" {
			t.Errorf("row %d still locked by %q after its write-back", id[i], r.LockedBy)
		}
	}
	if r := rows[0]; r.Status != store.StatusDone || r.Attempts != 0 || r.Reason != "" || r.Exists == nil || !*r.Exists ||
		r.URLAvatar == nil || *r.URLAvatar != "https://pps.whatsapp.net/a" {
		t.Errorf("done row %+v", r)
	}
	if r := rows[1]; r.Status != store.StatusPending || r.Attempts != 1 || r.Reason != "HTTP 503" || !r.NextAttemptAt.Equal(now.Add(90*time.Second)) {
		t.Errorf("retried row %+v, want pending, 1 attempt, due at %v", r, now.Add(90*time.Second))
	}
	if r := rows[2]; r.Status != store.StatusFailed || r.Attempts != 1 || r.Reason != "bad request data" {
		t.Errorf("failed row after a call %+v", r)
	}
	if r := rows[3]; r.Status != store.StatusFailed || r.Attempts != 0 || r.Reason != "invalid phone number" {
		t.Errorf("failed row without a call %+v", r)
	}
	if r := rows[4]; r.Status != store.StatusPending || r.Attempts != 0 || r.Reason != "" || !r.NextAttemptAt.Equal(now) {
		t.Errorf("released row %+v, want untouched and due now %v", r, now)
	}
	if r := rows[5]; r.LockedBy != "run-a" {
		t.Errorf("the row not written is no longer held: %+v", r)
	}
	if n := due(t, s); n != 1 {
		t.Fatalf("due = %d, want the released row only", n)
	}
	s.Advance(90 * time.Second) // the retry's delay, and past the unwritten row's lease
	if n := due(t, s); n != 3 {
		t.Fatalf("due = %d after the delay, want the released, the retried and the lapsed row", n)
	}
	if w := write(t, s, "run-a", b); w != (store.Written{}) {
		t.Fatalf("the same write again changed %+v, want nothing", w)
	}
	if r := s.Row(t, id[2]); r.Attempts != 1 || r.Status != store.StatusFailed {
		t.Errorf("a repeated write changed row %d: %+v", id[2], r)
	}
}

// oneWritePerClaim: a row named twice in one batch lands once, Done first.
func oneWritePerClaim(t *testing.T, s Subject) {
	id := s.Enqueue(t, 2)
	l := leases(claim(t, s, "run-a", 1, 2, time.Minute, store.Cursor{}))
	w := write(t, s, "run-a", store.Batch{
		Done:     []store.Done{{Lease: l[id[0]]}, {Lease: l[id[0]]}},
		Retry:    []store.Retry{{Lease: l[id[0]]}, {Lease: l[id[1]], Reason: "r"}},
		Released: []store.Lease{l[id[0]], l[id[1]]},
	})
	if want := (store.Written{Done: 1, Retried: 1}); w != want {
		t.Fatalf("written %+v, want %+v", w, want)
	}
	if r := s.Row(t, id[0]); r.Status != store.StatusDone || r.Attempts != 0 {
		t.Errorf("row named thrice %+v, want done by the first", r)
	}
	if r := s.Row(t, id[1]); r.Attempts != 1 || r.Reason != "r" {
		t.Errorf("row retried then released %+v, want retried", r)
	}
}

// argumentsAndCancel: bad arguments are refused, empty claims and writes do nothing, and a call
// on a cancelled context fails and changes nothing.
func argumentsAndCancel(t *testing.T, s Subject) {
	id := s.Enqueue(t, 2)
	if _, err := s.Store.ClaimAfter(ctx, "", 1, 1, time.Minute, store.Cursor{}); err == nil {
		t.Error("claim: empty owner accepted")
	}
	if _, err := s.Store.ClaimAfter(ctx, "run-a", 1, 1, 0, store.Cursor{}); err == nil {
		t.Error("claim: zero lease accepted")
	}
	if got, err := s.Store.ClaimAfter(ctx, "run-a", 1, 0, time.Minute, store.Cursor{}); err != nil || len(got) != 0 {
		t.Errorf("claim of 0 rows = %v, %v; want nothing", got, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Store.ClaimAfter(cancelled, "run-a", 1, 2, time.Minute, store.Cursor{}); !errors.Is(err, context.Canceled) {
		t.Errorf("claim on a cancelled context: %v, want context.Canceled", err)
	}
	if n := due(t, s); n != 2 {
		t.Fatalf("due = %d after a cancelled claim, want 2", n)
	}
	l := leases(claim(t, s, "run-a", 2, 2, time.Minute, store.Cursor{}))
	if _, err := s.Store.Write(cancelled, "run-a", store.Batch{Released: []store.Lease{l[id[0]]}}); !errors.Is(err, context.Canceled) {
		t.Errorf("write on a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Store.Renew(cancelled, "run-a", []store.Lease{l[id[0]]}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("renew on a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Store.Write(ctx, "", store.Batch{Released: []store.Lease{l[id[0]]}}); err == nil {
		t.Error("write: empty owner accepted")
	}
	if _, err := s.Store.Write(ctx, "run-a", store.Batch{Retry: []store.Retry{{Lease: l[id[0]], Delay: -time.Second}}}); err == nil {
		t.Error("write: negative delay accepted")
	}
	if w, err := s.Store.Write(ctx, "run-a", store.Batch{}); err != nil || w != (store.Written{}) {
		t.Errorf("empty write = %+v, %v", w, err)
	}
	for _, x := range id {
		if r := s.Row(t, x); r.LockedBy != "run-a" || r.Attempts != 0 {
			t.Errorf("row %d = %+v after refused and cancelled writes, want still leased to run-a, untouched", x, r)
		}
	}
	if _, err := s.Store.Renew(ctx, "", []store.Lease{l[id[0]]}, time.Minute); err == nil {
		t.Error("renew: empty owner accepted")
	}
	if _, err := s.Store.Renew(ctx, "run-a", []store.Lease{l[id[0]]}, 0); err == nil {
		t.Error("renew: zero lease accepted")
	}
}
