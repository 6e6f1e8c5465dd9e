package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/rs/zerolog"
)

// poolInstance is a [[greenapi.instance]] of pool 7103 with the api_url line given.
func poolInstance(apiURL string) string {
	s := "[[greenapi.instance]]\nid = \"7103000001\"\ntoken = \"t0ken-7103\"\n"
	if apiURL != "" {
		s += fmt.Sprintf("api_url = %q\n", apiURL)
	}
	return s
}

// TestInstanceAPIURL: each instance's api_url is its own, greenapi.api_url (file, then
// GREENAPI_API_URL, then --api-url) only the default of instances that name none; a trailing
// slash is kept as given (the client ignores it).
func TestInstanceAPIURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		file       string
		env        map[string]string
		args       []string
		want0      string // instance 0's api_url after validation
		want1      string // instance 1's
		wantGlobal string // greenapi.api_url
	}{
		{name: "own and the default's", file: validInstance + poolInstance("https://7103.api.greenapi.com/"),
			want0: APIURLDefault, want1: "https://7103.api.greenapi.com/", wantGlobal: APIURLDefault},
		{name: "file default", file: "[greenapi]\napi_url = \"https://api.p03.green-api.com/\"\n" + validInstance + poolInstance("https://7103.api.greenapi.com"),
			want0: "https://api.p03.green-api.com/", want1: "https://7103.api.greenapi.com", wantGlobal: "https://api.p03.green-api.com/"},
		{name: "GREENAPI_API_URL is the default, not an override", file: validInstance + poolInstance("https://7103.api.greenapi.com"),
			env:   map[string]string{"GREENAPI_API_URL": "https://env.example"},
			want0: "https://env.example", want1: "https://7103.api.greenapi.com", wantGlobal: "https://env.example"},
		{name: "--api-url is the default, not an override", file: "[greenapi]\napi_url = \"https://file.example\"\n" + validInstance + poolInstance("https://7103.api.greenapi.com"),
			env: map[string]string{"GREENAPI_API_URL": "https://env.example"}, args: []string{"--api-url", "https://flag.example"},
			want0: "https://flag.example", want1: "https://7103.api.greenapi.com", wantGlobal: "https://flag.example"},
		{name: "no instance names one", file: validInstance + poolInstance(""),
			env:   map[string]string{"GREENAPI_API_URL": "https://env.example/"},
			want0: "https://env.example/", want1: "https://env.example/", wantGlobal: "https://env.example/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"DATABASE_URL": closedURL}
			for k, v := range tt.env {
				env[k] = v
			}
			args := append([]string{"--config", writeFile(t, t.TempDir(), "cfg.toml", tt.file)}, tt.args...)
			var out, errw bytes.Buffer
			a := &app{io: stdio{in: strings.NewReader(""), out: &out, err: &errw, getenv: envOf(env)}, log: zerolog.Nop()}
			if err := cmdRun(context.Background(), a, args); !errors.Is(err, enrich.ErrDatabase) {
				t.Fatalf("error %v, want a database error (the configuration rejected?)", err)
			}
			in := a.cfg.GreenAPI.Instances
			if len(in) != 2 || in[0].APIURL != tt.want0 || in[1].APIURL != tt.want1 || a.cfg.GreenAPI.APIURL != tt.wantGlobal {
				t.Errorf("api_urls:\n%s\nwant instance 0 %q, instance 1 %q, greenapi.api_url %q", dump(t, a.cfg), tt.want0, tt.want1, tt.wantGlobal)
			}
		})
	}
}

