package enrich

import (
	"fmt"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// followIdle is where a follower (Config.Follow) with nothing held and nothing due waits: for a
// Wake (rows may have become due), PollInterval (a notification may have been dropped), a wake
// of the run's own (an instance resumed) or the stop. The watchdog does not count the wait:
// nothing could move in it. The stall clock starts again when it ends.
func (r *Runner) followIdle() {
	r.idle.Store(true)
	r.log.Debug().Str("poll_interval", r.cfg.PollInterval.String()).Msg("follow: nothing due: waiting for a notification or the poll")
	t := time.NewTimer(r.cfg.PollInterval)
	defer t.Stop()
	by := "notification"
	select {
	case <-r.cfg.Wake:
	case <-t.C:
		by = "poll"
	case <-r.wake:
		by = "run"
	case <-r.stop.Done():
		by = "stop"
	}
	r.moved()
	r.idle.Store(false)
	r.log.Debug().Str("by", by).Msg("follow: woken")
}

// Health is nil while the run moves, or idles as a follower with nothing to do, before it starts
// and once it has ended (a follower's caller may wait for the day to turn between two runs), and
// says how long nothing has moved once that is longer than StallTimeout: what the watchdog stops
// the run for. A liveness probe reads it, so that a process whose watchdog could not end the run
// is restarted all the same.
func (r *Runner) Health() error {
	if r.started.Load() == nil || r.finished.Load() {
		return nil
	}
	if idle, stalled := r.stalled(); stalled {
		return fmt.Errorf("%w: nothing moved for %v (run.stall_timeout %v)", ErrStalled, idle.Round(time.Second), r.cfg.StallTimeout)
	}
	return nil
}

// NextDayStart is when the day after the one t falls on begins, as day says (its zone and the
// wall-clock offset into the day): when an instance's daily cap, spent on t's day, is whole
// again. A follower whose every instance spent its cap waits until then.
func NextDayStart(t time.Time, day store.DayStart) (time.Time, error) {
	loc := time.UTC
	if day.Zone != "" {
		l, err := time.LoadLocation(day.Zone)
		if err != nil {
			return time.Time{}, fmt.Errorf("enrich: day time zone %q: %w", day.Zone, err)
		}
		loc = l
	}
	next := dayOf(t, loc, day).AddDate(0, 0, 1).Add(day.Offset)
	at := time.Date(next.Year(), next.Month(), next.Day(), next.Hour(), next.Minute(), next.Second(), 0, loc)
	if !at.After(t) { // a wall time the clocks skipped, moved back past t: a day later
		at = at.AddDate(0, 0, 1)
	}
	return at, nil
}
