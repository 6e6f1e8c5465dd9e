// Package enrich is the batch run: it claims due rows ahead of need, calls GetAvatar on every
// instance under that instance's rate limit, acts on each answer's class, and writes results
// back in batches. It knows the database and the API only through the Store and API interfaces.
//
// Every failure has an owner, and only the owner pays. A row's own failure (its number rejected,
// its avatar timed out) spends that row's attempts. An instance's failure (starting, unreachable,
// 429, not authorized) pauses or removes the instance and gives its rows to the others, or back
// to the table, untouched. A configuration's failure (a request form the API refuses for every
// row) stops the run with ErrConfiguration. A database failure is waited out for RetryFor, then
// ends the run with ErrDatabase.
package enrich

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/rs/zerolog"
)

var (
	// ErrNoInstance ends a run in which every instance was taken out (not authorized, wrong
	// token, quota spent, starting, unreachable or answering nothing but 429 for longer than
	// StartingTimeout): a person must act. The CLI exits 2.
	ErrNoInstance = errors.New("no usable Green API instance left")
	// ErrConfiguration ends a run whose requests the API refuses for every row (the request
	// form, not the numbers): the message names the key to change. The CLI exits 1.
	ErrConfiguration = errors.New("configuration refused by the API")
	// ErrDatabase marks a failure of the database that outlasted RetryFor, so the CLI can exit 3.
	ErrDatabase = errors.New("database")
	// ErrInterrupted is returned when the run's context was cancelled (a signal): what was
	// answered is written and the rest given back, but due rows may remain.
	ErrInterrupted = errors.New("run interrupted")
	// ErrUnwritten is joined to the run's error when answers were received that the database
	// did not take in time: those rows stay leased until the lease expires, then are asked again.
	ErrUnwritten = errors.New("answers could not be written")
)

var (
	errDeadline = errors.New("max_duration reached")
	errLimit    = errors.New("limit reached")
	// errDailyCap ends a run whose instances have all spent their daily cap (or are out): the
	// run's own limit, like errLimit.
	errDailyCap = errors.New("every instance spent its daily cap")
	// errRunDone stops what is left of a run that has ended on its own.
	errRunDone = errors.New("run done")
)

// StopDailyCap is Summary.Stop of a run that ended because every instance spent its daily cap
// (and none left for a fault): a follower's caller waits for the day to turn and starts again.
const StopDailyCap = "daily cap reached"

// finalWriteMin is the least time the last write of a stopped run gets, even when calls in
// flight used up shutdown_grace.
const finalWriteMin = time.Second

// HurriedWrite bounds the last write (and the refund of unsent slots) of a run told to hurry
// (Config.Hurry): with calls cut at once, a second SIGTERM ends the run within it and a
// little more.
const HurriedWrite = 3 * time.Second

// Runner runs one batch run. It is single-use: make one with NewRunner, call Run once.
type Runner struct {
	cfg   Config
	store Store
	log   *zerolog.Logger
	stats *stats
	w     *writer
	rows  *rows

	instances []*controller

	// stop is cancelled to stop claiming and waiting: a signal, the deadline, no instance
	// left, a configuration or database failure. Calls in flight get ShutdownGrace more (calls).
	stop       context.Context
	cancelStop context.CancelCauseFunc
	calls      context.Context
	// working is the dispatchers' context: cancelled by a stop, or when the rows have nothing
	// left for anyone (so the dispatcher of a paused instance goes too).
	working context.Context
	// workersDone is closed when every dispatcher, call and retry has returned: no call is in
	// flight any more.
	workersDone chan struct{}
	// retries are the rows waiting out a retry's backoff, out of the queue; reserving are the
	// reservations of instances' next blocks in flight.
	retries, reserving sync.WaitGroup
	// probeCtx ends the state probers when the run ends.
	probeCtx context.Context
	// dbCtx is the parent of every write and renewal: a stop does not cancel them, the end of
	// the final write's deadline does.
	dbCtx context.Context
	// writeDone is closed when the writer's loop ends; renewDone ends the renewer.
	writeDone, renewDone chan struct{}
	renewer              sync.WaitGroup

	mu sync.Mutex
	// live counts instances still in the run; out is why the first instance taken out for a
	// fault (not for its daily cap) left, nil while none has.
	live int
	out  error
	// ended says why claiming ended without a stop (the limit), for the summary.
	ended error
	// stoppedAt is when the run began to stop; zero while it runs. hurried is set when
	// Config.Hurry closed during the stop.
	stoppedAt time.Time
	hurried   bool
	// probes are the state probers of paused instances.
	probes sync.WaitGroup
	// wake is signalled (never blocks) when the claimer may have something to do: rows were
	// written or given up, an instance resumed or left.
	wake chan struct{}
	// started is when Run began (nil before); due is what countDue found (-1 before).
	started atomic.Pointer[time.Time]
	due     atomic.Int64
	// lastMove is when the run last made progress (UnixNano): see moved and watch.
	lastMove atomic.Int64
	// idle is set while a follower with nothing held and nothing due waits (followIdle): the
	// watchdog does not count that time.
	idle atomic.Bool
	// finished is set once Run has ended: nothing is left to stall (Health).
	finished atomic.Bool
	// drained is set once a claim says nothing more is due, and cleared by full ones
	// (tableEnd.claimed): the rows in hand are all the run can expect, and blocks are sized by
	// them (controller.unreserved).
	drained atomic.Bool
	// handed are the instances the run handed over lately (keep.go).
	handed handed
	// behind says a run on this run's table started before it and still runs (StandBy).
	behind atomic.Bool
	// sharedAt is when, in Unix nanoseconds, a grant last said a run on this run's table kept one
	// of its instances (Runner.sharesTable); 0: never.
	sharedAt atomic.Int64
}

