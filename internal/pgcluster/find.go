package pgcluster

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// LocalURL is the server tried when the caller names none: a local PostgreSQL with trust
// authentication, as Debian's package sets up for the postgres user.
const LocalURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// localProbeTimeout bounds the wait for LocalURL before starting a cluster.
const localProbeTimeout = 2 * time.Second

// Find returns the URL of a server: named (if not empty, and it must answer), else LocalURL if
// it answers, else a throw-away cluster. stop releases what Find started; call it when done.
func Find(ctx context.Context, named string) (serverURL string, stop func(), err error) {
	if named != "" {
		if err := Ping(ctx, named, 10*time.Second); err != nil {
			return "", nil, fmt.Errorf("%s does not answer: %w", Redact(named), err)
		}
		return named, func() {}, nil
	}
	if err := Ping(ctx, LocalURL, localProbeTimeout); err == nil {
		return LocalURL, func() {}, nil
	}
	c, err := Start(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("nothing answers at %s and no throw-away cluster could be started: %w "+
			"(install PostgreSQL: apt-get install postgresql, or point DATABASE_URL at a server)", Redact(LocalURL), err)
	}
	return c.URL, c.Stop, nil
}

// Ping connects once and pings, within timeout.
func Ping(ctx context.Context, connURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cfg, err := pgx.ParseConfig(connURL)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = timeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// dsnPassword matches the password of a key=value connection string.
var dsnPassword = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// Redact hides a URL's or DSN's password, for messages.
func Redact(connURL string) string {
	if !strings.Contains(connURL, "://") {
		return dsnPassword.ReplaceAllString(connURL, "password=xxxxx")
	}
	u, err := url.Parse(connURL)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparsable database URL)"
		}
		return connURL
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// WithDatabase returns connURL pointing at database name instead.
func WithDatabase(connURL, name string) (string, error) {
	if u, err := url.Parse(connURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value form: a later dbname overrides an earlier one.
	if strings.Contains(connURL, "=") {
		return connURL + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name) + "'", nil
	}
	return "", fmt.Errorf("cannot set the database in connection string %s", Redact(connURL))
}
