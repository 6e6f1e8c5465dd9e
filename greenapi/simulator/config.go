// Package simulator stands in for Green API: an http.Handler that speaks the wire contract of
// docs/greenapi.md (getAvatar, checkWhatsapp, getStateInstance), faults included, and knows the
// deterministic truth about every number, so that tests, benchmarks and `enrich simulate` can
// check every answer a client wrote down against what the "server" really said.
//
// Nothing in it is global: the clock, sleeping and randomness come from Config, so a test that
// injects them gets exact, repeatable answers.
package simulator

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/clock"
)

// Editions of the GetAvatar answer body (see the contract's "Successful response" table). A
// client must accept all of them, so the simulator can speak each, or a deterministic mix.
const (
	// EditionSeed is the 2020 seed document: existsWhatsapp, urlAvatar, reason; "bad request
	// data" is an HTTP 400.
	EditionSeed = "seed"
	// Edition2023 has the seed's fields, but "bad request data" comes as an HTTP 200 with the
	// reason in the body.
	Edition2023 = "2023"
	// EditionCurrent is today's urlAvatar and available; "bad request data" is an HTTP 400. As
	// the contract says, {"urlAvatar":"","available":true} is both an account without a photo
	// and no account at all: only a link or available false tell that the account exists.
	// Like Green API today it takes only chatId: a getAvatar body with an integer phoneNumber
	// and no chatId is answered 400 "Validation failed. Details: 'chatId' is required" (JSON).
	EditionCurrent = "current"
	// EditionCurrentBase64 is EditionCurrent plus a base64Avatar field, as seen in Green API's
	// own code in 2026; it refuses phoneNumber as EditionCurrent does.
	EditionCurrentBase64 = "current+base64"
	// EditionMixed picks one of the four editions above per number, by hash, so one run sees
	// every form while each number always answers the same way.
	EditionMixed = "mixed"
)

// Forms of HTTP 400 bodies. The contract has seen both, so a client must match the message in
// either.
const (
	// ErrorBodyText sends the message as the whole plain-text body.
	ErrorBodyText = "text"
	// ErrorBodyJSON wraps it: {"statusCode":400,"timestamp":...,"path":...,"message":...}.
	ErrorBodyJSON = "json"
	// ErrorBodyMixed alternates text and JSON, 400 answer by 400 answer, starting with text.
	ErrorBodyMixed = "mixed"
)

// Instance states, as GetStateInstance reports them, plus "expired" and "deleted", which it
// cannot report but which change what every other method answers.
const (
	StateAuthorized    = greenapi.StateAuthorized
	StateNotAuthorized = greenapi.StateNotAuthorized
	StateBlocked       = greenapi.StateBlocked
	StateSleepMode     = greenapi.StateSleepMode
	StateStarting      = greenapi.StateStarting
	StateYellowCard    = greenapi.StateYellowCard
	StateExpired       = "expired"
	StateDeleted       = "deleted"
)

// Defaults, named so that a flag layer can show them and tests can refer to them.
const (
	// InstanceIDDefault is the idInstance of the one instance served when Config.Instances is
	// empty (the contract's example id).
	InstanceIDDefault = "1101000001"
	// TokenDefault is the apiTokenInstance of an instance whose Token is empty.
	TokenDefault = "simulator-token"
	// RPSDefault is GetAvatar's and CheckWhatsapp's documented limit per instance.
	RPSDefault = 10.0
	// StateRPSDefault is GetStateInstance's documented limit per instance.
	StateRPSDefault = 1.0
	// BurstDefault lets one request arrive early, as network jitter makes a client paced at
	// exactly the limit do, without a 429.
	BurstDefault = 2
	// EditionDefault is the edition live Green API answers in today.
	EditionDefault = EditionCurrent
	// ErrorBodyDefault is the form of the seed document's error table.
	ErrorBodyDefault = ErrorBodyText
	// TimeoutTimesDefault is how often a timeout-first number times out when TimeoutRate is
	// set and TimeoutTimes is not.
	TimeoutTimesDefault = 1
	// EmptyTimesDefault is how many empty 200s an empty-first number answers when EmptyRate
	// is set and EmptyTimes is not.
	EmptyTimesDefault = 1
	// MaxTooManyAt bounds InstanceStats.TooManyAt, so a client hammering a TooManyAll
	// instance for hours cannot grow the simulator without end: 800 KB per instance at most.
	MaxTooManyAt = 100_000
	// LinkLifetime is how far after the simulator's start avatar links expire (their oe).
	LinkLifetime = 14 * 24 * time.Hour
)

