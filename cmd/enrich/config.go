package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/avatars"
	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/pelletier/go-toml/v2"
)

// Config is the TOML file, after environment variables and flags have been applied. Its key
// names are a contract: users' manifests carry them. config.example.toml documents each one.
type Config struct {
	Database DatabaseConfig `toml:"database"`
	GreenAPI GreenAPIConfig `toml:"greenapi"`
	Run      RunConfig      `toml:"run"`
	Retry    RetryConfig    `toml:"retry"`
	Input    InputConfig    `toml:"input"`
	Avatars  AvatarsConfig  `toml:"avatars"`
	Source   SourceConfig   `toml:"source"`

	// envErr is a conflict between the environment and the file that matters only to
	// commands that call the API.
	envErr error
}

// DatabaseConfig is [database].
type DatabaseConfig struct {
	// URL is a libpq URL or DSN. Env DATABASE_URL. No default: validate refuses "".
	URL string `toml:"url"`
	// Table is the contacts table, schema-qualified if needed.
	Table string `toml:"table"`
	// Pooler is what sits between enrich and PostgreSQL: "" or "none" (a direct connection),
	// "session" or "transaction" (PgBouncer's pool_mode); see store.PoolOptions.
	Pooler string `toml:"pooler"`
	// RetryFor is how long a run waits out a failing database before it exits 3.
	RetryFor Duration `toml:"retry_for"`
	// Timeout bounds each database call of a run.
	Timeout Duration `toml:"timeout"`
	// BudgetSchema holds the instances' shared budget for every contacts table of the
	// database (store.BudgetSchemaDefault).
	BudgetSchema string `toml:"budget_schema"`
}

// GreenAPIConfig is [greenapi].
type GreenAPIConfig struct {
	// APIURL is the host of every instance that names none of its own (InstanceConfig.APIURL).
	// Env GREENAPI_API_URL, flag --api-url.
	APIURL    string   `toml:"api_url"`
	RequestBy string   `toml:"request_by"`
	Timeout   Duration `toml:"timeout"`
	// DayStartsAt ("HH:MM") and TimeZone (IANA) say when an instance's day turns, for
	// max_per_day.
	DayStartsAt string `toml:"day_starts_at"`
	TimeZone    string `toml:"time_zone"`
	// ConfirmMissing asks CheckWhatsapp whether the account exists wherever GetAvatar's answer
	// cannot say (today's {"urlAvatar":"","available":true}: no photo or no account) or may be
	// wrong (the seed editions' existsWhatsapp false: Green API's known bug with accounts
	// without a photo), within CheckWhatsapp's own 10 rps per instance, and makes a run first
	// take up again the rows whose existence is still unknown. Default true (it was false, and
	// only the seed editions' false was asked, before existence was checked for every row);
	// false: no CheckWhatsapp call, and today's answers without a link are left unchecked.
	ConfirmMissing bool             `toml:"confirm_missing"`
	Instances      []InstanceConfig `toml:"instance"`
}

// InstanceConfig is one [[greenapi.instance]].
type InstanceConfig struct {
	ID string `toml:"id"`
	// APIURL is the instance's host, its apiUrl in the Green API console: each pool of
	// instances has its own, and the wrong one answers 403. "": greenapi.api_url, which
	// validate fills in.
	APIURL    string   `toml:"api_url"`
	Token     string   `toml:"token"`
	TokenFile string   `toml:"token_file"`
	RPS       *float64 `toml:"rps"`
	// MaxPerDay caps the instance's requests per day across runs and processes; 0: none.
	MaxPerDay int64 `toml:"max_per_day"`
}

