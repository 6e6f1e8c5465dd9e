package enrich

import (
	"context"
	"errors"
	"fmt"
	"math"
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
}

// policy is the pacing policy of pacer.go, for the shared budget.
var policy = store.BudgetPolicy{Headroom: paceHeadroom, Cut: rateCut, Floor: rateFloorShare, Quiet: rateQuiet,
	Step: rateStep, StepEvery: rateStepEvery}

// blockFor is how much of the rate one reservation takes: one round trip a second per instance
// and process, and a process killed with -9 wastes no more than that.
const blockFor = time.Second

// shared paces one instance from blocks of its shared schedule. Within a block it keeps the
// local rules (at least one slot apart, measured on actual sends); a slot that cannot be met
// within half a slot is skipped, never sent late into the next one's time, which may be another
// process's. It is not safe for concurrent use (the controller guards it).
type shared struct {
	max float64
	// rate is the instance's shared rate as of the last grant.
	rate float64
	// last is when this process last sent to the instance.
	last time.Time
	// The current block: n slots from start (this process's clock), every iv; next is the
	// first not yet sent.
	start   time.Time
	iv      time.Duration
	n, next int
	// offset is this process's clock minus the budget's, as of the last grant (never less than
	// the truth: the grant's clock was read before the answer arrived).
	offset time.Duration
	// unsent counts the slots given up since the last reservation, to give back to the day.
	unsent int
}

func newShared(rps float64) *shared { return &shared{max: rps, rate: rps} }

// nextSlot is the earliest time the next request may leave, as of now, or false when the block
// is spent and another must be reserved.
func (s *shared) nextSlot(now time.Time) (time.Time, bool) {
	for s.next < s.n {
		slot := s.start.Add(time.Duration(s.next) * s.iv)
		at := slot
		if !s.last.IsZero() {
			at = later(slot, s.last.Add(s.iv))
		}
		if at.Sub(slot) <= s.iv/2 && now.Sub(slot) <= s.iv/2 {
			return later(at, now), true
		}
		s.next++
		s.unsent++
	}
	return time.Time{}, false
}

// sent records a request leaving at now and returns that time on the budget's clock.
func (s *shared) sent(now time.Time) time.Time {
	s.last = now
	s.next++
	return now.Add(-s.offset)
}

// drop gives up the rest of the block: the instance paused, or a 429 cut the rate.
func (s *shared) drop() {
	s.unsent += s.n - s.next
	s.next = s.n
}

// request is the next reservation: a block's worth of the current rate, and the slots to give
// back.
func (s *shared) request(id string, perDay int64, day store.DayStart) store.BudgetRequest {
	want := int(math.Ceil(s.rate * blockFor.Seconds()))
	return store.BudgetRequest{Instance: id, MaxRPS: s.max, Want: max(1, want), Refund: s.unsent, PerDay: perDay, Day: day}
}

// refill takes a new block, granted as of the budget's g.Now and received at received, for a
// request that gave refunded slots back.
func (s *shared) refill(g store.Grant, received time.Time, refunded int) {
	s.offset = received.Sub(g.Now)
	s.start = g.Start.Add(s.offset)
	s.iv, s.n, s.next = g.Interval, g.Slots, 0
	s.rate = g.Rate
	s.unsent -= refunded
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
		c.mu.Lock()
		req := c.shared.request(c.id, c.perDay, cfg.Day)
		c.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, cfg.DatabaseTimeout)
		g, err := cfg.Budget.Reserve(dctx, req, policy)
		received := cfg.Now()
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			wait, retry := c.budgetRetry.failed(err, cfg.Now(), cfg.RetryFor, cfg.Rand)
			if !retry {
				err = fmt.Errorf("%w: %w", ErrDatabase, err)
				c.r.cancelStop(err)
				return err
			}
			if c.budgetRetry.n == 1 {
				c.r.log.Warn().Str("instance", c.id).Err(err).Str("retry_for", cfg.RetryFor.String()).
					Msg("reserving the instance's budget failed: no call leaves until the database is back")
			}
			if cfg.Sleep(ctx, wait) != nil {
				return ctx.Err()
			}
			continue
		}
		c.budgetRetry.ok(received)
		c.mu.Lock()
		c.shared.refill(g, received, req.Refund)
		c.mu.Unlock()
		if g.Slots == 0 {
			return c.spentError(g)
		}
		return nil
	}
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
