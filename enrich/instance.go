package enrich

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"golang.org/x/time/rate"
)

var (
	// errInstanceDown tells the instance's dispatcher that the instance is out of the run.
	errInstanceDown = errors.New("instance out of the run")
	// errNoRows tells a dispatcher that nothing is left for any instance.
	errNoRows = errors.New("no row left")
	// errPaused tells a dispatcher waiting for a slot that its instance stopped sending.
	errPaused = errors.New("instance paused")
	// errNoRow tells a dispatcher waiting for a slot that no row waits any more (given back to
	// the runs that keep the other instances): it waits for rows, or looks after the instance,
	// again.
	errNoRow = errors.New("no row waits")
)

// timerFloor is the shortest wait for a send slot worth a timer.
const timerFloor = 50 * time.Microsecond

// reservedPoll is how often an instance that reserves no block, since the rows waiting have
// their slots (controller.unreserved), looks again: slots given up elsewhere (skipped, or
// dropped by a pause) wake nobody.
const reservedPoll = 100 * time.Millisecond

// Thresholds of the instance's own fault detectors.
const (
	// outageRows is how many different rows must fail one after another with a failure that
	// says nothing about the row (network errors, 5xx, 499) before the instance, not the rows, is
	// taken to be at fault.
	outageRows = 3
	// configFaultRows is how many different, locally valid rows answered "bad request data" or
	// "Validation failed" one after another, before the instance accepted any request, make it
	// the request's form, not the rows.
	configFaultRows = 5
	// configFaultChance is, once the instance has accepted requests, how unlikely a run of
	// refusals must be, at the share of bad rows seen so far, before it is taken for the request's
	// form: a list with many numbers the API rejects is not a configuration error.
	configFaultChance = 1e-12
	// configFaultMax bounds that run, so that a form refused from the second request on still
	// stops the run (its suspects go back untouched) within a hundred calls.
	configFaultMax = 100
)

// instState is where an instance is in its life during a run.
type instState uint8

const (
	running instState = iota
	paused
	down
)

// trouble is why an instance is paused or slowed: it says which message ends the episode.
type trouble uint8

const (
	troubleStarting trouble = iota + 1
	troubleOutage
	troubleRateLimited
)

// String names the trouble in debug logs.
func (t trouble) String() string {
	switch t {
	case troubleStarting:
		return "starting"
	case troubleOutage:
		return "outage"
	case troubleRateLimited:
		return "rate_limited"
	}
	return "none"
}

// controller is one Green API instance during a run: its dispatcher asks it for every send slot,
// and every caller tells it the outcome. It owns the instance's pacing (one adaptive rate, a
// Retry-After pause), its gate (closed for everyone while the instance is starting or
// unreachable, with one prober asking GetStateInstance), its circuit breaker (consecutive
// failures on different rows that say nothing about the rows), and the detector of a request
// form the API refuses for every row.
type controller struct {
	r   *Runner
	api API
	id  string
	// calls is the run's context for GetAvatar calls, traced so that a request's send time is
	// when it was written to the connection (wrote), not when the pacer let it go.
	calls context.Context

	// stateLimit is GetStateInstance's 1 request per second, shared by the pre-flight check and
	// every probe.
	stateLimit *rate.Limiter
	// checkLimit is CheckWhatsapp's own limit (checkRPS) for confirmations, without a Budget.
	checkLimit *rate.Limiter
	checkRPS   float64

	mu sync.Mutex
	// pace spaces this process's requests; shared, when the run has a Budget, replaces it with
	// blocks of the instance's schedule shared by every process.
	pace   pacer
	shared *shared
	// perDay is the instance's daily cap (0: none); budgetRetry follows failing reservations.
	perDay      int64
	budgetRetry dbRetry
	state       instState
	// open is closed while the instance runs; a paused instance holds a fresh, open channel.
	open chan struct{}
	// changed is closed and replaced at every change of state or pace, to wake waiting workers.
	changed chan struct{}
	// gone is closed when the instance leaves the run; downErr says why.
	gone    chan struct{}
	downErr error
	// since is when the current episode of trouble began (zero when none), what the last
	// trouble was, and its last cause. Only a real answer ends an episode: a probe saying
	// "authorized" while GetAvatar still fails does not, so StartingTimeout bounds the whole
	// episode, not each pause.
	since     time.Time
	kind      trouble
	lastCause error
	// alive is when the instance last showed it works: a real answer, or a probe that found it
	// authorized. A row whose retries ran out while nothing showed the instance alive since its
	// first failure is not charged: the instance is paused and probed instead.
	alive time.Time
	// failing are the rows whose calls failed in a way that says nothing about them, since the
	// last answer.
	failing map[int64]struct{}
	// suspects are rows answered "bad request" one after another since the last other answer,
	// with those answers: a lone one is the row's fault, a run of them the request form's.
	suspects []suspect
	// confirmOff says the instance confirms no more missing accounts: CheckWhatsapp answered
	// 466 (its own quota, on low plans). GetAvatar goes on.
	confirmOff bool
	// accepted counts answers that took the request's form (any real answer), refused the
	// "bad request" answers found to be their rows' own: the share of bad rows so far.
	accepted, refused int64
}

