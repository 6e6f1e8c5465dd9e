package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Refresh defaults, named so that the CLI, the docs and the tests agree.
const (
	// RefreshAfterDefault is how long a done row's answer is trusted before it is asked again:
	// a week, so a weekly schedule checks every number once.
	RefreshAfterDefault = 7 * 24 * time.Hour
	// RefreshBeforeExpiryDefault is how long before its link expires a done row is asked again:
	// a day, so a nightly run gets the new link while the old one still works.
	RefreshBeforeExpiryDefault = 24 * time.Hour
	// RefreshBeforeExpiryMax bounds RefreshBeforeExpiry: links live one to two weeks
	// (docs/greenapi.md), so a margin of a week or more would make rows due as soon as they are
	// answered and spend the budget on the same numbers every run.
	RefreshBeforeExpiryMax = 7 * 24 * time.Hour
	// RefreshChunk is how many rows one statement of Refresh moves at most per index, so that
	// a week's worth of rows coming due at once is many short transactions, not one long one
	// holding locks and vacuum back.
	RefreshChunk = 10_000
	// ExpiringWithin is the window of `enrich status`'s "links expiring": what a nightly run
	// must refresh before the next one.
	ExpiringWithin = 24 * time.Hour
)

// RefreshPolicy says when a done row is due again.
type RefreshPolicy struct {
	// After makes a done row due once its checked_at is this old. 0: never by age (rows with a
	// link expiry are still refreshed before it).
	After time.Duration
	// BeforeExpiry makes a done row due this long before its url_expires_at. 0: at the expiry.
	BeforeExpiry time.Duration
	// ExistsUnknown also makes due every done personal row whose exists_whatsapp is NULL (bar
	// those CheckWhatsapp refused, 'badPhoneNumber'): rows a run left 'unchecked' (the
	// CheckWhatsapp quota was spent) and rows answered by today's edition before existence was
	// checked, so that a run with the checks on (greenapi.confirm_missing) completes them.
	ExistsUnknown bool
}

// Validate reports a policy Refresh would refuse, by its config key.
func (p RefreshPolicy) Validate() error {
	switch {
	case p.After < 0:
		return fmt.Errorf("refresh_after %v: must be 0 (never by age) or positive", p.After)
	case p.BeforeExpiry < 0 || p.BeforeExpiry >= RefreshBeforeExpiryMax:
		return fmt.Errorf("refresh_before_expiry %v: must be at least 0 and below %v (links live one to two weeks)",
			p.BeforeExpiry, RefreshBeforeExpiryMax)
	}
	return nil
}

// sqlRefreshDue selects the done rows the refresh policy makes due now, as the CTEs aged,
// expiring and unknown: the policy, written once. sqlRefresh locks them (refreshLocked puts FOR UPDATE SKIP LOCKED in place of
// each /*lock*/) and moves them; enrich plan (sqlPlanRefreshNow) counts them, unlocked.
const sqlRefreshDue = `
WITH aged AS (
    SELECT id FROM %[1]s
    WHERE status = 'done'
      AND checked_at <= coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond'
    ORDER BY checked_at, id
    LIMIT $4::bigint
    /*lock*/
), expiring AS (
    SELECT id FROM %[1]s
    WHERE status = 'done'
      AND url_expires_at IS NOT NULL
      AND url_expires_at <= coalesce($1::timestamptz, now()) + $3::bigint * interval '1 microsecond'
    ORDER BY url_expires_at, id
    LIMIT $4::bigint
    /*lock*/
), unknown AS (
    SELECT id FROM %[1]s
    WHERE $5::boolean
      AND status = 'done' AND exists_whatsapp IS NULL
      AND exists_source IS DISTINCT FROM 'badPhoneNumber'
      AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us')
    ORDER BY id
    LIMIT $4::bigint
    /*lock*/
)`

// sqlRefresh moves done rows due for a refresh back to pending: up to $4 whose checked_at is at
// least $2 µs old (none when $2 is NULL: refresh_after 0) and up to $4 whose link expires within
// $3 µs, each walking its partial index of done rows (migrations/0007) from the oldest end, so
// a chunk costs O($4) whatever the table's size. SKIP LOCKED lets two runs refresh at once
// without waiting on each other, and the re-check on locking (status = 'done') drops rows another
// run moved meanwhile. The ids come to the UPDATE as an array (= ANY (ARRAY(...))), which the
// planner can only look up by the primary key: as a join it may hash the chunk and scan the
// whole table for it, which a table of a few hundred thousand rows makes look cheaper.
//
// A refreshed row keeps its answer (exists_whatsapp, url_avatar, ...) until the new one is
// written, so the table never loses a result to a refresh that fails; its attempts start again
// at 0, since they count the tries of this refresh. next_attempt_at is when the row became due
// (the earlier of checked_at + after and url_expires_at - before), never after now: rows join the
// claim order by how overdue they are, a link expiring soonest first. The claim is unchanged.
//
// With $5, up to $4 done rows whose existence is unknown (migrations/0015's partial index, in id
// order) are moved too, due now: their answer is asked again, existence included.
const sqlRefresh = sqlRefreshDue + `
UPDATE %[1]s AS t
SET status          = 'pending',
    attempts        = 0,
    next_attempt_at = least(coalesce($1::timestamptz, now()),
                            coalesce(least(t.checked_at + $2::bigint * interval '1 microsecond',
                                           t.url_expires_at - $3::bigint * interval '1 microsecond'),
                                     coalesce($1::timestamptz, now()))),
    updated_at      = now()
WHERE t.id = ANY (ARRAY(SELECT id FROM aged UNION SELECT id FROM expiring UNION SELECT id FROM unknown))
  AND t.status = 'done'`

