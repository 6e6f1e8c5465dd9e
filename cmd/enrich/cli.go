package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// stdio is the process's outside world, injected so tests run the CLI in-process.
type stdio struct {
	in       io.Reader
	out, err io.Writer
	getenv   func(string) string
	// hurry is closed by a second signal: a run stopping for the first cuts its calls now.
	hurry <-chan struct{}
}

const usage = `enrich fills a PostgreSQL table of phone numbers with WhatsApp presence and avatar
links from Green API's GetAvatar.

Usage:
  enrich COMMAND [flags]

Commands:
  migrate    create or upgrade the contacts table (safe to run from many pods at once), and with
             [source] link your own table to its state (triggers; no column of yours changes);
             migrate status lists applied and pending files, migrate --dry-run prints their SQL
  enqueue    add phone numbers or chatIds from FILE or - (stdin): lines, CSV or JSONL (--region, --dry-run, --rejects, --report json)
  run        enrich due rows until none is left (the nightly job); run --follow stays up and
             answers rows as they become due (woken by LISTEN/NOTIFY, polling every run.poll_interval)
  status     counts by status and reason, rows due now, the oldest due, the last runs (--json)
  plan       rows due now and in the next 24 h, the instances' budget, the ETA and whether it fits
             run.max_duration (--json); calls Green API only with --check-instances
  requeue    put failed or done rows back in the queue (--status, --reason, --older-than)
  export     write rows as CSV or JSONL, streamed from one snapshot (--format, --status, --since, --output)
  simulate   serve the built-in Green API simulator (for trials and load tests)
  demo       the whole job end to end against the simulator and a local PostgreSQL
  version    the version it was built as, VCS revision and Go version (also enrich --version)

migrate, enqueue, run, status, plan, requeue and export take --config FILE (or ENRICH_CONFIG) after
their name; environment variables override the file and flags override both. "enrich COMMAND --help" lists a command's flags.

Exit codes: 0 finished, 1 configuration or usage error, 2 no usable Green API instance,
3 database error, 4 the run stalled (nothing moved for run.stall_timeout),
130/143 interrupted by SIGINT/SIGTERM.
`

// commands maps a command name to its implementation.
var commands = map[string]func(ctx context.Context, a *app, args []string) error{
	"migrate":  cmdMigrate,
	"enqueue":  cmdEnqueue,
	"run":      cmdRun,
	"status":   cmdStatus,
	"plan":     cmdPlan,
	"requeue":  cmdRequeue,
	"export":   cmdExport,
	"simulate": cmdSimulate,
	"demo":     cmdDemo,
	"version":  cmdVersion,
}

// app is what every command shares: the streams, the logger and the configuration.
type app struct {
	io  stdio
	log zerolog.Logger
	cfg Config
}

// run is the whole program: parse, wire, do, with the outcome logged once here.
func run(ctx context.Context, args []string, sio stdio) (err error) {
	a := &app{io: sio, log: zerolog.New(sio.err).With().Timestamp().Logger()}
	defer func() { a.logOutcome(ctx, err) }()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(sio.out, usage)
		if len(args) == 0 {
			return configErrorf("no command given")
		}
		return nil
	}
	if args[0] == "--version" {
		return cmdVersion(ctx, a, args[1:])
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return configErrorf("unknown command %q: see enrich --help", args[0])
	}
	return cmd(ctx, a, args[1:])
}

// signalStop is the cause main gives the context it cancels on SIGINT or SIGTERM, so that the
// log can say which signal stopped the command. It is a context.Canceled all the same.
type signalStop struct{ sig os.Signal }

func (s signalStop) Unwrap() error { return context.Canceled }

func (s signalStop) Error() string {
	switch s.sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.sig.String()
}

// logOutcome logs how a command ended, once. A stop by signal is how a CronJob or a person
// ends a run, not a failure: it is logged at info. Everything else that failed is an error.
func (a *app) logOutcome(ctx context.Context, err error) {
	stopped := errors.Is(err, enrich.ErrInterrupted) || (ctx.Err() != nil && errors.Is(err, context.Canceled))
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case stopped:
		msg := "stopped"
		var s signalStop
		if errors.As(context.Cause(ctx), &s) {
			msg += " by " + s.Error()
		}
		switch {
		case errors.Is(err, enrich.ErrUnwritten):
			a.log.Warn().Err(err).Msg(msg) // it says what could not be written
			return
		case errors.Is(err, enrich.ErrInterrupted):
			a.log.Info().Msg(msg + ": answers received are written, the rest released")
			return
		}
		a.log.Info().Err(err).Msg(msg)
	default:
		a.log.Error().Err(err).Msg("enrich failed")
	}
}

// parseFlags parses a command's flags. A wrong flag is one configError, logged once at the top
// and pointing at --help, without the flag package's own copy of the error and the whole usage;
// -h or --help prints the usage (to the flag set's output) and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	}
	return configErrorf("%v (see enrich %s --help)", err, fs.Name())
}

// noArgs refuses positional arguments, for the commands that take none: `enrich run extra`
// must not quietly process the whole table.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() == 0 {
		return nil
	}
	return configErrorf("unexpected argument %q: enrich %s takes no arguments (flags go right after the command; see enrich %s --help)",
		fs.Arg(0), fs.Name(), fs.Name())
}

// warnPlainHTTP says so for each instance whose api_url (its own or greenapi.api_url) is
// http://: every request carries the apiTokenInstance in its URL path, in clear text on the
// wire. It names the instance and the URL, never the token.
func (a *app) warnPlainHTTP() {
	for _, in := range a.cfg.GreenAPI.Instances {
		if u, err := url.Parse(in.APIURL); err == nil && u.Scheme == "http" {
			a.log.Warn().Str("instance", in.ID).Str("api_url", in.APIURL).Msg("api_url is http://: the apiTokenInstance travels " +
				"unencrypted in the URL path of every request; use https:// unless this is a simulator on a trusted network")
		}
	}
}

