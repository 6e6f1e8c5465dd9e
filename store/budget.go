package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BudgetPolicy is how an instance's shared rate adapts: the same numbers for every process, so
// they are passed with each statement rather than stored.
type BudgetPolicy struct {
	// Headroom widens every slot by this share: requests arrive with jitter, and a server that
	// enforces a minimum gap rejects one that arrives early. It is the least headroom: every cut
	// widens the instance's by HeadroomStep (to HeadroomMax at most), and every HeadroomEase
	// without a cut narrows it back by a step, so the schedule learns the jitter of the path to
	// the server.
	Headroom, HeadroomStep, HeadroomMax float64
	HeadroomEase                        time.Duration
	// Cut is the multiplicative decrease on a 429; Floor the lowest rate, as a share of MaxRPS.
	Cut, Floor float64
	// Quiet is how long after a cut the rate starts to climb back, by Step of MaxRPS every
	// StepEvery.
	Quiet     time.Duration
	Step      float64
	StepEvery time.Duration
	// Guard is the gap left before a block that goes to another run than the previous block's.
	Guard time.Duration
	// Yield is how far ahead of now another run may have booked an instance before a run gives
	// way: it is handed no slots (Grant.Busy) while the other run keeps booking, so that each
	// instance is spent by one run at a time. 0: runs never give way, and take turns in blocks.
	Yield time.Duration
}

// check refuses a policy the statements cannot use: a headroom that widens but never eases
// (HeadroomEase is a divisor).
func (p BudgetPolicy) check() error {
	if p.HeadroomStep > 0 && p.HeadroomEase <= 0 {
		return fmt.Errorf("bad budget policy: HeadroomStep %v needs a HeadroomEase above 0, not %s", p.HeadroomStep, p.HeadroomEase)
	}
	return nil
}

// DayStart says when an instance's day begins, for its daily cap: at Offset into the day in the
// IANA time zone Zone ("UTC", "Europe/Moscow").
type DayStart struct {
	Zone   string
	Offset time.Duration
}

// BudgetRequest asks for a block of an instance's send slots.
type BudgetRequest struct {
	// Instance is the idInstance.
	Instance string
	// Owner is the run asking (its locked_by), so that a block following another run's block
	// keeps BudgetPolicy.Guard away from it.
	Owner string
	// Answered says the run had a real answer from the instance since its last request: the
	// instance is alive, and runs starting beside it need no state check.
	Answered bool
	// MaxRPS is the configured rate: the ceiling the shared rate climbs back to.
	MaxRPS float64
	// Want is how many slots to reserve; 0 reserves none and only reads the instance's day.
	Want int
	// Refund is how many slots of the caller's previous block went unsent: they are given back
	// to today's count (never to the schedule: their time has passed).
	Refund int
	// Refunded is how many slots Owner gave back to this instance by its earlier requests, as
	// far as it knows (the Refund of each request it had an answer to). The budget records each
	// owner's total and gives back only what it has not counted yet, so a request asked again
	// after its answer was lost (it committed, the reply did not arrive) gives nothing back
	// twice.
	Refunded int64
	// PerDay caps the slots handed out on one day; 0 means no cap.
	PerDay int64
	// Kept is how many instances the run keeps, and Table the table it works on ("": not said),
	// recorded with a refusal (Grant.WantedKept, Grant.WantedTable) and with the slots it is
	// granted (Grant.KeeperKept, Grant.KeeperTable).
	Kept  int
	Table string
	// Standby says the run stands by for the run on its table that keeps the instance: its
	// refusal is not recorded, so that it hides no other run's want from the keeper.
	Standby bool
	// Day says when the day turns.
	Day DayStart
}

// Grant is a block of send slots: Slots of them, the first at Start, then one every Interval.
// Times are the database's clock; Now is that clock when the grant was made, so a caller can
// place the slots on its own clock (never earlier than they are).
type Grant struct {
	Start, Now time.Time
	Interval   time.Duration
	Slots      int
	// Rate is the instance's shared rate now, requests per second, and Headroom the share by
	// which Interval is wider than 1/Rate.
	Rate, Headroom float64
	// Used is how many slots the instance was handed today, this block included.
	Used int64
	// QuotaSpent says the instance answered 466 (its plan's quota is spent) earlier today.
	QuotaSpent bool
	// Busy says another run keeps the instance (BudgetPolicy.Yield): no slots were handed out,
	// and Start is where that run's bookings end.
	Busy bool
	// WantedBy is the last run given no slots because another kept the instance, WantedAt when
	// (the budget's clock), and WantedKept how many instances it kept then: a run that keeps at
	// least two more hands the instance over (HandOver).
	WantedBy    string
	WantedAt    time.Time
	WantedKept  int
	WantedTable string
	// Keeper is the run whose block came last, KeeperTable the table it works on ("": not
	// known) and KeeperKept how many instances it kept then: with Busy, the run that keeps the
	// instance. Runs on one table gather their instances in the run that keeps most.
	Keeper      string
	KeeperTable string
	KeeperKept  int
	// AnsweredAt is the last time any run had a real answer from the instance.
	AnsweredAt time.Time
}

