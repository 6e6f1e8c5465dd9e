package enrich

import (
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestPacer walks the pacing policy step by step on explicit times: gaps measured from actual
// sends with headroom, one cut (and one widening of the headroom) per round of 429s, a floor,
// Retry-After for the instance, and the climb back after a quiet period.
func TestPacer(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// gap is the gap at rps after cuts widened the headroom.
	gap := func(rps float64, cuts int) time.Duration {
		return time.Duration(float64(time.Second) / rps * (1 + paceHeadroom + float64(cuts)*headroomStep))
	}
	type step struct {
		name string
		do   func(p *pacer)
		now  int // ms, for next
		// want is the expected next send time (ms from t0, fractional via gap) and rate.
		wantNext time.Time
		wantRate float64
	}
	steps := []step{
		{name: "first request leaves at once", now: 0, wantNext: at(0), wantRate: 10},
		{name: "the next waits a gap plus headroom", do: func(p *pacer) { p.sent(at(0)) }, now: 50,
			wantNext: at(0).Add(gap(10, 0)), wantRate: 10},
		{name: "a late send moves the next slot: gaps are measured on actual sends",
			do: func(p *pacer) { p.sent(at(130)) }, now: 130, wantNext: at(130).Add(gap(10, 0)), wantRate: 10},
		{name: "a 429 cuts the rate and widens the headroom", do: func(p *pacer) { p.throttled(at(130), at(140), 0) }, now: 140,
			wantNext: at(130).Add(gap(8.5, 1)), wantRate: 8.5},
		{name: "a 429 for a request sent before the cut does not cut again",
			do: func(p *pacer) { p.throttled(at(135), at(150), 0) }, now: 150, wantNext: at(130).Add(gap(8.5, 1)), wantRate: 8.5},
		{name: "one sent after the cut does", do: func(p *pacer) { p.sent(at(300)); p.throttled(at(300), at(310), 0) },
			now: 310, wantNext: at(300).Add(gap(7.225, 2)), wantRate: 7.225},
		{name: "Retry-After pauses the instance", do: func(p *pacer) { p.throttled(at(200), at(320), 2*time.Second) },
			now: 320, wantNext: at(2320), wantRate: 7.225},
		{name: "no climb within the quiet period", now: 3309, wantNext: at(3309), wantRate: 7.225},
		{name: "the climb starts after it", now: 3310, wantNext: at(3310), wantRate: 7.725},
		{name: "once a step", now: 3800, wantNext: at(3800), wantRate: 7.725},
		{name: "and again", now: 3810, wantNext: at(3810), wantRate: 8.225},
	}
	p := newPacer(10)
	for _, s := range steps {
		if s.do != nil {
			s.do(&p)
		}
		got := p.next(at(s.now))
		if !got.Equal(s.wantNext) || !near(p.rate(), s.wantRate) {
			t.Fatalf("%s: next = %v, rate = %.3f; want %v, %.3f", s.name, got.Sub(t0), p.rate(), s.wantNext.Sub(t0), s.wantRate)
		}
	}

	t.Run("floor and full recovery", func(t *testing.T) {
		t.Parallel()
		p := newPacer(10)
		now := t0
		for range 100 {
			now = now.Add(time.Second)
			p.sent(now)
			p.throttled(now, now.Add(time.Millisecond), 0)
		}
		if !near(p.rate(), 10*rateFloorShare) {
			t.Fatalf("after 100 cuts the rate is %.3f, want the floor %.3f", p.rate(), 10*rateFloorShare)
		}
		now = now.Add(rateQuiet)
		for range 20 {
			p.next(now)
			now = now.Add(rateStepEvery)
		}
		if !near(p.rate(), 10) {
			t.Fatalf("after the quiet period and 20 s the rate is %.3f, want back at 10", p.rate())
		}
	})
}

// TestPacerHeadroom: the headroom the cuts widened narrows by a step every headroomEase without
// a cut, never below paceHeadroom, and never passes headroomMax; a cut widens the eased one.
func TestPacerHeadroom(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		cuts int           // one a second from t0
		then time.Duration // after the last cut
		want float64
	}{
		{name: "no cut", want: paceHeadroom},
		{name: "one cut", cuts: 1, want: paceHeadroom + headroomStep},
		{name: "three cuts", cuts: 3, want: paceHeadroom + 3*headroomStep},
		{name: "three cuts, almost a headroomEase later", cuts: 3, then: headroomEase - time.Nanosecond, want: paceHeadroom + 3*headroomStep},
		{name: "three cuts, a headroomEase later", cuts: 3, then: headroomEase, want: paceHeadroom + 2*headroomStep},
		{name: "three cuts, an hour later", cuts: 3, then: time.Hour, want: paceHeadroom},
		{name: "a hundred cuts", cuts: 100, want: headroomMax},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPacer(10)
			now := t0
			for range tc.cuts {
				now = now.Add(time.Second)
				p.sent(now)
				p.throttled(now, now, 0)
			}
			now = now.Add(tc.then)
			if got := headroomAt(p.headroom, p.cut, now); !near(got, tc.want) {
				t.Fatalf("headroom %.4f, want %.4f", got, tc.want)
			}
			// The gap is the rate's, widened by the headroom.
			if got, want := p.gap(now), time.Duration(float64(time.Second)/p.rate()*(1+tc.want)); got != want {
				t.Fatalf("gap %s, want %s", got, want)
			}
		})
	}
	t.Run("a cut after an ease widens the eased headroom", func(t *testing.T) {
		t.Parallel()
		p := newPacer(10)
		p.throttled(t0, t0, 0)
		p.throttled(t0, t0.Add(time.Millisecond), 0) // another round: sent at the last cut
		later := t0.Add(time.Millisecond + headroomEase)
		p.throttled(later, later, 0)
		if got, want := headroomAt(p.headroom, p.cut, later), paceHeadroom+2*headroomStep; !near(got, want) {
			t.Fatalf("headroom %.4f, want %.4f", got, want)
		}
	})
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestWroteSpacesFromTheWrite: a request written to its connection later than the pacer let it
// go spaces the next request from the write, alone and on a shared budget's block; a write
// traced before the last send moves nothing.
func TestWroteSpacesFromTheWrite(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101500 * time.Microsecond // 100 ms widened by paceHeadroom
	cases := []struct {
		name  string
		setup func(c *controller)
		send  func(c *controller, at time.Time)
		next  func(c *controller, now time.Time) time.Time
		// gap is the least time from the write to the next send.
		gap time.Duration
	}{
		{name: "alone", setup: func(c *controller) { c.pace = newPacer(10) },
			send: func(c *controller, at time.Time) { c.pace.sent(at) },
			next: func(c *controller, now time.Time) time.Time { return c.pace.next(now) }, gap: func() time.Duration {
				p := newPacer(10)
				return p.gap(t0) // 101.5 ms, as float64 rounds it
			}()},
		{name: "shared", setup: func(c *controller) {
			c.shared = newShared("me", 10, store.DayStart{})
			c.shared.refill(store.Grant{Start: t0, Now: t0, Interval: iv, Slots: 10, Rate: 10, Headroom: paceHeadroom}, t0, 0)
		},
			send: func(c *controller, at time.Time) { c.shared.sent(at) },
			next: func(c *controller, now time.Time) time.Time { at, _ := c.shared.nextSlot(now); return at },
			gap:  time.Duration(float64(iv) * (1 + paceHeadroom*(1-catchUp)) / (1 + paceHeadroom))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := t0
			c := &controller{r: &Runner{cfg: Config{Now: func() time.Time { return now }}}}
			tc.setup(c)
			tc.send(c, t0)
			now = t0.Add(3 * time.Millisecond)
			c.wrote(httptrace.WroteRequestInfo{})
			if got, want := tc.next(c, now), now.Add(tc.gap); !got.Equal(want) {
				t.Fatalf("written 3ms after its send: next at %s, want %s (the write plus %s)", got.Sub(t0), want.Sub(t0), tc.gap)
			}
			// The next request leaves; a write traced now for an earlier one does not pull it back.
			sent := now.Add(tc.gap)
			tc.send(c, sent)
			now = sent.Add(-time.Millisecond)
			c.wrote(httptrace.WroteRequestInfo{})
			if got, want := tc.next(c, sent), sent.Add(tc.gap); !got.Equal(want) {
				t.Fatalf("after a later send: next at %s, want %s", got.Sub(t0), want.Sub(t0))
			}
		})
	}
}

