package enrich

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// Budget is the send slots of every instance, shared by all the processes that spend it:
// *store.Store in production, so that two pods, or a CronJob beside a backfill, together keep to
// an instance's rate. Without one (Config.Budget nil) each run paces its instances alone.
type Budget interface {
	// Reserve hands out a block of an instance's slots.
	Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error)
	// Throttled records a 429 for a request the instance got at sent (the budget's clock): the
	// rate comes down for every process.
	Throttled(ctx context.Context, instance string, sent time.Time, maxRPS float64, retryAfter time.Duration, p store.BudgetPolicy) error
	// QuotaSpent records that the instance answered 466 today.
	QuotaSpent(ctx context.Context, instance string, day store.DayStart) error
	// ReserveState hands out the instance's next GetStateInstance slot.
	ReserveState(ctx context.Context, instance string, maxRPS float64, p store.BudgetPolicy) (slot, now time.Time, err error)
	// ReserveCheck hands out the instance's next CheckWhatsapp slot, at rps.
	ReserveCheck(ctx context.Context, instance string, rps float64, p store.BudgetPolicy) (slot, now time.Time, err error)
	// HandOver gives the instance from keeps to the run to that wanted it (keep.go), reporting
	// whether from still kept it.
	HandOver(ctx context.Context, instance, from, to string, p store.BudgetPolicy) (bool, error)
	// Trim gives back the slots owner booked on the instance after at (the budget's clock), if
	// its bookings are still the last and still end at end, reporting whether it did (keep.go: the
	// end of the rows).
	Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error)
	// Keepers reads who keeps each of the instances, and each instance whose last block a run
	// on table took, taking and locking nothing (keep.go: a run's look).
	Keepers(ctx context.Context, table string, instances []string) ([]store.Keeping, error)
}

// policy is the pacing policy of pacer.go, for the shared budget.
var policy = store.BudgetPolicy{Headroom: paceHeadroom, HeadroomStep: headroomStep, HeadroomMax: headroomMax,
	HeadroomEase: headroomEase, Cut: rateCut, Floor: rateFloorShare, Quiet: rateQuiet,
	Step: rateStep, StepEvery: rateStepEvery, Guard: blockGuard, Yield: yieldAhead}

// SharedPolicy is the pacing policy every run applies to the shared budget, for what reads the
// budget without spending it (enrich status shows each instance's rate and headroom as a run
// starting now would find them).
func SharedPolicy() store.BudgetPolicy { return policy }

const (
	// blockFor is how much of the rate one reservation takes: one round trip a second per
	// instance and process, and a process killed with -9 wastes no more than that.
	blockFor = time.Second
	// blockLeast is the least time one reservation takes, whatever the rows waiting: longer than
	// any round trip to the budget, so a block's first slots are not past when it arrives. At 10
	// rps it is one slot.
	blockLeast = 100 * time.Millisecond
	// blockGuard is the gap the budget leaves between two runs' blocks: how late a run may send
	// the last slot of its block. A run's estimate of the database's clock never places its
	// slots early (estimateOffset), so a late request never arrives within a slot of the next
	// run's first.
	blockGuard = 10 * time.Millisecond
	// catchUp is the share of the headroom a run may give up between two of its own requests to
	// make up for a late one, so that lateness (a timer's wake-up, the client's own work before
	// the write) does not pile up until a slot is skipped: at 10 rps and the least headroom a
	// request may leave 0.67 ms early on its slot, never closer than 100.33 ms to the last.
	catchUp = 2.0 / 3
	// aheadShare is how much of a block is left when the next one is reserved, in the
	// background: the reservation's round trip, and a database slow for a moment, then cost no
	// slot.
	aheadShare = 0.5
	// aliveFresh is how recent another run's answer must be for a run to start on the instance
	// without its own state check.
	aliveFresh = time.Minute
)