// NewRunner checks cfg and prepares a run over st.
func NewRunner(st Store, cfg Config) (*Runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:   cfg,
		store: st,
		log:   cfg.Logger,
		stats: newStats(cfg.Observer),
		wake:  make(chan struct{}, 1),
		live:  len(cfg.Instances),
	}
	r.rows = newRows(cfg.Lease, cfg.Now, r.wakeClaimer)
	r.due.Store(-1)
	r.w = newWriter(r)
	for _, in := range cfg.Instances {
		r.instances = append(r.instances, newController(r, in))
	}
	return r, nil
}

// Run claims and processes rows until no row is due and nothing is in flight, the limit or
// MaxDuration is reached, every instance is out (ErrNoInstance), the API refuses the request form
// (ErrConfiguration), the database fails for longer than RetryFor (ErrDatabase), or ctx is
// cancelled (ErrInterrupted). On every path out it writes every answer received and gives back
// every row it did not finish. The summary is valid in all cases.
func (r *Runner) Run(ctx context.Context) (Summary, error) {
	start := r.cfg.Now()
	r.started.Store(&start)
	r.moved()
	// stop carries no deadline on purpose, not even ctx's: a deadline would make waits fail
	// early near it, and every worker would give its row back at once.
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
	probeCtx, endProbes := context.WithCancel(stop)
	defer endProbes()
	working, endWork := context.WithCancel(stop)
	defer endWork()
	go func() {
		select {
		case <-r.rows.finished:
			endWork()
		case <-working.Done():
		}
	}()
	dbCtx, cutDB := context.WithCancel(context.Background())
	defer cutDB()
	r.stop, r.cancelStop, r.calls, r.probeCtx, r.working, r.dbCtx = stop, cancelStop, calls, probeCtx, working, dbCtx
	for _, c := range r.instances {
		c.calls = httptrace.WithClientTrace(calls, &httptrace.ClientTrace{WroteRequest: c.wrote})
	}
	r.workersDone = make(chan struct{})

	var bg sync.WaitGroup
	bg.Go(func() { r.cutCallsAfterGrace(cancelCalls) })
	bg.Go(func() { r.watch(r.workersDone) })
	counted := make(chan struct{})
	bg.Go(func() { defer close(counted); r.countDue() })
	if r.cfg.ProgressInterval > 0 {
		bg.Go(r.progress)
	}
	r.waitBehind()
	r.preflight()
	// The rows due are counted before the first claim, so that Due is what this run has to do;
	// the count has DatabaseTimeout, past which Due stays unknown rather than hold the run.
	select {
	case <-counted:
	case <-stop.Done():
	}
	r.writeDone, r.renewDone = make(chan struct{}), make(chan struct{})
	go func() { defer close(r.writeDone); r.w.loop() }()
	r.renewer.Go(func() { r.renewLoop(r.renewDone) })

	claimDone := make(chan struct{})
	go func() { defer close(claimDone); r.claim() }()

	var dispatchers sync.WaitGroup
	for _, c := range r.instances {
		dispatchers.Go(func() { r.dispatch(c) })
	}
	bg.Go(func() { r.lookLoop(r.workersDone) })
	dispatchers.Wait()
	r.retries.Wait()
	close(r.workersDone)
	// Every call has ended, so either the claimer is done or the run is stopping.
	<-claimDone
	cause := context.Cause(stop)
	endProbes()
	r.probes.Wait()

	r.windDown(cause, cutDB)
	cancelStop(errRunDone)
	cancelCalls()
	bg.Wait()
	r.finished.Store(true)
	return r.outcome(ctx, cause, r.stats.summary(r.cfg.Now().Sub(start)))
}

// elapsed is the run's wall time so far; 0 before Run.
func (r *Runner) elapsed() time.Duration {
	if t := r.started.Load(); t != nil {
		return r.cfg.Now().Sub(*t)
	}
	return 0
}

