package store_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/migrations"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ConcurrentThenIdempotent", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
		var (
			wg      sync.WaitGroup
			applied [2][]string
			errs    [2]error
		)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				applied[i], errs[i] = store.Migrate(ctx, pool, "contacts")
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("migrate %d: %v", i, err)
			}
		}
		// Each file is applied once, by one of them: which one may differ file by file.
		all := append(append([]string{}, applied[0]...), applied[1]...)
		slices.Sort(all)
		if !slices.Equal(all, migrationFiles(t)) {
			t.Fatalf("applied %v and %v, want %v once in all", applied[0], applied[1], migrationFiles(t))
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM enrich_schema_migrations WHERE table_name = 'contacts' AND version = 1`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("version 1 recorded %d times", n)
		}
		again, err := store.Migrate(ctx, pool, "contacts")
		if err != nil || len(again) != 0 {
			t.Fatalf("second migrate applied %v, %v; want nothing", again, err)
		}
		checkNoAdvisoryLocks(t, pool)
	})

	t.Run("ManyProcesses", func(t *testing.T) {
		t.Parallel()
		// Sixteen pods start at once on a database enrich has never seen, each with its own
		// pool, as separate processes would.
		dbURL := pgtest.NewEmptyDB(t)
		pools := make([]*pgxpool.Pool, 16)
		for i := range pools {
			pools[i] = newPool(t, dbURL, store.PoolOptions{MaxConns: 1})
		}
		start := time.Now()
		concurrentMigrate(t, pools)
		t.Logf("%d concurrent Migrate calls, one pool each, in %v", len(pools), time.Since(start))
		checkNoAdvisoryLocks(t, pgtest.Connect(t, dbURL))
	})

	t.Run("ServerDefaultsToRepeatableRead", func(t *testing.T) {
		t.Parallel()
		// Migrate's transactions must read what the previous lock holder committed, whatever
		// the server's default isolation.
		dbURL := pgtest.NewEmptyDB(t)
		cfg, err := pgx.ParseConfig(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pgtest.Connect(t, pgtest.AdminURL()).Exec(ctx, "ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+
			" SET default_transaction_isolation = 'repeatable read'"); err != nil {
			t.Fatal(err)
		}
		pools := make([]*pgxpool.Pool, 8)
		for i := range pools {
			pools[i] = newPool(t, dbURL, store.PoolOptions{MaxConns: 1})
		}
		concurrentMigrate(t, pools)
	})

	t.Run("WaitsForTheLock", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
		// Another pod holds the lock: Migrate waits, here until its deadline. The key is part of
		// the contract: pods of different versions must agree on it.
		h := fnv.New64a()
		h.Write([]byte("enrich.migrate"))
		key := int64(h.Sum64())
		holder, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Release()
		if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		// The pool (store.NewPoolConfig, as in production) cancels the wait on the server: the
		// error is PostgreSQL's "canceling statement", or the deadline when it came first.
		_, err = store.Migrate(short, pool, "contacts")
		var pgErr *pgconn.PgError
		if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &pgErr) && pgErr.Code == "57014") {
			t.Fatalf("migrate while locked: %v, want a lock-wait error", err)
		}
		if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			t.Fatal(err)
		}
		applied, err := store.Migrate(ctx, pool, "contacts")
		if err != nil || len(applied) != len(migrationFiles(t)) {
			t.Fatalf("migrate after unlock: %v, %v", applied, err)
		}
	})

	t.Run("SchemaQualified", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
		if _, err := pool.Exec(ctx, `CREATE SCHEMA crm`); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"crm.contacts", "contacts"} {
			applied, err := store.Migrate(ctx, pool, table)
			if err != nil || len(applied) != len(migrationFiles(t)) {
				t.Fatalf("migrate %s: %v, %v", table, applied, err)
			}
		}
		var recorded []string
		rows, err := pool.Query(ctx, `SELECT DISTINCT 'crm:' || table_name FROM crm.enrich_schema_migrations
			UNION ALL SELECT DISTINCT 'public:' || table_name FROM public.enrich_schema_migrations ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		if recorded, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if strings.Join(recorded, ",") != "crm:contacts,public:contacts" {
			t.Fatalf("recorded %v", recorded)
		}
		checkIndexes(t, pool, "crm", "contacts")
		checkIndexes(t, pool, "public", "contacts")
	})

	t.Run("NamesNeedingQuotes", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
		long := strings.Repeat("x", 63)
		for _, table := range []string{"My_Odd_Table", "UPPER", long, long[:62] + "y"} {
			if _, err := store.Migrate(ctx, pool, table); err != nil {
				t.Fatalf("migrate %q: %v", table, err)
			}
			checkIndexes(t, pool, "public", table)
		}
	})

	t.Run("InvalidName", func(t *testing.T) {
		t.Parallel()
		if _, err := store.Migrate(ctx, pgtest.NewPool(t), "a.b.c"); err == nil || !strings.Contains(err.Error(), `"a.b.c"`) {
			t.Fatalf("migrate a.b.c: %v, want an error naming it", err)
		}
	})
}

