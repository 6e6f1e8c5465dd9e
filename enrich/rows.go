package enrich

import (
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
)

// held is a row this run holds in memory, from its claim until its result is written or it is
// given back. Its fields other than row and target belong to the run's rows, under rows.mu,
// except tries and firstFail, which only the caller holding the row touches.
type held struct {
	// lease is the claim the row is held under; a later claim of the same row (its lease had
	// lapsed) replaces it, so the write goes through the newer claim.
	lease store.Lease
	// row is the claimed row, attempts included.
	row store.Claimed
	// target is the validated number or chatId.
	target greenapi.Target
	// expires is when the lease ends at the latest: the time of the claim or renewal that set
	// it, as read before the statement was sent, plus the lease. No call is started on a row
	// whose lease may end before the call could be answered.
	expires time.Time
	// resolved is set once a result is queued for writing, so the end of the run does not give
	// the row back as well.
	resolved bool
	// lost is set when a renewal found the row no longer ours (another claim took it) while it
	// was out of the queue: whoever hands it back drops it instead (rows.giveBack).
	lost bool
	// waiting says the row is in the queue.
	waiting bool
	// tries counts the row's transient failures retried in this run, and firstFail is when its
	// first failure that said nothing about the row left.
	tries     int
	firstFail time.Time
}

// rows owns every row the run holds, and is the only one that changes their state: claimed and
// waiting in the queue for a send slot, out of it (in a call, held back as a suspect, or waiting
// out a retry's backoff), resolved (its result queued for writing), lost (another claim took it)
// and finally forgotten (written, or fenced off). The claimer adds rows, the instances' dispatchers
// take them one send slot at a time, the callers give them back or resolve them, the renewer
// renews and loses them, the writer forgets them. One lock guards it all, so no row is ever in
// two of those states, and a lost row is never handed to a caller.
//
// The run's end is decided here: once the claimer closed it (nothing more is due), finished is
// closed when no row waits and none is out of the queue unresolved in a caller's hands.
type rows struct {
	lease time.Duration
	now   func() time.Time

	mu   sync.Mutex
	byID map[int64]*held
	// queue are the rows waiting for a send slot, in order; a row given back goes first.
	queue []*held
	// out counts rows taken from the queue and not yet resolved, given back or dropped: in a
	// call, or in a retry's backoff.
	out int
	// resolved counts held rows whose result is queued for writing.
	resolved int
	closed   bool
	// finished is closed once the queue is closed, empty and no row is out: nothing is left for
	// any instance, paused ones included.
	finished chan struct{}
	// wake is closed and replaced whenever rows arrive or come back, leases are renewed or the
	// queue closes.
	wake chan struct{}
	// changed is called (outside the lock) when rows left or were resolved: the claimer may
	// have room to claim.
	changed func()
}

func newRows(lease time.Duration, now func() time.Time, changed func()) *rows {
	return &rows{lease: lease, now: now, changed: changed, byID: make(map[int64]*held),
		wake: make(chan struct{}), finished: make(chan struct{})}
}

// kickLocked wakes everyone waiting for a row. rs.mu must be held.
func (rs *rows) kickLocked() {
	close(rs.wake)
	rs.wake = make(chan struct{})
}

// checkFinishedLocked closes finished when nothing is left. rs.mu must be held.
func (rs *rows) checkFinishedLocked() {
	if rs.closed && len(rs.queue) == 0 && rs.out == 0 {
		select {
		case <-rs.finished:
		default:
			close(rs.finished)
		}
	}
}

// add holds a claimed batch, claimed at sent. Rows with a valid target are queued; those without
// are returned to be failed without a call. A row the run already holds (its lease had lapsed
// and this claim took it again) stays one row, now under the newer claim: it is never called
// twice. fresh counts the rows new to the run.
func (rs *rows) add(batch []store.Claimed, sent time.Time) (invalid []suspect, fresh int) {
	expires := sent.Add(rs.lease)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, c := range batch {
		if h, ok := rs.byID[c.ID]; ok {
			h.lease, h.lost, h.expires = c.Lease, false, expires
			continue
		}
		fresh++
		h := &held{lease: c.Lease, row: c, expires: expires}
		rs.byID[c.ID] = h
		t, err := targetOf(c)
		if err != nil {
			rs.out++ // resolved at once by the caller of add
			invalid = append(invalid, suspect{h: h, err: err})
			continue
		}
		h.target = t
		h.waiting = true
		rs.queue = append(rs.queue, h)
	}
	if fresh > 0 {
		rs.kickLocked()
	}
	return invalid, fresh
}

