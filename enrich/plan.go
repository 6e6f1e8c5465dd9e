package enrich

import (
	"math"
	"time"
)

// PlanInstance is one instance as Estimate sees it: its configuration and what its shared budget
// says now (store.InstanceBudget), so that `enrich plan` can say how long the rows due take
// before a run spends anything.
type PlanInstance struct {
	// ID is the idInstance, named in the estimate.
	ID string
	// RPS is the instance's configured rate (Instance.RPS), the ceiling a cut rate climbs back
	// to. It must be above 0.
	RPS float64
	// Rate is the shared budget's rate as a run reserving now would find it; 0 (no run used the
	// instance yet): RPS. A rate cut by 429s climbs back by rateStep of RPS every
	// rateStepEvery, as the budget does.
	Rate float64
	// Headroom is the share by which the budget widens the instance's slots now; 0: the least
	// (paceHeadroom). It narrows by headroomStep every headroomEase, as the budget eases it.
	Headroom float64
	// MaxPerDay caps the slots of the instance's day (0: no cap), of which UsedToday are spent.
	MaxPerDay, UsedToday int64
	// QuotaSpent says the instance answered 466 today: runs skip it until the day turns.
	QuotaSpent bool
	// Out says the instance cannot work at all (GetStateInstance said it is not authorized, or
	// could not be asked): it takes no row.
	Out bool
}

// PlanInput is everything Estimate needs, explicitly: the same figures `enrich plan` reads from
// the table, the shared budget and the configuration, so the arithmetic is tested alone.
type PlanInput struct {
	// Due is the rows a run would work off now.
	Due int64
	// Instances are the configured instances.
	Instances []PlanInstance
	// Workers is the concurrent calls per instance (Config.Workers); 0: WorkersDefault.
	Workers int
	// Latency is how long one call takes. The workers bound an instance at Workers/Latency
	// requests a second, the bottleneck only when that is below its rate; and the last answer
	// comes Latency after the last request. 0: not known, not modeled (16 workers keep 10 rps
	// busy up to 1.6 s a call).
	Latency time.Duration
	// MaxDuration is the run's limit (Config.MaxDuration); 0: none.
	MaxDuration time.Duration
}

// InstanceEstimate is one instance's share of the estimate.
type InstanceEstimate struct {
	// ID is PlanInstance.ID, so the estimate names the instance it is about.
	ID string
	// RowsPerSecond is the instance's rate once it has climbed back and its headroom eased: one
	// request per slot (1/rps widened by the least headroom, rounded up to the microsecond as
	// the budget rounds it), or Workers/Latency when that is lower (WorkersBound).
	RowsPerSecond float64
	// WorkersBound says Workers/Latency, not the slots, sets RowsPerSecond: more workers (or a
	// faster path) would send more.
	WorkersBound bool
	// Left is the slots left of its day (MaxPerDay - UsedToday; 0 when its quota is spent);
	// -1: no cap.
	Left int64
	// Rows is how many of the rows due it sends.
	Rows int64
	// Out is PlanInstance.Out, or a quota spent: it takes no row today.
	Out bool
}

// PlanEstimate is what Estimate says of the rows due.
type PlanEstimate struct {
	// Due is PlanInput.Due: the estimate says what it was made for.
	Due int64
	// Sent is how many of them the run sends before it stops: all, unless the daily caps and
	// quotas leave CappedRows for another day.
	Sent, CappedRows int64
	// RowsPerSecond is the instances' summed rate (InstanceEstimate.RowsPerSecond).
	RowsPerSecond float64
	// ETA is how long sending Sent rows takes, from the first slot to the last answer.
	ETA time.Duration
	// Fits says the ETA is within MaxDuration (always, with none); when not, WithinMaxDuration
	// is how many rows a run sends before MaxDuration stops it.
	Fits              bool
	WithinMaxDuration int64
	// NoInstance says no instance can take a row (every one is out): nothing is sent.
	NoInstance bool
	Instances  []InstanceEstimate
}

