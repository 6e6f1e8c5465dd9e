// Package pgbouncer runs a real PgBouncer in front of a PostgreSQL server, so that tests can
// check enrich behind the connection pooler most Kubernetes installations put between pods and
// the database. A mock would not do: what breaks behind PgBouncer is the wire protocol (named
// prepared statements, session state, cancel requests) shared between clients.
//
// Start is for tests; StartProcess is the same without testing.TB, for commands and helpers.
// Both run the pgbouncer binary found on PATH or at /usr/sbin/pgbouncer (Debian's package
// "pgbouncer"), in the foreground, with its configuration in a new temporary directory:
// listening on 127.0.0.1 at a free port (no unix socket), auth_type = any (clients log in
// without a password; PgBouncer logs in upstream as the upstream URL's user, with its
// password), one wildcard database line, so any database name maps to the same name upstream,
// and a small default_pool_size, so that clients really share server connections. As root it
// runs as the postgres OS user, since PgBouncer refuses to run as root.
package pgbouncer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/jackc/pgx/v5/pgconn"
)

// Pool modes, PgBouncer's pool_mode.
const (
	// ModeSession gives a client one server connection for as long as it is connected.
	ModeSession = "session"
	// ModeTransaction gives a client a server connection for one transaction, then lends it to
	// another client: nothing of a session outlives a transaction.
	ModeTransaction = "transaction"
	// ModeStatement gives a client a server connection for one statement; multi-statement
	// transactions are refused.
	ModeStatement = "statement"
)

// ModeDefault is Options.Mode when empty.
const ModeDefault = ModeTransaction

// PoolSizeDefault is Options.PoolSize when zero.
const PoolSizeDefault = 3

// InstallHint is what an error says when no pgbouncer binary is found.
const InstallHint = "install pgbouncer (apt-get install pgbouncer)"

// debianBinary is where Debian's package installs pgbouncer; /usr/sbin is not on every PATH.
const debianBinary = "/usr/sbin/pgbouncer"

const (
	// startTimeout bounds the wait for the first query through a new PgBouncer.
	startTimeout = 15 * time.Second
	// stopTimeout bounds the wait for PgBouncer to exit after SIGTERM before it is killed.
	stopTimeout = 10 * time.Second
	// portAttempts bounds retries when another process takes the free port first.
	portAttempts = 5
	// maxClientConn is max_client_conn: room for the concurrency tests' many pools.
	maxClientConn = 1000
)

// ErrNotInstalled is returned when neither PATH nor /usr/sbin has a pgbouncer binary.
var ErrNotInstalled = errors.New("pgbouncer: no pgbouncer binary on PATH or at " + debianBinary + ": " + InstallHint)

// Options configures a PgBouncer. The zero value is transaction mode with PoolSizeDefault.
type Options struct {
	// Mode is pool_mode: ModeTransaction, ModeSession or ModeStatement. Default ModeTransaction.
	Mode string

	// PoolSize is default_pool_size: at most this many server connections per database and
	// user, shared by all clients. Default PoolSizeDefault (3). 1 makes every client use the
	// same server connection, which makes sharing deterministic.
	PoolSize int
}

// Bouncer is a running PgBouncer.
type Bouncer struct {
	// URL connects through PgBouncer to the database the upstream URL names, as its user and
	// without a password (PgBouncer authenticates upstream). Use pgcluster.WithDatabase for
	// another database on the same server.
	URL string

	dir      string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan struct{} // closed when the process has exited; waitErr is then set
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start runs a PgBouncer in front of upstreamURL for t, stopped when t ends, and returns the URL
// of upstreamURL's database through it. It fails t, never skips it, when pgbouncer is not
// installed. When t fails, PgBouncer's log is logged.
func Start(t testing.TB, upstreamURL string, opt Options) string {
	t.Helper()
	b, err := StartProcess(context.Background(), upstreamURL, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := b.Stop()
		if t.Failed() {
			t.Logf("pgbouncer log:\n%s", b.Log())
		}
		if err != nil {
			t.Errorf("%v", err)
		}
	})
	return b.URL
}