// flags is a command's flag set: each flag overrides one config key, and only when given,
// so that the file and the environment keep their say otherwise.
type flags struct {
	*flag.FlagSet
	a         *app
	setters   []func(fs *flag.FlagSet, c *Config)
	config    string
	logFormat string
	logLevel  string
	// file says the command takes one FILE argument (enqueue); every other takes none.
	file bool
}

func newFlags(a *app, name, synopsis string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), a: a}
	f.SetOutput(a.io.err)
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: enrich %s\n\nFlags:\n", synopsis)
		f.PrintDefaults()
	}
	f.StringVar(&f.config, "config", "", "TOML config file (env ENRICH_CONFIG); see config.example.toml")
	f.StringVar(&f.logFormat, "log-format", "auto", "log format: json, console, or auto (console when stderr is a terminal)")
	f.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return f
}

// key adds a flag for a config key; its shown default is the key's default.
func key[T any](f *flags, name, usage string, field func(*Config) *T) {
	def := defaultConfig()
	p := field(&def)
	switch v := any(p).(type) {
	case *int:
		f.IntVar(v, name, *v, usage)
	case *bool:
		f.BoolVar(v, name, *v, usage)
	case *string:
		f.StringVar(v, name, *v, usage)
	case *Duration:
		f.Var(v, name, usage)
	default:
		panic(fmt.Sprintf("flag %s: unsupported type %T", name, p))
	}
	f.setters = append(f.setters, func(fs *flag.FlagSet, c *Config) {
		set := false
		fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
		if set {
			*field(c) = *p
		}
	})
}

// parse reads the flags, sets up logging, loads the config (file, environment, flags) and
// validates it; needAPI says whether the command calls Green API.
func (f *flags) parse(args []string, needAPI bool) ([]string, error) {
	if err := parseFlags(f.FlagSet, args); err != nil {
		return nil, err
	}
	switch {
	case !f.file:
		if err := noArgs(f.FlagSet); err != nil {
			return nil, err
		}
	case f.NArg() > 1:
		return nil, configErrorf("enrich %s takes one FILE (or - for stdin), got %d arguments: %q", f.Name(), f.NArg(), f.Args())
	}
	if err := f.a.setupLog(f.logFormat, f.logLevel); err != nil {
		return nil, err
	}
	path := f.config
	if path == "" {
		path = f.a.io.getenv("ENRICH_CONFIG")
	}
	cfg, err := loadConfig(path, f.a.io.getenv)
	if err != nil {
		return nil, err
	}
	for _, set := range f.setters {
		set(f.FlagSet, &cfg)
	}
	if err := cfg.validate(needAPI); err != nil {
		return nil, err
	}
	f.a.cfg = cfg
	return f.Args(), nil
}

// setupLog picks JSON lines (for Kubernetes) or the console format (for people).
func (a *app) setupLog(format, level string) error {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return configErrorf("--log-level %q: use debug, info, warn or error", level)
	}
	w := a.io.err
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: true}
	case "json":
	default:
		return configErrorf("--log-format %q: use json, console or auto", format)
	}
	a.log = zerolog.New(w).Level(lvl).With().Timestamp().Logger()
	return nil
}

// connect opens the database pool and checks it answers, so a wrong URL fails here with
// exit code 3 rather than in the middle of a run. Errors never carry the password.
func (a *app) connect(ctx context.Context) (*pgxpool.Pool, error) {
	if a.cfg.Database.URL == "" {
		return nil, errNoDatabase
	}
	pc, err := store.NewPoolConfig(a.cfg.Database.URL, store.PoolOptions{Pooler: a.cfg.Database.Pooler})
	if err != nil {
		return nil, configErrorf("%v", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w: %w", enrich.ErrDatabase, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s@%s/%s: %w: %w", pc.ConnConfig.User, pc.ConnConfig.Host,
			pc.ConnConfig.Database, enrich.ErrDatabase, err)
	}
	// Which server, database and table: the URL came from a file, the environment or a flag,
	// and a wrong one is best seen before anything is written. Never the password.
	a.log.Info().Str("host", pc.ConnConfig.Host).Uint16("port", pc.ConnConfig.Port).Str("database", pc.ConnConfig.Database).
		Str("user", pc.ConnConfig.User).Str("table", a.cfg.Database.Table).Msg("database")
	return pool, nil
}

// errNoDatabase is a database command run with no database.url and no DATABASE_URL. There is
// no default: libpq's (the local server's maintenance database) is where `enrich migrate` would
// have created tables nobody meant to have. Only `enrich demo` picks a server by itself.
var errNoDatabase = configErrorf("no database: set DATABASE_URL or database.url in the config file " +
	"(e.g. postgres://enrich@db.example.com:5432/crm)")

// dbErr marks err as the database's, for exit code 3, with a hint when the table is missing.
func dbErr(step string, err error) error {
	if err == nil {
		return nil
	}
	var se *store.SourceError
	if errors.As(err, &se) {
		return configErrorf("%s: %s", step, se.Error())
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" /* undefined_table */ && !strings.Contains(err.Error(), "enrich migrate") {
		err = fmt.Errorf("%w (run `enrich migrate` first, with the same database.url and database.table)", err)
	}
	if errors.Is(err, enrich.ErrDatabase) {
		return err
	}
	return fmt.Errorf("%s: %w: %w", step, enrich.ErrDatabase, err)
}

// runID names this process in locked_by: readable in the table, unique across pods.
func runID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// sortedKeys lists a map's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix) + "\n"
}
