package store_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/internal/storecontract"
	"github.com/enrich-dev/enrich/store"
)

// TestContract runs the store contract the engine relies on against PostgreSQL; memstore's
// TestContract runs the same cases against the in-memory model of the engine's simulation.
func TestContract(t *testing.T) {
	t.Parallel()
	storecontract.Run(t, func(t *testing.T) storecontract.Subject {
		b := setup(t)
		return storecontract.Subject{
			Store:   b.store,
			Now:     b.clock.Now,
			Advance: func(d time.Duration) { b.clock.Advance(d) },
			Enqueue: b.enqueuePhones,
			Row: func(t *testing.T, id int64) storecontract.Row {
				c := b.row(t, id)
				r := storecontract.Row{Status: c.Status, Attempts: c.Attempts, NextAttemptAt: c.NextAttemptAt,
					URLAvatar: c.URLAvatar, Exists: c.ExistsWhatsapp}
				if c.Reason != nil {
					r.Reason = *c.Reason
				}
				if c.LockedBy != nil {
					r.LockedBy = *c.LockedBy
				}
				if c.LockedUntil != nil {
					r.LockedUntil = *c.LockedUntil
				}
				return r
			},
			SetNextAttempt: func(t *testing.T, id int64, at time.Time) {
				b.exec(t, "UPDATE "+b.table+" SET next_attempt_at = $1 WHERE id = $2", at, id)
			},
			Budget: b.store,
		}
	})
}

// TestBudgetModelLockstep: the model of the instances' shared budget (memstore.Budget) gives
// what PostgreSQL gives, to the bit, over random sequences of every budget call: several runs
// and instances, refunds (some asked again, as after a lost reply), daily caps in several time
// zones, 429s with and without Retry-After, 466s, state and check slots, and a clock that moves
// by nanoseconds, by hours and days across day starts and DST changes, and now and then
// backwards. The
// contract cases (storecontract) say what the budget does; this says the model does it exactly
// as the database does.
func TestBudgetModelLockstep(t *testing.T) {
	t.Parallel()
	starts := []time.Time{
		time.Date(2026, 10, 24, 23, 50, 0, 0, time.UTC), // Berlin's fall-back night
		time.Date(2026, 3, 28, 23, 50, 0, 0, time.UTC),  // Berlin's spring-forward night
		time.Date(2026, 12, 31, 20, 59, 30, 123456789, time.UTC),
	}
	for seed, start := range starts {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.clock.Advance(start.Sub(b.clock.Now()))
			m := memstore.NewBudget(b.clock.Now)
			budgetLockstep(t, b, m, uint64(seed), 400)
		})
	}
}

