package enrich

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// ErrStalled ends a run in which nothing moved (no answer from the API, no row written, no row
// claimed) for longer than its configuration allows for (Config.StallTimeout): a defect or a
// fault nobody owns, never a normal end. The run logs what each instance and each held row waits
// on, writes the answers it has, gives the rest back, and the CLI exits 4.
var ErrStalled = errors.New("run stalled")

// stallRowsLogged bounds how many held rows a stall report names one by one.
const stallRowsLogged = 50

// moved records that the run made progress now: an API answer about a row, rows written, rows
// claimed. The watchdog reads it.
func (r *Runner) moved() { r.lastMove.Store(r.cfg.Now().UnixNano()) }

// watch is the stall watchdog: it stops the run with ErrStalled once nothing has moved for
// StallTimeout, until done is closed. It checks every tenth of the timeout, so a stall is seen
// within 1.1 timeouts.
func (r *Runner) watch(done <-chan struct{}) {
	if r.cfg.StallTimeout < 0 {
		return
	}
	t := time.NewTicker(r.cfg.StallTimeout / 10)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-r.stop.Done():
			return
		case <-t.C:
		}
		idle, stalled := r.stalled()
		if !stalled {
			continue
		}
		r.reportStall(idle)
		r.cancelStop(fmt.Errorf("%w: nothing moved (no answer, no write, no claim) for %v, longer than run.stall_timeout %v allows",
			ErrStalled, idle.Round(time.Second), r.cfg.StallTimeout))
		return
	}
}

// stalled is how long nothing has moved, and whether that is longer than StallTimeout allows.
// An idle follower (nothing held, nothing due, waiting for a notification or its poll) and a run
// standing by (Runner.standingBy: other runs keep its instances) are never stalled: they have
// nothing that could move. A standby's wait counts from when it stops standing by.
func (r *Runner) stalled() (time.Duration, bool) {
	if r.idle.Load() {
		return 0, false
	}
	if r.standingBy() {
		r.moved()
		return 0, false
	}
	idle := r.cfg.Now().Sub(time.Unix(0, r.lastMove.Load()))
	return idle, r.cfg.StallTimeout >= 0 && idle >= r.cfg.StallTimeout
}

// reportStall logs what each instance and each held row waits on, so that a stall can be
// understood from the log alone.
func (r *Runner) reportStall(idle time.Duration) {
	for _, c := range r.instances {
		s := c.snapshot()
		c.mu.Lock()
		ev := r.log.Error().Str("instance", s.ID).Str("state", s.State).Float64("rate", s.Rate).
			Int("suspects", len(c.suspects))
		if c.shared != nil {
			ev = ev.Int64("slots_held", c.shared.held.Load()).Bool("reserving", c.shared.reserving)
		}
		if c.lastCause != nil {
			ev = ev.AnErr("last_trouble", c.lastCause)
		}
		if c.downErr != nil {
			ev = ev.AnErr("out", c.downErr)
		}
		c.mu.Unlock()
		ev.Msg("stalled: instance")
	}
	suspect := make(map[*held]bool)
	for _, c := range r.instances {
		c.mu.Lock()
		for _, s := range c.suspects {
			suspect[s.h] = true
		}
		c.mu.Unlock()
	}
	states, held, waiting, out := r.rows.snapshot(stallRowsLogged, suspect)
	arr := zerolog.Arr()
	for _, s := range states {
		arr.Dict(zerolog.Dict().Int64("id", s.id).Str("waits", s.waits).
			Str("lease_left", s.leaseLeft.Round(time.Second).String()))
	}
	r.log.Error().Str("idle", idle.Round(time.Second).String()).Int("held", held).
		Int("queued", waiting).Int("in_hand", out).Int64("in_flight", r.stats.inFlight.Load()).
		Int("slots_held", r.slotsHeld()).
		Array("rows", arr).Msg("stalled: nothing moved; stopping the run and releasing its rows")
}

// slotsHeld is how many send slots the run's instances hold, granted by the budget and not yet
// sent or given up.
func (r *Runner) slotsHeld() int {
	n := 0
	for _, c := range r.instances {
		if c.shared != nil {
			n += int(c.shared.held.Load())
		}
	}
	return n
}
