package enrich_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
)

// sentAt records when each GetAvatar left, and to which instance, and counts the state checks.
type sentAt struct {
	mu     sync.Mutex
	times  []time.Time
	ids    []string
	states int
}

// timedAPI is slowAPI that records its sends, and says it is starting until startingUntil.
type timedAPI struct {
	slowAPI
	sent          *sentAt
	startingUntil time.Time
}

func (a timedAPI) GetStateInstance(ctx context.Context) (string, error) {
	a.sent.mu.Lock()
	a.sent.states++
	a.sent.mu.Unlock()
	if time.Now().Before(a.startingUntil) {
		return greenapi.StateStarting, nil
	}
	return a.slowAPI.GetStateInstance(ctx)
}

func (a timedAPI) GetAvatar(ctx context.Context, t greenapi.Target) (greenapi.Avatar, error) {
	a.sent.mu.Lock()
	a.sent.times = append(a.sent.times, time.Now())
	a.sent.ids = append(a.sent.ids, a.id)
	a.sent.mu.Unlock()
	return a.slowAPI.GetAvatar(ctx, t)
}

// pod is one run of runPods: it starts at start into the test and, when stop is not 0, is
// stopped (as by SIGTERM) at stop. It works on the table named table ("": "contacts"). Its
// instance i says it is starting until starting(i) into the test (nil: never), and is one of
// its instances when lists(i) (nil: all are). stall is its Config.StallTimeout (0: the default);
// behind says it is told a run of its table started first (Runner.StandBy).
type pod struct {
	start, stop, stall time.Duration
	table              string
	starting           func(i int) time.Duration
	lists              func(i int) bool
	behind             bool
}

// podsRun is what runPods saw: when the test began, each run's sends (and their instances),
// summary, error and budget statements, and the rows still due at the end on every table.
type podsRun struct {
	t0       time.Time
	sends    [][]time.Time
	ids      [][]string
	sums     []enrich.Summary
	errs     []error
	reserves [][]time.Time
	states   []int
	due      map[string]int64
}

// countingBudget records when each run asked the budget for slots (Reserve, peeks included),
// and how many times it looked at who keeps the instances (Keepers).
type countingBudget struct {
	*memstore.Budget
	mu    sync.Mutex
	by    map[string][]time.Time
	looks int
}

func (b *countingBudget) Keepers(ctx context.Context, table string, instances []string) ([]store.Keeping, error) {
	b.mu.Lock()
	b.looks++
	b.mu.Unlock()
	return b.Budget.Keepers(ctx, table, instances)
}

func (b *countingBudget) Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error) {
	b.mu.Lock()
	b.by[req.Owner] = append(b.by[req.Owner], time.Now())
	b.mu.Unlock()
	return b.Budget.Reserve(ctx, req, p)
}

// passes counts how often an instance's sends went from one run to another: each costs the
// guard, and shifts the instance's slots.
func (p podsRun) passes() int {
	type send struct {
		at  time.Time
		run int
	}
	by := map[string][]send{}
	for r := range p.sends {
		for i, at := range p.sends[r] {
			by[p.ids[r][i]] = append(by[p.ids[r][i]], send{at, r})
		}
	}
	n := 0
	for _, ss := range by {
		slices.SortFunc(ss, func(a, b send) int { return a.at.Compare(b.at) })
		for i := 1; i < len(ss); i++ {
			if ss[i].run != ss[i-1].run {
				n++
			}
		}
	}
	return n
}

// all is every run's sends, in order.
func (p podsRun) all() []time.Time {
	var all []time.Time
	for _, s := range p.sends {
		all = append(all, s...)
	}
	slices.SortFunc(all, time.Time.Compare)
	return all
}

// in counts the sends of ts within [from, to) into the test.
func (p podsRun) in(ts []time.Time, from, to time.Duration) int {
	n := 0
	for _, t := range ts {
		if d := t.Sub(p.t0); d >= from && d < to {
			n++
		}
	}
	return n
}

// table is the model of a table of rows phone numbers, all due.
func table(rows int) *memstore.Store {
	st := memstore.New(nil)
	cs := make([]store.NewContact, rows)
	for i, p := range phones(rows) {
		cs[i] = store.NewContact{PhoneNumber: p}
	}
	st.Enqueue(cs...)
	return st
}