// windDown ends a run whose calls have ended: suspects are their rows' own failures, unless the
// run stopped because they were not; every other row not answered goes back untouched; the last
// write, and any write or renewal still in flight, end at the final deadline (cutDB).
func (r *Runner) windDown(cause error, cutDB context.CancelFunc) {
	configFault := errors.Is(cause, ErrConfiguration)
	for _, c := range r.instances {
		if ss := c.takeSuspects(); !configFault {
			r.failSuspects(ss)
		}
	}
	r.w.release(r.rows.unresolved())
	final := r.finalDeadline(cause)
	cut := time.AfterFunc(time.Until(final), cutDB)
	defer cut.Stop()
	r.settleBudget()
	r.w.close(final)
	<-r.writeDone
	close(r.renewDone)
	r.renewer.Wait()
}

// settleBudget tells the shared budget, once the run's calls are over, what only its next
// reservation would have: the slots of its last blocks it never sent, given back to the day's
// count (so a daily cap, and status's count of the day, go by requests sent, not slots
// reserved), and that it had an answer since (status's last answer). A run shorter than one
// block makes no other reservation to carry them.
func (r *Runner) settleBudget() {
	r.reserving.Wait()
	for _, c := range r.instances {
		if c.shared == nil {
			continue
		}
		c.mu.Lock()
		c.shared.drop()
		req := c.shared.request(c.id, c.perDay, 0, r.cfg.Now())
		c.shared.unsent = 0
		c.mu.Unlock()
		if req.Refund == 0 && !req.Answered {
			continue
		}
		req.Want = 0
		ctx, cancel := context.WithTimeout(r.dbCtx, r.cfg.DatabaseTimeout)
		if _, err := r.cfg.Budget.Reserve(ctx, req, policy); err != nil {
			r.log.Warn().Str("instance", c.id).Err(err).Int("slots", req.Refund).
				Msg("giving unsent slots back to the day's count failed: the day counts them as spent")
		}
		cancel()
	}
}

// outcome says why the run ended, in the summary and as Run's error. A database failure comes
// first, and results the database never took make any end a failure, so that a run that could
// not do its job never returns nil.
func (r *Runner) outcome(ctx context.Context, cause error, sum Summary) (Summary, error) {
	var left int
	sum.Unwritten, left = r.w.unwritten()
	dbFailed := r.w.failure()
	if dbFailed == nil && errors.Is(cause, ErrDatabase) {
		dbFailed = cause
	}
	unwritten := fmt.Errorf("%d %w: their rows come back when their lease expires and are asked again", sum.Unwritten, ErrUnwritten)
	switch {
	case dbFailed != nil:
		sum.Stop = "database failure"
		if sum.Unwritten > 0 {
			dbFailed = fmt.Errorf("%w; %w", dbFailed, unwritten)
		}
		return sum, dbFailed
	case ctx.Err() != nil && left > 0:
		sum.Stop = "interrupted"
		return sum, fmt.Errorf("%w; the database took no writes before shutdown_grace ran out: %w", ErrInterrupted, unwritten)
	case left > 0:
		sum.Stop = "database failure"
		return sum, fmt.Errorf("%w: the last write of %d results did not succeed in time; %w", ErrDatabase, left, unwritten)
	case ctx.Err() != nil:
		sum.Stop = "interrupted"
		return sum, ErrInterrupted
	case errors.Is(cause, ErrConfiguration):
		sum.Stop = "configuration refused by the API"
		return sum, cause
	case errors.Is(cause, ErrNoInstance):
		sum.Stop = "no usable instance"
		return sum, cause
	case errors.Is(cause, ErrStalled):
		sum.Stop = "stalled"
		return sum, cause
	case errors.Is(cause, errDeadline):
		sum.Stop = "max_duration reached"
	case errors.Is(cause, errDailyCap):
		sum.Stop = StopDailyCap
	case r.ended != nil:
		sum.Stop = r.ended.Error()
	default:
		sum.Stop = "no due rows left"
	}
	return sum, nil
}

// finalDeadline bounds the last write: a stopped run (signal, max_duration, an instance or
// configuration failure) keeps to shutdown_grace from the stop; a run that ended on its own
// waits out the database for RetryFor; a run the database stopped gets one last short try.
func (r *Runner) finalDeadline(cause error) time.Time {
	now := time.Now()
	r.mu.Lock()
	stopped, hurried := r.stoppedAt, r.hurried
	r.mu.Unlock()
	switch {
	case hurried:
		return now.Add(HurriedWrite)
	case cause == nil || errors.Is(cause, errRunDone) || errors.Is(cause, errLimit) || errors.Is(cause, errDailyCap):
		return now.Add(r.cfg.RetryFor)
	case errors.Is(cause, ErrDatabase):
		return now.Add(finalWriteMin)
	case stopped.IsZero():
		stopped = now
	}
	return later(stopped.Add(r.cfg.ShutdownGrace), now.Add(finalWriteMin))
}

// preflightTimeout bounds the GetStateInstance check of every instance before a run.
const preflightTimeout = 10 * time.Second