// TestEstimateOffset: the clock offset is the least bound the grants gave, widened by the drift
// allowed since, so one slow reply does not place a block late.
func TestEstimateOffset(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		prev     time.Duration
		prevAt   time.Time
		bound    time.Duration
		at       time.Time
		want     time.Duration
		wantDesc string
	}{
		{name: "the first grant", bound: 7 * time.Millisecond, at: t0, want: 7 * time.Millisecond},
		{name: "a faster reply", prev: 7 * time.Millisecond, prevAt: t0, bound: 2 * time.Millisecond, at: t0.Add(time.Second),
			want: 2 * time.Millisecond},
		{name: "a slower reply keeps the better bound, drifted", prev: 2 * time.Millisecond, prevAt: t0, bound: 9 * time.Millisecond,
			at: t0.Add(10 * time.Second), want: 2*time.Millisecond + time.Millisecond},
		{name: "an hour on, the drift allowance passes a reply", prev: 2 * time.Millisecond, prevAt: t0, bound: 9 * time.Millisecond,
			at: t0.Add(time.Hour), want: 9 * time.Millisecond},
	}
	for _, tc := range cases {
		got, at := estimateOffset(tc.prev, tc.prevAt, tc.bound, tc.at)
		if got != tc.want || !at.Equal(tc.at) {
			t.Errorf("%s: offset %v at %v, want %v", tc.name, got, at.Sub(t0), tc.want)
		}
	}
}

