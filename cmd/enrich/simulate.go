package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// simFlags are the simulator's settings as flags, shared by simulate and demo.
type simFlags struct {
	instances  multiFlag
	pools      multiFlag
	state      string
	rps        float64
	burst      int
	quota      int
	checkQuota int
	startAt    time.Duration
	startFor   time.Duration
	startEvry  time.Duration
	newer      bool
	tooMany    bool
	minGap     bool
	cfg        simulator.Config
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func addSimFlags(fs *flag.FlagSet, s *simFlags) {
	fs.Var(&s.instances, "instance", "serve instance ID:TOKEN, or ID:TOKEN@POOL to serve it on pool POOL's host only, as Green API "+
		"serves each pool of instances on its own host and answers 403 on another (repeatable); default "+
		simulator.InstanceIDDefault+":"+simulator.TokenDefault+", on --addr")
	fs.Var(&s.pools, "pool", "serve pool NAME's host at ADDR, written NAME=ADDR, e.g. 7103=127.0.0.1:7781 (repeatable); "+
		"a pool of an --instance without --pool gets a free port on 127.0.0.1 (logged). Every host answers 403 to "+
		"another pool's instances, --addr (the instances without @POOL) included")
	fs.StringVar(&s.state, "state", simulator.StateAuthorized, "every instance's state: authorized, notAuthorized, blocked, expired, deleted, starting")
	fs.Float64Var(&s.rps, "rps", simulator.RPSDefault, "getAvatar requests per second allowed per instance (429 above it); negative: unlimited")
	fs.IntVar(&s.burst, "burst", simulator.BurstDefault, "token bucket size per instance (1: close to a minimum gap of 1/rps; see --min-gap)")
	fs.BoolVar(&s.minGap, "min-gap", false, "accept a method's request only 1/rps or more after its last accepted one (the strictest limit; --burst is ignored)")
	fs.BoolVar(&s.tooMany, "too-many-all", false, "answer every request 429, getStateInstance included")
	fs.IntVar(&s.quota, "quota", 0, "getAvatar calls per instance before 466 QUOTE_EXCEEDED; 0: unlimited")
	fs.IntVar(&s.checkQuota, "check-quota", 0, "checkWhatsapp calls per instance before 466 QUOTE_EXCEEDED (counted apart from getAvatar's); 0: unlimited")
	fs.DurationVar(&s.startAt, "starting-after", 0, "open a starting window this long after start")
	fs.DurationVar(&s.startFor, "starting-for", 0, "length of the starting window; 0: none")
	fs.DurationVar(&s.startEvry, "starting-every", 0, "repeat the starting window with this period; 0: once")
	fs.BoolVar(&s.newer, "newer-wording", false, `say "instance is starting or not authorized" instead of the older messages`)
	c := &s.cfg
	fs.StringVar(&c.Edition, "edition", simulator.EditionDefault, "answer edition: current (today's {urlAvatar, available}: no account answers available true, no link), seed, 2023, current+base64, mixed")
	fs.StringVar(&c.ErrorBody, "error-body", simulator.ErrorBodyDefault, "HTTP 400 body form: text, json, mixed")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed of every number's truth and of the faults")
	fs.Float64Var(&c.WeightAvatar, "weight-avatar", simulator.WeightAvatarDefault, "share of numbers with WhatsApp and an avatar")
	fs.Float64Var(&c.WeightNoPhoto, "weight-no-photo", simulator.WeightNoPhotoDefault, "share with WhatsApp and no photo")
	fs.Float64Var(&c.WeightHidden, "weight-hidden", simulator.WeightHiddenDefault, "share hiding their avatar by privacy settings")
	fs.Float64Var(&c.WeightNoWhatsApp, "weight-no-whatsapp", simulator.WeightNoWhatsAppDefault, "share without WhatsApp")
	fs.Float64Var(&c.WeightBadRequest, "weight-bad-request", simulator.WeightBadRequestDefault, `share the server rejects as "bad request data"`)
	fs.Float64Var(&c.ServerErrorRate, "server-error-rate", 0, "share of requests answered 500/502/503/504")
	fs.Float64Var(&c.TimeoutRate, "timeout-rate", 0, `share of numbers that first answer "get avatar timeout limit exceeded"`)
	fs.IntVar(&c.TimeoutTimes, "timeout-times", simulator.TimeoutTimesDefault, "how many times such a number times out first")
	fs.Float64Var(&c.EmptyRate, "empty-rate", 0, "share of numbers whose first getAvatar calls get a 200 with none of the documented fields")
	fs.Float64Var(&c.MissingRate, "missing-rate", 0, "share of accounts without a photo that getAvatar reports as existsWhatsapp false (editions seed and 2023; checkWhatsapp tells the truth)")
	fs.IntVar(&c.EmptyTimes, "empty-times", simulator.EmptyTimesDefault, "how many such empty 200s each of those numbers gets first")
	fs.Float64Var(&c.HangRate, "hang-rate", 0, "share of requests never answered (the client times out)")
	fs.DurationVar(&c.LatencyMedian, "latency-median", 0, "median answer latency (log-normal)")
	fs.DurationVar(&c.LatencyP99, "latency-p99", 0, "99th percentile answer latency (the long tail)")
	fs.DurationVar(&c.RetryAfter, "retry-after", 0, "send Retry-After with every 429; 0: none, as Green API")
	fs.DurationVar(&c.OutageAfter, "outage-after", 0, "start an outage this long after start (see --outage-for)")
	fs.DurationVar(&c.OutageFor, "outage-for", 0, "refuse every API request for this long from --outage-after: its connection is closed unanswered, as a host that is down; 0: none")
}

// config turns the flags into a simulator configuration.
func (s *simFlags) config() (simulator.Config, error) {
	cfg := s.cfg
	ids := s.instances
	if len(ids) == 0 {
		ids = multiFlag{simulator.InstanceIDDefault + ":" + simulator.TokenDefault}
	}
	for _, v := range ids {
		id, token, ok := strings.Cut(v, ":")
		token, pool, atPool := strings.Cut(token, "@")
		if !ok || id == "" || token == "" || atPool && pool == "" {
			return cfg, configErrorf("--instance %q: write it as ID:TOKEN or ID:TOKEN@POOL, e.g. 1101000001:secret or 7103000001:secret@7103", v)
		}
		cfg.Instances = append(cfg.Instances, simulator.Instance{
			ID: id, Token: token, Pool: pool, State: s.state, RPS: s.rps, Burst: s.burst, Quota: s.quota, CheckQuota: s.checkQuota,
			StartingAfter: s.startAt, StartingFor: s.startFor, StartingEvery: s.startEvry, NewerWording: s.newer,
			TooManyAll: s.tooMany, MinGap: s.minGap,
		})
	}
	return cfg, nil
}

// hosts is where each pool of sim is served: defaultAddr for pool "" (always, as Green API's
// default host serves the oldest pools whether or not any instance is in them), the --pool
// address of every other pool, or a free port on 127.0.0.1.
func (s *simFlags) hosts(defaultAddr string, sim *simulator.Simulator) ([]simHost, error) {
	addrs := map[string]string{}
	for _, v := range s.pools {
		name, addr, ok := strings.Cut(v, "=")
		if !ok || name == "" || addr == "" {
			return nil, configErrorf("--pool %q: write it as NAME=ADDR, e.g. 7103=127.0.0.1:7781", v)
		}
		if !slices.Contains(sim.Pools(), name) {
			return nil, configErrorf("--pool %q: no --instance is in pool %s: write the instances as ID:TOKEN@%s", v, name, name)
		}
		if _, dup := addrs[name]; dup {
			return nil, configErrorf("--pool %q: pool %s is given twice", v, name)
		}
		addrs[name] = addr
	}
	hosts := []simHost{{pool: "", addr: defaultAddr}}
	for _, p := range sim.Pools() {
		if p != "" {
			hosts = append(hosts, simHost{pool: p, addr: cmp.Or(addrs[p], "127.0.0.1:0")})
		}
	}
	return hosts, nil
}

// simHost is one host of the simulator: where pool (its Instance.Pool; "" the default one) is
// served.
type simHost struct{ pool, addr string }

// serveSimulator listens on every host's addr and serves its pool of sim, with the counters at
// GET /stats on each, until ctx ends. Once all listen it tells ready each pool's base URL
// (http://host:port; an addr may end in :0).
func serveSimulator(ctx context.Context, hosts []simHost, sim *simulator.Simulator, ready func(urls map[string]string)) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	urls := map[string]string{}
	for _, h := range hosts {
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			return configErrorf("simulate: listen on %s: %v", h.addr, err)
		}
		lns = append(lns, ln)
		urls[h.pool] = "http://" + ln.Addr().String()
	}
	errc := make(chan error, len(hosts))
	var srvs []*http.Server
	for i, h := range hosts {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(sim.Stats())
		})
		mux.Handle("/", sim.Pool(h.pool))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		srvs = append(srvs, srv)
		go func() { errc <- srv.Serve(lns[i]) }()
	}
	ready(urls)
	var failed error
	select {
	case err := <-errc:
		failed = fmt.Errorf("simulate: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range srvs {
		_ = srv.Shutdown(sctx)
		srv.Close() // hung requests end here
	}
	if failed != nil {
		return failed
	}
	for range srvs {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("simulate: %w", err)
		}
	}
	return nil
}