func budgetLockstep(t *testing.T, b *bundle, m *memstore.Budget, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 0xb0d9e7))
	pick := func(n int) int { return rng.IntN(n) }
	instances := []string{"1101000001", "1101000002", "1101000003"} // the last is rarely used: often unknown
	inst := func() string {
		if pick(10) == 0 {
			return instances[2]
		}
		return instances[pick(2)]
	}
	owners := []string{"run-1", "run-2", "run-3", ""}
	tables := []string{`"public"."contacts"`, `"public"."contacts"`, `"crm"."customers_enrich"`, ""}
	days := []store.DayStart{{}, {Zone: "UTC"}, {Zone: "Europe/Berlin", Offset: 2*time.Hour + 30*time.Minute},
		{Zone: "Europe/Moscow", Offset: 3 * time.Hour}, {Zone: "America/New_York", Offset: 23*time.Hour + 59*time.Minute},
		{Zone: "Asia/Kolkata", Offset: 90 * time.Second}}
	policies := []store.BudgetPolicy{storecontract.Policy, storecontract.Policy, storecontract.Policy}
	policies[1].Guard, policies[1].HeadroomEase, policies[1].StepEvery = 0, 7*time.Second+300*time.Microsecond, time.Second
	policies[2].Yield = 250 * time.Millisecond
	// refunded is each owner's total given back per instance, as far as it knows; last its last
	// request, to ask again as after a lost reply.
	refunded := map[string]int64{}
	// ends is where each instance's last grant with slots ended: a trim names the bookings' end.
	ends := map[string]time.Time{}
	var last *store.BudgetRequest
	ns := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max) + 1)) }
	same := func(what string, a, b time.Time) {
		t.Helper()
		if !a.Equal(b) {
			t.Fatalf("%s: the database says %v, the model %v", what, a.UTC().Format(time.RFC3339Nano), b.UTC().Format(time.RFC3339Nano))
		}
	}
	sameErr := func(what string, dbErr, modelErr error) bool {
		t.Helper()
		if (dbErr == nil) != (modelErr == nil) {
			t.Fatalf("%s: the database says %v, the model %v", what, dbErr, modelErr)
		}
		return dbErr == nil
	}
	for i := range ops {
		p := policies[pick(len(policies))]
		var what string
		switch op := pick(100); {
		case op < 25:
			var d time.Duration
			switch k := pick(20); {
			case k < 8:
				d = ns(200 * time.Millisecond)
			case k < 14:
				d = ns(5 * time.Second)
			case k < 18:
				d = ns(3 * time.Hour)
			case k < 19:
				d = ns(96 * time.Hour) // days: other runs' refund records are pruned after a week
			default:
				d = -ns(2 * time.Second)
			}
			b.clock.Advance(d)
			continue
		case op < 65:
			var req store.BudgetRequest
			if last != nil && pick(6) == 0 {
				req = *last // the reply was lost: asked again as it was
			} else {
				req = store.BudgetRequest{Instance: inst(), Owner: owners[pick(len(owners))], Answered: pick(3) == 0,
					MaxRPS: []float64{10, 10, 5, 2.5, 1000}[pick(5)], Want: pick(16), PerDay: []int64{0, 30, 100}[pick(3)],
					Day: days[pick(len(days))], Kept: pick(4), Table: tables[pick(len(tables))], Standby: pick(4) == 0}
				if pick(3) == 0 {
					req.Refund = 1 + pick(5)
				}
				req.Refunded = refunded[req.Instance+"/"+req.Owner]
			}
			what = fmt.Sprintf("op %d: reserve %+v", i, req)
			dg, dErr := b.store.Reserve(b.ctx, req, p)
			mg, mErr := m.Reserve(b.ctx, req, p)
			if !sameErr(what, dErr, mErr) {
				continue
			}
			same(what+": start", dg.Start, mg.Start)
			same(what+": now", dg.Now, mg.Now)
			same(what+": answered at", dg.AnsweredAt, mg.AnsweredAt)
			same(what+": wanted at", dg.WantedAt, mg.WantedAt)
			if dg.Interval != mg.Interval || dg.Slots != mg.Slots || dg.Rate != mg.Rate || dg.Headroom != mg.Headroom ||
				dg.Used != mg.Used || dg.QuotaSpent != mg.QuotaSpent || dg.Busy != mg.Busy || dg.WantedBy != mg.WantedBy ||
				dg.WantedKept != mg.WantedKept || dg.WantedTable != mg.WantedTable || dg.Keeper != mg.Keeper ||
				dg.KeeperTable != mg.KeeperTable || dg.KeeperKept != mg.KeeperKept {
				t.Fatalf("%s: the database grants %+v, the model %+v", what, dg, mg)
			}
			if dg.Slots > 0 {
				ends[req.Instance] = dg.End()
			}
			if pick(4) > 0 { // the reply arrived
				refunded[req.Instance+"/"+req.Owner] += int64(req.Refund)
				last = nil
			} else {
				last = &req
			}
		case op < 80:
			id, sent := inst(), b.clock.Now().Add(-ns(2*time.Second))
			var retry time.Duration
			if pick(3) == 0 {
				retry = ns(5 * time.Second)
			}
			what = fmt.Sprintf("op %d: throttled %s sent %v retry-after %v", i, id, sent, retry)
			sameErr(what, b.store.Throttled(b.ctx, id, sent, 10, retry, p), m.Throttled(b.ctx, id, sent, 10, retry, p))
		case op < 85:
			id, day := inst(), days[pick(len(days))]
			what = fmt.Sprintf("op %d: quota spent %s %+v", i, id, day)
			sameErr(what, b.store.QuotaSpent(b.ctx, id, day), m.QuotaSpent(b.ctx, id, day))
		case op < 88:
			id, owner := inst(), owners[pick(len(owners))]
			at, end := b.clock.Now().Add(ns(2*time.Second)-time.Second), ends[id]
			if pick(4) == 0 {
				end = end.Add(ns(time.Second))
			}
			what = fmt.Sprintf("op %d: trim %s of %q ending at %v at %v", i, id, owner, end, at)
			dOK, dErr := b.store.Trim(b.ctx, id, owner, end, at)
			mOK, mErr := m.Trim(b.ctx, id, owner, end, at)
			if sameErr(what, dErr, mErr) && dOK != mOK {
				t.Fatalf("%s: the database says %v, the model %v", what, dOK, mOK)
			}
		case op < 90:
			id, from, to := inst(), owners[pick(len(owners))], owners[pick(len(owners))]
			what = fmt.Sprintf("op %d: hand %s over from %q to %q", i, id, from, to)
			dOK, dErr := b.store.HandOver(b.ctx, id, from, to, p)
			mOK, mErr := m.HandOver(b.ctx, id, from, to, p)
			if sameErr(what, dErr, mErr) && dOK != mOK {
				t.Fatalf("%s: the database says %v, the model %v", what, dOK, mOK)
			}
		case op < 93:
			ids := []string{inst(), inst(), "1101000009"}[:pick(4)] // the last never has a row
			table := tables[pick(len(tables))]
			what = fmt.Sprintf("op %d: keepers of %v and of table %q", i, ids, table)
			dk, dErr := b.store.Keepers(b.ctx, table, ids)
			mk, mErr := m.Keepers(b.ctx, table, ids)
			if !sameErr(what, dErr, mErr) {
				continue
			}
			if len(dk) != len(mk) {
				t.Fatalf("%s: the database says %+v, the model %+v", what, dk, mk)
			}
			for j := range dk {
				same(what+": until", dk[j].Until, mk[j].Until)
				same(what+": now", dk[j].Now, mk[j].Now)
				if dk[j].Instance != mk[j].Instance || dk[j].Owner != mk[j].Owner || dk[j].Table != mk[j].Table {
					t.Fatalf("%s: the database says %+v, the model %+v", what, dk[j], mk[j])
				}
			}
		default:
			id := inst()
			var ds, dn, ms, mn time.Time
			var dErr, mErr error
			if pick(2) == 0 {
				what = fmt.Sprintf("op %d: reserve state %s", i, id)
				ds, dn, dErr = b.store.ReserveState(b.ctx, id, 10, p)
				ms, mn, mErr = m.ReserveState(b.ctx, id, 10, p)
			} else {
				rps := []float64{10, 3, 7, 0.5}[pick(4)]
				what = fmt.Sprintf("op %d: reserve check %s at %v rps", i, id, rps)
				ds, dn, dErr = b.store.ReserveCheck(b.ctx, id, rps, p)
				ms, mn, mErr = m.ReserveCheck(b.ctx, id, rps, p)
			}
			if sameErr(what, dErr, mErr) {
				same(what+": slot", ds, ms)
				same(what+": now", dn, mn)
			}
		}
	}
}
