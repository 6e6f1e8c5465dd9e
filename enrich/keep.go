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
// processes spent 0.965 of what one did).
//
// Who keeps it depends on whose rows the runs call. Runs on one table (Config.Table) call the
// same rows, so which of them keeps an instance changes nothing, and one run alone spends the
// budget best: they gather their instances in the run that keeps most (gathers), each instance
// handed over once, and the others stand by (standingBy): they hold no rows, and read who keeps
// their instances once a standbyLook (lookLoop) until a keeper stops booking one (its rows ran
// out, it ended, it was killed).
// Evening the instances out among them cost a guard and a shift of the instance's slots at each
// of 85–142 hand-overs a run, and at the end of the rows each run's instances ran out of rows at
// their own moment: six processes spent 0.994 of one's budget.
//
// Runs on different tables share fairly. A refused run is recorded with how many instances it
// keeps and its table, and a run that keeps handOverGap more (two more than a run that keeps
// none) hands the instance over to it at the end of its block (Budget.HandOver), so runs even
// out within a few blocks of one starting; when that leaves a run with none (more runs than
// instances), it is handed one that another run has kept for keepTurn. A run that wants an
// instance asks again when the keeper's bookings are about to end, and takes it as soon as the
// keeper stops booking.

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
	// standbyLook is how often a run looks whether the runs on its table that keep its
	// instances still book them (lookLoop): they call this run's rows, and hand the instances
	// over to no run that keeps fewer, so it only waits for them to stop (their rows ran out,
	// they ended, they were killed). A killed keeper's instance is taken within its last block
	// and standbyLook.
	standbyLook = time.Second
	// standbyWait is when an instance a run stands by for asks again by itself: never, in effect;
	// the run's look has it ask (lookLoop).
	standbyWait = 24 * time.Hour
	// standbyGrace is how long after its keeper's bookings end a run standing by still counts
	// an instance as kept: a keeper at the end of its rows books a slot or two at a time, and
	// between two blocks its bookings may end for a moment. Taken then, the instances went to
	// runs standing by that claimed the rows the keeper gave back as it reached the end, a
	// second's worth for each instance, and called them for 1.5 s after the keeper ended.
	standbyGrace = time.Second
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
	// wantedKept instances, on this run's table or not (wantedSame); since is since when this
	// run keeps it; standby says the last grant refused it for a run on this run's table that it
	// does not gather from (gathers). Under the controller's lock.
	wanted, since       time.Time
	wantedBy            string
	wantedKept          int
	wantedSame, standby bool
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

// mine reports whether the instance is the run's, as far as it knows: still in the run, and kept
// by no other run.
func (k *keeping) mine() bool { return !k.gone.Load() && !k.out.Load() }

// count is how many of the run's instances have no shared budget (nothing to keep) or match.
func (r *Runner) count(match func(k *keeping) bool) int {
	n := 0
	for _, c := range r.instances {
		if c.shared == nil || match(&c.shared.keep) {
			n++
		}
	}
	return n
}

// kept is how many of the run's instances it keeps: still in the run, and kept by no other run.
func (r *Runner) kept() int { return r.count((*keeping).mine) }

// holds is how many of the run's instances it has had a block of since it last gave way: the
// count it tells other runs (store.BudgetRequest.Kept), and weighs against theirs (gathers,
// handOverGap). Not kept, which counts an instance as the run's until a grant says another run
// keeps it: runs starting together each counted all 50 instances at first, and runs on one table
// handed instances to whichever counted more for a moment, 122 hand-overs before they had
// gathered them in one.
func (r *Runner) holds() int {
	return r.count(func(k *keeping) bool { return k.ours.Load() && k.mine() })
}

// sharing reports whether other runs keep some of the run's instances: rows claimed beyond what
// the instances it keeps can call soon are better called by the others. A run that keeps none
// holds no rows (Runner.claim gives them all back): it calls none until it keeps an instance,
// and on the same table another run calls them. When they held them, five runs that kept none
// of 50 instances held 2,450 of 12,000 rows, claimed as they started, for the whole run; the one
// that kept them all ran dry and ended, and the five called those rows on the instances it left.
func (r *Runner) sharing() bool {
	for _, c := range r.instances {
		if c.shared != nil && c.shared.keep.gone.Load() {
			return true
		}
	}
	return false
}

// StandBy tells the run, before Run, that a run on its table started before it and still runs
// (the CLI learns so from the runs table): before it checks its instances, it waits until a run
// on its table books one (waitBehind), so that it stands by for those the first run keeps, with
// no state check of its own, and takes only the others. Pods of a Job that start together
// otherwise each booked some of the instances in the same moment, and then handed most of them
// over to gather them in one; and each checked the state of every instance, on the one schedule
// of state checks they share, delaying the first run's first calls.
func (r *Runner) StandBy() { r.behind.Store(true) }

