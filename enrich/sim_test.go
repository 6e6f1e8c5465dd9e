package enrich_test

// The engine's simulation: the real Runner in a testing/synctest bubble (fake time, so hours of
// backoffs and leases take milliseconds) against the in-memory model of the store
// (internal/memstore, held to the real store by internal/storecontract) and a scripted API, under
// a random schedule of faults drawn from a seed. After every seed the invariants of issue 13 are
// checked (see check). A failing seed prints the command that replays it and the schedule it drew.
//
// A share of the seeds (budgetShare) give their runs a shared budget (Config.Budget), the model of
// internal/memstore (held to PostgreSQL by the same contract), one for all the runs of the seed
// as the database is: on a clock of its own, some with daily caps (Instance.MaxPerDay) on a day
// that turns while the runs go on, some across Berlin's DST fall-back, some with the second run
// spending the first run's instances. See drawBudget.
//
// ENRICH_SIM_SEEDS sets how many seeds run (default simSeedsDefault), ENRICH_SIM_FIRST the first
// (default 1), ENRICH_SIM_SEED one seed alone; `make soak` runs many more.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/clock"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// simSeedsDefault is how many seeds `make test` runs.
const simSeedsDefault = 2000

// simDay is how long a run may go on, in simulated time, before it counts as one that does not
// end by itself.
const simDay = 24 * time.Hour

// simStuck is how much real time one seed may take before the simulation gives up on it.
const simStuck = 2 * time.Minute

// thiefOwner is the claims the simulation makes behind the runs' backs: another run taking rows
// whose lease lapsed.
const thiefOwner = "thief"

// TestSimulation runs the engine under random faults, one subtest per seed.
func TestSimulation(t *testing.T) {
	t.Parallel()
	first, n := uint64(1), uint64(simSeedsDefault)
	if v := os.Getenv("ENRICH_SIM_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ENRICH_SIM_SEED=%q: want a seed number", v)
		}
		first, n = s, 1
	} else {
		for _, e := range []struct {
			name string
			p    *uint64
		}{{"ENRICH_SIM_FIRST", &first}, {"ENRICH_SIM_SEEDS", &n}} {
			if v := os.Getenv(e.name); v != "" {
				x, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatalf("%s=%q: want a number", e.name, v)
				}
				*e.p = x
			}
		}
	}
	tally := &simTally{outcomes: map[string]int{}}
	// Run after every parallel subtest has finished: what the seeds exercised.
	t.Cleanup(func() { t.Logf("%d seeds: %v", n, tally) })
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			simulate(t, seed, tally)
		})
	}
}

// simTally counts what the seeds exercised, so that a schedule that stops reaching a fault
// shows.
type simTally struct {
	mu       sync.Mutex
	outcomes map[string]int // runs by error kind
	// lostInHand counts renewals that found a row lost while it was in a call; stolen, rows
	// whose lease was ended by force; lost, results fenced off.
	lostInHand, stolen, lost, calls int64
	// budgets counts seeds with a shared budget, of them capped with daily caps and shared with
	// two runs on the same instances; capReached runs that ended with "daily cap reached";
	// turned instances whose calls spanned two budget days; capFull instances whose calls on
	// one day reached their cap; overDay instances called past their cap on one day of the
	// budget's clock, on a block the budget handed out the day before.
	budgets, capped, shared, capReached, turned, capFull, overDay int64
}

func (t *simTally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("runs by outcome %v; %d GetAvatar calls; %d leases ended by force, %d of them found lost by a "+
		"renewal while in a call; %d results fenced off; %d seeds with a shared budget (%d with daily caps, %d with two runs "+
		"on the same instances): %d runs ended with their daily caps reached, %d instances called on two budget days, %d "+
		"called up to their cap on a day, %d past it on the day after with a block handed out before it turned", t.outcomes,
		t.calls, t.stolen, t.lostInHand, t.lost, t.budgets, t.capped, t.shared, t.capReached, t.turned, t.capFull, t.overDay)
}

// window is a stretch of simulated time from the start of the seed.
type window struct{ from, to time.Duration }

func (w window) has(at time.Duration) bool { return at >= w.from && at < w.to }
func (w window) len() time.Duration        { return w.to - w.from }
func (w window) String() string            { return fmt.Sprintf("[%v,%v)", w.from, w.to) }

// fault is what one GetAvatar call may draw.
type fault int

const (
	f5xx fault = iota
	fTimeout
	fHang
	f429
	fStarting
	fEmpty
	fAvatarTimeout
	fInvalid
	nFaults
)

var faultNames = [nFaults]string{"5xx", "timeout", "hang", "429", "starting", "empty200", "avatar_timeout", "invalid"}

// instPlan is one instance's script.
type instPlan struct {
	id       string
	rps      int
	latency  [2]time.Duration
	p        [nFaults]float64
	outages  []window // every call and state check fails to connect
	starting []window // every call answers "starting", every state check says so
	// unusableAt: from then on every call answers 401 (0: never); quotaAt: from then on every
	// GetAvatar call answers 466, the plan's quota spent (0: never; only with a shared budget,
	// which records it for the day).
	unusableAt, quotaAt time.Duration
	retryAfter          time.Duration // a 429's Retry-After (0: none)
	// checkRPS is the instance's CheckWhatsapp limit (0: the default); pc the chances of a
	// CheckWhatsapp call's failures.
	checkRPS int
	pc       [nCheckFaults]float64
}

// checkFault is what one CheckWhatsapp call may draw.
type checkFault int

const (
	c5xx checkFault = iota
	c429
	c466
	cBadPhone
	cStarting
	nCheckFaults
)

var checkFaultNames = [nCheckFaults]string{"5xx", "429", "466", "bad_phone", "starting"}

// mayLeave says whether the script can take the instance out of a run. Any failure that is not
// an answer can: only a real answer ends an episode of trouble, so a few in a row with no answer
// between (a client timeout alone may outlast starting_timeout) take the instance out, by design.
func (p instPlan) mayLeave() bool {
	return p.unusableAt > 0 || p.quotaAt > 0 || len(p.outages) > 0 || len(p.starting) > 0 ||
		p.p[f5xx]+p.p[fTimeout]+p.p[f429]+p.p[fStarting]+p.p[fEmpty]+p.pc[c5xx]+p.pc[cStarting] > 0
}

func (p instPlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "instance %s rps %d latency %v-%v", p.id, p.rps, p.latency[0], p.latency[1])
	for f, x := range p.p {
		if x > 0 {
			fmt.Fprintf(&b, " %s %.2f", faultNames[f], x)
		}
	}
	if len(p.outages) > 0 {
		fmt.Fprintf(&b, " outages %v", p.outages)
	}
	if len(p.starting) > 0 {
		fmt.Fprintf(&b, " starting %v", p.starting)
	}
	if p.unusableAt > 0 {
		fmt.Fprintf(&b, " 401 from %v", p.unusableAt)
	}
	if p.quotaAt > 0 {
		fmt.Fprintf(&b, " 466 from %v", p.quotaAt)
	}
	if p.retryAfter > 0 {
		fmt.Fprintf(&b, " retry-after %v", p.retryAfter)
	}
	if p.checkRPS > 0 {
		fmt.Fprintf(&b, " check_rps %d", p.checkRPS)
	}
	for f, x := range p.pc {
		if x > 0 {
			fmt.Fprintf(&b, " check %s %.2f", checkFaultNames[f], x)
		}
	}
	return b.String()
}

// runPlan is one run: its configuration, instances and signals.
type runPlan struct {
	owner  string
	start  time.Duration
	cfg    enrich.Config // without Owner, Instances, Logger, Hurry
	insts  []instPlan
	signal time.Duration // ctx cancelled then (0: never)
	hurry  time.Duration // Hurry closed then (0: never)
}

// dbPlan is the database's faults.
type dbPlan struct {
	latency time.Duration
	pErr    float64 // a call fails with a serialization failure
	// pAckLost is the chance that a call's statement commits and its answer is lost (the
	// connection breaks after the commit): the engine sees an error.
	pAckLost float64
	outages  []window // every call fails: the connection is gone
	hangs    []window // every call hangs until its deadline
	fatalAt  time.Duration
}

func (d dbPlan) faulty() bool {
	return d.pErr > 0 || d.pAckLost > 0 || len(d.outages) > 0 || len(d.hangs) > 0 || d.fatalAt > 0
}

// steal is a lost lease: at `at`, the leases of `rows` held rows end; with thief set another run
// claims them for an hour and, when hold > 0, writes them done after hold.
type steal struct {
	at    time.Duration
	rows  int
	thief bool
	hold  time.Duration
}

type scenario struct {
	seed   uint64
	phones []string // the rows; an invalid one never reaches the API
	chats  []string
	runs   []runPlan
	db     dbPlan
	steals []steal
	budget *budgetPlan // nil: the runs have no shared budget
}

