package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLockName names the transaction-level advisory lock each migration transaction takes
// first; its 64-bit FNV-1a hash is the lock key, the same in every pod and every version (older
// versions held it as a session lock, which conflicts with it just the same).
const migrateLockName = "enrich.migrate"

// migrationsTable records which migration versions were applied to which table.
const migrationsTable = "enrich_schema_migrations"

const (
	sqlMigrateLock = `SELECT pg_advisory_xact_lock($1::bigint)`

	// sqlMigrateLockTimeout bounds every lock wait of the file that follows it in its
	// transaction ($1 milliseconds, as text: SET takes no parameters). The advisory lock is taken
	// before it, so pods still wait for each other as long as a file takes.
	sqlMigrateLockTimeout = `SELECT set_config('lock_timeout', $1::text, true)`

	// sqlMigrateBlockers names the sessions that hold a lock on the table ($1, quoted) other
	// than this one, for the error after the last attempt: pid, application_name, state and
	// how long their transaction has been open. Not their query text, which may hold data.
	sqlMigrateBlockers = `
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
       coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0), string_agg(DISTINCT l.mode, ',')
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = to_regclass($1::text)
GROUP BY a.pid, a.application_name, a.state, a.xact_start
ORDER BY a.xact_start NULLS LAST
LIMIT 5`

	// sqlIndexState says what stands in the way of building index $2 (quoted, maybe
	// schema-qualified) of table $1: 'building' while another session builds an index of the
	// table (two concurrent builds of one table that overlap deadlock), 'valid' when it is
	// there, 'invalid' when a CREATE INDEX CONCURRENTLY failed half-way and left it INVALID
	// (IF NOT EXISTS would keep it for good), 'missing' otherwise.
	sqlIndexState = `
SELECT CASE
    WHEN EXISTS (SELECT FROM pg_stat_progress_create_index
                 WHERE relid = to_regclass($1::text) AND pid <> pg_backend_pid()) THEN 'building'
    WHEN i.indisvalid THEN 'valid'
    WHEN i.indexrelid IS NOT NULL THEN 'invalid'
    ELSE 'missing'
END
FROM (SELECT 1) AS one LEFT JOIN pg_index AS i ON i.indexrelid = to_regclass($2::text)`

	// %[1]s is the quoted, maybe schema-qualified enrich_schema_migrations.
	sqlMigrationsCreate = `
CREATE TABLE IF NOT EXISTS %[1]s (
    table_name text NOT NULL,
    version    int NOT NULL,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, version)
)`
	sqlMigrationsApplied = `SELECT EXISTS (SELECT FROM %[1]s WHERE table_name = $1::text AND version = $2::int)`
	sqlMigrationsRecord  = `INSERT INTO %[1]s (table_name, version, name) VALUES ($1::text, $2::int, $3::text)`
)

// migrateLockKey is the advisory lock key for migrateLockName. It is computed rather than
// written out so that the name, which a reader can grep for, is the source of truth.
func migrateLockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte(migrateLockName))
	return int64(h.Sum64())
}

// migration is one embedded file, parsed.
type migration struct {
	version int
	name    string // file name, e.g. 0001_contacts.sql
	sql     string // still with placeholders
}

// MigrateOptions bound how long Migrate waits for the table's locks. The zero value is the
// defaults.
type MigrateOptions struct {
	// LockTimeout bounds each wait for a lock on a table a file changes (lock_timeout): an ALTER
	// TABLE queued behind a long reader (an export, a REPEATABLE READ report) holds every other
	// statement on the table behind it, so it gives up after this long instead, and tries again.
	// Default MigrateLockTimeoutDefault.
	LockTimeout time.Duration
	// Attempts is how many times a file is tried while its locks time out; the error after the
	// last one names the sessions that hold the table. Default MigrateAttemptsDefault.
	Attempts int
	// Backoff is the wait after the first timed-out attempt; it doubles after each, up to 30 s.
	// Default MigrateBackoffDefault.
	Backoff time.Duration
	// BudgetSchema is the schema of the instances' shared budget, as Config.BudgetSchema.
	// Default BudgetSchemaDefault; created if missing.
	BudgetSchema string
}