// Estimate is the ETA of in.Due rows: each instance sends one request per slot of its shared
// budget, summed across instances, until its daily cap is spent (see the slots of sqlReserve:
// 1/rate widened by the headroom, rounded up to the microsecond), with a cut rate climbing back
// and a wide headroom easing as the budget does; the workers limit an instance only when
// Workers/Latency is below its rate. Not modeled: retries and timeouts (each row is one call),
// CheckWhatsapp (its own budget), other processes spending the same instances, and a day
// turning during the run.
func Estimate(in PlanInput) PlanEstimate {
	workers := in.Workers
	if workers <= 0 {
		workers = WorkersDefault
	}
	var bound float64 // the workers' requests a second per instance; 0: none
	if in.Latency > 0 {
		bound = float64(workers) / in.Latency.Seconds()
	}
	est := PlanEstimate{Due: in.Due, Fits: true}
	var paces []pace
	var lefts []float64
	paceOf := make([]int, len(in.Instances)) // each instance's index in paces; -1: none
	capacity, unlimited := int64(0), false
	for i, pi := range in.Instances {
		paceOf[i] = -1
		ie := InstanceEstimate{ID: pi.ID, Left: 0, Out: true}
		if !(pi.RPS > 0) || math.IsInf(pi.RPS, 0) || pi.Out {
			// Out, or a rate the engine refuses: the instance takes no row.
			est.Instances = append(est.Instances, ie)
			continue
		}
		p := newPace(pi, bound)
		ie.RowsPerSecond, ie.WorkersBound = p.steady(), bound > 0 && bound < slotRate(pi.RPS, paceHeadroom)
		switch {
		case pi.QuotaSpent:
		case pi.MaxPerDay > 0:
			ie.Left, ie.Out = max(0, pi.MaxPerDay-pi.UsedToday), false
			capacity += ie.Left
		default:
			ie.Left, ie.Out, unlimited = -1, false, true
		}
		est.Instances = append(est.Instances, ie)
		if !ie.Out {
			est.RowsPerSecond += ie.RowsPerSecond
		}
		left := float64(max(ie.Left, 0))
		if ie.Left < 0 {
			left = math.Inf(1)
		}
		paceOf[i] = len(paces)
		paces, lefts = append(paces, p), append(lefts, left)
	}
	if len(paces) == 0 {
		est.NoInstance, est.Fits = true, in.Due == 0
		return est
	}
	est.Sent = in.Due
	if !unlimited {
		est.Sent = min(in.Due, capacity)
	}
	est.CappedRows = in.Due - est.Sent
	sentBy := func(t time.Duration) float64 {
		var n float64
		for i, p := range paces {
			n += min(lefts[i], p.sentBy(t))
		}
		return n
	}
	// The least T by which every row to send has had its slot: the sum is continuous and
	// non-decreasing in T, so a bisection on it finds T to the microsecond.
	var send time.Duration // when the last row to send has had its slot
	if target := float64(est.Sent); target > 0 {
		lo, hi := time.Duration(0), time.Second
		for sentBy(hi) < target {
			if hi > 100*365*24*time.Hour {
				est.Fits = false // a rate so low the rows take a century: no ETA worth giving
				return est
			}
			lo, hi = hi, 2*hi
		}
		for hi-lo > time.Microsecond {
			mid := lo + (hi-lo)/2
			if sentBy(mid) >= target {
				hi = mid
			} else {
				lo = mid
			}
		}
		send = hi
	}
	// The last answer comes a call's time after the last slot.
	est.ETA = send + in.Latency
	// Each instance's rows: what it sent by then, rounded down, and the rounding's remainder one
	// at a time to the instances with room left.
	var given int64
	for i, j := range paceOf {
		if j < 0 {
			continue
		}
		n := int64(math.Floor(min(lefts[j], paces[j].sentBy(send))))
		est.Instances[i].Rows = min(n, est.Sent)
		given += est.Instances[i].Rows
	}
	for more := true; given < est.Sent && more; {
		more = false
		for i := range est.Instances {
			ie := &est.Instances[i]
			if given < est.Sent && !ie.Out && (ie.Left < 0 || ie.Rows < ie.Left) {
				ie.Rows++
				given++
				more = true
			}
		}
	}
	if in.MaxDuration > 0 && est.ETA > in.MaxDuration {
		est.Fits = false
		est.WithinMaxDuration = min(est.Sent, int64(math.Floor(sentBy(in.MaxDuration))))
	}
	return est
}

// slotRate is the requests a second of slots 1/rate apart widened by headroom, rounded up to the
// microsecond as sqlReserve (and memstore's model of it) rounds them.
func slotRate(rate, headroom float64) float64 {
	return 1e6 / math.Ceil(1e6*(1+headroom)/rate)
}

// pace is one instance's rate over time from now: its cut rate climbing back to its rps, its
// headroom easing to the least, both in steps, and the workers' bound.
type pace struct {
	rps, rate0, headroom0, bound float64
}

func newPace(pi PlanInstance, bound float64) pace {
	p := pace{rps: pi.RPS, rate0: pi.Rate, headroom0: pi.Headroom, bound: bound}
	if p.rate0 <= 0 || p.rate0 > p.rps {
		p.rate0 = p.rps
	}
	if p.headroom0 < paceHeadroom {
		p.headroom0 = paceHeadroom
	}
	return p
}

// at is the requests a second at t, and when that next changes (0: never).
func (p pace) at(t time.Duration) (float64, time.Duration) {
	climbs := int64(t / rateStepEvery)
	rate := min(p.rps, p.rate0+p.rps*rateStep*float64(climbs))
	eases := int64(t / headroomEase)
	headroom := max(paceHeadroom, p.headroom0-headroomStep*float64(eases))
	r := slotRate(rate, headroom)
	if p.bound > 0 {
		r = min(r, p.bound)
	}
	var next time.Duration
	if rate < p.rps {
		next = time.Duration(climbs+1) * rateStepEvery
	}
	if headroom > paceHeadroom {
		if e := time.Duration(eases+1) * headroomEase; next == 0 || e < next {
			next = e
		}
	}
	return r, next
}

// steady is the rate once the climb and the ease are over.
func (p pace) steady() float64 {
	r := slotRate(p.rps, paceHeadroom)
	if p.bound > 0 {
		r = min(r, p.bound)
	}
	return r
}

// sentBy is how many slots the instance has had by t: its rate integrated over [0, t].
func (p pace) sentBy(t time.Duration) float64 {
	var n float64
	for from := time.Duration(0); from < t; {
		r, next := p.at(from)
		if next == 0 || next > t {
			next = t
		}
		n += r * (next - from).Seconds()
		from = next
	}
	return n
}
