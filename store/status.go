package store

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// StatusExactBelow is the default StatusOptions.ExactBelow: a table of at most this many rows is
// counted exactly (a scan of it takes milliseconds), and the counts of rows due, leased and
// scheduled of a larger one stop at it.
const StatusExactBelow = 100_000

// StatusOptions says how Overview counts.
type StatusOptions struct {
	// Exact counts every row (Status: a scan of the whole table) whatever its size.
	Exact bool
	// ExactBelow is the size up to which the table is counted exactly anyway, and where the
	// counts of due, leased and scheduled rows of a larger table stop. 0 means
	// StatusExactBelow.
	ExactBelow int64
}

// Overview is the state of the table for `enrich status`, taken without scanning a large
// table: Report's ByStatus and Reasons are then PostgreSQL's estimates, and Due, Leased and
// Scheduled are exact up to Limit.
type Overview struct {
	// Report holds the figures. When Exact is false, ByStatus and Reasons are estimates (nil
	// when the table has no statistics), each Reason's Status is "" (PostgreSQL's statistics
	// are per column: they know how common a reason is, not under which status), and Due,
	// Leased and Scheduled are lower bounds when their Capped flag is set.
	Report
	// TakenAt is the time the figures are for (the database's clock, or Config.Now).
	TakenAt time.Time
	// Exact says ByStatus, Reasons and Rows count every row.
	Exact bool
	// Small says Exact is so because the table has at most Limit rows, not because it was
	// asked for.
	Small bool
	// Rows is the number of rows: counted when Exact, else PostgreSQL's estimate, or, when
	// RowsAtLeast, a lower bound (the table has no statistics and more than Limit rows).
	Rows        int64
	RowsAtLeast bool
	// Statistics says the table has PostgreSQL statistics (it was analyzed); without them an
	// estimate has no ByStatus and no Reasons. Always true when Exact.
	Statistics bool
	// AnalyzedAt is when the statistics were last gathered (ANALYZE or autovacuum); nil when
	// never, or when the statistics collector forgot (a stats reset).
	AnalyzedAt *time.Time
	// Limit is StatusOptions.ExactBelow as used.
	Limit int64
	// DueCapped, LeasedCapped and ScheduledCapped say the count stopped at Limit rows: the
	// figure is a lower bound. Never set when Exact.
	DueCapped, LeasedCapped, ScheduledCapped bool
	// ExistsUnknownCapped says the same of ExistsUnknown and Unchecked.
	ExistsUnknownCapped bool
}

// statusQueries are Overview's statements with the table filled in.
type statusQueries struct {
	stats, probe, now, dueCapped, oldestDue, later, existsUnknown string
}

func newStatusQueries(t string) statusQueries {
	f := func(q string) string { return fmt.Sprintf(q, t) }
	return statusQueries{
		stats: sqlStatusStats, probe: f(sqlStatusProbe), now: sqlStatusNow,
		dueCapped: f(sqlStatusDueCapped), oldestDue: f(sqlStatusOldestDue), later: f(sqlStatusLater),
		existsUnknown: f(sqlStatusExistsUnknown),
	}
}

