package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// unapply makes a migrated database look like one that has not had 0009 yet: the column its
// ALTER TABLE adds is gone and the version is not recorded.
func unapply0009(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, sql := range []string{
		`ALTER TABLE contacts DROP COLUMN avatar_sha256`,
		`DELETE FROM enrich_schema_migrations WHERE table_name = 'contacts' AND version = 9`,
		`INSERT INTO contacts (phone_number) VALUES ('79001234567')`,
	} {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// longReader opens a REPEATABLE READ transaction that has read the contacts table (an export, a
// report), named by its application_name, and returns its connection's pid and a func that ends
// it.
func longReader(t *testing.T, pool *pgxpool.Pool) (pid uint32, end func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET application_name = 'nightly-report'`); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	done := false
	end = func() {
		if done {
			return
		}
		done = true
		if err := tx.Commit(ctx); err != nil {
			t.Errorf("end the reader: %v", err)
		}
		conn.Release()
	}
	t.Cleanup(end)
	return conn.Conn().PgConn().PID(), end
}

// waitForLockWait returns once a session waits for a lock on a statement LIKE pattern.
func waitForLockWait(t *testing.T, pool *pgxpool.Pool, pattern string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`, pattern).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session waits for a lock on %q", pattern)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMigrateLockTimeout: migrate's ALTER TABLE behind a long REPEATABLE READ reader does not
// hold the runs' statements behind it: it gives up after lock_timeout and tries again, applies
// the file once the reader ends, or fails after its attempts naming the reader.
func TestMigrateLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("OthersGoOnThenItSucceeds", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewDB(t))
		unapply0009(t, pool)
		_, endReader := longReader(t, pool)
		type result struct {
			applied []string
			err     error
		}
		res := make(chan result, 1)
		go func() {
			applied, err := store.MigrateWith(ctx, pool, "contacts",
				store.MigrateOptions{LockTimeout: 100 * time.Millisecond, Attempts: 1000, Backoff: 10 * time.Millisecond})
			res <- result{applied, err}
		}()
		waitForLockWait(t, pool, "-- Kept avatars%")
		// A run's write, while the ALTER TABLE is queued for the table: it goes on.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		tag, err := pool.Exec(wctx, `UPDATE contacts SET reason = 'still writing' WHERE phone_number = '79001234567'`)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("a run's UPDATE while migrate waits for the reader: %v, %v (after %v): it is held behind the ALTER TABLE",
				tag, err, time.Since(start).Round(time.Millisecond))
		}
		t.Logf("a run's UPDATE while migrate waits behind the reader: done in %v", time.Since(start).Round(time.Millisecond))
		select {
		case r := <-res:
			t.Fatalf("migrate returned %v, %v while the reader still holds the table", r.applied, r.err)
		default:
		}
		endReader()
		r := <-res
		if r.err != nil || !slices.Equal(r.applied, []string{"0009_avatars.sql"}) {
			t.Fatalf("migrate after the reader ended: %v, %v; want 0009_avatars.sql applied", r.applied, r.err)
		}
	})

	t.Run("GivesUpNamingTheReader", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewDB(t))
		unapply0009(t, pool)
		pid, _ := longReader(t, pool)
		applied, err := store.MigrateWith(ctx, pool, "contacts",
			store.MigrateOptions{LockTimeout: 50 * time.Millisecond, Attempts: 3, Backoff: 10 * time.Millisecond})
		if err == nil {
			t.Fatalf("migrate behind a reader that never ends: applied %v, no error", applied)
		}
		t.Logf("error: %v", err)
		for _, want := range []string{"0009_avatars.sql", "gave up after 3 attempts", "lock_timeout 50ms",
			fmt.Sprintf("pid %d", pid), `"nightly-report"`, "AccessShareLock", "run enrich migrate again"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q", want)
			}
		}
		if len(applied) != 0 {
			t.Errorf("applied %v, want none", applied)
		}
	})
}

// TestMigrateConcurrentIndex: a no-transaction file's CREATE INDEX CONCURRENTLY that failed
// half-way left an INVALID index; migrate drops it and builds the index again.
func TestMigrateConcurrentIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Connect(t, pgtest.NewDB(t))
	for _, sql := range []string{
		`DROP INDEX contacts_refresh_age_idx`,
		`DELETE FROM enrich_schema_migrations WHERE table_name = 'contacts' AND version = 11`,
		`INSERT INTO contacts (phone_number, status) VALUES ('79001234567', 'done'), ('79001234568', 'done')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A build that fails half-way (here a unique violation) leaves its index INVALID.
	if _, err := pool.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY contacts_refresh_age_idx ON contacts (status)`); err == nil {
		t.Fatal("the unique build over two done rows did not fail")
	}
	valid := func() (bool, string) {
		t.Helper()
		var ok bool
		var def string
		if err := pool.QueryRow(ctx, `SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index AS i
			WHERE i.indexrelid = 'contacts_refresh_age_idx'::regclass`).Scan(&ok, &def); err != nil {
			t.Fatal(err)
		}
		return ok, def
	}
	if ok, def := valid(); ok {
		t.Fatalf("the failed build left a valid index: %s", def)
	}
	applied, err := store.Migrate(ctx, pool, "contacts")
	if err != nil || !slices.Equal(applied, []string{"0011_refresh_indexes.sql"}) {
		t.Fatalf("migrate: %v, %v; want 0011_refresh_indexes.sql applied", applied, err)
	}
	if ok, def := valid(); !ok || !strings.Contains(def, "(checked_at, id) WHERE (status = 'done'::text)") {
		t.Fatalf("after migrate the index is valid %v: %s; want the refresh index, valid", ok, def)
	}
	if again, err := store.Migrate(ctx, pool, "contacts"); err != nil || len(again) != 0 {
		t.Fatalf("migrate again: %v, %v; want nothing", again, err)
	}
}
