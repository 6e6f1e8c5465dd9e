package enrich

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/clock"
	"github.com/enrich-dev/enrich/store"
	"github.com/rs/zerolog"
)

// Store is what a run needs of the database: *store.Store in production, so that the engine
// can be read without the SQL and the SQL without the flow.
type Store interface {
	// ClaimAfter leases up to n due rows after a cursor in the claim order to owner for lease
	// under claim token token.
	ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error)
	// Renew extends the leases still held and returns the ids it renewed.
	Renew(ctx context.Context, owner string, leases []store.Lease, lease time.Duration) ([]int64, error)
	// Write applies a batch of results in one round trip, fenced on each row's claim.
	Write(ctx context.Context, owner string, b store.Batch) (store.Written, error)
	// Due counts rows due now, for the progress line's ETA.
	Due(ctx context.Context) (int64, error)
}

// API is one Green API instance: *greenapi.Client in production, anything in tests.
type API interface {
	// ID is the idInstance, named in logs (never the token).
	ID() string
	GetAvatar(ctx context.Context, t greenapi.Target) (greenapi.Avatar, error)
	GetStateInstance(ctx context.Context) (string, error)
	// CheckWhatsapp says whether an account exists where GetAvatar's answer could not
	// (Config.ConfirmMissing).
	CheckWhatsapp(ctx context.Context, t greenapi.Target) (bool, error)
}

// Instance is an API with the request rate it may spend.
type Instance struct {
	API API
	// RPS is the GetAvatar requests per second the instance may be sent, by this run and, with a
	// Budget, by every run together. Green API allows 10 per instance.
	RPS float64
	// MaxPerDay caps the requests sent to the instance on one day (Config.Day), counted by the
	// Budget across runs and processes; a spent instance is set aside until the day turns.
	// 0 (default): no cap. It needs a Budget.
	MaxPerDay int64
	// CheckRPS is the CheckWhatsapp requests per second the instance may be sent for
	// confirmations (ConfirmMissing), its own limit apart from RPS, shared by every run with a
	// Budget. Default CheckRPSDefault (10, Green API's).
	CheckRPS float64
}

// Defaults of Config, named so that the CLI, the docs and the tests agree.
const (
	WorkersDefault          = 16
	BatchSizeDefault        = 200
	FlushIntervalDefault    = time.Second
	LeaseDefault            = 10 * time.Minute
	MaxAttemptsDefault      = 5
	ShutdownGraceDefault    = 20 * time.Second
	StartingTimeoutDefault  = 5 * time.Minute
	RetryBaseDefault        = time.Second
	RetryMaxDefault         = 5 * time.Minute
	RetryInRunDefault       = 2
	ProgressIntervalDefault = 10 * time.Second
	RetryForDefault         = time.Minute
	DatabaseTimeoutDefault  = 10 * time.Second
	// PollIntervalDefault is Config.PollInterval: how often an idle follower looks for due rows
	// without a notification, so a dropped notification delays a row by at most this. 30 s keeps
	// an idle follower at two claim statements a minute.
	PollIntervalDefault = 30 * time.Second
	// StallMarginDefault is what StallTimeout adds, by default, to the longest wait the
	// configuration allows for.
	StallMarginDefault = time.Minute
	// WorkersMax bounds Workers: each worker is one concurrent call on one instance, and an
	// instance takes 10 requests per second, so more than this is a typo, not a plan.
	WorkersMax = 1000
)

