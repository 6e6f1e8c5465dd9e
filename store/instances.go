package store

import (
	"context"
	"fmt"
	"time"
)

// InstanceBudget is one instance's row of the shared budget (migrations/0003_instances.sql), as
// `enrich status` shows it: what every run on the instance has left there.
type InstanceBudget struct {
	// ID is the idInstance.
	ID string
	// Rate is the instance's shared rate, requests per second, and Headroom the share by which
	// its slots are spaced wider than 1/Rate, as a run reserving now would use them: the rate
	// climbed back toward the instance's rps since the last 429 (when InstancesRequest.MaxRPS
	// names the instance; else as the last run left it), the headroom eased since.
	Rate, Headroom float64
	// UsedToday is how many send slots the instance was handed on Today, the day its daily cap
	// counts (0 when no run reserved any today).
	UsedToday int64
	// QuotaSpent says the instance answered 466 (its plan's quota is spent) on Today: runs skip
	// it until the day turns.
	QuotaSpent bool
	// AnsweredAt is the last time any run had a real answer from the instance; nil if never.
	AnsweredAt *time.Time
	// PausedUntil is the end of a Retry-After pause still under way; nil when none.
	PausedUntil *time.Time
	// CutAt is the last time a 429 cut the rate; nil if never.
	CutAt *time.Time
	// UpdatedAt is when a run last wrote the row.
	UpdatedAt time.Time
}

// Instances is every instance of the shared budget, by id, with the figures for Today.
type Instances struct {
	// TakenAt is the time the figures are for (the database's clock, or Config.Now), and Today
	// the instances' day at that time (InstancesRequest.Day), as the daily cap counts it.
	TakenAt time.Time
	Today   time.Time
	List    []InstanceBudget
}

// InstancesRequest says how to read the budget: as the runs spend it.
type InstancesRequest struct {
	// Day says when the instances' day turns, as the runs' BudgetRequest.Day.
	Day DayStart
	// Policy is the runs' BudgetPolicy: how the rate climbs back and the headroom eases.
	Policy BudgetPolicy
	// MaxRPS is each configured instance's rps, the ceiling its rate climbs back to.
	MaxRPS map[string]float64
}

// sqlInstances reads the instances' budget rows, leaving out the rows of other methods'
// schedules (CheckKey: "ID/method"). $1 is the clock; $2 the day's time zone and $3 µs into the
// day it starts; the rate climbs back toward the instance's rps ($4 ids, $5 their rps) as in
// sqlReserve ($6 quiet µs, $7 step, $8 µs a step), and the headroom eases ($9 least, $10 a step
// every $11 µs). A day later than today (another process's clock ahead) counts as today, as in
// sqlReserve.
const sqlInstances = `
WITH c AS (
    SELECT coalesce($1::timestamptz, now()) AS now,
           ((coalesce($1::timestamptz, now()) AT TIME ZONE $2::text) - $3::bigint * interval '1 microsecond')::date AS today
), m AS (
    SELECT * FROM unnest($4::text[], $5::float8[]) AS m(id, rps)
)
SELECT c.now, c.today::timestamp, b.instance_id,
       CASE WHEN m.rps IS NULL THEN b.rate
            WHEN b.rate >= m.rps THEN m.rps
            WHEN c.now - b.cut_at < $6::bigint * interval '1 microsecond' THEN b.rate
            ELSE least(m.rps, b.rate + m.rps * $7::float8 * floor(
                 extract(epoch FROM c.now - greatest(b.raised_at, b.cut_at + $6::bigint * interval '1 microsecond'))
                 * 1e6 / $8::bigint))
       END,
       CASE WHEN b.headroom <= $9::float8 THEN $9::float8
            ELSE greatest($9::float8, b.headroom - $10::float8 * floor(extract(epoch FROM c.now - b.cut_at) * 1e6 / $11::bigint))
       END,
       CASE WHEN b.day >= c.today THEN b.used ELSE 0 END,
       b.quota_day IS NOT NULL AND b.quota_day >= c.today,
       CASE WHEN b.answered_at > 'epoch' THEN b.answered_at END,
       CASE WHEN b.not_before > c.now THEN b.not_before END,
       CASE WHEN b.cut_at > 'epoch' THEN b.cut_at END,
       b.updated_at
FROM c
LEFT JOIN %[2]s AS b ON strpos(b.instance_id, '/') = 0
LEFT JOIN m ON m.id = b.instance_id
ORDER BY b.instance_id`

// Instances reads every instance's shared budget, for `enrich status`: one small table, read
// without a lock (a run reserving meanwhile is not held up).
func (s *Store) Instances(ctx context.Context, req InstancesRequest) (Instances, error) {
	day, p := req.Day, req.Policy
	if day.Zone == "" {
		day.Zone = "UTC"
	}
	if err := p.check(); err != nil {
		return Instances{}, err
	}
	ease, every := p.HeadroomEase, p.StepEvery
	if ease <= 0 {
		ease = time.Hour // no step: any divisor
	}
	if every <= 0 {
		every = time.Second
	}
	ids := make([]string, 0, len(req.MaxRPS))
	rps := make([]float64, 0, len(req.MaxRPS))
	for id, r := range req.MaxRPS {
		ids, rps = append(ids, id), append(rps, r)
	}
	var out Instances
	rows, err := s.pool.Query(ctx, s.q.instances, s.clock(), day.Zone, day.Offset.Microseconds(), ids, rps,
		p.Quiet.Microseconds(), p.Step, every.Microseconds(), p.Headroom, p.HeadroomStep, ease.Microseconds())
	if err != nil {
		return Instances{}, fmt.Errorf("read instances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                    *string
			rate, headroom        *float64
			used                  *int64
			quota                 *bool
			updatedAt             *time.Time
			answered, paused, cut *time.Time
		)
		if err := rows.Scan(&out.TakenAt, &out.Today, &id, &rate, &headroom, &used, &quota, &answered, &paused, &cut, &updatedAt); err != nil {
			return Instances{}, fmt.Errorf("read instances: %w", err)
		}
		if id == nil {
			continue // no instance yet: the clock and the day only
		}
		out.List = append(out.List, InstanceBudget{ID: *id, Rate: *rate, Headroom: *headroom, UsedToday: *used, QuotaSpent: *quota,
			AnsweredAt: answered, PausedUntil: paused, CutAt: cut, UpdatedAt: *updatedAt})
	}
	if err := rows.Err(); err != nil {
		return Instances{}, fmt.Errorf("read instances: %w", err)
	}
	return out, nil
}
