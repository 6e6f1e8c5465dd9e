package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/store"
)

// Reconnection of a follower's listener: it waits listenRetryMin after a failure, doubling up to
// listenRetryMax, and polls meanwhile (run.poll_interval), so a lost connection delays rows by at
// most the poll interval.
const (
	listenRetryMin = time.Second
	listenRetryMax = 30 * time.Second
)

// dayTurnMargin is how long after the day turns (greenapi.day_starts_at, on this machine's clock)
// a follower whose every instance spent its daily cap starts again: the budget counts days on the
// database's clock, and a follower that started before the database's day turned would find the
// caps still spent and sleep a whole day more.
const dayTurnMargin = time.Minute

// listen starts the listener of `enrich run --follow`: a connection of its own that LISTENs on
// store.NotifyChannel and wakes the run for every notification naming its table (wake never
// blocks; one pending wake is enough). It reconnects after a failure, logging once per episode;
// the run polls meanwhile. Behind a pooler in transaction mode LISTEN cannot work (the session is
// not the client's): it logs that once and returns a nil channel, and the run only polls. stop
// ends the listener and waits for it. It also starts the follower's hourly refresh (refreshLoop).
func (a *app) listen(ctx context.Context, st *store.Store) (wake <-chan struct{}, stop func()) {
	if !a.cfg.Run.Follow {
		return nil, func() {}
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { a.refreshLoop(lctx, st) })
	stop = func() { cancel(); wg.Wait() }
	if a.cfg.Database.Pooler == store.PoolerTransaction {
		a.log.Warn().Str("poll_interval", a.cfg.Run.PollInterval.String()).
			Msg("follow: behind a pooler in transaction mode (database.pooler) LISTEN does not work: " +
				"looking for due rows every run.poll_interval instead of at each notification")
		return nil, stop
	}
	ch := make(chan struct{}, 1)
	wg.Go(func() { a.listenLoop(lctx, st, ch) })
	return ch, stop
}

// listenLoop keeps a listener up until ctx ends.
func (a *app) listenLoop(ctx context.Context, st *store.Store, ch chan struct{}) {
	wait := listenRetryMin
	failing := false
	for {
		var listening atomic.Bool
		err := st.Listen(ctx, func() {
			if !listening.Swap(true) {
				// The first wake of a connection: it listens. Logged from here, the only place
				// that knows, at info when it mends a failure.
				ev := a.log.Debug()
				if failing {
					ev = a.log.Info()
				}
				ev.Str("channel", store.NotifyChannel).Str("table", st.Table()).Msg("follow: listening for rows becoming due")
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		})
		if ctx.Err() != nil {
			return
		}
		if listening.Load() {
			wait, failing = listenRetryMin, false
		}
		if !failing {
			a.log.Warn().Err(err).Str("poll_interval", a.cfg.Run.PollInterval.String()).
				Msg("follow: listening for notifications failed: looking for due rows every run.poll_interval until it listens again")
			failing = true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, listenRetryMax)
	}
}

// waitDayTurn waits until the day after now turns for the instances' daily caps
// (greenapi.day_starts_at and time_zone), plus dayTurnMargin, and reports whether it did: false
// when ctx ended first (a signal).
func (a *app) waitDayTurn(ctx context.Context) (bool, error) {
	day, err := a.cfg.day()
	if err != nil {
		return false, err
	}
	next, err := enrich.NextDayStart(time.Now(), day)
	if err != nil {
		return false, configErrorf("%v", err)
	}
	at := next.Add(dayTurnMargin)
	a.log.Info().Time("until", at).Msg("follow: every instance spent its daily cap: waiting for the day to turn, then following again")
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return false, nil
	}
}

// health is the run's liveness for /healthz: the current run's Health (enrich.Runner.Health:
// nothing moved for longer than run.stall_timeout, an idle follower excepted). A follower's
// runs follow one another (a new one each day its instances spent their caps); set says which.
type health struct {
	r atomic.Pointer[enrich.Runner]
}

func (h *health) set(r *enrich.Runner) { h.r.Store(r) }

// ServeHTTP answers 200 "ok", or 503 with the reason once the run is stalled: the stall watchdog
// ends such a run (exit 4); a liveness probe on /healthz restarts a process whose watchdog could
// not.
func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r := h.r.Load(); r != nil {
		if err := r.Health(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

// refreshEvery is how often a follower moves done rows due again (run.refresh_after,
// run.refresh_before_expiry) back to pending, and brings the state of a source that is a view
// in step, as a run does once before its first claim: a follower may stay up for weeks. Its next
// poll finds the rows.
const refreshEvery = time.Hour

// refreshLoop syncs a view source and refreshes every refreshEvery until ctx ends; a failure is
// logged and tried again at the next tick (the run itself goes on).
func (a *app) refreshLoop(ctx context.Context, st *store.Store) {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A view carries no triggers (nor notifications): this is how its new rows become due.
		if err := a.syncSource(ctx, st); err != nil && ctx.Err() == nil {
			a.log.Warn().Err(err).Msg("follow: syncing the source view failed; trying again in an hour")
		}
		if err := a.refresh(ctx, st); err != nil && ctx.Err() == nil {
			a.log.Warn().Err(err).Msg("follow: refresh failed; trying again in an hour")
		}
	}
}
