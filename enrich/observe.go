package enrich

import (
	"errors"
	"time"
)

// Observer is told what a run does as it does it, so that metrics (package metrics) or a test
// can follow a run without the engine knowing about either. Its methods are called from the
// workers' hot path, concurrently: they must be safe for concurrent use and must not block.
type Observer interface {
	// Call is one API call to an instance: its method ("getAvatar", "getStateInstance"), its
	// outcome ("ok", or the failure's class: "rate_limited", "starting", "transient", ...) and
	// how long it took.
	Call(instance, method, outcome string, took time.Duration)
	// Rows is n rows written with a status: "done", "failed", "rescheduled", "released" (given
	// back untouched) or "lost" (fenced off by another run's claim).
	Rows(status string, n int64)
	// Retry is a row's call to be made again within the run: kind is "transient" (after a
	// backoff), "starting" or "rate_limited" (given back to the queue by a paused instance).
	Retry(instance, kind string)
}

// Snapshot is a run's state at one moment, for a progress bar and for gauges read at scrape time.
type Snapshot struct {
	// Summary is the run so far (its Stop is empty until the run ends).
	Summary Summary
	// Due is how many rows the run expects to finish: the rows due when it began, capped by
	// Limit; -1 while unknown (not yet counted, or the count failed).
	Due int64
	// InFlight is the number of calls in flight.
	InFlight int64
	// Instances are the run's instances, in configuration order.
	Instances []InstanceSnapshot
}

// Finished is how many rows reached a final or rescheduled state.
func (s Snapshot) Finished() int64 { return s.Summary.Done + s.Summary.Failed + s.Summary.Rescheduled }

// Left is how many of the due rows are still to finish; -1 when Due is unknown.
func (s Snapshot) Left() int64 {
	if s.Due < 0 {
		return -1
	}
	return max(s.Due-s.Finished(), 0)
}

// ETA is how long the rows left take at the run's rate so far; false while either is unknown.
func (s Snapshot) ETA() (time.Duration, bool) {
	rate, left := s.Summary.RowsPerSecond(), s.Left()
	if rate <= 0 || left < 0 {
		return 0, false
	}
	return time.Duration(float64(left) / rate * float64(time.Second)), true
}

// InstanceSnapshot is one instance's state and rate.
type InstanceSnapshot struct {
	ID string
	// State is "running", "paused" (starting, unreachable or throttled: its rows wait for the
	// others), "capped" (set aside for the rest of the day by its daily cap) or "out" (taken out
	// of the run).
	State string
	// Rate is the instance's current requests per second (shared by every run on it when the
	// run has a Budget).
	Rate float64
	// Headroom is the share by which its requests are spaced wider than 1/Rate, for jitter: 0.01
	// at first, more after 429s a minimum-gap server answered to requests that arrived early
	// (see pacer.go). It is what separates Rate from the requests per second a run gets.
	Headroom float64
}

// Instance states, as Snapshot and metrics name them.
const (
	StateRunning = "running"
	StatePaused  = "paused"
	StateCapped  = "capped"
	StateOut     = "out"
)

// InstanceStates lists every state an instance can be in, for gauges that show each one.
var InstanceStates = []string{StateRunning, StatePaused, StateCapped, StateOut}

// Snapshot returns the run's state now. It is safe to call at any time, from any goroutine,
// also before Run and after it returned.
func (r *Runner) Snapshot() Snapshot {
	s := Snapshot{
		Summary:  r.stats.summary(r.elapsed()),
		Due:      r.due.Load(),
		InFlight: r.stats.inFlight.Load(),
	}
	for _, c := range r.instances {
		s.Instances = append(s.Instances, c.snapshot())
	}
	return s
}

// snapshot is the instance's state and current rate.
func (c *controller) snapshot() InstanceSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := InstanceSnapshot{ID: c.id, Rate: c.pace.rate(), Headroom: headroomAt(c.pace.headroom, c.pace.cut, c.r.cfg.Now())}
	if c.shared != nil {
		s.Rate, s.Headroom = c.shared.rate, c.shared.headroom
	}
	switch c.state {
	case running:
		s.State = StateRunning
	case paused:
		s.State = StatePaused
	default:
		s.State = StateOut
		if errors.Is(c.downErr, errCapped) {
			s.State = StateCapped
		}
		s.Rate, s.Headroom = 0, 0
	}
	return s
}

// nopObserver is the Observer of a run that has none.
type nopObserver struct{}

func (nopObserver) Call(string, string, string, time.Duration) {}
func (nopObserver) Rows(string, int64)                         {}
func (nopObserver) Retry(string, string)                       {}