// callableLocked reports whether a call may start on h now: its claim is ours for at least a
// third more of a lease, so the answer can be written through it. Rows whose renewals fail (the
// database is away) wait in the queue until one succeeds. rs.mu must be held.
func (rs *rows) callableLocked(h *held, now time.Time) bool {
	return !h.lost && h.expires.Sub(now) > rs.lease/3
}

// callable reports whether a call may start on h now (callableLocked).
func (rs *rows) callable(h *held) bool {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.callableLocked(h, now)
}

// take hands out the first callable row, out of the queue, or nil when none waits.
func (rs *rows) take() *held {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i, h := range rs.queue {
		if rs.callableLocked(h, now) {
			rs.queue = append(rs.queue[:i], rs.queue[i+1:]...)
			h.waiting = false
			rs.out++
			return h
		}
	}
	return nil
}

// ready returns a channel closed when a row may have become callable, and whether one is
// callable now; finished says nothing is left.
func (rs *rows) ready() (wake <-chan struct{}, callable bool) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, h := range rs.queue {
		if rs.callableLocked(h, now) {
			return rs.wake, true
		}
	}
	return rs.wake, false
}

// giveBack puts a row taken and not answered back at the front of the queue, for another try
// or another instance, unless its claim was lost meanwhile: then it leaves the run.
func (rs *rows) giveBack(h *held) {
	rs.mu.Lock()
	rs.out--
	if h.lost {
		rs.forgetLocked(h)
	} else {
		h.waiting = true
		rs.queue = append([]*held{h}, rs.queue...)
		rs.kickLocked()
	}
	rs.checkFinishedLocked()
	rs.mu.Unlock()
	rs.changed()
}

// resolve marks a row taken from the queue as having its result queued for writing (done,
// failed, rescheduled): it is no longer out.
func (rs *rows) resolve(h *held) {
	rs.mu.Lock()
	rs.out--
	rs.resolvedLocked(h)
	rs.checkFinishedLocked()
	rs.mu.Unlock()
	rs.changed()
}

// settle marks a row out of the queue as settled without a result: its call was cut, or it
// is held back as a suspect (resolved later by failSuspects, or given back at the end).
func (rs *rows) settle() {
	rs.mu.Lock()
	rs.out--
	rs.checkFinishedLocked()
	rs.mu.Unlock()
}

// resolveHeld marks a row that is not out (a suspect) as having its result queued.
func (rs *rows) resolveHeld(h *held) {
	rs.mu.Lock()
	rs.resolvedLocked(h)
	rs.mu.Unlock()
	rs.changed()
}

// resolvedLocked marks h resolved. rs.mu must be held.
func (rs *rows) resolvedLocked(h *held) {
	if !h.resolved {
		h.resolved = true
		rs.resolved++
	}
}

// close says no row will be added any more.
func (rs *rows) close() {
	rs.mu.Lock()
	rs.closed = true
	rs.kickLocked()
	rs.checkFinishedLocked()
	rs.mu.Unlock()
}

// unresolved marks every held row with no result queued as resolved, and returns them: what the
// end of the run gives back.
func (rs *rows) unresolved() []*held {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var hs []*held
	for _, h := range rs.byID {
		if !h.resolved {
			rs.resolvedLocked(h)
			hs = append(hs, h)
		}
	}
	return hs
}

// surplus takes up to n rows off the back of the queue, the last claimed, marked resolved: rows
// to give back untouched.
func (rs *rows) surplus(n int) []*held {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n = min(n, len(rs.queue))
	hs := make([]*held, 0, n)
	for _, h := range rs.queue[len(rs.queue)-n:] {
		h.waiting = false
		rs.resolvedLocked(h)
		hs = append(hs, h)
	}
	clear(rs.queue[len(rs.queue)-n:])
	rs.queue = rs.queue[:len(rs.queue)-n]
	rs.checkFinishedLocked()
	return hs
}

