package store

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Values of PoolOptions.Pooler (the database.pooler configuration key): what sits between enrich
// and PostgreSQL.
const (
	// PoolerNone is a direct connection. The empty string means the same.
	PoolerNone = "none"

	// PoolerSession is a pooler in session mode (PgBouncer pool_mode = session), where a
	// client keeps one server connection for as long as it is connected: to enrich the same as
	// a direct connection.
	PoolerSession = "session"

	// PoolerTransaction is a pooler in transaction mode: PgBouncer pool_mode = transaction,
	// pgcat, Supavisor, RDS Proxy and the like, which lend a client a server connection for
	// one transaction (or one statement outside a transaction) and then hand it to another
	// client. Nothing of a session may outlive a transaction then: no session advisory lock
	// (Migrate takes none), no SET, and no named prepared statement.
	PoolerTransaction = "transaction"
)

// PoolMaxConnsDefault is PoolOptions.MaxConns when zero.
const PoolMaxConnsDefault = 4

// poolCancelTimeout is how long a call whose context ended waits, after asking the server to
// cancel its statement, for the server's answer (the cancelled statement's error, or its result
// if it finished first) before closing the connection. A reachable server answers in
// milliseconds, through PgBouncer too; the timeout is for one that does not, so that a stop never
// waits longer than this.
const poolCancelTimeout = 3 * time.Second

// PoolOptions configures NewPoolConfig. The zero value is the production configuration for a
// direct connection.
type PoolOptions struct {
	// Pooler is what sits between enrich and PostgreSQL, named as the pooler's pool mode:
	// PoolerNone ("none", or ""), PoolerSession ("session") or PoolerTransaction
	// ("transaction"). Default "": a direct connection. Anything else is an error; "statement"
	// in particular, since a statement-mode pooler refuses the transactions of Migrate and
	// Status.
	//
	// With "", "none" or "session", statements run in pgx's default mode
	// (QueryExecModeCacheStatement, unless the URL's default_query_exec_mode says otherwise):
	// each connection prepares every statement once under a name (stmtcache_...) and then runs
	// it in one round trip. Behind a transaction-mode pooler those names leak to other clients,
	// which fail with `prepared statement "stmtcache_..." already exists` (or `does not exist`).
	//
	// With "transaction", statements run in pgx.QueryExecModeExec, and the statement and
	// description caches are disabled, so that no named prepared statement or cached statement
	// description exists at all, whatever the URL says. QueryExecModeExec sends each statement
	// as Parse, Bind and Execute of the unnamed statement followed by one Sync: one round trip,
	// which a transaction-mode pooler keeps on one server connection. Its parameters are sent in
	// text format with unspecified types, which the server infers; enrich's SQL casts every
	// parameter whose type it could not infer ($1::timestamptz, $3::bigint[], ...). A pgx.Batch
	// (Write) is sent as one pipeline of those messages with a single Sync, so it is still one
	// round trip and one implicit transaction. The other modes were rejected:
	// QueryExecModeSimpleProtocol would also work but interpolates the parameters into the SQL
	// text on the client, which pgx itself advises against when the extended protocol is
	// available; QueryExecModeDescribeExec prepares the unnamed statement in one round trip and
	// runs it in the next, and the pooler may put a different server connection under the
	// second; QueryExecModeCacheDescribe would work too (its Describe round trip is separate
	// from the self-contained execution), but it costs an extra round trip for each new
	// statement and caches result descriptions that go stale when Migrate changes the table
	// under a running process.
	Pooler string

	// MaxConns is the pool's maximum number of connections. Default PoolMaxConnsDefault (4),
	// which replaces the URL's pool_max_conns. Behind a transaction-mode pooler these are client
	// connections, cheap for the pooler; its own pool size bounds the server connections.
	MaxConns int32
}