// suspect is a row held back with its "bad request" answer until it is clear whose fault it is.
type suspect struct {
	h   *held
	err error
}

func newController(r *Runner, inst Instance) *controller {
	open := make(chan struct{})
	close(open)
	c := &controller{
		r:          r,
		api:        inst.API,
		id:         inst.API.ID(),
		stateLimit: rate.NewLimiter(1, 1),
		checkLimit: rate.NewLimiter(rate.Limit(inst.CheckRPS), 1),
		checkRPS:   inst.CheckRPS,
		pace:       newPacer(inst.RPS),
		perDay:     inst.MaxPerDay,
		open:       open,
		changed:    make(chan struct{}),
		gone:       make(chan struct{}),
		failing:    make(map[int64]struct{}),
	}
	if r.cfg.Budget != nil {
		c.shared = newShared(r.cfg.Owner, inst.RPS, r.cfg.Day)
	}
	return c
}

// changedLocked wakes everyone waiting on the instance. c.mu must be held.
func (c *controller) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// running reports whether the instance can send now, its current rate, and how many more
// requests its daily cap allows this run (-1: no cap).
func (c *controller) running() (bool, float64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shared != nil {
		return c.state == running, c.shared.rate, c.shared.room(c.perDay)
	}
	return c.state == running, c.pace.rate(), -1
}