// RunConfig is [run].
type RunConfig struct {
	Workers         int      `toml:"workers"`
	BatchSize       int      `toml:"batch_size"`
	Lease           Duration `toml:"lease"`
	MaxAttempts     int      `toml:"max_attempts"`
	MaxDuration     Duration `toml:"max_duration"`
	Limit           int      `toml:"limit"`
	ShutdownGrace   Duration `toml:"shutdown_grace"`
	StartingTimeout Duration `toml:"starting_timeout"`
	// StallTimeout ends a run in which nothing moved for this long (exit 4); 0: the longest
	// wait the other keys allow for, plus a minute (enrich.Config.StallTimeout).
	StallTimeout Duration `toml:"stall_timeout"`
	// RefreshAfter makes done rows due again once their answer is this old; 0: never by age.
	// RefreshBeforeExpiry makes them due this long before their avatar link expires (the oe of
	// a pps.whatsapp.net link). A run moves such rows back to pending before it claims.
	RefreshAfter        Duration `toml:"refresh_after"`
	RefreshBeforeExpiry Duration `toml:"refresh_before_expiry"`
	// Follow keeps `enrich run` up when no row is due, woken by notifications (LISTEN
	// enrich_due) and PollInterval (flags --follow, --poll-interval): enrich.Config.Follow.
	Follow       bool     `toml:"follow"`
	PollInterval Duration `toml:"poll_interval"`
}

// refresh is the store's refresh policy from [run].
func (r RunConfig) refresh() store.RefreshPolicy {
	return store.RefreshPolicy{After: r.RefreshAfter.Duration, BeforeExpiry: r.RefreshBeforeExpiry.Duration}
}

// refreshPolicy is the run's refresh policy: [run]'s, and with the existence checks on
// (greenapi.confirm_missing) the rows whose existence is still unknown too.
func (c Config) refreshPolicy() store.RefreshPolicy {
	p := c.Run.refresh()
	p.ExistsUnknown = c.GreenAPI.ConfirmMissing
	return p
}

// RetryConfig is [retry].
type RetryConfig struct {
	Base  Duration `toml:"base"`
	Max   Duration `toml:"max"`
	InRun int      `toml:"in_run"`
}

// InputConfig is [input]: how `enrich enqueue` reads numbers.
type InputConfig struct {
	// Region is the ISO 3166 alpha-2 region national numbers are dialled in ("RU": 8 900 ...
	// is 7900...), checked against phonenumbers' supported regions; "" takes numbers as
	// international digits. The --region flag overrides it.
	Region string `toml:"region"`
}

// SourceConfig is [source]: the user's own table, enriched in place (store.Source). Unset
// (table ""), enrich works on its own contacts table, filled by enqueue.
type SourceConfig struct {
	// Table is the user's table, schema-qualified if needed; with it, database.table names
	// enrich's state table beside it, by default "<table>_enrich" (store.StateTable).
	Table string `toml:"table"`
	// Key is a unique, non-null column of Table.
	Key string `toml:"key"`
	// Phone is the column of phone numbers (any form enqueue reads, with input.region) or
	// chatIds.
	Phone     string          `toml:"phone"`
	WriteBack WriteBackConfig `toml:"write_back"`
}

// WriteBackConfig is [source.write_back]: which of the user's columns receive which result
// (store.WriteBack); a key left out writes nothing.
type WriteBackConfig struct {
	ExistsWhatsapp  string `toml:"exists_whatsapp"`
	AvatarAvailable string `toml:"avatar_available"`
	URLAvatar       string `toml:"url_avatar"`
	Reason          string `toml:"reason"`
	CheckedAt       string `toml:"checked_at"`
	ExistsSource    string `toml:"exists_source"`
}

// source is the store's view of [source]; nil when no source table is configured.
func (c *Config) source() *store.Source {
	s := c.Source
	if s.Table == "" {
		return nil
	}
	w := s.WriteBack
	return &store.Source{Table: s.Table, Key: s.Key, Phone: s.Phone, Region: c.Input.Region,
		WriteBack: store.WriteBack{ExistsWhatsapp: w.ExistsWhatsapp, AvatarAvailable: w.AvatarAvailable,
			URLAvatar: w.URLAvatar, Reason: w.Reason, CheckedAt: w.CheckedAt, ExistsSource: w.ExistsSource}}
}

