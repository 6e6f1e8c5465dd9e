package enrich_test

import (
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := enrich.Backoff{Base: time.Second, Max: 30 * time.Second}
	at := func(x float64) func() float64 { return func() float64 { return x } }
	for _, tc := range []struct {
		n         int
		rnd       float64
		full, eq  time.Duration
		rationale string
	}{
		{0, 0, 0, 500 * time.Millisecond, "full jitter may be zero; equal jitter keeps half the step"},
		{0, 0.999999, 999999 * time.Microsecond, 999999500 * time.Nanosecond, "below the first step"},
		{1, 0.5, time.Second, 1500 * time.Millisecond, "the step doubles"},
		{4, 0.5, 8 * time.Second, 12 * time.Second, "16 s step"},
		{5, 0.5, 15 * time.Second, 22500 * time.Millisecond, "32 s is capped at 30 s"},
		{200, 0.5, 15 * time.Second, 22500 * time.Millisecond, "no overflow for large n"},
	} {
		if got := b.Full(tc.n, at(tc.rnd)); got != tc.full {
			t.Errorf("Full(%d, %v) = %v, want %v (%s)", tc.n, tc.rnd, got, tc.full, tc.rationale)
		}
		if got := b.Equal(tc.n, at(tc.rnd)); got != tc.eq {
			t.Errorf("Equal(%d, %v) = %v, want %v (%s)", tc.n, tc.rnd, got, tc.eq, tc.rationale)
		}
	}
}