// waitSlot waits until the pacer lets a request leave, reserving a block of the shared budget
// when the one in hand is spent: the dispatcher asks only once a row waits, so an idle run takes
// no slots from the others. It returns errPaused or errInstanceDown when the instance stops
// sending meanwhile.
func (c *controller) waitSlot(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.mu.Lock()
		switch c.state {
		case down:
			c.mu.Unlock()
			return errInstanceDown
		case paused:
			c.mu.Unlock()
			return errPaused
		}
		now := c.r.cfg.Now()
		var at time.Time
		if c.shared == nil {
			at = c.pace.next(now)
		} else if c.shared.rescue(now) && !c.shared.keep.gone.Load() {
			// The block's last slot is met only if the next slot is this run's: ask for it,
			// unless the instance is being handed over (the guard is widened for that).
			c.shared.aheadTried = true
			if c.letGoLocked(now) {
				c.mu.Unlock()
				continue
			}
			c.shared.reserving = true
			c.r.reserving.Go(c.reserveAhead)
			changed := c.changed
			c.mu.Unlock()
			select {
			case <-changed: // the block ahead is back, or none
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		} else if next, ok := c.shared.nextSlot(now); ok {
			at = next
			// Ahead only while rows wait that no slot is held for: at the end of the rows a block
			// reserved ahead would go unsent.
			if c.shared.wantAhead() && c.unreserved() > 0 {
				c.shared.aheadTried = true
				if !c.letGoLocked(now) {
					c.shared.reserving = true
					c.r.reserving.Go(c.reserveAhead)
				}
			}
		} else if c.shared.useAhead() {
			c.mu.Unlock()
			continue
		} else if c.shared.reserving || c.shared.trimming {
			changed := c.changed
			c.mu.Unlock()
			select {
			case <-changed: // the reservation ahead is back
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		} else if away := c.shared.keep.away(now); away > 0 {
			// Another run keeps the instance: ask again when its bookings may end.
			changed := c.changed
			c.mu.Unlock()
			if err := c.await(ctx, away, nil, changed); err != nil {
				return err
			}
			continue
		} else if c.unreserved() <= 0 {
			// The rows waiting have their slots: a block reserved now would go unsent. Wait for
			// rows, a change, or slots given up.
			changed := c.changed
			c.mu.Unlock()
			wake, ok := c.r.rows.ready()
			if !ok {
				return errNoRow
			}
			if err := c.await(ctx, reservedPoll, wake, changed); err != nil {
				return err
			}
			continue
		} else if c.letGoLocked(now) {
			c.mu.Unlock()
			continue
		} else {
			c.mu.Unlock()
			if err := c.reserve(ctx); err != nil {
				switch {
				case ctx.Err() != nil:
					return ctx.Err()
				case errors.Is(err, ErrDatabase):
					return err // the run is stopping
				}
				c.r.setAside(c, err)
				return errInstanceDown
			}
			continue
		}
		changed := c.changed
		early := time.Duration(0)
		if c.shared != nil {
			// A wait of a slot or less, and of no more than timerFloor, is not worth a timer: at
			// a high rate slots are microseconds apart and parking for one costs more than the
			// slot; at 10 rps it is a thirtieth of the headroom.
			early = min(c.shared.iv, timerFloor)
		}
		c.mu.Unlock()
		wait := at.Sub(now)
		if wait <= early {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// await waits for d, wake (nil: none) or changed, whichever comes first: errNoRows once nothing
// is left for any instance, ctx's error once it is done.
func (c *controller) await(ctx context.Context, d time.Duration, wake, changed <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
	case <-changed:
	case <-t.C:
	case <-c.r.rows.finished:
		return errNoRows
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// sent records that a request leaves now, at the slot waitSlot met, and returns the time; it
// fails with errPaused when the instance stopped sending since.
func (c *controller) sent() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != running {
		return time.Time{}, errPaused
	}
	now := c.r.cfg.Now()
	if c.shared != nil {
		c.shared.sent(now)
	} else {
		c.pace.sent(now)
	}
	return now, nil
}

// wrote records that a GetAvatar request was written to its connection, now. The pacer spaces
// the next request from the later of that and its send: between the two lie the client's own
// work and a connection to find or dial, which on a busy machine take milliseconds, and a
// request written late arrives late, as close to the next as the lateness. Its argument is
// httptrace's, unused.
func (c *controller) wrote(httptrace.WroteRequestInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.r.cfg.Now()
	if c.shared != nil {
		c.shared.last = later(c.shared.last, now)
	} else {
		c.pace.last = later(c.pace.last, now)
	}
}

// answered records a real answer (one that says something about the row): the episode of
// trouble is over and the breaker is reset, unless the instance is paused meanwhile (the answer
// is to a call that left before the pause; the prober decides). It returns the rows held back as
// suspects, which are now each its own failure. sentAt is when the answered request left.
func (c *controller) answered(sentAt time.Time) []suspect {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aliveLocked(sentAt)
	c.accepted++
	s := c.suspects
	c.refused += int64(len(s))
	c.suspects = nil
	return s
}

// answeredOwn records that the instance works: it answered, though not in a way that says whether the
// request's form does (a number's own refusal). Neither the suspects nor the share of bad rows
// change.
func (c *controller) answeredOwn(sentAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aliveLocked(sentAt)
}

// aliveLocked records that the instance worked when a request that left at sentAt reached it.
// The send time, not the answer's: an answer to a request that left before a row's first failure
// says nothing of the instance after it, however late it comes (calls in flight finish in any
// order), and must not make that row pay for an outage. c.mu must be held.
func (c *controller) aliveLocked(sentAt time.Time) {
	c.alive = later(c.alive, sentAt)
	if c.shared != nil {
		c.shared.answered = true
	}
	if c.state == running {
		c.since, c.kind, c.lastCause = time.Time{}, 0, nil
		clear(c.failing)
	}
}

// troubleLocked starts or continues an episode of trouble at now. c.mu must be held.
func (c *controller) troubleLocked(kind trouble, cause error, now time.Time) {
	if c.since.IsZero() {
		c.since = now
	}
	c.kind, c.lastCause = kind, cause
}

// throttled records a 429 for a request that left at sentAt. It returns the reason to take the
// instance out of the run when nothing but 429 has come for StartingTimeout. With a shared
// budget the cut is the instance's, for every process: the block in hand is given up and the
// cut recorded in the budget, so the next block comes at the lower rate.
func (c *controller) throttled(ctx context.Context, sentAt time.Time, err error) error {
	wait := min(retryAfter(err), c.r.cfg.StartingTimeout)
	c.mu.Lock()
	now := c.r.cfg.Now()
	c.troubleLocked(troubleRateLimited, err, now)
	var budgetSent time.Time
	if c.shared != nil {
		c.shared.drop()
		budgetSent = sentAt.Add(-c.shared.offset)
	} else {
		c.pace.throttled(sentAt, now, wait)
	}
	c.changedLocked()
	var out error
	if now.Sub(c.since) >= c.r.cfg.StartingTimeout {
		out = c.timeoutErrorLocked()
	}
	c.mu.Unlock()
	if c.shared != nil {
		dctx, cancel := context.WithTimeout(ctx, c.r.cfg.DatabaseTimeout)
		if berr := c.r.cfg.Budget.Throttled(dctx, c.id, budgetSent, c.shared.max, wait, policy); berr != nil {
			c.r.log.Warn().Str("instance", c.id).Err(berr).Msg("recording a 429 in the shared budget failed")
		}
		cancel()
	}
	return out
}

// systemic records a failure on row id that says nothing about the row. It reports whether the
// instance is now taken to be unreachable: outageRows different rows failed so, one after another.
func (c *controller) systemic(id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failing[id] = struct{}{}
	return len(c.failing) >= outageRows
}

// aliveSince reports whether the instance showed it works after t: a row whose retries ran out
// is charged only then; otherwise nothing tells the row's fault from the instance's.
func (c *controller) aliveSince(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alive.After(t)
}

// invalid records a "bad request" answer for h. It holds h back as a suspect and, once
// configFaultRows different rows have been answered so in a row, stops the run (the suspects stay
// unresolved, to go back untouched) and reports it. The stop comes under the lock, so that no
// other worker starts a call between the last refusal and the stop.
func (c *controller) invalid(h *held, err error, sentAt time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aliveLocked(sentAt) // the instance works: it answered
	c.suspects = append(c.suspects, suspect{h: h, err: err})
	if len(c.suspects) < c.faultStreakLocked() {
		return false
	}
	fault := configFaultError(c.id, len(c.suspects), err)
	c.suspects = nil
	c.r.cancelStop(fault)
	return true
}

// faultStreakLocked is how many refusals in a row make it the request's form. Before the instance
// accepted any request, configFaultRows: a form refused for every row stops the run after a
// handful of calls. After, the form is known to work, and it takes a run of refusals that the
// rows seen so far make less likely than configFaultChance: the chance that the next k rows are
// all bad, with the share of bad rows uncertain (uniform before the first answer, then updated
// by each; Laplace's rule of succession, k times over). After 1,000 answers with 2% bad that is
// 8 in a row; with 30% bad, 20; at most configFaultMax. c.mu must be held.
func (c *controller) faultStreakLocked() int {
	if c.accepted == 0 {
		return configFaultRows
	}
	bad, all := float64(c.refused+1), float64(c.refused+c.accepted+2)
	chance, k := 1.0, 0
	for ; chance >= configFaultChance && k < configFaultMax; k++ {
		chance *= (bad + float64(k)) / (all + float64(k))
	}
	return max(configFaultRows, k)
}

// takeSuspects hands over the rows held back as suspects: at the end of the run, or when the
// instance leaves it, each is its own failure.
func (c *controller) takeSuspects() []suspect {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.suspects
	c.suspects = nil
	return s
}

// pause closes the gate for every worker on the instance: it is starting, or it is unreachable.
// The first caller starts the one prober; later callers just wait with everyone else.
func (c *controller) pause(kind trouble, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.r.cfg.Now()
	c.troubleLocked(kind, cause, now)
	if e := c.r.log.Debug(); e.Enabled() {
		e.Str("instance", c.id).Stringer("trouble", kind).Bool("already_paused", c.state != running).AnErr("cause", cause).Msg("pause")
	}
	if c.state != running {
		return
	}
	c.state = paused
	c.open = make(chan struct{})
	if c.shared != nil {
		c.shared.drop()
	}
	c.changedLocked()
	what := "instance is starting: pausing every call on it and probing its state"
	if kind == troubleOutage {
		what = "instance is unreachable (calls for different rows failed one after another): " +
			"pausing every call on it and probing its state; no row is charged for it"
	}
	c.r.log.Warn().Str("instance", c.id).Err(cause).Msg(what)
	deadline := c.since.Add(c.r.cfg.StartingTimeout)
	c.r.probes.Go(func() { c.probe(deadline) })
	c.r.wakeClaimer()
}

// resume opens the gate again.
func (c *controller) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != paused {
		return
	}
	c.state = running
	c.alive = c.r.cfg.Now()
	c.r.log.Debug().Str("instance", c.id).Dur("trouble_for", c.alive.Sub(c.since)).Msg("resume")
	clear(c.failing)
	close(c.open)
	c.changedLocked()
	c.r.log.Info().Str("instance", c.id).Msg("instance is ready again: resuming calls")
	c.r.wakeClaimer()
}

// fail takes the instance out of the run with a reason a person can act on; it reports whether
// this call was the one that did it, so the reason is logged once.
func (c *controller) fail(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == down {
		return false
	}
	wasPaused := c.state == paused
	c.state, c.downErr = down, err
	if c.shared != nil {
		c.shared.drop() // its slots are no row's any more (Runner.reserved)
	}
	close(c.gone)
	if wasPaused {
		close(c.open)
	}
	c.changedLocked()
	return true
}

// timeoutErrorLocked says the episode of trouble lasted StartingTimeout. c.mu must be held.
func (c *controller) timeoutErrorLocked() error {
	limit := c.r.cfg.StartingTimeout
	var what string
	switch c.kind {
	case troubleOutage:
		what = fmt.Sprintf("instance %s has been unreachable for %s (starting_timeout)", c.id, limit)
	case troubleRateLimited:
		what = fmt.Sprintf("instance %s has answered nothing but 429 (too many requests) for %s (starting_timeout): "+
			"something else may be spending its budget", c.id, limit)
	default:
		what = fmt.Sprintf("instance %s is still starting after %s (starting_timeout)", c.id, limit)
	}
	advice := "check the instance in the Green API console"
	if a, ok := unreachableAdvice(c.lastCause); ok && c.kind == troubleOutage {
		advice = a
	}
	what += ": its rows are released (left untouched for a later run); " + advice
	if c.lastCause != nil {
		return fmt.Errorf("%s (last error: %w)", what, c.lastCause)
	}
	return errors.New(what)
}

// unreachableAdvice is what to check when no connection to the instance's host could be made: a
// name that does not resolve or a refused connection is api_url's fault (or this machine's
// network's), not the instance's, which the console would show as fine.
func unreachableAdvice(cause error) (string, bool) {
	var ae *greenapi.Error
	if !errors.As(cause, &ae) || ae.Status != 0 {
		return "", false
	}
	check := "check greenapi.api_url (or api_url under the instance's [[greenapi.instance]]) against the instance's apiUrl in the Green API console"
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(cause, &dns):
		return fmt.Sprintf("api_url %s: its host name does not resolve (%s): %s, and this machine's DNS", ae.APIURL, dns.Err, check), true
	case errors.Is(cause, syscall.ECONNREFUSED):
		return fmt.Sprintf("api_url %s refused the connection (nothing listens there): %s", ae.APIURL, check), true
	case errors.As(cause, &op) && op.Op == "dial":
		return fmt.Sprintf("api_url %s could not be reached (%v): %s, and this machine's network, firewall and proxy", ae.APIURL, op.Err, check), true
	}
	return "", false
}

// getState asks GetStateInstance within the instance's 1 request per second: this run's own, or
// with a Budget every run's together.
func (c *controller) getState(ctx context.Context) (string, error) {
	if c.shared != nil {
		if err := c.stateSlot(ctx); err != nil {
			return "", err
		}
	} else if err := c.stateLimit.Wait(ctx); err != nil {
		return "", err
	}
	start := c.r.cfg.Now()
	state, err := c.api.GetStateInstance(ctx)
	c.r.stats.call(c.id, "getStateInstance", err, start, c.r.cfg.Now())
	return state, err
}

// preflight asks the instance's state before any row is claimed, so an instance that cannot work
// is out of the run before it holds rows, and one that is starting or unreachable is paused from
// the start. A state check that fails in a way that says nothing (a 429, an odd body) changes
// nothing: GetAvatar will tell.
func (c *controller) preflight(ctx context.Context) {
	if c.shared != nil {
		// The day's cap and a 466 recorded today are known without a call.
		g, err := c.r.cfg.Budget.Reserve(ctx, store.BudgetRequest{Instance: c.id, MaxRPS: c.shared.max,
			PerDay: c.perDay, Day: c.r.cfg.Day}, policy)
		switch {
		case err != nil:
			c.r.log.Warn().Str("instance", c.id).Err(err).Msg("reading the instance's budget before the run failed; going on")
		case g.QuotaSpent || c.perDay > 0 && g.Used >= c.perDay:
			c.r.setAside(c, c.spentError(g))
			return
		case g.Busy:
			// Another run keeps the instance: no rows are claimed for it until it is this run's
			// (keep.go), and it needs no state check of this run's.
			c.mu.Lock()
			c.shared.used = g.Used
			c.keptLocked(g)
			c.mu.Unlock()
			return
		case g.Now.Sub(g.AnsweredAt) < aliveFresh:
			// Another run had a real answer a moment ago: no state check needed.
			c.mu.Lock()
			c.shared.used = g.Used
			c.mu.Unlock()
			return
		default:
			c.mu.Lock()
			c.shared.used = g.Used
			c.mu.Unlock()
		}
	}
	state, err := c.getState(ctx)
	switch {
	case greenapi.ClassOf(err) == greenapi.ClassUnusable:
		c.r.instanceDown(c, unusableError(c.id, err))
	case greenapi.ClassOf(err) == greenapi.ClassStarting:
		c.pause(troubleStarting, err)
	case greenapi.IsSystemic(err):
		c.pause(troubleOutage, err)
	case err != nil:
		c.r.log.Warn().Str("instance", c.id).Err(err).Msg("state check before the run failed; going on")
	case state == greenapi.StateNotAuthorized || state == greenapi.StateBlocked:
		c.r.instanceDown(c, unusableError(c.id, fmt.Errorf("getStateInstance says %q", state)))
	case state == greenapi.StateStarting:
		c.pause(troubleStarting, fmt.Errorf("getStateInstance says %q", state))
	}
}

// probe asks GetStateInstance, with full-jitter backoff, until the instance is authorized again
// (resume), says it cannot work (out of the run), or deadline passes (out of the run, its rows
// given back). It also tells "instance is starting or not authorized" apart.
func (c *controller) probe(deadline time.Time) {
	cfg := &c.r.cfg
	ctx := c.r.probeCtx
	for n := 0; ; n++ {
		// Never sleep past the deadline: the instance leaves the run on time.
		wait := min(cfg.StartingBackoff.Full(n, cfg.Rand), max(deadline.Sub(cfg.Now()), 0))
		if err := cfg.Sleep(ctx, wait); err != nil {
			return // the run is ending
		}
		if !cfg.Now().Before(deadline) {
			c.mu.Lock()
			err := c.timeoutErrorLocked()
			c.mu.Unlock()
			c.r.instanceDown(c, err)
			return
		}
		state, err := c.getState(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if greenapi.ClassOf(err) == greenapi.ClassUnusable {
				c.r.instanceDown(c, unusableError(c.id, err))
				return
			}
			c.r.log.Debug().Str("instance", c.id).Err(err).Msg("state probe failed; probing again")
			c.mu.Lock()
			c.lastCause = err
			c.mu.Unlock()
			continue
		}
		switch state {
		case greenapi.StateAuthorized, greenapi.StateYellowCard:
			c.resume()
			return
		case greenapi.StateNotAuthorized, greenapi.StateBlocked:
			c.r.instanceDown(c, unusableError(c.id, fmt.Errorf("getStateInstance says %q", state)))
			return
		default: // starting, sleepMode, or a state this version does not know: keep waiting
			c.r.log.Debug().Str("instance", c.id).Str("state", state).Msg("instance not ready yet")
		}
	}
}

// configFaultError says that the API refuses the request's form, not the rows: it names the
// greenapi.request_by key, the body form sent and the API's own words.
func configFaultError(id string, rows int, err error) error {
	var ae *greenapi.Error
	body, words := "", err.Error()
	if errors.As(err, &ae) {
		body, words = ae.Request, ae.Reason
	}
	if strings.HasPrefix(body, `{"phoneNumber"`) {
		return fmt.Errorf("%w: greenapi.request_by = %q is refused by this API edition: instance %s answered %q "+
			"to %d different valid numbers in a row, sent as %s; set greenapi.request_by = %q (the default, which every "+
			"edition accepts); those rows are released untouched", ErrConfiguration, greenapi.RequestByPhoneNumber,
			id, words, rows, body, greenapi.RequestByChatID)
	}
	return fmt.Errorf("%w: instance %s answered %q to %d different valid numbers in a row, sent as %s "+
		"(greenapi.request_by = %q): the request's form is refused, not the numbers; check that greenapi.api_url "+
		"is your account's Green API host; those rows are released untouched", ErrConfiguration, id, words, rows,
		body, greenapi.RequestByChatID)
}

// unusableError says which instance cannot be used and what a person must do about it.
func unusableError(id string, cause error) error {
	return fmt.Errorf("instance %s cannot be used: %w; %s", id, cause, remedy(cause))
}

// remedy is the action a person must take for an unusable instance.
func remedy(err error) string {
	var ae *greenapi.Error
	if errors.As(err, &ae) {
		switch ae.Status {
		case 401:
			return "the apiTokenInstance is wrong (or the instance is still being created): copy it again from the " +
				"Green API console into token or token_file"
		case 403:
			// Green API serves each pool of instances on its own host and answers 403 on
			// another pool's: the likeliest cause once the id is right.
			host := ""
			if ae.APIURL != "" {
				host = " (it was called at " + ae.APIURL + ")"
			}
			return "the instance may live on another host" + host + ": each pool of Green API instances has " +
				"its own; copy the instance's apiUrl from the Green API console into api_url under its " +
				"[[greenapi.instance]], and check its id there too"
		case 404:
			return "the API answered 404 to a documented method: check api_url"
		case 466:
			return "the account's plan quota is spent: upgrade the plan or wait for the quota to renew"
		}
	}
	switch msg := strings.ToLower(err.Error()); {
	case strings.Contains(msg, "expired"):
		return "the instance's paid period is over, or it was paid for minutes ago and is still initialising: " +
			"renew it in the Green API console, or try again in a few minutes"
	case strings.Contains(msg, "deleted"):
		return "the instance was deleted: create a new one in the Green API console and configure its id and token"
	case strings.Contains(msg, "blocked"):
		return "WhatsApp blocked the account: see the Green API console; the instance cannot be used until it is unblocked"
	}
	return "open the Green API console and authorize the instance: scan its QR code with WhatsApp on the phone"
}
