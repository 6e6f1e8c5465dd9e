package enrich

import "time"

// Backoff spaces out retries exponentially from Base, never beyond Max. Two spreads are offered
// because two jobs need them: retries inside a run want full jitter (many workers retrying a
// flapping server must not move in step), a row rescheduled for later wants a floor, so that it
// is not due again at once.
type Backoff struct {
	// Base is the first step. Default (in Config): 1s.
	Base time.Duration
	// Max caps every step. Default (in Config): 5m for rescheduling, 30s for starting probes.
	Max time.Duration
}

// ceiling is Base·2^n capped at Max, without overflowing for large n.
func (b Backoff) ceiling(n int) time.Duration {
	d := b.Base
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	return d
}

// Full is a full-jitter delay for the n-th retry (n from 0): uniform in [0, Base·2^n], capped
// at Max. rnd returns a number in [0, 1).
func (b Backoff) Full(n int, rnd func() float64) time.Duration {
	return time.Duration(rnd() * float64(b.ceiling(n)))
}

// Equal is an equal-jitter delay for the n-th retry: uniform in [c/2, c] with c = Base·2^n
// capped at Max, so a rescheduled row waits at least half its step.
func (b Backoff) Equal(n int, rnd func() float64) time.Duration {
	c := b.ceiling(n)
	return c/2 + time.Duration(rnd()*float64(c/2))
}