// podConfig is run p's configuration on the shared budget: owner pod-p, on the table contacts,
// its own randomness, no progress lines; the caller adds the instances.
func podConfig(p int, budget enrich.Budget) enrich.Config {
	return enrich.Config{Owner: fmt.Sprintf("pod-%d", p), Table: "contacts", Budget: budget, ProgressInterval: -1,
		Rand: enrich.LockedRand(uint64(p + 1))}
}

// runPods runs pods on one shared budget, each with the same n instances at 10 rps answering
// after 300 ms, until each ends; each table the pods name has rows rows. It must be called in a
// synctest bubble.
func runPods(t *testing.T, n, rows int, pods []pod) podsRun {
	t.Helper()
	tables := map[string]*memstore.Store{}
	budget := &countingBudget{Budget: memstore.NewBudget(nil), by: map[string][]time.Time{}}
	res := podsRun{t0: time.Now(), sends: make([][]time.Time, len(pods)), ids: make([][]string, len(pods)), sums: make([]enrich.Summary, len(pods)),
		errs: make([]error, len(pods)), reserves: make([][]time.Time, len(pods)), states: make([]int, len(pods)), due: map[string]int64{}}
	var runs sync.WaitGroup
	for p, pd := range pods {
		sent := &sentAt{}
		cfg := podConfig(p, budget)
		if pd.table != "" {
			cfg.Table = pd.table
		}
		cfg.StallTimeout = pd.stall
		st := tables[cfg.Table]
		if st == nil {
			st = table(rows)
			tables[cfg.Table] = st
		}
		for i := range n {
			if pd.lists != nil && !pd.lists(i) {
				continue
			}
			api := timedAPI{slowAPI: slowAPI{id: fmt.Sprintf("1101%06d", i), latency: 300 * time.Millisecond}, sent: sent}
			if pd.starting != nil {
				api.startingUntil = res.t0.Add(pd.starting(i))
			}
			cfg.Instances = append(cfg.Instances, enrich.Instance{API: api, RPS: 10})
		}
		r, err := enrich.NewRunner(st, cfg)
		if err != nil {
			t.Fatal(err)
		}
		runs.Go(func() {
			time.Sleep(pd.start)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if pd.stop > 0 {
				stop := time.AfterFunc(pd.stop-pd.start, cancel)
				defer stop.Stop()
			}
			if pd.behind {
				r.StandBy()
			}
			res.sums[p], res.errs[p] = r.Run(ctx)
			sent.mu.Lock()
			res.sends[p], res.ids[p], res.states[p] = sent.times, sent.ids, sent.states
			sent.mu.Unlock()
		})
	}
	runs.Wait()
	for name, st := range tables {
		due, err := st.Due(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		res.due[name] = due
	}
	for p := range pods {
		res.reserves[p] = budget.by[fmt.Sprintf("pod-%d", p)]
	}
	return res
}

// left is how many rows are still due on every table.
func (p podsRun) left() int64 {
	n := int64(0)
	for _, d := range p.due {
		n += d
	}
	return n
}

// done fails the test unless every run ended without an error and the runs called each of rows
// rows once, leaving none due; it returns every call, in order.
func (p podsRun) done(t *testing.T, rows int) []time.Time {
	t.Helper()
	for r, err := range p.errs {
		if err != nil {
			t.Fatalf("run %d: %v (%+v)", r, err, p.sums[r])
		}
	}
	all := p.all()
	if p.left() != 0 || len(all) != rows {
		t.Fatalf("%d rows still due, %d calls for %d rows", p.left(), len(all), rows)
	}
	return all
}

// podsShare is what one run of shareOfBudget measured.
type podsShare struct {
	// whole is the calls sent a second from the first to the last ÷ the budget: ramp-up and tail
	// included, an instance left idle while another still calls costing its share.
	whole float64
	// tail is the calls sent in the last two seconds ÷ the budget (at the least headroom): how
	// well the runs spent it while the last rows ran out.
	tail float64
}

// shareOfBudget runs procs runs at once on one table of rows rows and n instances until nothing
// is due, and returns the share of the budget they spent. No instance may pass from run to run
// more than once (runs on one table gather their instances in one run).
func shareOfBudget(t *testing.T, procs, n, rows int) podsShare {
	t.Helper()
	var share podsShare
	synctest.Test(t, func(t *testing.T) {
		res := runPods(t, n, rows, make([]pod, procs))
		for p, err := range res.errs {
			if err != nil {
				t.Errorf("run %d: %v (%+v)", p, err, res.sums[p])
			}
		}
		all := res.all()
		if len(all) != rows || res.left() != 0 {
			t.Fatalf("%d calls for %d rows, %d still due", len(all), rows, res.left())
		}
		end := all[len(all)-1].Sub(res.t0)
		if passes := res.passes(); passes > n {
			t.Errorf("the instances passed from run to run %d times, want at most %d: once each", passes, n)
		}
		budget := 10 * float64(n)
		share.whole = float64(rows-1) / all[len(all)-1].Sub(all[0]).Seconds() / budget
		share.tail = float64(res.in(all, end-2*time.Second, end+time.Nanosecond)) / 2 / (budget / 1.01)
	})
	return share
}

// TestPodsSpendTheBudget: six runs sharing 20 instances through the budget (six pods of one
// Deployment) on one table spend it as one run does, to the end of the rows: they gather the
// instances in one run, and the others stand by (keep.go), no instance passing from run to run
// more than once. When the runs evened the instances out, each run keeping its share and the
// table their one queue at the end (Runner.endQueue), six runs spent 0.986–0.998 of one run's
// share over 40 runs (median 0.995), their last 2 s 0.858–1.010 of the budget (median 0.962);
// when each run called the rows it held at the end, the last 2 s 0.858–0.929; when the runs took
// turns on every instance, block by block, the whole run 0.9705.
func TestPodsSpendTheBudget(t *testing.T) {
	t.Parallel()
	const n, rows, runs = 20, 4800, 5
	one := shareOfBudget(t, 1, n, rows)
	var wholes, tails []float64
	for range runs {
		six := shareOfBudget(t, 6, n, rows)
		wholes, tails = append(wholes, six.whole/one.whole), append(tails, six.tail)
	}
	slices.Sort(wholes)
	slices.Sort(tails)
	t.Logf("%d rows on %d instances at 10 rps, %d times: six runs spent %.4f of what one run did (%.4f of the budget); their last 2 s %.3f of the budget",
		rows, n, runs, wholes, one.whole, tails)
	// The runs' goroutines interleave differently from one run to the next: under the race
	// detector the runs sometimes each book some instances as they start, and gathering them
	// costs a little (0.9958 of one run, the last 2 s 0.972, in 3 of 30).
	if m, least := wholes[runs/2], wholes[0]; m < 0.998 || least < 0.99 {
		t.Errorf("six runs spent a median %.4f of what one run did, at least %.4f; want at least 0.998 and 0.99", m, least)
	}
	if m := tails[runs/2]; m < 0.98 {
		t.Errorf("six runs spent a median %.3f of the budget in their last 2 s, want at least 0.98", m)
	}
}

// lateEnd is how much later the runs' last call came than it would have had one queue fed every
// instance its last rows in the order of their slots: the calls of the last second, each
// instance's slots going on from its last call before then at the least headroom's interval.
func (p podsRun) lateEnd() time.Duration {
	type call struct {
		at time.Time
		id string
	}
	var calls []call
	for r := range p.sends {
		for i, at := range p.sends[r] {
			calls = append(calls, call{at, p.ids[r][i]})
		}
	}
	slices.SortFunc(calls, func(a, b call) int { return a.at.Compare(b.at) })
	last := calls[len(calls)-1].at
	cut := last.Add(-time.Second)
	next := map[string]time.Time{}
	after := 0
	for _, c := range calls {
		if c.at.After(cut) {
			after++
		} else {
			next[c.id] = c.at.Add(101 * time.Millisecond) // 10 rps, 1% headroom
		}
	}
	var ideal time.Time
	for range after {
		first := ""
		for id, at := range next {
			if first == "" || at.Before(next[first]) || at.Equal(next[first]) && id < first {
				first = id
			}
		}
		ideal = next[first]
		next[first] = ideal.Add(101 * time.Millisecond)
	}
	return last.Sub(ideal)
}

// TestLastRowsTakeTheFirstSlots: at the end of the table the runs' last rows go to the first
// slots any of their instances has, as one run's rows do from its one queue: the last call comes
// when it would have had one queue fed every instance. Two things sent the last rows a slot
// late, every other instance idle meanwhile. A run's claimer claimed again only when answers
// woke it, which at 300 ms of latency came just before its instances' next sends, so when the
// table ran dry each run had rows for one slot of each instance, not two, and the last rows
// claimed went a slot later than another run's instances could have sent them. And a run that
// saw none of its instances kept by another for a moment (their keepers stop booking one after
// another at the end) took itself for alone, claimed a full batch, and gave it back 150 ms later.
// Over 12 times 5 runs of six runs the last call came a median of 0–81 ms late (20 or less in 6
// of the 12), 50 ms or more in half the runs; then a median of 0 ms (10 of 10 times 5 runs).
//
// Runs on one table now gather the instances they share in one run (keep.go), which calls the
// last rows from its one queue. When each run lists half of the instances, each instance listed
// by three runs, every run keeps some to the end, and their queues still split the last rows:
// over 20 runs the last call came at most 3 ms late in 8, 53–212 ms late in 4, and 0.5–1.0 s
// late in 8 (when the runs evened their instances out instead of gathering them: 0–10 ms in 17
// of 20, 111 ms in one, 2.4 s in two). A run that kept all the instances it listed learned of the
// others only from its look at the budget (Runner.look), and one with no room to claim asks
// whether anything is still due (tableEnd.noneDue): without either, the last call came 1–4 s
// late.
func TestLastRowsTakeTheFirstSlots(t *testing.T) {
	t.Parallel()
	const n, rows = 20, 4800
	for _, tc := range []struct {
		name  string
		lists func(p int) func(i int) bool
		runs  int
		most  time.Duration // the median's bound
	}{
		{"every run lists every instance", func(int) func(int) bool { return nil }, 7, 10 * time.Millisecond},
		{"each run lists half", func(p int) func(int) bool { return func(i int) bool { return (i+n-3*p)%n < n/2 } }, 9, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pods := make([]pod, 6)
			for p := range pods {
				pods[p].lists = tc.lists(p)
			}
			var late []time.Duration
			for range tc.runs {
				synctest.Test(t, func(t *testing.T) {
					res := runPods(t, n, rows, pods)
					res.done(t, rows)
					late = append(late, res.lateEnd())
				})
			}
			slices.Sort(late)
			t.Logf("the last call came %v after one queue's would have", late)
			if m := late[tc.runs/2]; m > tc.most {
				t.Errorf("the last call came a median %v after one queue's would have, want at most %v", m, tc.most)
			}
		})
	}
}