// The defaults of MigrateOptions: about two minutes of attempts in all, each holding the
// table's other statements back for at most 5 s.
const (
	MigrateLockTimeoutDefault = 5 * time.Second
	MigrateAttemptsDefault    = 8
	MigrateBackoffDefault     = time.Second
	migrateBackoffMax         = 30 * time.Second
)

// Migrate brings table (default "contacts"; "schema.table" allowed) up to the newest migration
// in package migrations and returns the names of the files it applied, none when it was current,
// with the default MigrateOptions.
//
// It is safe to run from many pods at once, directly or through a connection pooler in session
// or transaction mode (see PoolOptions.Pooler): each file runs in its own read-committed
// transaction, which first takes a transaction-level advisory lock (pg_advisory_xact_lock, so
// no lock outlives the transaction, whatever server connection a pooler lends), then creates
// enrich_schema_migrations if missing, checks again whether the file's version is recorded
// (another pod may have applied it while this one waited), and if not applies the file and
// records it, and commits. So each file is applied exactly once, and the others wait for it and
// then find nothing to do. enrich_schema_migrations lives in the table's schema when the name is
// qualified and in the search_path's first schema otherwise; versions are recorded under the
// bare table name.
//
// Every lock wait of a file is bounded (MigrateOptions.LockTimeout): a file whose ALTER TABLE
// waits behind a long reader gives up, so that the runs' statements queued behind it go on, and
// is tried again after a backoff; the error after the last attempt names the sessions holding
// the table. A file whose first line is noTransactionMarker builds indexes CONCURRENTLY, which
// cannot run in a transaction: see migrateOne and applyConcurrently.
//
// An error or a cancelled ctx rolls back the file being applied; the files applied before it
// stay applied and are returned with the error.
func Migrate(ctx context.Context, pool *pgxpool.Pool, table string) (applied []string, err error) {
	return MigrateWith(ctx, pool, table, MigrateOptions{})
}

// MigrateWith is Migrate with its lock waits bounded by o.
func MigrateWith(ctx context.Context, pool *pgxpool.Pool, table string, o MigrateOptions) (applied []string, err error) {
	if table == "" {
		table = TableDefault
	}
	id, err := ParseTable(table)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = MigrateLockTimeoutDefault
	}
	if o.Attempts <= 0 {
		o.Attempts = MigrateAttemptsDefault
	}
	if o.Backoff <= 0 {
		o.Backoff = MigrateBackoffDefault
	}
	if o.BudgetSchema == "" {
		o.BudgetSchema = BudgetSchemaDefault
	} else if err := CheckSchema(o.BudgetSchema); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	files, err := loadMigrations(migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("migrate: load files: %w", err)
	}

	trackingSQL := sharedIdentifier(id, migrationsTable).Sanitize()
	q := migrateQueries{
		create:  fmt.Sprintf(sqlMigrationsCreate, trackingSQL),
		applied: fmt.Sprintf(sqlMigrationsApplied, trackingSQL),
		record:  fmt.Sprintf(sqlMigrationsRecord, trackingSQL),
	}
	for _, m := range files {
		body, err := renderMigration(m.sql, id, o.BudgetSchema)
		if err != nil {
			return applied, fmt.Errorf("migrate: render %s: %w", m.name, err)
		}
		did, err := migrateRetrying(ctx, pool, q, id, m, body, o)
		if err != nil && isPermissionDenied(err) && strings.Contains(m.sql, "{{budget_schema}}") {
			return applied, fmt.Errorf("migrate: %s to %s: %w; the instances' shared budget lives in schema %q "+
				"(database.budget_schema), which this role may not create or create tables in: create it once as the "+
				"database's owner (CREATE SCHEMA %s AUTHORIZATION <this role>), or set database.budget_schema to a "+
				"schema this role may create tables in", m.name, id.Sanitize(), err, o.BudgetSchema, pgx.Identifier{o.BudgetSchema}.Sanitize())
		}
		if err != nil {
			return applied, fmt.Errorf("migrate: %s to %s: %w", m.name, id.Sanitize(), err)
		}
		if did {
			applied = append(applied, m.name)
		}
	}
	return applied, nil
}