// NewPoolConfig parses connURL (a URL or a keyword/value string, as pgxpool.ParseConfig reads
// them) and applies opt: the query exec mode for opt.Pooler and MaxConns.
//
// Whatever the pooler, a call whose context ends while the server runs its statement (waiting
// for a lock, say) sends the server a cancel request at once and returns when the server answers:
// with the statement's query_canceled error (SQLSTATE 57014; nothing was done, and the connection
// goes back to the pool), or with its result if it finished first, as if the context had not
// ended. Only a server that does not answer within 3 seconds gets its connection closed. pgx's
// default returns at once, closes the connection and sends the cancel request in the background:
// the caller cannot know whether the statement was stopped or committed first (a Claim may have
// leased rows nobody will work on), and if the request is lost, PostgreSQL does not notice the
// closed connection while the statement waits for a lock, and runs and commits it later. Callers
// that tell a stop from a failure should look at their context's Err: a cancelled statement's
// error does not wrap context.Canceled.
//
// Errors name the configuration key they concern (database.url, database.pooler) and never
// contain the password.
func NewPoolConfig(connURL string, opt PoolOptions) (*pgxpool.Config, error) {
	if opt.MaxConns < 0 {
		return nil, fmt.Errorf("pool: max connections %d: must be positive", opt.MaxConns)
	}
	if opt.MaxConns == 0 {
		opt.MaxConns = PoolMaxConnsDefault
	}
	switch opt.Pooler {
	case "", PoolerNone, PoolerSession, PoolerTransaction:
	case "statement":
		return nil, fmt.Errorf("database.pooler %q: a statement-mode pooler refuses the transactions enrich runs "+
			"(Migrate, Status): set the pooler's pool_mode to transaction and database.pooler to %q", opt.Pooler, PoolerTransaction)
	default:
		return nil, fmt.Errorf("database.pooler %q: use %q (or leave it empty) for a direct connection, %q for a pooler in "+
			"session mode, or %q for one in transaction mode (PgBouncer pool_mode = transaction, pgcat, Supavisor)",
			opt.Pooler, PoolerNone, PoolerSession, PoolerTransaction)
	}

	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %s", redactSecrets(err.Error(), connURL))
	}
	cfg.MaxConns = opt.MaxConns
	if opt.Pooler == PoolerTransaction {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.ConnConfig.StatementCacheCapacity = 0
		cfg.ConnConfig.DescriptionCacheCapacity = 0
	}
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &cancelHandler{conn: c, timeout: poolCancelTimeout}
	}
	return cfg, nil
}

// cancelHandler is the ctxwatch.Handler of NewPoolConfig's connections: when the context of a
// call ends, it sends PostgreSQL (or the pooler) a cancel request for the connection's statement
// at once and gives the server timeout to answer before the connection is closed.
//
// It does what pgconn.CancelRequestContextWatcherHandler does, except that the cancel request is
// never cut short: that handler closes the cancel request's connection as soon as the cancelled
// call returns, which is usually before PgBouncer has finished passing the request on, and
// PgBouncer 1.18 (Debian 12's) exits on that (FATAL "disconnect_client(): bad client state: 0",
// pgbouncer/pgbouncer#801). Here the call returns only after the server or pooler has closed the
// cancel request's connection, which PostgreSQL does after signalling the backend; so by then a
// cancel that arrives after the statement finished is one the idle backend ignores, and it
// cannot hit the connection's next statement.
type cancelHandler struct {
	conn     *pgconn.PgConn
	timeout  time.Duration
	finished chan struct{} // closed when the cancel request is done
}

func (h *cancelHandler) HandleCancel(context.Context) {
	deadline := time.Now().Add(h.timeout)
	// The fallback: a server that does not answer in time gets its connection closed.
	_ = h.conn.Conn().SetDeadline(deadline)
	h.finished = make(chan struct{})
	go func() {
		defer close(h.finished)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		_ = h.conn.CancelRequest(ctx) // best effort: the deadline above covers a failure
	}()
}

func (h *cancelHandler) HandleUnwatchAfterCancel() {
	<-h.finished
	_ = h.conn.Conn().SetDeadline(time.Time{})
}

// These find the places a connection string can carry a secret: the URL's user info, the
// password and sslpassword query parameters, and the keyword/value form's keys of those names.
var (
	urlQuerySecret = regexp.MustCompile(`[?&](?:ssl)?password=([^&#]*)`)
	kvSecret       = regexp.MustCompile(`(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)
)

// redactSecrets replaces in msg every secret connURL may hold, raw and percent-decoded, with
// xxxxx. pgx redacts its own parse errors, but only as well as it can read a string it could
// not parse, and a wrapped error may quote a part of it; this second pass also covers malformed
// strings, at the price of masking innocent text that happens to equal the password.
func redactSecrets(msg, connURL string) string {
	var secrets []string
	add := func(s string) {
		s = strings.Trim(s, "'")
		if s == "" {
			return
		}
		secrets = append(secrets, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			secrets = append(secrets, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			secrets = append(secrets, d)
		}
	}
	if rest, ok := cutScheme(connURL); ok {
		// The user info ends at the first '@' by the parser's reading and at the last one by a
		// sloppy writer's; mask both readings.
		for _, end := range []int{strings.Index(rest, "@"), strings.LastIndex(rest, "@")} {
			if end < 0 {
				continue
			}
			if _, pw, has := strings.Cut(rest[:end], ":"); has {
				add(pw)
			}
		}
		for _, m := range urlQuerySecret.FindAllStringSubmatch(connURL, -1) {
			add(m[1])
		}
	}
	for _, m := range kvSecret.FindAllStringSubmatch(connURL, -1) {
		add(m[1])
	}
	// Longest first, so a secret containing another is masked whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

// cutScheme returns what follows postgres:// or postgresql://.
func cutScheme(connURL string) (string, bool) {
	for _, prefix := range []string{"postgres://", "postgresql://"} {
		if rest, ok := strings.CutPrefix(connURL, prefix); ok {
			return rest, true
		}
	}
	return "", false
}