// behindWait bounds waitBehind: longer than the first run's checks of its instances
// (preflightTimeout) and its first claim, so that a first run that books nothing (it ended, or
// has nothing due, or lists other instances) holds this one back only that long.
const behindWait = preflightTimeout + 5*time.Second

// waitBehind is the start of a run told it is not the first of its table (StandBy): it looks at
// the budget every standbyLook until a run on its table books an instance, for at most
// behindWait. A failed look ends the wait: the run then checks its instances as any run does.
func (r *Runner) waitBehind() {
	if !r.behind.Load() || r.cfg.Budget == nil || r.cfg.Table == "" {
		return
	}
	deadline := r.cfg.Now().Add(behindWait)
	for r.cfg.Now().Before(deadline) {
		if r.cfg.Sleep(r.stop, standbyLook) != nil {
			return
		}
		ks, err := r.keepers(nil)
		if err != nil {
			return
		}
		for _, k := range ks {
			if r.mateKeeps(k, 0) {
				return
			}
		}
	}
}

// lookLoop is the run's look at the budget: every standbyLook it reads, with one statement
// (Budget.Keepers), who keeps the instances it stands by for, and which instances runs on its
// table keep. Each instance whose keeper on its table no longer books it asks for it at once
// (peek). Asked for one by one, each every 2 s, five runs standing by beside one that kept 50
// instances cost PostgreSQL three times the CPU of a run alone, and the keeper's sends ran late
// on the shared machine: 11 slots skipped against none, 22 lost after the last calls against 4
// (one bench run). A run that
// sees runs on its table book instances it does not list shares the table's rows with them
// (sharesTable): keeping all of its own, it saw no other run at its grants, held two seconds of
// rows when the table ran dry, and called them alone for four seconds after the others ended.
// It ends when done is closed.
func (r *Runner) lookLoop(done <-chan struct{}) {
	if r.cfg.Budget == nil || r.cfg.Table == "" {
		return
	}
	t := time.NewTicker(standbyLook)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-r.stop.Done():
			return
		case <-t.C:
		}
		r.look()
	}
}

// look is one look of lookLoop. When the read fails, every instance the run stands by for asks
// for itself, and a database that stays away takes the course of a failed reservation
// (controller.budgetFailed).
func (r *Runner) look() {
	var cs []*controller
	var ids []string
	for _, c := range r.instances {
		if c.shared == nil {
			continue
		}
		c.mu.Lock()
		if c.shared.keep.standby && c.shared.keep.gone.Load() {
			cs, ids = append(cs, c), append(ids, c.id)
		}
		c.mu.Unlock()
	}
	ks, err := r.keepers(ids)
	if r.stop.Err() != nil {
		return
	}
	now := r.cfg.Now()
	kept := make(map[string]bool, len(ks))
	for _, k := range ks {
		if r.mateKeeps(k, 0) {
			r.sharedAt.Store(now.UnixNano())
		}
		kept[k.Instance] = r.mateKeeps(k, standbyGrace)
	}
	for _, c := range cs {
		if err == nil && kept[c.id] {
			continue
		}
		c.mu.Lock()
		if c.shared.keep.standby && c.shared.keep.gone.Load() {
			c.shared.keep.until.Store(now.UnixNano())
			c.changedLocked()
		}
		c.mu.Unlock()
	}
}

// keepers reads, within DatabaseTimeout, who keeps the instances ids and which instances runs
// on this run's table keep (Budget.Keepers).
func (r *Runner) keepers(ids []string) ([]store.Keeping, error) {
	ctx, cancel := context.WithTimeout(r.stop, r.cfg.DatabaseTimeout)
	defer cancel()
	return r.cfg.Budget.Keepers(ctx, r.cfg.Table, ids)
}

// mateKeeps reports whether k says another run on this run's table keeps the instance: its
// bookings end after the budget's now, or less than grace before it.
func (r *Runner) mateKeeps(k store.Keeping, grace time.Duration) bool {
	return k.Owner != "" && k.Owner != r.cfg.Owner && r.ourTable(k.Table) && k.Until.Add(grace).After(k.Now)
}

// standingBy reports whether other runs keep every instance still in the run, and the run holds
// no row: it waits for one of them to stop booking one (its rows ran out, it ended, it was
// killed), and nothing of its own can move meanwhile. A run that starts beside one on the same
// table that keeps every instance stands by as long as that one runs, hours in a backfill; the
// stall watchdog leaves it be.
func (r *Runner) standingBy() bool {
	if held, _, _ := r.rows.counts(); held > 0 {
		return false
	}
	waits := false
	for _, c := range r.instances {
		switch {
		case c.shared == nil:
			return false
		case c.shared.keep.out.Load():
		case !c.shared.keep.gone.Load():
			return false
		default:
			waits = true
		}
	}
	return waits
}

