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
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLockName names the session advisory lock Migrate holds; its 64-bit FNV-1a hash is the
// lock key, the same in every pod and every version.
const migrateLockName = "enrich.migrate"

// migrateUnlockTimeout bounds the unlock that runs after Migrate, on a context the caller cannot
// cancel: a migration interrupted by a stop must still release the lock.
const migrateUnlockTimeout = 10 * time.Second

// migrationsTable records which migration versions were applied to which table.
const migrationsTable = "enrich_schema_migrations"

const (
	sqlMigrateLock   = `SELECT pg_advisory_lock($1)`
	sqlMigrateUnlock = `SELECT pg_advisory_unlock($1)`

	// %[1]s is the quoted, maybe schema-qualified enrich_schema_migrations.
	sqlMigrationsCreate = `
CREATE TABLE IF NOT EXISTS %[1]s (
    table_name text NOT NULL,
    version    int NOT NULL,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, version)
)`
	sqlMigrationsApplied = `SELECT version FROM %[1]s WHERE table_name = $1`
	sqlMigrationsRecord  = `INSERT INTO %[1]s (table_name, version, name) VALUES ($1, $2, $3)`
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
// It is safe to run from many pods at once: it holds a session advisory lock on a dedicated
// connection, so the others wait and then find nothing to do. Each file runs in its own
// transaction together with its record in enrich_schema_migrations, which lives in the table's
// schema when the name is qualified and in the search_path's first schema otherwise; versions are
// recorded under the bare table name. The lock is released even when the caller's context is
// cancelled, and the connection is closed rather than returned if the unlock fails.
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

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()

	key := migrateLockKey()
	if _, err := conn.Exec(ctx, sqlMigrateLock, key); err != nil {
		// Interrupted while waiting: the lock may have been granted just as we gave up, so end
		// the session rather than pool a connection that might hold it.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("migrate: take advisory lock %q: %w", migrateLockName, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), migrateUnlockTimeout)
		defer cancel()
		var released bool
		uerr := conn.QueryRow(uctx, sqlMigrateUnlock, key).Scan(&released)
		if uerr == nil && !released {
			uerr = errors.New("lock was not held")
		}
		if uerr != nil {
			// Ending the session is the only other way to free the lock; do not hand a
			// connection that may still hold it back to the pool.
			_ = conn.Conn().Close(uctx)
			err = errors.Join(err, fmt.Errorf("migrate: release advisory lock %q: %w", migrateLockName, uerr))
		}
	}()

	tracking := pgx.Identifier{migrationsTable}
	if len(id) == 2 {
		tracking = pgx.Identifier{id[0], migrationsTable}
	}
	trackingSQL := tracking.Sanitize()
	if _, err := conn.Exec(ctx, fmt.Sprintf(sqlMigrationsCreate, trackingSQL)); err != nil {
		return nil, fmt.Errorf("migrate: create %s: %w", trackingSQL, err)
	}

	rows, err := conn.Query(ctx, fmt.Sprintf(sqlMigrationsApplied, trackingSQL), bareName(id))
	if err != nil {
		return nil, fmt.Errorf("migrate: read applied versions: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("migrate: read applied versions: %w", err)
	}
	done := make(map[int]bool, len(versions))
	for _, v := range versions {
		done[v] = true
	}

	record := fmt.Sprintf(sqlMigrationsRecord, trackingSQL)
	for _, m := range files {
		if done[m.version] {
			continue
		}
		body, err := renderMigration(m.sql, id)
		if err != nil {
			return applied, fmt.Errorf("migrate: render %s: %w", m.name, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: pgx sends it by the simple protocol, so a file may hold many
			// statements.
			if _, err := tx.Exec(ctx, body); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, record, bareName(id), m.version, m.name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrate: apply %s to %s: %w", m.name, id.Sanitize(), err)
		}
		applied = append(applied, m.name)
	}
	return applied, nil
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
		default:
			bad = append(bad, m)
			return m
		}
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown placeholders %v: use {{table}} or {{name:SUFFIX}}", bad)
	}
	return out, nil
}
