package enrich

import (
	"context"
	"errors"

	"github.com/enrich-dev/enrich/greenapi"
)

// Where a row's exists_whatsapp came from (store.Done.ExistsSource).
const (
	SourceGetAvatar     = "getAvatar"
	SourceCheckWhatsapp = "checkWhatsapp"
)

// Avatars keeps avatar images (package avatars): Keep fetches the image at a link and stores it,
// returning its SHA-256 in hex.
type Avatars interface {
	Keep(ctx context.Context, link string) (string, error)
}

// keepAvatar keeps the image behind a done row's link, when the run keeps images; "" when it
// does not, or the image could not be kept (logged: the row is answered either way).
func (r *Runner) keepAvatar(c *controller, av greenapi.Avatar) string {
	if r.cfg.Avatars == nil || av.URLAvatar == "" {
		return ""
	}
	start := r.cfg.Now()
	sha, err := r.cfg.Avatars.Keep(r.calls, av.URLAvatar)
	r.cfg.Observer.Call(c.id, "downloadAvatar", downloadOutcome(err), r.cfg.Now().Sub(start))
	if err != nil {
		r.log.Debug().Str("instance", c.id).Err(err).Msg("keeping an avatar failed; the row keeps its link")
		return ""
	}
	return sha
}

// downloadOutcome names a download's outcome for the Observer.
func downloadOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	return "failed"
}

// CheckRPSDefault is CheckWhatsapp's documented limit per instance, apart from GetAvatar's.
const CheckRPSDefault = 10

// errConfirmQuota stops an instance's confirmations: CheckWhatsapp answered 466 (its own quota,
// on low plans). GetAvatar goes on.
var errConfirmQuota = errors.New("checkWhatsapp quota spent")

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
	return c.confirmErr == nil
}

// stopConfirming ends the instance's confirmations; it reports whether this call did.
func (c *controller) stopConfirming() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.confirmErr != nil {
		return false
	}
	c.confirmErr = errConfirmQuota
	return true
}

// checkSlot waits for the instance's next CheckWhatsapp slot: this run's own limiter, or with a
// Budget the schedule every run shares.
func (c *controller) checkSlot(ctx context.Context) error {
	if c.r.cfg.Budget == nil {
		return c.checkLimit.Wait(ctx)
	}
	dctx, cancel := context.WithTimeout(ctx, c.r.cfg.DatabaseTimeout)
	slot, now, err := c.r.cfg.Budget.ReserveCheck(dctx, c.id, c.checkRPS, policy)
	received := c.r.cfg.Now()
	cancel()
	if err != nil {
		return err
	}
	return c.r.cfg.Sleep(ctx, slot.Sub(now)-c.r.cfg.Now().Sub(received))
}
