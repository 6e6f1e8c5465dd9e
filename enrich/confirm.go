package enrich

import (
	"context"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
)

// Where a row's exists_whatsapp came from (store.Done.ExistsSource), or why it is still NULL.
const (
	// SourceGetAvatar: GetAvatar's existsWhatsapp (the seed editions), true, or false with the
	// checks off.
	SourceGetAvatar = "getAvatar"
	// SourceAvatar: inferred from the answer: a link, an inlined base64Avatar or available false
	// (privacy hides the photo of an account that exists) mean the account exists.
	SourceAvatar = "avatar"
	// SourceCheckWhatsapp: CheckWhatsapp's answer, asked where GetAvatar could not say.
	SourceCheckWhatsapp = "checkWhatsapp"
	// SourceUnchecked: existence unknown (exists_whatsapp NULL) because CheckWhatsapp was not
	// asked or did not answer: its quota on the instance is spent (466), the check failed, or the
	// checks are off (ConfirmMissing false). A later run with the checks on completes the row
	// (store.RefreshPolicy.ExistsUnknown).
	SourceUnchecked = "unchecked"
	// SourceBadPhoneNumber: existence unknown because CheckWhatsapp refused the number ("bad
	// phone number, valid 11 or 12 digits"): permanent for that number, so it is not asked
	// again. GetAvatar's answer is kept.
	SourceBadPhoneNumber = "badPhoneNumber"
)

// CheckRPSDefault is CheckWhatsapp's documented limit per instance, apart from GetAvatar's.
const CheckRPSDefault = 10

// existence decides what a GetAvatar answer says of the account and where that came from,
// asking CheckWhatsapp where the answer cannot say (docs/greenapi.md, "Successful response"):
//   - existsWhatsapp true: the account exists (getAvatar);
//   - a link, an inlined image or available false: it exists (avatar);
//   - otherwise, for a phone number or personal chat ({"urlAvatar":"","available":true} in
//     today's edition: no photo or no account; existsWhatsapp false in the seed editions, which
//     Green API gets wrong for accounts without a photo): CheckWhatsapp's answer
//     (checkWhatsapp), or NULL when it could not be asked (unchecked, badPhoneNumber). With the
//     checks off, the seed editions' false stands (getAvatar) and today's answer is unchecked.
//
// A group is not a personal row: it is never asked of CheckWhatsapp, and records only what
// GetAvatar said (existsWhatsapp, or nothing).
func (r *Runner) existence(c *controller, h *held, av greenapi.Avatar) (greenapi.Avatar, string) {
	yes := true
	switch {
	case av.ExistsWhatsapp != nil && *av.ExistsWhatsapp:
		return av, SourceGetAvatar
	case h.target.Kind() == greenapi.KindGroup:
		if av.ExistsWhatsapp != nil {
			return av, SourceGetAvatar
		}
		return av, ""
	case av.ExistsWhatsapp == nil && (av.HasAvatar() || av.Available != nil && !*av.Available):
		av.ExistsWhatsapp = &yes
		return av, SourceAvatar
	case !r.cfg.ConfirmMissing && av.ExistsWhatsapp != nil:
		return av, SourceGetAvatar
	case !r.cfg.ConfirmMissing:
		return av, SourceUnchecked
	}
	return r.confirm(c, h, av)
}