// preflight checks every instance's state, all at once, before any row is claimed.
func (r *Runner) preflight() {
	ctx, cancel := context.WithTimeout(r.stop, preflightTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range r.instances {
		wg.Go(func() { c.preflight(ctx) })
	}
	wg.Wait()
}

// cutCallsAfterGrace gives calls in flight ShutdownGrace after a stop, then cancels them.
func (r *Runner) cutCallsAfterGrace(cancelCalls context.CancelFunc) {
	select {
	case <-r.stop.Done():
	case <-r.workersDone:
		return
	}
	r.mu.Lock()
	r.stoppedAt = time.Now()
	r.mu.Unlock()
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
			Msg("calls still in flight at the end of shutdown_grace: cutting them, their rows are released untouched")
		cancelCalls()
	case <-r.cfg.Hurry:
		r.mu.Lock()
		r.hurried = true
		r.mu.Unlock()
		r.log.Warn().Int64("in_flight", r.stats.inFlight.Load()).
			Msg("told to hurry: cutting the calls in flight now; answers received are written, the rest released untouched")
		cancelCalls()
	case <-r.workersDone:
	}
}

// claimLimit is how many rows the run may hold at once: what its running instances can start
// within half a lease at their current rates and within what their daily caps leave, at least
// one, and never more than two batches ahead of every worker. Instances another run keeps
// (keep.go) count for nothing, and the two batches are shared out by the instances the run
// keeps. With no instance able to send it is 0: rows would only wait.
func (r *Runner) claimLimit() int {
	limit := 0
	running := false
	kept := 0
	for _, c := range r.instances {
		if c.shared != nil && c.shared.keep.gone.Load() {
			continue // another run keeps it: rows claimed for it would only wait
		}
		kept++
		ok, rate, room := c.running()
		if !ok {
			continue
		}
		running = true
		n := int64(rate * r.cfg.Lease.Seconds() / 2)
		if c.shared != nil && !c.shared.keep.ours.Load() {
			n = min(n, int64(math.Ceil(rate*blockFor.Seconds()))) // another run may keep it (keep.go)
		}
		if room >= 0 {
			n = min(n, room) // no more than the daily cap lets this run send
		}
		limit += int(n)
	}
	if !running {
		return 0
	}
	n := len(r.instances)
	ceiling := (2*r.cfg.BatchSize*kept+n-1)/n + r.cfg.Workers*kept
	return max(1, min(limit, ceiling))
}

// endQueue is how many rows a run that shares its instances with other runs keeps waiting once
// nothing more is due (Runner.drained): what the instances it keeps send within endAhead. The
// rest go back to the table, where the run whose rows run out first claims them, so that every
// run's instances run out of rows together, as one run's do. With the usual claims (up to two
// batches ahead), one run's instances stood idle at the end of the table while another's still
// had a second of rows: six processes spent 1% less of the budget than one on the same rows.
func (r *Runner) endQueue() int {
	n := 0
	for _, c := range r.instances {
		if c.shared != nil && c.shared.keep.gone.Load() {
			continue
		}
		if ok, rate, _ := c.running(); ok {
			n += int(math.Ceil(rate * endAhead.Seconds()))
		}
	}
	return max(1, n)
}

const (
	// endAhead is how much of its instances' sending a run sharing them keeps waiting once
	// nothing more is due (endQueue): longer than a claim's round trip, or its instances wait
	// for the claims.
	endAhead = 200 * time.Millisecond
	// endFor is how long the claims of a run at the end of the table must come back full before
	// it takes them for rows due again and claims as usual (Runner.drained).
	endFor = 2 * time.Second
)

// tableEnd is what a run's claimer knows of the end of the table: whether anything more is due
// (Runner.drained), and since when it knows so.
type tableEnd struct {
	drained *atomic.Bool
	// shortAt is when the last claim said nothing more is due: see endFor. lookedAt is when a
	// run with no room to claim last asked whether anything is (noneDue).
	shortAt, lookedAt time.Time
}

// noneDue records that nothing was due at now, as a run with no room to claim found without a
// claim, while runs on its table keep other instances. It reports whether the run reaches the
// end (Runner.reachEnd), as claimed does.
func (e *tableEnd) noneDue(now time.Time) (reached bool) {
	reached = !e.drained.Load()
	e.drained.Store(true)
	e.shortAt = now
	return reached
}

// claimed records what a claim for n rows, sent at sent from the start of the claim order or
// not, returned at now, says of the end of the table; sharing says other runs share the run's
// instances (Runner.sharesTable), end that the run was at the end when it claimed (Runner.endGame).
// It reports whether the run reaches the end, sharing: it then gives back the slots booked beyond
// its last rows and asks for the other runs' instances again (Runner.reachEnd).
//
// The end is a short claim from the start, or, sharing, a short one after a cursor that returned
// rows other runs gave back (givenBack): they stand last in the claim order. A short claim after
// a cursor alone may have missed rows before it; a full one of rows given back is not the end
// either: runs give rows back when they hand an instance over, and a run that took such a claim
// for the end gave back its rows and slots seconds before the end. Only endFor of full claims
// says rows are due again at the end: a claim as small as the end's queue is filled by the rows
// other runs give back.
func (e *tableEnd) claimed(batch []store.Claimed, n int, sent, now time.Time, fromStart, sharing, end bool) (reached bool) {
	switch {
	case len(batch) < n && (fromStart || !end && sharing && givenBack(batch, sent)):
		e.drained.Store(true)
		e.shortAt = now
	case len(batch) == n && (!end || now.Sub(e.shortAt) >= endFor):
		e.drained.Store(false)
	}
	return !end && sharing && e.drained.Load()
}

