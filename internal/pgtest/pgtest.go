// Package pgtest gives each test its own PostgreSQL database, migrated and empty, against a
// real server: enrich's correctness is in its SQL (locks, SKIP LOCKED, fences, plans), which a
// mock cannot check.
//
// Call Main from TestMain. It chooses the server in this order:
//
//  1. TEST_DATABASE_URL, when set and not empty: that server is used as is (it must allow
//     CREATE DATABASE). It is never started or stopped.
//  2. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable, when it answers within
//     about 2 s (a developer's local server with trust authentication).
//  3. A throw-away cluster: initdb and pg_ctl are looked up on PATH, then in
//     /usr/lib/postgresql/*/bin (newest version first); the cluster lives in a temporary
//     directory, trusts local users, listens only on a unix socket there, runs without fsync,
//     and is stopped (pg_ctl stop -m immediate) and deleted when the tests end, pass or fail.
//     As root, it runs as the "postgres" OS user, since PostgreSQL refuses to run as root.
//
// If none works, Main says what to install and exits with status 1: tests are never skipped.
//
// Main then creates one template database for the test process, migrated by store.Migrate for
// the default table "contacts". NewDB copies it (CREATE DATABASE ... TEMPLATE, cheap) for each
// test and drops the copy when the test ends, so tests are isolated and can run in parallel.
//
// pgtest imports store, so store's own tests must be in package store_test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the environment variable that points the tests at a given server.
const EnvURL = "TEST_DATABASE_URL"

// PoolMaxConns is the MaxConns of pools from NewPool and Connect: enough for the concurrency
// tests, small enough that many parallel tests fit in max_connections.
const PoolMaxConns = 8

// createRetries bounds retries of CREATE DATABASE ... TEMPLATE while PostgreSQL still sees a
// session on the template (a closed connection's backend can take a moment to exit).
const createRetries = 50

// env is what Main found. It is written once by Main before any test runs and only read
// afterwards: the one piece of package state, as with testing's own flags.
type env struct {
	adminURL string        // the server's maintenance database
	admin    *pgxpool.Pool // for CREATE/DROP DATABASE
	template string        // migrated template database name
}

var current *env

// Main runs the tests of a package against a real PostgreSQL (see the package doc) and exits
// with their status. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// cleanups run after the tests, before the exit (os.Exit skips deferred calls): for what a
// package's tests make once for all of them, such as a built binary.
func Main(m *testing.M, cleanups ...func()) {
	code := run(m)
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

func run(m *testing.M) (code int) {
	flag.Parse() // for testing.Verbose; m.Run parses again harmlessly
	ctx := context.Background()
	adminURL, stop, err := pgcluster.Find(ctx, os.Getenv(EnvURL))
	if err != nil && os.Getenv(EnvURL) != "" {
		fmt.Fprintf(os.Stderr, "pgtest: %v\npgtest: fix %s, or unset it to use a local server or a throw-away cluster.\n", err, EnvURL)
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: no PostgreSQL server for the tests: %v\n"+
			"pgtest: install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) so initdb and pg_ctl\n"+
			"pgtest: can start a throw-away cluster, or set %s to a server that allows CREATE DATABASE.\n", err, EnvURL)
		return 1
	}
	defer stop()
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "pgtest: using PostgreSQL at %s\n", pgcluster.Redact(adminURL))
	}

	admin, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: connect to %s: %v\n", pgcluster.Redact(adminURL), err)
		return 1
	}
	defer admin.Close()

	tpl := fmt.Sprintf("enrich_test_tpl_%d_%s", os.Getpid(), randomSuffix())
	if err := makeTemplate(ctx, admin, adminURL, tpl); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: create template database: %v\n", err)
		return 1
	}
	defer func() {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{tpl}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: drop template database %s: %v\n", tpl, err)
			if code == 0 {
				code = 1
			}
		}
	}()

	current = &env{adminURL: adminURL, admin: admin, template: tpl}
	return m.Run()
}

// makeTemplate creates and migrates the template, then closes every connection to it so it can
// be copied.
func makeTemplate(ctx context.Context, admin *pgxpool.Pool, adminURL, name string) error {
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	tplURL, err := pgcluster.WithDatabase(adminURL, name)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, tplURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", name, err)
	}
	_, err = store.Migrate(ctx, pool, store.TableDefault)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	return nil
}

// AdminURL is the URL of the server's maintenance database, for tests that need the server
// itself (creating databases or roles). Tests must not change it in ways others would see.
func AdminURL() string { return mustEnv().adminURL }

// NewDB creates a database for t, a copy of the migrated template (table "contacts" exists and
// is empty), and drops it when t ends. It returns the database's URL.
func NewDB(t testing.TB) string {
	t.Helper()
	return newDB(t, mustEnv().template)
}

// NewEmptyDB is NewDB without the migration: a database where enrich has never run, for tests
// of Migrate itself.
func NewEmptyDB(t testing.TB) string {
	t.Helper()
	return newDB(t, "template1")
}

// NewPool is NewDB and a pool on it with at most PoolMaxConns connections, closed when t ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Connect(t, NewDB(t))
}

// Connect opens a pool on connURL with at most PoolMaxConns connections, closed when t ends. It
// is configured as production pools are (store.NewPoolConfig): a cancelled statement is cancelled
// on the server before the call returns.
func Connect(t testing.TB, connURL string) *pgxpool.Pool {
	t.Helper()
	cfg, err := store.NewPoolConfig(connURL, store.PoolOptions{MaxConns: PoolMaxConns})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newDB(t testing.TB, template string) string {
	t.Helper()
	e := mustEnv()
	ctx := context.Background()
	// The pid says which test process a leftover database (from a killed run) belonged to.
	name := fmt.Sprintf("enrich_test_%d_%s", os.Getpid(), randomSuffix())
	create := fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize())
	var err error
	for i := 0; i < createRetries; i++ {
		if _, err = e.admin.Exec(ctx, create); err == nil || !sourceInUse(err) {
			break
		}
		time.Sleep(time.Duration(10*(i+1)) * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pgtest: %s: %v", create, err)
	}
	t.Cleanup(func() {
		if _, err := e.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := pgcluster.WithDatabase(e.adminURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// sourceInUse reports PostgreSQL's "source database is being accessed by other users"
// (55006, object_in_use), which passes once the other session has gone.
func sourceInUse(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55006"
}

func mustEnv() *env {
	if current == nil {
		panic("pgtest: Main was not called: add func TestMain(m *testing.M) { pgtest.Main(m) }")
	}
	return current
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
