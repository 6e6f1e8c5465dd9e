package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PlanWindowDefault is the look-ahead of `enrich plan`: what a nightly run finds due the next
// night.
const PlanWindowDefault = 24 * time.Hour

// PlanRequest says what Plan counts.
type PlanRequest struct {
	// Policy is the runs' refresh policy: which done rows a run makes due again, now and in the
	// window (as Refresh does at a run's start).
	Policy RefreshPolicy
	// Window is how far ahead rows coming due are counted. Default PlanWindowDefault.
	Window time.Duration
	// Limit bounds every count: each walks an index and stops after Limit+1 rows, so a plan of a
	// table of 10M rows reads no more than a few times Limit rows. Default StatusExactBelow.
	Limit int64
}

// PlanCounts is what `enrich plan` counts: the rows a run starting now would work off, and those
// coming due within the window after it.
type PlanCounts struct {
	// TakenAt is the time the counts are for (the database's clock, or Config.Now).
	TakenAt time.Time
	// Window and Limit are the request's, defaults filled in.
	Window time.Duration
	Limit  int64
	// DuePending counts pending rows due now (a claim would take them), as DueUpTo does: exact up
	// to Limit; past it DuePendingEstimated is set and it is PostgreSQL's estimate of the pending
	// rows (never below Limit).
	DuePending          int64
	DuePendingEstimated bool
	// DueRefresh counts done rows the policy makes due now: a run's Refresh moves them to pending
	// before it claims. DueRefreshCapped says the count stopped at Limit: it is then Limit, a
	// lower bound. Otherwise it is exact, even above Limit (each index had fewer rows).
	DueRefresh       int64
	DueRefreshCapped bool
	// Retries counts pending rows not leased whose next_attempt_at falls within the window
	// after now (rescheduled rows waiting for their time); RetriesCapped as above.
	Retries       int64
	RetriesCapped bool
	// Refreshes counts done rows, not due now, that the policy makes due within the window;
	// RefreshesCapped as above.
	Refreshes       int64
	RefreshesCapped bool
}

// DueNow is every row a run starting now would work off: pending rows due and done rows due for
// a refresh.
func (c PlanCounts) DueNow() int64 { return c.DuePending + c.DueRefresh }

// DueWindow is every row coming due within the window: retries and refreshes.
func (c PlanCounts) DueWindow() int64 { return c.Retries + c.Refreshes }

// Plan's statements. Each branch walks one partial index in its order and stops after $4 (the
// limit + 1) rows, so none reads more than a bounded number of rows whatever the table's size.
// $1 is the clock, $2 refresh_after in µs (NULL: never by age), $3 refresh_before_expiry in µs,
// $5 whether done rows of unknown existence are due (greenapi.confirm_missing), $6 the window
// in µs. The predicates are sqlRefresh's, so a row counted due now is one a run's Refresh moves.
const (
	// sqlPlanRefreshNow counts the done rows sqlRefresh would move now: aged, expiring or of
	// unknown existence, each row once; the second column says a branch stopped at the limit.
	sqlPlanRefreshNow = sqlRefreshDue + `
SELECT (SELECT count(*) FROM (SELECT id FROM aged UNION SELECT id FROM expiring UNION SELECT id FROM unknown) AS u),
       greatest((SELECT count(*) FROM aged), (SELECT count(*) FROM expiring), (SELECT count(*) FROM unknown)) >= $4::bigint`

	// sqlPlanRefreshLater counts the done rows not due now whose refresh time, the earlier of
	// checked_at + refresh_after and url_expires_at - refresh_before_expiry (sqlRefresh's
	// next_attempt_at), falls within the window: each row once, by whichever comes first.
	sqlPlanRefreshLater = `
WITH aged AS (
    SELECT id FROM %[1]s
    WHERE status = 'done'
      AND checked_at >  coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond'
      AND checked_at <= coalesce($1::timestamptz, now()) + ($6::bigint - $2::bigint) * interval '1 microsecond'
      AND NOT coalesce(url_expires_at <= coalesce($1::timestamptz, now()) + $3::bigint * interval '1 microsecond', false)
      AND NOT ($5::boolean AND exists_whatsapp IS NULL AND exists_source IS DISTINCT FROM 'badPhoneNumber'
               AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us'))
    ORDER BY checked_at, id
    LIMIT $4::bigint
), expiring AS (
    SELECT id FROM %[1]s
    WHERE status = 'done'
      AND url_expires_at IS NOT NULL
      AND url_expires_at >  coalesce($1::timestamptz, now()) + $3::bigint * interval '1 microsecond'
      AND url_expires_at <= coalesce($1::timestamptz, now()) + ($6::bigint + $3::bigint) * interval '1 microsecond'
      AND NOT coalesce(checked_at <= coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond', false)
      AND NOT ($5::boolean AND exists_whatsapp IS NULL AND exists_source IS DISTINCT FROM 'badPhoneNumber'
               AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us'))
    ORDER BY url_expires_at, id
    LIMIT $4::bigint
)
SELECT (SELECT count(*) FROM (SELECT id FROM aged UNION SELECT id FROM expiring) AS u),
       greatest((SELECT count(*) FROM aged), (SELECT count(*) FROM expiring)) >= $4::bigint`

	// sqlPlanRetries counts up to $3 pending rows, not leased, whose next_attempt_at falls within
	// the window ($2 µs) after now: the due index from now on. A leased row's next_attempt_at is
	// its lease's end (sqlClaim); a run holds it, so it is not counted.
	sqlPlanRetries = `
SELECT count(*) FROM (
    SELECT FROM %[1]s
    WHERE status = 'pending'
      AND next_attempt_at >  coalesce($1::timestamptz, now())
      AND next_attempt_at <= coalesce($1::timestamptz, now()) + $2::bigint * interval '1 microsecond'
      AND (locked_until IS NULL OR locked_until <= coalesce($1::timestamptz, now()))
    ORDER BY next_attempt_at, id
    LIMIT $3::bigint
) AS r`
)