// givenBack reports whether a claim made at sent returned a row given back (or rescheduled) within
// endFor before it: one that stood at the end of the claim order.
func givenBack(batch []store.Claimed, sent time.Time) bool {
	for _, c := range batch {
		if sent.Sub(c.Due) < endFor {
			return true
		}
	}
	return false
}

// resultsMax is how many batches of results may wait for the database before the run claims no
// more rows: memory stays bounded however long the database takes no writes.
const resultsMax = 4

// claimPoll is how often a claimer that found nothing due, while rows are still held, looks
// again even if nothing woke it: a row rescheduled with a short delay may be due; and how often
// one with no room to claim looks whether suspects can be settled.
const claimPoll = time.Second

// emptyLookGap is the least time between two claims that find nothing due while the run still
// has rows in hand: half a slot at 10 rps, so rows other runs give back at the end of the table
// are claimed before their instances' next slot.
const emptyLookGap = 50 * time.Millisecond

// claim keeps the queue fed ahead of the workers, within claimLimit: it claims the next batch
// while rows are still queued, so the instances never wait on a database round trip. It closes
// the queue when it ends: nothing due and nothing held, the limit, or a stop.
func (r *Runner) claim() {
	defer r.rows.close()
	defer r.drained.Store(true) // whatever ended the claims, the rows in hand are all there is
	claimed := 0
	var token int64
	var failing dbRetry
	// cursor is where the last full batch ended in the claim order: the next claim starts
	// there, not over the index entries this run's own claims left behind; a short claim
	// sends the next one back to the start.
	var cursor store.Cursor
	// looked is true once a claim found nothing while nothing was held and every result had
	// been written: one more empty claim then means the run is done.
	looked := false
	ends := tableEnd{drained: &r.drained}
	// again says a claim after the cursor came back short: the next, from the start, goes at
	// once, whatever room there is, to learn whether anything is left (drained).
	again := false
	for r.stop.Err() == nil {
		held, inHand, waiting := r.rows.counts()
		limit := r.claimLimit()
		sharing := r.sharing()
		end := r.endGame()
		// Rows beyond what the run may hold go back when other runs keep instances this run
		// claimed rows for: the runs that keep the rest call them. Once nothing more is due, so
		// do the rows beyond a short queue (endQueue).
		over, least := min(inHand-limit, waiting), r.cfg.BatchSize/2
		queue := 0
		if end {
			queue = r.endQueue()
			over, least = max(over, waiting-queue), queue/2
		}
		if sharing && r.kept() == 0 {
			least = 0 // none of them can be called here (Runner.sharing)
		}
		if (sharing || end) && over > least {
			hs := r.rows.surplus(over)
			r.log.Debug().Int("rows", len(hs)).Int("kept", r.kept()).Bool("end", end).Msg("giving back rows that other runs' instances will call")
			r.w.release(hs)
			held, inHand, waiting = r.rows.counts()
		}
		// The limit is on rows still to call; results waiting to be written are bounded apart,
		// so a database that takes no writes stops the claims (and so the calls) too.
		n := min(r.cfg.BatchSize, limit-inHand, limit+resultsMax*r.cfg.BatchSize-held)
		half := min(r.cfg.BatchSize, limit) / 2
		if end {
			// Every row that leaves the queue is claimed again at once (the dispatcher wakes the
			// claimer, Runner.endGame): each of the last rows is claimed a queue's length before
			// the slot it fills, whichever run's, so the runs' rows run out in the order of their
			// slots, as one run's do.
			n, half = min(n, queue-waiting), 1
		}
		if r.cfg.Limit > 0 {
			if claimed >= r.cfg.Limit {
				r.mu.Lock()
				r.ended = errLimit
				r.mu.Unlock()
				return
			}
			n = min(n, r.cfg.Limit-claimed)
		}
		// Claim a batch when there is room for half of one, or at once when the workers have
		// nothing left to take.
		if n <= 0 || (inHand > 0 && n < half && waiting > 0 && !again) {
			if n <= 0 && held == 0 && !r.cfg.Follow {
				// No room, as none of the run's instances can send (other runs keep them, or
				// they are paused), and nothing in hand: with nothing due either the run is done,
				// as after two empty claims. A run whose only instance another run kept while
				// that run held every row waited for its turn until the stall watchdog ended it.
				if r.nothingDue() {
					if looked {
						return
					}
					looked = true
				} else {
					looked = false
				}
			} else if held > 0 && !end && r.sharesTable() && r.cfg.Now().Sub(ends.lookedAt) >= claimPoll {
				// Beside runs on the table that keep other instances, a run with no room claims
				// nothing, and would not learn that nothing more is due: a run that kept 2 of 20
				// instances held 5 s of their rows when the table ran dry, and called them for
				// 2.6 s after the others had ended.
				ends.lookedAt = r.cfg.Now()
				if r.nothingDue() && ends.noneDue(r.cfg.Now()) {
					r.reachEnd()
				}
			}
			r.settleIfIdle()
			// Polled too: a row held back as a suspect wakes nobody, and when it is the only row
			// in hand only settleIfIdle, once its worker is done with it, lets the run go on.
			r.waitWake(claimPoll)
			continue
		}
		token++
		sent := r.cfg.Now()
		ctx, cancel := context.WithTimeout(r.stop, r.cfg.DatabaseTimeout)
		batch, err := r.store.ClaimAfter(ctx, r.cfg.Owner, token, n, r.cfg.Lease, cursor)
		cancel()
		if err != nil {
			if r.stop.Err() != nil {
				return // a stop cut the claim: PostgreSQL was asked to cancel it
			}
			wait, first, stop := r.databaseFailed(&failing, err)
			if stop != nil {
				return
			}
			if first {
				r.log.Warn().Err(err).Str("retry_for", r.cfg.RetryFor.String()).
					Msg("claiming rows failed; retrying while the calls in hand go on")
			}
			_ = r.cfg.Sleep(r.stop, wait)
			continue
		}
		if down := failing.ok(r.cfg.Now()); down > 0 {
			r.log.Info().Str("after", down.Round(time.Millisecond).String()).Msg("the database is back: claiming again")
		}
		claimed += len(batch)
		if e := r.log.Debug(); e.Enabled() {
			e.Int("rows", len(batch)).Int("asked", n).Int("in_hand", inHand).Dur("took", r.cfg.Now().Sub(sent)).Msg("claimed")
		}
		r.take(batch, sent)
		fromStart := cursor == (store.Cursor{})
		if ends.claimed(batch, n, sent, r.cfg.Now(), fromStart, r.sharesTable(), end) {
			r.reachEnd()
		}
		again = len(batch) < n && !fromStart
		if len(batch) == n {
			cursor = cursor.After(batch)
		} else {
			cursor = store.Cursor{}
		}
		if len(batch) > 0 {
			looked = false
			continue
		}
		if !fromStart {
			continue // nothing after the cursor: look from the start
		}
		// Nothing is due. Rows still in hand may yet be given back (due again): look when one
		// resolves. Otherwise write what is queued at once, rather than at the writer's next
		// tick (a row given back is due again), then look once more.
		r.settleIfIdle()
		if held, inHand, _ := r.rows.counts(); inHand > 0 {
			looked = false
			r.waitWake(claimPoll)
			// Every row resolved wakes the claimer: at the end of the table, with hundreds of
			// rows a second in hand, each woke an empty claim, hundreds a second per run on a
			// database that the last calls' writes and the other runs' claims need.
			_ = r.cfg.Sleep(r.stop, emptyLookGap-r.cfg.Now().Sub(sent))
			continue
		} else if held > 0 {
			if held, _, _ := r.rows.counts(); !r.w.flush() || held > 0 {
				looked = false
				r.waitWake(claimPoll)
				continue
			}
			looked = true // everything is written: one more empty claim ends the run
			continue
		}
		if looked {
			if !r.cfg.Follow {
				return
			}
			// A follower is never done: it waits for rows to become due. looked stays set, so
			// an empty claim after the wait goes straight back to waiting.
			r.followIdle()
			continue
		}
		looked = true
	}
}