// TestReserveAhead: the next block is asked for once half of this one is sent, taken when this
// one is spent, and given up with it (its slots to give back to the day, its refund counted
// once) when the instance pauses or a 429 cuts the rate.
func TestReserveAhead(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101 * time.Millisecond
	block := func(start time.Time, used int64) store.Grant {
		return store.Grant{Start: start, Now: t0, Interval: iv, Slots: 10, Rate: 10, Headroom: paceHeadroom, Used: used}
	}
	s := newShared("me", 10, store.DayStart{})
	s.refill(block(t0, 10), t0, 0)
	now := t0
	for i := range 10 {
		if got := s.wantAhead(); got != (i >= 5) {
			t.Fatalf("after %d of 10 sent: wantAhead %v", i, got)
		}
		at, ok := s.nextSlot(now)
		if !ok {
			t.Fatalf("slot %d: the block is spent", i)
		}
		now = at
		s.sent(now)
	}
	if _, ok := s.nextSlot(now); ok {
		t.Fatal("a slot past the block")
	}
	end := t0.Add(10 * iv)
	s.ahead, s.aheadAt, s.aheadRefund, s.used = new(block(end, 20)), t0, 0, 20 // as reserveAhead leaves it
	if room := s.room(100); room != 100-20+10 {
		t.Fatalf("room with a block ahead: %d, want 90", room)
	}
	if !s.oursNext() {
		t.Fatal("a block reserved ahead that begins where this one ends: the next slot is not known to be this run's")
	}
	if !s.useAhead() || s.ahead != nil || s.oursNext() {
		t.Fatalf("useAhead: ahead %v, oursNext %v; want the next block in use, and none known after it", s.ahead, s.oursNext())
	}
	if at, ok := s.nextSlot(now); !ok || !at.Equal(end) {
		t.Fatalf("first slot of the block ahead: %v %v, want %v", at.Sub(t0), ok, end.Sub(t0))
	}

	// Given up: 3 slots of this block unsent, the block ahead (which gave 2 back) all unsent.
	s.unsent = 2
	s.ahead, s.aheadAt, s.aheadRefund = new(block(end.Add(10*iv), 30)), t0, 2
	s.next = 7
	s.drop()
	if s.ahead != nil || s.unsent != 3+10 || s.refunded != 2 || s.used != 30 {
		t.Fatalf("after drop: ahead %v unsent %d refunded %d used %d; want none, 13, 2, 30", s.ahead, s.unsent, s.refunded, s.used)
	}
}