// AvatarsConfig is [avatars]: keeping the images behind avatar links, which expire.
type AvatarsConfig struct {
	// Download fetches each new avatar once and keeps it in enrich_avatars. Default false.
	Download bool `toml:"download"`
	// Hosts are where links may be fetched from (avatars.Config.Hosts). Default
	// ["pps.whatsapp.net"].
	Hosts []string `toml:"hosts"`
	// MaxBytes is the largest image kept. Default 1 MiB.
	MaxBytes int64 `toml:"max_bytes"`
	// Timeout bounds one download. Default 10s.
	Timeout Duration `toml:"timeout"`
	// Concurrency is how many downloads run at once. Default 4.
	Concurrency int `toml:"concurrency"`
}

// Duration reads "90s", "10m", "1h30m" or whole days ("7d", as --since and --older-than take)
// from TOML and from flags.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string or a whole number of days.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseAge(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it like \"90s\", \"10m\", \"1h30m\" or \"1d\"", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back in Go's form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Set and String make Duration a flag.Value.
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

// Defaults of the keys that are not the engine's. database.url has none: a guess (the local
// server's maintenance database) would have `enrich migrate` create tables where nobody meant
// them; only `enrich demo` picks a server by itself.
const (
	APIURLDefault = "https://api.green-api.com"
	// TimeoutDefault is greenapi.timeout: Green API's own SDK waits 180 s, and a client that
	// gives up before the server's work is done turns it into a 499 and a retry.
	TimeoutDefault = greenapi.TimeoutDefault
	RPSDefault     = 10.0
)

// Upper bounds of [run], so that a typo (workers = 100000000) is refused at once instead of
// costing minutes and gigabytes before something else fails. config.example.toml says why.
const (
	// WorkersMax bounds run.workers: each worker is one concurrent call to its instance, and an
	// instance takes 10 requests/s, so rps × latency workers keep it busy; a thousand covers a
	// 100 s tail at 10 rps.
	WorkersMax = enrich.WorkersMax
	// BatchSizeMax bounds run.batch_size: store.ChunkSize, the most rows one statement
	// claims or writes.
	BatchSizeMax = store.ChunkSize
	// MaxAttemptsMax bounds run.max_attempts: a row that failed that often will not succeed,
	// and with retry.max between attempts a thousand already spans days.
	MaxAttemptsMax = 1000
	// LeaseMin is the shortest run.lease: rows in hand are renewed every third of a lease, and
	// each renewal is a database round trip that must fit with room to spare.
	LeaseMin = 10 * time.Second
)

// defaultConfig is every key at its default, so a file only says what it changes.
func defaultConfig() Config {
	return Config{
		Database: DatabaseConfig{Table: store.TableDefault, BudgetSchema: store.BudgetSchemaDefault,
			RetryFor: Duration{enrich.RetryForDefault}, Timeout: Duration{enrich.DatabaseTimeoutDefault}},
		GreenAPI: GreenAPIConfig{
			APIURL:         APIURLDefault,
			RequestBy:      string(greenapi.RequestByChatID),
			Timeout:        Duration{TimeoutDefault},
			DayStartsAt:    "00:00",
			TimeZone:       "UTC",
			ConfirmMissing: true,
		},
		Run: RunConfig{
			Workers:             enrich.WorkersDefault,
			BatchSize:           enrich.BatchSizeDefault,
			Lease:               Duration{enrich.LeaseDefault},
			MaxAttempts:         enrich.MaxAttemptsDefault,
			ShutdownGrace:       Duration{enrich.ShutdownGraceDefault},
			StartingTimeout:     Duration{enrich.StartingTimeoutDefault},
			RefreshAfter:        Duration{store.RefreshAfterDefault},
			RefreshBeforeExpiry: Duration{store.RefreshBeforeExpiryDefault},
			PollInterval:        Duration{enrich.PollIntervalDefault},
		},
		Avatars: AvatarsConfig{Hosts: []string{avatars.HostDefault}, MaxBytes: avatars.MaxBytesDefault,
			Timeout: Duration{avatars.TimeoutDefault}, Concurrency: avatars.ConcurrencyDefault},
		Retry: RetryConfig{
			Base:  Duration{enrich.RetryBaseDefault},
			Max:   Duration{enrich.RetryMaxDefault},
			InRun: enrich.RetryInRunDefault,
		},
	}
}