// Overview's statements. None reads more than a bounded number of rows: the statistics are
// catalog rows, and every count walks the due index (the partial index of pending rows in claim
// order, see migrations/0001) and stops after $2 rows.
const (
	// sqlStatusStats reads what PostgreSQL knows of table $1 without reading it: its size as of
	// the last VACUUM or ANALYZE scaled to its current number of pages (as the planner does),
	// when it was last analyzed, and the most common values of status and reason with their
	// frequencies. reltuples is -1 when the table was never vacuumed or analyzed.
	sqlStatusStats = `
SELECT c.reltuples::float8, c.relpages::bigint,
       (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
       greatest(st.last_analyze, st.last_autoanalyze),
       ss.attname IS NOT NULL,
       coalesce(ss.most_common_vals::text::text[], '{}'), coalesce(ss.most_common_freqs::float8[], '{}'),
       coalesce(sr.most_common_vals::text::text[], '{}'), coalesce(sr.most_common_freqs::float8[], '{}')
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables AS st ON st.relid = c.oid
LEFT JOIN pg_stats AS ss ON ss.schemaname = n.nspname AND ss.tablename = c.relname AND ss.attname = 'status' AND NOT ss.inherited
LEFT JOIN pg_stats AS sr ON sr.schemaname = n.nspname AND sr.tablename = c.relname AND sr.attname = 'reason' AND NOT sr.inherited
WHERE c.oid = $1::text::regclass`

	// sqlStatusProbe counts the table's rows up to $1: whether it is small enough to count.
	sqlStatusProbe = `SELECT count(*) FROM (SELECT FROM %[1]s LIMIT $1::bigint) AS p`

	// sqlStatusNow is the time the figures are for.
	sqlStatusNow = `SELECT coalesce($1::timestamptz, now())`

	// sqlStatusDueCapped counts due rows (those a claim would take: pending, due, not leased) up
	// to $2, in claim order so that it walks the due index rather than a table whose first
	// millions of rows may be done. Overview and Due (every run's start) count with it.
	sqlStatusDueCapped = `
SELECT count(*) FROM (
    SELECT FROM %[1]s
    WHERE status = 'pending'
      AND next_attempt_at <= coalesce($1::timestamptz, now())
      AND (locked_until IS NULL OR locked_until <= coalesce($1::timestamptz, now()))
    ORDER BY next_attempt_at, id
    LIMIT $2::bigint
) AS d`

	// sqlStatusOldestDue is the first due row's next_attempt_at: the head of the due index.
	sqlStatusOldestDue = `
SELECT next_attempt_at FROM %[1]s
WHERE status = 'pending'
  AND next_attempt_at <= coalesce($1::timestamptz, now())
  AND (locked_until IS NULL OR locked_until <= coalesce($1::timestamptz, now()))
ORDER BY next_attempt_at, id
LIMIT 1`

	// sqlStatusLater counts up to $2 pending rows not due yet, and among them the leased ones:
	// a claim moves next_attempt_at to the end of the lease, so leased rows are pending rows
	// due later, and the others are scheduled (retries waiting for their time).
	sqlStatusLater = `
SELECT count(*), count(*) FILTER (WHERE locked_until > coalesce($1::timestamptz, now()))
FROM (
    SELECT locked_until FROM %[1]s
    WHERE status = 'pending'
      AND next_attempt_at > coalesce($1::timestamptz, now())
    ORDER BY next_attempt_at, id
    LIMIT $2::bigint
) AS l`
)

// sqlStatusExistsUnknown counts up to $1 (NULL: all) done personal rows whose existence is
// unknown and that a run with the checks on completes, and of them those a run left 'unchecked',
// walking migrations/0015's partial index (its predicate, repeated here, lets the planner use it).
const sqlStatusExistsUnknown = `
SELECT count(*), count(*) FILTER (WHERE exists_source = 'unchecked') FROM (
    SELECT exists_source FROM %[1]s
    WHERE status = 'done' AND exists_whatsapp IS NULL
      AND exists_source IS DISTINCT FROM 'badPhoneNumber'
      AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us')
    ORDER BY id
    LIMIT $1::bigint
) AS u`

// tableStats is what sqlStatusStats read.
type tableStats struct {
	reltuples              float64
	relpages, pages        int64
	analyzedAt             *time.Time
	statistics             bool
	statusVals, reasonVals []string
	statusFreq, reasonFreq []float64
}

// rows is the planner's estimate of the table's rows, -1 when PostgreSQL has none.
func (t tableStats) rows() int64 {
	switch {
	case t.reltuples < 0:
		return -1
	case t.relpages > 0:
		return int64(math.Round(t.reltuples / float64(t.relpages) * float64(t.pages)))
	}
	return int64(math.Round(t.reltuples))
}

