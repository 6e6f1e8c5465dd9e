package enrich

import (
	"context"
	"errors"
	"sync"
	"time"
)

// dispatch is one instance's dispatcher, the only goroutine that sends on the instance: it
// waits for a free caller (at most Workers calls in flight), for the instance to run, for a
// callable row and for the instance's next send slot, in that order, then takes the row at
// the slot and hands (row, slot) to a caller of its own. So a row waits only in the queue,
// where every instance can see it, never behind one instance's slot; an instance waiting for
// rows holds nothing another needs; and a paused instance's dispatcher holds no row. It returns
// when nothing is left for any instance (rows.finished), the instance is out, or the run stops,
// once its calls have ended.
func (r *Runner) dispatch(c *controller) {
	callers := make(chan struct{}, r.cfg.Workers)
	var calls sync.WaitGroup
	defer calls.Wait()
	for {
		select {
		case callers <- struct{}{}:
		case <-r.working.Done():
			return
		}
		h, sentAt, err := c.next(r.working)
		if err != nil {
			return // the instance is out, the run is stopping, or nothing is left
		}
		calls.Go(func() {
			defer func() { <-callers }()
			r.serve(c, h, sentAt)
		})
	}
}

// serve is one caller: it makes h's call, sent at sentAt, and acts on the answer. A row whose
// call failed transiently waits out its backoff without a caller, then goes back to the
// queue, for whichever instance can send first.
func (r *Runner) serve(c *controller, h *held, sentAt time.Time) {
	if !r.call(c, h, sentAt) {
		return
	}
	r.cfg.Observer.Retry(c.id, "transient")
	h.tries++
	wait := r.cfg.Retry.Full(h.tries-1, r.cfg.Rand)
	r.retries.Go(func() {
		if r.cfg.Sleep(r.stop, wait) != nil {
			r.rows.settle() // the run is stopping: the row goes back untouched at its end
			return
		}
		r.rows.giveBack(h)
	})
}

// next waits until the instance may send and a row may be called, and returns the row, taken
// at the instance's send slot, and the time it is sent. It returns errInstanceDown once the
// instance is out, errNoRows once nothing is left, or ctx's error.
func (c *controller) next(ctx context.Context) (*held, time.Time, error) {
	rs := c.r.rows
	for {
		if err := ctx.Err(); err != nil {
			return nil, time.Time{}, err
		}
		c.mu.Lock()
		state, open, changed := c.state, c.open, c.changed
		c.mu.Unlock()
		switch state {
		case down:
			return nil, time.Time{}, errInstanceDown
		case paused:
			select {
			case <-open:
			case <-c.gone:
			case <-rs.finished:
				return nil, time.Time{}, errNoRows
			case <-ctx.Done():
			}
			continue
		}
		// A row first, then a slot: an idle instance takes no slots from the budget's other
		// runs, and a slot met is one sent.
		wake, ok := rs.ready()
		if !ok {
			// An instance another run keeps gets no rows from the claimer: it looks itself when
			// the keeper's bookings may end.
			var peek <-chan time.Time
			stop := func() bool { return false }
			if c.shared != nil && c.shared.keep.gone.Load() {
				t := time.NewTimer(c.shared.keep.away(c.r.cfg.Now()))
				peek, stop = t.C, t.Stop
			}
			select {
			case <-wake:
			case <-changed:
			case <-peek:
				c.peek(ctx)
			case <-rs.finished:
				stop()
				return nil, time.Time{}, errNoRows
			case <-ctx.Done():
			}
			stop()
			continue
		}
		if err := c.waitSlot(ctx); err != nil {
			if errors.Is(err, errPaused) || errors.Is(err, errNoRow) {
				continue
			}
			return nil, time.Time{}, err
		}
		h := rs.take()
		if h == nil {
			continue // another instance took it: the slot stays this instance's
		}
		if c.r.endGame() {
			c.r.wakeClaimer() // a row to claim again at once (Runner.claim)
		}
		sentAt, err := c.sent()
		if err != nil {
			rs.giveBack(h)
			continue
		}
		return h, sentAt, nil
	}
}