// Default truth mix, used when every Weight* field is zero: most numbers in a real list have
// WhatsApp and a photo; a few are hidden, dead, or rejected.
const (
	WeightAvatarDefault     = 0.55
	WeightNoPhotoDefault    = 0.20
	WeightHiddenDefault     = 0.10
	WeightNoWhatsAppDefault = 0.13
	WeightBadRequestDefault = 0.02
)

// Instance is one idInstance the simulator serves: its credentials, its state and its limits.
// The zero value of every field but ID is a healthy instance with the documented limits.
type Instance struct {
	// ID is the idInstance in the URL (/waInstance{ID}/...). Required; no '/'.
	ID string
	// Token is the apiTokenInstance in the URL; a wrong one is answered 401. Default
	// TokenDefault.
	Token string
	// State is one of the State* constants. Default "authorized". "sleepMode" and
	// "yellowCard" answer like "authorized"; "starting" is a starting window that never ends.
	State string
	// RPS is the limit, in requests per second, of getAvatar and of checkWhatsapp (each has
	// its own bucket). Default 10; negative means unlimited.
	RPS float64
	// StateRPS is getStateInstance's limit in requests per second. Default 1; negative means
	// unlimited.
	StateRPS float64
	// Burst is the token bucket's size for every method. Default 2, which tolerates one early
	// arrival such as network jitter makes; 1 comes close to the strict "at least 1/rps
	// between accepted requests" that Green API's support describes (MinGap is that reading
	// exactly). A client pacing at exactly 1/rps gets no 429 with either. Ignored when MinGap
	// is set.
	Burst int
	// MinGap replaces the token bucket with the strictest reading of Green API's limit: a
	// method's request is accepted only when at least 1/rps (RPS, or StateRPS for
	// getStateInstance; truncated to whole nanoseconds) has passed since that method's last
	// accepted request on the instance, measured in integer nanoseconds on the one clock
	// reading the request was admitted at. Requests that arrive with jitter around an exact
	// 1/rps pacing draw 429s, as they do from the real server. Default false.
	MinGap bool
	// TooManyAll answers every request to the instance 429 (every method, getStateInstance
	// included; with Retry-After when Config.RetryAfter is set), counted in TooMany: an
	// instance that is throttled whatever the client does. Default false.
	TooManyAll bool
	// Quota is how many getAvatar calls that passed the rate limiter are answered before
	// every further one gets 466 QUOTE_EXCEEDED. 0 means unlimited.
	Quota int
	// CheckQuota is the same for checkWhatsapp, counted apart (its monthly quota on low
	// plans): getAvatar goes on answering when it is spent. 0 means unlimited.
	CheckQuota int
	// StartingAfter is when, after the simulator's start, the first starting window opens.
	StartingAfter time.Duration
	// StartingAfterRequests, when above 0, opens the first starting window instead at the
	// arrival of the instance's StartingAfterRequests-th getAvatar request (that request is
	// answered "starting" too): a test then meets the window however fast the machine is.
	StartingAfterRequests int
	// StartingFor is how long a starting window lasts; 0 means the instance never starts.
	StartingFor time.Duration
	// StartingEvery repeats the window with this period (measured from StartingAfter); 0
	// means it happens once.
	StartingEvery time.Duration
	// NewerWording makes starting and notAuthorized instances answer with the newer "instance
	// is starting or not authorized" instead of the seed's two messages.
	NewerWording bool
	// Pool is the pool of instances the instance lives in. Green API serves each pool on a
	// host of its own (its apiUrl in the console) and answers 403 when an instance is called
	// on another pool's host. The simulator's own ServeHTTP is the host of pool "" and
	// Simulator.Pool(name) that of every other pool; an instance called on another pool's
	// handler is answered 403 and counted in InstanceStats.WrongHost. Default "": every
	// instance on one host, as before pools.
	Pool string
}

