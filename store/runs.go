package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// runsTable records each run of enrich beside the contacts table (migrations/0005).
const runsTable = "enrich_runs"

// RunHeartbeat is how often a run moves its seen_at and its counts so far (ProgressRun), so
// that status can tell a run that still works from one that was killed, and what each has done:
// a run stuck at 1,499 of 1,500 rows from one that just started, and a killed run's work.
const RunHeartbeat = 10 * time.Second

// RunLostAfter is how long a run may go without a heartbeat before status shows it as lost:
// twelve heartbeats, so a busy database or a slow heartbeat or two never makes a live run look
// dead.
const RunLostAfter = 2 * time.Minute

// RunsKept is how many runs of a contacts table FinishRun keeps: the runs table stays small
// (a few hundred kilobytes per contacts table) whatever the schedule.
const RunsKept = 1000

// RunsMax is the most runs LastRuns returns.
const RunsMax = RunsKept

// Run states LastRuns derives from a run's row, besides the outcomes finished runs recorded.
const (
	// RunRunning is a run that has not finished and sent a heartbeat lately.
	RunRunning = "running"
	// RunLost is a run that has not finished and sent no heartbeat for RunLostAfter: killed
	// (SIGKILL, OOM, a node lost) or cut off from the database.
	RunLost = "lost"
)

// RunID names a run's row in the runs table.
type RunID int64

// RunStart is what a run records as it starts.
type RunStart struct {
	// Owner is the run's id, host:pid:hex, the locked_by of the rows it claims.
	Owner string
	// Host is the machine or pod the run is on.
	Host string
	// Version is the binary's version, as `enrich version` says it.
	Version string
}

// RunCounts is what a run did, from its summary.
type RunCounts struct {
	// Done, Failed, Rescheduled and Released count rows the run wrote so.
	Done, Failed, Rescheduled, Released int64
	// Claimed counts rows the run claimed, claims of the same row again included.
	Claimed int64
	// RateLimited counts 429 answers.
	RateLimited int64
	// Calls counts API calls of every method and outcome.
	Calls int64
}

// RunEnd is what a run records as it ends.
type RunEnd struct {
	// Outcome is how the run ended, in a word or two: "finished", "daily cap", "interrupted",
	// "failed".
	Outcome string
	// Stop is the run's stop reason as its summary says it ("no due rows left").
	Stop string
	// ExitCode is the process's exit code.
	ExitCode int
	// Counts is what the run did.
	Counts RunCounts
	// Error is the run's error as it was logged, "" when none. It must not carry a secret.
	Error string
}

// Run is one run's row, as status shows it.
type Run struct {
	// ID is the row's id: runs of a table are numbered in the order they started.
	ID RunID
	// Owner, Host and Version are as the run recorded them at its start.
	Owner, Host, Version string
	// StartedAt is when the run started; SeenAt its last heartbeat (or its start, or its end).
	StartedAt, SeenAt time.Time
	// FinishedAt is when the run ended; nil while it runs, or if it was lost.
	FinishedAt *time.Time
	// State is the run's outcome once it finished, else RunRunning or RunLost.
	State string
	// Stop, ExitCode, Counts and Error are as the run recorded them at its end; zero until
	// then.
	Stop     string
	ExitCode *int
	Counts   RunCounts
	Error    string
}

// runQueries are the runs table's statements with the tables filled in.
type runQueries struct {
	start, heartbeat, progress, finish, trim, last, earlier string
}

// newRunQueries fills in the runs table beside table t (%[1]s) and the runs table (%[2]s).
func newRunQueries(t, runs string) runQueries {
	f := func(q string) string { return fmt.Sprintf(q, t, runs) }
	return runQueries{
		start: f(sqlRunStart), heartbeat: f(sqlRunHeartbeat), progress: f(sqlRunProgress), finish: f(sqlRunFinish),
		trim: f(sqlRunTrim), last: f(sqlRunLast), earlier: f(sqlRunEarlier),
	}
}

// The runs table's statements. %[2]s is the runs table (one per schema, see
// migrations/0005_runs.sql); $1 is the clock as elsewhere, $2 the bare contacts table name.
const (
	// sqlRunStart records a run's start; its heartbeat starts with it.
	sqlRunStart = `
INSERT INTO %[2]s (table_name, owner, host, version, started_at, seen_at)
VALUES ($2::text, $3::text, $4::text, $5::text, coalesce($1::timestamptz, now()), coalesce($1::timestamptz, now()))
RETURNING id`

	// sqlRunHeartbeat moves an unfinished run's seen_at.
	sqlRunHeartbeat = `
UPDATE %[2]s
SET seen_at = coalesce($1::timestamptz, now())
WHERE id = $2::bigint AND finished_at IS NULL`

	// sqlRunProgress moves an unfinished run's seen_at and records its counts so far.
	sqlRunProgress = `
UPDATE %[2]s
SET seen_at      = coalesce($1::timestamptz, now()),
    done         = $3::bigint,
    failed       = $4::bigint,
    rescheduled  = $5::bigint,
    released     = $6::bigint,
    claimed      = $7::bigint,
    rate_limited = $8::bigint,
    calls        = $9::bigint
WHERE id = $2::bigint AND finished_at IS NULL`

	// sqlRunFinish records a run's end, once.
	sqlRunFinish = `
UPDATE %[2]s
SET finished_at  = coalesce($1::timestamptz, now()),
    seen_at      = coalesce($1::timestamptz, now()),
    outcome      = $3::text,
    stop         = $4::text,
    exit_code    = $5::int,
    done         = $6::bigint,
    failed       = $7::bigint,
    rescheduled  = $8::bigint,
    released     = $9::bigint,
    claimed      = $10::bigint,
    rate_limited = $11::bigint,
    calls        = $12::bigint,
    error        = nullif($13::text, '')
WHERE id = $2::bigint AND finished_at IS NULL`

	// sqlRunTrim deletes the runs of table $1 older than the $2 newest.
	sqlRunTrim = `
DELETE FROM %[2]s
WHERE table_name = $1::text
  AND id < (SELECT id FROM %[2]s WHERE table_name = $1::text ORDER BY id DESC OFFSET $2::int - 1 LIMIT 1)`

	// sqlRunEarlier counts the runs of table $2 that started before run $3 (a smaller id) and
	// still run: not finished, with a heartbeat within $4 µs.
	sqlRunEarlier = `
SELECT count(*)
FROM %[2]s
WHERE table_name = $2::text AND id < $3::bigint AND finished_at IS NULL
  AND seen_at >= coalesce($1::timestamptz, now()) - $4::bigint * interval '1 microsecond'`

	// sqlRunLast lists the $3 newest runs of table $2, newest first, with their state: their
	// outcome once finished, else running or, without a heartbeat for $4 µs, lost.
	sqlRunLast = `
SELECT id, owner, host, version, started_at, seen_at, finished_at,
       CASE WHEN finished_at IS NOT NULL THEN outcome
            WHEN seen_at < coalesce($1::timestamptz, now()) - $4::bigint * interval '1 microsecond' THEN 'lost'
            ELSE 'running' END,
       coalesce(stop, ''), exit_code, done, failed, rescheduled, released, claimed, rate_limited, calls,
       coalesce(error, '')
FROM %[2]s
WHERE table_name = $2::text
ORDER BY id DESC
LIMIT $3::int`
)