// dueUpTo is a store that counts the rows due only up to a limit (store.Store): a run that asks
// every second whether any row is due need not walk 100,000 of them.
type dueUpTo interface {
	DueUpTo(ctx context.Context, limit int64) (n int64, estimated bool, err error)
}

var _ dueUpTo = (*store.Store)(nil)

// nothingDue reports whether the table has no row due now, as far as the database says within
// DatabaseTimeout (an error says nothing).
func (r *Runner) nothingDue() bool {
	ctx, cancel := context.WithTimeout(r.stop, r.cfg.DatabaseTimeout)
	defer cancel()
	if s, ok := r.store.(dueUpTo); ok {
		n, _, err := s.DueUpTo(ctx, 1)
		return err == nil && n == 0
	}
	due, err := r.store.Due(ctx)
	return err == nil && due == 0
}

// settleIfIdle fails the rows held back as suspects when no row waits or is in a call and the
// claimer can add none: no more answers can join their streak, so each is its own row's failure.
func (r *Runner) settleIfIdle() {
	if !r.rows.idle() {
		return
	}
	for _, c := range r.instances {
		r.failSuspects(c.takeSuspects())
	}
}

// waitWake waits for a wake-up, the stop, or (when poll > 0) poll.
func (r *Runner) waitWake(poll time.Duration) {
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTimer(poll)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-r.wake:
	case <-tick:
	case <-r.stop.Done():
	}
}