// budgetPlan is the seed's shared budget: the database's, so every run of the seed spends the
// same, through the database's faults.
type budgetPlan struct {
	// shift is the budget's clock (the database's) less the runs' clock.
	shift time.Duration
	// day is when the instances' day turns (Config.Day); caps their daily caps (MaxPerDay) by
	// id, none for an instance not named.
	day  store.DayStart
	caps map[string]int64
	// shared says the second run spends the first run's instances, with the same scripts; then
	// oneTable that the runs say they work on one table (Config.Table), and behind that the
	// second is told a run of its table started first (Runner.StandBy).
	shared, oneTable, behind bool
}

func (b *budgetPlan) String() string {
	ids := slices.Sorted(maps.Keys(b.caps))
	caps := make([]string, len(ids))
	for i, id := range ids {
		caps[i] = fmt.Sprintf("%s:%d", id, b.caps[id])
	}
	return fmt.Sprintf("budget clock starts at %s, day %+v, caps %v, shared instances %v (one table %v, the second told it is behind %v)",
		simEpoch.Add(b.shift).Format(time.RFC3339Nano), b.day, caps, b.shared, b.oneTable, b.behind)
}

// simEpoch is where a synctest bubble's clock starts.
var simEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *scenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d phone rows, %d chat rows\n", s.seed, len(s.phones), len(s.chats))
	for _, r := range s.runs {
		c := r.cfg
		fmt.Fprintf(&b, "  run %s from %v: workers %d batch %d flush %v lease %v max_attempts %d retry_in_run %d retry %v-%v "+
			"starting_timeout %v retry_for %v db_timeout %v grace %v call_timeout %v limit %d max_duration %v confirm_missing %v",
			r.owner, r.start, c.Workers, c.BatchSize, c.FlushInterval, c.Lease, c.MaxAttempts, c.RetryInRun, c.Retry.Base,
			c.Retry.Max, c.StartingTimeout, c.RetryFor, c.DatabaseTimeout, c.ShutdownGrace, c.CallTimeout, c.Limit, c.MaxDuration,
			c.ConfirmMissing)
		if r.signal > 0 {
			fmt.Fprintf(&b, " signal at %v", r.signal)
		}
		if r.hurry > 0 {
			fmt.Fprintf(&b, " hurry at %v", r.hurry)
		}
		b.WriteString("\n")
		for _, in := range r.insts {
			fmt.Fprintf(&b, "    %v\n", in)
		}
	}
	fmt.Fprintf(&b, "  database: latency %v errors %.2f answers lost after commit %.2f outages %v hangs %v fatal at %v\n",
		s.db.latency, s.db.pErr, s.db.pAckLost,
		s.db.outages, s.db.hangs, s.db.fatalAt)
	for _, st := range s.steals {
		fmt.Fprintf(&b, "  lost leases at %v: %d rows, thief %v, hold %v\n", st.at, st.rows, st.thief, st.hold)
	}
	if s.budget != nil {
		fmt.Fprintf(&b, "  %v\n", s.budget)
	}
	return b.String()
}

// draw makes the seed's scenario: a few fault classes switched on at random, each with random
// strength, so that some seeds are clean and some are storms.
func draw(seed uint64) *scenario {
	rng := rand.New(rand.NewPCG(seed, 0x51a7))
	pick := func(xs ...time.Duration) time.Duration { return xs[rng.IntN(len(xs))] }
	chance := func(p float64) bool { return rng.Float64() < p }
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	windows := func(maxN int, at, long time.Duration) []window {
		var ws []window
		for range 1 + rng.IntN(maxN) {
			from := between(0, at)
			ws = append(ws, window{from, from + between(time.Second, long)})
		}
		return ws
	}
	s := &scenario{seed: seed}
	rows := 5 + rng.IntN(46)
	for i := range rows {
		switch {
		case chance(0.03):
			s.phones = append(s.phones, fmt.Sprintf("12%d", i)) // too short: fails before any call
		case chance(0.1):
			s.chats = append(s.chats, fmt.Sprintf("7911%07d@c.us", i))
		default:
			s.phones = append(s.phones, fmt.Sprintf("7900%07d", i))
		}
	}
	runs := 1
	if chance(0.2) {
		runs = 2
	}
	for r := range runs {
		rp := runPlan{owner: fmt.Sprintf("run-%d", r+1)}
		if r > 0 {
			rp.start = between(0, 20*time.Second)
		}
		rp.cfg = enrich.Config{
			Workers:          1 + rng.IntN(4),
			BatchSize:        1 + rng.IntN(20),
			FlushInterval:    pick(100*time.Millisecond, time.Second),
			Lease:            pick(3*time.Second, 9*time.Second, 30*time.Second, time.Minute, 10*time.Minute),
			MaxAttempts:      1 + rng.IntN(5),
			RetryInRun:       []int{-1, 1, 2, 3}[rng.IntN(4)],
			Retry:            enrich.Backoff{Base: pick(100*time.Millisecond, time.Second), Max: pick(10*time.Second, time.Minute, 5*time.Minute)},
			StartingTimeout:  pick(10*time.Second, time.Minute, 5*time.Minute),
			RetryFor:         pick(5*time.Second, 30*time.Second, time.Minute),
			DatabaseTimeout:  pick(time.Second, 10*time.Second),
			ShutdownGrace:    pick(time.Second, 20*time.Second),
			CallTimeout:      pick(5*time.Second, 30*time.Second),
			ProgressInterval: -1,
			Rand:             enrich.LockedRand(seed*31 + uint64(r)),
		}
		if chance(0.1) {
			rp.cfg.Limit = 1 + rng.IntN(rows)
		}
		if chance(0.1) {
			rp.cfg.MaxDuration = between(time.Second, time.Minute)
		}
		if chance(0.1) {
			rp.cfg.ProgressInterval = 10 * time.Second
		}
		rp.cfg.ConfirmMissing = chance(0.3)
		if chance(0.25) {
			rp.signal = rp.start + between(time.Millisecond, time.Minute)
			if chance(0.3) {
				rp.hurry = rp.signal + between(0, 30*time.Second)
			}
		}
		for i := range 1 + rng.IntN(3) {
			ip := instPlan{id: fmt.Sprintf("%d%d", r+1, i+1), rps: []int{1, 2, 5, 10}[rng.IntN(4)],
				latency: [2]time.Duration{between(time.Millisecond, 50*time.Millisecond), between(50*time.Millisecond, 2*time.Second)}}
			for f := range nFaults {
				on := 0.12
				if f == fHang || f == fInvalid {
					on = 0.04
				}
				if chance(on) {
					ip.p[f] = rng.Float64() * []float64{0.05, 0.2, 0.5, 1}[rng.IntN(4)]
				}
			}
			if chance(0.1) {
				ip.outages = windows(2, 2*time.Minute, 10*time.Minute)
			}
			if chance(0.08) {
				ip.starting = windows(2, 2*time.Minute, 10*time.Minute)
			}
			if chance(0.04) {
				ip.unusableAt = between(time.Millisecond, 2*time.Minute)
			}
			if ip.p[f429] > 0 && chance(0.5) {
				ip.retryAfter = between(time.Second, 10*time.Second)
			}
			if rp.cfg.ConfirmMissing {
				if chance(0.3) {
					ip.checkRPS = []int{1, 2, 5}[rng.IntN(3)]
				}
				for f := range nCheckFaults {
					if chance(0.1) {
						ip.pc[f] = rng.Float64() * []float64{0.05, 0.2, 0.5, 1}[rng.IntN(4)]
					}
				}
			}
			rp.insts = append(rp.insts, ip)
		}
		s.runs = append(s.runs, rp)
	}
	s.db.latency = between(0, 10*time.Millisecond)
	if chance(0.15) {
		s.db.pErr = rng.Float64() * 0.3
	}
	if chance(0.1) {
		s.db.pAckLost = rng.Float64() * 0.2
	}
	if chance(0.1) {
		s.db.outages = windows(2, 2*time.Minute, 2*time.Minute)
	}
	if chance(0.05) {
		s.db.hangs = windows(1, 2*time.Minute, time.Minute)
	}
	if chance(0.02) {
		s.db.fatalAt = between(time.Millisecond, 2*time.Minute)
	}
	if chance(0.35) {
		for range 1 + rng.IntN(4) {
			s.steals = append(s.steals, steal{at: between(time.Second, time.Minute), rows: 1 + rng.IntN(3),
				thief: chance(0.7), hold: pick(0, time.Second, 30*time.Second)})
		}
	}
	drawBudget(s)
	return s
}

// budgetShare is the share of seeds whose runs have a shared budget; cappedShare the share of
// those with daily caps.
const budgetShare, cappedShare = 0.4, 0.5