// migrateRetrying applies m, trying again with backoff while its lock waits time out (or it is a
// deadlock's victim, see isDeadlock), and after
// the last attempt returns an error that names the sessions holding the table.
func migrateRetrying(ctx context.Context, pool *pgxpool.Pool, q migrateQueries, id pgx.Identifier, m migration, body string, o MigrateOptions) (bool, error) {
	wait := o.Backoff
	for attempt := 1; ; attempt++ {
		did, err := migrateOne(ctx, pool, q, id, m, body, o.LockTimeout)
		if err == nil || !isLockTimeout(err) && !isDeadlock(err) || ctx.Err() != nil {
			return did, err
		}
		if attempt >= o.Attempts {
			return false, fmt.Errorf("%w; gave up after %d attempts of lock_timeout %s: %s", err, attempt, o.LockTimeout,
				describeBlockers(ctx, pool, id))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, err
		case <-t.C:
		}
		wait = min(2*wait, migrateBackoffMax)
	}
}

// isPermissionDenied says err is PostgreSQL's insufficient_privilege (42501).
func isPermissionDenied(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42501"
}

// isLockTimeout says err is PostgreSQL's lock_not_available (55P03): lock_timeout passed.
func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// isDeadlock says err is PostgreSQL's deadlock_detected (40P01). A transactional file that
// locks the table (0014's ALTER TABLE) can be the victim while another pod, running a
// no-transaction file side by side, builds an index CONCURRENTLY: the build waits for the
// file's transaction (an older snapshot) and the file for the build's lock. The victim's
// transaction is rolled back whole, so trying it again, as after a lock timeout, is safe.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

// describeBlockers names the sessions holding a lock on table id, for a person to end or wait
// for; it says so when it cannot tell.
func describeBlockers(ctx context.Context, pool *pgxpool.Pool, id pgx.Identifier) string {
	rows, err := pool.Query(ctx, sqlMigrateBlockers, id.Sanitize())
	if err != nil {
		return fmt.Sprintf("could not list the sessions holding %s (%v)", id.Sanitize(), err)
	}
	defer rows.Close()
	var who []string
	for rows.Next() {
		var (
			pid        int32
			app, state string
			ageS       int64
			modes      string
		)
		if err := rows.Scan(&pid, &app, &state, &ageS, &modes); err != nil {
			return fmt.Sprintf("could not list the sessions holding %s (%v)", id.Sanitize(), err)
		}
		who = append(who, fmt.Sprintf("pid %d (application_name %q, %s, transaction open %ds, holds %s)", pid, app, state, ageS, modes))
	}
	if err := rows.Err(); err != nil {
		return fmt.Sprintf("could not list the sessions holding %s (%v)", id.Sanitize(), err)
	}
	if len(who) == 0 {
		return fmt.Sprintf("no session holds %s now: run enrich migrate again", id.Sanitize())
	}
	return fmt.Sprintf("%s is held by %s: let it finish (or end it with pg_terminate_backend(pid)) and run enrich migrate again",
		id.Sanitize(), strings.Join(who, "; "))
}

// migrateQueries are the tracking-table statements with its name filled in.
type migrateQueries struct{ create, applied, record string }

