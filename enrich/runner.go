// Package enrich is the batch run: it claims due rows ahead of need, calls GetAvatar on every
// instance under that instance's rate limit, acts on each answer's class, and writes results
// back in batches. It knows the database and the API only through the Store and API interfaces.
package enrich

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/rs/zerolog"
)

var (
	// ErrNoInstance ends a run in which every instance was taken out (not authorized, wrong
	// token, quota spent, starting for too long): a person must act. The CLI exits 2.
	ErrNoInstance = errors.New("no usable Green API instance left")
	// ErrDatabase marks a failure of the database, so the CLI can exit 3.
	ErrDatabase = errors.New("database")
	// ErrInterrupted is returned when the run's context was cancelled (a signal): what was
	// answered is written and the rest given back, but due rows may remain.
	ErrInterrupted = errors.New("run interrupted")
)

var (
	errDeadline = errors.New("max_duration reached")
	errLimit    = errors.New("limit reached")
	// errRunDone stops what is left of a run that has ended on its own.
	errRunDone = errors.New("run done")
)

// Runner runs one batch run. It is single-use: make one with NewRunner, call Run once.
type Runner struct {
	cfg   Config
	store Store
	log   *zerolog.Logger
	stats *stats
	w     *writer

	instances []*instance

	// stop is cancelled to stop claiming and waiting: a signal, the deadline, no instance
	// left, a database failure. Calls in flight get ShutdownGrace more (calls).
	stop       context.Context
	cancelStop context.CancelCauseFunc
	calls      context.Context

	mu sync.Mutex
	// held are the rows claimed and not yet resolved (queued for writing): whatever is left
	// here when the run ends is given back.
	held map[int64]struct{}
	// live counts instances still in the run.
	live int
	// ended says why claiming ended without a stop (the limit), for the summary.
	ended error
	// probes are the state probers of paused instances.
	probes sync.WaitGroup
	// resolved is signalled (never blocks) whenever a held row is resolved, so an idle
	// claimer knows to look again.
	resolved chan struct{}
}

// NewRunner checks cfg and prepares a run over st.
func NewRunner(st Store, cfg Config) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:      cfg,
		store:    st,
		log:      cfg.Logger,
		stats:    newStats(),
		held:     make(map[int64]struct{}),
		resolved: make(chan struct{}, 1),
		live:     len(cfg.Instances),
	}
	r.w = newWriter(r)
	for _, in := range cfg.Instances {
		r.instances = append(r.instances, newInstance(r, in))
	}
	return r, nil
}

// Run claims and processes rows until no row is due and nothing is in flight, the limit or
// MaxDuration is reached, every instance is out (ErrNoInstance), the database fails
// (ErrDatabase), or ctx is cancelled (ErrInterrupted). On every path out it writes every answer
// received and gives back every row it did not finish. The summary is valid in all cases.
func (r *Runner) Run(ctx context.Context) (Summary, error) {
	start := r.cfg.Now()
	// stop carries no deadline on purpose, not even ctx's: rate.Limiter.Wait fails at once
	// when a wait would pass a context's deadline, so near a deadline every worker would give
	// its row back at once and the claimer would claim the next batch, again and again.
	stop, cancelStop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelStop(nil)
	unhook := context.AfterFunc(ctx, func() { cancelStop(context.Cause(ctx)) })
	defer unhook()
	if r.cfg.MaxDuration > 0 {
		deadline := time.AfterFunc(r.cfg.MaxDuration, func() { cancelStop(errDeadline) })
		defer deadline.Stop()
	}
	calls, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	r.stop, r.cancelStop, r.calls = stop, cancelStop, calls

	var bg sync.WaitGroup
	bg.Go(func() { r.cutCallsAfterGrace(cancelCalls) })
	if r.cfg.ProgressInterval > 0 {
		bg.Go(func() { r.progress(start) })
	}
	r.warnShortLease()
	r.preflight()
	writeDone := make(chan error, 1)
	go func() { writeDone <- r.w.loop() }()

	rows := make(chan store.Claimed, r.cfg.BatchSize)
	claimDone := make(chan error, 1)
	go func() { claimDone <- r.claim(rows) }()

	var workers sync.WaitGroup
	for _, in := range r.instances {
		for range r.cfg.Workers {
			workers.Go(func() { r.work(in, rows) })
		}
	}
	workers.Wait()
	// Every worker has gone, so either the claimer is done or the run is stopping: wait for
	// it, then give back what it claimed that nobody started.
	err := <-claimDone
	for range rows {
	}
	cause := context.Cause(stop)
	cancelStop(errRunDone) // ends any state prober still waiting
	r.probes.Wait()
	r.w.release(r.takeHeld()...)
	if werr := r.w.close(); err == nil {
		err = werr
	}
	cancelCalls()
	bg.Wait()

	sum := r.stats.summary(r.cfg.Now().Sub(start))
	switch {
	case err != nil:
		sum.Stop = "error"
		return sum, err
	case ctx.Err() != nil:
		sum.Stop = "interrupted"
		return sum, ErrInterrupted
	case errors.Is(cause, ErrNoInstance):
		sum.Stop = "no usable instance"
		return sum, cause
	case errors.Is(cause, errDeadline):
		sum.Stop = "max_duration reached"
	case r.ended != nil:
		sum.Stop = r.ended.Error()
	default:
		sum.Stop = "no due rows left"
	}
	return sum, nil
}