// drawBudget gives a share of the seeds a shared budget, from a stream of its own, so that the
// other seeds draw the schedules they drew before there was one: a clock of its own (the
// database's), a day that turns at some point of the seed's first 40 s, or Berlin's DST
// fall-back night, with its day starting at 02:30, in the repeated hour; and to half of them
// daily caps of 5 to 60 calls, small enough to be reached within a run. Half the seeds with two
// runs make the second spend the first run's instances, as two processes on one instance do.
func drawBudget(s *scenario) {
	rng := rand.New(rand.NewPCG(s.seed, 0xb0d9e7))
	chance := func(p float64) bool { return rng.Float64() < p }
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	if !chance(budgetShare) {
		return
	}
	b := &budgetPlan{caps: map[string]int64{}}
	s.budget = b
	switch k := rng.Float64(); {
	case k < 0.25:
		// The night of 2026-10-25 in Berlin: the day starts at 02:30 CEST (00:30 UTC); at
		// 01:00 UTC the clocks go back to 02:00 CET, the local time says the day before until
		// 02:30 CET (01:30 UTC), and then the day again.
		// The runs start up to 40 s before one of the three.
		b.day = store.DayStart{Zone: "Europe/Berlin", Offset: 2*time.Hour + 30*time.Minute}
		at := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC).Add(time.Duration(rng.IntN(3)) * 30 * time.Minute)
		b.shift = at.Add(-between(0, 40*time.Second)).Sub(simEpoch)
	case k < 0.75:
		// A day that turns a while after the start, in a zone, on a clock off the runs' by up to
		// two days either way.
		zone := []string{"UTC", "Europe/Moscow", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"}[rng.IntN(5)]
		loc, err := time.LoadLocation(zone)
		if err != nil {
			panic(err)
		}
		b.shift = between(-48*time.Hour, 48*time.Hour)
		turn := simEpoch.Add(b.shift).Add(between(0, 40*time.Second)).In(loc)
		h, m, sec := turn.Clock()
		b.day = store.DayStart{Zone: zone, Offset: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
			time.Duration(sec)*time.Second + time.Duration(turn.Nanosecond()).Truncate(time.Millisecond)}
	default:
		// Midnight UTC, the default day.
		if chance(0.5) {
			b.shift = between(-time.Hour, time.Hour)
		}
	}
	if len(s.runs) == 2 && chance(0.5) {
		b.shared = true
		s.runs[1].insts = slices.Clone(s.runs[0].insts)
	}
	for i := range s.runs {
		for j := range s.runs[i].insts {
			ip := &s.runs[i].insts[j]
			if b.shared && i == 1 {
				*ip = s.runs[0].insts[j]
				continue
			}
			if chance(0.05) {
				ip.quotaAt = between(time.Millisecond, 2*time.Minute)
			}
		}
	}
	if chance(cappedShare) {
		for _, r := range s.runs {
			for _, ip := range r.insts {
				if _, ok := b.caps[ip.id]; !ok && chance(0.8) {
					b.caps[ip.id] = 5 + rng.Int64N(56)
				}
			}
		}
	}
	// Drawn last, so that the draws above are the ones seeds made before these.
	if b.shared {
		b.oneTable = chance(0.7)
		b.behind = b.oneTable && chance(0.5)
	}
}

// claimKey names one claim of one row.
type claimKey struct {
	owner     string
	id, token int64
}

// claimBook is what became of one claim.
type claimBook struct {
	landed int // write-backs that landed through it
	// ackLost says the claim committed but its answer was lost: the run never knew of it, and
	// its rows stay leased until the lease ends, by design.
	ackLost bool
}

// lostClaim is a claim a renewal found lost: its token and the fake instant the renewal
// returned. A call at that same instant raced the engine's reading of the answer (in a bubble,
// goroutines that run before time moves on are concurrent), so only a call after it is a fault.
type lostClaim struct {
	token int64
	at    time.Time
}

// ownerBook is what the model saw one run do.
type ownerBook struct {
	claims  int64
	written store.Written
	// unacked is what written holds of writes whose answer was lost: the run did not see them.
	unacked store.Written
	// fenced counts results in writes that succeeded but did not land: their claim was no
	// longer the row's.
	fenced int64
	// lost are rows a renewal told the run it no longer holds, by id, with the claim's token
	// and when the renewal returned; a newer claim of the row by the run clears it.
	lost map[int64]lostClaim
	// claimedAt is when the run last claimed each row; token its token.
	claimedAt map[int64]time.Time
	token     map[int64]int64
	// The run's last claim: when, whether from the start of the order and whether it was empty,
	// and when it last wrote.
	lastClaim                    time.Time
	lastFromStart, lastClaimNone bool
	lastWrite                    time.Time
}

// world is one seed's simulation: the model, the bookkeeping and the violations found.
type world struct {
	sc    *scenario
	model *memstore.Store
	start time.Time
	idOf  map[string]int64

	mu         sync.Mutex
	violations []string
	books      map[string]*ownerBook
	claims     map[claimKey]*claimBook
	latest     map[int64]claimKey  // every row's newest claim, by any owner
	forced     map[int64]time.Time // when each row's lease was last ended by force
	dbCalls    uint64
	sends      map[string][]time.Time // GetAvatar calls per instance
	runSends   map[string][]time.Time // GetAvatar calls per run and instance (runKey)
	states     map[string][]time.Time // GetStateInstance calls per instance
	checks     map[string][]time.Time // CheckWhatsapp calls per instance
	calls      map[string]int64       // GetAvatar calls per run and instance (runKey)
	inCall     map[int64]int          // GetAvatar calls in flight per row
	tally      *simTally
	rateLimits map[string]int64 // 429s per run and instance (runKey)
	// checkCalls counts CheckWhatsapp calls per run and instance (runKey); checks has their
	// times per instance, whatever run sent them.
	checkCalls map[string]int64
	// budget is the seed's shared budget (nil: none); capped says a run was told an instance
	// spent its daily cap (runKey).
	budget *memstore.Budget
	capped map[string]bool
	// blockDay is the budget's day of each run's current block of an instance (runKey):
	// what the budget counted its slots on. dayCalls counts each instance's GetAvatar calls by
	// that day.
	blockDay map[string]memstore.Date
	dayCalls map[string]map[memstore.Date]int64
	// dayBlocks are each run's blocks of an instance (runKey), in the order granted, with the day
	// the budget counted them on: a call counts on the day of the last block that had begun when
	// it left (a run reserves its next block while it still sends from the current one).
	dayBlocks map[string][]dayBlock
	// trace is the last traceLen things the budget did and calls sent, for a failing seed's
	// report; traced counts them all. Formatted only for the report.
	trace  [traceLen]traceLine
	traced int
	// turned, capFull and overDay are what checkCaps found for the tally: instances called on
	// two budget days, called up to their cap on a day, and called more than their cap on a
	// day of the budget's clock with slots the day before handed out.
	turned, capFull, overDay int64
}

// traceLen is how many of the budget's last events a failing seed reports.
const traceLen = 60

// traceLine is one event of the budget's trace: when (on the runs' clock, from the start), and
// what, to format.
type traceLine struct {
	at     time.Duration
	format string
	args   []any
}

// tracef records a line of the budget's trace. w.mu must be held.
func (w *world) tracef(format string, args ...any) {
	if w.budget != nil {
		w.trace[w.traced%traceLen] = traceLine{time.Since(w.start), format, args}
		w.traced++
	}
}

// traceLines formats the trace, oldest first. w.mu must be held.
func (w *world) traceLines() []string {
	var out []string
	if w.traced > traceLen {
		out = append(out, fmt.Sprintf("(%d earlier lines)", w.traced-traceLen))
	}
	for i := max(0, w.traced-traceLen); i < w.traced; i++ {
		l := w.trace[i%traceLen]
		out = append(out, fmt.Sprintf("%v: ", l.at)+fmt.Sprintf(l.format, l.args...))
	}
	return out
}

// runKey names an instance of a run: runs may share an instance.
func runKey(owner, id string) string { return owner + "/" + id }

func (w *world) violate(format string, args ...any) {
	w.violations = append(w.violations, fmt.Sprintf("at %v: ", time.Since(w.start))+fmt.Sprintf(format, args...))
}

func (w *world) book(owner string) *ownerBook {
	b := w.books[owner]
	if b == nil {
		b = &ownerBook{lost: map[int64]lostClaim{}, claimedAt: map[int64]time.Time{}, token: map[int64]int64{}}
		w.books[owner] = b
	}
	return b
}

// claimed records a claim the model made. w.mu must be held.
func (w *world) claimed(owner string, token int64, got []store.Claimed, after store.Cursor) {
	b := w.book(owner)
	now := time.Now()
	b.claims += int64(len(got))
	b.lastClaim, b.lastFromStart, b.lastClaimNone = now, after == (store.Cursor{}), len(got) == 0
	for _, c := range got {
		k := claimKey{owner, c.ID, token}
		if w.claims[k] != nil {
			w.violate("%s claimed row %d twice under token %d", owner, c.ID, token)
		}
		w.claims[k] = &claimBook{}
		w.latest[c.ID] = k
		b.claimedAt[c.ID], b.token[c.ID] = now, token
		delete(b.lost, c.ID)
	}
}

// ackLost draws whether the answer of a statement that committed is lost. w.mu must be held.
func (w *world) ackLost() bool {
	if w.sc.db.pAckLost == 0 {
		return false
	}
	w.dbCalls++
	return unit(w.sc.seed, 0xac, w.dbCalls) < w.sc.db.pAckLost
}

// errAckLost is what the engine sees of a statement whose answer was lost.
var errAckLost = errors.New("unexpected EOF: the connection to the server was lost after the statement was sent")

// unit is a number in [0, 1) that depends only on its arguments.
func unit(xs ...uint64) float64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, x := range xs {
		h ^= x
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 31
		h *= 0x94d049bb133111eb
		h ^= h >> 29
	}
	return float64(h>>11) / (1 << 53)
}