// shared paces one instance from blocks of its shared schedule. Within a block its requests
// leave at their slots, a late one made up over the next few (minGap); a slot that cannot be met
// within half a slot is skipped. The block's last slot must be met within the guard, never late
// into the next block, which may be another run's (oursNext). The next block is reserved while
// half of this one is left (ahead), so that the schedule goes on without a gap. It is not safe
// for concurrent use (the controller guards it).
type shared struct {
	// owner is this run, so the budget knows whose block came last.
	owner string
	max   float64
	// rate and headroom are the instance's shared rate and headroom as of the last grant.
	rate, headroom float64
	// last is when this process last sent to the instance.
	last time.Time
	// The current block: n slots from start (this process's clock), every iv; next is the
	// first not yet sent.
	start   time.Time
	iv      time.Duration
	n, next int
	// offset is this process's clock minus the budget's as of offsetAt, the last grant's
	// arrival (estimateOffset: never less than the truth).
	offset   time.Duration
	offsetAt time.Time
	// unsent counts the slots given up since the last reservation, to give back to the day;
	// refunded is the total the budget acknowledged as given back, so a reservation asked again
	// after a lost reply gives nothing back twice (store.BudgetRequest.Refunded).
	unsent   int
	refunded int64
	// used is the day's count as of the last grant; answered says a real answer came since the
	// last reservation.
	used     int64
	answered bool
	// endDB is where the current block ends on the budget's clock.
	endDB time.Time
	// ahead is the next block, reserved while this one was being sent, received at aheadAt by a
	// request that gave aheadRefund slots back; reserving says such a request is in flight.
	// gen counts the blocks given up (drop): a block reserved ahead of one given up is given up
	// too.
	ahead       *store.Grant
	aheadAt     time.Time
	aheadRefund int
	reserving   bool
	gen         int
	// aheadTried says the next block was asked for ahead during this one: once a block, so a
	// budget that grants none (the day's cap spent) or fails is not asked again at every send.
	aheadTried bool
	// asking is how many slots the reservation in flight asked for: counted as held until the
	// grant arrives, so that the run's instances, which reserve at about the same moments, do not
	// each size a block by the same rows waiting.
	asking int
	// held is how many slots the instance holds, granted and not yet sent or given up (the rest
	// of the block, the block ahead and the block being asked for), published after every change
	// for the run's other instances and the watchdog to read without the controller's lock
	// (controller.unreserved, Runner.slotsHeld).
	held atomic.Int64
	// day says when the instance's day turns (Config.Day; loc is its zone), and blockDay is the
	// day of the last grant on the budget's clock: the day its unsent slots count on.
	day      store.DayStart
	loc      *time.Location
	blockDay time.Time
	// keep is whether this run keeps the instance, or another does (keep.go).
	keep keeping
	// handedLate widens the guard after the block when the run hands the instance over (keep.go)
	// or gives back the slots after it (trim): how late its sends ran then.
	handedLate time.Duration
	// trimTo is a trim asked for while a reservation was in flight (asking), done once it is back
	// (controller.trimLocked): the budget trims bookings only where the run saw them end.
	trimTo time.Time
	// trimming says the budget's trim is in flight: no block is reserved meanwhile, or it would
	// start after the bookings being trimmed.
	trimming bool
}

// dayTurnMargin is how near the turn of the day a run takes its unsent slots to be the last
// day's: within it its estimate of the budget's clock cannot tell, and a refund kept is safe
// (the day's count stays high), one given to the wrong day is not.
const dayTurnMargin = time.Second