// TestLateRunGetsItsShare: a run on another table that starts beside one that keeps every
// instance gets its share of them within seconds, while the budget stays spent; when the first
// run stops, the other takes its instances over at once, and finishes its rows.
func TestLateRunGetsItsShare(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, rows = 20, 6000
		budget := 10.0 * n / 1.01 // a second's calls at the least headroom
		res := runPods(t, n, rows, []pod{{stop: 25 * time.Second}, {start: 5 * time.Second, table: "others"}})
		if !errors.Is(res.errs[0], enrich.ErrInterrupted) || res.errs[1] != nil {
			t.Fatalf("runs ended with %v and %v; want the first interrupted, the second done", res.errs[0], res.errs[1])
		}
		all := res.all()
		if res.due["others"] != 0 || len(res.sends[1]) != rows {
			t.Fatalf("%d rows of the second run's table still due, %d calls for its %d rows", res.due["others"], len(res.sends[1]), rows)
		}
		// From 5 s after the second run started until the first stopped: both at work, the
		// budget spent.
		late, total := res.in(res.sends[1], 10*time.Second, 25*time.Second), res.in(all, 10*time.Second, 25*time.Second)
		t.Logf("10–25 s: %d calls, %d of them the late run's; after the stop until 1 s before the end: %d calls",
			total, late, res.in(all, 27*time.Second, all[len(all)-1].Sub(res.t0)-time.Second))
		if share := float64(late) / float64(total); share < 0.4 {
			t.Errorf("the late run sent %.3f of the calls while both ran, want at least 0.4 (its share is half)", share)
		}
		if spent := float64(total) / 15 / budget; spent < 0.98 {
			t.Errorf("while both ran the runs spent %.3f of the budget, want at least 0.98", spent)
		}
		// From 2 s after the first run stopped: the second alone spends the whole budget.
		end := all[len(all)-1].Sub(res.t0) - time.Second
		if spent := float64(res.in(all, 27*time.Second, end)) / (end - 27*time.Second).Seconds() / budget; spent < 0.98 {
			t.Errorf("after the first run stopped the second spent %.3f of the budget, want at least 0.98", spent)
		}
	})
}