// refreshLocked makes the refresh's CTEs lock the rows they take, so two runs refreshing at
// once pass each other's rows.
func refreshLocked(q string) string {
	return strings.ReplaceAll(q, "/*lock*/", "FOR UPDATE SKIP LOCKED")
}

// sqlExpiring counts up to $3 done rows whose link expires after now and within $2 µs, through
// the expiry index.
const sqlExpiring = `
SELECT count(*) FROM (
    SELECT FROM %[1]s
    WHERE status = 'done'
      AND url_expires_at IS NOT NULL
      AND url_expires_at > coalesce($1::timestamptz, now())
      AND url_expires_at <= coalesce($1::timestamptz, now()) + $2::bigint * interval '1 microsecond'
    ORDER BY url_expires_at, id
    LIMIT $3::bigint
) AS e`

// Refresh moves every done row that p makes due back to pending (see sqlRefresh), RefreshChunk
// rows per index per statement, each statement its own transaction, and returns how many it
// moved. A run calls it before it claims, so a nightly run works off the rows that came due since
// the last one. If ctx ends part-way, the rows already moved stay pending: they are due, which is
// what they are.
func (s *Store) Refresh(ctx context.Context, p RefreshPolicy) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, fmt.Errorf("refresh: %w", err)
	}
	var after *int64
	if p.After > 0 {
		us := p.After.Microseconds()
		after = &us
	}
	q := fmt.Sprintf(refreshLocked(sqlRefresh), s.table.Sanitize())
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, q, s.clock(), after, p.BeforeExpiry.Microseconds(), RefreshChunk, p.ExistsUnknown)
		if err != nil {
			return total, fmt.Errorf("refresh: after %d rows: %w", total, err)
		}
		total += tag.RowsAffected()
		// Fewer than a chunk: each index had fewer due rows than it could give (or the rest
		// are another run's to move right now).
		if tag.RowsAffected() < RefreshChunk {
			return total, nil
		}
	}
}

// ExplainRefresh returns PostgreSQL's plan for one chunk of Refresh under p, without running it
// (EXPLAIN without ANALYZE executes nothing), so people and tests can check that it walks the
// partial indexes of done rows instead of scanning the table.
func (s *Store) ExplainRefresh(ctx context.Context, p RefreshPolicy) (string, error) {
	var after *int64
	if p.After > 0 {
		us := p.After.Microseconds()
		after = &us
	}
	rows, err := s.pool.Query(ctx, "EXPLAIN "+fmt.Sprintf(refreshLocked(sqlRefresh), s.table.Sanitize()), s.clock(), after,
		p.BeforeExpiry.Microseconds(), RefreshChunk, p.ExistsUnknown)
	if err != nil {
		return "", fmt.Errorf("explain refresh: %w", err)
	}
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			rows.Close()
			return "", fmt.Errorf("explain refresh: %w", err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("explain refresh: %w", err)
	}
	return strings.Join(lines, "\n"), nil
}

// ExpiringLinks counts done rows whose link expires within the next `within` (after now, so
// links already expired, which Refresh makes due, are not counted), up to limit: capped says
// there are more. limit 0 counts them all. It reads the expiry index only.
func (s *Store) ExpiringLinks(ctx context.Context, within time.Duration, limit int64) (n int64, capped bool, err error) {
	if within <= 0 {
		return 0, false, errors.New("count expiring links: the window must be positive")
	}
	var lim *int64 // NULL: LIMIT ALL
	if limit > 0 {
		l := limit + 1
		lim = &l
	}
	q := fmt.Sprintf(sqlExpiring, s.table.Sanitize())
	if err := s.pool.QueryRow(ctx, q, s.clock(), within.Microseconds(), lim).Scan(&n); err != nil {
		return 0, false, fmt.Errorf("count expiring links: %w", err)
	}
	if limit > 0 && n > limit {
		return limit, true, nil
	}
	return n, false, nil
}
