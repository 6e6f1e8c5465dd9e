package enrich

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// errInstanceDown is what a worker gets from its instance once the instance is out of the run;
// the worker then gives its row back untouched.
var errInstanceDown = errors.New("instance out of the run")

// instance is one Green API instance during a run: its rate limiter, and the gate every worker
// on it passes before a call. The gate closes for everyone at once when the instance says it is
// starting (one shared pause, one prober, not N workers hammering a restarting server), and
// closes for good when the instance is unusable.
type instance struct {
	api     API
	id      string
	limiter *rate.Limiter
	// pacing lets one worker at a time wait on the limiter. Unserialized, every waiter holds a
	// reservation spaced 1/rps apart in advance; a stall (GC, a busy node) then wakes them all
	// at once and they leave in a burst. Serialized, a waiter reserves only when the one
	// before it has left, so after any stall at most two requests leave close together.
	pacing sync.Mutex
	r      *Runner

	mu sync.Mutex
	// open is closed while calls may go through; a paused gate holds a fresh, open channel.
	open chan struct{}
	// down is non-nil once the instance is out of the run, with why; gone is closed then.
	down error
	gone chan struct{}
	// startedAt is when the current starting episode began: it survives a probe that says
	// "authorized" while GetAvatar still says "starting", so starting_timeout bounds the whole
	// episode, not each pause.
	startedAt time.Time
	paused    bool
}

func newInstance(r *Runner, inst Instance) *instance {
	open := make(chan struct{})
	close(open)
	return &instance{
		api:     inst.API,
		id:      inst.API.ID(),
		limiter: rate.NewLimiter(rate.Limit(inst.RPS), 1),
		r:       r,
		open:    open,
		gone:    make(chan struct{}),
	}
}

// wait blocks until calls may go through; it returns errInstanceDown once the instance is out
// of the run, or ctx's error when the run stops first.
func (in *instance) wait(ctx context.Context) error {
	for {
		in.mu.Lock()
		open, down := in.open, in.down
		in.mu.Unlock()
		if down != nil {
			return errInstanceDown
		}
		select {
		case <-open:
			in.mu.Lock()
			down, paused := in.down, in.paused
			in.mu.Unlock()
			if down != nil {
				return errInstanceDown
			}
			if !paused {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pace waits for this instance's next request slot.
func (in *instance) pace(ctx context.Context) error {
	in.pacing.Lock()
	defer in.pacing.Unlock()
	return in.limiter.Wait(ctx)
}

// answered ends a starting episode: the instance just gave a real answer.
func (in *instance) answered() {
	in.mu.Lock()
	in.startedAt = time.Time{}
	in.mu.Unlock()
}

// pause closes the gate because a call said the instance is starting. The first caller starts
// the one prober; later callers just wait with everyone else.
func (in *instance) pause(ctx context.Context, cause error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.paused || in.down != nil {
		return
	}
	in.paused = true
	in.open = make(chan struct{})
	now := in.r.cfg.Now()
	if in.startedAt.IsZero() {
		in.startedAt = now
	}
	in.r.log.Warn().Str("instance", in.id).Err(cause).
		Msg("instance is starting: pausing every call on it and probing its state")
	deadline := in.startedAt.Add(in.r.cfg.StartingTimeout)
	in.r.probes.Go(func() { in.probe(ctx, deadline) })
}

// resume opens the gate again.
func (in *instance) resume() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.paused {
		return
	}
	in.paused = false
	close(in.open)
	in.r.log.Info().Str("instance", in.id).Msg("instance is ready again: resuming calls")
}

// fail takes the instance out of the run with a reason a person can act on; it reports
// whether this call was the one that did it, so the reason is logged once.
func (in *instance) fail(err error) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.down != nil {
		return false
	}
	in.down = err
	close(in.gone)
	if in.paused {
		in.paused = false
		close(in.open)
	}
	return true
}

// probe asks GetStateInstance, with full-jitter backoff, until the instance is authorized
// again (resume), says it cannot work (out of the run), or deadline passes (out of the run, its
// rows given back). It also tells "instance is starting or not authorized" apart.
func (in *instance) probe(ctx context.Context, deadline time.Time) {
	cfg := &in.r.cfg
	// GetStateInstance allows 1 request per second per instance.
	stateLimit := rate.NewLimiter(1, 1)
	for n := 0; ; n++ {
		if err := cfg.Sleep(ctx, cfg.StartingBackoff.Full(n, cfg.Rand)); err != nil {
			in.resume() // the run is stopping: let the workers see it and give their rows back
			return
		}
		if !cfg.Now().Before(deadline) {
			in.r.instanceDown(in, fmt.Errorf("instance %s is still starting after %s (starting_timeout): "+
				"its rows are given back for a later run; check the instance in the Green API console",
				in.id, cfg.StartingTimeout))
			return
		}
		if err := stateLimit.Wait(ctx); err != nil {
			in.resume()
			return
		}
		state, err := in.api.GetStateInstance(ctx)
		in.r.stats.call("getStateInstance", err)
		if err != nil {
			if greenapi.ClassOf(err) == greenapi.ClassUnusable {
				in.r.instanceDown(in, unusableError(in.id, err))
				return
			}
			in.r.log.Debug().Str("instance", in.id).Err(err).Msg("state probe failed; probing again")
			continue
		}
		switch state {
		case greenapi.StateAuthorized, greenapi.StateYellowCard:
			in.resume()
			return
		case greenapi.StateNotAuthorized, greenapi.StateBlocked:
			in.r.instanceDown(in, unusableError(in.id, fmt.Errorf("getStateInstance says %q", state)))
			return
		default: // starting, sleepMode, or a state this version does not know: keep waiting
			in.r.log.Debug().Str("instance", in.id).Str("state", state).Msg("instance not ready yet")
		}
	}
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
			return "the apiTokenInstance is wrong: copy it again from the Green API console into token or token_file"
		case 403:
			return "the idInstance or api_url is wrong: check both against the Green API console"
		case 404:
			return "the API answered 404 to a documented method: check api_url"
		case 466:
			return "the account's plan quota is spent: upgrade the plan or wait for the quota to renew"
		}
	}
	switch msg := strings.ToLower(err.Error()); {
	case strings.Contains(msg, "expired"):
		return "the instance's paid period is over: renew it in the Green API console"
	case strings.Contains(msg, "deleted"):
		return "the instance was deleted: create a new one in the Green API console and configure its id and token"
	case strings.Contains(msg, "blocked"):
		return "WhatsApp blocked the account: see the Green API console; the instance cannot be used until it is unblocked"
	}
	return "open the Green API console and authorize the instance: scan its QR code with WhatsApp on the phone"
}

// logDown logs, once, why an instance left the run.
func logDown(log *zerolog.Logger, id string, err error) {
	log.Error().Str("instance", id).Err(err).Msg("instance taken out of the run")
}