// TestRunsOnOneTableStandBy: a run that starts beside one on its table that keeps every instance
// stands by: it calls nothing and takes no instance while the other keeps booking them (it calls
// the same rows), asks for none (one statement a second reads who keeps them all), and its stall
// watchdog, with a timeout far shorter than its wait, leaves it be. When the keeper stops, it
// takes every instance within a few seconds and finishes the rows. The runs used to even their instances out, each hand-over a
// guard lost and the instance's slots shifted, and six processes spent 0.994 of one's budget.
func TestRunsOnOneTableStandBy(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, rows = 20, 8000
		const stop = 25 * time.Second
		budget := 10.0 * n / 1.01 // a second's calls at the least headroom
		res := runPods(t, n, rows, []pod{{stop: stop}, {start: 5 * time.Second, stall: 5 * time.Second}})
		if !errors.Is(res.errs[0], enrich.ErrInterrupted) || res.errs[1] != nil {
			t.Fatalf("runs ended with %v and %v; want the first interrupted, the second done", res.errs[0], res.errs[1])
		}
		all := res.all()
		if res.left() != 0 || len(all) != rows {
			t.Fatalf("%d rows still due, %d calls for %d rows", res.left(), len(all), rows)
		}
		standby := res.sends[1]
		if before := res.in(standby, 0, stop); before > 0 {
			t.Errorf("the second run called %d rows while the first kept the instances, want none", before)
		}
		if passes := res.passes(); passes > n {
			t.Errorf("the instances passed from run to run %d times, want at most %d: once, after the stop", passes, n)
		}
		// The first run's last block ends within 1.25 s of its stop, and the second takes an
		// instance at its first look (every second) a second (standbyGrace) after that.
		if took := standby[0].Sub(res.t0) - stop; took > 3500*time.Millisecond {
			t.Errorf("the second run's first call came %v after the first stopped, want within 3.5 s: its last block, a second, and a look", took)
		}
		asks := res.in(res.reserves[1], 6*time.Second, stop)
		t.Logf("standing by, the second run asked for an instance %d times from 6 s to the stop; it called from %v after the stop",
			asks, standby[0].Sub(res.t0)-stop)
		if asks > 0 {
			t.Errorf("standing by, the second run asked for an instance %d times from 6 s to the stop, want none: its look reads the budget", asks)
		}
		from, end := stop+4*time.Second, all[len(all)-1].Sub(res.t0)-time.Second
		if spent := float64(res.in(all, from, end)) / (end - from).Seconds() / budget; spent < 0.98 {
			t.Errorf("after the first run stopped the second spent %.3f of the budget, want at least 0.98", spent)
		}
	})
}

