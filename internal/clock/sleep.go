// Package clock holds the one piece of real time the engine and the simulator share: their
// default Sleep. Both take Sleep (and Now) as injected functions, so tests never wait on it.
package clock

import (
	"context"
	"time"
)

// Sleep waits d or until ctx is done, whichever is first, and returns ctx.Err() in the second
// case (and at once, when d is not positive).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
