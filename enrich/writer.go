package enrich

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// writer batches results and writes them in one round trip each: when BatchSize results are
// queued, every FlushInterval, when the claimer asks, and always before the run returns.
// Writes run on a context a stop cannot cancel, so an answer received is never dropped by a
// signal; a write that keeps failing stops the run, and the rows stay leased until their lease
// expires, so nothing is corrupted.
type writer struct {
	r    *Runner
	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pending store.Batch
	n       int

	// flushing serializes flushes, so results are written in the order they were queued.
	flushing sync.Mutex
	err      error
}

// writeAttempts and writeBackoff bound how long a write retries a failing database before the
// run gives up on it.
const (
	writeAttempts = 4
	writeTimeout  = 30 * time.Second
)

var writeBackoff = Backoff{Base: 250 * time.Millisecond, Max: 4 * time.Second}

func newWriter(r *Runner) *writer {
	return &writer{r: r, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// add queues one result; add appends it to the batch under the writer's lock.
func (w *writer) add(add func(*store.Batch)) {
	w.mu.Lock()
	add(&w.pending)
	w.n++
	full := w.n >= w.r.cfg.BatchSize
	w.mu.Unlock()
	if full {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// release queues rows to give back untouched.
func (w *writer) release(ids ...int64) {
	if len(ids) == 0 {
		return
	}
	w.add(func(b *store.Batch) { b.Released = append(b.Released, ids...) })
}

// loop flushes until close; it returns the first write error.
func (w *writer) loop() error {
	defer close(w.done)
	t := time.NewTicker(w.r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.kick:
		case <-t.C:
		case <-w.quit:
			return w.flush()
		}
		if err := w.flush(); err != nil {
			w.r.cancelStop(err)
		}
	}
}

// close writes what is left and waits for the loop to end.
func (w *writer) close() error {
	close(w.quit)
	<-w.done
	w.flushing.Lock()
	defer w.flushing.Unlock()
	return w.err
}

// flush writes everything queued. On failure the batch is kept for the next flush, so a
// database that comes back in time loses nothing.
func (w *writer) flush() error {
	w.flushing.Lock()
	defer w.flushing.Unlock()
	w.mu.Lock()
	b, n := w.pending, w.n
	w.pending, w.n = store.Batch{}, 0
	w.mu.Unlock()
	if n == 0 {
		return w.err
	}
	var (
		got store.Written
		err error
	)
	ctx := context.WithoutCancel(w.r.stop)
	for attempt := range writeAttempts {
		if attempt > 0 {
			_ = w.r.cfg.Sleep(ctx, writeBackoff.Equal(attempt-1, w.r.cfg.Rand))
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		got, err = w.r.store.Write(wctx, w.r.cfg.Owner, b)
		cancel()
		if err == nil {
			break
		}
		w.r.log.Warn().Err(err).Int("results", n).Int("attempt", attempt+1).Msg("writing results failed")
	}
	if err != nil {
		w.mu.Lock()
		w.pending = merge(b, w.pending)
		w.n += n
		w.mu.Unlock()
		w.err = fmt.Errorf("%w: %w", ErrDatabase, err)
		return w.err
	}
	w.err = nil
	if lost := w.r.stats.written(b, got); lost > 0 {
		w.r.log.Warn().Int64("results", lost).
			Msg("results not written: another run holds those rows now (this run's lease expired; raise run.lease)")
	}
	return nil
}

// merge appends b's lists after a's.
func merge(a, b store.Batch) store.Batch {
	a.Done = append(a.Done, b.Done...)
	a.Retry = append(a.Retry, b.Retry...)
	a.Failed = append(a.Failed, b.Failed...)
	a.Released = append(a.Released, b.Released...)
	return a
}