// TestRunBehindWaitsForTheFirst: a run told that a run of its table started first (as pods of a
// Job that start together are, by the runs table) checks and books its instances a look later,
// so that it stands by for those the first run keeps, with no state check of its own, and takes
// only the others: here the first run lists half of the instances, and the second takes the
// other half. No instance passes from run to run while the first runs.
func TestRunBehindWaitsForTheFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, rows = 20, 4000
		half := func(i int) bool { return i < n/2 }
		res := runPods(t, n, rows, []pod{{lists: half}, {behind: true}})
		res.done(t, rows)
		firstEnd := res.sends[0][len(res.sends[0])-1]
		var onFirsts int
		for i, at := range res.sends[1] {
			var id int
			fmt.Sscanf(res.ids[1][i], "1101%06d", &id)
			if half(id) && at.Before(firstEnd) {
				onFirsts++
			}
		}
		t.Logf("the second run: %d state checks, %d calls (%d on the first run's instances before it ended), the first %d calls",
			res.states[1], len(res.sends[1]), onFirsts, len(res.sends[0]))
		if onFirsts > 0 || res.states[1] > n/2 {
			t.Errorf("the second run called %d rows on the first run's instances while it ran, and checked the state %d times; "+
				"want none, and only its other %d instances checked", onFirsts, res.states[1], n/2)
		}
		if len(res.sends[1]) == 0 || res.sends[1][0].Sub(res.t0) > 3*time.Second {
			t.Errorf("the second run made %d calls, and no first call within 3 s: the instances the first run does not list are its", len(res.sends[1]))
		}
	})
}

