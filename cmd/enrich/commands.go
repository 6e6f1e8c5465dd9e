package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tableFlag is the --table flag every database command takes.
func tableFlag(f *flags) {
	key(f, "table", "contacts table, schema-qualified if needed (database.table)",
		func(c *Config) *string { return &c.Database.Table })
}

// openStore parses the flags, connects, and opens the store: the start of every database
// command that needs nothing between the two.
func openStore(ctx context.Context, f *flags, args []string, needAPI bool) (*pgxpool.Pool, *store.Store, []string, error) {
	rest, err := f.parse(args, needAPI)
	if err != nil {
		return nil, nil, nil, err
	}
	pool, st, err := f.a.connectStore(ctx)
	return pool, st, rest, err
}

// connectStore connects and opens the store, once the configuration is parsed and valid.
func (a *app) connectStore(ctx context.Context) (*pgxpool.Pool, *store.Store, error) {
	pool, err := a.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	st, err := store.New(pool, store.Config{Table: a.cfg.Database.Table})
	if err != nil {
		pool.Close()
		return nil, nil, configErrorf("database.table: %v", err)
	}
	return pool, st, nil
}

func cmdMigrate(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "migrate", "migrate [flags]")
	tableFlag(f)
	pool, st, _, err := openStore(ctx, f, args, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := store.Migrate(ctx, pool, a.cfg.Database.Table)
	if err != nil {
		return dbErr("migrate", err)
	}
	if len(applied) == 0 {
		fmt.Fprintf(a.io.out, "%s is up to date\n", st.Table())
		return nil
	}
	for _, m := range applied {
		fmt.Fprintf(a.io.out, "applied %s to %s\n", m, st.Table())
	}
	return nil
}

// enqueueReport is what enqueue prints.
type enqueueReport struct {
	Inserted, Duplicates, Rejected int64
}

func cmdEnqueue(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "enqueue", "enqueue [flags] [FILE|-]\n\nReads one phone number or chatId per line "+
		"(blank lines and lines starting with # are skipped). Phone numbers may carry +, spaces, dashes, dots "+
		"and parentheses; they are stored as 11 or 12 digits. Rejected lines are reported with their line "+
		"numbers and nothing else is lost. Numbers already in the table are skipped.")
	tableFlag(f)
	f.file = true
	rest, err := f.parse(args, false)
	if err != nil {
		return err
	}
	// The file is opened before connecting: a wrong path is a usage error, found without the
	// database.
	var in io.Reader = a.io.in
	name := "stdin"
	if len(rest) == 1 && rest[0] != "-" {
		fh, err := os.Open(rest[0])
		if err != nil {
			return configErrorf("enqueue: %v", err)
		}
		defer fh.Close()
		in, name = fh, rest[0]
	}
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := enqueue(ctx, st, in, name, a.io.err)
	fmt.Fprintf(a.io.out, "inserted %d, duplicates %d, rejected %d\n", rep.Inserted, rep.Duplicates, rep.Rejected)
	return err
}

// enqueue streams lines into the table in chunks, so memory stays flat for any input size.
func enqueue(ctx context.Context, st *store.Store, in io.Reader, name string, errw io.Writer) (enqueueReport, error) {
	var rep enqueueReport
	batch := make([]store.NewContact, 0, store.ChunkSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := st.Enqueue(ctx, batch)
		if err != nil {
			return dbErr("enqueue", err)
		}
		rep.Inserted += n
		rep.Duplicates += int64(len(batch)) - n
		batch = batch[:0]
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // the byte-order mark spreadsheets write
		}
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		t, err := greenapi.ParseTarget(text)
		if err != nil {
			rep.Rejected++
			fmt.Fprintf(errw, "%s:%d: rejected: %v\n", name, line, err)
			continue
		}
		c := store.NewContact{PhoneNumber: t.String()}
		if t.Kind() != greenapi.KindPhone {
			c = store.NewContact{ChatID: t.String()}
		}
		if batch = append(batch, c); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if ferr := flush(); ferr != nil {
			return rep, ferr
		}
		return rep, configErrorf("read %s: %v (lines before it were enqueued)", name, err)
	}
	return rep, flush()
}