// Config drives one run. Zero fields take the defaults above; NewRunner validates the rest.
type Config struct {
	// Owner names this run in locked_by, so its leases are fenced from every other run's.
	// Required; unique per run (the CLI uses host:pid:random).
	Owner string
	// Table names the rows the run works on (the CLI gives the contacts table, schema-qualified),
	// so that runs sharing an instance's budget know whether they call the same rows: runs on one
	// table gather their instances in one run, the others standing by, and share them evenly only
	// with runs on other tables (keep.go). Which of two runs on one table calls its rows changes
	// nothing, and every hand-over costs the budget. Default "": not said, taken for a table no
	// other run works on.
	Table string
	// Instances are the Green API instances to spend. At least one.
	Instances []Instance
	// Workers is the number of concurrent calls per instance. Default 16.
	Workers int
	// BatchSize is the rows claimed per round trip and the results written per round trip.
	// Default 200.
	BatchSize int
	// FlushInterval bounds how long a result waits in memory before it is written. Default 1s.
	FlushInterval time.Duration
	// Lease is how long claimed rows stay ours without a renewal: rows held in memory are
	// renewed every Lease/3, and a run killed with -9 gives its rows back when it expires. The
	// run claims no more rows than it can start within Lease/2 at its current rate. Default 10m.
	Lease time.Duration
	// MaxAttempts is how many attempts (rescheduled failures) a row gets before it is failed.
	// Default 5.
	MaxAttempts int
	// MaxDuration stops claiming after this long, finishes calls in flight and returns
	// normally (a CronJob window). 0 (default): run until no row is due.
	MaxDuration time.Duration
	// Limit stops claiming after this many rows. 0 (default): no limit.
	Limit int
	// ShutdownGrace is how long calls in flight may finish after a stop before they are cut.
	// Default 20s.
	ShutdownGrace time.Duration
	// StartingTimeout bounds one episode of an instance's own trouble: starting, unreachable
	// (network errors or 5xx on calls for different rows), or nothing but 429. Past it the
	// instance leaves the run and its rows go to the other instances or back to the table,
	// untouched. Default 5m.
	StartingTimeout time.Duration
	// StartingBackoff spaces the state probes of a starting instance. Default 1s up to 30s.
	StartingBackoff Backoff
	// Retry spaces transient retries in the run (full jitter) and reschedules (equal jitter).
	// Default 1s up to 5m.
	Retry Backoff
	// RetryInRun is how many times a transient failure is retried before the row is
	// rescheduled. Default 2; negative means none.
	RetryInRun int
	// ProgressInterval is how often a progress line is logged. Default 10s; negative: never.
	ProgressInterval time.Duration
	// RetryFor is how long claims and writes retry a database that fails with a retryable
	// error (connection lost, failover, serialization) before the run gives up with
	// ErrDatabase. Answers received meanwhile are kept and written when it is back. Default 1m.
	RetryFor time.Duration
	// DatabaseTimeout bounds each database call (a claim, a write, a renewal). Default 10s.
	DatabaseTimeout time.Duration
	// CallTimeout is how long one API call may take (the client's timeout, greenapi.timeout),
	// for the default StallTimeout. Default 0: the client's own timeout is not counted.
	CallTimeout time.Duration
	// Hurry, once closed after the run began to stop (a second SIGTERM), cuts the calls in
	// flight at once instead of after ShutdownGrace, and gives the last write HurriedWrite:
	// the answers received are written, the rest given back. Default nil: never.
	Hurry <-chan struct{}
	// StallTimeout ends the run with ErrStalled when nothing moves (no API answer, no row
	// written, no row claimed) for this long: a run always ends by itself. Default: the
	// longest wait the configuration allows for, StartingTimeout + Retry.Max + RetryFor +
	// CallTimeout, plus StallMarginDefault (12m with the other defaults and no CallTimeout).
	// Negative: no watchdog.
	StallTimeout time.Duration
	// Follow keeps the run up when no row is due: instead of ending with "no due rows left",
	// the claimer waits for a Wake, PollInterval or the stop, then claims again, under the
	// same limits, budget and leases. An idle follower (nothing held, nothing due) is never
	// taken for stalled. Every other end (a stop, MaxDuration, Limit, every instance out or
	// capped) ends it as it ends a run. Default false: a batch run.
	Follow bool
	// Wake, in Follow mode, says rows may have become due (a LISTEN/NOTIFY notification): an
	// idle follower claims at once. It should be buffered (one pending wake is enough) and its
	// sender must never block. nil: the follower only polls.
	Wake <-chan struct{}
	// PollInterval is how often an idle follower claims without a Wake, so a dropped
	// notification delays a row by at most this. Default PollIntervalDefault (30s).
	PollInterval time.Duration
	// Budget shares every instance's send slots with the other processes spending it (the
	// store in production). nil: this run paces its instances alone, as if no other did.
	Budget Budget
	// Day is when an instance's day turns, for MaxPerDay. Default: midnight UTC.
	Day store.DayStart
	// Logger receives the run's logs. Default: a disabled logger.
	Logger *zerolog.Logger
	// Avatars, when not nil, keeps the image behind every avatar link answered (the link
	// expires): the row records its SHA-256. A download that fails leaves the row answered,
	// without a new image. Default nil: links only.
	Avatars Avatars
	// ConfirmMissing asks CheckWhatsapp whether a personal row's account exists wherever
	// GetAvatar's answer cannot say: today's {"urlAvatar":"","available":true} (no photo or no
	// account) and the seed editions' existsWhatsapp false (which Green API gets wrong for
	// accounts without a photo). The row records the answer and exists_source checkWhatsapp, or
	// NULL and unchecked when the check could not be made (a 466 stops the checks on that
	// instance). Without it those rows are left unchecked (today's edition) or keep GetAvatar's
	// false. Default false here; the CLI's greenapi.confirm_missing defaults to true. See
	// Runner.existence.
	ConfirmMissing bool
	// Observer is told of every call, retry and written row as it happens (metrics). Default:
	// none. Runner.Snapshot gives the rest (rows due, calls in flight, instance states).
	Observer Observer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx is done. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) for jitter; it must be safe for concurrent use.
	// Default: math/rand/v2.
	Rand func() float64
}

