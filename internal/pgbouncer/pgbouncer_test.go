package pgbouncer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// backendPIDs opens n client connections at once through url and returns the server
	// backend each one's query ran on.
	backendPIDs := func(t *testing.T, url string, n int) []int32 {
		t.Helper()
		var pids []int32
		for range n {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatalf("connect through pgbouncer: %v", err)
			}
			t.Cleanup(func() { conn.Close(ctx) })
			// The simple protocol: pgx's default would prepare a named statement, which
			// in transaction mode the next client finds already there (see store's tests).
			var pid int32
			if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`, pgx.QueryExecModeSimpleProtocol).Scan(&pid); err != nil {
				t.Fatalf("query through pgbouncer: %v", err)
			}
			pids = append(pids, pid)
		}
		return pids
	}

	t.Run("TransactionModeSharesServerConnections", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewDB(t)
		url := pgbouncer.Start(t, dbURL, pgbouncer.Options{PoolSize: 1})
		// Three clients connected at once, one server connection: in session mode the second
		// client would wait for the first to disconnect.
		pids := backendPIDs(t, url, 3)
		if pids[0] != pids[1] || pids[1] != pids[2] {
			t.Fatalf("backends %v: want one server connection shared by all clients", pids)
		}
		// The database line maps the client's database name to the same name upstream.
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		want, _ := pgx.ParseConfig(dbURL)
		var db string
		if err := conn.QueryRow(ctx, `SELECT current_database()`, pgx.QueryExecModeSimpleProtocol).Scan(&db); err != nil || db != want.Database {
			t.Fatalf("current_database() = %q, %v; want %q", db, err, want.Database)
		}
	})

	t.Run("UnixSocketUpstream", func(t *testing.T) {
		t.Parallel()
		// A throw-away cluster listens only on a unix socket in its directory.
		c, err := pgcluster.Start(ctx)
		if err != nil {
			t.Fatalf("start cluster: %v", err)
		}
		t.Cleanup(c.Stop)
		url := pgbouncer.Start(t, c.URL, pgbouncer.Options{})
		var dir string
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT current_setting('unix_socket_directories')`, pgx.QueryExecModeSimpleProtocol).Scan(&dir); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(c.URL, strings.ReplaceAll(dir, "/", "%2F")) {
			t.Errorf("reached a server with sockets in %q, want the cluster at %s", dir, c.URL)
		}
	})

	t.Run("StopEndsTheProcess", func(t *testing.T) {
		t.Parallel()
		b, err := pgbouncer.StartProcess(ctx, pgtest.NewDB(t), pgbouncer.Options{Mode: pgbouncer.ModeSession})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := b.Stop(); err != nil {
			t.Fatalf("second stop: %v", err)
		}
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(short, b.URL); err == nil {
			conn.Close(ctx)
			t.Fatal("pgbouncer still answers after Stop")
		}
	})

	t.Run("BadOptions", func(t *testing.T) {
		t.Parallel()
		for _, opt := range []pgbouncer.Options{{Mode: "txn"}, {PoolSize: -1}} {
			if b, err := pgbouncer.StartProcess(ctx, pgtest.AdminURL(), opt); err == nil {
				b.Stop()
				t.Errorf("StartProcess(%+v) succeeded, want an error", opt)
			}
		}
	})
}