// warnShortLease says so when rows claimed ahead may outlive their lease at the configured
// rates: their results would then be fenced off and the rows done again by another run.
func (r *Runner) warnShortLease() {
	var rps float64
	for _, in := range r.cfg.Instances {
		rps += in.RPS
	}
	ahead := 2*r.cfg.BatchSize + r.cfg.Workers*len(r.cfg.Instances)
	if need := time.Duration(float64(ahead) / rps * float64(time.Second)); need > r.cfg.Lease {
		r.log.Warn().Str("lease", r.cfg.Lease.String()).Str("needed", need.Round(time.Second).String()).
			Msg("run.lease is shorter than the time to work through the rows claimed ahead at this rate: " +
				"raise run.lease or lower run.batch_size")
	}
}

// preflightTimeout bounds the GetStateInstance check of every instance before a run.
const preflightTimeout = 10 * time.Second

// preflight asks every instance's state before any row is claimed, so an instance that cannot
// work is out of the run before it holds rows, and one that is starting is paused from the
// start. A probe that fails for any other reason changes nothing: GetAvatar will tell.
func (r *Runner) preflight() {
	ctx, cancel := context.WithTimeout(r.stop, preflightTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, in := range r.instances {
		wg.Go(func() {
			state, err := in.api.GetStateInstance(ctx)
			r.stats.call("getStateInstance", err)
			switch {
			case greenapi.ClassOf(err) == greenapi.ClassUnusable:
				r.instanceDown(in, unusableError(in.id, err))
			case err != nil:
				r.log.Warn().Str("instance", in.id).Err(err).Msg("state check before the run failed; going on")
			case state == greenapi.StateNotAuthorized || state == greenapi.StateBlocked:
				r.instanceDown(in, unusableError(in.id, fmt.Errorf("getStateInstance says %q", state)))
			case state == greenapi.StateStarting:
				in.pause(r.stop, fmt.Errorf("getStateInstance says %q", state))
			}
		})
	}
	wg.Wait()
}

// cutCallsAfterGrace gives calls in flight ShutdownGrace after a stop, then cancels them.
func (r *Runner) cutCallsAfterGrace(cancelCalls context.CancelFunc) {
	select {
	case <-r.stop.Done():
	case <-r.calls.Done():
		return
	}
	if cause := context.Cause(r.stop); !errors.Is(cause, errRunDone) {
		why := cause.Error()
		if errors.Is(cause, context.Canceled) {
			why = "interrupted"
		}
		r.log.Info().Str("why", why).Str("shutdown_grace", r.cfg.ShutdownGrace.String()).
			Msg("stopping: no new claims; calls in flight may finish within shutdown_grace")
	}
	t := time.NewTimer(r.cfg.ShutdownGrace)
	defer t.Stop()
	select {
	case <-t.C:
		r.log.Warn().Dur("shutdown_grace", r.cfg.ShutdownGrace).
			Msg("calls still in flight at the end of shutdown_grace: cutting them, their rows are given back")
		cancelCalls()
	case <-r.calls.Done():
	}
}

// claim keeps rows fed ahead of the workers: it claims the next batch while the previous one
// is still in the channel, so the rate limiters never wait on a database round trip. It closes
// rows when it ends: nothing due and nothing in flight, the limit, or a stop.
func (r *Runner) claim(rows chan<- store.Claimed) error {
	defer close(rows)
	claimed := 0
	// looked is true after a claim found nothing while nothing was in flight and every
	// result had been written: one more empty claim then means the run is done.
	looked := false
	for r.stop.Err() == nil {
		n := r.cfg.BatchSize
		if r.cfg.Limit > 0 {
			if claimed >= r.cfg.Limit {
				r.mu.Lock()
				r.ended = errLimit
				r.mu.Unlock()
				return nil
			}
			n = min(n, r.cfg.Limit-claimed)
		}
		// A stop must not cut a claim half-way: the rows it took would stay leased.
		batch, err := r.store.Claim(context.WithoutCancel(r.stop), r.cfg.Owner, n, r.cfg.Lease)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrDatabase, err)
			r.cancelStop(err)
			return err
		}
		r.hold(batch)
		claimed += len(batch)
		for _, row := range batch {
			select {
			case rows <- row:
			case <-r.stop.Done():
				return nil
			}
		}
		switch {
		case len(batch) > 0:
			looked = false
		case r.heldCount() > 0:
			// Rows in flight may yet be given back (due again): look when one resolves.
			looked = false
			select {
			case <-r.resolved:
			case <-r.stop.Done():
			}
		case looked:
			return nil
		default:
			// Write what is queued (a row given back is due again), then look once more.
			if err := r.w.flush(); err != nil {
				return nil // the writer stops the run and reports its error
			}
			looked = true
		}
	}
	return nil
}