// configError is a bad configuration or command line: the CLI exits 1 before touching
// anything.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// loadConfig reads the file (path "" means none), then applies environment variables.
// Flags are applied by the caller, then validate checks the result.
func loadConfig(path string, getenv func(string) string) (Config, error) {
	cfg := defaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, configErrorf("read config: %v", err)
		}
		dec := toml.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, configErrorf("%s", describeTOMLError(path, data, err))
		}
	}
	if v := getenv("DATABASE_URL"); v != "" {
		cfg.Database.URL = v
	}
	if v := getenv("GREENAPI_API_URL"); v != "" {
		cfg.GreenAPI.APIURL = v
	}
	id, token := getenv("GREENAPI_ID_INSTANCE"), getenv("GREENAPI_API_TOKEN_INSTANCE")
	if id != "" || token != "" {
		switch len(cfg.GreenAPI.Instances) {
		case 0:
			cfg.GreenAPI.Instances = []InstanceConfig{{}}
		case 1:
		default:
			// Only an error for commands that call the API: status or migrate in the same pod
			// must still work.
			cfg.envErr = configErrorf("GREENAPI_ID_INSTANCE and GREENAPI_API_TOKEN_INSTANCE describe one instance, " +
				"but the config file has several [[greenapi.instance]]: set each instance's id and token_file in the file instead")
			return cfg, nil
		}
		if id != "" {
			cfg.GreenAPI.Instances[0].ID = id
		}
		if token != "" {
			cfg.GreenAPI.Instances[0].Token, cfg.GreenAPI.Instances[0].TokenFile = token, ""
		}
	}
	return cfg, nil
}

// describeTOMLError turns go-toml's errors into "file:line:col: key: what", without the
// document excerpt go-toml offers: that excerpt could show a token. data is the document.
func describeTOMLError(path string, data []byte, err error) string {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var lines []string
		for _, e := range strict.Errors {
			row, col := e.Position()
			lines = append(lines, fmt.Sprintf("%s:%d:%d: unknown key %q: remove it or check its spelling against config.example.toml",
				path, row, col, strings.Join(e.Key(), ".")))
		}
		return strings.Join(lines, "\n")
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		key := strings.Join(de.Key(), ".")
		if key != "" {
			key += ": "
		}
		return fmt.Sprintf("%s:%d:%d: %s%s", path, row, col, key, plainTOMLError(strings.TrimPrefix(de.Error(), "toml: ")))
	}
	// go-toml hands a number or a boolean meant for a Duration (timeout = 60) to UnmarshalText
	// and returns its error bare, with neither position nor key: find the key.
	if key := unquotedDuration(reflect.TypeFor[Config](), data); key != "" {
		return fmt.Sprintf("%s: %s: %v", path, key, err)
	}
	return fmt.Sprintf("%s: %v", path, err)
}

// tomlTypeError is go-toml's message for a value of the wrong type, which names Go's types
// ("cannot decode TOML integer into struct field main.InstanceConfig.ID of type string").
var tomlTypeError = regexp.MustCompile(`^cannot decode TOML (\w+) into struct field \S+ of type (\S+)$`)

// plainTOMLError says a type mismatch in the file's words: what was written and what to write.
func plainTOMLError(msg string) string {
	m := tomlTypeError.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	switch m[2] {
	case "string":
		return fmt.Sprintf("this is a TOML %s, and the key takes a string: put the value in double quotes (id = \"1101000001\")", m[1])
	case "int", "int64":
		return fmt.Sprintf("this is a TOML %s, and the key takes a whole number: write it without quotes (workers = 16)", m[1])
	case "float64", "*float64":
		return fmt.Sprintf("this is a TOML %s, and the key takes a number: write it without quotes (rps = 10)", m[1])
	case "bool":
		return fmt.Sprintf("this is a TOML %s, and the key takes true or false, without quotes", m[1])
	case "[]string":
		return fmt.Sprintf("this is a TOML %s, and the key takes a list of strings ([\"a\", \"b\"])", m[1])
	}
	return fmt.Sprintf("this is a TOML %s, which the key does not take: see config.example.toml", m[1])
}