// TestInstanceAPIURLRefused: a bad api_url of an instance is refused before anything is
// touched, naming the instance's key, without either token; a bad default is refused even when
// every instance names its own host.
func TestInstanceAPIURLRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  map[string]string
		want []string
	}{
		{name: "no host", file: validInstance + poolInstance("https://"),
			want: []string{"greenapi.instance[1] (id 7103000001).api_url", `"https://"`, "has no host"}},
		{name: "no scheme", file: validInstance + poolInstance("7103.api.greenapi.com"),
			want: []string{"greenapi.instance[1] (id 7103000001).api_url", "https://"}},
		{name: "ftp", file: poolInstance("ftp://7103.api.greenapi.com"),
			want: []string{"greenapi.instance[0] (id 7103000001).api_url", "https://"}},
		{name: "the method path", file: poolInstance("https://7103.api.greenapi.com/waInstance7103000001"),
			want: []string{"greenapi.instance[0] (id 7103000001).api_url", "waInstance"}},
		{name: "a token pasted into it", file: validInstance + poolInstance("https://7103.api.greenapi.com/?t0ken-7103&t0ken"),
			want: []string{"greenapi.instance[1] (id 7103000001).api_url", "query"}},
		{name: "bad default, every instance with its own", file: "[greenapi]\napi_url = \"https://\"\n" + poolInstance("https://7103.api.greenapi.com"),
			want: []string{"greenapi.api_url", "has no host"}},
		{name: "bad GREENAPI_API_URL, every instance with its own", file: poolInstance("https://7103.api.greenapi.com"),
			env: map[string]string{"GREENAPI_API_URL": "api.green-api.com"}, want: []string{"greenapi.api_url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"DATABASE_URL": closedURL}
			for k, v := range tt.env {
				env[k] = v
			}
			_, stderr, err := runCLI(t, env, "run", "--config", writeFile(t, t.TempDir(), "cfg.toml", tt.file))
			var ce *configError
			if !errors.As(err, &ce) || exitCode(err, nil) != exitConfig {
				t.Fatalf("error %v (%T), want a configuration error (exit code 1)", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, tok := range []string{"t0ken-7103", "t0ken"} {
				if strings.Contains(err.Error()+stderr, tok) {
					t.Errorf("token %q in the error or the log: %v\n%s", tok, err, stderr)
				}
			}
		})
	}
}

// TestPlainHTTPWarnsPerInstance: the http:// warning names each instance whose host (its own
// or the default) is http://, and only those.
func TestPlainHTTPWarnsPerInstance(t *testing.T) {
	t.Parallel()
	file := "[greenapi]\napi_url = \"https://api.green-api.com\"\n" + validInstance + poolInstance("http://127.0.0.1:7781/")
	_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "run", "--log-format", "json",
		"--config", writeFile(t, t.TempDir(), "cfg.toml", file))
	if !errors.Is(err, enrich.ErrDatabase) {
		t.Fatalf("error %v, want a database error (the configuration rejected?)", err)
	}
	var warned []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "unencrypted") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], `"instance":"7103000001"`) || !strings.Contains(warned[0], `"api_url":"http://127.0.0.1:7781/"`) {
		t.Errorf("want one warning, for instance 7103000001 and its api_url; got %q", warned)
	}
	if strings.Contains(stderr, "t0ken") {
		t.Errorf("a token is in the log:\n%s", stderr)
	}
}

// poolsRun is a database with rows and a simulator serving two pools on two hosts: pool ""
// (greenapi.api_url's) and pool 7103 (its instances' own api_url).
type poolsRun struct {
	dbURL, config string
	sim           *simulator.Simulator
	hosts         map[string]string // pool → URL
}