// work is one worker on one instance: it takes rows while the instance's gate is open.
func (r *Runner) work(in *instance, rows <-chan store.Claimed) {
	for {
		if err := in.wait(r.stop); err != nil {
			return
		}
		select {
		case row, ok := <-rows:
			if !ok {
				return
			}
			if r.stop.Err() != nil {
				return // taken as the run stopped: it stays held and is given back
			}
			r.process(in, row)
		case <-in.gone:
			return
		case <-r.stop.Done():
			return
		}
	}
}

// process walks one row: validate, call under the limiter, act on the answer's class.
func (r *Runner) process(in *instance, row store.Claimed) {
	target, err := targetOf(row)
	if err != nil {
		r.stats.invalidLocal.Add(1)
		r.resolve(row.ID, func(b *store.Batch) {
			b.Failed = append(b.Failed, store.Failure{ID: row.ID, Reason: greenapi.ReasonBadRequestData})
		})
		return
	}
	transient, limited := 0, 0
	for {
		if in.wait(r.stop) != nil || in.pace(r.stop) != nil {
			r.giveBack(row.ID)
			return
		}
		av, err := in.api.GetAvatar(r.calls, target)
		class := greenapi.ClassOf(err)
		r.stats.call("getAvatar", err)
		if err == nil {
			in.answered()
			r.resolve(row.ID, func(b *store.Batch) {
				b.Done = append(b.Done, store.Done{ID: row.ID, ExistsWhatsapp: av.ExistsWhatsapp,
					AvatarAvailable: av.Available, URLAvatar: av.URLAvatar})
			})
			return
		}
		var wait time.Duration
		switch class {
		case greenapi.ClassStarting:
			in.pause(r.stop, err)
			continue
		case greenapi.ClassRateLimited:
			// The server's Retry-After if it sent one (bounded, so a bad header cannot park
			// the run), else the same 1 s to 30 s backoff as a starting instance.
			wait = min(retryAfter(err), r.cfg.Retry.Max)
			if wait <= 0 {
				wait = r.cfg.StartingBackoff.Full(limited, r.cfg.Rand)
			}
			limited++
		case greenapi.ClassTransient:
			if transient >= r.cfg.RetryInRun {
				r.reschedule(row, err)
				return
			}
			wait = r.cfg.Retry.Full(transient, r.cfg.Rand)
			transient++
		case greenapi.ClassAvatarTimeout:
			in.answered()
			r.reschedule(row, err)
			return
		case greenapi.ClassInvalid:
			in.answered()
			r.resolve(row.ID, func(b *store.Batch) {
				b.Failed = append(b.Failed, store.Failure{ID: row.ID, Reason: greenapi.ReasonBadRequestData, Attempted: true})
			})
			return
		case greenapi.ClassUnusable:
			r.instanceDown(in, unusableError(in.id, err))
			r.giveBack(row.ID)
			return
		default:
			// The call was cut (shutdown_grace is over) or failed in a way no row is to blame
			// for: the row goes back untouched.
			r.giveBack(row.ID)
			return
		}
		if r.cfg.Sleep(r.stop, wait) != nil {
			r.giveBack(row.ID)
			return
		}
	}
}