// Overview reports the table's state as Status does, but fast on any size: a table of more than
// o.ExactBelow rows is not scanned unless o.Exact. Its counts by status and reason then come from
// PostgreSQL's statistics (pg_class.reltuples and the most common values of pg_stats, as of the
// last ANALYZE, which autovacuum runs by itself), and rows due, leased and scheduled are counted
// exactly through the due index up to o.ExactBelow each. The oldest due row is always exact (the
// head of the due index). A table without statistics (never analyzed) gets no estimate: Overview
// says so (Statistics false) rather than scan it.
func (s *Store) Overview(ctx context.Context, o StatusOptions) (Overview, error) {
	limit := o.ExactBelow
	if limit <= 0 {
		limit = StatusExactBelow
	}
	ov := Overview{Limit: limit}
	now := s.clock()
	var st tableStats
	if !o.Exact {
		err := s.pool.QueryRow(ctx, s.est.stats, s.Table()).Scan(&st.reltuples, &st.relpages, &st.pages, &st.analyzedAt,
			&st.statistics, &st.statusVals, &st.statusFreq, &st.reasonVals, &st.reasonFreq)
		if err != nil {
			return Overview{}, fmt.Errorf("status: read statistics: %w", err)
		}
		if est := st.rows(); est <= limit {
			// Small, or of unknown size: count up to the limit to know which.
			var n int64
			if err := s.pool.QueryRow(ctx, s.est.probe, limit+1).Scan(&n); err != nil {
				return Overview{}, fmt.Errorf("status: count rows up to %d: %w", limit+1, err)
			}
			if n <= limit {
				ov.Small = true
			} else if est < 0 {
				ov.Rows, ov.RowsAtLeast = n, true
			}
		}
	}
	if o.Exact || ov.Small {
		if err := s.pool.QueryRow(ctx, s.est.now, now).Scan(&ov.TakenAt); err != nil {
			return Overview{}, fmt.Errorf("status: read clock: %w", err)
		}
		r, err := s.Status(ctx)
		if err != nil {
			return Overview{}, err
		}
		ov.Report, ov.Exact, ov.Statistics = r, true, true
		for _, n := range r.ByStatus {
			ov.Rows += n
		}
		return ov, nil
	}

	ov.Statistics, ov.AnalyzedAt = st.statistics, st.analyzedAt
	if !ov.RowsAtLeast {
		ov.Rows = max(st.rows(), 0)
	}
	if ov.Statistics {
		ov.ByStatus = estimateStatuses(ov.Rows, st.statusVals, st.statusFreq)
		ov.Reasons = estimateReasons(ov.Rows, st.reasonVals, st.reasonFreq)
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, s.est.now, now).Scan(&ov.TakenAt); err != nil {
			return fmt.Errorf("read clock: %w", err)
		}
		if err := tx.QueryRow(ctx, s.est.dueCapped, now, limit+1).Scan(&ov.Due); err != nil {
			return fmt.Errorf("count due rows: %w", err)
		}
		if ov.DueCapped = ov.Due > limit; ov.DueCapped {
			ov.Due = limit
		}
		err := tx.QueryRow(ctx, s.est.oldestDue, now).Scan(&ov.OldestDue)
		if err != nil && err != pgx.ErrNoRows {
			return fmt.Errorf("find oldest due row: %w", err)
		}
		var later int64
		if err := tx.QueryRow(ctx, s.est.later, now, limit+1).Scan(&later, &ov.Leased); err != nil {
			return fmt.Errorf("count leased and scheduled rows: %w", err)
		}
		ov.Scheduled = later - ov.Leased
		if later > limit {
			// Both are counts of what was seen, so true lower bounds; at most one row over.
			ov.LeasedCapped, ov.ScheduledCapped = true, true
		}
		if err := tx.QueryRow(ctx, s.est.existsUnknown, limit+1).Scan(&ov.ExistsUnknown, &ov.Unchecked); err != nil {
			return fmt.Errorf("count rows whose existence is unknown: %w", err)
		}
		if ov.ExistsUnknown > limit {
			ov.ExistsUnknown, ov.Unchecked, ov.ExistsUnknownCapped = limit, min(ov.Unchecked, limit), true
		}
		return nil
	})
	if err != nil {
		return Overview{}, fmt.Errorf("status: %w", err)
	}
	return ov, nil
}

// estimateStatuses turns the most common statuses into counts of rows. A status the statistics
// do not list (too rare to be sampled) shares what the listed ones leave.
func estimateStatuses(rows int64, vals []string, freqs []float64) map[string]int64 {
	out := map[string]int64{}
	left := 1.0
	for i, v := range vals {
		if i < len(freqs) {
			out[v] = int64(math.Round(freqs[i] * float64(rows)))
			left -= freqs[i]
		}
	}
	var missing []string
	for _, st := range []string{StatusPending, StatusDone, StatusFailed} {
		if _, ok := out[st]; !ok {
			missing = append(missing, st)
		}
	}
	for _, st := range missing {
		out[st] = int64(math.Round(max(left, 0) / float64(len(missing)) * float64(rows)))
	}
	return out
}

// estimateReasons turns the most common reasons into counts of rows, most frequent first, at
// most reasonsLimit of them, without "" (the reason of done rows).
func estimateReasons(rows int64, vals []string, freqs []float64) []ReasonCount {
	var out []ReasonCount
	for i, v := range vals {
		if v == "" || i >= len(freqs) {
			continue
		}
		out = append(out, ReasonCount{Reason: v, Count: int64(math.Round(freqs[i] * float64(rows)))})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reason < out[j].Reason
	})
	if len(out) > reasonsLimit {
		out = out[:reasonsLimit]
	}
	return out
}
