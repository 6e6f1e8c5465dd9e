package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/enrich-dev/enrich/migrations"
	"github.com/jackc/pgx/v5"
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

// Migrate brings table (default "contacts"; "schema.table" allowed) up to the newest migration
// in package migrations and returns the names of the files it applied, none when it was current.
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
// An error or a cancelled ctx rolls back the file being applied; the files applied before it
// stay applied and are returned with the error.
func Migrate(ctx context.Context, pool *pgxpool.Pool, table string) (applied []string, err error) {
	if table == "" {
		table = TableDefault
	}
	id, err := ParseTable(table)
	if err != nil {
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
		body, err := renderMigration(m.sql, id)
		if err != nil {
			return applied, fmt.Errorf("migrate: render %s: %w", m.name, err)
		}
		did, err := migrateOne(ctx, pool, q, bareName(id), m, body)
		if err != nil {
			return applied, fmt.Errorf("migrate: %s to %s: %w", m.name, id.Sanitize(), err)
		}
		if did {
			applied = append(applied, m.name)
		}
	}
	return applied, nil
}

// migrateQueries are the tracking-table statements with its name filled in.
type migrateQueries struct{ create, applied, record string }

// migrateOne applies migration m (rendered as body) to the table recorded as name unless it is
// recorded already, all in one transaction under the advisory lock, and reports whether it did.
//
// Read committed matters: each statement sees what was committed before it started, so the
// check after the lock sees what the previous holder committed. Under repeatable read (a
// server's default_transaction_isolation may say so) the snapshot would date from the lock
// statement, taken before the wait, and the file would be applied twice.
func migrateOne(ctx context.Context, pool *pgxpool.Pool, q migrateQueries, name string, m migration, body string) (did bool, err error) {
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlMigrateLock, migrateLockKey()); err != nil {
			return fmt.Errorf("take advisory lock %q: %w", migrateLockName, err)
		}
		if _, err := tx.Exec(ctx, q.create); err != nil {
			return fmt.Errorf("create %s: %w", migrationsTable, err)
		}
		var done bool
		if err := tx.QueryRow(ctx, q.applied, name, m.version).Scan(&done); err != nil {
			return fmt.Errorf("read applied versions: %w", err)
		}
		if done {
			return nil
		}
		// No arguments: pgx sends it by the simple protocol, so a file may hold many
		// statements.
		if _, err := tx.Exec(ctx, body); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if _, err := tx.Exec(ctx, q.record, name, m.version, m.name); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		did = true
		return nil
	})
	if err != nil {
		return false, err
	}
	return did, nil
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
func renderMigration(sql string, id pgx.Identifier) (string, error) {
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
		default:
			bad = append(bad, m)
			return m
		}
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown placeholders %v: use {{table}}, {{name:SUFFIX}} or {{shared:NAME}}", bad)
	}
	return out, nil
}