// unquotedDuration returns the dotted key of the first Duration in the TOML document data
// whose value is not a string, or "" if there is none (or data does not parse).
func unquotedDuration(typ reflect.Type, data []byte) string {
	var doc map[string]any
	if toml.Unmarshal(data, &doc) != nil {
		return ""
	}
	var find func(typ reflect.Type, doc map[string]any, prefix string) string
	find = func(typ reflect.Type, doc map[string]any, prefix string) string {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := f.Tag.Get("toml")
			key := prefix + name
			switch v := doc[name]; {
			case v == nil:
			case f.Type == reflect.TypeFor[Duration]():
				if _, ok := v.(string); !ok {
					return key
				}
			case f.Type.Kind() == reflect.Struct:
				if m, ok := v.(map[string]any); ok {
					if k := find(f.Type, m, key+"."); k != "" {
						return k
					}
				}
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				if list, ok := v.([]any); ok {
					for j, e := range list {
						if m, ok := e.(map[string]any); ok {
							if k := find(f.Type.Elem(), m, fmt.Sprintf("%s[%d].", key, j)); k != "" {
								return k
							}
						}
					}
				}
			}
		}
		return ""
	}
	return find(typ, doc, "")
}

// validate checks every value before anything is touched, naming the key at fault.
func (c *Config) validate(needAPI bool) error {
	if src := c.source(); src != nil {
		if err := src.Check(); err != nil {
			return configErrorf("%s", plainError(err))
		}
		// The state table is the source's unless database.table names another.
		if c.Database.Table == store.TableDefault {
			state, err := store.StateTable(src.Table)
			if err != nil {
				return configErrorf("source.table: %s", plainError(err))
			}
			c.Database.Table = state
		}
	}
	if _, err := store.ParseTable(c.Database.Table); err != nil {
		return configErrorf("database.table: %s", plainError(err))
	}
	if err := store.CheckSchema(c.Database.BudgetSchema); err != nil {
		return configErrorf("database.budget_schema: %v", err)
	}
	// The URL's syntax and the pooler are checked here, before any connection; the error names
	// the key (database.url or database.pooler) and never holds a password. An empty URL is
	// refused where a command connects (errNoDatabase), so that the other keys are checked first.
	if _, err := store.NewPoolConfig(c.Database.URL, store.PoolOptions{Pooler: c.Database.Pooler}); c.Database.URL != "" && err != nil {
		return configErrorf("%v", err)
	}
	for _, p := range []struct {
		key, why string
		v, max   int64 // max 0: no upper bound
	}{
		{"run.workers", "per instance: each worker is one concurrent call, and Green API allows 10 requests/s, " +
			"so rps × latency in seconds is enough", int64(c.Run.Workers), WorkersMax},
		{"run.batch_size", "the most rows one statement claims or writes", int64(c.Run.BatchSize), BatchSizeMax},
		{"run.max_attempts", "a row that failed that often will not succeed", int64(c.Run.MaxAttempts), MaxAttemptsMax},
		{"run.lease", "", int64(c.Run.Lease.Duration), 0},
		{"run.shutdown_grace", "", int64(c.Run.ShutdownGrace.Duration), 0},
		{"run.starting_timeout", "", int64(c.Run.StartingTimeout.Duration), 0},
		{"retry.base", "", int64(c.Retry.Base.Duration), 0},
		{"retry.max", "", int64(c.Retry.Max.Duration), 0},
		{"greenapi.timeout", "", int64(c.GreenAPI.Timeout.Duration), 0},
		{"database.retry_for", "", int64(c.Database.RetryFor.Duration), 0},
		{"database.timeout", "", int64(c.Database.Timeout.Duration), 0},
		{"run.poll_interval", "", int64(c.Run.PollInterval.Duration), 0},
	} {
		if p.v <= 0 {
			return configErrorf("%s must be greater than 0", p.key)
		}
		if p.max > 0 && p.v > p.max {
			return configErrorf("%s is %d: it must be at most %d (%s)", p.key, p.v, p.max, p.why)
		}
	}
	if c.Run.Lease.Duration < LeaseMin {
		return configErrorf("run.lease is %s: it must be at least %s (rows are renewed every third of a lease)",
			c.Run.Lease, LeaseMin)
	}
	for _, nn := range []struct {
		key, zero string
		v         int64
	}{
		{"run.limit", "no limit", int64(c.Run.Limit)},
		{"run.max_duration", "until no row is due", int64(c.Run.MaxDuration.Duration)},
		{"run.stall_timeout", "what the other timeouts allow for, plus a minute", int64(c.Run.StallTimeout.Duration)},
		{"retry.in_run", "no retry within the run", int64(c.Retry.InRun)},
	} {
		if nn.v < 0 {
			return configErrorf("%s must not be negative (0 means %s)", nn.key, nn.zero)
		}
	}
	if c.Retry.Max.Duration < c.Retry.Base.Duration {
		return configErrorf("retry.max (%s) must not be less than retry.base (%s)", c.Retry.Max, c.Retry.Base)
	}
	if c.Run.RefreshAfter.Duration < 0 {
		return configErrorf("run.refresh_after is %s: it must not be negative (\"0s\": done rows are never refreshed by age)",
			c.Run.RefreshAfter)
	}
	if d := c.Run.RefreshBeforeExpiry.Duration; d < 0 || d >= store.RefreshBeforeExpiryMax {
		return configErrorf("run.refresh_before_expiry is %s: it must be at least 0s and below %s "+
			"(avatar links live one to two weeks, so a larger margin makes rows due as soon as they are answered), e.g. \"24h\"",
			c.Run.RefreshBeforeExpiry, store.RefreshBeforeExpiryMax)
	}
	if a := c.Avatars; a.MaxBytes <= 0 || a.Timeout.Duration <= 0 || a.Concurrency <= 0 || a.Concurrency > WorkersMax {
		return configErrorf("avatars: max_bytes (%d), timeout (%s) and concurrency (%d) must be above 0, concurrency at most %d",
			a.MaxBytes, a.Timeout, a.Concurrency, WorkersMax)
	}
	if _, err := avatars.New(c.avatarsConfig(), nopSaver{}); err != nil {
		return configErrorf("%v", err)
	}
	region, err := checkRegion(c.Input.Region)
	if err != nil {
		return configErrorf("input.region (or --region): %v", err)
	}
	c.Input.Region = region
	if !needAPI {
		return nil
	}
	if c.envErr != nil {
		return c.envErr
	}
	switch greenapi.RequestBy(c.GreenAPI.RequestBy) {
	case greenapi.RequestByChatID, greenapi.RequestByPhoneNumber:
	default:
		return configErrorf("greenapi.request_by is %q: use %q or %q", c.GreenAPI.RequestBy,
			greenapi.RequestByChatID, greenapi.RequestByPhoneNumber)
	}
	if _, err := c.day(); err != nil {
		return err
	}
	if len(c.GreenAPI.Instances) == 0 {
		return configErrorf("no Green API instance: add a [[greenapi.instance]] with id and token (or token_file), " +
			"or set GREENAPI_ID_INSTANCE and GREENAPI_API_TOKEN_INSTANCE")
	}
	seen := map[string]bool{}
	for i := range c.GreenAPI.Instances {
		in := &c.GreenAPI.Instances[i]
		key := fmt.Sprintf("greenapi.instance[%d]", i)
		if in.ID == "" || strings.Trim(in.ID, "0123456789") != "" {
			return configErrorf("%s.id is %q: it must be the idInstance digits from the Green API console", key, in.ID)
		}
		key += " (id " + in.ID + ")"
		if seen[in.ID] {
			return configErrorf("%s is listed twice: one budget per instance, list it once", key)
		}
		seen[in.ID] = true
		if in.RPS == nil {
			rps := RPSDefault
			in.RPS = &rps
		}
		if rps := *in.RPS; math.IsNaN(rps) || math.IsInf(rps, 0) || rps <= 0 {
			return configErrorf("%s.rps is %g: it must be a finite number greater than 0 (Green API allows 10)", key, rps)
		}
		if in.MaxPerDay < 0 {
			return configErrorf("%s.max_per_day is %d: it must not be negative (0 means no cap)", key, in.MaxPerDay)
		}
		switch {
		case in.Token != "" && in.TokenFile != "":
			return configErrorf("%s has both token and token_file: keep one", key)
		case in.TokenFile != "":
			b, err := os.ReadFile(in.TokenFile)
			if err != nil {
				return configErrorf("%s.token_file: %v", key, err)
			}
			token := strings.TrimSpace(string(b))
			if token == "" {
				return configErrorf("%s.token_file %s is empty", key, in.TokenFile)
			}
			in.Token, in.TokenFile = token, ""
		case in.Token == "":
			return configErrorf("%s has no token: set token or token_file (or GREENAPI_API_TOKEN_INSTANCE)", key)
		}
		// greenapi.New checks what the client will send (a token that cannot travel in a URL
		// path, say). Against the default URL, what fails is the instance's. Nothing is sent.
		if _, err := greenapi.New(greenapi.Config{APIURL: APIURLDefault, IDInstance: in.ID, Token: in.Token}); err != nil {
			return configErrorf("%s: %s", key, plainError(err))
		}
	}
	// The URL rules are greenapi's too. With an instance that passed above, what fails now is
	// the URL's; greenapi redacts that instance's token from the message, and the others' are
	// redacted here, in case one was pasted into the URL. The default is checked even when
	// every instance names its own: a bad value set is a mistake all the same.
	checkURL := func(key, apiURL string, in InstanceConfig) error {
		if _, err := greenapi.New(greenapi.Config{APIURL: apiURL, IDInstance: in.ID, Token: in.Token,
			RequestBy: greenapi.RequestBy(c.GreenAPI.RequestBy), Timeout: c.GreenAPI.Timeout.Duration}); err != nil {
			msg := plainError(err)
			for _, in := range c.GreenAPI.Instances {
				msg = strings.ReplaceAll(msg, in.Token, "***")
			}
			return configErrorf("%s: %s", key, msg)
		}
		return nil
	}
	if err := checkURL("greenapi.api_url", c.GreenAPI.APIURL, c.GreenAPI.Instances[0]); err != nil {
		return err
	}
	for i := range c.GreenAPI.Instances {
		in := &c.GreenAPI.Instances[i]
		if in.APIURL == "" {
			in.APIURL = c.GreenAPI.APIURL
			continue
		}
		if err := checkURL(fmt.Sprintf("greenapi.instance[%d] (id %s).api_url", i, in.ID), in.APIURL, *in); err != nil {
			return err
		}
	}
	return nil
}