// TestRefundKeepsToItsDay: unsent slots are given back only on the day their block was granted
// (on the budget's clock, in the day's zone): once the day may have turned, they are dropped,
// since the budget would take them off whatever day it stores, which another run may already
// have turned (the budget simulation's seed 3218: 14 slots handed out on a day capped at 10).
func TestRefundKeepsToItsDay(t *testing.T) {
	t.Parallel()
	day := store.DayStart{Zone: "Europe/Moscow", Offset: 30 * time.Minute} // the day turns at 00:30 MSK, 21:30 UTC
	granted := time.Date(2026, 12, 1, 21, 29, 0, 0, time.UTC)
	cases := []struct {
		name string
		now  time.Time
		want int
	}{
		{"the same day", granted.Add(50 * time.Second), 4},
		{"within a second of the turn", granted.Add(59*time.Second + 500*time.Millisecond), 0},
		{"the next day", granted.Add(2 * time.Minute), 0},
	}
	for _, tc := range cases {
		s := newShared("me", 10, day)
		s.refill(store.Grant{Start: granted, Now: granted, Interval: 101 * time.Millisecond, Slots: 10, Rate: 10}, granted, 0)
		s.next = 6
		s.drop()
		if got := s.request("1", 100, 10, tc.now).Refund; got != tc.want {
			t.Errorf("%s: refund %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestDayOf: the day is the wall clock's, less the offset, as the budget's SQL computes it, on the
// night the clocks go back too (Europe/Berlin, 2026-10-25: 03:00 CEST is 02:00 CET again).
func TestDayOf(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	day := store.DayStart{Zone: "Europe/Berlin", Offset: 150 * time.Minute}
	cases := []struct {
		utc  string
		want string
	}{
		{"2026-10-25T00:29:59Z", "2026-10-24"}, // 02:29:59 CEST
		{"2026-10-25T00:30:00Z", "2026-10-25"}, // 02:30 CEST
		{"2026-10-25T01:29:56Z", "2026-10-24"}, // 02:29:56 CET, the repeated hour: the wall clock says the day before again
		{"2026-10-25T01:30:00Z", "2026-10-25"}, // 02:30 CET
	}
	for _, tc := range cases {
		at, _ := time.Parse(time.RFC3339, tc.utc)
		if got := dayOf(at, berlin, day).Format(time.DateOnly); got != tc.want {
			t.Errorf("%s: day %s, want %s", tc.utc, got, tc.want)
		}
	}
}

// TestBlockSize: a block is a second of the rate, no more than the rows waiting beyond the
// slots held, and never shorter than blockLeast, so that at a high rate its slots are not past
// when it arrives (a run at 1,000,000 rps with 3 rows left asked for 3 slots 2 µs apart, found
// them past, and asked again for ever).
func TestBlockSize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		rps   float64
		share int
		want  int
	}{
		{10, 100, 10},
		{10, 3, 3},
		{10, 0, 1},
		{1_000_000, 3, 100_000},
		{1_000_000, 5_000_000, 1_000_000},
	}
	for _, tc := range cases {
		s := newShared("me", tc.rps, store.DayStart{})
		if got := s.request("1", 0, tc.share, time.Now()).Want; got != tc.want {
			t.Errorf("rps %v, %d rows beyond the slots held: want %d slots, asked %d", tc.rps, tc.share, tc.want, got)
		}
	}
}

// TestHeldWhileAsking: the slots a reservation in flight asked for count as held until its answer
// is taken, so that the run's other instances, reserving at the same moment, do not size their
// blocks by the same rows waiting (at the end of the rows a run held 218 slots it never sent).
func TestHeldWhileAsking(t *testing.T) {
	t.Parallel()
	s := newShared("me", 10, store.DayStart{})
	s.asking = 40
	s.publish()
	if got := s.held.Load(); got != 40 {
		t.Fatalf("held %d while asking for 40, want 40", got)
	}
	s.answer()
	now := time.Now()
	s.refill(store.Grant{Start: now, Now: now, Interval: 101 * time.Millisecond, Slots: 7, Rate: 10}, now, 0)
	if got := s.held.Load(); got != 7 {
		t.Fatalf("held %d after a grant of 7, want 7", got)
	}
}

// TestTrim: at the end of the rows a run gives up the slots of its block after a time, and the
// block reserved ahead; a block asked for ahead meanwhile is given up when it comes (gen), and
// the slots already sent stay. It says where its bookings ended, for the budget to trim them only
// if they still end there.
func TestTrim(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101 * time.Millisecond
	offset := 7 * time.Millisecond // this process's clock minus the budget's
	for _, tc := range []struct {
		name      string
		sent      int           // slots of the 10 sent before the trim
		until     time.Duration // after t0, this process's clock
		ahead     bool          // a block of 10 reserved ahead, which gave 1 slot back
		wantN     int           // slots of the block kept
		wantCut   bool
		wantUnsnt int
	}{
		{"keeps the slots up to until", 2, 250 * time.Millisecond, false, 3, true, 7},
		{"never the slots sent", 6, 250 * time.Millisecond, false, 6, true, 4},
		{"a block that ends before until", 0, 2 * time.Second, false, 10, false, 0},
		{"the block ahead goes", 0, 2 * time.Second, true, 10, true, 9},
		{"until before the block", 0, -time.Second, false, 0, true, 10},
	} {
		s := newShared("me", 10, store.DayStart{})
		s.refill(store.Grant{Start: t0, Now: t0, Interval: iv, Slots: 10, Rate: 10}, t0.Add(offset), 0)
		for range tc.sent {
			at, _ := s.nextSlot(t0)
			s.sent(at)
		}
		if tc.ahead {
			s.ahead, s.aheadRefund = &store.Grant{Start: t0.Add(10 * iv), Now: t0, Interval: iv, Slots: 10, Rate: 10}, 1
		}
		gen := s.gen
		booked, end, cut := s.trim(t0.Add(offset).Add(tc.until))
		wantBooked := t0.Add(10 * iv)
		if tc.ahead {
			wantBooked = t0.Add(20 * iv)
		}
		if !booked.Equal(wantBooked) {
			t.Errorf("%s: the bookings ended at %v on the budget's clock, want %v", tc.name, booked.Sub(t0), wantBooked.Sub(t0))
		}
		if s.n != tc.wantN || cut != tc.wantCut || s.unsent != tc.wantUnsnt || s.ahead != nil || s.gen == gen {
			t.Errorf("%s: %d slots kept, cut %v, %d unsent, ahead %v, gen %d→%d; want %d, %v, %d, none, a new gen",
				tc.name, s.n, cut, s.unsent, s.ahead, gen, s.gen, tc.wantN, tc.wantCut, tc.wantUnsnt)
		}
		if want := t0.Add(time.Duration(tc.wantN) * iv); !end.Equal(want) {
			t.Errorf("%s: the slots kept end at %v on the budget's clock, want %v", tc.name, end.Sub(t0), want.Sub(t0))
		}
		if held := s.held.Load(); held != int64(tc.wantN-tc.sent) {
			t.Errorf("%s: %d slots held after the trim, want %d", tc.name, held, tc.wantN-tc.sent)
		}
	}
}

// TestHandedLateWidensTheGuard: a run whose sends run late hands an instance over with the guard
// widened by that lateness, and sends the block's last slot that late: without it, a send 15 ms
// late, made up only 0.66 ms a slot, missed the 10 ms guard at the block's end, and a slot was
// lost at every hand-over.
func TestHandedLateWidensTheGuard(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101 * time.Millisecond
	late := 15 * time.Millisecond
	for _, widened := range []bool{false, true} {
		s := newShared("me", 10, store.DayStart{})
		s.refill(store.Grant{Start: t0, Now: t0, Interval: iv, Slots: 3, Rate: 10, Headroom: paceHeadroom}, t0, 0)
		now := t0.Add(late)
		at, ok := s.nextSlot(now)
		if !ok || !at.Equal(now) {
			t.Fatalf("the first slot, %v late: %v %v", late, at.Sub(t0), ok)
		}
		s.sent(now)
		if got := s.lateness(); got != late {
			t.Fatalf("lateness after a send %v late: %v", late, got)
		}
		if widened {
			s.handedLate = s.lateness() // as letGoLocked sets it
		}
		at, ok = s.nextSlot(now)
		if !ok {
			t.Fatalf("widened %v: the second slot skipped", widened)
		}
		s.sent(at)
		at, ok = s.nextSlot(at)
		if ok != widened {
			t.Errorf("widened %v: the last slot, %v after its time: sent %v; want it sent only with the guard widened",
				widened, at.Sub(t0.Add(2*iv)), ok)
		}
	}
}

// TestRescueTheLastSlot: a block's last slot, late by more than the guard after a late send
// (made up only slowly, catchUp) but by less than half a slot, is skipped unless the next slot
// is known to be this run's: rescue asks for the block after it first, and with that block
// begun where this one ends the slot is sent. Six processes on 2 cores skipped about 40 such
// slots a run, most at the end of the rows, where blocks are short and none is reserved ahead.
func TestRescueTheLastSlot(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101 * time.Millisecond
	grant := func(start time.Time, slots int) store.Grant {
		return store.Grant{Start: start, Now: t0, Interval: iv, Slots: slots, Rate: 10, Headroom: paceHeadroom}
	}
	for _, tc := range []struct {
		name     string
		late     time.Duration // how late the first of the block's two slots is sent
		ahead    time.Duration // where the block reserved ahead begins after this one's end; <0: none
		tried    bool          // a block was asked for ahead already
		at       time.Duration // when the last slot is looked at; 0: long before its time
		rescue   bool
		lastSlot bool // the last slot is sent
	}{
		{name: "on time", late: 0, ahead: -1, rescue: false, lastSlot: true},
		{name: "late within the guard", late: 8 * time.Millisecond, ahead: -1, rescue: false, lastSlot: true},
		{name: "late, no block ahead", late: 20 * time.Millisecond, ahead: -1, rescue: true, lastSlot: false},
		{name: "late, the block ahead follows on", late: 20 * time.Millisecond, ahead: 0, rescue: true, lastSlot: true},
		{name: "late, another run's block between", late: 20 * time.Millisecond, ahead: blockGuard, rescue: true, lastSlot: false},
		{name: "late, a block was asked for ahead already", late: 20 * time.Millisecond, ahead: -1, tried: true, rescue: false, lastSlot: false},
		{name: "looked at later than half a slot after it", late: 20 * time.Millisecond, ahead: 0, at: iv + iv/2 + time.Millisecond, rescue: false, lastSlot: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newShared("me", 10, store.DayStart{})
			s.refill(grant(t0, 2), t0, 0)
			now := t0.Add(tc.late)
			if at, ok := s.nextSlot(now); !ok || !at.Equal(now) {
				t.Fatalf("the first slot, %v late: %v %v", tc.late, at.Sub(t0), ok)
			}
			s.sent(now)
			s.aheadTried = tc.tried
			now = t0.Add(iv / 4) // long before the last slot's time
			if tc.at > 0 {
				now = t0.Add(tc.at)
			}
			if got := s.rescue(now); got != tc.rescue {
				t.Fatalf("rescue: %v, want %v", got, tc.rescue)
			}
			if tc.ahead >= 0 {
				end := t0.Add(2 * iv)
				s.ahead = new(grant(end.Add(tc.ahead), 10)) // as reserveAhead leaves it
			}
			at, ok := s.nextSlot(now)
			if ok != tc.lastSlot {
				t.Fatalf("the last slot sent: %v (at %v), want %v", ok, at.Sub(t0), tc.lastSlot)
			}
			if ok {
				if gap := at.Sub(t0.Add(tc.late)); gap < s.minGap() {
					t.Errorf("the last slot %v after the first: less than the least gap %v", gap, s.minGap())
				}
			}
		})
	}
}

// TestTrimAfterALateLastSlot: a block's last slot rescued (sent late, up to half a slot, because
// the block reserved after it is this run's) and then the run reaches the end of the rows and
// gives that block back (trim): the slots given back begin a slot after the late request, less
// the guard, so that the next run's first request, a guard after them, comes a slot after it.
// They began where the block ended: at 2 rps a request 166 ms late and the next run's 349 ms
// after it, three requests within a second (simulation seed 936964).
func TestTrimAfterALateLastSlot(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 505 * time.Millisecond
	for _, late := range []time.Duration{0, blockGuard, 166 * time.Millisecond, iv / 2} {
		t.Run(late.String(), func(t *testing.T) {
			t.Parallel()
			s := newShared("me", 2, store.DayStart{})
			s.refill(store.Grant{Start: t0, Now: t0, Interval: iv, Slots: 1, Rate: 2, Headroom: paceHeadroom}, t0, 0)
			s.ahead = new(store.Grant{Start: t0.Add(iv), Now: t0, Interval: iv, Slots: 1, Rate: 2, Headroom: paceHeadroom})
			sentAt := t0.Add(late)
			if at, ok := s.nextSlot(sentAt); !ok || !at.Equal(sentAt) {
				t.Fatalf("the last slot, %v late, block ahead ours: %v %v; want sent", late, at.Sub(t0), ok)
			}
			s.sent(sentAt)
			booked, kept, _ := s.trim(sentAt.Add(endAhead))
			if !booked.Equal(t0.Add(2 * iv)) {
				t.Fatalf("booked until %v, want %v", booked.Sub(t0), 2*iv)
			}
			if next := kept.Add(blockGuard); next.Sub(sentAt) < iv {
				t.Errorf("slots given back from %v: the next run's first request %v after this run's last, want at least %v",
					kept.Sub(t0), next.Sub(sentAt), iv)
			}
			if want := later(t0.Add(iv), sentAt.Add(iv-blockGuard)); !kept.Equal(want) {
				t.Errorf("slots given back from %v, want %v: no later than needed", kept.Sub(t0), want.Sub(t0))
			}
		})
	}
}

// TestTrimKeepsALateLastSlot: a run whose sends run late reaches the end of the rows and gives
// back the block reserved ahead (trim): the last slot it keeps, no longer followed by a block of
// its own, would have to be met within the guard, and a run 15 ms late skipped it (six processes
// on 2 cores: about ten slots a run). The slots given back begin that much later, so the last
// slot kept is sent and the next run's first request still comes a slot after it.
func TestTrimKeepsALateLastSlot(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	iv := 101 * time.Millisecond
	for _, late := range []time.Duration{0, blockGuard / 2, 15 * time.Millisecond, 30 * time.Millisecond} {
		t.Run(late.String(), func(t *testing.T) {
			t.Parallel()
			s := newShared("me", 10, store.DayStart{})
			s.refill(store.Grant{Start: t0, Now: t0, Interval: iv, Slots: 3, Rate: 10, Headroom: paceHeadroom}, t0, 0)
			s.ahead = new(store.Grant{Start: t0.Add(3 * iv), Now: t0, Interval: iv, Slots: 10, Rate: 10, Headroom: paceHeadroom})
			sentAt := t0.Add(late)
			if at, ok := s.nextSlot(sentAt); !ok || !at.Equal(sentAt) {
				t.Fatalf("the first slot, %v late: %v %v", late, at.Sub(t0), ok)
			}
			s.sent(sentAt)
			booked, kept, cut := s.trim(t0.Add(2 * iv)) // the rows end with the block
			if !cut || !booked.Equal(t0.Add(13*iv)) || s.ahead != nil || s.n != 3 {
				t.Fatalf("trim: cut %v, booked until %v, ahead %v, %d slots kept; want the block ahead given back, 3 kept",
					cut, booked.Sub(t0), s.ahead, s.n)
			}
			last := sentAt
			for i := 1; i < 3; i++ {
				at, ok := s.nextSlot(last)
				if !ok {
					t.Fatalf("slot %d of 3 skipped, the sends %v late", i+1, late)
				}
				if gap := at.Sub(last); gap < s.minGap() {
					t.Fatalf("slot %d %v after the one before: less than the least gap %v", i+1, gap, s.minGap())
				}
				s.sent(at)
				last = at
			}
			if next := kept.Add(blockGuard); next.Sub(last) < iv {
				t.Errorf("slots given back from %v: the next run's first request %v after this run's last, want at least %v",
					kept.Sub(t0), next.Sub(last), iv)
			}
			if kept.After(t0.Add(3 * iv).Add(late)) {
				t.Errorf("slots given back from %v: later than the block's end and the lateness, %v", kept.Sub(t0), 3*iv+late)
			}
		})
	}
}