// TestRunsOnOneTableGather: runs on one table that each got some of the instances (here the
// first run's second half said it was starting while the second run began) gather them in one
// run, each instance handed over once, and that run then calls the rest of the rows alone,
// spending the whole budget. Each run kept its share to the end before, and at the end of the
// rows the instances' last calls scattered over a slot: 81 slots lost after them, against 1 for
// one process.
func TestRunsOnOneTableGather(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, rows = 20, 6000
		budget := 10.0 * n / 1.01
		late := func(i int) time.Duration {
			if i >= n/2 {
				return 3 * time.Second
			}
			return 0
		}
		res := runPods(t, n, rows, []pod{{starting: late}, {start: 500 * time.Millisecond}})
		all := res.done(t, rows)
		both := res.in(res.sends[1], 0, 3*time.Second)
		passes := res.passes()
		t.Logf("the second run called %d rows before the first run's instances were ready; %d hand-overs; calls by run: %d, %d",
			both, passes, len(res.sends[0]), len(res.sends[1]))
		if both == 0 {
			t.Fatal("the second run called nothing while half the first run's instances were starting: the test did not split the instances")
		}
		if passes > n {
			t.Errorf("the instances passed from run to run %d times, want at most %d: once each", passes, n)
		}
		gathered := 10 * time.Second
		end := all[len(all)-1].Sub(res.t0) - time.Second
		ones := []int{res.in(res.sends[0], gathered, end+time.Second), res.in(res.sends[1], gathered, end+time.Second)}
		if min(ones[0], ones[1]) > 0 {
			t.Errorf("from %v both runs called (%d and %d rows), want one run to have gathered every instance", gathered, ones[0], ones[1])
		}
		if spent := float64(res.in(all, gathered, end)) / (end - gathered).Seconds() / budget; spent < 0.98 {
			t.Errorf("once gathered the runs spent %.3f of the budget, want at least 0.98", spent)
		}
	})
}

// TestFewInstancesManyRuns: runs on tables of their own that outnumber their instances, or
// nearly, cannot each keep several: a run that keeps none is handed one by a run that keeps two,
// and with more runs than instances the runs take turns of keepTurn (30 s). No run waits for
// another to end, and the turns cost the budget little.
func TestFewInstancesManyRuns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		n, runs      int
		rows         int           // each run's table
		firstWithin  time.Duration // each run's first call
		leastOfEvenS float64       // each run's calls until the first run is done ÷ an even share of them, at least
	}{
		{"one instance, two runs", 1, 2, 750, 45 * time.Second, 0.5},
		{"two instances, two runs", 2, 2, 1500, 5 * time.Second, 0.8},
		{"two instances, three runs", 2, 3, 1000, 45 * time.Second, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				pods := make([]pod, tc.runs)
				for i := range pods {
					pods[i].start = time.Duration(i) * time.Second
					pods[i].table = fmt.Sprintf("table%d", i)
				}
				res := runPods(t, tc.n, tc.rows, pods)
				all := res.done(t, tc.rows*tc.runs)
				spent := float64(len(all)-1) / all[len(all)-1].Sub(all[0]).Seconds() / (10 * float64(tc.n) / 1.01)
				firstDone := all[len(all)-1]
				for _, s := range res.sends {
					if len(s) > 0 && s[len(s)-1].Before(firstDone) {
						firstDone = s[len(s)-1]
					}
				}
				until := firstDone.Sub(res.t0)
				even := float64(res.in(all, 0, until)) / float64(tc.runs)
				for p, s := range res.sends {
					if len(s) == 0 {
						t.Fatalf("run %d sent nothing", p)
					}
					first, sent := s[0].Sub(res.t0)-pods[p].start, res.in(s, 0, until)
					t.Logf("run %d: first call %v after its start, %d calls until %v", p, first, sent, until)
					if first > tc.firstWithin || float64(sent) < tc.leastOfEvenS*even {
						t.Errorf("run %d: first call %v after its start, %d calls until %v; want within %v, and at least %.0f", p, first, sent, until,
							tc.firstWithin, tc.leastOfEvenS*even)
					}
				}
				t.Logf("the budget spent %.4f", spent)
				if spent < 0.98 {
					t.Errorf("the runs spent %.4f of the budget, want at least 0.98", spent)
				}
			})
		})
	}
}