// StartRun records that a run starts on this contacts table and returns its id, for
// HeartbeatRun and FinishRun. The run's heartbeat starts with it: call HeartbeatRun every
// RunHeartbeat until FinishRun, or status shows the run as lost after RunLostAfter.
func (s *Store) StartRun(ctx context.Context, r RunStart) (RunID, error) {
	if r.Owner == "" {
		return 0, errors.New("start run: empty owner")
	}
	var id RunID
	if err := s.pool.QueryRow(ctx, s.runs.start, s.clock(), bareName(s.table), r.Owner, r.Host, r.Version).Scan(&id); err != nil {
		return 0, fmt.Errorf("start run: %w", err)
	}
	return id, nil
}

// HeartbeatRun moves run id's seen_at to now, so status keeps showing it as running. A run that
// already finished is left alone.
func (s *Store) HeartbeatRun(ctx context.Context, id RunID) error {
	if _, err := s.pool.Exec(ctx, s.runs.heartbeat, s.clock(), int64(id)); err != nil {
		return fmt.Errorf("heartbeat run %d: %w", id, err)
	}
	return nil
}

// ProgressRun is HeartbeatRun that also records what run id did so far, so the runs table shows
// a running run's counts (and a lost run's, as of its last heartbeat) rather than zeros until
// its end. A run that already finished is left alone.
func (s *Store) ProgressRun(ctx context.Context, id RunID, c RunCounts) error {
	if _, err := s.pool.Exec(ctx, s.runs.progress, s.clock(), int64(id), c.Done, c.Failed, c.Rescheduled, c.Released,
		c.Claimed, c.RateLimited, c.Calls); err != nil {
		return fmt.Errorf("record progress of run %d: %w", id, err)
	}
	return nil
}

// FinishRun records run id's end (only the first end of a run counts), then deletes all but
// the last RunsKept runs of the contacts table, so the runs table stays small. Both happen in
// one transaction.
func (s *Store) FinishRun(ctx context.Context, id RunID, e RunEnd) error {
	if e.Outcome == "" {
		return fmt.Errorf("finish run %d: empty outcome", id)
	}
	c := e.Counts
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.runs.finish, s.clock(), int64(id), e.Outcome, e.Stop, e.ExitCode,
			c.Done, c.Failed, c.Rescheduled, c.Released, c.Claimed, c.RateLimited, c.Calls, e.Error); err != nil {
			return fmt.Errorf("record end: %w", err)
		}
		if _, err := tx.Exec(ctx, s.runs.trim, bareName(s.table), RunsKept); err != nil {
			return fmt.Errorf("delete old runs: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish run %d: %w", id, err)
	}
	return nil
}

// EarlierRuns is how many runs of the contacts table started before run id and still run (not
// finished, a heartbeat within RunLostAfter): a run that is not the first stands by while the
// first keeps the instances (enrich.Runner.StandBy), rather than race it for them as they start
// together.
func (s *Store) EarlierRuns(ctx context.Context, id RunID) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, s.runs.earlier, s.clock(), bareName(s.table), int64(id), RunLostAfter.Microseconds()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count earlier runs: %w", err)
	}
	return n, nil
}

// LastRuns returns the n (at most RunsMax) newest runs of the contacts table, newest first, each
// with its State: its outcome once finished, RunRunning while its heartbeat is fresh, RunLost
// when it has not finished and sent no heartbeat for RunLostAfter.
func (s *Store) LastRuns(ctx context.Context, n int) ([]Run, error) {
	if n <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.runs.last, s.clock(), bareName(s.table), min(n, RunsMax), RunLostAfter.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("last runs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Run, error) {
		var x Run
		c := &x.Counts
		err := r.Scan(&x.ID, &x.Owner, &x.Host, &x.Version, &x.StartedAt, &x.SeenAt, &x.FinishedAt, &x.State,
			&x.Stop, &x.ExitCode, &c.Done, &c.Failed, &c.Rescheduled, &c.Released, &c.Claimed, &c.RateLimited,
			&c.Calls, &x.Error)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("last runs: %w", err)
	}
	return out, nil
}
