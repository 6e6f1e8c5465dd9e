package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newPool opens a pool from store.NewPoolConfig, closed when t ends.
func newPool(t testing.TB, connURL string, opt store.PoolOptions) *pgxpool.Pool {
	t.Helper()
	cfg, err := store.NewPoolConfig(connURL, opt)
	if err != nil {
		t.Fatalf("pool config: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestNewPoolConfig(t *testing.T) {
	t.Parallel()
	const u = "postgres://enrich:hunter2@db.example:5432/app?sslmode=disable"

	t.Run("Poolers", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			pooler string
			mode   pgx.QueryExecMode
			cache  int
		}{
			{"", pgx.QueryExecModeCacheStatement, 512},
			{store.PoolerNone, pgx.QueryExecModeCacheStatement, 512},
			{store.PoolerSession, pgx.QueryExecModeCacheStatement, 512},
			{store.PoolerTransaction, pgx.QueryExecModeExec, 0},
		} {
			cfg, err := store.NewPoolConfig(u, store.PoolOptions{Pooler: tc.pooler})
			if err != nil {
				t.Fatalf("pooler %q: %v", tc.pooler, err)
			}
			c := cfg.ConnConfig
			if c.DefaultQueryExecMode != tc.mode || c.StatementCacheCapacity != tc.cache || c.DescriptionCacheCapacity != tc.cache {
				t.Errorf("pooler %q: mode %v, caches %d/%d; want %v, %d", tc.pooler, c.DefaultQueryExecMode,
					c.StatementCacheCapacity, c.DescriptionCacheCapacity, tc.mode, tc.cache)
			}
			if cfg.MaxConns != store.PoolMaxConnsDefault {
				t.Errorf("pooler %q: MaxConns %d, want %d", tc.pooler, cfg.MaxConns, store.PoolMaxConnsDefault)
			}
			if c.BuildContextWatcherHandler(&pgconn.PgConn{}) == nil {
				t.Errorf("pooler %q: no context watcher handler", tc.pooler)
			}
		}
		// "transaction" wins over the URL's own choice: a named statement would break it.
		cfg, err := store.NewPoolConfig(u+"&default_query_exec_mode=cache_statement", store.PoolOptions{Pooler: "transaction", MaxConns: 9})
		if err != nil || cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeExec || cfg.MaxConns != 9 {
			t.Errorf("transaction over the URL's cache_statement: %v, %v", cfg.ConnConfig.DefaultQueryExecMode, err)
		}
	})

	t.Run("BadPooler", func(t *testing.T) {
		t.Parallel()
		for _, p := range []string{"txn", "Transaction", "statement"} {
			_, err := store.NewPoolConfig(u, store.PoolOptions{Pooler: p})
			if err == nil {
				t.Fatalf("pooler %q accepted", p)
			}
			for _, want := range []string{"database.pooler", fmt.Sprintf("%q", p), `"transaction"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("pooler %q: error %q does not name %s", p, err, want)
				}
			}
			t.Logf("%q: %v", p, err)
		}
		if _, err := store.NewPoolConfig(u, store.PoolOptions{Pooler: "txn"}); !strings.Contains(err.Error(), `"none"`) {
			t.Errorf("error %q does not list \"none\"", err)
		}
	})

	t.Run("NoPasswordInErrors", func(t *testing.T) {
		t.Parallel()
		for _, bad := range []string{
			"postgres://enrich:hunter2@db.example:notaport/app",
			"postgres://enrich:hunter2@db.example:5432/app?sslmode=sometimes",
			"postgres://enrich:hunter2@db.example:5432/app?connect_timeout=soon",
			"postgres://enrich:hunter2@db.example:5432/app?pool_max_conns=many",
			"postgres://enrich:hun%74er2@db.example:5432/app?sslmode=sometimes", // percent-encoded
			"postgres://enrich:hunter2@db.exa mple:5432/app?x=%zz",
			"postgresql://enrich:hunter2@[::1/app",
			"host=db.example password=hunter2 sslmode=sometimes",
			"host=db.example password='hunter2' port=x",
			"host=db.example password=hunter2 'unterminated",
			"postgres://db.example/app?password=hunter2&sslmode=sometimes",
		} {
			_, err := store.NewPoolConfig(bad, store.PoolOptions{})
			if err == nil {
				t.Errorf("%s: parsed, want an error", bad)
				continue
			}
			if strings.Contains(err.Error(), "hunter2") || !strings.HasPrefix(err.Error(), "database.url: ") {
				t.Errorf("error leaks the password or names no key: %v", err)
			}
		}
	})
}

// TestCancel checks that a statement whose context ends is stopped by the server, not only
// abandoned by the client: a Claim blocked behind a table lock must not lease rows once the
// lock goes away.
func TestCancel(t *testing.T) {
	t.Parallel()

	// blockedClaim enqueues two rows, locks the table from a direct connection, starts a
	// Claim through pool, waits until the server shows it waiting for the lock, cancels it,
	// and reports what followed.
	type result struct {
		err     error
		elapsed time.Duration
		waiting int // backends still waiting for a lock in the database right after
		leased  int // rows leased once the lock is gone and any waiter has had its turn
	}
	blockedClaim := func(t *testing.T, dbURL string, pool *pgxpool.Pool) result {
		t.Helper()
		ctx := context.Background()
		s, err := store.New(pool, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		direct := pgtest.Connect(t, dbURL)
		// A first claim on the empty table: with pgx's statement cache the blocked claim is
		// then not a Prepare (which would wait for the lock in its own round trip, before its
		// execution is even sent) but a prepared statement's execution, as in a long run.
		if _, err := s.Claim(ctx, "warm-up", 1, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Enqueue(ctx, []store.NewContact{{PhoneNumber: "79000000001"}, {PhoneNumber: "79000000002"}}); err != nil {
			t.Fatal(err)
		}
		holder, err := direct.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback(ctx)
		if _, err := holder.Exec(ctx, `LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}

		claimCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := s.Claim(claimCtx, "ghost", 1, 10, time.Hour)
			done <- err
		}()
		waitFor(t, func() bool { return lockWaiters(t, direct) == 1 }, "the claim to wait for the table lock")

		cancel()
		start := time.Now()
		var r result
		select {
		case r.err = <-done:
			r.elapsed = time.Since(start)
		case <-time.After(30 * time.Second):
			t.Fatal("claim did not return within 30 s of its cancel")
		}
		r.waiting = lockWaiters(t, direct)

		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		// A new ACCESS EXCLUSIVE lock queues behind any statement still waiting for the old
		// one, so once it is granted a leftover claim has run and committed.
		tx, err := direct.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM contacts WHERE locked_by IS NOT NULL`).Scan(&r.leased); err != nil {
			t.Fatal(err)
		}
		return r
	}

	for _, via := range []string{"Direct", "PgBouncer"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			poolURL, opt := dbURL, store.PoolOptions{}
			if via == "PgBouncer" {
				// PgBouncer passes the cancel request on to the server running the statement.
				poolURL, opt = pgbouncer.Start(t, dbURL, pgbouncer.Options{}), store.PoolOptions{Pooler: store.PoolerTransaction}
			}
			opt.MaxConns = 1 // the warm-up and the blocked claim share a connection
			pool := newPool(t, poolURL, opt)
			r := blockedClaim(t, dbURL, pool)
			t.Logf("claim returned %v after its cancel: %v", r.elapsed, r.err)
			var pgErr *pgconn.PgError
			if !errors.As(r.err, &pgErr) || pgErr.Code != "57014" {
				t.Errorf("claim error %v, want the server's query_canceled (57014)", r.err)
			}
			if r.elapsed > time.Second {
				t.Errorf("claim returned %v after its cancel, want well under a second", r.elapsed)
			}
			if r.waiting != 0 || r.leased != 0 {
				t.Errorf("after the cancel %d statements still waited for the lock and %d rows were leased later; want none",
					r.waiting, r.leased)
			}
			// The connection survived the cancel and is usable.
			var one int
			if err := pool.QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil {
				t.Errorf("pool after the cancel: %v", err)
			}
		})
	}

	// Many cancels, some landing while the statement runs and some just after it finished:
	// none may hit the connection's next statement, and PgBouncer must survive them all
	// (pgconn's own CancelRequestContextWatcherHandler makes PgBouncer 1.18 exit at the
	// first; see cancelHandler).
	for _, via := range []string{"Direct", "PgBouncer"} {
		t.Run("Repeated"+via, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			poolURL, opt := pgtest.NewDB(t), store.PoolOptions{MaxConns: 2}
			if via == "PgBouncer" {
				poolURL, opt.Pooler = pgbouncer.Start(t, poolURL, pgbouncer.Options{}), store.PoolerTransaction
			}
			pool := newPool(t, poolURL, opt)
			// Connect first: a 5 ms deadline is for statements, not for a TCP and startup
			// handshake. A cancel must leave the connection usable, so none is needed later.
			if _, err := pool.Exec(ctx, `SELECT $1::int`, 0); err != nil {
				t.Fatal(err)
			}
			const rounds = 50
			var cancelled, unsent int
			start := time.Now()
			for i := range rounds {
				short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
				// From 0 to 9.8 ms: around the deadline, where a cancel request (a new
				// connection the postmaster forks a process for) may land after the statement
				// ended. Every tenth round sleeps 2 s instead, so that however slow the
				// machine, some cancels must land mid-statement.
				sleep, long := float64(i%50)*0.0002, i%10 == 9
				if long {
					sleep = 2
				}
				_, err := pool.Exec(short, `SELECT pg_sleep($1::float8)`, sleep)
				cancel()
				var pgErr *pgconn.PgError
				switch {
				case err == nil && long:
					t.Fatalf("round %d: a 2 s statement with a 5 ms deadline was not cancelled", i)
				case err == nil:
				case errors.As(err, &pgErr) && pgErr.Code == "57014":
					cancelled++
				case errors.Is(err, context.DeadlineExceeded) && pgconn.SafeToRetry(err):
					// The deadline passed before the statement was sent (pgconn: "timeout:
					// context already done"), on a machine busy for 5 ms: nothing to cancel,
					// and the connection must serve the next statement all the same.
					unsent++
				default:
					t.Fatalf("round %d: %v", i, err)
				}
				var n int
				if err := pool.QueryRow(ctx, `SELECT $1::int`, i).Scan(&n); err != nil || n != i {
					t.Fatalf("round %d: the statement after a cancel: %d, %v", i, n, err)
				}
			}
			t.Logf("%d rounds, %d statements cancelled, %d past their deadline before they were sent, in %v",
				rounds, cancelled, unsent, time.Since(start))
			if cancelled == 0 {
				t.Errorf("no statement was cancelled: the test proves nothing")
			}
		})
	}

	// The control: a connection closed under a waiting statement does not stop it; the
	// statement goes on waiting and then leases the rows to nobody. pgx's default handler does
	// just close the connection, then sends a cancel request in the background after the call
	// has returned, which usually lands but races with the lock's release; here the dial the
	// cancel request needs fails, as when the network or a pooler loses it. This shows the
	// checks above can fail.
	t.Run("ClosingIsNotCancelling", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewDB(t)
		cfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 1
		// The server must not notice the closed socket by itself (PostgreSQL 14+ can poll).
		cfg.ConnConfig.RuntimeParams["client_connection_check_interval"] = "0"
		var dials atomic.Int32
		dial := cfg.ConnConfig.DialFunc
		cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				return nil, errors.New("test: no second connection, so no cancel request")
			}
			return dial(ctx, network, addr)
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		r := blockedClaim(t, dbURL, pool)
		t.Logf("closed, not cancelled: returned %v after the cancel (%v); %d still waiting; %d rows leased later",
			r.elapsed, r.err, r.waiting, r.leased)
		if r.waiting != 1 || r.leased != 2 {
			t.Errorf("%d waiting, %d leased; want 1 and 2, else the checks above prove nothing", r.waiting, r.leased)
		}
	})
}

// lockWaiters counts the backends of pool's database waiting for a heavyweight lock.
func lockWaiters(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond every 5 ms for up to 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestThroughPgBouncer runs the store's statements through a real PgBouncer in transaction
// mode, with more clients than server connections, so that every client's statements land on
// server connections other clients used before.
func TestThroughPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		workers = 4
		rows    = 2000
		batch   = 50
	)
	dbURL := pgtest.NewDB(t)
	bouncer := pgbouncer.Start(t, dbURL, pgbouncer.Options{PoolSize: 3})
	clock := newStubClock()
	open := func() *store.Store {
		s, err := store.New(newPool(t, bouncer, store.PoolOptions{Pooler: store.PoolerTransaction, MaxConns: 2}), store.Config{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cs := make([]store.NewContact, rows)
	for i := range cs {
		cs[i].PhoneNumber = fmt.Sprintf("7901%07d", i)
	}
	if n, err := open().Enqueue(ctx, cs); err != nil || n != rows {
		t.Fatalf("enqueue through pgbouncer: %d, %v", n, err)
	}

	// Each worker claims until nothing is due and writes every kind of result in one Batch per
	// claim: ids ≡ 0 mod 4 done, 1 retried an hour later, 2 failed, 3 released the first
	// time they are seen (due again at once, so claimed again) and done the second.
	var (
		mu       sync.Mutex
		released = map[int64]bool{}
		claimed  = map[int64]int{}
		total    store.Written
		wg       sync.WaitGroup
		errs     = make(chan error, workers)
	)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, owner := open(), fmt.Sprintf("worker-%d", w)
			for token := int64(1); ; token++ {
				got, err := s.Claim(ctx, owner, token, batch, time.Minute)
				if err != nil {
					errs <- fmt.Errorf("%s: claim: %w", owner, err)
					return
				}
				if len(got) == 0 {
					return
				}
				var b store.Batch
				mu.Lock()
				for _, c := range got {
					claimed[c.ID]++
					switch c.ID % 4 {
					case 0:
						b.Done = append(b.Done, store.Done{Lease: c.Lease, ExistsWhatsapp: ptr(true), URLAvatar: "https://a/" + *c.PhoneNumber})
					case 1:
						b.Retry = append(b.Retry, store.Retry{Lease: c.Lease, Reason: "busy", Delay: time.Hour})
					case 2:
						b.Failed = append(b.Failed, store.Failure{Lease: c.Lease, Reason: "invalid", Attempted: true})
					case 3:
						if released[c.ID] {
							b.Done = append(b.Done, store.Done{Lease: c.Lease, AvatarAvailable: ptr(false)})
						} else {
							released[c.ID] = true
							b.Released = append(b.Released, c.Lease)
						}
					}
				}
				mu.Unlock()
				n, err := s.Write(ctx, owner, b)
				if err != nil {
					errs <- fmt.Errorf("%s: write: %w", owner, err)
					return
				}
				if n.Total() != int64(b.Len()) {
					errs <- fmt.Errorf("%s: wrote %+v of a batch of %d", owner, n, b.Len())
					return
				}
				mu.Lock()
				total.Done += n.Done
				total.Retried += n.Retried
				total.Failed += n.Failed
				total.Released += n.Released
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d workers claimed and wrote %d rows through pgbouncer (3 server connections) in %v: %+v",
		workers, rows, time.Since(start), total)

	quarter := int64(rows / 4)
	if want := (store.Written{Done: 2 * quarter, Retried: quarter, Failed: quarter, Released: quarter}); total != want {
		t.Errorf("written %+v, want %+v", total, want)
	}
	for id, n := range claimed {
		if want := map[bool]int{true: 2, false: 1}[id%4 == 3]; n != want {
			t.Errorf("row %d claimed %d times, want %d", id, n, want)
		}
	}
	if len(claimed) != rows {
		t.Errorf("%d rows claimed, want %d", len(claimed), rows)
	}

	s := open()
	rep, err := s.Status(ctx)
	if err != nil {
		t.Fatalf("status through pgbouncer: %v", err)
	}
	if rep.ByStatus[store.StatusDone] != 2*quarter || rep.ByStatus[store.StatusFailed] != quarter ||
		rep.ByStatus[store.StatusPending] != quarter || rep.Due != 0 || rep.Leased != 0 || rep.Scheduled != quarter {
		t.Errorf("status %+v", rep)
	}
	if due, err := s.Due(ctx); err != nil || due != 0 {
		t.Errorf("due through pgbouncer: %d, %v", due, err)
	}
	clock.Advance(2 * time.Hour) // the retried rows are due again
	if due, err := s.Due(ctx); err != nil || due != quarter {
		t.Errorf("due after two hours: %d, %v; want %d", due, err, quarter)
	}
	checkNoPreparedStatements(t, bouncer, 3)
}

// checkNoPreparedStatements looks at each of a PgBouncer's poolSize server connections (by
// holding poolSize transactions open at once, each gets its own) and fails t if any has a
// prepared statement: in transaction mode another client would trip over it.
func checkNoPreparedStatements(t *testing.T, bouncerURL string, poolSize int) {
	t.Helper()
	ctx := context.Background()
	pids := map[int32]bool{}
	for range poolSize {
		conn, err := pgx.Connect(ctx, bouncerURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		var pid int32
		var names []string
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid(), coalesce(array_agg(name), '{}') FROM pg_prepared_statements`,
			pgx.QueryExecModeSimpleProtocol).Scan(&pid, &names); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
		if len(names) > 0 {
			t.Errorf("server connection %d holds prepared statements %v", pid, names)
		}
	}
	if len(pids) != poolSize {
		t.Errorf("looked at %d server connections, want %d", len(pids), poolSize)
	}
}
