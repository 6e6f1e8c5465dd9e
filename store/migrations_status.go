package store

import (
	"context"
	"fmt"
	"time"

	"github.com/enrich-dev/enrich/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sqlMigrationsList reads what is recorded for a table; %[1]s is the quoted tracking table.
const sqlMigrationsList = `SELECT version, applied_at FROM %[1]s WHERE table_name = $1::text`

// MigrationState is one migration file and whether the table has it, for `enrich migrate
// status` and `enrich migrate --dry-run`: an operator sees what an upgrade will do before it
// takes any lock.
type MigrationState struct {
	// Version is the file's number, Name its file name (0007_refresh.sql).
	Version int    `json:"version"`
	Name    string `json:"name"`
	// Applied says the table has it; AppliedAt is when it was recorded (nil when pending).
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	// Concurrent says the file builds its indexes CONCURRENTLY, outside a transaction.
	Concurrent bool `json:"concurrent"`
	// SQL is the file as Migrate would run it on this table (placeholders filled in).
	SQL string `json:"sql,omitempty"`
}

// Migrations lists every migration file for table (default "contacts") in order, with what is
// recorded as applied (o.BudgetSchema names the budget's schema in the SQL). It only reads: a database that was never migrated has every file
// pending. Pending files carry the SQL Migrate would run.
func Migrations(ctx context.Context, pool *pgxpool.Pool, table string, o MigrateOptions) ([]MigrationState, error) {
	if table == "" {
		table = TableDefault
	}
	id, err := ParseTable(table)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	files, err := loadMigrations(migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("migrations: load files: %w", err)
	}
	tracking := sharedIdentifier(id, migrationsTable)
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1::text) IS NOT NULL`, tracking.Sanitize()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrations: find %s: %w", migrationsTable, err)
	}
	applied := map[int]time.Time{}
	if exists {
		rows, err := pool.Query(ctx, fmt.Sprintf(sqlMigrationsList, tracking.Sanitize()), bareName(id))
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", migrationsTable, err)
		}
		var v int
		var at time.Time
		if _, err := pgx.ForEachRow(rows, []any{&v, &at}, func() error { applied[v] = at; return nil }); err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", migrationsTable, err)
		}
	}
	out := make([]MigrationState, 0, len(files))
	for _, m := range files {
		s := MigrationState{Version: m.version, Name: m.name, Concurrent: m.concurrent()}
		if at, ok := applied[m.version]; ok {
			s.Applied, s.AppliedAt = true, &at
		} else if s.SQL, err = renderMigration(m.sql, id, o.BudgetSchema); err != nil {
			return nil, fmt.Errorf("migrations: render %s: %w", m.name, err)
		}
		out = append(out, s)
	}
	return out, nil
}