func cmdRun(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "run", "run [flags]")
	tableFlag(f)
	key(f, "api-url", "Green API host (greenapi.api_url, env GREENAPI_API_URL)", func(c *Config) *string { return &c.GreenAPI.APIURL })
	key(f, "request-by", "send phone numbers as chatId or phoneNumber (greenapi.request_by)", func(c *Config) *string { return &c.GreenAPI.RequestBy })
	key(f, "timeout", "per-request timeout (greenapi.timeout)", func(c *Config) *Duration { return &c.GreenAPI.Timeout })
	key(f, "workers", fmt.Sprintf("concurrent calls per instance, at most %d (run.workers)", WorkersMax), func(c *Config) *int { return &c.Run.Workers })
	key(f, "batch-size", fmt.Sprintf("rows claimed and results written per round trip, at most %d (run.batch_size)", BatchSizeMax), func(c *Config) *int { return &c.Run.BatchSize })
	key(f, "lease", "how long claimed rows stay this run's (run.lease)", func(c *Config) *Duration { return &c.Run.Lease })
	key(f, "max-attempts", fmt.Sprintf("attempts before a row is failed, at most %d (run.max_attempts)", MaxAttemptsMax), func(c *Config) *int { return &c.Run.MaxAttempts })
	key(f, "max-duration", "stop claiming after this long and exit 0; 0: until no row is due (run.max_duration)", func(c *Config) *Duration { return &c.Run.MaxDuration })
	key(f, "limit", "stop after claiming this many rows; 0: no limit (run.limit)", func(c *Config) *int { return &c.Run.Limit })
	key(f, "shutdown-grace", "time calls in flight get after SIGTERM (run.shutdown_grace)", func(c *Config) *Duration { return &c.Run.ShutdownGrace })
	key(f, "starting-timeout", "how long an instance may stay starting (run.starting_timeout)", func(c *Config) *Duration { return &c.Run.StartingTimeout })
	if _, err := f.parse(args, true); err != nil {
		return err
	}
	a.warnPlainHTTP()
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	// The table before the first API call: a run that could not write its answers must not
	// spend the budget on them.
	if err := st.Check(ctx); err != nil {
		return dbErr("run", err)
	}
	sum, err := a.runOnce(ctx, st)
	a.log.Info().Object("summary", sum).Msg("run finished")
	if errors.Is(err, enrich.ErrDatabase) {
		err = dbErr("run", err)
	}
	return err
}

// runOnce wires the Green API clients and the engine from the configuration and runs once.
func (a *app) runOnce(ctx context.Context, st *store.Store) (enrich.Summary, error) {
	c := a.cfg
	hc := greenapi.NewHTTPClient(c.Run.Workers * len(c.GreenAPI.Instances))
	var instances []enrich.Instance
	for _, in := range c.GreenAPI.Instances {
		cl, err := greenapi.New(greenapi.Config{
			APIURL: c.GreenAPI.APIURL, IDInstance: in.ID, Token: in.Token,
			RequestBy: greenapi.RequestBy(c.GreenAPI.RequestBy), Timeout: c.GreenAPI.Timeout.Duration,
			HTTPClient: hc,
		})
		if err != nil {
			return enrich.Summary{}, configErrorf("greenapi.instance %s: %v", in.ID, err)
		}
		instances = append(instances, enrich.Instance{API: cl, RPS: *in.RPS, MaxPerDay: in.MaxPerDay})
	}
	inRun := c.Retry.InRun
	if inRun == 0 {
		inRun = -1 // the engine reads 0 as "default"; the file's 0 means none
	}
	day, err := c.day()
	if err != nil {
		return enrich.Summary{}, err
	}
	owner := runID()
	r, err := enrich.NewRunner(st, enrich.Config{
		Owner: owner, Instances: instances,
		Workers: c.Run.Workers, BatchSize: c.Run.BatchSize, Lease: c.Run.Lease.Duration,
		MaxAttempts: c.Run.MaxAttempts, MaxDuration: c.Run.MaxDuration.Duration, Limit: c.Run.Limit,
		ShutdownGrace: c.Run.ShutdownGrace.Duration, StartingTimeout: c.Run.StartingTimeout.Duration,
		Retry:      enrich.Backoff{Base: c.Retry.Base.Duration, Max: c.Retry.Max.Duration},
		RetryInRun: inRun,
		RetryFor:   c.Database.RetryFor.Duration, DatabaseTimeout: c.Database.Timeout.Duration,
		Budget: st, Day: day,
		Logger: &a.log,
	})
	if err != nil {
		return enrich.Summary{}, configErrorf("%v", err)
	}
	a.log.Info().Str("run", owner).Str("table", st.Table()).Int("instances", len(instances)).
		Int("workers", c.Run.Workers).Msg("run starting")
	// A stop by signal (ErrInterrupted) is logged once, at the top (run).
	return r.Run(ctx)
}
