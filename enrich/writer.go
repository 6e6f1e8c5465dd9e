package enrich

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
)

// resultKind is what a result does to its row.
type resultKind uint8

const (
	resultDone resultKind = iota + 1
	resultRetry
	resultFailed
	resultReleased
)

// result is one row's outcome, waiting to be written through the row's current claim.
type result struct {
	h      *held
	kind   resultKind
	avatar greenapi.Avatar
	// source is where a done row's exists_whatsapp came from (SourceGetAvatar, SourceCheckWhatsapp).
	source string
	// avatarSHA names the image kept for avatar's link ("" when none was kept).
	avatarSHA string
	reason    string
	// delay is a retry's wait; attempted says a failure spent an API call.
	delay     time.Duration
	attempted bool
}

// writer batches results and writes them in one round trip each: when BatchSize results are
// queued, every FlushInterval, when the claimer asks, and always before the run returns. Writes
// run on a context a stop cannot cancel, so an answer received is never dropped by a signal, and
// each has its own deadline. A database that fails with a retryable error is retried with backoff
// for RetryFor, the results kept in memory meanwhile (no more than the rows the run holds, which
// claimLimit bounds); past that the run stops with ErrDatabase.
type writer struct {
	r    *Runner
	kick chan struct{}
	// quit carries the final write's deadline to the loop.
	quit chan time.Time

	mu      sync.Mutex
	pending []result

	// flushing serializes flushes, so results are written in the order they were queued, and
	// guards the fields below. It is held across database calls.
	flushing turnLock
	retry    dbRetry
	// wait is how long the loop waits after a failed write before the next.
	wait time.Duration
	// err is the failure that outlasted RetryFor (or could not be retried): the run's exit is
	// then ErrDatabase even if a later write succeeds.
	err error
}

func newWriter(r *Runner) *writer {
	return &writer{r: r, kick: make(chan struct{}, 1), quit: make(chan time.Time), flushing: make(turnLock, 1)}
}

// turnLock is a mutex made of a channel, for a lock held across a database call: a goroutine
// waiting for it is durably blocked, so the engine runs in a testing/synctest bubble (a
// goroutine waiting for a sync.Mutex is not, and the bubble's clock would stand still while
// the holder waits for its call's fake time to pass).
type turnLock chan struct{}

func (l turnLock) Lock()   { l <- struct{}{} }
func (l turnLock) Unlock() { <-l }

// add queues one result.
func (w *writer) add(res result) {
	w.mu.Lock()
	w.pending = append(w.pending, res)
	full := len(w.pending) >= w.r.cfg.BatchSize
	w.mu.Unlock()
	if full {
		w.hurry()
	}
}

// hurry has the loop flush now, not at its next tick.
func (w *writer) hurry() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// release queues rows to give back untouched, and has them written at once: rows given back
// are for other runs, whose instances may be waiting for them.
func (w *writer) release(hs []*held) {
	for _, h := range hs {
		w.add(result{h: h, kind: resultReleased})
	}
	w.hurry()
}

// loop flushes until close.
func (w *writer) loop() {
	t := time.NewTicker(w.r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.kick:
		case <-t.C:
		case deadline := <-w.quit:
			w.final(deadline)
			return
		}
		if !w.flush() {
			w.flushing.Lock()
			wait := w.wait
			w.flushing.Unlock()
			select {
			case <-time.After(wait):
			case deadline := <-w.quit:
				w.final(deadline)
				return
			}
		}
	}
}

// close writes what is left, retrying until deadline, and ends the loop.
func (w *writer) close(deadline time.Time) { w.quit <- deadline }

// final flushes until everything is written or deadline passes, a database backoff apart at
// least: a failure not worth retrying leaves no wait, and without the floor the last write
// would hammer the database in a hot loop until the deadline.
func (w *writer) final(deadline time.Time) {
	for !w.flushBy(deadline) {
		w.flushing.Lock()
		wait := max(w.wait, dbBackoff.Base)
		w.flushing.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(wait, left))
	}
}

// flush writes everything queued; see flushBy.
func (w *writer) flush() bool { return w.flushBy(time.Time{}) }