// Config says what the simulator serves and which faults it injects. Every field is a plain
// number, duration or string (bar the injected functions), so that a CLI can map flags onto it.
type Config struct {
	// Instances are served by ID. Default: one instance InstanceIDDefault with TokenDefault.
	Instances []Instance
	// Edition is the GetAvatar body form, one of the Edition* constants. Default "current".
	Edition string
	// ErrorBody is the HTTP 400 body form, one of the ErrorBody* constants. Default "text".
	// "Validation failed" errors are always JSON, as they were seen in the wild.
	ErrorBody string
	// Seed drives the truth hash and the default random source: equal seeds give equal truths.
	Seed uint64

	// Weight* are the relative shares of numbers that exist with an avatar, exist without a
	// photo, hide their avatar by privacy settings, have no WhatsApp, or are "bad request
	// data" (well-formed, yet rejected by the server). They need not sum to 1. All zero means
	// the Weight*Default constants; otherwise unset ones are 0. Groups always exist, with an
	// avatar or without in the proportion of WeightAvatar to WeightNoPhoto.
	WeightAvatar     float64
	WeightNoPhoto    float64
	WeightHidden     float64
	WeightNoWhatsApp float64
	WeightBadRequest float64

	// ServerErrorRate is the share of admitted requests answered 500, 502, 503 or 504 (drawn
	// from Rand). Default 0.
	ServerErrorRate float64
	// TimeoutRate is the share of numbers (by hash) that first answer "get avatar timeout
	// limit exceeded" (checkWhatsapp: "check phone number timeout limit exceeded"). Numbers
	// that are bad request data never do. Default 0.
	TimeoutRate float64
	// TimeoutTimes is how many calls, per number and method, such a number times out before
	// it answers the truth. Default 1 when TimeoutRate is set.
	TimeoutTimes int
	// EmptyRate is the share of numbers (by hash, independent of TimeoutRate) whose first
	// getAvatar calls are answered HTTP 200 with none of the documented fields: {}, then
	// {"error":"temporarily unavailable"}, then {"urlAvatar":null}, and round again (each
	// number starts at its own place in that rotation). Such a 200 is not an answer; a
	// client must retry it. Numbers that are bad request data never do; checkWhatsapp is
	// not affected. Default 0.
	EmptyRate float64
	// MissingRate is the share of accounts without a photo (by hash) that getAvatar reports as
	// existsWhatsapp false, Green API's known bug (docs/greenapi.md), in the editions that
	// carry existsWhatsapp (seed, 2023); checkWhatsapp tells the truth for them. Their Truth
	// says ReportedMissing. Default 0.
	MissingRate float64
	// ImageVariety is how many different images avatar links serve (ServeImagesAt). Default
	// ImageVarietyDefault.
	ImageVariety int
	// EmptyTimes is how many getAvatar calls per such number get an empty 200 before it
	// answers (a timeout-first number then times out TimeoutTimes times, then answers the
	// truth). Default EmptyTimesDefault (1) when EmptyRate is set.
	EmptyTimes int
	// LatencyMedian is the median delay before an admitted request is answered; 0 means none.
	LatencyMedian time.Duration
	// LatencyP99 is the 99th percentile of that log-normal delay; 0 or not above the median
	// means every delay is exactly the median. Delays are capped at ten times LatencyP99.
	LatencyP99 time.Duration
	// HangRate is the share of admitted requests that are never answered: the handler waits
	// until the client gives up (the request's context ends). Default 0.
	HangRate float64
	// RetryAfter, when positive, is sent as a Retry-After header (whole seconds, at least 1)
	// with every 429. Default 0: none, as the contract documents.
	RetryAfter time.Duration
	// OutageAfter and OutageFor make the server unreachable for OutageFor, starting OutageAfter
	// after Start: every API request in that window (every instance, every method) gets no
	// answer at all, its connection closed as soon as the request is read, as a host that is
	// down or a load balancer with no backend does; the client sees a network error. Images
	// are still served. Counted in Stats.Refused. OutageFor 0 (the default): never.
	OutageAfter, OutageFor time.Duration

	// Start is the simulator's start: starting windows are measured from it and avatar links
	// expire LinkLifetime after it. Default Now() when New runs.
	Start time.Time
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Sleep waits d or until ctx ends, returning ctx.Err() then; it makes latency. Default a
	// timer-based wait.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand is the source of every random choice per request (faults, latency). Default a PCG
	// seeded from Seed. The simulator guards it with a mutex; it is used only when a fault
	// rate or latency is set.
	Rand rand.Source
}

// errConfig prefixes configuration errors with the package, as x/time/rate does.
func errConfig(format string, args ...any) error {
	return fmt.Errorf("simulator: "+format, args...)
}

