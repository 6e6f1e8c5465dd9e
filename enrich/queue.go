package enrich

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
)

// held is a row this run holds in memory, from its claim until its result is written or it is
// given back. The claimer makes it; its lease is renewed while it is held; the writer forgets it.
type held struct {
	// lease is the claim the row is held under; a later claim of the same row (its lease had
	// lapsed) replaces it, so the write goes through the newer claim. Guarded by Runner.mu.
	lease store.Lease
	// row is the claimed row, attempts included.
	row store.Claimed
	// target is the validated number or chatId.
	target greenapi.Target
	// expires is when the lease ends at the latest (UnixNano): the time of the claim or renewal
	// that set it, as read before the statement was sent, plus the lease. No call is started
	// on a row whose lease may end before the call could be answered.
	expires atomic.Int64
	// resolved is set once a result is queued for writing, so the end of the run does not give
	// the row back as well. Guarded by Runner.mu.
	resolved bool
	// lost is set when a renewal found the row no longer ours (another claim took it): the row
	// is never called again by this run, and leaves the run wherever it is (Runner.requeue).
	lost atomic.Bool
	// tries counts the row's transient failures retried in this run, and firstFail is when its
	// first failure that said nothing about the row left; only the worker holding the row
	// touches them.
	tries     int
	firstFail time.Time
}

func (h *held) expiry() time.Time { return time.Unix(0, h.expires.Load()) }

// queue holds the rows waiting for a call, shared by every instance's workers: a row goes to
// whichever instance can send first, and a row given back by a paused instance goes to the front
// for another instance to take.
type queue struct {
	mu     sync.Mutex
	rows   []*held
	closed bool
	// busy counts rows taken and not yet done: in a worker's hands.
	busy int
	// finished is closed once the queue is closed, empty and no row is in a worker's hands:
	// nothing is left for any worker, paused instances' included.
	finished chan struct{}
	// wake is closed and replaced whenever rows arrive, leases are renewed or the queue closes.
	wake chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}), finished: make(chan struct{})} }

// checkFinishedLocked closes finished when nothing is left. q.mu must be held.
func (q *queue) checkFinishedLocked() {
	if q.closed && len(q.rows) == 0 && q.busy == 0 {
		select {
		case <-q.finished:
		default:
			close(q.finished)
		}
	}
}

// kickLocked wakes every waiter. q.mu must be held.
func (q *queue) kickLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// kick wakes the waiters: leases were renewed, so rows they skipped may be callable now.
func (q *queue) kick() {
	q.mu.Lock()
	q.kickLocked()
	q.mu.Unlock()
}

// push appends claimed rows.
func (q *queue) push(hs ...*held) {
	if len(hs) == 0 {
		return
	}
	q.mu.Lock()
	q.rows = append(q.rows, hs...)
	q.kickLocked()
	q.mu.Unlock()
}

// pushFront returns a row that was taken but not answered, ahead of the others.
func (q *queue) pushFront(h *held) {
	q.mu.Lock()
	q.rows = append([]*held{h}, q.rows...)
	q.kickLocked()
	q.mu.Unlock()
}

// close says no row will be pushed any more: takers return once the queue is empty.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.kickLocked()
	q.checkFinishedLocked()
	q.mu.Unlock()
}

// take returns the first row that callable accepts, waiting for one; the caller calls done when
// it is finished with the row. It returns (nil, true) when abort is closed first (the caller's
// instance paused), and (nil, false) when ctx ends or nothing is left (finished).
func (q *queue) take(ctx context.Context, abort <-chan struct{}, callable func(*held) bool) (*held, bool) {
	for {
		if ctx.Err() != nil {
			return nil, false
		}
		q.mu.Lock()
		for i, h := range q.rows {
			if callable(h) {
				q.rows = append(q.rows[:i], q.rows[i+1:]...)
				q.busy++
				q.mu.Unlock()
				return h, true
			}
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-wake:
		case <-q.finished:
			return nil, false
		case <-abort:
			return nil, true
		case <-ctx.Done():
			return nil, false
		}
	}
}

// waitRows waits until a row waits in the queue, reporting false when nothing is left or ctx
// ends first.
func (q *queue) waitRows(ctx context.Context) bool {
	for {
		q.mu.Lock()
		n, wake := len(q.rows), q.wake
		q.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-wake:
		case <-q.finished:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// done says a taken row left the worker's hands: resolved, or pushed back.
func (q *queue) done() {
	q.mu.Lock()
	q.busy--
	q.checkFinishedLocked()
	q.mu.Unlock()
}

// idle reports whether no row waits and none is in a worker's hands.
func (q *queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rows) == 0 && q.busy == 0
}

// remove takes h out of the queue, reporting whether it was there. A closed queue it empties
// is finished: the row was the last any worker waited for.
func (q *queue) remove(h *held) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.rows {
		if x == h {
			q.rows = append(q.rows[:i], q.rows[i+1:]...)
			q.checkFinishedLocked()
			return true
		}
	}
	return false
}

// len is the number of rows waiting.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.rows)
}
