package enrich

import (
	"context"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
)

// Where a row's exists_whatsapp came from (store.Done.ExistsSource).
const (
	SourceGetAvatar     = "getAvatar"
	SourceCheckWhatsapp = "checkWhatsapp"
)

// CheckRPSDefault is CheckWhatsapp's documented limit per instance, apart from GetAvatar's.
const CheckRPSDefault = 10

// confirmable says whether a GetAvatar answer is one Green API is known to get wrong: an account
// without a photo reported existsWhatsapp false (docs/greenapi.md). Only phone numbers can be
// confirmed (CheckWhatsapp takes a phoneNumber), and only on an instance whose confirmations go on.
func (r *Runner) confirmable(c *controller, h *held, av greenapi.Avatar) bool {
	return r.cfg.ConfirmMissing && av.ExistsWhatsapp != nil && !*av.ExistsWhatsapp &&
		h.target.Kind() == greenapi.KindPhone && c.confirming()
}

// confirm asks CheckWhatsapp whether the account GetAvatar reported missing exists, within the
// instance's CheckWhatsapp limit, and returns the answer to write with its source. A
// confirmation that fails leaves GetAvatar's answer, marked as such: the row is answered either
// way, and a later refresh can confirm it. A 466 stops confirmations on the instance for the rest
// of the run, not its avatars.
func (r *Runner) confirm(c *controller, h *held, av greenapi.Avatar) (greenapi.Avatar, string) {
	if err := c.checkSlot(r.calls); err != nil {
		return av, SourceGetAvatar // the run is stopping, or the budget failed: GetAvatar's answer stands
	}
	start := r.cfg.Now()
	exists, err := c.api.CheckWhatsapp(r.calls, h.target)
	r.stats.call(c.id, "checkWhatsapp", err, start, r.cfg.Now())
	switch {
	case err == nil:
		av.ExistsWhatsapp = &exists
		return av, SourceCheckWhatsapp
	case greenapi.ClassOf(err) == greenapi.ClassUnusable && statusOf(err) == 466:
		if c.stopConfirming() {
			r.log.Warn().Str("instance", c.id).Err(err).Msg("checkWhatsapp quota spent: no more confirmations " +
				"on this instance in this run; its avatars go on, and rows it reported missing keep getAvatar's answer")
		}
	default:
		r.log.Debug().Str("instance", c.id).Err(err).Msg("confirming a missing account failed; getAvatar's answer stands")
	}
	return av, SourceGetAvatar
}

// confirming says whether the instance still confirms missing accounts.
func (c *controller) confirming() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.confirmOff
}

// stopConfirming ends the instance's confirmations; it reports whether this call did.
func (c *controller) stopConfirming() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.confirmOff {
		return false
	}
	c.confirmOff = true
	return true
}

// checkSlot waits for the instance's next CheckWhatsapp slot: this run's own limiter, or with a
// Budget the schedule every run shares.
func (c *controller) checkSlot(ctx context.Context) error {
	if c.r.cfg.Budget == nil {
		return c.checkLimit.Wait(ctx)
	}
	return c.waitReserved(ctx, func(ctx context.Context) (time.Time, time.Time, error) {
		return c.r.cfg.Budget.ReserveCheck(ctx, c.id, c.checkRPS, policy)
	})
}