// plainError is a package's error as a person reads it in a message about a config key: without
// the package's name ("store: ", "greenapi: invalid Config: "), which says nothing to them.
func plainError(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"greenapi: invalid Config: ", "greenapi: ", "store: "} {
		if m, ok := strings.CutPrefix(msg, prefix); ok {
			return m
		}
	}
	return msg
}

// day is when an instance's day turns, for max_per_day: greenapi.day_starts_at ("HH:MM") in
// greenapi.time_zone (an IANA name, which PostgreSQL, where the days are counted, knows too).
func (c *Config) day() (store.DayStart, error) {
	var h, m int
	at := c.GreenAPI.DayStartsAt
	if n, err := fmt.Sscanf(at, "%d:%d", &h, &m); err != nil || n != 2 || len(at) != 5 || h > 23 || m > 59 || h < 0 || m < 0 {
		return store.DayStart{}, configErrorf("greenapi.day_starts_at is %q: write the time a day starts as HH:MM, e.g. \"00:00\" or \"04:30\"", at)
	}
	zone := c.GreenAPI.TimeZone
	if _, err := time.LoadLocation(zone); err != nil || zone == "" || zone == "Local" {
		return store.DayStart{}, configErrorf("greenapi.time_zone is %q: use an IANA time zone name such as \"UTC\" or \"Europe/Moscow\"", zone)
	}
	return store.DayStart{Zone: zone, Offset: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute}, nil
}

// migrateOptions is how migrate and its status read the configuration.
func (c *Config) migrateOptions() store.MigrateOptions {
	return store.MigrateOptions{BudgetSchema: c.Database.BudgetSchema}
}