// available is how many of the run's instances no other run is known to keep as of now: kept,
// or kept by another run whose bookings may have ended.
func (r *Runner) available(now time.Time) int {
	return r.count(func(k *keeping) bool { return !k.out.Load() && (!k.gone.Load() || k.away(now) == 0) })
}

// keptLocked learns from a grant who keeps the instance and who wants it. c.mu must be held.
func (c *controller) keptLocked(g store.Grant) {
	now := c.r.cfg.Now()
	k := &c.shared.keep
	if g.WantedBy != "" && g.WantedBy != c.r.cfg.Owner && g.Now.Sub(g.WantedAt) < wantedFresh {
		k.wanted, k.wantedBy, k.wantedKept, k.wantedSame = now, g.WantedBy, g.WantedKept, c.r.ourTable(g.WantedTable)
	}
	k.standby = false
	switch {
	case g.Busy && !g.QuotaSpent:
		same := c.r.ourTable(g.KeeperTable)
		if same {
			c.r.sharedAt.Store(now.UnixNano()) // a run on this table keeps it
		}
		k.standby = same && !gathers(c.r.holds(), c.r.cfg.Owner, g.KeeperKept, g.Keeper)
		if !k.gone.Load() {
			c.r.wakeClaimer() // the rows claimed for it may go back
		}
		// The keeper's bookings end g.Start - g.Now after the grant, on the budget's clock, which
		// this run may not know yet (a read before its first block); never sooner than a fifth
		// of yieldAhead, so that the run does not ask again at once, again and again. A run
		// standing by does not ask: its look does (lookLoop).
		at := now.Add(g.Start.Sub(g.Now) - yieldAhead)
		switch {
		case k.standby:
			at = now.Add(standbyWait)
		case c.r.endGame():
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
	kept, pending := c.r.holds(), c.r.handed.count(k.wantedBy, now)
	theirs, gap := k.wantedKept+pending, handOverGap
	if theirs == 0 {
		gap = 2 // one each: neither has more to swap back
	}
	switch {
	case k.wantedSame:
		if !gathers(theirs, k.wantedBy, kept, c.r.cfg.Owner) {
			return false
		}
	case kept < theirs+gap && (theirs > 0 || now.Sub(k.since) < keepTurn):
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
	c.r.log.Debug().Str("instance", c.id).Str("to", to).Int("kept", kept).Int("theirs", k.wantedKept).Bool("same_table", k.wantedSame).
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

// endGame reports whether nothing more is due and runs on the run's table keep some of its
// instances (sharesTable): the rows in hand are the last, the table is the runs' one queue, and
// shares need no evening out. Another run's rows then take an instance only once its keeper has
// stopped booking it (endYield), not whenever the keeper's bookings end within yieldAhead: at the
// end of the rows every run books small blocks, and the instances would pass from run to run, a
// guard lost at each pass. A run that keeps every instance it has, the others standing by, is
// not at the end game: it calls the rows it holds as a run alone does. Taken for sharing because
// runs stood by beside it (they wanted its instances), one that kept all 50 gave back its rows
// beyond 200 ms of sending when the table ran dry, and lost 138 slots at the end.
func (r *Runner) endGame() bool {
	return r.drained.Load() && r.sharesTable()
}

// sharedFresh is how long after a grant last said a run on the run's table kept one of its
// instances the run counts as sharing it (Runner.sharesTable): longer than standbyLook, the
// longest a run asks for such an instance, so that the run does not take itself for alone
// while it still shares. At the end of the rows keepers stop booking one after another, and a
// run that for a moment saw none of its instances kept by another took itself for alone,
// claimed a full batch and gave it back 150 ms later.
const sharedFresh = 5 * time.Second

// sharesTable reports whether a run on this run's table kept one of its instances within
// sharedFresh: the rows of the table are split between the runs' queues.
func (r *Runner) sharesTable() bool {
	at := r.sharedAt.Load()
	return at != 0 && r.cfg.Now().Sub(time.Unix(0, at)) < sharedFresh
}

// ourTable reports whether table, another run's, is this run's: the two call the same rows. A
// table not said ("") is no one's.
func (r *Runner) ourTable(table string) bool {
	return table != "" && table == r.cfg.Table
}

// gathers reports whether a run that keeps kept instances, owner, is to have the instances of
// a run on its table that keeps otherKept, otherOwner: runs on one table gather their instances
// in the run that keeps most (the owner that sorts first, among equals). Which of them calls the
// rows changes nothing, and one run alone spends the budget best: each hand-over costs the
// guard, and at the end of the rows runs that share their table lose the slots between their
// instances' last calls (endGame). The order is the same from either side, so an instance is
// handed one way only.
func gathers(kept int, owner string, otherKept int, otherOwner string) bool {
	return kept > otherKept || kept == otherKept && owner < otherOwner
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
		Kept: c.r.holds(), Table: cfg.Table, Standby: s.keep.standby}
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