// downBudget is a budget whose database goes away once down is set: every statement fails as a
// refused connection does.
type downBudget struct {
	*memstore.Budget
	down *atomic.Bool
}

var errRefused = errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")

func (b downBudget) Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error) {
	if b.down.Load() {
		return store.Grant{}, errRefused
	}
	return b.Budget.Reserve(ctx, req, p)
}

func (b downBudget) HandOver(ctx context.Context, instance, from, to string, p store.BudgetPolicy) (bool, error) {
	if b.down.Load() {
		return false, errRefused
	}
	return b.Budget.HandOver(ctx, instance, from, to, p)
}

func (b downBudget) Keepers(ctx context.Context, table string, instances []string) ([]store.Keeping, error) {
	if b.down.Load() {
		return nil, errRefused
	}
	return b.Budget.Keepers(ctx, table, instances)
}

func (b downBudget) Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error) {
	if b.down.Load() {
		return false, errRefused
	}
	return b.Budget.Trim(ctx, instance, owner, end, at)
}

// TestWaitingRunEndsWhenTheDatabaseGoesAway: a run that waits for instances another run keeps,
// holding no rows, still finds out that the database went away, and ends after retry_for with
// the database's error (exit 3), as the run that keeps them does, not as a stall.
func TestWaitingRunEndsWhenTheDatabaseGoesAway(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := table(5000)
		var down atomic.Bool
		budget := downBudget{memstore.NewBudget(nil), &down}
		errs := make([]error, 2)
		var runs sync.WaitGroup
		for p := range 2 {
			cfg := podConfig(p, budget)
			cfg.RetryFor = 30 * time.Second
			cfg.Instances = []enrich.Instance{{API: slowAPI{id: "1101000001", latency: 300 * time.Millisecond}, RPS: 10}}
			r, err := enrich.NewRunner(st, cfg)
			if err != nil {
				t.Fatal(err)
			}
			runs.Go(func() {
				time.Sleep(time.Duration(p) * 2 * time.Second)
				_, errs[p] = r.Run(context.Background())
			})
		}
		time.Sleep(10 * time.Second)
		down.Store(true)
		start := time.Now()
		runs.Wait()
		for p, err := range errs {
			if !errors.Is(err, enrich.ErrDatabase) {
				t.Errorf("run %d ended with %v, want the database's error", p, err)
			}
		}
		if took := time.Since(start); took > 45*time.Second {
			t.Errorf("the runs ended %v after the database went away, want within retry_for (30 s) and a little", took)
		}
	})
}

// TestCappedInstanceIsNotKept: an instance whose daily cap is spent is not one a run keeps, so a
// run on another table left with only an instance another run keeps is handed it in turn.
// Before, the capped instance counted as kept, neither run would hand over, and the second run
// stalled (simulation seed 770626).
func TestCappedInstanceIsNotKept(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tables := []*memstore.Store{table(1000), table(1000)}
		budget := memstore.NewBudget(nil)
		sents := []*sentAt{{}, {}}
		errs := make([]error, 2)
		t0 := time.Now()
		var runs sync.WaitGroup
		for p := range 2 {
			cfg := podConfig(p, budget)
			cfg.Instances = []enrich.Instance{
				{API: timedAPI{slowAPI: slowAPI{id: "1101000001", latency: 300 * time.Millisecond}, sent: sents[p]}, RPS: 10, MaxPerDay: 1},
				{API: timedAPI{slowAPI: slowAPI{id: "1101000002", latency: 300 * time.Millisecond}, sent: sents[p]}, RPS: 10},
			}
			cfg.Table = fmt.Sprintf("table%d", p)
			r, err := enrich.NewRunner(tables[p], cfg)
			if err != nil {
				t.Fatal(err)
			}
			runs.Go(func() {
				time.Sleep(time.Duration(p) * 5 * time.Second)
				_, errs[p] = r.Run(context.Background())
			})
		}
		runs.Wait()
		for p, err := range errs {
			if err != nil {
				t.Errorf("run %d: %v", p, err)
			}
		}
		if len(sents[1].times) == 0 {
			t.Fatal("the second run sent nothing")
		}
		if first := sents[1].times[0].Sub(t0); first > 50*time.Second {
			t.Errorf("the second run's first call at %v (it started at 5 s), want within a turn (30 s) and a little", first)
		}
	})
}