// wakeClaimer tells the claimer to look again; it never blocks.
func (r *Runner) wakeClaimer() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take holds a claimed batch: invalid rows fail at once without a call, the rest are queued.
func (r *Runner) take(batch []store.Claimed, sent time.Time) {
	invalid, fresh := r.rows.add(batch, sent)
	// Rows new to the run are progress; a row it claims again (its lease lapsed while it held
	// it, as when a call hangs and renewals fail) is not, or the watchdog would never see the
	// run stall.
	if fresh > 0 {
		r.moved()
	}
	r.stats.claimed.Add(int64(len(batch)))
	for _, s := range invalid {
		r.stats.invalidLocal.Add(1)
		r.resolve(s.h, result{kind: resultFailed, reason: localReason(s.err)})
	}
}

// call makes one GetAvatar call for h, which the caller took from the rows, and acts on its
// class: the row is resolved, given back, or settled (held back as a suspect, or its call cut).
// It reports whether h should be retried in the run after a backoff instead (a transient
// failure of the row's, with retries left); the row is then still out.
func (r *Runner) call(c *controller, h *held, sentAt time.Time) (retry bool) {
	r.stats.inFlight.Add(1)
	av, err := c.api.GetAvatar(c.calls, h.target)
	r.stats.inFlight.Add(-1)
	r.moved()
	r.stats.call(c.id, "getAvatar", err, sentAt, r.cfg.Now())
	if e := r.log.Debug(); e.Enabled() {
		class := "ok"
		if err != nil {
			class = greenapi.ClassOf(err).String()
		}
		e.Str("instance", c.id).Int64("row", h.row.ID).Str("class", class).Dur("took", r.cfg.Now().Sub(sentAt)).
			AnErr("error", err).Msg("call")
	}
	if err == nil {
		r.failSuspects(c.answered(sentAt))
		av, source := r.existence(c, h, av)
		r.stats.exists(source)
		r.resolve(h, result{kind: resultDone, avatar: av, source: source, avatarSHA: r.keepAvatar(c, av)})
		return false
	}
	switch greenapi.ClassOf(err) {
	case greenapi.ClassStarting:
		c.pause(troubleStarting, err)
		r.cfg.Observer.Retry(c.id, "starting")
		r.rows.giveBack(h)
	case greenapi.ClassRateLimited:
		if down := c.throttled(r.dbCtx, sentAt, err); down != nil {
			r.instanceDown(c, down)
		}
		r.cfg.Observer.Retry(c.id, "rate_limited")
		r.rows.giveBack(h)
	case greenapi.ClassUnusable:
		r.instanceDown(c, unusableError(c.id, err))
		r.rows.giveBack(h)
		if r.cfg.Budget != nil && statusOf(err) == 466 {
			// Recorded, so later runs today skip the instance without a call.
			ctx, cancel := context.WithTimeout(r.dbCtx, r.cfg.DatabaseTimeout)
			if err := r.cfg.Budget.QuotaSpent(ctx, c.id, r.cfg.Day); err != nil {
				r.log.Warn().Str("instance", c.id).Err(err).Msg("recording the spent quota failed")
			}
			cancel()
		}
	case greenapi.ClassAvatarTimeout:
		r.failSuspects(c.answered(sentAt))
		r.reschedule(h, err)
	case greenapi.ClassInvalid:
		if ownRefusal(h.target, err) {
			// A length the seed did not document, refused: the number's answer, which says
			// nothing of the request's form.
			c.answeredOwn(sentAt)
			r.resolve(h, result{kind: resultFailed, reason: reasonOf(err), attempted: true})
			break
		}
		// Held back as a suspect: its row's failure, or with a run of them the request form's
		// (the run stops, and the rows go back untouched).
		c.invalid(h, err, sentAt)
		r.rows.settle()
	case greenapi.ClassTransient:
		systemic := greenapi.IsSystemic(err)
		if systemic && h.firstFail.IsZero() {
			h.firstFail = sentAt
		}
		if systemic && c.systemic(h.row.ID) {
			c.pause(troubleOutage, err)
			r.rows.giveBack(h)
			return false
		}
		if h.tries < r.cfg.RetryInRun {
			return true
		}
		if systemic && !c.aliveSince(h.firstFail) {
			// Nothing has shown the instance alive since this row began to fail: it may be
			// the instance's fault, so the row is not charged. The probe tells; a row that
			// fails again once the instance is known alive is charged then.
			c.pause(troubleOutage, err)
			r.rows.giveBack(h)
			return false
		}
		r.reschedule(h, err)
	default:
		// The call was cut (shutdown_grace is over): nobody's fault, the row goes back
		// untouched at the end of the run.
		r.rows.settle()
	}
	return false
}