// reschedule spends one of the row's attempts: it is due again after a backoff, or failed
// with the last reason once max_attempts are spent.
func (r *Runner) reschedule(row store.Claimed, err error) {
	reason := reasonOf(err)
	if row.Attempts+1 >= r.cfg.MaxAttempts {
		r.resolve(row.ID, func(b *store.Batch) {
			b.Failed = append(b.Failed, store.Failure{ID: row.ID, Reason: reason, Attempted: true})
		})
		return
	}
	delay := r.cfg.Retry.Equal(row.Attempts, r.cfg.Rand)
	r.resolve(row.ID, func(b *store.Batch) {
		b.Retry = append(b.Retry, store.Retry{ID: row.ID, Reason: reason, Delay: delay})
	})
}

// giveBack returns a row untouched: no attempt spent, due again.
func (r *Runner) giveBack(id int64) {
	r.resolve(id, func(b *store.Batch) { b.Released = append(b.Released, id) })
}

// resolve queues a row's result for writing and stops holding the row.
func (r *Runner) resolve(id int64, add func(*store.Batch)) {
	r.w.add(add)
	r.mu.Lock()
	delete(r.held, id)
	r.mu.Unlock()
	select {
	case r.resolved <- struct{}{}:
	default:
	}
}

func (r *Runner) hold(rows []store.Claimed) {
	r.stats.claimed.Add(int64(len(rows)))
	r.mu.Lock()
	for _, row := range rows {
		r.held[row.ID] = struct{}{}
	}
	r.mu.Unlock()
}

func (r *Runner) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// takeHeld empties held and returns what it had.
func (r *Runner) takeHeld() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]int64, 0, len(r.held))
	for id := range r.held {
		ids = append(ids, id)
	}
	clear(r.held)
	return ids
}

// instanceDown takes an instance out of the run; with none left the run stops.
func (r *Runner) instanceDown(in *instance, err error) {
	if !in.fail(err) {
		return
	}
	logDown(r.log, in.id, err)
	r.mu.Lock()
	r.live--
	last := r.live == 0
	r.mu.Unlock()
	if last {
		r.cancelStop(fmt.Errorf("%w: %w", ErrNoInstance, err))
	}
}

// targetOf validates the row's chat_id, else its phone_number; a row with neither or with
// a malformed one never reaches the API.
func targetOf(row store.Claimed) (greenapi.Target, error) {
	switch {
	case row.ChatID != nil:
		return greenapi.ParseChatID(*row.ChatID)
	case row.PhoneNumber != nil:
		return greenapi.ParsePhone(*row.PhoneNumber)
	}
	return greenapi.Target{}, &greenapi.InvalidTargetError{Why: "the row has neither phone_number nor chat_id"}
}

// reasonOf is what the reason column keeps for a failure: the API's words when it said
// something, else the HTTP status or the kind of network failure.
func reasonOf(err error) string {
	var ae *greenapi.Error
	if !errors.As(err, &ae) {
		return err.Error()
	}
	switch {
	case ae.Reason != "":
		return ae.Reason
	case ae.Status != 0:
		return fmt.Sprintf("HTTP %d", ae.Status)
	case ae.Err != nil:
		return "network error: " + ae.Err.Error()
	}
	return ae.Class.String()
}

// retryAfter is the server's Retry-After, or 0.
func retryAfter(err error) time.Duration {
	var ae *greenapi.Error
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}
