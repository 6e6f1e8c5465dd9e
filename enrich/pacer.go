package enrich

import "time"

// The pacing policy. A Green API instance may take its rps, but how it counts is not documented:
// a token bucket, or (the strictest reading) a minimum gap of 1/rps between requests. Requests
// leave the client evenly spaced and arrive with network jitter, so a client spaced at exactly
// 1/rps draws 429s from a minimum-gap server; and when anything else spends the same budget (a
// second process, a person testing in the console), only the 429s tell. So the pacer
//   - spaces requests by their actual send times, never by a schedule a late wake-up could
//     compress, with a headroom for jitter;
//   - cuts the rate multiplicatively on a 429 (once per round of requests sent at the old rate),
//     down to a floor, and honours Retry-After for the whole instance;
//   - climbs back additively to the configured rate once no 429 has come for a quiet period;
//   - learns the jitter: every cut widens the headroom by a step, and it narrows back a step at
//     a time while no 429 comes. The jitter between two requests' journeys is the path's (a
//     busy machine, a far network), so the 429 a jitter of 3 ms draws at a headroom of 1.5 ms
//     would come back every few seconds at the full rate, each costing a cut; a wider headroom
//     costs a share of the budget instead.
const (
	// paceHeadroom is the least headroom, where every instance starts: every gap is widened by
	// this share of it. At 10 rps, 1.5 ms of jitter between two requests' journeys costs no 429
	// against a minimum-gap server, and 0.985 of the budget is spent against a token bucket.
	paceHeadroom = 0.01
	// headroomStep is how much one cut widens the headroom (1.5 ms more at 10 rps), and how
	// much it narrows back every headroomEase without a cut.
	headroomStep = 0.015
	// headroomMax bounds the headroom: 12 ms at 10 rps, past any jitter short of an outage.
	headroomMax = 0.12
	// headroomEase is how long without a cut narrows the headroom by a step: from headroomMax
	// back to paceHeadroom in 7 minutes, when a 429 costs about the slots a minute's step of
	// headroom does.
	headroomEase = time.Minute
	// rateCut is the multiplicative decrease on a 429: gentle, because against a minimum-gap
	// server a lone 429 is jitter, and it cuts once per round of requests, so a server answering
	// nothing but 429 still brings the rate to the floor within seconds.
	rateCut = 0.85
	// rateFloorShare is the lowest rate, as a share of the configured one: a server answering
	// nothing but 429 gets a request every 2 s at 10 rps, not a storm.
	rateFloorShare = 0.05
	// rateQuiet is how long after the last cut the rate starts to climb back.
	rateQuiet = 3 * time.Second
	// rateStep is how much of the configured rate one climb adds, once per rateStepEvery: from a
	// cut back to the full rate in 1.5 s.
	rateStep      = 0.05
	rateStepEvery = 500 * time.Millisecond
)

// pacer spaces one instance's requests. It is not safe for concurrent use (the instance's
// controller guards it) and takes the time explicitly in every method, so its policy is tested
// without a clock.
type pacer struct {
	max, cur, floor float64
	// last is when the last request left; zero before the first.
	last time.Time
	// notBefore is the end of a Retry-After pause.
	notBefore time.Time
	// cut is when the rate was last cut, raised when it last climbed.
	cut, raised time.Time
	// headroom is the headroom as the last cut left it (0 before any): headroomAt eases it.
	headroom float64
}

func newPacer(rps float64) pacer {
	return pacer{max: rps, cur: rps, floor: rps * rateFloorShare}
}

// rate is the current requests per second.
func (p *pacer) rate() float64 { return p.cur }

// gap is the least time between two requests at the current rate and headroom, as of now.
func (p *pacer) gap(now time.Time) time.Duration {
	return time.Duration(float64(time.Second) / p.cur * (1 + headroomAt(p.headroom, p.cut, now)))
}

// headroomAt is the headroom as of now, when the cut at cut left it at h: a step narrower for
// every headroomEase since, never below paceHeadroom. The shared budget's SQL (store's
// sqlReserve and sqlThrottled) computes the same from the policy.
func headroomAt(h float64, cut, now time.Time) float64 {
	if h <= paceHeadroom {
		return paceHeadroom
	}
	return max(paceHeadroom, h-headroomStep*float64(now.Sub(cut)/headroomEase))
}

// next is the earliest time, as of now, the next request may leave. It is also where the rate
// climbs back after a quiet period.
func (p *pacer) next(now time.Time) time.Time {
	if p.cur < p.max && now.Sub(p.cut) >= rateQuiet && now.Sub(p.raised) >= rateStepEvery {
		p.cur = min(p.max, p.cur+p.max*rateStep)
		p.raised = now
	}
	at := now
	if !p.last.IsZero() {
		at = later(at, p.last.Add(p.gap(now)))
	}
	return later(at, p.notBefore)
}

// sent records that a request left at now.
func (p *pacer) sent(now time.Time) { p.last = now }

// throttled records a 429 at now for a request that left at sentAt, with the server's
// Retry-After (0 when none). One round of requests sent at the old rate cuts the rate once, and
// widens the headroom once: the 429s of requests that left before the last cut only extend a
// Retry-After pause.
func (p *pacer) throttled(sentAt, now time.Time, retryAfter time.Duration) {
	if retryAfter > 0 {
		p.notBefore = later(p.notBefore, now.Add(retryAfter))
	}
	if sentAt.Before(p.cut) {
		return
	}
	p.cur = max(p.floor, p.cur*rateCut)
	p.headroom = min(headroomMax, headroomAt(p.headroom, p.cut, now)+headroomStep)
	p.cut, p.raised = now, now
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