// forgetLocked stops holding h. rs.mu must be held.
func (rs *rows) forgetLocked(h *held) {
	if rs.byID[h.row.ID] != h {
		return
	}
	delete(rs.byID, h.row.ID)
	if h.resolved {
		rs.resolved--
	}
	if h.waiting {
		h.waiting = false
		for i, x := range rs.queue {
			if x == h {
				rs.queue = append(rs.queue[:i], rs.queue[i+1:]...)
				break
			}
		}
	}
}

// written stops holding the rows whose results were written through the claims in leases (one
// per row, in order), and returns those claimed again under a newer claim while the write was on
// its way: they are still held, and must be given back too.
func (rs *rows) written(hs []*held, leases []store.Lease) (again []*held) {
	rs.mu.Lock()
	for i, h := range hs {
		if h.lease != leases[i] {
			again = append(again, h)
			continue
		}
		rs.forgetLocked(h)
	}
	rs.checkFinishedLocked()
	rs.mu.Unlock()
	rs.changed()
	return again
}

// counts is how many rows the run holds, how many have no result yet (waiting, out, or held
// back as suspects), and how many wait in the queue.
func (rs *rows) counts() (held, inHand, waiting int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.byID), len(rs.byID) - rs.resolved, len(rs.queue)
}

// idle reports whether no row waits and none is out.
func (rs *rows) idle() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.queue) == 0 && rs.out == 0
}

// leases returns the claim of every held row, for a renewal.
func (rs *rows) leases() []store.Lease {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ls := make([]store.Lease, 0, len(rs.byID))
	for _, h := range rs.byID {
		ls = append(ls, h.lease)
	}
	return ls
}

// renewed applies a renewal of leases, sent at sent, that renewed the rows in ok: their leases
// run from sent. A row it did not renew, still under the same claim and with no result, is lost:
// dropped at once if it waits in the queue, else marked for whoever hands it back. It returns
// how many were lost and how many of them were dropped.
func (rs *rows) renewed(leases []store.Lease, ok map[int64]bool, sent time.Time) (lost, dropped int) {
	expires := sent.Add(rs.lease)
	rs.mu.Lock()
	for _, l := range leases {
		h := rs.byID[l.ID]
		switch {
		case h == nil || h.lease != l:
			// Written meanwhile, or claimed again under a newer claim.
		case ok[l.ID]:
			h.expires = expires
		case !h.resolved && !h.lost:
			lost++
			if h.waiting {
				dropped++
				rs.forgetLocked(h)
				continue
			}
			h.lost = true
		}
	}
	rs.kickLocked()
	rs.checkFinishedLocked()
	rs.mu.Unlock()
	if dropped > 0 {
		rs.changed()
	}
	return lost, dropped
}

// leaseOf is the claim h is held under now.
func (rs *rows) leaseOf(h *held) store.Lease {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return h.lease
}

// rowState is what a held row waits on, for a stall report.
type rowState struct {
	id        int64
	waits     string
	leaseLeft time.Duration
}

// snapshot says what up to n held rows wait on, and how many rows are held, waiting and out.
func (rs *rows) snapshot(n int, suspect map[*held]bool) (states []rowState, held, waiting, out int) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, h := range rs.byID {
		if len(states) == n {
			break
		}
		var waits string
		switch {
		case h.resolved:
			waits = "its result to be written"
		case h.lost:
			waits = "nothing: its claim was lost, it is dropped"
		case suspect[h]:
			waits = "more answers to tell whether its 'bad request' is its own"
		case h.waiting && !rs.callableLocked(h, now):
			waits = "in the queue for a lease renewal (its lease runs short)"
		case h.waiting:
			waits = "in the queue for an instance's send slot"
		default:
			waits = "in a call, or a retry's backoff"
		}
		states = append(states, rowState{id: id, waits: waits, leaseLeft: h.expires.Sub(now)})
	}
	return states, len(rs.byID), len(rs.queue), rs.out
}
