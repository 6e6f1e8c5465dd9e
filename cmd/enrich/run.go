package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/enrich-dev/enrich/avatars"
	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/metrics"
	"github.com/enrich-dev/enrich/store"
	"github.com/mattn/go-isatty"
)

// runFlags are enrich run's flags that are not config keys: how the run shows itself.
type runFlags struct {
	metricsAddr, pushgateway string
	progress, summary        string
	progressEvery            time.Duration
}

func cmdRun(ctx context.Context, a *app, args []string) (err error) {
	f := newFlags(a, "run", "run [flags]")
	tableFlag(f)
	key(f, "api-url", "Green API host of every instance without an api_url of its own (greenapi.api_url, env GREENAPI_API_URL)", func(c *Config) *string { return &c.GreenAPI.APIURL })
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
	key(f, "stall-timeout", "end the run (exit 4) when nothing moves for this long; 0: what the other timeouts allow for, plus a minute (run.stall_timeout)", func(c *Config) *Duration { return &c.Run.StallTimeout })
	key(f, "follow", "stay up when no row is due: answer rows as they become due, woken by LISTEN/NOTIFY (channel enrich_due) and every --poll-interval; SIGTERM ends it (run.follow)", func(c *Config) *bool { return &c.Run.Follow })
	key(f, "poll-interval", "with --follow, how often to look for due rows without a notification: the most a dropped notification delays a row (run.poll_interval)", func(c *Config) *Duration { return &c.Run.PollInterval })
	var rf runFlags
	f.StringVar(&rf.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics during the run, e.g. :9090; empty: none")
	f.StringVar(&rf.pushgateway, "pushgateway", "", "push the batch-job metrics to this Pushgateway when the run ends, e.g. http://pushgateway:9091; empty: none")
	f.StringVar(&rf.progress, "progress", "auto", "progress display: bar (a live bar on the terminal, logs above it), lines (a log line every --progress-every), off, or auto (bar when stderr is a terminal and logs are not JSON, else lines)")
	f.DurationVar(&rf.progressEvery, "progress-every", enrich.ProgressIntervalDefault, "how often --progress lines logs a progress line")
	f.StringVar(&rf.summary, "summary", "auto", "the closing summary: log (the \"run finished\" log line only), text or json (also printed to stdout: text for people, one JSON object for scripts), or auto (text when logs are for a terminal)")
	if _, err := f.parse(args, true); err != nil {
		return err
	}
	show, err := a.display(rf, f.logFormat)
	if err != nil {
		return err
	}
	m := metrics.New(buildMetrics())
	live := &health{}
	if rf.metricsAddr != "" {
		stop, err := a.serveMetrics(rf.metricsAddr, m.Handler(), live)
		if err != nil {
			return err
		}
		defer stop()
	}
	start := time.Now()
	var sum enrich.Summary
	if rf.pushgateway != "" {
		pusher, perr := metrics.NewPusher(rf.pushgateway, &http.Client{Timeout: pushTimeout})
		if perr != nil {
			return configErrorf("%v", perr)
		}
		// From here on every way out pushes, a database that is down included: the Pushgateway
		// then shows a completion without a success.
		defer func() {
			a.push(pusher, metrics.Completion{Table: a.cfg.Database.Table, Success: err == nil,
				Start: start, End: time.Now(), Summary: sum})
		}()
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
	wake, unlisten := a.listen(ctx, st)
	defer unlisten()
	for {
		var again bool
		sum, again, err = a.runRound(ctx, st, m, show, live, wake, start)
		if !again {
			return err
		}
	}
}

// runRound is one run of `enrich run`: the whole command, or, with --follow, one of a follower's
// runs, which follow one another only when every instance spent its daily cap: the run ends, and
// the next starts once the day turns (again). A signal during that wait ends the command as it
// ends a run: exit 143 or 130, with the last run's summary.
func (a *app) runRound(ctx context.Context, st *store.Store, m *metrics.Metrics, show display, live *health,
	wake <-chan struct{}, start time.Time) (sum enrich.Summary, again bool, err error) {
	r, owner, err := a.newRunner(st, m, show, wake)
	if err != nil {
		return sum, false, err
	}
	if err := a.syncSource(ctx, st); err != nil {
		return sum, false, dbErr("run", err)
	}
	if err := a.refresh(ctx, st); err != nil {
		return sum, false, dbErr("run", err)
	}
	m.Follow(r.Snapshot)
	live.set(r)
	finish, earlier := a.recordRun(ctx, st, owner, func() enrich.Summary { return r.Snapshot().Summary })
	if earlier > 0 {
		r.StandBy() // the first run keeps the instances; this one takes those it finds free
	}
	ev := a.log.Info().Str("run", owner).Str("table", st.Table()).Int("instances", len(a.cfg.GreenAPI.Instances)).
		Int("workers", a.cfg.Run.Workers).Int("earlier_runs", earlier)
	if a.cfg.Run.Follow {
		ev = ev.Bool("follow", true).Str("poll_interval", a.cfg.Run.PollInterval.String()).Bool("listening", wake != nil)
	}
	ev.Msg("run starting")
	sum, err = show.run(a, r, ctx)
	a.log.Info().Object("summary", sum).Msg("run finished")
	if errors.Is(err, enrich.ErrDatabase) {
		err = dbErr("run", err)
	}
	if a.cfg.Run.Follow && err == nil && sum.Stop == enrich.StopDailyCap {
		finish(sum, err, exitOK)
		turned, werr := a.waitDayTurn(ctx)
		switch {
		case werr != nil:
			err = werr
		case turned:
			return sum, true, nil
		default:
			sum.Stop, err = "interrupted", enrich.ErrInterrupted
		}
		finish = func(enrich.Summary, error, int) {} // the run is recorded already
	}
	rep := runReport{Run: owner, Table: a.cfg.Database.Table, Start: start, End: time.Now(), Summary: sum, Err: err,
		ExitCode: exitCode(err, stopSignal(ctx))}
	if sig := stopSignal(ctx); sig != nil {
		rep.Signal = signalStop{sig}.Error()
	}
	finish(sum, err, rep.ExitCode)
	if werr := show.printSummary(a, rep); werr != nil && err == nil {
		err = werr
	}
	// A stop by signal (ErrInterrupted) is logged once, at the top (run).
	return sum, false, err
}

// syncSource brings the state of a source that is a view in step, one scan: a view carries no
// triggers. A run does it before its first claim, a follower every refreshEvery too.
func (a *app) syncSource(ctx context.Context, st *store.Store) error {
	synced, err := st.SyncSource(ctx)
	if err == nil && synced > 0 {
		a.log.Info().Int64("rows", synced).Str("source", a.cfg.Source.Table).Msg("source view synced: state rows added, reset or removed")
	}
	return err
}

// refresh makes done rows due again (run.refresh_after, run.refresh_before_expiry; with the
// existence checks on, those whose existence is still unknown) pending, so a run works them off
// with the rest; the claim itself is unchanged. A run does it before its first claim, a follower
// every refreshEvery too.
func (a *app) refresh(ctx context.Context, st *store.Store) error {
	refreshed, err := st.Refresh(ctx, a.cfg.refreshPolicy())
	if err == nil {
		a.log.Info().Int64("rows", refreshed).Str("refresh_after", a.cfg.Run.RefreshAfter.String()).
			Str("refresh_before_expiry", a.cfg.Run.RefreshBeforeExpiry.String()).
			Bool("exists_unknown", a.cfg.GreenAPI.ConfirmMissing).Msg("refresh: done rows due again are pending")
	}
	return err
}

// runOnce runs the engine once with progress lines and no metrics: the demo's run.
func (a *app) runOnce(ctx context.Context, st *store.Store) (enrich.Summary, error) {
	r, owner, err := a.newRunner(st, nil, display{every: enrich.ProgressIntervalDefault}, nil)
	if err != nil {
		return enrich.Summary{}, err
	}
	a.log.Info().Str("run", owner).Str("table", st.Table()).Msg("run starting")
	return r.Run(ctx)
}

// newRunner wires the Green API clients and the engine from the configuration. It returns the
// run's owner id (locked_by). wake is a follower's notifications (run.follow), nil for none.
func (a *app) newRunner(st *store.Store, obs enrich.Observer, show display, wake <-chan struct{}) (*enrich.Runner, string, error) {
	c := a.cfg
	// One pool of connections for every instance; each host (an instance's api_url) gets its
	// own connections within it.
	hc := greenapi.NewHTTPClientFor(c.Run.Workers*len(c.GreenAPI.Instances), c.GreenAPI.Timeout.Duration)
	var instances []enrich.Instance
	for _, in := range c.GreenAPI.Instances {
		cl, err := greenapi.New(greenapi.Config{
			APIURL: in.APIURL, IDInstance: in.ID, Token: in.Token,
			RequestBy: greenapi.RequestBy(c.GreenAPI.RequestBy), Timeout: c.GreenAPI.Timeout.Duration,
			HTTPClient: hc,
		})
		if err != nil {
			return nil, "", configErrorf("greenapi.instance %s: %v", in.ID, err)
		}
		instances = append(instances, enrich.Instance{API: cl, RPS: *in.RPS, MaxPerDay: in.MaxPerDay})
	}
	inRun := c.Retry.InRun
	if inRun == 0 {
		inRun = -1 // the engine reads 0 as "default"; the file's 0 means none
	}
	day, err := c.day()
	if err != nil {
		return nil, "", err
	}
	var keeper enrich.Avatars
	if c.Avatars.Download {
		k, err := avatars.New(c.avatarsConfig(), st)
		if err != nil {
			return nil, "", configErrorf("%v", err)
		}
		keeper = k
	}
	owner := runID()
	r, err := enrich.NewRunner(st, enrich.Config{
		Owner: owner, Table: st.Table(), Instances: instances,
		Workers: c.Run.Workers, BatchSize: c.Run.BatchSize, Lease: c.Run.Lease.Duration,
		MaxAttempts: c.Run.MaxAttempts, MaxDuration: c.Run.MaxDuration.Duration, Limit: c.Run.Limit,
		ShutdownGrace: c.Run.ShutdownGrace.Duration, StartingTimeout: c.Run.StartingTimeout.Duration,
		Retry:      enrich.Backoff{Base: c.Retry.Base.Duration, Max: c.Retry.Max.Duration},
		RetryInRun: inRun,
		RetryFor:   c.Database.RetryFor.Duration, DatabaseTimeout: c.Database.Timeout.Duration,
		CallTimeout: c.GreenAPI.Timeout.Duration, StallTimeout: c.Run.StallTimeout.Duration, Hurry: a.io.hurry,
		Budget: st, Day: day, ConfirmMissing: c.GreenAPI.ConfirmMissing, Avatars: keeper,
		ProgressInterval: show.progressInterval(),
		Follow:           c.Run.Follow, Wake: wake, PollInterval: c.Run.PollInterval.Duration,
		Observer: obs,
		Logger:   &a.log,
	})
	if err != nil {
		return nil, "", configErrorf("%v", err)
	}
	return r, owner, nil
}

// pushTimeout bounds the push at the end of a run: a Pushgateway that does not answer must not
// hold a CronJob's pod.
const pushTimeout = 10 * time.Second

// push sends the batch-job metrics; a failure is logged and does not change the exit code (the
// rows are written either way), but it is an error an operator sees.
func (a *app) push(p *metrics.Pusher, c metrics.Completion) {
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := p.Push(ctx, c); err != nil {
		a.log.Error().Err(err).Msg("pushing metrics failed: the Pushgateway keeps the last run's")
		return
	}
	a.log.Debug().Str("pushgateway", p.URL()).Bool("success", c.Success).Msg("metrics pushed")
}

// serveMetrics listens on addr at once, so a bad address is a usage error before the run, and
// serves /metrics until stop. It logs the address it listens on (with port 0, the one it got).
func (a *app) serveMetrics(addr string, h, healthz http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configErrorf("--metrics-addr %q: %v (give host:port or :port that is free)", addr, err)
	}
	a.log.Info().Str("addr", ln.Addr().String()).Msg("serving metrics at /metrics")
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	mux.Handle("/healthz", healthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// buildMetrics names this binary in enrich_build_info.
func buildMetrics() metrics.Build {
	v := buildVersion()
	return metrics.Build{Version: v.Version, Revision: v.Revision, GoVersion: v.GoVersion}
}

// stopSignal is the signal that stopped the command, if one did.
func stopSignal(ctx context.Context) os.Signal {
	var s signalStop
	if errors.As(context.Cause(ctx), &s) {
		return s.sig
	}
	return nil
}

// isTerminal says whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// avatarsConfig is [avatars] for package avatars.
func (c Config) avatarsConfig() avatars.Config {
	return avatars.Config{Hosts: c.Avatars.Hosts, MaxBytes: c.Avatars.MaxBytes, Timeout: c.Avatars.Timeout.Duration,
		Concurrency: c.Avatars.Concurrency, SaveTimeout: c.Database.Timeout.Duration}
}

// nopSaver stands in for the store while the configuration is checked.
type nopSaver struct{}

func (nopSaver) SaveAvatar(context.Context, string, string, []byte) error { return nil }