// dbFault is the database's schedule for one call now: an error, a hang until ctx ends, or its
// latency.
func (w *world) dbFault(ctx context.Context) error {
	at := time.Since(w.start)
	d := w.sc.db
	if d.fatalAt > 0 && at >= d.fatalAt {
		return &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for table contacts"}
	}
	for _, h := range d.hangs {
		if h.has(at) {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	for _, o := range d.outages {
		if o.has(at) {
			if err := clock.Sleep(ctx, time.Millisecond); err != nil {
				return err
			}
			return errors.New("failed to connect to `host=db user=enrich`: dial tcp 10.0.0.5:5432: connect: connection refused")
		}
	}
	w.mu.Lock()
	w.dbCalls++
	n := w.dbCalls
	w.mu.Unlock()
	if d.pErr > 0 && unit(w.sc.seed, 0xdb, n) < d.pErr {
		return &pgconn.PgError{Severity: "ERROR", Code: "40001", Message: "could not serialize access due to concurrent update"}
	}
	return clock.Sleep(ctx, d.latency)
}

// simStore is one run's view of the seed's model, through the database's faults, with
// bookkeeping; owner is the run, for the counts it asks without naming itself (Due).
type simStore struct {
	w     *world
	owner string
}

func (s simStore) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	if err := s.w.dbFault(ctx); err != nil {
		return nil, fmt.Errorf("claim batch: %w", err)
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	got, err := s.w.model.ClaimAfter(ctx, owner, token, n, lease, after)
	if err == nil && s.w.ackLost() {
		for _, c := range got {
			k := claimKey{owner, c.ID, token}
			s.w.claims[k] = &claimBook{ackLost: true}
			s.w.latest[c.ID] = k
		}
		return nil, fmt.Errorf("claim batch: %w", errAckLost)
	}
	if err == nil {
		s.w.claimed(owner, token, got, after)
	}
	return got, err
}

func (s simStore) Renew(ctx context.Context, owner string, leases []store.Lease, lease time.Duration) ([]int64, error) {
	if err := s.w.dbFault(ctx); err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	ids, err := s.w.model.Renew(ctx, owner, leases, lease)
	if err != nil {
		return ids, err
	}
	if s.w.ackLost() {
		return nil, fmt.Errorf("renew leases: %w", errAckLost)
	}
	b := s.w.book(owner)
	renewed := make(map[int64]bool, len(ids))
	for _, id := range ids {
		renewed[id] = true
	}
	for _, l := range leases {
		if !renewed[l.ID] && b.token[l.ID] == l.Token {
			b.lost[l.ID] = lostClaim{token: l.Token, at: time.Now()}
			if s.w.inCall[l.ID] > 0 {
				s.w.tally.mu.Lock()
				s.w.tally.lostInHand++
				s.w.tally.mu.Unlock()
			}
		}
	}
	return ids, nil
}

func (s simStore) Write(ctx context.Context, owner string, batch store.Batch) (store.Written, error) {
	if err := s.w.dbFault(ctx); err != nil {
		return store.Written{}, fmt.Errorf("write batch: %w", err)
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	// Which leases land, as the model decides: the claim must be the row's current one, and a
	// row lands once.
	held := map[int64]int64{}
	for _, r := range s.w.model.Rows() {
		if r.LockedBy == owner {
			held[r.ID] = r.LeaseToken
		}
	}
	var lands []store.Lease
	for _, l := range batchLeases(batch) {
		if tok, ok := held[l.ID]; ok && tok == l.Token {
			lands = append(lands, l)
			delete(held, l.ID)
		}
	}
	got, err := s.w.model.Write(ctx, owner, batch)
	if err != nil {
		return got, err
	}
	if got.Total() != int64(len(lands)) {
		s.w.violate("the model wrote %d rows for %s where its rows said %d would land", got.Total(), owner, len(lands))
	}
	b := s.w.book(owner)
	b.fenced += int64(batch.Len() - len(lands))
	b.written.Done += got.Done
	b.written.Retried += got.Retried
	b.written.Failed += got.Failed
	b.written.Released += got.Released
	if got.Total() > 0 {
		b.lastWrite = time.Now()
	}
	for _, l := range lands {
		if c := s.w.claims[claimKey{owner, l.ID, l.Token}]; c != nil {
			c.landed++
		} else {
			s.w.violate("%s wrote row %d through token %d, a claim the model never made", owner, l.ID, l.Token)
		}
	}
	if s.w.ackLost() {
		// Retried, the batch finds its rows written and counts them lost (store.Write).
		b.fenced -= int64(batch.Len() - len(lands))
		b.unacked.Done += got.Done
		b.unacked.Retried += got.Retried
		b.unacked.Failed += got.Failed
		b.unacked.Released += got.Released
		return store.Written{}, fmt.Errorf("write batch: %w", errAckLost)
	}
	return got, nil
}

func (s simStore) Due(ctx context.Context) (int64, error) {
	if err := s.w.dbFault(ctx); err != nil {
		return 0, fmt.Errorf("count due: %w", err)
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	n, err := s.w.model.Due(ctx)
	if err == nil {
		// A count is a look at the whole table, as a claim from the start is: a run that ends
		// saying no due rows are left may have ended on a count of none.
		b := s.w.book(s.owner)
		b.lastClaim, b.lastFromStart, b.lastClaimNone = time.Now(), true, n == 0
	}
	return n, err
}

// simBudget is one run's view of the seed's shared budget, through the database's faults: a
// statement may fail before it runs, or commit and lose its answer. It records the grants that
// tell the run an instance spent its daily cap.
type simBudget struct {
	w     *world
	owner string
}

// dayBlock is a block of slots a run was granted, from start on the runs' clock, counted on day.
type dayBlock struct {
	start time.Time
	day   memstore.Date
}

// sendDay is the budget's day of the block a call key sent at now came from: the last block that
// had begun (a slot never leaves before its time, but for the engine's timer floor). w.mu must
// be held.
func (w *world) sendDay(key string, now time.Time) (memstore.Date, bool) {
	bs := w.dayBlocks[key]
	for i := len(bs) - 1; i >= 0; i-- {
		if !bs[i].start.After(now.Add(time.Millisecond)) {
			return bs[i].day, true
		}
	}
	return 0, false
}

func (b simBudget) Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error) {
	key := runKey(b.owner, req.Instance)
	if err := b.w.dbFault(ctx); err != nil {
		return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	g, err := b.w.budget.Reserve(ctx, req, p)
	if err != nil {
		return g, err
	}
	row, _ := b.w.budget.Row(req.Instance)
	lost := b.w.ackLost()
	at := func(t time.Time) time.Duration { return t.Add(-b.w.sc.budget.shift).Sub(b.w.start) }
	b.w.tracef("%s reserves %s: want %d refund %d refunded %d answered %v: %d slots from %v every %v, rate %.4g, day %v used %d%s%s",
		b.owner, req.Instance, req.Want, req.Refund, req.Refunded, req.Answered, g.Slots, at(g.Start), g.Interval, g.Rate,
		row.Day, g.Used, map[bool]string{true: " (busy: another run keeps it)"}[g.Busy], map[bool]string{true: " (answer lost)"}[lost])
	if lost {
		return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, errAckLost)
	}
	if req.Want > 0 {
		b.w.blockDay[key] = row.Day
		if g.Slots > 0 {
			b.w.dayBlocks[key] = append(b.w.dayBlocks[key], dayBlock{start: g.Start.Add(-b.w.sc.budget.shift), day: row.Day})
		}
	}
	// The cap is spent: a block asked for and none given (not because another run keeps the
	// instance), or the read before the run (no owner, nothing asked) finding the day's count at
	// the cap. Not a 466: that is a fault.
	if !g.QuotaSpent && req.PerDay > 0 && (req.Want > 0 && g.Slots == 0 && !g.Busy || req.Want == 0 && req.Owner == "" && g.Used >= req.PerDay) {
		b.w.capped[runKey(b.owner, req.Instance)] = true
	}
	return g, nil
}

func (b simBudget) Throttled(ctx context.Context, instance string, sent time.Time, maxRPS float64, retryAfter time.Duration, p store.BudgetPolicy) error {
	if err := b.w.dbFault(ctx); err != nil {
		return fmt.Errorf("record a 429 of %s: %w", instance, err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	if err := b.w.budget.Throttled(ctx, instance, sent, maxRPS, retryAfter, p); err != nil {
		return err
	}
	b.w.tracef("%s: 429 of %s sent at %v, retry-after %v", b.owner, instance, sent.Add(-b.w.sc.budget.shift).Sub(b.w.start), retryAfter)
	if b.w.ackLost() {
		return fmt.Errorf("record a 429 of %s: %w", instance, errAckLost)
	}
	return nil
}

func (b simBudget) QuotaSpent(ctx context.Context, instance string, day store.DayStart) error {
	if err := b.w.dbFault(ctx); err != nil {
		return fmt.Errorf("record the spent quota of %s: %w", instance, err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	if err := b.w.budget.QuotaSpent(ctx, instance, day); err != nil {
		return err
	}
	b.w.tracef("%s: 466 of %s", b.owner, instance)
	if b.w.ackLost() {
		return fmt.Errorf("record the spent quota of %s: %w", instance, errAckLost)
	}
	return nil
}

func (b simBudget) ReserveState(ctx context.Context, instance string, maxRPS float64, p store.BudgetPolicy) (time.Time, time.Time, error) {
	return b.slot(ctx, func() (time.Time, time.Time, error) { return b.w.budget.ReserveState(ctx, instance, maxRPS, p) })
}

func (b simBudget) ReserveCheck(ctx context.Context, instance string, rps float64, p store.BudgetPolicy) (time.Time, time.Time, error) {
	return b.slot(ctx, func() (time.Time, time.Time, error) { return b.w.budget.ReserveCheck(ctx, instance, rps, p) })
}

func (b simBudget) slot(ctx context.Context, reserve func() (time.Time, time.Time, error)) (time.Time, time.Time, error) {
	if err := b.w.dbFault(ctx); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("reserve a slot: %w", err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	slot, now, err := reserve()
	if err == nil && b.w.ackLost() {
		return time.Time{}, time.Time{}, fmt.Errorf("reserve a slot: %w", errAckLost)
	}
	return slot, now, err
}

func (b simBudget) Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error) {
	if err := b.w.dbFault(ctx); err != nil {
		return false, fmt.Errorf("trim the bookings of %s: %w", instance, err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	ok, err := b.w.budget.Trim(ctx, instance, owner, end, at)
	if err != nil {
		return false, err
	}
	b.w.tracef("%s trims %s at %v: %v", b.owner, instance, at, ok)
	if b.w.ackLost() {
		return false, fmt.Errorf("trim the bookings of %s: %w", instance, errAckLost)
	}
	return ok, nil
}

func (b simBudget) Keepers(ctx context.Context, table string, instances []string) ([]store.Keeping, error) {
	if err := b.w.dbFault(ctx); err != nil {
		return nil, fmt.Errorf("read the instances' keepers: %w", err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	return b.w.budget.Keepers(ctx, table, instances)
}

func (b simBudget) HandOver(ctx context.Context, instance, from, to string, p store.BudgetPolicy) (bool, error) {
	if err := b.w.dbFault(ctx); err != nil {
		return false, fmt.Errorf("hand %s over to %s: %w", instance, to, err)
	}
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	ok, err := b.w.budget.HandOver(ctx, instance, from, to, p)
	if err != nil {
		return false, err
	}
	b.w.tracef("%s hands %s over to %s: %v", b.owner, instance, to, ok)
	if b.w.ackLost() {
		return false, fmt.Errorf("hand %s over to %s: %w", instance, to, errAckLost)
	}
	return ok, nil
}

var _ enrich.Budget = simBudget{}

// batchLeases lists b's leases in the order Write applies them.
func batchLeases(b store.Batch) []store.Lease {
	var ls []store.Lease
	for _, d := range b.Done {
		ls = append(ls, d.Lease)
	}
	for _, r := range b.Retry {
		ls = append(ls, r.Lease)
	}
	for _, f := range b.Failed {
		ls = append(ls, f.Lease)
	}
	return append(ls, b.Released...)
}

// simAPI is one scripted instance of one run.
type simAPI struct {
	w     *world
	owner string
	plan  instPlan
	cfg   enrich.Config

	mu sync.Mutex
	n  map[int64]int // GetAvatar calls per row
}

func (a *simAPI) ID() string { return a.plan.id }

func (a *simAPI) err(class greenapi.Class, status int, reason string, cause error) error {
	return &greenapi.Error{Class: class, Instance: a.plan.id, Method: "getAvatar", Status: status, Reason: reason,
		URL: "waInstance" + a.plan.id + "/getAvatar/***", Err: cause}
}

func (a *simAPI) netErr() error {
	return a.err(greenapi.ClassTransient, 0, "", errors.New("dial tcp 10.0.0.9:443: connect: connection refused"))
}

func (a *simAPI) GetAvatar(ctx context.Context, t greenapi.Target) (greenapi.Avatar, error) {
	w := a.w
	now := time.Now()
	at := now.Sub(w.start)
	id, ok := w.idOf[t.String()]
	w.mu.Lock()
	w.sends[a.plan.id] = append(w.sends[a.plan.id], now)
	w.runSends[runKey(a.owner, a.plan.id)] = append(w.runSends[runKey(a.owner, a.plan.id)], now)
	w.calls[runKey(a.owner, a.plan.id)]++
	a.checkHeld("GetAvatar", t, id, ok, now)
	if w.budget != nil {
		if d, ok := w.sendDay(runKey(a.owner, a.plan.id), now); ok {
			if w.dayCalls[a.plan.id] == nil {
				w.dayCalls[a.plan.id] = map[memstore.Date]int64{}
			}
			w.dayCalls[a.plan.id][d]++
		} else {
			w.violate("%s sent a GetAvatar call to %s with no block of the budget", a.owner, a.plan.id)
		}
		w.tracef("%s sends to %s (row %d)", a.owner, a.plan.id, id)
	}
	w.inCall[id]++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.inCall[id]--
		w.mu.Unlock()
	}()
	a.mu.Lock()
	n := a.n[id]
	a.n[id]++
	a.mu.Unlock()

	p := a.plan
	latency := p.latency[0] + time.Duration(unit(w.sc.seed, 0x1a7, uint64(id), uint64(n))*float64(p.latency[1]-p.latency[0]))
	answer := func(err error) (greenapi.Avatar, error) {
		if e := clock.Sleep(ctx, latency); e != nil {
			return greenapi.Avatar{}, e
		}
		if err == nil {
			// An account with a photo; one without a photo or none (today's edition: no
			// existsWhatsapp, an empty link, available); none (the seed editions' false).
			yes, no := true, false
			switch u := unit(w.sc.seed, 0xa7a, uint64(id)); {
			case u < 0.6:
				return greenapi.Avatar{ExistsWhatsapp: &yes, Available: &yes, URLAvatar: "https://pps.whatsapp.net/v/" + t.String()}, nil
			case u < 0.8:
				return greenapi.Avatar{Available: &yes}, nil
			default:
				return greenapi.Avatar{ExistsWhatsapp: &no, Available: &no}, nil
			}
		}
		if greenapi.ClassOf(err) == greenapi.ClassRateLimited {
			w.mu.Lock()
			w.rateLimits[runKey(a.owner, p.id)]++
			w.mu.Unlock()
		}
		return greenapi.Avatar{}, err
	}
	switch {
	case p.unusableAt > 0 && at >= p.unusableAt:
		return answer(a.err(greenapi.ClassUnusable, 401, "wrong apiTokenInstance (HTTP 401)", nil))
	case p.quotaAt > 0 && at >= p.quotaAt:
		return answer(a.err(greenapi.ClassUnusable, 466, "quota exceeded on the account's plan (HTTP 466)", nil))
	case inAny(p.outages, at):
		return answer(a.netErr())
	case inAny(p.starting, at):
		return answer(a.err(greenapi.ClassStarting, 200, greenapi.ReasonStarting, nil))
	}
	salt, _ := strconv.ParseUint(p.id, 10, 64)
	u := unit(w.sc.seed, salt, uint64(id), uint64(n))
	for f := range nFaults {
		if u >= p.p[f] {
			u -= p.p[f]
			continue
		}
		switch f {
		case f5xx:
			return answer(a.err(greenapi.ClassTransient, 502+n%2, "", nil))
		case fTimeout:
			if err := clock.Sleep(ctx, a.cfg.CallTimeout); err != nil {
				return greenapi.Avatar{}, err
			}
			return greenapi.Avatar{}, a.err(greenapi.ClassTransient, 0, "", context.DeadlineExceeded)
		case fHang:
			<-ctx.Done()
			return greenapi.Avatar{}, ctx.Err()
		case f429:
			e := a.err(greenapi.ClassRateLimited, 429, "", nil)
			e.(*greenapi.Error).RetryAfter = p.retryAfter
			return answer(e)
		case fStarting:
			return answer(a.err(greenapi.ClassStarting, 200, greenapi.ReasonStarting, nil))
		case fEmpty:
			return answer(a.err(greenapi.ClassTransient, 200, "response carries none of the documented fields", nil))
		case fAvatarTimeout:
			return answer(a.err(greenapi.ClassAvatarTimeout, 200, greenapi.ReasonAvatarTimeout, nil))
		case fInvalid:
			return answer(a.err(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData, nil))
		}
	}
	return answer(nil)
}

// checkHeld records a violation when the run calls for a row it does not hold, or after a
// renewal told it the row's claim was lost. w.mu must be held.
func (a *simAPI) checkHeld(method string, t greenapi.Target, id int64, ok bool, now time.Time) {
	w := a.w
	if !ok {
		w.violate("%s for %q, no row of the table", method, t.String())
		return
	}
	b := w.book(a.owner)
	row, _ := w.model.Row(id)
	lc, lost := b.lost[id]
	switch {
	case lost && now.After(lc.at):
		w.violate("%s: %s called row %d on instance %s %v after a renewal told it its claim (token %d) was lost", method,
			a.owner, id, a.plan.id, now.Sub(lc.at), lc.token)
	case lost:
		// The renewal's answer and this call left at the same instant: the engine had not read
		// it yet, and the call's result is fenced off by the token when it is written.
	case (row.LockedBy != a.owner || !row.LockedUntil.After(now)) && !w.forced[id].After(b.claimedAt[id]):
		w.violate("%s: %s called row %d on instance %s without holding it: locked by %q until %v, status %s", method,
			a.owner, id, a.plan.id, row.LockedBy, row.LockedUntil.Sub(w.start), row.Status)
	}
}

func (a *simAPI) GetStateInstance(ctx context.Context) (string, error) {
	w := a.w
	now := time.Now()
	at := now.Sub(w.start)
	w.mu.Lock()
	w.states[a.plan.id] = append(w.states[a.plan.id], now)
	w.mu.Unlock()
	if err := clock.Sleep(ctx, a.plan.latency[0]); err != nil {
		return "", err
	}
	switch p := a.plan; {
	case p.unusableAt > 0 && at >= p.unusableAt:
		return greenapi.StateNotAuthorized, nil
	case inAny(p.outages, at):
		e := a.netErr().(*greenapi.Error)
		e.Method = "getStateInstance"
		return "", e
	case inAny(p.starting, at):
		return greenapi.StateStarting, nil
	}
	return greenapi.StateAuthorized, nil
}

func (a *simAPI) CheckWhatsapp(ctx context.Context, t greenapi.Target) (bool, error) {
	w := a.w
	now := time.Now()
	at := now.Sub(w.start)
	id, ok := w.idOf[t.String()]
	w.mu.Lock()
	w.checks[a.plan.id] = append(w.checks[a.plan.id], now)
	w.checkCalls[runKey(a.owner, a.plan.id)]++
	a.checkHeld("CheckWhatsapp", t, id, ok, now)
	w.mu.Unlock()
	a.mu.Lock()
	n := a.n[-id]
	a.n[-id]++
	a.mu.Unlock()
	p := a.plan
	if err := clock.Sleep(ctx, p.latency[0]); err != nil {
		return false, err
	}
	cerr := func(class greenapi.Class, status int, reason string, cause error) error {
		e := a.err(class, status, reason, cause).(*greenapi.Error)
		e.Method, e.URL = "checkWhatsapp", "waInstance"+p.id+"/checkWhatsapp/***"
		return e
	}
	switch {
	case p.unusableAt > 0 && at >= p.unusableAt:
		return false, cerr(greenapi.ClassUnusable, 401, "wrong apiTokenInstance (HTTP 401)", nil)
	case inAny(p.outages, at):
		return false, cerr(greenapi.ClassTransient, 0, "", errors.New("dial tcp 10.0.0.9:443: connect: connection refused"))
	case inAny(p.starting, at):
		return false, cerr(greenapi.ClassStarting, 200, greenapi.ReasonStarting, nil)
	}
	salt, _ := strconv.ParseUint(p.id, 10, 64)
	u := unit(w.sc.seed, 0xc4ec, salt, uint64(id), uint64(n))
	for f := range nCheckFaults {
		if u >= p.pc[f] {
			u -= p.pc[f]
			continue
		}
		switch f {
		case c5xx:
			return false, cerr(greenapi.ClassTransient, 503, "", nil)
		case c429:
			return false, cerr(greenapi.ClassRateLimited, 429, "", nil)
		case c466:
			return false, cerr(greenapi.ClassUnusable, 466, "quota exceeded on the account's plan (HTTP 466)", nil)
		case cBadPhone:
			return false, cerr(greenapi.ClassInvalid, 400, greenapi.ReasonBadPhoneNumber+", valid 11 or 12 digits", nil)
		case cStarting:
			return false, cerr(greenapi.ClassStarting, 200, greenapi.ReasonStarting, nil)
		}
	}
	return unit(w.sc.seed, 0xe815, uint64(id)) < 0.5, nil
}

func inAny(ws []window, at time.Duration) bool {
	for _, w := range ws {
		if w.has(at) {
			return true
		}
	}
	return false
}

// runResult is how one run ended.
type runResult struct {
	sum        enrich.Summary
	err        error
	started    time.Time
	ended      time.Time
	signalled  time.Time // when ctx was cancelled (zero: never)
	apis       []*simAPI
	returned   bool
	lastClaim  time.Time
	lastWrites time.Time
}

// simulate runs one seed and checks it.
func simulate(t *testing.T, seed uint64, tally *simTally) {
	sc := draw(seed)
	replay := fmt.Sprintf("ENRICH_SIM_SEED=%d go test ./enrich -run TestSimulation -count=1 -v", seed)
	var logs syncBuffer
	// Outside the bubble, on the real clock: a bubble whose clock stands still (a goroutine
	// spinning, or waiting for a sync.Mutex held across a fake-time wait) would otherwise hang
	// until the package's timeout with nothing said.
	stuck := time.AfterFunc(simStuck, func() {
		fmt.Fprintf(os.Stderr, "seed %d still runs after %v of real time: the bubble's clock stands still; replay: %s\n%v",
			seed, simStuck, replay, sc)
		panic("simulation: stuck")
	})
	defer stuck.Stop()
	synctest.Test(t, func(t *testing.T) {
		w := &world{sc: sc, start: time.Now(), idOf: map[string]int64{}, books: map[string]*ownerBook{},
			claims: map[claimKey]*claimBook{}, latest: map[int64]claimKey{}, forced: map[int64]time.Time{},
			sends: map[string][]time.Time{}, states: map[string][]time.Time{}, calls: map[string]int64{}, checks: map[string][]time.Time{},
			rateLimits: map[string]int64{}, inCall: map[int64]int{}, tally: tally, checkCalls: map[string]int64{},
			capped: map[string]bool{}, runSends: map[string][]time.Time{}, blockDay: map[string]memstore.Date{}, dayBlocks: map[string][]dayBlock{}, dayCalls: map[string]map[memstore.Date]int64{},
		}
		w.model = memstore.New(nil)
		if b := sc.budget; b != nil {
			w.budget = memstore.NewBudget(func() time.Time { return time.Now().Add(b.shift) })
		}
		var cs []store.NewContact
		for _, p := range sc.phones {
			cs = append(cs, store.NewContact{PhoneNumber: p})
		}
		for _, c := range sc.chats {
			cs = append(cs, store.NewContact{ChatID: c})
		}
		for i, id := range w.model.Enqueue(cs...) {
			var tg greenapi.Target
			var err error
			if cs[i].ChatID != "" {
				tg, err = greenapi.ParseChatID(cs[i].ChatID)
			} else {
				tg, err = greenapi.ParsePhone(cs[i].PhoneNumber)
			}
			if err == nil {
				w.idOf[tg.String()] = id
			}
		}
		log := zerolog.New(&logs).Level(zerolog.WarnLevel)
		results := make([]*runResult, len(sc.runs))
		cancels := make([]context.CancelFunc, len(sc.runs))
		hurries := make([]chan struct{}, len(sc.runs))
		var runs sync.WaitGroup
		var timers []*time.Timer
		for i, rp := range sc.runs {
			res := &runResult{}
			results[i] = res
			ctx, cancel := context.WithCancel(context.Background())
			cancels[i] = cancel
			hurry := make(chan struct{})
			hurries[i] = hurry
			cfg := rp.cfg
			cfg.Owner, cfg.Hurry = rp.owner, hurry
			runLog := log.With().Str("run", rp.owner).Logger()
			cfg.Logger = &runLog
			if b := sc.budget; b != nil {
				cfg.Budget, cfg.Day = simBudget{w: w, owner: rp.owner}, b.day
				if b.oneTable {
					cfg.Table = "contacts"
				}
			}
			for _, ip := range rp.insts {
				api := &simAPI{w: w, owner: rp.owner, plan: ip, cfg: cfg, n: map[int64]int{}}
				res.apis = append(res.apis, api)
				in := enrich.Instance{API: api, RPS: float64(ip.rps), CheckRPS: float64(ip.checkRPS)}
				if sc.budget != nil {
					in.MaxPerDay = sc.budget.caps[ip.id]
				}
				cfg.Instances = append(cfg.Instances, in)
			}
			if rp.signal > 0 {
				timers = append(timers, time.AfterFunc(rp.signal, func() {
					w.mu.Lock()
					if !res.returned {
						res.signalled = time.Now()
					}
					w.mu.Unlock()
					cancel()
				}))
			}
			if rp.hurry > 0 {
				timers = append(timers, time.AfterFunc(rp.hurry, func() { close(hurry) }))
			}
			runs.Go(func() {
				time.Sleep(rp.start)
				r, err := enrich.NewRunner(simStore{w, rp.owner}, cfg)
				if err != nil {
					w.mu.Lock()
					w.violate("%s: NewRunner: %v", rp.owner, err)
					res.returned = true
					w.mu.Unlock()
					return
				}
				if b := sc.budget; b != nil && b.behind && rp.owner != sc.runs[0].owner {
					r.StandBy()
				}
				res.started = time.Now()
				sum, err := r.Run(ctx)
				w.mu.Lock()
				res.sum, res.err, res.ended, res.returned = sum, err, time.Now(), true
				w.mu.Unlock()
			})
		}
		stopThief := make(chan struct{})
		var thief sync.WaitGroup
		thief.Go(func() { w.thieve(stopThief) })

		ended := make(chan struct{})
		go func() { runs.Wait(); close(ended) }()
		day := time.NewTimer(simDay)
		select {
		case <-ended:
			day.Stop()
		case <-day.C:
			w.mu.Lock()
			w.violate("a run was still going after a simulated day: it did not end by itself")
			for _, r := range results {
				if !r.returned && r.signalled.IsZero() {
					r.signalled = time.Now() // the simulation's own signal, to end the day
				}
			}
			w.mu.Unlock()
			for i := range cancels {
				cancels[i]()
			}
			select {
			case <-ended:
			case <-time.After(time.Hour):
				fmt.Fprintf(os.Stderr, "seed %d: a run did not end after a simulated day, nor an hour after its "+
					"context was cancelled; replay: %s\n%v", seed, replay, sc)
				panic("simulation: a run never ends")
			}
		}
		close(stopThief)
		thief.Wait()
		for _, tm := range timers {
			tm.Stop()
		}
		for _, c := range cancels {
			c()
		}
		w.check(results)
		tally.mu.Lock()
		for _, r := range results {
			tally.outcomes[errClass(r.err)]++
			tally.lost += r.sum.Lost
		}
		for _, c := range w.calls {
			tally.calls += c
		}
		tally.stolen += int64(len(w.forced))
		if b := sc.budget; b != nil {
			tally.budgets++
			if len(b.caps) > 0 {
				tally.capped++
			}
			if b.shared {
				tally.shared++
			}
			for _, r := range results {
				if r.sum.Stop == "daily cap reached" {
					tally.capReached++
				}
			}
			tally.turned += w.turned
			tally.capFull += w.capFull
			tally.overDay += w.overDay
		}
		tally.mu.Unlock()
		if len(w.violations) > 0 {
			var b strings.Builder
			for i, r := range results {
				fmt.Fprintf(&b, "  %s: err %v; summary %+v; ran %v", sc.runs[i].owner, r.err, r.sum, r.ended.Sub(r.started))
				if !r.signalled.IsZero() {
					fmt.Fprintf(&b, "; signalled at %v", r.signalled.Sub(w.start))
				}
				b.WriteString("\n")
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) > 40 {
				lines = append([]string{fmt.Sprintf("(%d earlier lines)", len(lines)-40)}, lines[len(lines)-40:]...)
			}
			if w.traced > 0 {
				fmt.Fprintf(&b, "budget (times on the runs' clock from the start):\n  %s\n", strings.Join(w.traceLines(), "\n  "))
			}
			t.Errorf("seed %d broke %d invariants:\n  %s\nreplay: %s\nschedule: %v\noutcome:\n%slog (warnings):\n%s",
				seed, len(w.violations), strings.Join(w.violations, "\n  "), replay, sc, b.String(), strings.Join(lines, "\n"))
		}
	})
}

// thieve ends leases by force on schedule (sc.steals) until stop: a thief claims the rows for
// an hour and writes them done after its hold, or they are left for anyone to claim again.
func (w *world) thieve(stop <-chan struct{}) {
	var token int64
	var holds sync.WaitGroup
	defer holds.Wait()
	steals := slices.Clone(w.sc.steals)
	slices.SortFunc(steals, func(a, b steal) int { return int(a.at - b.at) })
	for i, st := range steals {
		t := time.NewTimer(st.at - time.Since(w.start))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		w.mu.Lock()
		// Rows in a call first, half the time: the lost lease the engine handles least often.
		var held, calling []int64
		for _, r := range w.model.Rows() {
			if r.LockedBy != "" && r.LockedBy != thiefOwner {
				held = append(held, r.ID)
				if w.inCall[r.ID] > 0 {
					calling = append(calling, r.ID)
				}
			}
		}
		if len(calling) > 0 && unit(w.sc.seed, 0xca11, uint64(i)) < 0.5 {
			held = calling
		}
		var victims []int64
		for k := 0; k < st.rows && len(held) > 0; k++ {
			j := int(unit(w.sc.seed, 0x7f, uint64(i), uint64(k)) * float64(len(held)))
			victims = append(victims, held[j])
			held = append(held[:j], held[j+1:]...)
		}
		now := time.Now()
		for _, id := range victims {
			w.model.Expire(id)
			w.forced[id] = now
		}
		var got []store.Claimed
		if st.thief && len(victims) > 0 {
			token++
			// Just after every row due before now, at now: the rows whose leases just ended (and
			// any given back at this very instant).
			after := store.Cursor{Due: now.Add(-time.Nanosecond), ID: 1 << 62}
			got, _ = w.model.ClaimAfter(context.Background(), thiefOwner, token, len(victims), time.Hour, after)
			w.claimed(thiefOwner, token, got, after)
		}
		w.mu.Unlock()
		if len(got) > 0 && st.hold > 0 {
			tok := token
			holds.Go(func() {
				select {
				case <-stop:
					return
				case <-time.After(st.hold):
				}
				var b store.Batch
				for _, c := range got {
					b.Done = append(b.Done, store.Done{Lease: store.Lease{ID: c.ID, Token: tok}})
				}
				w.mu.Lock()
				defer w.mu.Unlock()
				if _, err := w.model.Write(context.Background(), thiefOwner, b); err != nil {
					w.violate("the thief's write: %v", err)
				}
			})
		}
	}
}

// errClass names which of the engine's outcomes err is.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, enrich.ErrInterrupted):
		return "interrupted"
	case errors.Is(err, enrich.ErrDatabase):
		return "database"
	case errors.Is(err, enrich.ErrNoInstance):
		return "no_instance"
	case errors.Is(err, enrich.ErrStalled):
		return "stalled"
	case errors.Is(err, enrich.ErrConfiguration):
		return "configuration"
	}
	return "unexpected"
}

// stopFor is the summary's Stop for each error class.
var stopFor = map[string][]string{
	"nil":           {"no due rows left", "limit reached", "max_duration reached", "daily cap reached"},
	"interrupted":   {"interrupted"},
	"database":      {"database failure"},
	"no_instance":   {"no usable instance"},
	"stalled":       {"stalled"},
	"configuration": {"configuration refused by the API"},
}

// check tests every invariant once every run has ended. With a shared budget, also: a run whose
// every instance was told it spent its daily cap ends with "daily cap reached" and no error (an
// instance out for a fault makes it ErrNoInstance), and one that says so had them all spent;
// every run's calls keep to the instances' rates, each run's own and all together
// (checkInstances); no instance gets more calls on the slots of one budget day than its cap
// (checkCaps).
func (w *world) check(results []*runResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sc := w.sc
	for i, res := range results {
		rp := sc.runs[i]
		if !res.returned {
			continue
		}
		b := w.book(rp.owner)
		sum, err := res.sum, res.err
		class := errClass(err)
		mayUnwrite := errors.Is(err, enrich.ErrDatabase) || errors.Is(err, enrich.ErrUnwritten)

		// The exit says what happened.
		if class == "unexpected" {
			w.violate("%s ended with an error of no known kind: %v", rp.owner, err)
		}
		if !slices.Contains(stopFor[class], sum.Stop) {
			w.violate("%s ended with %q as its stop, for an error of kind %s (%v)", rp.owner, sum.Stop, class, err)
		}
		signalled := !res.signalled.IsZero() && res.signalled.Before(res.ended)
		switch {
		case class == "interrupted" && res.signalled.IsZero():
			w.violate("%s says it was interrupted, but no signal came", rp.owner)
		case signalled && class != "interrupted" && class != "database":
			w.violate("%s was signalled at %v and ended at %v with %v, not ErrInterrupted", rp.owner,
				res.signalled.Sub(w.start), res.ended.Sub(w.start), err)
		}
		// leave says every instance could leave the run: for a fault its script can take it out
		// for, or its daily cap; fault that one of them could leave for a fault.
		leave, fault, allCapped := true, false, true
		for _, ip := range rp.insts {
			capped := w.capped[runKey(rp.owner, ip.id)]
			leave = leave && (ip.mayLeave() || capped)
			fault = fault || ip.mayLeave()
			allCapped = allCapped && capped
		}
		configFault, hangs := false, false
		for _, ip := range rp.insts {
			configFault = configFault || ip.p[fInvalid] > 0
			hangs = hangs || ip.p[fHang] > 0
		}
		switch class {
		case "no_instance":
			if !leave || !fault {
				w.violate("%s ended with ErrNoInstance, but not every one of its instances had a fault that takes it out or "+
					"spent its daily cap, or none had a fault: %v", rp.owner, err)
			}
		case "database":
			if !sc.db.faulty() {
				w.violate("%s ended with ErrDatabase with no database fault scheduled: %v", rp.owner, err)
			}
		case "stalled":
			if !hangs {
				w.violate("%s stalled with no call on its instances scheduled to hang: %v", rp.owner, err)
			}
		case "configuration":
			if !configFault {
				w.violate("%s ended with ErrConfiguration with no 'bad request' answer scheduled: %v", rp.owner, err)
			}
		}
		if rp.signal == 0 && !leave && !sc.db.faulty() && !hangs && !configFault && class != "nil" {
			w.violate("%s ended with %v though nothing scheduled could stop it", rp.owner, err)
		}
		// A run whose every instance spent its daily cap says so, without an error: it did its
		// day's work; unless one was taken out for a fault first (ErrNoInstance), the run
		// stopped for another reason before, it had no row left anyway (the block it was refused
		// may have been one asked for ahead), or it had claimed its --limit of rows, which the
		// cap let through to the last. One that says so had every instance spent.
		switch {
		case sum.Stop == "daily cap reached" && !allCapped:
			var spent []string
			for _, ip := range rp.insts {
				spent = append(spent, fmt.Sprintf("%s:%v", ip.id, w.capped[runKey(rp.owner, ip.id)]))
			}
			w.violate("%s says its daily caps were reached, but not every instance was told it spent its cap: %v", rp.owner, spent)
		case allCapped && sum.Stop != "daily cap reached" && sum.Stop != "no due rows left" && sum.Stop != "limit reached" &&
			class != "interrupted" && class != "database" &&
			class != "stalled" && class != "configuration" && sum.Stop != "max_duration reached" &&
			(class != "no_instance" || !fault):
			w.violate("every instance of %s spent its daily cap, but it ended with %q (%v)", rp.owner, sum.Stop, err)
		}
		switch sum.Stop {
		case "limit reached":
			if rp.cfg.Limit == 0 || sum.Claimed < int64(rp.cfg.Limit) {
				w.violate("%s says it reached its limit %d after claiming %d", rp.owner, rp.cfg.Limit, sum.Claimed)
			}
		case "max_duration reached":
			if rp.cfg.MaxDuration == 0 || res.ended.Sub(res.started) < rp.cfg.MaxDuration {
				w.violate("%s says it reached max_duration %v after %v", rp.owner, rp.cfg.MaxDuration, res.ended.Sub(res.started))
			}
		case "no due rows left":
			// Its last claim, from the start of the order, or its last count of the rows due
			// found nothing, and it had nothing in hand then: it wrote nothing after.
			if !b.lastFromStart || !b.lastClaimNone {
				w.violate("%s says no due rows are left, but its last claim (from the start: %v) was not empty", rp.owner, b.lastFromStart)
			}
			if b.lastWrite.After(b.lastClaim) {
				w.violate("%s says no due rows are left, but wrote rows at %v after its last claim at %v", rp.owner,
					b.lastWrite.Sub(w.start), b.lastClaim.Sub(w.start))
			}
		}

		// The summary's counts are the model's, but for writes whose answer was lost.
		seen := store.Written{Done: b.written.Done - b.unacked.Done, Retried: b.written.Retried - b.unacked.Retried,
			Failed: b.written.Failed - b.unacked.Failed, Released: b.written.Released - b.unacked.Released}
		if sum.Done != seen.Done || sum.Rescheduled != seen.Retried || sum.Failed != seen.Failed ||
			sum.Released != seen.Released || sum.Claimed != b.claims {
			w.violate("%s's summary (claimed %d, done %d, rescheduled %d, failed %d, released %d) is not what the store saw "+
				"(claimed %d, done %d, rescheduled %d, failed %d, released %d)", rp.owner, sum.Claimed, sum.Done, sum.Rescheduled,
				sum.Failed, sum.Released, b.claims, seen.Done, seen.Retried, seen.Failed, seen.Released)
		}
		if sum.Lost != b.fenced {
			w.violate("%s's summary counts %d results lost to another claim; the store fenced off %d", rp.owner, sum.Lost, b.fenced)
		}
		var calls, rateLimited int64
		for _, api := range res.apis {
			calls += w.calls[runKey(rp.owner, api.plan.id)]
			rateLimited += w.rateLimits[runKey(rp.owner, api.plan.id)]
		}
		var summed, checksSummed, checks int64
		for k, v := range sum.Calls {
			if strings.HasPrefix(k, "getAvatar ") {
				summed += v
			}
			if strings.HasPrefix(k, "checkWhatsapp ") {
				checksSummed += v
			}
		}
		for _, api := range res.apis {
			checks += w.checkCalls[runKey(rp.owner, api.plan.id)]
		}
		if summed != calls || sum.RateLimited != rateLimited || checksSummed != checks {
			w.violate("%s's summary counts %d GetAvatar calls, %d 429s and %d CheckWhatsapp calls; the API saw %d, answered %d "+
				"and saw %d", rp.owner, summed, sum.RateLimited, checksSummed, calls, rateLimited, checks)
		}

		// Every claimed row was written once or given back, unless a newer claim took it over
		// or the database took no writes at the end (the run says so).
		for k, c := range w.claims {
			if k.owner != rp.owner {
				continue
			}
			switch {
			case c.landed > 1:
				w.violate("%s wrote row %d %d times through one claim (token %d)", k.owner, k.id, c.landed, k.token)
			case c.landed == 0 && w.latest[k.id] == k && !mayUnwrite && !c.ackLost:
				row, _ := w.model.Row(k.id)
				w.violate("%s claimed row %d (token %d) and neither wrote it nor gave it back (locked by %q, status %s), and ended with %v",
					k.owner, k.id, k.token, row.LockedBy, row.Status, err)
			}
		}

		// The run's own calls: never more than an instance's rps in any 1 s.
		for _, api := range res.apis {
			if at, ok := overRate(w.runSends[runKey(rp.owner, api.plan.id)], api.plan.rps, 0); !ok {
				w.violate("instance %s (rps %d) got %d GetAvatar calls from %s within 1 s from %v", api.plan.id, api.plan.rps,
					api.plan.rps+1, rp.owner, at.Sub(w.start))
			}
		}
	}
	w.checkInstances()
	w.checkCaps()
}

// checkInstances checks every instance's calls, whatever runs sent them: never more than its
// rps in any 1 s, nor more than its check_rps of CheckWhatsapp, nor more than one state check.
// w.mu must be held.
func (w *world) checkInstances() {
	plans, runs := map[string]instPlan{}, map[string]int{}
	for _, rp := range w.sc.runs {
		for _, ip := range rp.insts {
			plans[ip.id] = ip
			runs[ip.id]++
		}
	}
	for _, id := range slices.Sorted(maps.Keys(plans)) {
		p := plans[id]
		if at, ok := overRate(w.sends[id], p.rps, 0); !ok {
			w.violate("instance %s (rps %d) got %d GetAvatar calls within 1 s from %v", id, p.rps, p.rps+1, at.Sub(w.start))
		}
		checkRPS := p.checkRPS
		if checkRPS == 0 {
			checkRPS = enrich.CheckRPSDefault
		}
		if at, ok := overRate(w.checks[id], checkRPS, time.Microsecond); !ok {
			w.violate("instance %s (check_rps %d) got %d CheckWhatsapp calls within 1 s from %v", id, checkRPS,
				checkRPS+1, at.Sub(w.start))
		}
		// The state checks' limiter (x/time/rate) computes its waits in float seconds: a wait
		// of 999.999999 ms for 1 s is its rounding, not a second request in the second.
		if at, ok := overRate(w.states[id], 1, time.Microsecond); !ok {
			i := slices.Index(w.states[id], at)
			w.violate("instance %s got 2 GetStateInstance calls within 1 s from %v: %v apart", id, at.Sub(w.start),
				w.states[id][i+1].Sub(at))
		}
	}
}

// checkCaps checks that no instance got more GetAvatar calls on one day than its daily cap,
// whatever runs sent them: each call counts on the budget's day of the block its slot came from,
// as the budget counted it. A block handed out just before the day turns may be sent just
// after: counted on the day of the budget's clock when it left, the day after may see that many
// more than its cap (overDay counts them). w.mu must be held.
func (w *world) checkCaps() {
	b := w.sc.budget
	if b == nil {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(b.caps)) {
		limit := b.caps[id]
		for _, d := range slices.Sorted(maps.Keys(w.dayCalls[id])) {
			n := w.dayCalls[id][d]
			switch {
			case n > limit:
				w.violate("instance %s (max_per_day %d) got %d GetAvatar calls on slots the budget counted on %v", id, limit, n, d)
			case n == limit:
				w.capFull++
			}
		}
		var day memstore.Date
		var n int64
		days := 0
		for _, at := range w.sends[id] {
			d, err := w.budget.Today(at.Add(b.shift), b.day)
			if err != nil {
				w.violate("the day of %v: %v", at, err)
				return
			}
			if days == 0 || d > day {
				day, n = d, 0
				days++
			}
			if n++; n == limit+1 {
				w.overDay++
			}
		}
		if days > 1 {
			w.turned++
		}
	}
}

// overRate reports whether calls (in time order) keep to rps in every 1 s window (less
// rounding), and if not where the first window too full begins.
func overRate(calls []time.Time, rps int, rounding time.Duration) (time.Time, bool) {
	for i := 0; i+rps < len(calls); i++ {
		if calls[i+rps].Sub(calls[i]) < time.Second-rounding {
			return calls[i], false
		}
	}
	return time.Time{}, true
}
