// Package pgcluster finds a PostgreSQL server for the tests and for `enrich demo`: the one
// the caller names, else a local server with trust authentication, else a throw-away cluster
// started from the installed initdb and pg_ctl. It lives outside the test harness because the
// demo, a newcomer's first command, needs the same fallback.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clusterBinGlob is where Debian and Ubuntu install PostgreSQL's server binaries, one directory
// per major version; they are not on PATH there.
const clusterBinGlob = "/usr/lib/postgresql/*/bin"

// clusterOSUser runs the cluster (and a test's PgBouncer) when the tests run as root: PostgreSQL
// and PgBouncer refuse root.
const clusterOSUser = "postgres"

// clusterStartTimeout bounds pg_ctl start -w.
const clusterStartTimeout = 60 * time.Second

// clusterOptions are the server settings of a throw-away cluster: unix socket only (no port
// clash with a real server), durability off (the data dies with the tests), and room for many
// parallel tests.
const clusterOptions = "-c listen_addresses='' -c fsync=off -c full_page_writes=off " +
	"-c synchronous_commit=off -c max_connections=200"

// Cluster is a running throw-away PostgreSQL.
type Cluster struct {
	// URL connects to its postgres database over its unix socket.
	URL string
	// Stop stops the server (if it is up) and deletes its directory.
	Stop func()

	dir, data, logFile string
	runTool            func(ctx context.Context, name string, args ...string) error

	mu      sync.Mutex // serializes Down, Up and Stop
	down    bool       // the server is not running: Down or Stop stopped it
	stopped bool       // Stop deleted the directory
}

// Start runs initdb and pg_ctl start in a new temporary directory. As root, the server runs
// as the postgres OS user, since PostgreSQL refuses to run as root.
func Start(ctx context.Context) (*Cluster, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := ServerCredential()
	if err != nil {
		return nil, err
	}

	// The socket path must fit in ~107 bytes, so prefer a short base when TMPDIR is long.
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "enrich-pg-")
	if err != nil {
		return nil, fmt.Errorf("make cluster directory: %w", err)
	}
	removeDir := func() { _ = os.RemoveAll(dir) }
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			removeDir()
			return nil, fmt.Errorf("chown %s to %s: %w", dir, clusterOSUser, err)
		}
	}
	data := filepath.Join(dir, "data")
	logFile := filepath.Join(dir, "postgres.log")

	runTool := func(ctx context.Context, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		cmd.Dir = dir // a directory the cluster's user can enter
		cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return nil
	}

	if err := runTool(ctx, "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		removeDir()
		return nil, err
	}
	q := url.Values{"host": {dir}, "sslmode": {"disable"}}
	c := &Cluster{
		URL: "postgres://postgres@/postgres?" + q.Encode(),
		dir: dir, data: data, logFile: logFile, runTool: runTool,
	}
	c.Stop = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.down {
			if err := runTool(context.Background(), "pg_ctl", "stop", "-m", "immediate", "-w", "-D", data); err != nil {
				fmt.Fprintf(os.Stderr, "pgcluster: stop cluster in %s: %v\n", dir, err)
			}
		}
		c.down, c.stopped = true, true
		removeDir()
	}
	if err := c.start(ctx); err != nil {
		removeDir()
		return nil, err
	}
	return c, nil
}

// start runs pg_ctl start -w on the cluster's data directory, with its socket in the cluster's
// directory, and waits (at most clusterStartTimeout) until the server accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	opts := fmt.Sprintf("-k %s %s", c.dir, clusterOptions)
	if err := c.runTool(ctx, "pg_ctl", "start", "-w", "-D", c.data, "-l", c.logFile, "-o", opts); err != nil {
		if b, rerr := os.ReadFile(c.logFile); rerr == nil {
			err = fmt.Errorf("%w\nserver log:\n%s", err, b)
		}
		return err
	}
	return nil
}

// Down stops the server as an operator's restart or a failover would (pg_ctl stop -m fast -w:
// open transactions are rolled back, every client is disconnected, and the server shuts down
// cleanly), keeping the data directory, so that Up can start it again with everything committed
// before. While it is down, connections to URL fail (the socket is gone). Down on a cluster that
// is already down, or stopped, does nothing.
func (c *Cluster) Down(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil
	}
	if err := c.runTool(ctx, "pg_ctl", "stop", "-m", "fast", "-w", "-D", c.data); err != nil {
		return fmt.Errorf("pgcluster: stop cluster in %s: %w", c.dir, err)
	}
	c.down = true
	return nil
}

// Up starts a server that Down stopped, on the same data directory and socket directory, so
// URL connects again, and returns once it accepts connections (pg_ctl start -w). Up on a running
// cluster does nothing; Up after Stop fails.
func (c *Cluster) Up(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("pgcluster: start cluster in %s: it was stopped and deleted", c.dir)
	}
	if !c.down {
		return nil
	}
	if err := c.start(ctx); err != nil {
		return fmt.Errorf("pgcluster: start cluster in %s: %w", c.dir, err)
	}
	c.down = false
	return nil
}

// findBinDir finds a directory holding initdb and pg_ctl: PATH first, then the newest of
// /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if isExecutable(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(clusterBinGlob)
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errors.New("initdb and pg_ctl are neither on PATH nor in " + clusterBinGlob)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// ServerCredential is the identity a server the tests start (PostgreSQL, PgBouncer) must run
// under: nil when the tests may run it themselves, and the postgres OS user's uid/gid when they
// run as root, since both servers refuse to run as root.
func ServerCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(clusterOSUser)
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL and PgBouncer must run as another user, and the %q OS user was not found (%v): "+
			"create it (useradd %s) or run the tests as a non-root user", clusterOSUser, err, clusterOSUser)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", clusterOSUser, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", clusterOSUser, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
