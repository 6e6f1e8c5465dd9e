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
// processes spent 0.965 of what one did). A refused run is recorded with how many instances it
// keeps, and a run that keeps handOverGap more (two more than a run that keeps none) hands the
// instance over to it at the end of its block (Budget.HandOver), so runs even out within a few
// blocks of one starting; when that leaves a run with none (more runs than instances), it is
// handed one that another run has kept for keepTurn. A run that wants an instance asks again
// when the keeper's bookings end, and takes it as soon as the keeper stops booking (its rows ran
// out, it ended, it was killed).

const (
	// yieldAhead is how far ahead another run may have booked an instance before this one gives
	// way (store.BudgetPolicy.Yield): less than what the keeper has booked when it reserves its
	// next block (aheadShare of a block), so a run that keeps booking keeps the instance.
	yieldAhead = 250 * time.Millisecond
	// wantedFresh is how long a run that was refused an instance counts as wanting it.
	wantedFresh = 3 * time.Second
	// handOverTimeout bounds a hand-over's statement: a run that cannot hand an instance over
	// only keeps it a little longer.
	handOverTimeout = 5 * time.Second
	// peekRetry is how soon an instance away asks the budget again after a failed look.
	peekRetry = time.Second
	// handOverGap is how many instances more than a run that wants one a run must keep to hand
	// it one: at 2 the two would swap an instance back and forth whenever one's count is a
	// moment old (a run that keeps none needs only 2: one each).
	handOverGap = 3
	// handedFresh is how long an instance handed over counts as on its way to the run that
	// wanted it: its count does not show it until the blocks booked on it end.
	handedFresh = 2 * time.Second
	// keepTurn is how long a run keeps an instance another run wants when there are more runs
	// than instances, and shares cannot be even: the runs take turns of this length.
	keepTurn = 30 * time.Second
)

// keeping says whether this run keeps an instance, as far as it knows. Its atomics are read
// without the controller's lock by the run's claimer and other instances.
type keeping struct {
	// gone says another run keeps the instance, or this run let it go: the run claims no rows
	// for it and shares none of its rows with it. ours says the run has had a block of it since:
	// until then it claims a block's worth of rows for it, not half a lease's, so that runs
	// starting together do not each claim for every instance and give most of it back.
	gone, ours atomic.Bool
	// out says the instance left this run (out, or its daily cap spent): it is not one the run
	// keeps, whoever books it.
	out atomic.Bool
	// until is when, on this process's clock in Unix nanoseconds, the keeper's bookings may end
	// (0: no wait): no request before then would be granted.
	until atomic.Int64
	// wanted is when a grant last said another run wanted the instance: wantedBy, which kept
	// wantedKept instances; since is since when this run keeps it. Under the controller's lock.
	wanted, since time.Time
	wantedBy      string
	wantedKept    int
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
	k.ours.Store(false)
}

// back records that the instance is this run's again, or anyone's.
func (k *keeping) back() {
	k.until.Store(0)
	k.gone.Store(false)
}

// handed are the instances the run handed over lately, by the run they went to.
type handed struct {
	mu sync.Mutex
	at map[string][]time.Time
}

// add records an instance handed to owner at now.
func (h *handed) add(owner string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at == nil {
		h.at = make(map[string][]time.Time)
	}
	h.at[owner] = append(h.at[owner], now)
}

// count is how many instances were handed to owner within handedFresh of now.
func (h *handed) count(owner string, now time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	ts := h.at[owner]
	for len(ts) > 0 && now.Sub(ts[0]) >= handedFresh {
		ts = ts[1:]
	}
	if len(ts) == 0 {
		delete(h.at, owner)
	} else {
		h.at[owner] = ts
	}
	return len(ts)
}

// kept is how many of the run's instances it keeps: still in the run, and kept by no other run.
func (r *Runner) kept() int {
	n := 0
	for _, c := range r.instances {
		if c.shared == nil || !c.shared.keep.gone.Load() && !c.shared.keep.out.Load() {
			n++
		}
	}
	return n
}

// sharing reports whether the run keeps some of its instances and other runs the rest: rows
// claimed beyond what its instances can call soon are better called by the others. A run that
// keeps none waits for its turn (more runs than instances) or its share with the rows it holds.
func (r *Runner) sharing() bool {
	gone := false
	for _, c := range r.instances {
		gone = gone || c.shared != nil && c.shared.keep.gone.Load()
	}
	return gone && r.kept() > 0
}