// StartProcess runs a PgBouncer in front of upstreamURL (a URL or keyword/value string; TCP or
// unix socket) and returns once a query through it has succeeded. Stop it with Stop.
func StartProcess(ctx context.Context, upstreamURL string, opt Options) (*Bouncer, error) {
	if opt.Mode == "" {
		opt.Mode = ModeDefault
	}
	switch opt.Mode {
	case ModeSession, ModeTransaction, ModeStatement:
	default:
		return nil, fmt.Errorf("pgbouncer: mode %q: use %q, %q or %q", opt.Mode, ModeTransaction, ModeSession, ModeStatement)
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = PoolSizeDefault
	}
	if opt.PoolSize < 0 {
		return nil, fmt.Errorf("pgbouncer: pool size %d: must be positive", opt.PoolSize)
	}
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	up, err := pgconn.ParseConfig(upstreamURL)
	if err != nil {
		// pgconn redacts the password in its errors; say which URL without repeating it.
		return nil, fmt.Errorf("pgbouncer: upstream %s: %w", pgcluster.Redact(upstreamURL), err)
	}
	cred, err := pgcluster.ServerCredential()
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}

	var lastErr error
	for range portAttempts {
		b, err := start(ctx, bin, up, opt, cred)
		if err == nil {
			return b, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

// errPortTaken marks a start that failed because the chosen port was taken meanwhile.
var errPortTaken = errors.New("port taken")

func start(ctx context.Context, bin string, up *pgconn.Config, opt Options, cred *syscall.Credential) (*Bouncer, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: find a free port: %w", err)
	}
	dir, err := os.MkdirTemp("", "enrich-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: make directory: %w", err)
	}
	fail := func(err error) (*Bouncer, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ini := filepath.Join(dir, "pgbouncer.ini")
	files := map[string]string{
		ini:                                config(up, opt, port, dir),
		filepath.Join(dir, "userlist.txt"): "", // auth_type = any needs no user, but a file to read
	}
	for name, body := range files {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			return fail(fmt.Errorf("pgbouncer: write %s: %w", name, err))
		}
	}
	if cred != nil {
		for _, name := range []string{dir, ini, filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(name, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(fmt.Errorf("pgbouncer: chown %s to the postgres user: %w", name, err))
			}
		}
	}

	b := &Bouncer{
		URL:    (&url.URL{Scheme: "postgres", User: url.User(up.User), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/" + up.Database, RawQuery: "sslmode=disable"}).String(),
		dir:    dir,
		log:    &syncBuffer{},
		exited: make(chan struct{}),
	}
	// Not CommandContext: the process must outlive ctx, which only bounds the start.
	b.cmd = exec.Command(bin, ini)
	b.cmd.Dir = dir
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	// Pdeathsig: a test binary killed by its timeout takes PgBouncer with it.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM}
	if err := b.cmd.Start(); err != nil {
		return fail(fmt.Errorf("pgbouncer: run %s: %w", bin, err))
	}
	go func() {
		b.waitErr = b.cmd.Wait()
		close(b.exited)
	}()

	if err := b.waitReady(ctx); err != nil {
		_ = b.Stop()
		if strings.Contains(b.Log(), "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, err
	}
	return b, nil
}

// waitReady polls until a query through PgBouncer succeeds, the process exits, or startTimeout.
func (b *Bouncer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("pgbouncer: exited at start (%v):\n%s", b.waitErr, b.Log())
		default:
		}
		lastErr = ping(ctx, b.URL)
		if lastErr == nil {
			return nil
		}
		select {
		case <-b.exited:
			return fmt.Errorf("pgbouncer: exited at start (%v):\n%s", b.waitErr, b.Log())
		case <-ctx.Done():
			return fmt.Errorf("pgbouncer: no answer at %s within %v: %w\n%s", b.URL, startTimeout, lastErr, b.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping runs one query through PgBouncer, which also opens a server connection upstream, so
// a wrong upstream fails here rather than in the test.
func ping(ctx context.Context, connURL string) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(pctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(pctx))
	_, err = conn.Exec(pctx, "SELECT 1").ReadAll()
	return err
}

// Log is what PgBouncer has written so far, for failure messages.
func (b *Bouncer) Log() string { return b.log.String() }

// Stop ends PgBouncer (SIGTERM: immediate shutdown, clients are disconnected; SIGKILL after
// stopTimeout) and deletes its directory. It is safe to call more than once.
func (b *Bouncer) Stop() error {
	b.stopOnce.Do(func() {
		defer os.RemoveAll(b.dir)
		select {
		case <-b.exited:
			b.stopErr = fmt.Errorf("pgbouncer: exited before Stop (%v); see its log", b.waitErr)
			return
		default:
		}
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(stopTimeout):
			_ = b.cmd.Process.Kill()
			<-b.exited
			b.stopErr = fmt.Errorf("pgbouncer: did not exit within %v of SIGTERM; killed", stopTimeout)
		}
	})
	return b.stopErr
}

// config is pgbouncer.ini.
func config(up *pgconn.Config, opt Options, port int, dir string) string {
	// The wildcard line: any database name the client asks for, on the upstream server, logged
	// in as the upstream user. Without dbname= the client's database name is used.
	conn := []string{"host=" + quote(up.Host), "port=" + strconv.Itoa(int(up.Port)), "user=" + quote(up.User)}
	if up.Password != "" { // PgBouncer refuses empty values
		conn = append(conn, "password="+quote(up.Password))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[databases]\n* = %s\n\n[pgbouncer]\n", strings.Join(conn, " "))
	for _, kv := range [][2]string{
		{"listen_addr", "127.0.0.1"},
		{"listen_port", strconv.Itoa(port)},
		{"unix_socket_dir", ""}, // TCP only: no clash with a real PgBouncer's socket in /tmp
		{"auth_type", "any"},
		{"auth_file", filepath.Join(dir, "userlist.txt")},
		{"pool_mode", opt.Mode},
		{"default_pool_size", strconv.Itoa(opt.PoolSize)},
		{"min_pool_size", "0"},
		{"reserve_pool_size", "0"},
		{"max_client_conn", strconv.Itoa(maxClientConn)},
		{"pidfile", filepath.Join(dir, "pgbouncer.pid")},
		{"log_connections", "0"},
		{"log_disconnections", "0"},
		{"stats_period", "3600"},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	return b.String()
}

// quote is a connection-string value as PgBouncer's parser reads it: in single quotes, with a
// single quote doubled (a backslash means nothing to it).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// findBinary looks on PATH, then where Debian installs it.
func findBinary() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if fi, err := os.Stat(debianBinary); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return debianBinary, nil
	}
	return "", ErrNotInstalled
}

// freePort asks the kernel for a port nobody listens on. Another process may take it before
// PgBouncer does; start retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the caller's reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