// migrateOne applies migration m (rendered as body) to table id unless it is recorded already,
// all in one transaction under the advisory lock, and reports whether it did. Every lock wait of
// the file is bounded by lockTimeout.
//
// Read committed matters: each statement sees what was committed before it started, so the
// check after the lock sees what the previous holder committed. Under repeatable read (a
// server's default_transaction_isolation may say so) the snapshot would date from the lock
// statement, taken before the wait, and the file would be applied twice.
//
// A no-transaction file (m.concurrent) is checked under the lock, applied outside any
// transaction by applyConcurrently, and recorded under the lock again by whichever pod finishes
// first: pods that run it side by side each find the indexes built or wait for the build.
func migrateOne(ctx context.Context, pool *pgxpool.Pool, q migrateQueries, id pgx.Identifier, m migration, body string, lockTimeout time.Duration) (did bool, err error) {
	locked := func(apply func(tx pgx.Tx) error) error {
		did = false
		return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, sqlMigrateLock, migrateLockKey()); err != nil {
				return fmt.Errorf("take advisory lock %q: %w", migrateLockName, err)
			}
			if _, err := tx.Exec(ctx, sqlMigrateLockTimeout, strconv.FormatInt(lockTimeout.Milliseconds(), 10)); err != nil {
				return fmt.Errorf("set lock_timeout: %w", err)
			}
			if _, err := tx.Exec(ctx, q.create); err != nil {
				return fmt.Errorf("create %s: %w", migrationsTable, err)
			}
			var done bool
			if err := tx.QueryRow(ctx, q.applied, bareName(id), m.version).Scan(&done); err != nil {
				return fmt.Errorf("read applied versions: %w", err)
			}
			if done {
				return nil
			}
			if err := apply(tx); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, q.record, bareName(id), m.version, m.name); err != nil {
				return fmt.Errorf("record: %w", err)
			}
			did = true
			return nil
		})
	}
	if m.concurrent() {
		// Check first, so a current table costs no statement outside the lock.
		pending := false
		if err := locked(func(pgx.Tx) error { pending = true; return errNotYet }); err != nil && !errors.Is(err, errNotYet) {
			return false, err
		}
		if !pending {
			return false, nil
		}
		if err := applyConcurrently(ctx, pool, id, body); err != nil {
			return false, err
		}
		if err := locked(func(pgx.Tx) error { return nil }); err != nil {
			return false, err
		}
		return did, nil
	}
	if err := locked(func(tx pgx.Tx) error {
		// No arguments: pgx sends it by the simple protocol, so a file may hold many
		// statements.
		if _, err := tx.Exec(ctx, body); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		return nil
	}); err != nil {
		return false, err
	}
	return did, nil
}

// errNotYet rolls back the check of a no-transaction file that is not applied yet.
var errNotYet = errors.New("not applied yet")

// noTransactionMarker, the first line of a migration file, says its statements run outside a
// transaction, one at a time: CREATE INDEX CONCURRENTLY cannot run in one.
const noTransactionMarker = "-- enrich:no-transaction"

// concurrent says m is a file of statements that run outside a transaction.
func (m migration) concurrent() bool {
	first, _, _ := strings.Cut(m.sql, "\n")
	return strings.TrimSpace(first) == noTransactionMarker
}

// concurrentIndex matches a rendered CREATE INDEX CONCURRENTLY IF NOT EXISTS and captures the
// index's quoted name.
var concurrentIndex = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+("(?:[^"]|"")+")\s+ON\s`)

// applyConcurrently runs the statements of a no-transaction file (body, rendered for table id)
// one by one, each in its own implicit transaction (so also through a pooler in transaction
// mode). Each statement must be idempotent, as a file can be cut half-way and run again, and
// pods may run it side by side: CREATE INDEX CONCURRENTLY IF NOT EXISTS (a second build of the
// same table waits for the first, then finds the index). A build that failed half-way (a
// cancel, a unique violation, a pod killed) leaves an INVALID index that IF NOT EXISTS would
// keep for good, so an INVALID index of the name that no session is building is dropped
// (concurrently) first and built again. The builds take SHARE UPDATE EXCLUSIVE, which the runs'
// reads and writes do not wait for, so they wait as long as they need for older transactions
// without holding anyone back.
func applyConcurrently(ctx context.Context, pool *pgxpool.Pool, id pgx.Identifier, body string) error {
	for _, stmt := range splitStatements(body) {
		mm := concurrentIndex.FindStringSubmatch(stmt)
		if mm == nil {
			if _, err := pool.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			continue
		}
		index := mm[1]
		if len(id) == 2 {
			index = pgx.Identifier{id[0]}.Sanitize() + "." + index
		}
		if err := buildConcurrently(ctx, pool, id, index, stmt); err != nil {
			return err
		}
	}
	return nil
}

// concurrentTries bounds the clashes one index build may meet with other pods' builds of the
// same table: two that start together may deadlock (each waits for the other's transaction) or
// update the same catalog row (tuple concurrently updated), and PostgreSQL ends one of them.
const concurrentTries = 20