// confirm asks CheckWhatsapp whether the account exists, within the instance's CheckWhatsapp
// limit, and returns the answer to write with its source. A check that cannot be made leaves
// existence unknown (NULL), marked unchecked for a later run, or badPhoneNumber when
// CheckWhatsapp refused the number; the row is answered either way, with GetAvatar's avatar. A
// 466 stops the checks on the instance for the rest of the run, not its avatars.
func (r *Runner) confirm(c *controller, h *held, av greenapi.Avatar) (greenapi.Avatar, string) {
	av.ExistsWhatsapp = nil
	var exists bool
	var err error
	waits := 0
	for try := 0; ; try++ {
		if !c.confirming() {
			return av, SourceUnchecked
		}
		if err := c.checkSlot(r.calls); err != nil {
			return av, SourceUnchecked // the run is stopping, or the budget failed
		}
		if !r.rows.callable(h) {
			// No call starts on a row another claim took (a renewal said so) or whose lease
			// runs short (renewals failing), as for GetAvatar: the check would spend the
			// instance's check quota on an answer the store may fence off. The answer is
			// written unconfirmed, for a later run to complete.
			return av, SourceUnchecked
		}
		start := r.cfg.Now()
		exists, err = c.api.CheckWhatsapp(r.calls, h.target)
		r.stats.call(c.id, "checkWhatsapp", err, start, r.cfg.Now())
		trouble := troubleStarting
		if greenapi.IsSystemic(err) && c.systemic(h.row.ID) {
			// Calls for different rows failed one after another, this check among them: the
			// instance is unreachable, as for GetAvatar's calls (runner.call).
			trouble = troubleOutage
		}
		if (greenapi.ClassOf(err) == greenapi.ClassStarting || trouble == troubleOutage) && waits < maxCheckWaits {
			// The instance is starting or unreachable: it is paused for every call, as a
			// GetAvatar call that met it would; the check waits until it runs again, without
			// spending a try.
			waits++
			r.cfg.Observer.Retry(c.id, "starting")
			c.pause(trouble, err)
			if c.waitOpen(r.calls) != nil {
				return av, SourceUnchecked // out of the run, or the run is stopping
			}
			try--
			continue
		}
		if !checkRetryable(err) || try >= r.cfg.RetryInRun {
			break
		}
		// A transient failure (a 5xx, a timeout, its "check phone number timeout limit
		// exceeded", a 429) is tried again after a backoff, as GetAvatar's are.
		r.cfg.Observer.Retry(c.id, "transient")
		if r.cfg.Sleep(r.stop, r.cfg.Retry.Full(try, r.cfg.Rand)) != nil {
			return av, SourceUnchecked
		}
	}
	switch {
	case err == nil:
		av.ExistsWhatsapp = &exists
		return av, SourceCheckWhatsapp
	case greenapi.ClassOf(err) == greenapi.ClassInvalid && strings.Contains(strings.ToLower(reasonOf(err)), greenapi.ReasonBadPhoneNumber):
		r.log.Debug().Str("instance", c.id).Err(err).Msg("checkWhatsapp refused the number: its existence stays unknown")
		return av, SourceBadPhoneNumber
	case greenapi.ClassOf(err) == greenapi.ClassUnusable && statusOf(err) == 466:
		if c.stopConfirming() {
			r.log.Warn().Str("instance", c.id).Err(err).Msg("checkWhatsapp quota spent: no more existence checks " +
				"on this instance in this run; its avatars go on, and rows it cannot tell the existence of are left " +
				"unchecked (exists_whatsapp NULL) for a later run")
		}
	default:
		r.log.Debug().Str("instance", c.id).Err(err).Msg("checking existence failed; left unchecked for a later run")
	}
	return av, SourceUnchecked
}

// maxCheckWaits bounds how many times one check waits for its starting instance; each wait is
// bounded by StartingTimeout, after which the instance leaves the run.
const maxCheckWaits = 3

// waitOpen waits until the instance runs: at once when it does, until its pause ends when it is
// paused; errInstanceDown when it left the run.
func (c *controller) waitOpen(ctx context.Context) error {
	for {
		c.mu.Lock()
		state, open := c.state, c.open
		c.mu.Unlock()
		switch state {
		case down:
			return errInstanceDown
		case running:
			return nil
		}
		select {
		case <-open:
		case <-c.gone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkRetryable says whether a failed CheckWhatsapp call is worth trying again in the run.
func checkRetryable(err error) bool {
	switch greenapi.ClassOf(err) {
	case greenapi.ClassTransient, greenapi.ClassAvatarTimeout, greenapi.ClassRateLimited:
		return true
	}
	return false
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