// failSuspects resolves rows held back as suspects of a "bad request" answer as their own
// failures, with the API's words.
func (r *Runner) failSuspects(ss []suspect) {
	for _, s := range ss {
		r.rows.resolveHeld(s.h)
		r.w.add(result{h: s.h, kind: resultFailed, reason: reasonOf(s.err), attempted: true})
	}
}

// reschedule spends one of the row's attempts: it is due again after a backoff, or failed
// with the last reason once max_attempts are spent.
func (r *Runner) reschedule(h *held, err error) {
	reason := reasonOf(err)
	if h.row.Attempts+1 >= r.cfg.MaxAttempts {
		r.resolve(h, result{kind: resultFailed, reason: reason, attempted: true})
		return
	}
	r.resolve(h, result{kind: resultRetry, reason: reason, delay: r.cfg.Retry.Equal(h.row.Attempts, r.cfg.Rand)})
}

// resolve queues the result of a row taken from the rows (by a caller, or failed at its claim).
func (r *Runner) resolve(h *held, res result) {
	r.rows.resolve(h)
	res.h = h
	r.w.add(res)
}

// instanceDown takes an instance out of the run; with none left the run stops. Its suspects are
// their rows' own failures: the instance answered them.
func (r *Runner) instanceDown(c *controller, err error) { r.leave(c, err, false) }

// setAside takes out an instance that spent its daily cap (errCapped: logged at info, the run's
// own limit), or whose budget says it cannot work today (an error).
func (r *Runner) setAside(c *controller, err error) { r.leave(c, err, errors.Is(err, errCapped)) }

// leave takes an instance out of the run, once. With none left the run stops: with
// ErrNoInstance when any instance left for a fault, normally when every one spent its daily cap.
func (r *Runner) leave(c *controller, err error, capped bool) {
	if !c.fail(err) {
		return
	}
	if capped {
		r.log.Info().Str("instance", c.id).Err(err).Msg("instance set aside for the rest of the day")
	} else {
		r.log.Error().Str("instance", c.id).Err(err).Msg("instance taken out of the run")
	}
	if c.shared != nil {
		c.shared.keep.out.Store(true) // kept by nobody of this run: another run may want it
	}
	r.failSuspects(c.takeSuspects())
	r.mu.Lock()
	r.live--
	if !capped && r.out == nil {
		r.out = err
	}
	last, out := r.live == 0, r.out
	r.mu.Unlock()
	switch {
	case last && out != nil:
		// An instance a person must see to is never hidden by one that only spent its cap.
		r.cancelStop(fmt.Errorf("%w: %w", ErrNoInstance, out))
	case last:
		r.cancelStop(errDailyCap)
	}
	r.wakeClaimer()
}

// notAPhoneNumber begins every local refusal of a row, as phone.NotAPhoneNumber does.
const notAPhoneNumber = "not a phone number"

// targetOf validates the row's chat_id, else its phone_number; a row with neither or with
// a malformed one never reaches the API.
func targetOf(row store.Claimed) (greenapi.Target, error) {
	switch {
	case row.Invalid != nil:
		return greenapi.Target{}, row.Invalid
	case row.ChatID != nil:
		return greenapi.ParseChatID(*row.ChatID)
	case row.PhoneNumber != nil:
		return greenapi.ParsePhone(*row.PhoneNumber)
	}
	return greenapi.Target{}, &greenapi.InvalidTargetError{Why: "the row has neither phone_number nor chat_id"}
}

// localReason is what the reason column keeps for a row refused without a call: that it is not
// a phone number (or chatId), and why, in words of its own; never the API's "bad request data",
// which a row gets only from the API.
func localReason(err error) string {
	var ie *greenapi.InvalidTargetError
	if errors.As(err, &ie) {
		return notAPhoneNumber + ": " + ie.Why
	}
	if msg := err.Error(); strings.HasPrefix(msg, notAPhoneNumber) {
		return msg // phone.Normalize's own words (a source table's row)
	}
	return notAPhoneNumber + ": " + err.Error()
}

// ownRefusal reports whether an API's refusal is the row's own whatever came before it: "bad
// request data" for a number of other than the 11 or 12 digits the seed documents (Brazil's 13,
// Singapore's 10). An API that takes only those lengths refuses a list of such numbers one after
// another, and that says nothing of the request's form, so it never counts towards the detector
// of a refused form. Other words ("Validation failed. Details: 'chatId' is required") name the
// form, and count whatever the number.
func ownRefusal(t greenapi.Target, err error) bool {
	var ae *greenapi.Error
	return !t.IsZero() && !t.SeedLength() && errors.As(err, &ae) &&
		strings.Contains(strings.ToLower(ae.Reason), greenapi.ReasonBadRequestData)
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

// statusOf is the HTTP status of a failed call, or 0.
func statusOf(err error) int {
	var ae *greenapi.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// retryAfter is the server's Retry-After, or 0.
func retryAfter(err error) time.Duration {
	var ae *greenapi.Error
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}
