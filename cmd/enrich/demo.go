package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// demoDatabasePrefix starts the name of the database the demo creates on the server it finds,
// followed by random hex, so that it never touches a database of the user's, nor one of another
// demo running at the same time.
const demoDatabasePrefix = "enrich_demo_"

// Bounds of the demo's flags: enough for a load trial, not so much that a typo runs for hours.
const (
	demoRowsMax      = 1_000_000
	demoInstancesMax = 100
	demoRPSMax       = 100_000
)

// dropTimeout bounds dropping the demo's database at the end, also after an interrupt.
const dropTimeout = 30 * time.Second

func cmdDemo(ctx context.Context, a *app, args []string) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(a.io.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: enrich demo [flags]\n\n"+
			"Runs the real job end to end against the built-in Green API simulator (with restarts, timeouts,\n"+
			"5xx answers and every response edition; from --instances 2 on, two pools of instances on two\n"+
			"hosts, one set by greenapi.api_url, one by api_url per instance) and PostgreSQL: DATABASE_URL's\n"+
			"server if set, else the local server on 127.0.0.1:5432, else a throw-away cluster started from\n"+
			"the installed binaries.\n"+
			"It creates a new database there, %s<random hex>, migrates, enqueues numbers, runs,\n"+
			"prints the summary and `enrich status`, checks every row against the simulator's truth, and\n"+
			"drops the database again (also when it fails or is interrupted; --keep keeps it).\n\nFlags:\n", demoDatabasePrefix)
		fs.PrintDefaults()
	}
	rows := fs.Int("rows", 3000, "numbers to enqueue")
	instances := fs.Int("instances", 3, "simulated Green API instances")
	rps := fs.Float64("rps", 100, "requests per second per instance, in the simulator and in the run "+
		"(real Green API allows 10; the demo goes faster)")
	logFormat := fs.String("log-format", "console", "log format: json, console, or auto")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	keep := fs.Bool("keep", false, "keep the demo's database at the end and print its URL, to look at it with psql")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	switch {
	case *rows < 1 || *rows > demoRowsMax:
		return configErrorf("demo: --rows is %d: use 1 to %d", *rows, demoRowsMax)
	case *instances < 1 || *instances > demoInstancesMax:
		return configErrorf("demo: --instances is %d: use 1 to %d", *instances, demoInstancesMax)
	case math.IsNaN(*rps) || *rps <= 0 || *rps > demoRPSMax:
		return configErrorf("demo: --rps is %g: it must be a number greater than 0 and at most %d", *rps, demoRPSMax)
	}
	if err := a.setupLog(*logFormat, *logLevel); err != nil {
		return err
	}
	out := a.io.out

	server, stop, err := pgcluster.Find(ctx, a.io.getenv("DATABASE_URL"))
	if err != nil {
		return dbErr("demo: find PostgreSQL", err)
	}
	defer stop()
	throwaway := server != a.io.getenv("DATABASE_URL") && server != pgcluster.LocalURL
	where := "the server at " + pgcluster.Redact(server)
	if throwaway {
		where = "a throw-away cluster (no server answered at " + pgcluster.LocalURL + "); it is removed when the demo ends"
	}
	fmt.Fprintf(out, "== PostgreSQL: %s\n", where)
	database, err := demoDatabaseName()
	if err != nil {
		return err
	}
	dbURL, drop, err := createDatabase(ctx, server, database)
	if err != nil {
		return dbErr("demo: create database "+database, err)
	}
	// Runs once the pool and the simulator are closed, whatever ended the demo: success,
	// failure or a signal.
	defer func() {
		switch {
		case *keep && throwaway:
			fmt.Fprintf(out, "== --keep: database %s lives in the throw-away cluster, which is removed now; "+
				"set DATABASE_URL to a server of yours to keep it\n", database)
		case *keep:
			fmt.Fprintf(out, "== kept database %s: %s (psql it; drop it with DROP DATABASE %s)\n",
				database, pgcluster.Redact(dbURL), database)
		default:
			if derr := drop(); derr != nil {
				fmt.Fprintf(out, "== could not drop database %s on %s: %v; drop it yourself with DROP DATABASE %s\n",
					database, pgcluster.Redact(server), derr, database)
				if err == nil {
					err = dbErr("demo: drop database "+database, derr)
				}
				return
			}
			fmt.Fprintf(out, "== dropped database %s\n", database)
		}
	}()

	// The simulator: one instance restarts for 2 s early on, 3% of numbers time out twice,
	// 2% of answers are 5xx, and every edition and error body form is spoken. Like Green API
	// it serves two pools of instances, each on a host of its own that answers 403 to the
	// other's: pool 1101 on the default host (greenapi.api_url) and, from the second instance
	// on, every other instance in pool 7103 with its own api_url.
	simCfg := simulator.Config{Edition: simulator.EditionMixed, ErrorBody: simulator.ErrorBodyMixed, Seed: 7,
		ServerErrorRate: 0.02, TimeoutRate: 0.03, TimeoutTimes: 2,
		LatencyMedian: 20 * time.Millisecond, LatencyP99: 300 * time.Millisecond}
	cfg := defaultConfig()
	for i := range *instances {
		pool, label := "", demoPools[0]
		if i%2 == 1 {
			pool, label = demoPools[1], demoPools[1]
		}
		id := fmt.Sprintf("%s0000%02d", label, i+1)
		token := fmt.Sprintf("demo-token-%d", i+1)
		in := simulator.Instance{ID: id, Token: token, RPS: *rps, Burst: max(2, int(*rps/20)), Pool: pool}
		if i == 0 {
			in.StartingAfter, in.StartingFor = 500*time.Millisecond, 2*time.Second
		}
		simCfg.Instances = append(simCfg.Instances, in)
		r := *rps
		cfg.GreenAPI.Instances = append(cfg.GreenAPI.Instances, InstanceConfig{ID: id, Token: token, RPS: &r})
	}
	sim, err := simulator.New(simCfg)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	var hosts []simHost
	for _, p := range sim.Pools() {
		hosts = append(hosts, simHost{pool: p, addr: "127.0.0.1:0"})
	}
	urlc := make(chan map[string]string, 1)
	simDone := make(chan error, 1)
	go func() { simDone <- serveSimulator(simCtx, hosts, sim, func(urls map[string]string) { urlc <- urls }) }()
	var urls map[string]string
	select {
	case urls = <-urlc:
	case err := <-simDone:
		return err
	}

	cfg.Database.URL = dbURL
	cfg.GreenAPI.APIURL = urls[""]
	for i, in := range simCfg.Instances {
		if in.Pool != "" {
			cfg.GreenAPI.Instances[i].APIURL = urls[in.Pool]
		}
	}
	cfg.Retry.Base = Duration{200 * time.Millisecond}
	if err := cfg.validate(true); err != nil {
		return err
	}
	a.cfg = cfg

	pool, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := store.New(pool, store.Config{Table: cfg.Database.Table, BudgetSchema: cfg.Database.BudgetSchema, Source: cfg.source()})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== enrich demo: database %s, simulator with %d instances at %g rps\n", database, *instances, *rps)
	for _, h := range hosts {
		fmt.Fprintf(out, "   pool %s at %s: %s\n", poolLabel(h.pool), urls[h.pool], strings.Join(poolIDs(simCfg, h.pool), ", "))
	}
	if _, err := store.MigrateWith(ctx, pool, cfg.Database.Table, cfg.migrateOptions()); err != nil {
		return dbErr("migrate", err)
	}
	fmt.Fprintf(out, "== enrich migrate: table %s created\n", st.Table())
	rep, err := enqueue(ctx, st, strings.NewReader(demoInput(*rows)), "demo-input", enqueueOptions{Format: formatLines}, &rejectLog{w: out, name: "demo-input"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== enrich enqueue: inserted %d, duplicates %d, rejected %d\n", rep.Inserted, rep.Duplicates, rep.Rejected)

	fmt.Fprintf(out, "== enrich run\n")
	sum, err := a.runOnce(ctx, st)
	if err != nil {
		return err
	}
	printSummary(out, sum)
	fmt.Fprintf(out, "== enrich status\n")
	if err := printStatus(ctx, out, st, false); err != nil {
		return err
	}
	checked, wrong, err := verifyAgainstTruth(ctx, pool, st.Table(), sim)
	if err != nil {
		return dbErr("demo: verify", err)
	}
	ex, err := existenceCounts(ctx, pool, st.Table())
	if err != nil {
		return dbErr("demo: count existence", err)
	}
	stats := sim.Stats()
	fmt.Fprintf(out, "== verified %d finished rows against the simulator's truth: %d wrong; simulator answered %d requests, %d of them 429\n",
		checked, len(wrong), stats.Requests, tooMany(stats))
	for _, h := range hosts {
		answered, wrongHost := 0, 0
		for _, in := range simCfg.Instances {
			if in.Pool == h.pool {
				answered += stats.Instances[in.ID].Methods["getAvatar"].Accepted
				wrongHost += stats.Instances[in.ID].WrongHost
			}
		}
		fmt.Fprintf(out, "   pool %s: %d getAvatar calls answered, %d calls on a wrong host\n", poolLabel(h.pool), answered, wrongHost)
	}
	fmt.Fprintf(out, "== existence: %d of %d done personal rows have exists_whatsapp, by source:", ex.Known, ex.Personal)
	for _, k := range sortedKeys(ex.BySource) {
		fmt.Fprintf(out, " %s=%d", k, ex.BySource[k])
	}
	fmt.Fprintf(out, "\n")
	for _, w := range wrong[:min(len(wrong), 10)] {
		fmt.Fprintf(out, "   %s\n", w)
	}
	if len(wrong) > 0 {
		return fmt.Errorf("demo: %d rows differ from the simulator's truth", len(wrong))
	}
	stopSim()
	return <-simDone
}

// demoPools label the demo's two pools: the simulator's default pool (greenapi.api_url's host)
// shows as the first, the other is its Instance.Pool and its instances' ids begin with it.
var demoPools = [2]string{"1101", "7103"}

// poolLabel names a simulator pool for people.
func poolLabel(pool string) string {
	if pool == "" {
		return demoPools[0] + " (greenapi.api_url)"
	}
	return pool + " (api_url per instance)"
}

// poolIDs lists the instances of cfg in pool.
func poolIDs(cfg simulator.Config, pool string) []string {
	var ids []string
	for _, in := range cfg.Instances {
		if in.Pool == pool {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// demoInput is what a user might feed `enrich enqueue`: numbers in several formats, group
// chatIds, a duplicate and a few lines that are not numbers at all.
func demoInput(n int) string {
	var b strings.Builder
	b.WriteString("# demo contacts\n")
	for i := range n {
		switch {
		case i%50 == 0:
			fmt.Fprintf(&b, "7900%07d-%d@g.us\n", i, 1581234048+i)
		case i%7 == 0:
			fmt.Fprintf(&b, "+7 (900) %03d-%02d-%02d\n", i/10000, (i/100)%100, i%100)
		default:
			fmt.Fprintf(&b, "7900%07d\n", i)
		}
	}
	b.WriteString("79000000001\n")     // a duplicate
	b.WriteString("12345\n")           // too short
	b.WriteString("call me maybe\n")   // not a number
	b.WriteString("790012345@c.us \n") // a chatId too short: 9 digits
	return b.String()
}

// demoDatabaseName is a fresh database name: the prefix and 12 random hex digits.
func demoDatabaseName() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("demo: name the database: %w", err)
	}
	return demoDatabasePrefix + hex.EncodeToString(b[:]), nil
}

// createDatabase creates the database name on the server at serverURL and returns its URL and
// a function that drops it. It never drops anything it did not create: when CREATE DATABASE
// fails (the name taken, say), there is nothing to drop.
func createDatabase(ctx context.Context, serverURL, name string) (dbURL string, drop func() error, err error) {
	dbURL, err = pgcluster.WithDatabase(serverURL, name)
	if err != nil {
		return "", nil, err
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	id := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+id); err != nil {
		return "", nil, err
	}
	drop = func() error {
		// Also after a signal: the drop must not inherit the cancellation.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
		defer cancel()
		conn, err := pgx.Connect(dctx, serverURL)
		if err != nil {
			return err
		}
		defer conn.Close(dctx)
		_, err = conn.Exec(dctx, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)")
		return err
	}
	return dbURL, drop, nil
}

// verifyAgainstTruth compares every finished row with what the simulator says it answered,
// existence included: a row's exists_whatsapp and exists_source must be what a correct client
// records (simulator.Truth.Existence), unless the row says its existence was left unknown
// (unchecked, badPhoneNumber), which existenceCounts reports.
func verifyAgainstTruth(ctx context.Context, pool *pgxpool.Pool, table string, sim *simulator.Simulator) (int, []string, error) {
	rows, err := pool.Query(ctx, `SELECT coalesce(chat_id, phone_number), status, exists_whatsapp, avatar_available,
		url_avatar, reason, exists_source FROM `+table+` WHERE status <> 'pending'`)
	if err != nil {
		return 0, nil, err
	}
	var (
		target, status      string
		exists, avail       *bool
		urlAvatar, rsn, src *string
		checked             int
		wrong               []string
	)
	_, err = pgx.ForEachRow(rows, []any{&target, &status, &exists, &avail, &urlAvatar, &rsn, &src}, func() error {
		checked++
		if msg := mismatch(sim.Truth(target), strings.HasSuffix(target, "@g.us"), status, exists, avail, urlAvatar, rsn, src); msg != "" {
			wrong = append(wrong, target+": "+msg)
		}
		return nil
	})
	return checked, wrong, err
}

// mismatch says how a finished row differs from the truth, or "" when it does not.
func mismatch(tr simulator.Truth, group bool, status string, exists, avail *bool, urlAvatar, reason, source *string) string {
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	if tr.BadRequest {
		if status != store.StatusFailed || str(reason) != greenapi.ReasonBadRequestData {
			return fmt.Sprintf("want failed/bad request data, got %s/%s", status, str(reason))
		}
		return ""
	}
	want := tr.Avatar()
	if status != store.StatusDone || !sameBool(avail, want.Available) || str(urlAvatar) != want.URLAvatar {
		return fmt.Sprintf("want done available=%v url=%q, got %s available=%v url=%q reason=%q",
			fmtBool(want.Available), want.URLAvatar, status, fmtBool(avail), str(urlAvatar), str(reason))
	}
	wantExists, wantSource := tr.Existence(group)
	got := ""
	if source != nil {
		got = *source
	}
	switch {
	case (got == enrich.SourceUnchecked || got == enrich.SourceBadPhoneNumber) && exists == nil && !group:
		// Left unknown, and said so.
	case !sameBool(exists, wantExists) || got != wantSource:
		return fmt.Sprintf("want exists=%v from %q, got exists=%v from %q", fmtBool(wantExists), wantSource, fmtBool(exists), got)
	}
	return ""
}

// existence is how the done personal rows of a table stand on existence.
type existence struct {
	// Personal is done rows that are not groups; Known is those of them whose exists_whatsapp
	// is set.
	Personal, Known int64
	// BySource counts Personal by exists_source ("" for NULL).
	BySource map[string]int64
}

// existenceCounts counts the done personal rows of table by whether their existence is known
// and where it came from.
func existenceCounts(ctx context.Context, pool *pgxpool.Pool, table string) (existence, error) {
	e := existence{BySource: map[string]int64{}}
	rows, err := pool.Query(ctx, `SELECT coalesce(exists_source, ''), exists_whatsapp IS NOT NULL, count(*) FROM `+table+`
		WHERE status = 'done' AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us') GROUP BY 1, 2`)
	if err != nil {
		return e, err
	}
	var src string
	var known bool
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&src, &known, &n}, func() error {
		e.Personal += n
		e.BySource[src] += n
		if known {
			e.Known += n
		}
		return nil
	})
	return e, err
}

func sameBool(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func fmtBool(b *bool) string {
	if b == nil {
		return "NULL"
	}
	return fmt.Sprint(*b)
}

func tooMany(st simulator.Stats) int {
	n := 0
	for _, in := range st.Instances {
		n += in.TooMany
	}
	return n
}

// printSummary writes a run's summary for people.
func printSummary(w io.Writer, s enrich.Summary) {
	fmt.Fprintf(w, "   done %d, failed %d, rescheduled %d, released %d in %s (%.0f rows/s); stop: %s\n",
		s.Done, s.Failed, s.Rescheduled, s.Released, s.Elapsed.Round(time.Millisecond), s.RowsPerSecond(), s.Stop)
	fmt.Fprintf(w, "   API calls:")
	for _, k := range sortedKeys(s.Calls) {
		fmt.Fprintf(w, " %s=%d", k, s.Calls[k])
	}
	fmt.Fprintf(w, "\n")
	fmt.Fprintf(w, "   existence:")
	for _, k := range sortedKeys(s.Existence) {
		fmt.Fprintf(w, " %s=%d", k, s.Existence[k])
	}
	fmt.Fprintf(w, " (unknown %d)\n", s.ExistsUnknown)
}