// dayOf is the day t falls on when days start at day.Offset in loc: the date only. The offset is
// taken off the wall clock, as the budget's SQL does ((t AT TIME ZONE zone) - offset), not off
// the instant: on the night the clocks go back the two differ by the hour.
func dayOf(t time.Time, loc *time.Location, day store.DayStart) time.Time {
	l := t.In(loc)
	wall := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
	y, m, d := wall.Add(-day.Offset).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// newShared paces an instance for owner at rps, its day turning as day says.
func newShared(owner string, rps float64, day store.DayStart) *shared {
	loc := time.UTC
	if day.Zone != "" {
		if l, err := time.LoadLocation(day.Zone); err == nil { // checked by Config.withDefaults
			loc = l
		}
	}
	return &shared{owner: owner, max: rps, rate: rps, headroom: paceHeadroom, day: day, loc: loc}
}

// publish sets held from the rest of the block, the block ahead and the block being asked for.
func (s *shared) publish() {
	n := max(0, s.n-s.next) + s.asking
	if s.ahead != nil {
		n += s.ahead.Slots
	}
	s.held.Store(int64(n))
}

// nextSlot is the earliest time the next request may leave, as of now, or false when the block
// is spent and another must be reserved.
func (s *shared) nextSlot(now time.Time) (time.Time, bool) {
	defer s.publish()
	// Slots already past by more than half a slot are skipped all at once: at a high rate the
	// run is behind the schedule by thousands of them.
	if behind := now.Sub(s.start) - s.iv/2; behind > 0 && s.iv > 0 {
		if first := int(behind/s.iv) + 1; first > s.next {
			first = min(first, s.n)
			s.unsent += first - s.next
			s.next = first
		}
	}
	for s.next < s.n {
		slot, at := s.due()
		late := s.iv / 2
		if s.next == s.n-1 && !s.oursNext() {
			late = blockGuard + s.handedLate // the next slot may be another run's
		}
		if at.Sub(slot) <= late && now.Sub(slot) <= late {
			return later(at, now), true
		}
		s.next++
		s.unsent++
	}
	return time.Time{}, false
}

// slot is when the block's slot i comes, on this process's clock; slot(n) is where the block
// ends.
func (s *shared) slot(i int) time.Time {
	return s.start.Add(time.Duration(i) * s.iv)
}

// due is the next slot, and the earliest its request may leave: at the slot, and minGap after
// the last request.
func (s *shared) due() (slot, at time.Time) {
	slot = s.slot(s.next)
	at = slot
	if !s.last.IsZero() {
		at = later(slot, s.last.Add(s.minGap()))
	}
	return slot, at
}

// minGap is the least time between two of this run's requests: a slot, measured on actual
// sends, so that a minimum-gap server never sees two closer than its limit plus the headroom.
// While other runs share the instance it gives up catchUp of the headroom, so that a late request
// is made up over the next few instead of pushing the block's end, which may be the next run's
// start, back.
func (s *shared) minGap() time.Duration {
	return time.Duration(float64(s.iv) * (1 + s.headroom*(1-catchUp)) / (1 + s.headroom))
}

// sent records a request leaving at now and returns that time on the budget's clock.
func (s *shared) sent(now time.Time) time.Time {
	defer s.publish()
	s.last = now
	s.next++
	return now.Add(-s.offset)
}

// drop gives up the rest of the block, and the block reserved ahead: the instance paused, or a
// 429 cut the rate.
func (s *shared) drop() {
	defer s.publish()
	s.unsent += max(0, s.n-s.next)
	s.next = s.n
	s.gen++
	if s.ahead != nil {
		s.giveUp(*s.ahead, s.aheadRefund)
		s.ahead = nil
	}
}

// giveUp accounts for a block granted and never used, by a request that gave refund slots
// back: the refund was taken, the block's slots are to give back.
func (s *shared) giveUp(g store.Grant, refund int) {
	s.unsent += g.Slots - refund
	s.refunded += int64(refund)
	s.used = g.Used
}

// trim gives up the slots of the block in hand after until, and the block reserved ahead, and
// returns where the run's bookings ended and where the slots kept end, on the budget's clock. It
// reports false when no slot is given up.
func (s *shared) trim(until time.Time) (booked, kept time.Time, cut bool) {
	defer s.publish()
	booked = s.endDB
	if s.ahead != nil {
		booked = s.ahead.End()
		s.giveUp(*s.ahead, s.aheadRefund)
		s.ahead = nil
		cut = true
	}
	s.gen++ // a block asked for ahead meanwhile is given up too
	k := s.n
	if s.iv > 0 && until.After(s.start) {
		k = min(s.n, int(until.Sub(s.start)/s.iv)+1)
	} else if !until.After(s.start) {
		k = 0
	}
	k = max(k, s.next)
	if k < s.n {
		s.unsent += s.n - k
		s.n = k
		cut = true
	}
	s.endDB = s.slot(s.n).Add(-s.offset)
	// Every slot kept is sent, the last one late: a block's last slot leaves up to half a slot
	// late when the block after it is this run's (rescue), and giving that block up here would
	// have the next run's first request, a guard after the slots kept, come less than a slot
	// after it (two runs in one second at 2 rps, 3 requests). The slots given back begin a slot,
	// less the guard, after it.
	if s.next == s.n && !s.last.IsZero() {
		if least := s.last.Add(s.iv - blockGuard).Add(-s.offset); least.After(s.endDB) {
			s.endDB = least
			if booked.Before(least) {
				s.endDB = booked // nothing to give back
			}
		}
	}
	// Slots kept and still to send leave as late as the sends run (a late send is made up only
	// slowly, catchUp), and the last of them, with no block of this run's after it any more,
	// must be met within the guard: at the end of the rows a run whose sends ran 15 ms late
	// skipped it. As at a hand-over (letGoLocked), the guard after the slots kept is widened by
	// that lateness and the last slot may leave that late.
	if cut {
		if s.next < s.n {
			s.endDB = s.endDB.Add(s.widenGuard())
		}
		s.aheadTried = false // the block's new last slot may need one ahead (rescue)
	}
	return booked, s.endDB, cut
}

// lateness is how late the last request left after its slot: a late send is made up only a
// little at each of the next (catchUp), so the block's last slot will be about as late.
func (s *shared) lateness() time.Duration {
	if s.next == 0 || s.last.IsZero() {
		return 0
	}
	return max(0, s.last.Sub(s.slot(s.next-1)))
}

// widenGuard widens the guard after the block by how late the sends run, when the block's last
// slot may be followed by another run's (a hand-over, a trim), and returns the widening: the
// last slot may then leave that late, and the other run begins that much later. A rescued last
// slot leaves up to half a slot late, so never more than that.
func (s *shared) widenGuard() time.Duration {
	s.handedLate = min(s.lateness(), s.iv/2)
	return s.handedLate
}

// oursNext reports whether the slot after the current block is known to be this run's: the
// block reserved ahead begins where this one ends. Otherwise it may be another run's, even when
// this block followed this run's last (another run may have reserved since), and the block's
// last slot must be met within the guard.
func (s *shared) oursNext() bool {
	return s.ahead != nil && s.ahead.Slots > 0 && s.ahead.Start.Equal(s.endDB)
}

// wantAhead reports whether to reserve the next block now: half of this one is sent, and none
// is reserved or being reserved.
func (s *shared) wantAhead() bool {
	return s.n > 0 && s.ahead == nil && !s.reserving && !s.trimming && !s.aheadTried && float64(s.n-s.next) <= float64(s.n)*aheadShare
}

// rescue reports whether the block's last slot, next in line, would be skipped only for the
// guard: it is late by more than the guard (a late send before it is made up only slowly,
// catchUp, or a timer woke late) but by no more than half a slot, and no block was asked for
// ahead. A block reserved now that begins where this one ends (oursNext) lets the slot be sent,
// as any slot within a block is. At the end of the rows, where blocks are short and none is
// reserved ahead, six processes on 2 cores skipped about 40 such slots a run (one logged run:
// 47, 39 of them in its last 2 s).
func (s *shared) rescue(now time.Time) bool {
	if s.n == 0 || s.next != s.n-1 || s.ahead != nil || s.reserving || s.trimming || s.aheadTried {
		return false
	}
	slot, at := s.due()
	late := later(at, now).Sub(slot)
	return late > blockGuard+s.handedLate && late <= s.iv/2
}

// answer records that the reservation in flight came back: its slots, if any, are counted as
// the block or the block ahead by whoever takes the grant, under the same lock.
func (s *shared) answer() {
	s.asking = 0
	s.publish()
}

// useAhead makes the block reserved ahead the current one, reporting whether there was one.
func (s *shared) useAhead() bool {
	if s.ahead == nil {
		return false
	}
	s.refill(*s.ahead, s.aheadAt, s.aheadRefund)
	s.ahead = nil
	return true
}

// request is the next reservation: a block's worth of the current rate, but no more than share
// (the rows the block can expect to fill: controller.unreserved), and the slots to give back.
// Unsent slots of a block of an earlier day are dropped, not given back: that day's count no
// longer matters, and the budget takes every refund off the day it stores, which another run may
// already have turned (now is this process's clock).
func (s *shared) request(id string, perDay int64, share int, now time.Time) store.BudgetRequest {
	if s.unsent > 0 && !s.blockDay.IsZero() {
		db := now.Add(-s.offset)
		if !dayOf(db.Add(dayTurnMargin), s.loc, s.day).Equal(s.blockDay) {
			s.unsent = 0
		}
	}
	// Never shorter than blockLeast, though: a block must outlast the reservation's round trip,
	// or at a high rate its slots are past before it arrives, and skipped, again and again.
	want := max(min(int(math.Ceil(s.rate*blockFor.Seconds())), share), int(math.Ceil(s.rate*blockLeast.Seconds())))
	req := store.BudgetRequest{Instance: id, Owner: s.owner, Answered: s.answered, MaxRPS: s.max, Want: max(1, want),
		Refund: s.unsent, Refunded: s.refunded, PerDay: perDay, Day: s.day}
	s.answered = false
	return req
}

// room is how many more requests the day's cap allows this run: what is left of the day, the
// rest of the block in hand, and the slots to be given back. -1: no cap.
func (s *shared) room(perDay int64) int64 {
	if perDay == 0 {
		return -1
	}
	n := int64(s.n - s.next + s.unsent)
	if s.ahead != nil {
		n += int64(s.ahead.Slots)
	}
	return max(0, perDay-s.used) + n
}

// refill takes a new block, granted as of the budget's g.Now and received at received, for a
// request that gave refunded slots back.
func (s *shared) refill(g store.Grant, received time.Time, refunded int) {
	defer s.publish()
	s.endDB = g.End()
	s.offset, s.offsetAt = estimateOffset(s.offset, s.offsetAt, received.Sub(g.Now), received)
	s.aheadTried = false
	s.start = g.Start.Add(s.offset)
	s.iv, s.n, s.next = g.Interval, g.Slots, 0
	s.handedLate = 0
	s.rate, s.headroom = g.Rate, g.Headroom
	s.unsent -= refunded
	s.refunded += int64(refunded)
	if day := dayOf(g.Now, s.loc, s.day); !day.Equal(s.blockDay) {
		// The slots left unsent so far count on the block before's day, which is over: they
		// are dropped, not given back to this one's count.
		s.unsent = 0
		s.blockDay = day
	}
	s.used = g.Used
}

// clockDrift bounds how fast this process's clock may drift from the budget's: 100 ppm, far
// more than NTP-kept clocks do.
const clockDrift = 1e-4

// estimateOffset is this process's clock minus the budget's, as well as it is known at now:
// the least of the bounds the grants gave (each grant's received time minus its clock, never
// less than the truth, and nearer the faster its reply came), the older ones widened by the
// drift since. A single grant's bound is its reply's time late, which on a busy database is
// milliseconds: enough to miss a block's last slot, which must be met within the guard.
func estimateOffset(prev time.Duration, prevAt time.Time, bound time.Duration, now time.Time) (time.Duration, time.Time) {
	if prevAt.IsZero() {
		return bound, now
	}
	return min(bound, prev+time.Duration(float64(now.Sub(prevAt))*clockDrift)), now
}

// errCapped says an instance reached its daily cap: it is set aside, not failed.
var errCapped = errors.New("daily cap reached")

// reserve takes a new block for the turn's holder, retrying a database that fails with a
// retryable error for RetryFor (no call leaves meanwhile: the budget is the database's). It
// returns errCapped when the day's cap is spent, an error naming the 466 when the quota was
// recorded spent today, and ErrDatabase (having stopped the run) when the database stays away.
func (c *controller) reserve(ctx context.Context) error {
	cfg := &c.r.cfg
	for {
		req, gen, g, received, err := c.askBlock()
		c.mu.Lock()
		c.shared.answer()
		if err != nil {
			c.mu.Unlock()
		} else {
			c.budgetRetry.ok(received)
			if gen != c.shared.gen || c.state != running {
				// A 429, a pause or the instance's leaving the run gave its blocks up while this
				// one was asked for: it may lie in a Retry-After pause, or come at the old rate,
				// or for nobody. Given up too.
				c.shared.giveUp(g, req.Refund)
				c.mu.Unlock()
				return nil // the caller looks at the instance again
			}
			c.shared.refill(g, received, req.Refund)
			c.keptLocked(g)
			c.trimPendingLocked()
			c.mu.Unlock()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			wait, err := c.budgetFailed(err)
			if err != nil {
				return err
			}
			if cfg.Sleep(ctx, wait) != nil {
				return ctx.Err()
			}
			continue
		}
		if g.Busy && !g.QuotaSpent {
			return nil // another run keeps the instance: the caller waits for it (keeping.away)
		}
		if g.Slots == 0 {
			return c.spentError(g)
		}
		return nil
	}
}

// budgetFailed records a failed statement of the instance's budget, and says how long to wait
// before the next, or, once the database has stayed away for RetryFor (or the error is not worth
// retrying), stops the run and returns ErrDatabase. Only the instance's dispatcher calls it.
func (c *controller) budgetFailed(err error) (time.Duration, error) {
	wait, first, stop := c.r.databaseFailed(&c.budgetRetry, err)
	if stop != nil {
		return 0, stop
	}
	if first {
		c.r.log.Warn().Str("instance", c.id).Err(err).Str("retry_for", c.r.cfg.RetryFor.String()).
			Msg("reserving the instance's budget failed: no call leaves until the database is back")
	}
	return wait, nil
}

// unreserved is how many more slots this instance may reserve for the rows the run can expect.
// While claims come back full, the rows waiting beyond the slots all the run's instances hold:
// slots reserved and never sent are lost to every run (the schedule has moved past them). Once
// nothing more is due, the even share of the rows waiting over the run's instances, less the
// slots this one holds: a row goes to whichever slot comes first, and while other runs share
// the instance a slot may come seconds after it is reserved, so rows counted against slots far
// behind the other runs' blocks would leave the run's other instances idle meanwhile.
func (c *controller) unreserved() int {
	_, _, waiting := c.r.rows.counts()
	if !c.r.drained.Load() {
		return waiting - c.r.slotsHeld()
	}
	n := max(c.r.available(c.r.cfg.Now()), 1)
	return (waiting+n-1)/n - int(c.shared.held.Load())
}

// askBlock asks the budget for the instance's next block, once, within DatabaseTimeout: the
// request (sized by the rows waiting), the generation of blocks it was asked in, the grant and
// when it arrived. The statement runs on the run's database context, not a stop's: a stop must
// not cut it half-way, or slots it took would be counted against the day and never given back.
func (c *controller) askBlock() (req store.BudgetRequest, gen int, g store.Grant, received time.Time, err error) {
	cfg := &c.r.cfg
	c.mu.Lock()
	req = c.shared.request(c.id, c.perDay, c.unreserved(), cfg.Now())
	req.Kept, req.Table = c.r.holds(), cfg.Table
	gen = c.shared.gen
	c.shared.asking = req.Want
	c.shared.publish()
	c.mu.Unlock()
	dctx, cancel := context.WithTimeout(c.r.dbCtx, cfg.DatabaseTimeout)
	defer cancel()
	g, err = cfg.Budget.Reserve(dctx, req, c.r.reservePolicy())
	return req, gen, g, cfg.Now(), err
}

// reserveAhead reserves the block after the current one, in the background (c.r.reserving),
// while the dispatcher goes on sending: waitSlot takes it when the current block is spent. A
// failed or empty reservation changes nothing: the dispatcher reserves again itself when the
// block is spent, and waits out the database or sets the instance aside there.
func (c *controller) reserveAhead() {
	req, gen, g, received, err := c.askBlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.shared
	s.reserving = false
	s.answer()
	switch {
	case err != nil:
		s.answered = s.answered || req.Answered
	case gen != s.gen || g.Slots == 0 || c.state != running:
		s.giveUp(g, req.Refund)
		c.keptLocked(g)
	default:
		c.keptLocked(g)
		s.ahead, s.aheadAt, s.aheadRefund = &g, received, req.Refund
		s.publish()
		s.used = g.Used // the day's count with the block ahead: room counts its slots as this run's
		c.trimPendingLocked()
	}
	c.changedLocked() // whatever came back: the dispatcher may be waiting for it (waitSlot)
}

// spentError says why a grant gave nothing: a 466 recorded today (the instance is out of the run,
// an error a person acts on), or the daily cap spent (errCapped: set aside, the run's own limit).
func (c *controller) spentError(g store.Grant) error {
	if g.QuotaSpent {
		return fmt.Errorf("instance %s answered 466 (quota exceeded on the account's plan) earlier today: "+
			"it is skipped until the day turns; upgrade the plan or wait for the quota to renew", c.id)
	}
	return fmt.Errorf("instance %s has spent its daily cap (max_per_day %d, %d requests today): %w; "+
		"it is set aside until the day turns", c.id, c.perDay, g.Used, errCapped)
}

// stateSlot waits for the instance's next GetStateInstance slot, shared by every run: one state
// check a second, whoever asks.
func (c *controller) stateSlot(ctx context.Context) error {
	return c.waitReserved(ctx, func(ctx context.Context) (time.Time, time.Time, error) {
		return c.r.cfg.Budget.ReserveState(ctx, c.id, c.shared.max, policy)
	})
}

// waitReserved reserves one slot of a one-at-a-time schedule in the budget (within
// DatabaseTimeout) and sleeps until it comes: the slot is on the budget's clock, so the wait is
// the slot less the budget's now, less the time the answer took since.
func (c *controller) waitReserved(ctx context.Context, reserve func(context.Context) (slot, now time.Time, err error)) error {
	dctx, cancel := context.WithTimeout(ctx, c.r.cfg.DatabaseTimeout)
	slot, now, err := reserve(dctx)
	received := c.r.cfg.Now()
	cancel()
	if err != nil {
		return err
	}
	return c.r.cfg.Sleep(ctx, slot.Sub(now)-c.r.cfg.Now().Sub(received))
}
