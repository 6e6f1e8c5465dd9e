package memstore

// The model of the instances' shared budget: enrich_instances and enrich_refunds as the
// statements of store/sql.go change them (sqlBudgetInsert, sqlReserve, sqlReserveState,
// sqlThrottled, sqlQuotaSpent), behind the methods of enrich.Budget. Each method is one
// statement under the row's lock, done under the model's mutex.
//
// The arithmetic is the database's: times are microseconds (pgx sends a timestamptz truncated
// to the microsecond, and durations go as bigint microseconds), slots are
// ceil(1e6 * (1 + headroom) / rate) µs apart, an interval multiplied by a float8 is rounded to
// the microsecond half to even (interval_mul's rint), the steps of the climb and of the ease
// are floors of exact microsecond quotients (extract(epoch ...) is numeric since PostgreSQL 14),
// and floats are combined in the SQL's order, with no fused multiply-add, so a grant of the
// model is the database's to the bit. The day is the timestamp in the day's time zone, less its
// offset, cut to a date; the stored day only moves forward.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// maxGrant is store's bound on one block.
const maxGrant = 1_000_000

// Date is a calendar day, as days since 1970-01-01 (a PostgreSQL date).
type Date int64

// Time is the date's midnight, UTC.
func (d Date) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

func (d Date) String() string { return d.Time().Format(time.DateOnly) }

// BudgetRow is one row of enrich_instances: an instance's GetAvatar schedule, or another
// method's (store.CheckKey). Times are microseconds since the Unix epoch. A NULL column has its
// Has… field false.
type BudgetRow struct {
	Instance string
	// Tat is the next free slot; TatOwner took the block that ends there, working on TatTable
	// ("": NULL) and keeping TatKept instances.
	Tat         int64
	TatOwner    string
	HasTatOwner bool
	TatTable    string
	TatKept     int
	// StateTat is the next free slot of the one-at-a-time schedule (GetStateInstance, or
	// CheckWhatsapp on a CheckKey row).
	StateTat   int64
	AnsweredAt int64
	Rate       float64
	// CutAt is the last cut of the rate, RaisedAt its last climb, NotBefore the end of a
	// Retry-After pause.
	CutAt, RaisedAt, NotBefore int64
	// Day is the day Used counts; QuotaDay the day the instance answered 466.
	Day         Date
	HasDay      bool
	Used        int64
	QuotaDay    Date
	HasQuotaDay bool
	// Headroom is what the last cut left (0: the policy's least).
	Headroom float64
	// WantedBy is the last run refused as busy, at WantedAt ("" and epoch: none), keeping
	// WantedKept instances, working on WantedTable ("": NULL).
	WantedBy    string
	WantedAt    int64
	WantedKept  int
	WantedTable string
}

// refund is one row of enrich_refunds.
type refund struct {
	refunded, prev int64
	seenAt         int64
}

type refundKey struct{ instance, owner string }

// Budget is the model of the shared budget. It is safe for concurrent use.
type Budget struct {
	now func() time.Time

	mu      sync.Mutex
	rows    map[string]*BudgetRow
	refunds map[refundKey]*refund
	zones   map[string]*time.Location
}

// NewBudget returns an empty budget whose clock is now (time.Now when nil): the database's
// clock, which may differ from the runs'.
func NewBudget(now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	return &Budget{now: now, rows: map[string]*BudgetRow{}, refunds: map[refundKey]*refund{}, zones: map[string]*time.Location{}}
}

// Now is the budget's clock, as the database reads it (to the microsecond).
func (b *Budget) Now() time.Time { return usTime(us(b.now())) }

// Row returns a copy of the row named key (an instance, or store.CheckKey of one).
func (b *Budget) Row(key string) (BudgetRow, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.rows[key]
	if !ok {
		return BudgetRow{}, false
	}
	return *r, true
}

// Refunded is the total of slots owner gave back to instance's day, as enrich_refunds records
// it (0 when no row).
func (b *Budget) Refunded(instance, owner string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f := b.refunds[refundKey{instance, owner}]; f != nil {
		return f.refunded
	}
	return 0
}