// setupPools seeds rows numbers, starts one server per pool of insts, and writes a config
// whose greenapi.api_url is pool ""'s host; apiURL gives each instance's own api_url line
// from the hosts ("" for none).
func setupPools(t *testing.T, rows int, insts []simulator.Instance, apiURL func(in simulator.Instance, hosts map[string]string) string) poolsRun {
	t.Helper()
	b := seedProc(t, rows, "7902", insts[0], simulator.Config{})
	sim, err := simulator.New(simulator.Config{Instances: insts, Edition: simulator.EditionMixed, Seed: 14})
	if err != nil {
		t.Fatal(err)
	}
	p := poolsRun{dbURL: b.dbURL, sim: sim, hosts: map[string]string{}}
	for _, pool := range append([]string{""}, sim.Pools()...) {
		if _, ok := p.hosts[pool]; ok {
			continue
		}
		srv := httptest.NewServer(sim.Pool(pool))
		t.Cleanup(srv.Close)
		p.hosts[pool] = srv.URL
	}
	var c strings.Builder
	fmt.Fprintf(&c, "[greenapi]\napi_url = %q\n\n", p.hosts[""])
	for _, in := range insts {
		fmt.Fprintf(&c, "[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = %g\n", in.ID, in.Token, in.RPS)
		if u := apiURL(in, p.hosts); u != "" {
			fmt.Fprintf(&c, "api_url = %q\n", u)
		}
		c.WriteString("\n")
	}
	p.config = filepath.Join(t.TempDir(), "enrich.toml")
	if err := os.WriteFile(p.config, []byte(c.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs `enrich run` as a subprocess and returns its exit code and output.
func (p poolsRun) run(t *testing.T) (int, string) {
	t.Helper()
	cmd := exec.Command(enrichBinary(t), "run", "--log-format", "json", "--summary", "log")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+p.dbURL, "ENRICH_CONFIG="+p.config)
	out := &output{}
	cmd.Stdout, cmd.Stderr = out, out
	return exitStatus(cmd.Run()), out.String()
}

// ownHost puts the instances of a named pool on their pool's host, with a trailing slash;
// the others take greenapi.api_url.
func ownHost(in simulator.Instance, hosts map[string]string) string {
	if in.Pool == "" {
		return ""
	}
	return hosts[in.Pool] + "/"
}

// TestTwoPoolsOneRun: instances from two pools, each on its own host (greenapi.api_url for one
// pool, the instances' own api_url for the other), share one run: every instance is used, no
// call goes to the wrong host, and every row is answered as the simulator's truth says.
func TestTwoPoolsOneRun(t *testing.T) {
	t.Parallel()
	const rows = 400
	insts := []simulator.Instance{
		{ID: "1101000001", Token: "tok-1101-1", RPS: 100},
		{ID: "1101000002", Token: "tok-1101-2", RPS: 100},
		{ID: "7103000001", Token: "tok-7103-1", RPS: 100, Pool: "7103"},
		{ID: "7103000002", Token: "tok-7103-2", RPS: 100, Pool: "7103"},
	}
	p := setupPools(t, rows, insts, ownHost)
	code, out := p.run(t)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", code, out)
	}
	pool := pgtest.Connect(t, p.dbURL)
	checked, wrong, err := verifyAgainstTruth(context.Background(), pool, "contacts", p.sim)
	if err != nil {
		t.Fatal(err)
	}
	if checked != rows || len(wrong) > 0 {
		t.Fatalf("%d rows finished of %d, %d differ from the truth: %q", checked, rows, len(wrong), wrong[:min(len(wrong), 5)])
	}
	st := p.sim.Stats()
	perPool := map[string]int{}
	for _, in := range insts {
		is := st.Instances[in.ID]
		answered := is.Methods["getAvatar"].Accepted
		if answered == 0 || is.WrongHost != 0 || is.Unauthorized != 0 {
			t.Errorf("instance %s (pool %q): %d getAvatar answered, %d calls on the wrong host, %d 401s; want some, 0, 0",
				in.ID, in.Pool, answered, is.WrongHost, is.Unauthorized)
		}
		perPool[in.Pool] += answered
	}
	if perPool[""] == 0 || perPool["7103"] == 0 || perPool[""]+perPool["7103"] < rows {
		t.Errorf("getAvatar answered per pool %v, want both pools used, %d together at least", perPool, rows)
	}
	for _, in := range insts {
		if strings.Contains(out, in.Token) {
			t.Errorf("the token of %s is in the output", in.ID)
		}
	}
	t.Logf("%d rows, all answered as the truth says; getAvatar answered on pool 1101's host (greenapi.api_url) %d, "+
		"on pool 7103's host (api_url per instance) %d; 0 calls on a wrong host", rows, perPool[""], perPool["7103"])
}

// TestWrongPoolHost: an instance configured with another pool's host is answered 403 at the
// check before the run; the error names the host it was called at and api_url under the
// instance, and says to copy the apiUrl from the console. Alone, the run exits 2 with every row
// untouched; beside an instance on the right host, that one answers every row.
func TestWrongPoolHost(t *testing.T) {
	t.Parallel()
	wrong := simulator.Instance{ID: "7103000001", Token: "tok-7103-1", RPS: 100, Pool: "7103"}
	right := simulator.Instance{ID: "1101000001", Token: "tok-1101-1", RPS: 100}
	onDefault := func(simulator.Instance, map[string]string) string { return "" }
	const rows = 50
	for _, tt := range []struct {
		name     string
		insts    []simulator.Instance
		wantCode int
		wantDone int
	}{
		{name: "alone", insts: []simulator.Instance{wrong}, wantCode: 2, wantDone: 0},
		{name: "beside an instance on the right host", insts: []simulator.Instance{right, wrong}, wantCode: 0, wantDone: rows},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := setupPools(t, rows, tt.insts, onDefault)
			code, out := p.run(t)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			var msg string
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "HTTP 403") && strings.Contains(line, wrong.ID) {
					msg = line
					break
				}
			}
			for _, w := range []string{"instance " + wrong.ID + " cannot be used", "getStateInstance",
				"the instance may live on another host (it was called at " + p.hosts[""] + ")",
				"copy the instance's apiUrl from the Green API console into api_url under its [[greenapi.instance]]"} {
				if !strings.Contains(msg, w) {
					t.Errorf("the 403 line does not say %q:\n%s", w, msg)
				}
			}
			if strings.Contains(out, wrong.Token) || strings.Contains(out, right.Token) {
				t.Errorf("a token is in the output:\n%s", out)
			}
			pool := pgtest.Connect(t, p.dbURL)
			var done, untouched int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status <> 'pending'),
				count(*) FILTER (WHERE status = 'pending' AND attempts = 0 AND locked_by IS NULL) FROM contacts`).Scan(&done, &untouched); err != nil {
				t.Fatal(err)
			}
			if done != tt.wantDone || done+untouched != rows {
				t.Errorf("%d rows finished and %d untouched, want %d and %d", done, untouched, tt.wantDone, rows-tt.wantDone)
			}
			is := p.sim.Stats().Instances[wrong.ID]
			if is.WrongHost != 1 || is.Requests != 0 {
				t.Errorf("instance %s: %d calls on the wrong host, %d on its own; want the one pre-flight call, 0", wrong.ID, is.WrongHost, is.Requests)
			}
			t.Logf("%s: exit %d, %d rows finished, %d untouched; the 403 line: %s", tt.name, code, done, untouched, msg)
		})
	}
}

// TestSimulatePools: `enrich simulate` serves each pool on its own host (--pool NAME=ADDR, or a
// free port), logs every host's api_url with its instances, and each host answers 403 to the
// other pool's instances.
func TestSimulatePools(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errw := &output{}, &output{}
	logged := errw.seen("pool serving")
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"simulate", "--addr", "127.0.0.1:0", "--log-format", "json",
			"--instance", "1101000001:tok-1101", "--instance", "7103000001:tok-7103@7103", "--instance", "7103000002:tok-7103b@7103",
			"--pool", "7103=127.0.0.1:0"}, stdio{in: strings.NewReader(""), out: out, err: errw, getenv: envOf(nil)})
	}()
	select {
	case <-logged:
	case err := <-done:
		t.Fatalf("simulate ended: %v\n%s", err, errw)
	}
	hosts := map[string]string{}
	for _, line := range strings.Split(errw.String(), "\n") {
		var l struct {
			Pool      string   `json:"pool"`
			APIURL    string   `json:"api_url"`
			Instances []string `json:"instances"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.APIURL == "" {
			continue
		}
		hosts[l.Pool] = l.APIURL
		want := map[string]string{"": "1101000001", "7103": "7103000001,7103000002"}[l.Pool]
		if got := strings.Join(l.Instances, ","); got != want {
			t.Errorf("pool %q logged with instances %q, want %q", l.Pool, got, want)
		}
	}
	if len(hosts) != 2 || hosts[""] == hosts["7103"] {
		t.Fatalf("want two hosts logged, got %v:\n%s", hosts, errw)
	}
	for _, tt := range []struct {
		id, token, pool, host string
		want403               bool
	}{
		{"1101000001", "tok-1101", "", hosts[""], false},
		{"7103000001", "tok-7103", "7103", hosts["7103"], false},
		{"7103000001", "tok-7103", "7103", hosts[""], true},
		{"1101000001", "tok-1101", "", hosts["7103"], true},
	} {
		c, err := greenapi.New(greenapi.Config{APIURL: tt.host, IDInstance: tt.id, Token: tt.token})
		if err != nil {
			t.Fatal(err)
		}
		state, err := c.GetStateInstance(ctx)
		var e *greenapi.Error
		switch {
		case tt.want403 && (!errors.As(err, &e) || e.Status != 403):
			t.Errorf("instance %s (pool %q) at %s: %q, %v; want a 403", tt.id, tt.pool, tt.host, state, err)
		case !tt.want403 && (err != nil || state != simulator.StateAuthorized):
			t.Errorf("instance %s (pool %q) at %s: %q, %v; want authorized", tt.id, tt.pool, tt.host, state, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("simulate: %v", err)
	}
}

// TestSimulatePoolFlagsRefused: malformed --pool and --instance values, and a --pool no
// instance is in, are usage errors.
func TestSimulatePoolFlagsRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool", "7103"}, "write it as NAME=ADDR"},
		{[]string{"--pool", "=127.0.0.1:0"}, "write it as NAME=ADDR"},
		{[]string{"--instance", "7103000001:t@", "--pool", "7103=127.0.0.1:0"}, "ID:TOKEN@POOL"},
		{[]string{"--instance", "7103000001:t@7103", "--pool", "9903=127.0.0.1:0"}, "no --instance is in pool 9903"},
		{[]string{"--instance", "7103000001:t@7103", "--pool", "7103=127.0.0.1:0", "--pool", "7103=127.0.0.1:0"}, "pool 7103 is given twice"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			_, _, err := runCLI(t, nil, append([]string{"simulate", "--addr", "127.0.0.1:0"}, tt.args...)...)
			var ce *configError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want a configuration error saying %q", err, tt.want)
			}
		})
	}
	_, stderr, err := runCLI(t, nil, "simulate", "--help")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "--pool") || !strings.Contains(stderr, "ID:TOKEN@POOL") ||
		!strings.Contains(stderr, "answers 403") {
		t.Errorf("enrich simulate --help does not document pools (%v):\n%s", err, stderr)
	}
}