// buildConcurrently runs stmt, a CREATE INDEX CONCURRENTLY IF NOT EXISTS of index, on table id,
// unless the index is there and valid. It first waits for any build another session has under
// way on the table (another pod's of the same file, most often: it then finds the index built),
// drops an INVALID index of the name that no one is building, and when its build clashes with
// another pod's one that started at the same moment (a deadlock, a catalog row updated
// concurrently) it looks again.
func buildConcurrently(ctx context.Context, pool *pgxpool.Pool, id pgx.Identifier, index, stmt string) error {
	for try := 1; ; try++ {
		var state string
		for {
			if err := pool.QueryRow(ctx, sqlIndexState, id.Sanitize(), index).Scan(&state); err != nil {
				return fmt.Errorf("check index %s: %w", index, err)
			}
			if state != "building" {
				break
			}
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("wait for another session's index build on %s: %w", id.Sanitize(), ctx.Err())
			case <-t.C:
			}
		}
		var err error
		switch state {
		case "valid":
			return nil
		case "invalid":
			_, err = pool.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+index)
		}
		if err == nil {
			_, err = pool.Exec(ctx, stmt)
		}
		if err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "40P01" && pe.Code != "XX000") || try >= concurrentTries {
			return fmt.Errorf("build index %s: %w", index, err)
		}
	}
}

// splitStatements cuts a no-transaction file into its statements: each ends with a semicolon at
// the end of a line. Comment lines are dropped.
func splitStatements(body string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteString("\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

// migrationFileName is NNNN_what.sql.
var migrationFileName = regexp.MustCompile(`^([0-9]{4,})_[a-z0-9_]+\.sql$`)

// loadMigrations reads and orders the migration files, refusing oddly named or duplicate
// versions so a packaging mistake fails loudly instead of skipping a file.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		mm := migrationFileName.FindStringSubmatch(e.Name())
		if mm == nil {
			return nil, fmt.Errorf("file %q is not named NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(mm[1])
		if err != nil {
			return nil, fmt.Errorf("file %q: version: %w", e.Name(), err)
		}
		if prev, ok := seen[v]; ok {
			return nil, fmt.Errorf("files %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// sharedIdentifier names a table every contacts table of a schema shares (the migrations record,
// the instances' budget): in the contacts table's schema when its name is qualified, else
// unqualified (the search_path's first schema).
func sharedIdentifier(id pgx.Identifier, name string) pgx.Identifier {
	if len(id) == 2 {
		return pgx.Identifier{id[0], name}
	}
	return pgx.Identifier{name}
}

// placeholder matches {{anything}} so unknown placeholders can be reported.
var placeholder = regexp.MustCompile(`\{\{([^{}]*)\}\}`)

// renderMigration replaces the placeholders documented in package migrations with quoted
// identifiers for table id.
func renderMigration(sql string, id pgx.Identifier, budgetSchema string) (string, error) {
	var bad []string
	out := placeholder.ReplaceAllStringFunc(sql, func(m string) string {
		inner := strings.TrimSpace(m[2 : len(m)-2])
		switch {
		case inner == "table":
			return id.Sanitize()
		case strings.HasPrefix(inner, "name:") && len(inner) > len("name:"):
			return pgx.Identifier{indexName(id, strings.TrimPrefix(inner, "name:"))}.Sanitize()
		case strings.HasPrefix(inner, "shared:") && len(inner) > len("shared:"):
			return sharedIdentifier(id, strings.TrimPrefix(inner, "shared:")).Sanitize()
		case strings.HasPrefix(inner, "budget:") && len(inner) > len("budget:"):
			return budgetIdentifier(budgetSchema, strings.TrimPrefix(inner, "budget:")).Sanitize()
		case inner == "budget_schema":
			// A string literal (the name is a plain identifier: no quote to escape).
			return "'" + budgetIdentifier(budgetSchema, "")[0] + "'"
		default:
			bad = append(bad, m)
			return m
		}
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown placeholders %v: use {{table}}, {{name:SUFFIX}}, {{shared:NAME}}, {{budget:NAME}} or {{budget_schema}}", bad)
	}
	return out, nil
}