// Today is the day of t in day's terms, as the statements compute it (not the stored day).
func (b *Budget) Today(t time.Time, day store.DayStart) (Date, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	loc, err := b.zone(day.Zone)
	if err != nil {
		return 0, err
	}
	return dayOf(us(t), loc, day.Offset.Microseconds()), nil
}

// epoch is 'epoch', the columns' default for "never".
const epoch int64 = 0

// us is t as the database stores it: microseconds since the Unix epoch, truncated.
func us(t time.Time) int64 { return t.Truncate(time.Microsecond).UnixMicro() }

func usTime(x int64) time.Time { return time.UnixMicro(x).UTC() }

// dayOf is ((t AT TIME ZONE zone) - offset µs)::date.
func dayOf(t int64, loc *time.Location, offsetUS int64) Date {
	l := usTime(t).In(loc)
	wall := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
	wall = wall.Add(-time.Duration(offsetUS) * time.Microsecond)
	y, m, d := wall.Date()
	return Date(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// zone loads a time zone ("" is UTC) as AT TIME ZONE would, failing as it does for a name it
// does not know. b.mu must be held.
func (b *Budget) zone(name string) (*time.Location, error) {
	if name == "" {
		name = "UTC"
	}
	if loc, ok := b.zones[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return nil, fmt.Errorf("time zone %q not recognized", name)
	}
	b.zones[name] = loc
	return loc, nil
}

// floorDiv is floor(a / b) of the exact quotient, or an error for b = 0 as numeric division
// fails.
func floorDiv(a, b int64) (int64, error) {
	if b == 0 {
		return 0, errors.New("division by zero")
	}
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q, nil
}

// mulUS is n µs multiplied by a float8, an interval: rounded half to even (interval_mul).
func mulUS(factor float64) int64 { return int64(math.RoundToEven(factor)) }

// checkPolicy is store.BudgetPolicy's check.
func checkPolicy(p store.BudgetPolicy) error {
	if p.HeadroomStep > 0 && p.HeadroomEase <= 0 {
		return fmt.Errorf("bad budget policy: HeadroomStep %v needs a HeadroomEase above 0, not %s", p.HeadroomStep, p.HeadroomEase)
	}
	return nil
}

// errNoRows is what a statement that found no row to update returns.
var errNoRows = errors.New("no rows in result set")

// errRateCheck is the table's CHECK (rate > 0) refusing a row.
var errRateCheck = errors.New(`new row for relation "enrich_instances" violates check constraint "enrich_instances_rate_check"`)

// insert is sqlBudgetInsert: the row of key on its first use, its schedule starting now. b.mu
// must be held.
func (b *Budget) insert(key string, rate float64) error {
	if _, ok := b.rows[key]; ok {
		return nil
	}
	if !(rate > 0) {
		return errRateCheck
	}
	b.rows[key] = &BudgetRow{Instance: key, Rate: rate, Tat: us(b.now()), StateTat: epoch, AnsweredAt: epoch,
		CutAt: epoch, RaisedAt: epoch, NotBefore: epoch}
	return nil
}

// Reserve hands out the next req.Want slots of an instance's schedule, as store.Store.Reserve
// does (sqlReserve).
func (b *Budget) Reserve(ctx context.Context, req store.BudgetRequest, p store.BudgetPolicy) (store.Grant, error) {
	if req.Instance == "" || !(req.MaxRPS > 0) || req.Want < 0 || req.Refund < 0 || req.Refunded < 0 || req.PerDay < 0 {
		return store.Grant{}, fmt.Errorf("reserve slots: bad request %+v", req)
	}
	if err := checkPolicy(p); err != nil {
		return store.Grant{}, fmt.Errorf("reserve slots: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
	}
	want := int64(min(req.Want, maxGrant))
	b.mu.Lock()
	defer b.mu.Unlock()
	loc, err := b.zone(req.Day.Zone)
	if err != nil {
		return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
	}
	now := us(b.now())
	for attempt := 0; ; attempt++ {
		g, err := b.reserve(now, req, want, loc, p)
		if errors.Is(err, errNoRows) && attempt == 0 {
			if err := b.insert(req.Instance, req.MaxRPS); err != nil {
				return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
			}
			continue
		}
		if err != nil {
			return store.Grant{}, fmt.Errorf("reserve slots of %s: %w", req.Instance, err)
		}
		return g, nil
	}
}

// reserve is one execution of sqlReserve at now: the refund is recorded (ref, pruned) whether
// the instance's row exists or not, as the statement's data-modifying CTEs run to completion;
// the row is changed only when nothing fails. b.mu must be held.
func (b *Budget) reserve(now int64, req store.BudgetRequest, want int64, loc *time.Location, p store.BudgetPolicy) (store.Grant, error) {
	give := int64(req.Refund)
	// ref: the owner's total given back, and what of this refund the record had not counted
	// (fresh; none when nothing is given back).
	fresh := int64(0)
	var commitRefund func()
	if give > 0 {
		k := refundKey{req.Instance, req.Owner}
		total := req.Refunded + give
		old := b.refunds[k]
		var next refund
		if old == nil {
			next = refund{refunded: total, prev: 0, seenAt: now}
		} else {
			next = refund{refunded: max(old.refunded, total), prev: old.refunded, seenAt: now}
		}
		fresh = min(give, next.refunded-next.prev)
		commitRefund = func() {
			b.refunds[k] = &next
			// pruned: other owners' records not seen for a week.
			for ok, f := range b.refunds {
				if ok.instance == req.Instance && ok.owner != req.Owner && f.seenAt < now-7*24*int64(time.Hour/time.Microsecond) {
					delete(b.refunds, ok)
				}
			}
		}
	}
	r, ok := b.rows[req.Instance]
	if !ok {
		if commitRefund != nil {
			commitRefund()
		}
		return store.Grant{}, errNoRows
	}
	quiet, stepEvery := p.Quiet.Microseconds(), p.StepEvery.Microseconds()
	guard, ease := p.Guard.Microseconds(), p.HeadroomEase.Microseconds()
	maxRPS := req.MaxRPS

	// c: the day of now.
	today := dayOf(now, loc, req.Day.Offset.Microseconds())
	// cur
	curToday := today
	if r.HasDay && r.Day > today {
		curToday = r.Day
	}
	tat := r.Tat
	if !r.HasTatOwner || r.TatOwner != req.Owner {
		tat += mulUS(float64(guard))
	}
	answeredAt := r.AnsweredAt
	if req.Answered {
		answeredAt = now
	}
	var rate float64
	switch {
	case r.Rate >= maxRPS:
		rate = maxRPS
	case now-r.CutAt < mulUS(float64(quiet)):
		rate = r.Rate
	default:
		from := max(r.RaisedAt, r.CutAt+mulUS(float64(quiet)))
		steps, err := floorDiv(now-from, stepEvery)
		if err != nil {
			return store.Grant{}, err
		}
		rate = min(maxRPS, r.Rate+float64(maxRPS*p.Step*float64(steps)))
	}
	used0 := int64(0)
	if r.HasDay && r.Day >= today {
		used0 = r.Used - min(fresh, r.Used)
	}
	headroom, err := easedHeadroom(r, now, p.Headroom, p.HeadroomStep, ease)
	if err != nil {
		return store.Grant{}, err
	}
	// g
	ivF := math.Ceil(1e6 * (1 + headroom) / rate)
	if !(ivF >= math.MinInt64 && ivF < math.MaxInt64) {
		return store.Grant{}, errors.New("bigint out of range")
	}
	iv := int64(ivF)
	start := max(tat, now, r.NotBefore)
	busy := p.Yield > 0 && r.HasTatOwner && r.TatOwner != req.Owner && tat > now+p.Yield.Microseconds()
	var granted int64
	switch {
	case r.HasQuotaDay && r.QuotaDay == curToday, busy:
		granted = 0
	case req.PerDay > 0:
		granted = max(0, min(want, req.PerDay-used0))
	default:
		granted = want
	}
	if !(rate > 0) {
		// A clock gone back past the last climb takes steps off the rate: the CHECK refuses
		// a rate of 0 or less, and the statement fails whole.
		return store.Grant{}, errRateCheck
	}
	// UPDATE
	if commitRefund != nil {
		commitRefund()
	}
	if rate > r.Rate {
		r.RaisedAt = now
	}
	r.Rate = rate
	if granted > 0 {
		r.Tat = start + granted*iv
		r.TatOwner, r.HasTatOwner, r.TatTable, r.TatKept = req.Owner, true, req.Table, req.Kept
	}
	r.AnsweredAt = answeredAt
	if busy && req.Owner != "" && !req.Standby {
		r.WantedBy, r.WantedAt, r.WantedKept, r.WantedTable = req.Owner, now, req.Kept, req.Table
	}
	r.Day, r.HasDay = curToday, true
	r.Used = used0 + granted
	return store.Grant{Start: usTime(start), Now: usTime(now), Interval: time.Duration(iv) * time.Microsecond, Slots: int(granted),
		Rate: rate, Headroom: headroom, Used: used0 + granted, QuotaSpent: r.HasQuotaDay && r.QuotaDay == curToday,
		AnsweredAt: usTime(answeredAt), Busy: busy, WantedBy: r.WantedBy, WantedAt: usTime(r.WantedAt), WantedKept: r.WantedKept,
		WantedTable: r.WantedTable, Keeper: r.TatOwner, KeeperTable: r.TatTable, KeeperKept: r.TatKept}, nil
}

// Keepers reads who keeps each of the instances that has a row, and each instance a run on
// table took the last block of, as store.Store.Keepers does (sqlKeepers).
func (b *Budget) Keepers(ctx context.Context, table string, instances []string) ([]store.Keeping, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read the instances' keepers: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := us(b.now())
	var ks []store.Keeping
	for _, id := range slices.Sorted(maps.Keys(b.rows)) {
		r := b.rows[id]
		if !slices.Contains(instances, id) && (table == "" || r.TatTable != table) {
			continue
		}
		ks = append(ks, store.Keeping{Instance: id, Owner: r.TatOwner, Table: r.TatTable, Until: usTime(r.Tat), Now: usTime(now)})
	}
	return ks, nil
}

// HandOver makes the instance's schedule to's if from still keeps it, as store.Store.HandOver
// does (sqlHandOver).
func (b *Budget) HandOver(ctx context.Context, instance, from, to string, p store.BudgetPolicy) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("hand %s over to %s: %w", instance, to, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.rows[instance]
	if !ok || !r.HasTatOwner || r.TatOwner != from {
		return false, nil
	}
	r.TatOwner, r.TatTable, r.TatKept = to, "", 0
	r.Tat += mulUS(float64(p.Guard.Microseconds()))
	return true, nil
}

// easedHeadroom is the row's headroom as of now: what the last cut left, narrowed by step every
// ease since the cut, never below least.
func easedHeadroom(r *BudgetRow, now int64, least, step float64, ease int64) (float64, error) {
	if r.Headroom <= least {
		return least, nil
	}
	steps, err := floorDiv(now-r.CutAt, ease)
	if err != nil {
		return 0, err
	}
	return max(least, r.Headroom-float64(step*float64(steps))), nil
}

// ReserveState hands out the instance's next GetStateInstance slot, as store.Store.ReserveState
// does.
func (b *Budget) ReserveState(ctx context.Context, instance string, maxRPS float64, p store.BudgetPolicy) (slot, now time.Time, err error) {
	slot, now, err = b.reserveSlot(ctx, instance, maxRPS, time.Second, p)
	if err != nil {
		return slot, now, fmt.Errorf("reserve a state check of %s: %w", instance, err)
	}
	return slot, now, nil
}

// ReserveCheck hands out the instance's next CheckWhatsapp slot, at rps, on the row
// store.CheckKey(instance), as store.Store.ReserveCheck does.
func (b *Budget) ReserveCheck(ctx context.Context, instance string, rps float64, p store.BudgetPolicy) (slot, now time.Time, err error) {
	if !(rps > 0) {
		return slot, now, fmt.Errorf("reserve a confirmation of %s: rps %v is not above 0", instance, rps)
	}
	slot, now, err = b.reserveSlot(ctx, store.CheckKey(instance), rps, time.Duration(float64(time.Second)/rps), p)
	if err != nil {
		return slot, now, fmt.Errorf("reserve a confirmation of %s: %w", instance, err)
	}
	return slot, now, nil
}

// reserveSlot is sqlReserveState on key's row, made on its first use.
func (b *Budget) reserveSlot(ctx context.Context, key string, maxRPS float64, every time.Duration, p store.BudgetPolicy) (slot, now time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return slot, now, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	at := us(b.now())
	r, ok := b.rows[key]
	if !ok {
		if err := b.insert(key, maxRPS); err != nil {
			return slot, now, err
		}
		r = b.rows[key]
	}
	s := max(r.StateTat, at)
	r.StateTat = s + mulUS((1+p.Headroom)*float64(every.Microseconds()))
	return usTime(s), usTime(at), nil
}

// Throttled records a 429 for a request the instance got at sent (the budget's clock), as
// store.Store.Throttled does (sqlThrottled): nothing when the instance has no row.
func (b *Budget) Throttled(ctx context.Context, instance string, sent time.Time, maxRPS float64, retryAfter time.Duration, p store.BudgetPolicy) error {
	if err := checkPolicy(p); err != nil {
		return fmt.Errorf("record a 429 of %s: %w", instance, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record a 429 of %s: %w", instance, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.rows[instance]
	if !ok {
		return nil
	}
	now, at := us(b.now()), us(sent)
	floor := maxRPS * p.Floor
	cut := r.CutAt <= at
	headroom := r.Headroom
	switch {
	case !cut:
	case r.Headroom <= p.Headroom:
		headroom = min(p.HeadroomMax, p.Headroom+p.HeadroomStep)
	default:
		steps, err := floorDiv(now-r.CutAt, p.HeadroomEase.Microseconds())
		if err != nil {
			return fmt.Errorf("record a 429 of %s: %w", instance, err)
		}
		headroom = min(p.HeadroomMax, p.HeadroomStep+max(p.Headroom, r.Headroom-float64(p.HeadroomStep*float64(steps))))
	}
	rate := r.Rate
	if cut {
		rate = max(floor, r.Rate*p.Cut)
	}
	if !(rate > 0) {
		return fmt.Errorf("record a 429 of %s: %w", instance, errRateCheck)
	}
	r.Headroom, r.Rate = headroom, rate
	if cut {
		r.RaisedAt, r.CutAt = now, now
	}
	r.NotBefore = max(r.NotBefore, now+mulUS(float64(retryAfter.Microseconds())))
	return nil
}

// QuotaSpent records that the instance answered 466 today (in day's terms), as
// store.Store.QuotaSpent does: nothing when the instance has no row.
func (b *Budget) QuotaSpent(ctx context.Context, instance string, day store.DayStart) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record the spent quota of %s: %w", instance, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	loc, err := b.zone(day.Zone)
	if err != nil {
		return fmt.Errorf("record the spent quota of %s: %w", instance, err)
	}
	r, ok := b.rows[instance]
	if !ok {
		return nil
	}
	today := dayOf(us(b.now()), loc, day.Offset.Microseconds())
	if r.HasDay && r.Day > today {
		today = r.Day
	}
	r.QuotaDay, r.HasQuotaDay = today, true
	return nil
}

// Trim gives back the slots owner booked on the instance after at, as store.Store.Trim does:
// only when owner's bookings are the last and still end at end, and never before now.
func (b *Budget) Trim(ctx context.Context, instance, owner string, end, at time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("trim the bookings of %s: %w", instance, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.rows[instance]
	to := max(us(at), us(b.now()))
	if !ok || !r.HasTatOwner || r.TatOwner != owner || r.Tat != us(end) || r.Tat <= to {
		return false, nil
	}
	r.Tat = to
	return true, nil
}