// End is where the grant's slots end on the budget's clock: the instance's next free slot when
// the grant was the last booked, which Trim names.
func (g Grant) End() time.Time { return g.Start.Add(time.Duration(g.Slots) * g.Interval) }

// maxGrant bounds one block, so a huge configured rate cannot make one statement hand out
// millions of slots.
const maxGrant = 1_000_000

// Reserve hands out the next req.Want slots of an instance's schedule, shared by every process
// that spends the instance: one UPDATE moves the instance's next free slot (tat) past the block,
// so together the processes never exceed the rate, however many there are. The rate is the
// instance's, adapted by every process's 429s (Throttled), and climbs back to req.MaxRPS after a
// quiet period. With a daily cap, fewer slots (or none) are granted once the day's are spent.
func (s *Store) Reserve(ctx context.Context, req BudgetRequest, p BudgetPolicy) (Grant, error) {
	if req.Instance == "" || !(req.MaxRPS > 0) || req.Want < 0 || req.Refund < 0 || req.Refunded < 0 || req.PerDay < 0 {
		return Grant{}, fmt.Errorf("reserve slots: bad request %+v", req)
	}
	if err := p.check(); err != nil {
		return Grant{}, fmt.Errorf("reserve slots: %w", err)
	}
	zone := req.Day.Zone
	if zone == "" {
		zone = "UTC"
	}
	want := min(req.Want, maxGrant)
	args := []any{s.clock(), req.Instance, req.MaxRPS, want, req.Refund, req.PerDay, zone, req.Day.Offset.Microseconds(),
		p.Headroom, p.Quiet.Microseconds(), p.Step, p.StepEvery.Microseconds(), req.Owner, p.Guard.Microseconds(), req.Answered,
		p.HeadroomStep, p.HeadroomEase.Microseconds(), req.Refunded, p.Yield.Microseconds(), req.Kept, req.Table, req.Standby}
	for attempt := 0; ; attempt++ {
		var g Grant
		var intervalUS int64
		var wantedBy, wantedTable, keeper, keeperTable *string
		err := s.pool.QueryRow(ctx, s.q.reserve, args...).
			Scan(&g.Start, &g.Now, &intervalUS, &g.Slots, &g.Rate, &g.Headroom, &g.Used, &g.QuotaSpent, &g.AnsweredAt, &g.Busy,
				&wantedBy, &g.WantedAt, &g.WantedKept, &wantedTable, &keeper, &keeperTable, &g.KeeperKept)
		if errors.Is(err, pgx.ErrNoRows) && attempt == 0 {
			// The instance's first use: make its row, then reserve.
			if _, err := s.pool.Exec(ctx, s.q.budgetInsert, s.clock(), req.Instance, req.MaxRPS); err != nil {
				return Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
			}
			continue
		}
		if err != nil {
			return Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
		}
		g.Interval = time.Duration(intervalUS) * time.Microsecond
		for _, f := range []struct{ to, from *string }{{&g.WantedBy, wantedBy}, {&g.WantedTable, wantedTable}, {&g.Keeper, keeper},
			{&g.KeeperTable, keeperTable}} {
			if f.from != nil {
				*f.to = *f.from
			}
		}
		return g, nil
	}
}

// Keeping is who keeps an instance, as the budget says: the run whose block came last (Owner),
// the table it works on ("": not known), and where its bookings end (Until), with the budget's
// clock when read (Now).
type Keeping struct {
	Instance     string
	Owner, Table string
	Until, Now   time.Time
}

// Keepers reads who keeps each of the instances that has a row, and each instance whose last
// block a run on table took ("": none), in instance order, taking nothing and locking nothing: a
// run that stands by for the run on its table that keeps its instances looks at them all with
// one statement every few seconds, not at each with a reservation, and a run learns whether runs
// on its table keep instances it does not use (enrich/keep.go). Five runs standing by beside one
// that kept 50 instances, each asking for every instance every 2 s, cost PostgreSQL three times
// the CPU of a run alone.
func (s *Store) Keepers(ctx context.Context, table string, instances []string) ([]Keeping, error) {
	rows, err := s.pool.Query(ctx, s.q.keepers, s.clock(), instances, table)
	if err != nil {
		return nil, fmt.Errorf("read the instances' keepers: %w", err)
	}
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Keeping, error) {
		var k Keeping
		err := row.Scan(&k.Instance, &k.Owner, &k.Table, &k.Until, &k.Now)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the instances' keepers: %w", err)
	}
	return ks, nil
}