// TestMigrateThroughPgBouncer runs concurrent Migrate calls through a real PgBouncer in
// transaction mode, where a server connection serves many clients one transaction at a time.
func TestMigrateThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const clients = 8

	t.Run("PoolerTransaction", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewEmptyDB(t)
		// Three server connections for eight clients: the migrations contend for the advisory
		// lock on different server connections, and every client's statements also run on
		// server connections that other clients used before.
		bouncer := pgbouncer.Start(t, dbURL, pgbouncer.Options{PoolSize: 3})
		pools := make([]*pgxpool.Pool, clients)
		for i := range pools {
			pools[i] = newPool(t, bouncer, store.PoolOptions{Pooler: store.PoolerTransaction, MaxConns: 1})
		}
		start := time.Now()
		concurrentMigrate(t, pools)
		t.Logf("%d concurrent Migrate calls through pgbouncer (pool_mode = transaction, 3 server connections) in %v",
			clients, time.Since(start))
		checkNoAdvisoryLocks(t, pgtest.Connect(t, dbURL))
		checkNoPreparedStatements(t, bouncer, 3)
	})

	// The control: pgx's default exec mode through the same PgBouncer fails as the issue
	// reports. With one server connection it fails deterministically: the first client to get
	// it prepares its statements there under pgx's stmtcache_ names, and every later client,
	// whose own cache is empty, prepares the same names on the same server connection.
	t.Run("DefaultExecModeFails", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewEmptyDB(t)
		bouncer := pgbouncer.Start(t, dbURL, pgbouncer.Options{PoolSize: 1})
		var (
			wg   sync.WaitGroup
			errs = make([]error, clients)
		)
		for i := range clients {
			pool := newPool(t, bouncer, store.PoolOptions{MaxConns: 1})
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = store.Migrate(ctx, pool, "contacts")
			}()
		}
		wg.Wait()
		var failed int
		for _, err := range errs {
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
			case errors.As(err, &pgErr) && pgErr.Code == "42P05" && strings.Contains(pgErr.Message, `"stmtcache_`):
				failed++
			default:
				t.Errorf("migrate: %v; want success or duplicate_prepared_statement (42P05)", err)
			}
		}
		t.Logf("default exec mode through pgbouncer: %d of %d Migrate calls failed with 42P05, e.g. %v", failed, clients, firstError(errs))
		if failed != clients-1 {
			t.Errorf("%d of %d Migrate calls failed; want all but the first", failed, clients)
		}
	})
}

// concurrentMigrate runs Migrate on every pool at once, all on the same database, and checks
// that all succeed and that each migration file was applied once in all and recorded once.
func concurrentMigrate(t *testing.T, pools []*pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	var (
		wg      sync.WaitGroup
		applied = make([][]string, len(pools))
		errs    = make([]error, len(pools))
	)
	for i, pool := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = store.Migrate(ctx, pool, "contacts")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrate %d: %v", i, err)
		}
	}
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files: %v, %v", files, err)
	}
	count := map[string]int{}
	for _, names := range applied {
		for _, name := range names {
			count[name]++
		}
	}
	for _, f := range files {
		if count[f] != 1 {
			t.Errorf("%s applied %d times by %d concurrent Migrate calls, want once", f, count[f], len(pools))
		}
	}
	var recorded int
	if err := pools[0].QueryRow(ctx, `SELECT count(*) FROM enrich_schema_migrations WHERE table_name = 'contacts'`).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != len(files) {
		t.Errorf("%d versions recorded, want %d", recorded, len(files))
	}
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkIndexes asserts the table has its three indexes, with distinct names within the limit.
func checkIndexes(t *testing.T, pool *pgxpool.Pool, schema, table string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	type index struct{ Name, Def string }
	idx, err := pgx.CollectRows(rows, pgx.RowToStructByPos[index])
	if err != nil {
		t.Fatal(err)
	}
	var partial, unique, target int
	for _, i := range idx {
		if len(i.Name) > 63 {
			t.Errorf("index name %q longer than 63 bytes", i.Name)
		}
		if strings.Contains(i.Def, "WHERE (status = 'pending'::text)") && strings.Contains(i.Def, "(next_attempt_at, id)") {
			partial++
		}
		if strings.Contains(i.Def, "UNIQUE") && strings.Contains(i.Def, "IS NOT NULL") {
			unique++
		}
		if strings.Contains(i.Def, "UNIQUE") && strings.HasSuffix(i.Name, "_target_key") {
			target++
		}
	}
	// Other indexes (later migrations') may be there too; these must be.
	if partial != 1 || unique != 2 || target != 1 || !strings.Contains(fmt.Sprint(idx), "_pkey") {
		t.Errorf("%s.%s indexes: %+v; want pkey, two unique partial, the target key and the due index", schema, table, idx)
	}
}

func checkNoAdvisoryLocks(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d advisory locks still held after Migrate", n)
	}
}

// migrationFiles lists the embedded migration files in order: what Migrate applies to a new table.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
