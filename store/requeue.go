package store

import (
	"context"
	"fmt"
	"time"
)

// RequeueChunk is how many ids of the table one statement of Requeue covers: each is its own
// short transaction, so putting back millions of rows never holds one long lock nor keeps one
// snapshot open for long.
const RequeueChunk = 10_000

// RequeueFilter selects the rows Requeue puts back. Leased rows are never selected.
type RequeueFilter struct {
	// Status is StatusFailed or StatusDone.
	Status string
	// Reason, when not nil, selects only rows whose reason is exactly this (case and spaces
	// included).
	Reason *string
	// OlderThan, when positive, selects only rows checked more than this long ago: checked_at
	// (when the API's answer or the failure was written), or updated_at for a row that has none.
	OlderThan time.Duration
}

// requeueQueries are Requeue's statements with the table filled in.
type requeueQueries struct{ span, cutoff, requeue, count string }

func newRequeueQueries(t string) requeueQueries {
	f := func(q string) string { return fmt.Sprintf(q, t) }
	return requeueQueries{span: f(sqlRequeueSpan), cutoff: sqlRequeueCutoff, requeue: f(sqlRequeue), count: f(sqlRequeueCount)}
}

// Requeue's statements. $1 is the clock; $2 and $3 the chunk's ids [lo, hi); $4 the status, $5
// the reason or NULL for any, $6 the cutoff for checked_at or NULL for any age.
const (
	// sqlRequeueSpan is the table's range of ids, from the primary key's ends.
	sqlRequeueSpan = `SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM %[1]s`

	// sqlRequeueCutoff is now minus $2 µs, once for the whole Requeue, so that every chunk uses
	// the same cutoff.
	sqlRequeueCutoff = `SELECT coalesce($1::timestamptz, now()) - $2::bigint * interval '1 microsecond'`

	// requeueWhere selects a chunk's matching rows; leased rows never match.
	requeueWhere = `
WHERE id >= $2::bigint AND id < $3::bigint
  AND status = $4::text
  AND ($5::text IS NULL OR reason = $5::text)
  AND ($6::timestamptz IS NULL OR coalesce(checked_at, updated_at) < $6::timestamptz)
  AND (locked_until IS NULL OR locked_until <= coalesce($1::timestamptz, now()))`

	// sqlRequeue puts a chunk's matching rows back as an enqueued row is: pending, due now, no
	// attempts, no reason, no lease. The results of a done row (exists_whatsapp,
	// avatar_available, url_avatar, checked_at) stay as they are until its next answer.
	sqlRequeue = `
UPDATE %[1]s
SET status          = 'pending',
    next_attempt_at = coalesce($1::timestamptz, now()),
    attempts        = 0,
    reason          = NULL,
    locked_by       = NULL,
    locked_until    = NULL,
    lease_token     = NULL,
    updated_at      = now()` + requeueWhere

	// sqlRequeueCount counts what sqlRequeue would put back, for a dry run.
	sqlRequeueCount = `SELECT count(*) FROM %[1]s` + requeueWhere
)

// Requeue puts the rows f selects back to pending, due now, with attempts 0 and no reason, and
// returns how many it put back; with dryRun it changes nothing and returns how many it would.
// Rows leased right now are never touched.
//
// It walks the table's ids in chunks of RequeueChunk, one statement (and transaction) each,
// so a table of millions of rows is never locked long; an error or a cancelled ctx stops it with
// the chunks before committed, and the count returned is theirs. Running it again is safe: the
// rows put back no longer match. Rows that come to match while it runs (a run failing them) are
// put back only if their chunk comes after.
func (s *Store) Requeue(ctx context.Context, f RequeueFilter, dryRun bool) (int64, error) {
	if f.Status != StatusFailed && f.Status != StatusDone {
		return 0, fmt.Errorf("requeue: status %q: only %q or %q rows can be put back", f.Status, StatusFailed, StatusDone)
	}
	if f.OlderThan < 0 {
		return 0, fmt.Errorf("requeue: negative age %v", f.OlderThan)
	}
	now := s.clock()
	var cutoff *time.Time
	if f.OlderThan > 0 {
		if err := s.pool.QueryRow(ctx, s.rq.cutoff, now, f.OlderThan.Microseconds()).Scan(&cutoff); err != nil {
			return 0, fmt.Errorf("requeue: cutoff: %w", err)
		}
	}
	var lo, hi int64
	if err := s.pool.QueryRow(ctx, s.rq.span).Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("requeue: range of ids: %w", err)
	}
	var total int64
	for from := lo; from <= hi; from += RequeueChunk {
		to := from + RequeueChunk
		if dryRun {
			var n int64
			if err := s.pool.QueryRow(ctx, s.rq.count, now, from, to, f.Status, f.Reason, cutoff).Scan(&n); err != nil {
				return total, fmt.Errorf("requeue: count ids %d-%d: %w", from, to-1, err)
			}
			total += n
			continue
		}
		tag, err := s.pool.Exec(ctx, s.rq.requeue, now, from, to, f.Status, f.Reason, cutoff)
		if err != nil {
			return total, fmt.Errorf("requeue: ids %d-%d: %w", from, to-1, err)
		}
		total += tag.RowsAffected()
	}
	if err := s.notifyRequeued(ctx, total, dryRun); err != nil {
		return total, fmt.Errorf("requeue: %w", err)
	}
	return total, nil
}

// notifyRequeued wakes the followers of the table (NotifyChannel) when rows were put back: they
// are due now.
func (s *Store) notifyRequeued(ctx context.Context, total int64, dryRun bool) error {
	if dryRun || total == 0 {
		return nil
	}
	return s.notifyDue(ctx)
}