// runTogether runs runs at once on st and budget, each with n instances at 10 rps made by api
// (run p, instance i), until each ends, and fails the test for any run's error. It must be
// called in a synctest bubble.
func runTogether(t *testing.T, st enrich.Store, budget enrich.Budget, runs, n int, api func(p, i int) enrich.API) {
	t.Helper()
	var wg sync.WaitGroup
	for p := range runs {
		cfg := podConfig(p, budget)
		for i := range n {
			cfg.Instances = append(cfg.Instances, enrich.Instance{API: api(p, i), RPS: 10})
		}
		r, err := enrich.NewRunner(st, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if sum, err := r.Run(context.Background()); err != nil {
				t.Errorf("run %d: %v (%+v)", p, err, sum)
			}
		})
	}
	wg.Wait()
}

// countingStore counts the claims that found nothing due, and when they came.
type countingStore struct {
	*memstore.Store
	mu    sync.Mutex
	empty []time.Time
}

func (s *countingStore) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	got, err := s.Store.ClaimAfter(ctx, owner, token, n, lease, after)
	if err == nil && len(got) == 0 {
		s.mu.Lock()
		s.empty = append(s.empty, time.Now())
		s.mu.Unlock()
	}
	return got, err
}

// TestFewEmptyClaimsAtTheEnd: once nothing more is due, a run with hundreds of rows still in
// hand looks at the table at most every 50 ms (a claim after its cursor and one from the start),
// not whenever a row is answered. Every answer woke the claimer: one run on 20 instances made
// two empty claims per answer over the last rows, about 600 in 3 s, on the database the
// answers' writes and the other runs' claims need.
func TestFewEmptyClaimsAtTheEnd(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n, rows = 20, 2000
		st := &countingStore{Store: table(rows)}
		sent := &sentAt{}
		runTogether(t, st, memstore.NewBudget(nil), 1, n, func(_, i int) enrich.API {
			// Answers spread over the slot, as real latencies spread them: in step, the
			// instances' answers would wake the claimer together.
			latency := 300*time.Millisecond + time.Duration(i)*5*time.Millisecond
			return timedAPI{slowAPI: slowAPI{id: fmt.Sprintf("1101%06d", i), latency: latency}, sent: sent}
		})
		if len(sent.times) != rows {
			t.Fatalf("%d calls for %d rows", len(sent.times), rows)
		}
		if len(st.empty) == 0 {
			t.Fatal("no claim found the table empty: the run cannot have known it was done")
		}
		tail := st.empty[len(st.empty)-1].Sub(st.empty[0])
		most := 2*int(tail/(50*time.Millisecond)) + 4
		t.Logf("%d empty claims over the last %v (at most %d allowed)", len(st.empty), tail, most)
		if len(st.empty) > most {
			t.Errorf("%d claims found nothing due within %v, want at most %d: two every 50 ms", len(st.empty), tail, most)
		}
	})
}

// TestRunWithNothingToDoEnds: a run that starts beside one that keeps its only instance and
// holds every row has nothing to claim and nothing in hand: it ends at once, saying no due rows
// are left, exit 0, as a run that finds the table empty does. It waited for its turn on the
// instance instead, until the other run ended or its stall watchdog stopped it (simulation seed
// 923323, where the other run's calls met 429s for minutes).
func TestRunWithNothingToDoEnds(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const rows = 200 // 20 s at 10 rps
		res := runPods(t, 1, rows, []pod{{}, {start: 2 * time.Second}})
		if res.errs[0] != nil || res.sums[0].Done != rows || res.left() != 0 {
			t.Fatalf("the first run: %v, %+v, %d still due; want every row done", res.errs[0], res.sums[0], res.left())
		}
		second := res.sums[1]
		if res.errs[1] != nil || second.Stop != "no due rows left" || second.Claimed != 0 {
			t.Fatalf("the second run: %v, %+v; want no due rows left, nothing claimed", res.errs[1], second)
		}
		if elapsed := second.Elapsed; elapsed > 5*time.Second {
			t.Errorf("the second run took %v to see it had nothing to do, want at most 5 s (the first ran %v)", elapsed, res.sums[0].Elapsed)
		}
	})
}
