package enrich

import (
	"context"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/rs/zerolog"
)

// Summary is what a run did, for the closing log line and for tests. Row counts are rows the
// database actually changed: a result fenced off by a lost lease is counted in Lost instead.
type Summary struct {
	// Claimed rows, including rows claimed again after being given back.
	Claimed int64
	// Done rows got an answer; Failed rows are final (bad data or max_attempts spent).
	Done, Failed int64
	// Rescheduled rows spent an attempt and are due again later.
	Rescheduled int64
	// Released rows were given back untouched (stop, instance out, starting too long, or
	// claimed for instances that other runs turned out to keep).
	Released int64
	// Lost results were not written because another claim had taken the row over.
	Lost int64
	// Unwritten answers were received but could not be written: the database failed for longer
	// than RetryFor. Their rows come back when their lease expires.
	Unwritten int64
	// InvalidLocal rows failed local validation and never reached the API.
	InvalidLocal int64
	// Calls counts API calls by method and outcome ("getAvatar ok", "getAvatar rate_limited").
	Calls map[string]int64
	// RateLimited is the number of 429 answers.
	RateLimited int64
	// Existence counts the run's answers by where their exists_whatsapp came from (SourceAvatar,
	// SourceCheckWhatsapp, ...; "none" for a group whose answer says nothing of it), counted as
	// answered: a result later lost to another claim is still here.
	Existence map[string]int64
	// ExistsUnknown is those answers of personal rows whose existence stays unknown and that a
	// later run completes: Existence's SourceUnchecked.
	ExistsUnknown int64
	// Elapsed is the run's wall time.
	Elapsed time.Duration
	// Stop says why the run ended.
	Stop string
}

// RowsPerSecond is the rate at which rows reached a final or rescheduled state.
func (s Summary) RowsPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Done+s.Failed+s.Rescheduled) / s.Elapsed.Seconds()
}

// MarshalZerologObject writes the summary as fields of one log line.
func (s Summary) MarshalZerologObject(e *zerolog.Event) {
	e.Int64("done", s.Done).Int64("failed", s.Failed).Int64("rescheduled", s.Rescheduled).
		Int64("released", s.Released).Int64("claimed", s.Claimed).Int64("invalid_local", s.InvalidLocal).
		Int64("lost", s.Lost).Int64("unwritten", s.Unwritten).Int64("rate_limited", s.RateLimited).
		Str("elapsed", s.Elapsed.Round(time.Millisecond).String()).
		Float64("rows_per_second", math.Round(s.RowsPerSecond()*10)/10).Str("stop", s.Stop)
	keys := make([]string, 0, len(s.Calls))
	for k := range s.Calls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	d := zerolog.Dict()
	for _, k := range keys {
		d.Int64(k, s.Calls[k])
	}
	e.Dict("calls", d)
	ex := zerolog.Dict()
	for _, k := range sortedKeys(s.Existence) {
		ex.Int64(k, s.Existence[k])
	}
	e.Dict("existence", ex).Int64("exists_unknown", s.ExistsUnknown)
}

// sortedKeys is m's keys in order, for stable output.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stats are the run's counters, safe for every worker at once.
type stats struct {
	claimed, done, failed, rescheduled, released, lost, invalidLocal atomic.Int64
	// inFlight counts calls made and not yet answered.
	inFlight atomic.Int64
	obs      Observer

	mu        sync.Mutex
	calls     map[string]int64
	existence map[string]int64
}

func newStats(obs Observer) *stats {
	return &stats{calls: make(map[string]int64), existence: make(map[string]int64), obs: obs}
}

// exists counts one answer by the source of its exists_whatsapp ("" for a group that says
// nothing of it).
func (s *stats) exists(source string) {
	if source == "" {
		source = "none"
	}
	s.mu.Lock()
	s.existence[source]++
	s.mu.Unlock()
}

// call counts one API call to instance by its outcome, begun at start and answered at end.
func (s *stats) call(instance, method string, err error, start, end time.Time) {
	outcome := "ok"
	if err != nil {
		outcome = "canceled"
		if c := greenapi.ClassOf(err); c != 0 {
			outcome = c.String()
		}
	}
	s.mu.Lock()
	s.calls[method+" "+outcome]++
	s.mu.Unlock()
	s.obs.Call(instance, method, outcome, end.Sub(start))
}

// written counts what a write changed, and returns how many results it lost to the fence.
func (s *stats) written(b store.Batch, got store.Written) int64 {
	s.done.Add(got.Done)
	s.failed.Add(got.Failed)
	s.rescheduled.Add(got.Retried)
	s.released.Add(got.Released)
	lost := int64(b.Len()) - got.Total()
	s.lost.Add(lost)
	s.obs.Rows("done", got.Done)
	s.obs.Rows("failed", got.Failed)
	s.obs.Rows("rescheduled", got.Retried)
	s.obs.Rows("released", got.Released)
	s.obs.Rows("lost", lost)
	return lost
}

func (s *stats) summary(elapsed time.Duration) Summary {
	s.mu.Lock()
	calls := make(map[string]int64, len(s.calls))
	for k, v := range s.calls {
		calls[k] = v
	}
	existence := make(map[string]int64, len(s.existence))
	for k, v := range s.existence {
		existence[k] = v
	}
	s.mu.Unlock()
	return Summary{
		Claimed: s.claimed.Load(), Done: s.done.Load(), Failed: s.failed.Load(),
		Rescheduled: s.rescheduled.Load(), Released: s.released.Load(), Lost: s.lost.Load(),
		InvalidLocal: s.invalidLocal.Load(), Calls: calls,
		RateLimited: calls["getAvatar "+greenapi.ClassRateLimited.String()],
		Existence:   existence, ExistsUnknown: existence[SourceUnchecked],
		Elapsed: elapsed,
	}
}

// progress logs a line every ProgressInterval until the run's calls end: rows finished, the
// rate, and an ETA from the rows that were due when the run began.
func (r *Runner) progress() {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-r.calls.Done():
			return
		case <-t.C:
		}
		snap := r.Snapshot()
		s := snap.Summary
		ev := r.log.Info().Int64("done", s.Done).Int64("failed", s.Failed).
			Int64("rescheduled", s.Rescheduled).Int64("rate_limited", s.RateLimited).
			Float64("rows_per_second", math.Round(s.RowsPerSecond()*10)/10)
		if eta, ok := snap.ETA(); ok {
			ev = ev.Int64("left", snap.Left()).Str("eta", eta.Round(time.Second).String())
		}
		ev.Msg("progress")
	}
}

// countDue counts the rows due as the run begins, for Snapshot's Due and the ETA.
func (r *Runner) countDue() {
	ctx, cancel := context.WithTimeout(r.calls, r.cfg.DatabaseTimeout)
	defer cancel()
	due, err := r.store.Due(ctx)
	if err != nil {
		r.log.Debug().Err(err).Msg("counting due rows for the ETA failed")
		return
	}
	if r.cfg.Limit > 0 {
		due = min(due, int64(r.cfg.Limit))
	}
	r.due.Store(due)
}