// HandOver makes the instance's schedule to's, the run that wanted it, if from still keeps it:
// from's booked blocks stand, to's first block follows them after p.Guard, and every other run
// gives way to to while they last. It reports whether from still kept it.
func (s *Store) HandOver(ctx context.Context, instance, from, to string, p BudgetPolicy) (bool, error) {
	tag, err := s.pool.Exec(ctx, s.q.handOver, s.clock(), instance, from, to, p.Guard.Microseconds())
	if err != nil {
		return false, fmt.Errorf("hand %s over to %s: %w", instance, to, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Trim gives back the slots owner booked on the instance after at (the budget's clock), if its
// bookings are still the last and still end at end: a run that gave its rows back at the end of
// the table gives their slots back too, for the runs that still hold rows, and never a block it
// was granted since it looked. It reports whether it did.
func (s *Store) Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, s.q.trim, s.clock(), instance, owner, at, end)
	if err != nil {
		return false, fmt.Errorf("trim the bookings of %s: %w", instance, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReserveState hands out the instance's next GetStateInstance slot: one every second (with
// Headroom), shared by every run's pre-flight check and probes, as Green API allows. It returns
// the slot and the database's clock as it was granted.
func (s *Store) ReserveState(ctx context.Context, instance string, maxRPS float64, p BudgetPolicy) (slot, now time.Time, err error) {
	slot, now, err = s.reserveSlot(ctx, instance, maxRPS, time.Second, p)
	if err != nil {
		return slot, now, fmt.Errorf("reserve a state check of %s: %w", instance, err)
	}
	return slot, now, nil
}

// ReserveCheck hands out the instance's next CheckWhatsapp slot, at rps a second (with Headroom)
// shared by every run: CheckWhatsapp has its own limit (and quota), apart from GetAvatar's
// budget. Its schedule is a row of its own in the budget table, named CheckKey(instance).
func (s *Store) ReserveCheck(ctx context.Context, instance string, rps float64, p BudgetPolicy) (slot, now time.Time, err error) {
	if !(rps > 0) {
		return slot, now, fmt.Errorf("reserve a confirmation of %s: rps %v is not above 0", instance, rps)
	}
	slot, now, err = s.reserveSlot(ctx, CheckKey(instance), rps, time.Duration(float64(time.Second)/rps), p)
	if err != nil {
		return slot, now, fmt.Errorf("reserve a confirmation of %s: %w", instance, err)
	}
	return slot, now, nil
}

// CheckKey names an instance's CheckWhatsapp schedule in the budget table.
func CheckKey(instance string) string { return instance + "/checkWhatsapp" }

// reserveSlot hands out the next of key's one-at-a-time slots, every interval, making key's row
// on its first use.
func (s *Store) reserveSlot(ctx context.Context, key string, maxRPS float64, every time.Duration, p BudgetPolicy) (slot, now time.Time, err error) {
	for attempt := 0; ; attempt++ {
		err = s.pool.QueryRow(ctx, s.q.reserveState, s.clock(), key, p.Headroom, float64(every.Microseconds())).Scan(&slot, &now)
		if errors.Is(err, pgx.ErrNoRows) && attempt == 0 {
			if _, err := s.pool.Exec(ctx, s.q.budgetInsert, s.clock(), key, maxRPS); err != nil {
				return slot, now, err
			}
			continue
		}
		return slot, now, err
	}
}

// Throttled records a 429 for a request the instance got at sent (the database's clock): the
// instance's rate is cut and its headroom widened for every process, once per round of requests
// sent at the old rate, and a Retry-After (when not 0) pauses the instance for everyone.
func (s *Store) Throttled(ctx context.Context, instance string, sent time.Time, maxRPS float64, retryAfter time.Duration, p BudgetPolicy) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("record a 429 of %s: %w", instance, err)
	}
	_, err := s.pool.Exec(ctx, s.q.throttled, s.clock(), instance, sent, maxRPS*p.Floor, p.Cut, retryAfter.Microseconds(),
		p.Headroom, p.HeadroomStep, p.HeadroomEase.Microseconds(), p.HeadroomMax)
	if err != nil {
		return fmt.Errorf("record a 429 of %s: %w", instance, err)
	}
	return nil
}

// QuotaSpent records that the instance answered 466 today (in day's terms), so that later runs
// that day skip it without a call.
func (s *Store) QuotaSpent(ctx context.Context, instance string, day DayStart) error {
	zone := day.Zone
	if zone == "" {
		zone = "UTC"
	}
	if _, err := s.pool.Exec(ctx, s.q.quotaSpent, s.clock(), instance, zone, day.Offset.Microseconds()); err != nil {
		return fmt.Errorf("record the spent quota of %s: %w", instance, err)
	}
	return nil
}