// available is how many of the run's instances no other run is known to keep as of now: kept,
// or kept by another run whose bookings may have ended.
func (r *Runner) available(now time.Time) int {
	n := 0
	for _, c := range r.instances {
		if c.shared == nil || !c.shared.keep.out.Load() && (!c.shared.keep.gone.Load() || c.shared.keep.away(now) == 0) {
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
		k.wanted, k.wantedBy, k.wantedKept = now, g.WantedBy, g.WantedKept
		c.r.shared.Store(true)
	}
	switch {
	case g.Busy && !g.QuotaSpent:
		c.r.shared.Store(true) // another run keeps it
		if !k.gone.Load() {
			c.r.wakeClaimer() // the rows claimed for it may go back
		}
		// The keeper's bookings end g.Start - g.Now after the grant, on the budget's clock, which
		// this run may not know yet (a read before its first block); never sooner than a fifth
		// of yieldAhead, so that the run does not ask again at once, again and again.
		at := now.Add(g.Start.Sub(g.Now) - yieldAhead)
		if c.r.endGame() {
			at = now.Add(g.Start.Sub(g.Now)) // at the end of the rows, had only once they end (endYield)
		}
		k.leave(later(at, now.Add(yieldAhead/5)))
	case g.Slots > 0:
		if k.gone.Load() || k.since.IsZero() {
			k.since = now
		}
		k.back()
		k.ours.Store(true)
	}
}

// letGoLocked hands the instance over, at the end of the slots in hand, to the run that wanted it
// last when this run keeps handOverGap instances more (two more than a run that keeps none), or,
// when that run keeps none, once this one has kept it for keepTurn. It reports whether it did;
// the run then books the instance no more, and asks again once its slots are spent, to keep it
// if the other did not take it. c.mu must be held.
func (c *controller) letGoLocked(now time.Time) bool {
	s := c.shared
	k := &s.keep
	if k.gone.Load() || k.wanted.IsZero() || now.Sub(k.wanted) >= wantedFresh || c.r.endGame() {
		return false
	}
	// The wanting run's count is as old as its want, and misses the instances handed to it
	// since (they are its once the blocks booked on them end): those are counted in.
	kept, pending := c.r.kept(), c.r.handed.count(k.wantedBy, now)
	theirs, gap := k.wantedKept+pending, handOverGap
	if theirs == 0 {
		gap = 2 // one each: neither has more to swap back
	}
	if kept < theirs+gap && (theirs > 0 || now.Sub(k.since) < keepTurn) {
		return false
	}
	c.r.handed.add(k.wantedBy, now)
	// The other run's first slot comes a guard after this run's last. This run's sends may be
	// running late, and a late send is made up only slowly (catchUp): the block's last slot would
	// miss the guard and be skipped, a slot lost at every hand-over. The guard is widened by how
	// late they run, so the slot is sent instead, and the other run starts that much later.
	p := policy
	p.Guard += s.widenGuard()
	end := s.slot(s.n)
	if s.ahead != nil {
		end = s.ahead.End().Add(s.offset)
	}
	// This run asks again once the slots it booked are past, and yieldAhead later: the other
	// run, handed the instance, books it first.
	k.leave(later(end, now).Add(yieldAhead))
	to := k.wantedBy
	k.wanted, k.wantedBy = time.Time{}, ""
	c.r.log.Debug().Str("instance", c.id).Str("to", to).Int("kept", kept).Int("theirs", k.wantedKept).
		Msg("handing the instance over to another run")
	c.r.reserving.Go(func() {
		ctx, cancel := context.WithTimeout(c.r.dbCtx, handOverTimeout)
		defer cancel()
		if _, err := c.r.cfg.Budget.HandOver(ctx, c.id, s.owner, to, p); err != nil {
			c.r.log.Debug().Str("instance", c.id).Err(err).Msg("handing the instance over failed: it is anyone's once its blocks end")
		}
	})
	c.r.wakeClaimer() // the rows claimed for it may go back
	return true
}

// endGame reports whether nothing more is due and other runs share the run's instances
// (Runner.shared, which stays set while for a moment the run sees none of them kept by another:
// at the end of the rows keepers stop booking one after another, and a run that took itself for
// alone claimed a full batch and gave it back 150 ms later): the rows in hand are the last, and
// shares need no evening out. Another run's rows then take an instance only once its keeper has
// stopped booking it (endYield), not whenever the keeper's bookings end within yieldAhead: at the
// end of the rows every run books small blocks, and the instances would pass from run to run, a
// guard lost at each pass.
func (r *Runner) endGame() bool {
	return r.drained.Load() && r.shared.Load()
}

// reachEnd is the run's entering the end of the rows (endGame). On every instance it keeps it
// gives back the slots booked beyond endAhead: the run gave back the rows that would have
// filled them. Every instance another run keeps it asks for again at once: at the end of the
// rows their keepers stop booking them as soon as their own rows run out, long before the
// bookings this run last heard of end.
func (r *Runner) reachEnd() {
	now := r.cfg.Now()
	for _, c := range r.instances {
		if c.shared == nil {
			continue
		}
		c.mu.Lock()
		if c.shared.keep.gone.Load() {
			c.shared.keep.until.Store(now.UnixNano())
			c.changedLocked()
		} else {
			c.trimLocked(now.Add(endAhead))
		}
		c.mu.Unlock()
	}
}

// trimLocked gives up the instance's slots after until, here and in the budget. While a
// reservation is in flight it waits for it (trimPendingLocked): the budget trims the bookings
// only if they end where this run saw them end, and a block granted meanwhile would be given up
// here and stand there, unsent. c.mu must be held.
func (c *controller) trimLocked(until time.Time) {
	s := c.shared
	if s.asking > 0 {
		s.trimTo = until
		return
	}
	booked, at, cut := s.trim(until)
	c.changedLocked()
	if !cut {
		return
	}
	r, owner := c.r, s.owner
	s.trimming = true
	r.reserving.Go(func() {
		ctx, cancel := context.WithTimeout(r.dbCtx, handOverTimeout)
		_, err := r.cfg.Budget.Trim(ctx, c.id, owner, booked, at)
		cancel()
		if err != nil {
			r.log.Debug().Str("instance", c.id).Err(err).Msg("giving back the slots booked beyond the last rows failed: they go unsent")
		}
		c.mu.Lock()
		s.trimming = false
		c.changedLocked()
		c.mu.Unlock()
	})
}

// trimPendingLocked does the trim asked for while the reservation just back was in flight, if
// the run is still at the end of the rows (a block granted after rows were due again is kept).
// c.mu must be held.
func (c *controller) trimPendingLocked() {
	if until := c.shared.trimTo; !until.IsZero() {
		c.shared.trimTo = time.Time{}
		if c.r.endGame() {
			c.trimLocked(until)
		}
	}
}

// endYield is how far ahead another run may have booked an instance before this one gives way,
// at the end of the rows (Runner.endGame): at all (store.BudgetPolicy.Yield 0 would not give way).
const endYield = time.Microsecond

// reservePolicy is the policy of this run's reservations: the run gives way to a run that keeps
// an instance (yieldAhead), at the end of the rows as long as it books it (endYield).
func (r *Runner) reservePolicy() store.BudgetPolicy {
	p := policy
	if r.endGame() {
		p.Yield = endYield
	}
	return p
}

// peek asks the budget, taking nothing, whether another run still keeps the instance: a run
// that holds no row for it learns so when the keeper stops, and claims rows for it again.
func (c *controller) peek(ctx context.Context) {
	cfg := &c.r.cfg
	c.mu.Lock()
	s := c.shared
	req := store.BudgetRequest{Instance: c.id, Owner: s.owner, MaxRPS: s.max, Refunded: s.refunded, PerDay: c.perDay, Day: s.day,
		Kept: c.r.kept()}
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, cfg.DatabaseTimeout)
	g, err := cfg.Budget.Reserve(dctx, req, c.r.reservePolicy())
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return // the run is stopping
		}
		// A database that stays away ends the run as it does for a reservation: a run waiting
		// for instances others keep would otherwise only stall.
		if wait, err := c.budgetFailed(err); err == nil {
			s.keep.until.Store(cfg.Now().Add(max(wait, peekRetry)).UnixNano())
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budgetRetry.ok(cfg.Now())
	switch {
	case g.Busy:
		c.keptLocked(g)
	default:
		s.keep.since = time.Time{} // kept again from its next block, if at all
		s.keep.back()
		c.r.wakeClaimer()
	}
}