// flushBy writes everything queued in one round trip, within DatabaseTimeout (and before
// deadline, when not zero). It reports whether nothing is left to write. On failure the results
// are kept for the next flush, so a database that comes back in time loses nothing.
func (w *writer) flushBy(deadline time.Time) bool {
	w.flushing.Lock()
	defer w.flushing.Unlock()
	w.mu.Lock()
	batch := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(batch) == 0 {
		return true
	}
	b, leases := w.batch(batch)
	start := time.Now()
	until := start.Add(w.r.cfg.DatabaseTimeout)
	if !deadline.IsZero() && deadline.Before(until) {
		until = deadline
	}
	ctx, cancel := context.WithDeadline(w.r.dbCtx, until)
	defer cancel()
	got, err := w.r.store.Write(ctx, w.r.cfg.Owner, b)
	if err != nil {
		w.mu.Lock()
		w.pending = append(batch, w.pending...)
		w.mu.Unlock()
		wait, retry := w.retry.failed(err, w.r.cfg.Now(), w.r.cfg.RetryFor, w.r.cfg.Rand)
		w.wait = wait
		switch {
		case w.r.dbCtx.Err() != nil:
			// The final deadline cut it: the run is ending, and says what was left.
		case !retry && w.err == nil:
			w.err = fmt.Errorf("%w: write results: %w", ErrDatabase, err)
			w.r.log.Error().Err(err).Int("results", len(batch)).Str("retry_for", w.r.cfg.RetryFor.String()).
				Msg("writing results failed for good: stopping the run")
			w.r.cancelStop(w.err)
		case retry && w.retry.n == 1:
			w.r.log.Warn().Err(err).Int("results", len(batch)).Str("retry_for", w.r.cfg.RetryFor.String()).
				Msg("writing results failed: keeping them and retrying")
		}
		return false
	}
	if down := w.retry.ok(w.r.cfg.Now()); down > 0 {
		w.r.log.Info().Str("after", down.Round(time.Millisecond).String()).Int("results", len(batch)).
			Msg("the database is back: results written")
	}
	if len(batch) > 0 {
		w.r.moved()
	}
	if e := w.r.log.Debug(); e.Enabled() {
		e.Int("results", len(batch)).Dur("took", time.Since(start)).Msg("results written")
	}
	if lost := w.r.stats.written(b, got); lost > 0 {
		w.r.log.Warn().Int64("results", lost).
			Msg("results not written: the rows are no longer this run's (its lease on them lapsed and another claim holds them, or a source table's row was deleted)")
	}
	// A row this run claimed again while the write was on its way (its lease had lapsed) is held
	// under the newer claim, which the write did not name: that claim is given back too, or the
	// row would stay leased to the run, unanswered, until the lease expired.
	hs := make([]*held, len(batch))
	for i, res := range batch {
		hs[i] = res.h
	}
	if again := w.r.rows.written(hs, leases); len(again) > 0 {
		rel := make([]result, len(again))
		for i, h := range again {
			rel[i] = result{h: h, kind: resultReleased}
		}
		w.mu.Lock()
		w.pending = append(rel, w.pending...)
		w.mu.Unlock()
		w.wait = 0
		return false
	}
	return true
}

// batch turns results into a store.Batch through each row's current claim, and returns the
// claim each result was written through.
func (w *writer) batch(results []result) (store.Batch, []store.Lease) {
	var b store.Batch
	leases := make([]store.Lease, len(results))
	for i, res := range results {
		lease := w.r.rows.leaseOf(res.h)
		leases[i] = lease
		switch res.kind {
		case resultDone:
			b.Done = append(b.Done, store.Done{Lease: lease, ExistsWhatsapp: res.avatar.ExistsWhatsapp,
				AvatarAvailable: res.avatar.Available, URLAvatar: res.avatar.URLAvatar, ExistsSource: res.source, AvatarSHA256: res.avatarSHA,
				URLExpiresAt: linkExpiry(res.avatar.URLAvatar)})
		case resultRetry:
			b.Retry = append(b.Retry, store.Retry{Lease: lease, Reason: res.reason, Delay: res.delay})
		case resultFailed:
			b.Failed = append(b.Failed, store.Failure{Lease: lease, Reason: res.reason, Attempted: res.attempted})
		case resultReleased:
			b.Released = append(b.Released, lease)
		}
	}
	return b, leases
}

// unwritten counts the results still queued, and of them the answers (not the give-backs):
// after the final write, what the database never took.
func (w *writer) unwritten() (answers int64, all int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, res := range w.pending {
		if res.kind != resultReleased {
			answers++
		}
	}
	return answers, len(w.pending)
}

// failure is the database failure that stopped the run, or nil.
func (w *writer) failure() error {
	w.flushing.Lock()
	defer w.flushing.Unlock()
	return w.err
}

// linkExpiry is the link's expiry for store.Done: nil when it has none (greenapi.LinkExpiry), so
// the row is refreshed by age alone.
func linkExpiry(link string) *time.Time {
	at, ok := greenapi.LinkExpiry(link)
	if !ok {
		return nil
	}
	return &at
}