// Plan counts what a run would work off now and what comes due within the window, for `enrich
// plan`: cheap on any size, every count bounded by req.Limit (see PlanCounts for which figures
// are then estimates or lower bounds). It reads the table in one read-only snapshot and changes
// nothing: unlike a run, it does not move the done rows it counts.
func (s *Store) Plan(ctx context.Context, req PlanRequest) (PlanCounts, error) {
	if err := req.Policy.Validate(); err != nil {
		return PlanCounts{}, fmt.Errorf("plan: %w", err)
	}
	if req.Window < 0 {
		return PlanCounts{}, errors.New("plan: the window must be positive")
	}
	if req.Window == 0 {
		req.Window = PlanWindowDefault
	}
	if req.Limit <= 0 {
		req.Limit = StatusExactBelow
	}
	c := PlanCounts{Window: req.Window, Limit: req.Limit}
	var after *int64
	if req.Policy.After > 0 {
		us := req.Policy.After.Microseconds()
		after = &us
	}
	t := s.table.Sanitize()
	now, lim := s.clock(), req.Limit+1
	before, window := req.Policy.BeforeExpiry.Microseconds(), req.Window.Microseconds()
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, s.est.now, now).Scan(&c.TakenAt); err != nil {
			return fmt.Errorf("read clock: %w", err)
		}
		if err := tx.QueryRow(ctx, s.est.dueCapped, now, lim).Scan(&c.DuePending); err != nil {
			return fmt.Errorf("count due rows: %w", err)
		}
		if err := tx.QueryRow(ctx, fmt.Sprintf(sqlPlanRefreshNow, t), now, after, before, lim, req.Policy.ExistsUnknown).
			Scan(&c.DueRefresh, &c.DueRefreshCapped); err != nil {
			return fmt.Errorf("count done rows due again: %w", err)
		}
		if err := tx.QueryRow(ctx, fmt.Sprintf(sqlPlanRetries, t), now, window, lim).Scan(&c.Retries); err != nil {
			return fmt.Errorf("count retries coming due: %w", err)
		}
		if err := tx.QueryRow(ctx, fmt.Sprintf(sqlPlanRefreshLater, t), now, after, before, lim, req.Policy.ExistsUnknown, window).
			Scan(&c.Refreshes, &c.RefreshesCapped); err != nil {
			return fmt.Errorf("count refreshes coming due: %w", err)
		}
		return nil
	})
	if err != nil {
		return PlanCounts{}, fmt.Errorf("plan: %w", err)
	}
	// A count whose branch stopped at the limit is a lower bound: the limit, as status shows one
	// (the union of several branches' first rows is more, but depends on where each stopped).
	// Otherwise it is exact, even past the limit (each branch had fewer rows than it).
	c.RetriesCapped = c.Retries > req.Limit
	if c.RetriesCapped {
		c.Retries = req.Limit
	}
	if c.DueRefreshCapped {
		c.DueRefresh = req.Limit
	}
	if c.RefreshesCapped {
		c.Refreshes = req.Limit
	}
	if c.DuePending > req.Limit {
		// Past the limit, PostgreSQL's estimate of the pending rows, as DueUpTo gives.
		n, estimated, err := s.DueUpTo(ctx, req.Limit)
		if err != nil {
			return PlanCounts{}, fmt.Errorf("plan: %w", err)
		}
		c.DuePending, c.DuePendingEstimated = n, estimated
	}
	return c, nil
}