// withDefaults fills zero fields and reports the first invalid one by its config key.
func (c Config) withDefaults() (Config, error) {
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	if c.Owner == "" {
		return c, errors.New("enrich: Config.Owner is required")
	}
	if len(c.Instances) == 0 {
		return c, errors.New("enrich: at least one Green API instance is required ([[greenapi.instance]])")
	}
	c.Instances = slices.Clone(c.Instances) // defaults go into the run's copy, not the caller's
	for i, in := range c.Instances {
		if in.API == nil {
			return c, fmt.Errorf("enrich: instance %d has no API client", i)
		}
		if in.CheckRPS == 0 {
			c.Instances[i].CheckRPS = CheckRPSDefault
		} else if !(in.CheckRPS > 0) || math.IsInf(in.CheckRPS, 0) {
			return c, fmt.Errorf("enrich: instance %s: CheckWhatsapp rps must be finite and > 0, got %g", in.API.ID(), in.CheckRPS)
		}
		if !(in.RPS > 0) || math.IsInf(in.RPS, 0) {
			return c, fmt.Errorf("enrich: instance %s: rps must be finite and > 0, got %g", in.API.ID(), in.RPS)
		}
		if in.MaxPerDay < 0 || in.MaxPerDay > 0 && c.Budget == nil {
			return c, fmt.Errorf("enrich: instance %s: max_per_day %d needs a Budget to count in", in.API.ID(), in.MaxPerDay)
		}
	}
	if c.Day.Zone != "" {
		if _, err := time.LoadLocation(c.Day.Zone); err != nil {
			return c, fmt.Errorf("enrich: day time zone %q: %w", c.Day.Zone, err)
		}
	}
	if c.Workers == 0 {
		c.Workers = WorkersDefault
	}
	if c.BatchSize == 0 {
		c.BatchSize = BatchSizeDefault
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = MaxAttemptsDefault
	}
	if c.RetryInRun == 0 {
		c.RetryInRun = RetryInRunDefault
	} else if c.RetryInRun < 0 {
		c.RetryInRun = 0
	}
	def(&c.FlushInterval, FlushIntervalDefault)
	def(&c.Lease, LeaseDefault)
	def(&c.ShutdownGrace, ShutdownGraceDefault)
	def(&c.StartingTimeout, StartingTimeoutDefault)
	def(&c.StartingBackoff.Base, time.Second)
	def(&c.StartingBackoff.Max, 30*time.Second)
	def(&c.Retry.Base, RetryBaseDefault)
	def(&c.Retry.Max, RetryMaxDefault)
	def(&c.ProgressInterval, ProgressIntervalDefault)
	def(&c.RetryFor, RetryForDefault)
	def(&c.DatabaseTimeout, DatabaseTimeoutDefault)
	def(&c.PollInterval, PollIntervalDefault)
	def(&c.StallTimeout, c.StartingTimeout+c.Retry.Max+c.RetryFor+max(c.CallTimeout, 0)+StallMarginDefault)
	for _, f := range []struct {
		key string
		bad bool
	}{
		{"run.workers", c.Workers < 0 || c.Workers > WorkersMax},
		{"run.batch_size", c.BatchSize < 0},
		{"run.max_attempts", c.MaxAttempts < 0},
		{"run.limit", c.Limit < 0},
		{"run.lease", c.Lease < 0},
		{"run.max_duration", c.MaxDuration < 0},
		{"run.shutdown_grace", c.ShutdownGrace < 0},
		{"run.starting_timeout", c.StartingTimeout < 0},
		{"retry.base", c.Retry.Base < 0},
		{"retry.max", c.Retry.Max < c.Retry.Base},
		{"database.retry_for", c.RetryFor < 0},
		{"database.timeout", c.DatabaseTimeout < 0},
		{"run.poll_interval", c.PollInterval < 0},
	} {
		if f.bad {
			return c, fmt.Errorf("enrich: %s is out of range", f.key)
		}
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = clock.Sleep
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c, nil
}

// LockedRand makes a seeded, deterministic source safe for Config.Rand, for tests and
// reproducible runs.
func LockedRand(seed uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}
