package enrich

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// Keeping an instance. Runs that share an instance's budget (pods of one Deployment, a CronJob
// beside a backfill) do not take turns on it block by block: one run keeps it while it has rows
// for it, booking block after block, and the others give way (store.BudgetPolicy.Yield) and
// claim rows only for the instances they keep. Turns cost the guard between two runs' blocks at
// every turn, and each run's blocks were booked seconds ahead behind the others', so the rows a
// run held at the end waited for slots far behind while other runs' slots went unsent (six
// processes spent 0.965 of what one did). A run that keeps more than its share of the instances
// (their count over the runs that want them) lets a wanted one go at the end of its block, so
// runs that start later get their share within seconds; a run that wants an instance asks again
// when the keeper's bookings end, and takes it as soon as the keeper stops booking (its rows ran
// out, it ended, it was killed).

const (
	// yieldAhead is how far ahead another run may have booked an instance before this one gives
	// way (store.BudgetPolicy.Yield): less than what the keeper has booked when it reserves its
	// next block (aheadShare of a block), so a run that keeps booking keeps the instance.
	yieldAhead = 250 * time.Millisecond
	// wantedFresh is how long a run that was refused an instance counts as wanting it.
	wantedFresh = 3 * time.Second
	// peekRetry is how soon an instance away asks the budget again after a failed look.
	peekRetry = time.Second
	// keepTurn is how long a run keeps an instance another run wants when there are more runs
	// than instances, and shares cannot be even: the runs take turns of this length.
	keepTurn = 30 * time.Second
)

// keeping says whether this run keeps an instance, as far as it knows. Its atomics are read
// without the controller's lock by the run's claimer and other instances.
type keeping struct {
	// gone says another run keeps the instance, or this run let it go: the run claims no rows
	// for it and shares none of its rows with it.
	gone atomic.Bool
	// until is when, on this process's clock in Unix nanoseconds, the keeper's bookings may end
	// (0: no wait): no request before then would be granted.
	until atomic.Int64
	// wanted is when a grant last said another run wanted the instance, and since when this run
	// keeps it. Under the controller's lock.
	wanted, since time.Time
}

// away is how long to wait before asking for the instance's slots again: 0 when this run keeps
// it, or the keeper's bookings may have ended.
func (k *keeping) away(now time.Time) time.Duration {
	return max(0, time.Duration(k.until.Load()-now.UnixNano()))
}

// leave records that the instance is another run's (or given up) until at.
func (k *keeping) leave(at time.Time) {
	k.until.Store(at.UnixNano())
	k.gone.Store(true)
}

// back records that the instance is this run's again, or anyone's.
func (k *keeping) back() {
	k.until.Store(0)
	k.gone.Store(false)
}

// wanters are the other runs that asked for this run's instances lately: with this run, the runs
// the instances are shared among.
type wanters struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// note records that owner wanted one of the run's instances as of now.
func (w *wanters) note(owner string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen = make(map[string]time.Time)
	}
	w.seen[owner] = now
}

// count is how many other runs wanted an instance within wantedFresh of now.
func (w *wanters) count(now time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for owner, at := range w.seen {
		if now.Sub(at) < wantedFresh {
			n++
		} else {
			delete(w.seen, owner)
		}
	}
	return n
}

// kept is how many of the run's instances no other run keeps.
func (r *Runner) kept() int {
	n := 0
	for _, c := range r.instances {
		if c.shared == nil || !c.shared.keep.gone.Load() {
			n++
		}
	}
	return n
}

// sharing reports whether the run keeps some of its instances and other runs the rest: rows
// claimed beyond what its instances can call soon are better called by the others. A run that
// keeps none waits for its turn (more runs than instances) or its share with the rows it holds.
func (r *Runner) sharing() bool {
	k := r.kept()
	return k > 0 && k < len(r.instances)
}

// available is how many of the run's instances no other run is known to keep as of now: kept,
// or kept by another run whose bookings may have ended.
func (r *Runner) available(now time.Time) int {
	n := 0
	for _, c := range r.instances {
		if c.shared == nil || !c.shared.keep.gone.Load() || c.shared.keep.away(now) == 0 {
			n++
		}
	}
	return n
}

// keptLocked learns from a grant who keeps the instance and who wants it. c.mu must be held.
func (c *controller) keptLocked(g store.Grant) {
	now := c.r.cfg.Now()
	k := &c.shared.keep
	if g.WantedBy != "" && g.WantedBy != c.r.cfg.Owner && g.Now.Sub(g.WantedAt) < wantedFresh {
		k.wanted = now
		c.r.wanters.note(g.WantedBy, now)
	}
	switch {
	case g.Busy && !g.QuotaSpent:
		if !k.gone.Load() {
			c.r.wakeClaimer() // the rows claimed for it may go back
		}
		// Never sooner than a fifth of yieldAhead: a clock estimate off by more than the
		// bookings left must not make the run ask again at once, again and again.
		k.leave(later(g.Start.Add(c.shared.offset).Add(-yieldAhead), now.Add(yieldAhead/5)))
	case g.Slots > 0:
		if k.gone.Load() || k.since.IsZero() {
			k.since = now
		}
		k.back()
	}
}

// letGoLocked lets the instance go at the end of the slots in hand when another run wants it and
// this run keeps more than its share (the instances over the runs that want them, this one
// included), or, with more runs than instances, has kept it for keepTurn. It reports whether it
// did; the run then books the instance no more, and asks again once its slots are spent, to keep
// it if no run took it. c.mu must be held.
func (c *controller) letGoLocked(now time.Time) bool {
	s := c.shared
	if s.keep.gone.Load() || s.keep.wanted.IsZero() || now.Sub(s.keep.wanted) >= wantedFresh {
		return false
	}
	n := len(c.r.instances)
	runs := c.r.wanters.count(now) + 1
	share := (n + runs - 1) / runs
	if c.r.kept() <= share && (runs <= n || now.Sub(s.keep.since) < keepTurn) {
		return false
	}
	end := s.start.Add(time.Duration(s.n) * s.iv)
	if s.ahead != nil {
		end = s.ahead.Start.Add(s.offset).Add(time.Duration(s.ahead.Slots) * s.ahead.Interval)
	}
	// The run that wants the instance asks again yieldAhead before the end of the bookings it
	// last saw: it has as long again after the end to take the instance before this run does.
	s.keep.leave(later(end, now).Add(yieldAhead))
	c.r.wakeClaimer() // the rows claimed for it may go back
	c.r.log.Debug().Str("instance", c.id).Int("runs", runs).Int("share", share).Msg("letting the instance go to another run")
	return true
}

// peek asks the budget, taking nothing, whether another run still keeps the instance: a run
// that holds no row for it learns so when the keeper stops, and claims rows for it again.
func (c *controller) peek(ctx context.Context) {
	cfg := &c.r.cfg
	c.mu.Lock()
	s := c.shared
	req := store.BudgetRequest{Instance: c.id, Owner: s.owner, MaxRPS: s.max, Refunded: s.refunded, PerDay: c.perDay, Day: s.day}
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, cfg.DatabaseTimeout)
	g, err := cfg.Budget.Reserve(dctx, req, policy)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		s.keep.until.Store(cfg.Now().Add(peekRetry).UnixNano())
	case g.Busy:
		c.keptLocked(g)
	default:
		s.keep.since = time.Time{} // kept again from its next block, if at all
		s.keep.back()
		c.r.wakeClaimer()
	}
}