// withDefaults validates cfg once and fills in every default, so the handler never checks.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = clock.Sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)
	}
	if cfg.Start.IsZero() {
		cfg.Start = cfg.Now()
	}
	switch cfg.Edition {
	case "":
		cfg.Edition = EditionDefault
	case EditionSeed, Edition2023, EditionCurrent, EditionCurrentBase64, EditionMixed:
	default:
		return cfg, errConfig("unknown edition %q (want seed, 2023, current, current+base64 or mixed)", cfg.Edition)
	}
	switch cfg.ErrorBody {
	case "":
		cfg.ErrorBody = ErrorBodyDefault
	case ErrorBodyText, ErrorBodyJSON, ErrorBodyMixed:
	default:
		return cfg, errConfig("unknown error body form %q (want text, json or mixed)", cfg.ErrorBody)
	}
	weights := []float64{cfg.WeightAvatar, cfg.WeightNoPhoto, cfg.WeightHidden, cfg.WeightNoWhatsApp, cfg.WeightBadRequest}
	var sum float64
	for _, w := range weights {
		if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return cfg, errConfig("truth weights must be finite and not negative, got %v", w)
		}
		sum += w
	}
	if sum == 0 {
		cfg.WeightAvatar, cfg.WeightNoPhoto, cfg.WeightHidden = WeightAvatarDefault, WeightNoPhotoDefault, WeightHiddenDefault
		cfg.WeightNoWhatsApp, cfg.WeightBadRequest = WeightNoWhatsAppDefault, WeightBadRequestDefault
	}
	for name, r := range map[string]float64{"server error rate": cfg.ServerErrorRate, "timeout rate": cfg.TimeoutRate, "empty rate": cfg.EmptyRate, "hang rate": cfg.HangRate, "missing rate": cfg.MissingRate} {
		if !(r >= 0 && r <= 1) {
			return cfg, errConfig("%s must be between 0 and 1, got %v", name, r)
		}
	}
	if cfg.TimeoutTimes < 0 {
		return cfg, errConfig("timeout times must not be negative, got %d", cfg.TimeoutTimes)
	}
	if cfg.TimeoutTimes == 0 && cfg.TimeoutRate > 0 {
		cfg.TimeoutTimes = TimeoutTimesDefault
	}
	if cfg.EmptyTimes < 0 {
		return cfg, errConfig("empty times must not be negative, got %d", cfg.EmptyTimes)
	}
	if cfg.EmptyTimes == 0 && cfg.EmptyRate > 0 {
		cfg.EmptyTimes = EmptyTimesDefault
	}
	if cfg.LatencyMedian < 0 || cfg.LatencyP99 < 0 || cfg.RetryAfter < 0 {
		return cfg, errConfig("latency and retry-after durations must not be negative")
	}
	if cfg.OutageAfter < 0 || cfg.OutageFor < 0 {
		return cfg, errConfig("outage after %v and for %v must not be negative", cfg.OutageAfter, cfg.OutageFor)
	}
	if len(cfg.Instances) == 0 {
		cfg.Instances = []Instance{{ID: InstanceIDDefault}}
	}
	instances := make([]Instance, len(cfg.Instances))
	seen := make(map[string]bool, len(cfg.Instances))
	for i, in := range cfg.Instances {
		if in.ID == "" || strings.IndexByte(in.ID, '/') >= 0 {
			return cfg, errConfig("instance %d: id %q must be non-empty and contain no '/'", i, in.ID)
		}
		if seen[in.ID] {
			return cfg, errConfig("instance %s is listed twice", in.ID)
		}
		seen[in.ID] = true
		if in.Token == "" {
			in.Token = TokenDefault
		}
		switch in.State {
		case "":
			in.State = StateAuthorized
		case StateAuthorized, StateNotAuthorized, StateBlocked, StateSleepMode, StateStarting, StateYellowCard, StateExpired, StateDeleted:
		default:
			return cfg, errConfig("instance %s: unknown state %q", in.ID, in.State)
		}
		if in.RPS == 0 {
			in.RPS = RPSDefault
		}
		if in.StateRPS == 0 {
			in.StateRPS = StateRPSDefault
		}
		if in.Burst == 0 {
			in.Burst = BurstDefault
		}
		if in.Burst < 0 || in.Quota < 0 || in.CheckQuota < 0 || in.StartingAfter < 0 || in.StartingFor < 0 || in.StartingEvery < 0 ||
			in.StartingAfterRequests < 0 {
			return cfg, errConfig("instance %s: burst, quota and starting durations must not be negative", in.ID)
		}
		instances[i] = in
	}
	cfg.Instances = instances
	return cfg, nil
}