func cmdSimulate(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(a.io.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: enrich simulate [flags]\n\nServes a Green API stand-in that follows the wire contract, "+
			"faults included; counters at GET /stats. Point greenapi.api_url at it.\n\n"+
			"Like Green API it can serve pools of instances, each on a host of its own that answers 403 to the\n"+
			"others' instances: --instance 7103000001:TOKEN@7103 --pool 7103=127.0.0.1:7781 serves that instance\n"+
			"at http://127.0.0.1:7781 only; set api_url under its [[greenapi.instance]] to it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:7780", "listen address")
	logFormat := fs.String("log-format", "auto", "log format: json, console, or auto")
	var sf simFlags
	addSimFlags(fs, &sf)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := a.setupLog(*logFormat, "info"); err != nil {
		return err
	}
	cfg, err := sf.config()
	if err != nil {
		return err
	}
	sim, err := simulator.New(cfg)
	if err != nil {
		return configErrorf("%v", err)
	}
	hosts, err := sf.hosts(*addr, sim)
	if err != nil {
		return err
	}
	err = serveSimulator(ctx, hosts, sim, func(urls map[string]string) {
		for _, h := range hosts {
			var ids []string
			for _, in := range cfg.Instances {
				if in.Pool == h.pool {
					ids = append(ids, in.ID)
				}
			}
			if h.pool == "" {
				a.log.Info().Str("api_url", urls[h.pool]).Strs("instances", ids).
					Msg("simulator serving; set greenapi.api_url to api_url")
				continue
			}
			a.log.Info().Str("pool", h.pool).Str("api_url", urls[h.pool]).Strs("instances", ids).
				Msg("pool serving; set api_url under each of its [[greenapi.instance]] to api_url")
		}
	})
	st := sim.Stats()
	a.log.Info().Int("requests", st.Requests).Msg("simulator stopped")
	return err
}
