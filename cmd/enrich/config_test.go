package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pelletier/go-toml/v2"
	"github.com/rs/zerolog"
)

// examplePath is the documented example configuration at the repository root.
const examplePath = "../../config.example.toml"

// closedURL points at a port nothing listens on: a command that gets past its configuration
// fails there with exit code 3, so a test expecting exit code 1 notices when validation let a
// bad value through.
const closedURL = "postgres://enrich@127.0.0.1:1/enrich?sslmode=disable&connect_timeout=5"

// validInstance is a [[greenapi.instance]] that passes validation.
const validInstance = "[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"t0ken\"\n"

// envOf is a getenv reading only m: tests never see the real environment.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCLI runs the whole CLI in-process, with an empty stdin, and returns what it printed.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runCLIInput(t, "", env, args...)
}

// runCLIInput is runCLI with stdin reading input.
func runCLIInput(t *testing.T, input string, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errw bytes.Buffer
	err = run(context.Background(), args, stdio{in: strings.NewReader(input), out: &out, err: &errw, getenv: envOf(env)})
	return out.String(), errw.String(), err
}

// dump renders a Config readably for failure messages (pointers dereferenced).
func dump(t *testing.T, c Config) string {
	t.Helper()
	b, err := toml.Marshal(c)
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	return string(b)
}

// TestConfigExample proves config.example.toml documents the true defaults: parsed, it is
// exactly defaultConfig plus its one instance.
func TestConfigExample(t *testing.T) {
	t.Parallel()
	got, err := loadConfig(examplePath, envOf(nil))
	if err != nil {
		t.Fatalf("load %s: %v", examplePath, err)
	}
	want := defaultConfig()
	rps := RPSDefault
	want.GreenAPI.Instances = []InstanceConfig{{ID: "1101000001", TokenFile: "/run/secrets/greenapi-token", RPS: &rps}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s is not the defaults plus its instance:\n got:\n%s\nwant:\n%s", examplePath, dump(t, got), dump(t, want))
	}

	// Its values are valid too, once the token file exists.
	got.GreenAPI.Instances[0].TokenFile = writeFile(t, t.TempDir(), "token", "t0ken\n")
	if err := got.validate(true); err != nil {
		t.Fatalf("the example does not validate: %v", err)
	}
	if tok := got.GreenAPI.Instances[0].Token; tok != "t0ken" {
		t.Errorf("token read from token_file = %q, want %q (trimmed)", tok, "t0ken")
	}
}

// TestConfigExampleDocumentsEveryKey walks Config's toml tags: every key must be in
// config.example.toml (set, or commented out like "# token = ..."), and the example must not
// document a key Config does not have.
func TestConfigExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	want := map[string]bool{}
	structKeys(t, reflect.TypeFor[Config](), "", want)
	if len(want) < 20 {
		t.Fatalf("found only %d keys in Config: %v", len(want), want)
	}

	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^([A-Za-z0-9_]+)\s*=`)
	documented := map[string]bool{}
	table := ""
	for _, line := range strings.Split(string(data), "\n") {
		s := strings.TrimSpace(line)
		if strings.HasPrefix(s, "[") {
			table = strings.Trim(s, "[] ") + "."
			continue
		}
		s = strings.TrimSpace(strings.TrimPrefix(s, "#"))
		if m := keyLine.FindStringSubmatch(s); m != nil {
			documented[table+m[1]] = true
		}
	}
	for _, k := range sortedKeys(want) {
		if !documented[k] {
			t.Errorf("key %s is not documented in %s", k, examplePath)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !want[k] {
			t.Errorf("%s documents %s, which Config does not have", examplePath, k)
		}
	}
}

// structKeys adds the dotted TOML keys of the struct type typ to keys. Types that decode
// from text (Duration) are leaves; slices of structs are arrays of tables.
func structKeys(t *testing.T, typ reflect.Type, prefix string, keys map[string]bool) {
	t.Helper()
	textType := reflect.TypeFor[encoding.TextUnmarshaler]()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue // not decoded from the file
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			t.Fatalf("field %s.%s has no toml tag: every key must be named", typ.Name(), f.Name)
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case reflect.PointerTo(ft).Implements(textType):
			keys[prefix+name] = true
		case ft.Kind() == reflect.Struct:
			structKeys(t, ft, prefix+name+".", keys)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			structKeys(t, ft.Elem(), prefix+name+".", keys)
		default:
			keys[prefix+name] = true
		}
	}
}

// TestConfigUnknownKey: DisallowUnknownFields reports every unknown key with file:line:col.
func TestConfigUnknownKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file string
		want       []string // each "path:LINE:" is prefixed by the file's path
	}{
		{"in a table", "[run]\nworkerz = 3\n", []string{`:2:1: unknown key "run.workerz"`}},
		{"at the top", "# comment\ntitle = \"x\"\n", []string{`:2:1: unknown key "title"`}},
		{"a misspelt table", "[databse]\nurl = \"x\"\n", []string{`:1:`, "databse"}},
		{"in an instance", validInstance + "rpz = 5\n", []string{`:4:1: unknown key "greenapi.instance.rpz"`}},
		{"two of them", "[run]\nworkerz = 3\n\n[retry]\nmaximum = \"1m\"\n", []string{`:2:1: unknown key "run.workerz"`, `:5:1: unknown key "retry.maximum"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "cfg.toml", tt.file)
			_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "status", "--config", path)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *configError", err, err)
			}
			if code := exitCode(err, nil); code != exitConfig {
				t.Errorf("exit code %d, want %d", code, exitConfig)
			}
			for _, w := range tt.want {
				if w[0] == ':' {
					w = path + w
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(stderr, "enrich failed") {
				t.Errorf("the error was not logged once at the top; stderr:\n%s", stderr)
			}
		})
	}
}

// TestConfigBadValues: every bad value stops the command with exit code 1 and a message
// naming the key (and the line when go-toml knows it), before the database is touched.
func TestConfigBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string            // "" means no --config; "{dir}" is replaced by a directory
		env  map[string]string // added to DATABASE_URL=closedURL
		args []string          // after the command and --config
		cmd  string            // default "run"
		want []string          // substrings of the error; ":N:" is prefixed by the file's path
	}{
		{name: "negative rps", file: validInstance + "rps = -1\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is -1"}},
		{name: "zero rps", file: validInstance + "rps = 0\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is 0"}},
		{name: "rps nan", file: validInstance + "rps = nan\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is NaN", "finite"}},
		{name: "rps +nan", file: validInstance + "rps = +nan\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is NaN"}},
		{name: "rps inf", file: validInstance + "rps = inf\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is +Inf", "finite"}},
		{name: "rps -inf", file: validInstance + "rps = -inf\n",
			want: []string{"greenapi.instance[0] (id 1101000001).rps is -Inf"}},
		{name: "second instance rps inf", file: validInstance + "[[greenapi.instance]]\nid = \"1101000002\"\ntoken = \"t\"\nrps = inf\n",
			want: []string{"greenapi.instance[1] (id 1101000002).rps is +Inf"}},
		{name: "rps not a number", file: validInstance + "rps = \"fast\"\n",
			want: []string{":4:", "greenapi.instance.rps"}},
		{name: "unparsable duration", file: "[run]\nlease = \"10x\"\n",
			want: []string{":2:", "run.lease", `"10x" is not a duration`}},
		{name: "duration written as a number", file: "[greenapi]\ntimeout = 60\n",
			want: []string{"greenapi.timeout", `"60" is not a duration`}},
		{name: "duration written as a boolean", cmd: "status", file: "[retry]\nbase = true\n",
			want: []string{"retry.base", "is not a duration"}},
		{name: "negative duration", file: validInstance + "[run]\nlease = \"-1m\"\n",
			want: []string{"run.lease must be greater than 0"}},
		{name: "integer as a string", cmd: "status", file: "[run]\nworkers = \"many\"\n",
			want: []string{":2:", "run.workers"}},
		{name: "integer too large", cmd: "status", file: "[run]\nlimit = 99999999999999999999\n",
			want: []string{":2:", "run.limit"}},
		{name: "syntax error", cmd: "status", file: "[run]\nworkers = \n",
			want: []string{":2:"}},
		{name: "unknown request_by", file: validInstance + "[greenapi]\nrequest_by = \"phone\"\n",
			want: []string{"greenapi.request_by", `"phone"`}},
		{name: "api_url without scheme", file: "[greenapi]\napi_url = \"api.green-api.com\"\n" + validInstance,
			want: []string{"greenapi.api_url"}},
		{name: "api_url https:// alone", file: "[greenapi]\napi_url = \"https://\"\n" + validInstance,
			want: []string{"greenapi.api_url", `"https://"`, "has no host"}},
		{name: "api_url http:// alone", file: "[greenapi]\napi_url = \"http://\"\n" + validInstance,
			want: []string{"greenapi.api_url", "has no host"}},
		{name: "api_url ftp", file: "[greenapi]\napi_url = \"ftp://api.green-api.com\"\n" + validInstance,
			want: []string{"greenapi.api_url", "https://"}},
		{name: "api_url with a query", file: "[greenapi]\napi_url = \"https://api.green-api.com/?x=1\"\n" + validInstance,
			want: []string{"greenapi.api_url", "query"}},
		{name: "api_url with the method path", file: "[greenapi]\napi_url = \"https://api.green-api.com/waInstance1101000001\"\n" + validInstance,
			want: []string{"greenapi.api_url", "waInstance"}},
		{name: "GREENAPI_API_URL https://", file: validInstance, env: map[string]string{"GREENAPI_API_URL": "https://"},
			want: []string{"greenapi.api_url", "has no host"}},
		{name: "flag api-url https://", file: validInstance, args: []string{"--api-url", "https://"},
			want: []string{"greenapi.api_url", "has no host"}},
		{name: "token not fit for a URL path", file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"a/b\"\n",
			want: []string{"greenapi.instance[0] (id 1101000001)", "Token contains a character"}},
		{name: "instance id too long", file: "[[greenapi.instance]]\nid = \"123456789012345678901\"\ntoken = \"t0ken\"\n",
			want: []string{"greenapi.instance[0] (id 123456789012345678901)", "IDInstance"}},
		{name: "run extra", file: validInstance, args: []string{"extra"},
			want: []string{`unexpected argument "extra"`, "enrich run takes no arguments"}},
		{name: "run extra before a flag", file: validInstance, args: []string{"extra", "--workers", "2"},
			want: []string{`unexpected argument "extra"`}},
		{name: "migrate extra", cmd: "migrate", args: []string{"contacts"},
			want: []string{`unexpected argument "contacts"`, "enrich migrate takes no arguments"}},
		{name: "status extra", cmd: "status", args: []string{"now"},
			want: []string{`unexpected argument "now"`, "enrich status takes no arguments"}},
		{name: "simulate extra", cmd: "simulate", args: []string{"fast"},
			want: []string{`unexpected argument "fast"`, "enrich simulate takes no arguments"}},
		{name: "enqueue two files", cmd: "enqueue", args: []string{"{dir}/token", "{dir}/blank"},
			want: []string{"enrich enqueue takes one FILE (or - for stdin), got 2 arguments"}},
		{name: "enqueue a missing file", cmd: "enqueue", args: []string{"{dir}/nothing.txt"},
			want: []string{"nothing.txt", "no such file"}},
		{name: "missing token", file: "[[greenapi.instance]]\nid = \"1101000001\"\n",
			want: []string{"greenapi.instance[0] (id 1101000001) has no token"}},
		{name: "token and token_file", file: validInstance + "token_file = '{dir}/token'\n",
			want: []string{"greenapi.instance[0] (id 1101000001) has both token and token_file"}},
		{name: "token_file missing", file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken_file = '{dir}/nothing'\n",
			want: []string{"greenapi.instance[0] (id 1101000001).token_file", "no such file"}},
		{name: "token_file empty", file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken_file = '{dir}/blank'\n",
			want: []string{"greenapi.instance[0] (id 1101000001).token_file", "is empty"}},
		{name: "instance id not digits", file: "[[greenapi.instance]]\nid = \"1101-0001\"\ntoken = \"t\"\n",
			want: []string{"greenapi.instance[0].id is \"1101-0001\""}},
		{name: "instance id missing", file: "[[greenapi.instance]]\ntoken = \"t\"\n",
			want: []string{"greenapi.instance[0].id is \"\""}},
		{name: "instance id a number", file: "[[greenapi.instance]]\nid = 1101000001\ntoken = \"t\"\n",
			want: []string{":2:", "greenapi.instance.id"}},
		{name: "second instance bad", file: validInstance + "[[greenapi.instance]]\nid = \"x\"\ntoken = \"t\"\n",
			want: []string{"greenapi.instance[1].id"}},
		{name: "instance listed twice", file: validInstance + validInstance,
			want: []string{"greenapi.instance[1] (id 1101000001) is listed twice"}},
		{name: "no instance", file: "[run]\nworkers = 2\n",
			want: []string{"no Green API instance"}},
		{name: "retry.max below retry.base", cmd: "status", file: "[retry]\nbase = \"10s\"\nmax = \"1s\"\n",
			want: []string{"retry.max (1s) must not be less than retry.base (10s)"}},
		{name: "negative retry.in_run", cmd: "status", file: "[retry]\nin_run = -1\n",
			want: []string{"retry.in_run must not be negative"}},
		{name: "negative limit", cmd: "status", file: "[run]\nlimit = -1\n",
			want: []string{"run.limit must not be negative"}},
		{name: "negative max_duration", cmd: "status", file: "[run]\nmax_duration = \"-1s\"\n",
			want: []string{"run.max_duration must not be negative"}},
		{name: "budget_schema not an identifier", cmd: "status", file: "[database]\nbudget_schema = \"enrich; drop\"\n",
			want: []string{"database.budget_schema", "not a plain identifier"}},
		{name: "negative stall_timeout", cmd: "status", file: "[run]\nstall_timeout = \"-1s\"\n",
			want: []string{"run.stall_timeout must not be negative"}},
		{name: "negative refresh_after", cmd: "status", file: "[run]\nrefresh_after = \"-1h\"\n",
			want: []string{"run.refresh_after is -1h0m0s: it must not be negative", "never refreshed by age"}},
		{name: "negative refresh_before_expiry", cmd: "status", file: "[run]\nrefresh_before_expiry = \"-1s\"\n",
			want: []string{"run.refresh_before_expiry is -1s: it must be at least 0s and below 168h0m0s"}},
		{name: "refresh_before_expiry a week", file: validInstance + "[run]\nrefresh_before_expiry = \"168h\"\n",
			want: []string{"run.refresh_before_expiry is 168h0m0s", "one to two weeks", "\"24h\""}},
		{name: "refresh_after a number", cmd: "status", file: "[run]\nrefresh_after = 7\n",
			want: []string{"run.refresh_after"}},
		{name: "workers 100000000", file: validInstance + "[run]\nworkers = 100000000\n",
			want: []string{"run.workers is 100000000: it must be at most 1000", "per instance", "concurrent call", "10 requests/s"}},
		{name: "workers 1001, status too", cmd: "status", file: "[run]\nworkers = 1001\n",
			want: []string{"run.workers is 1001: it must be at most 1000"}},
		{name: "flag workers 1001", file: validInstance, args: []string{"--workers", "1001"},
			want: []string{"run.workers is 1001"}},
		{name: "batch_size 5001", file: validInstance + "[run]\nbatch_size = 5001\n",
			want: []string{"run.batch_size is 5001: it must be at most 5000"}},
		{name: "max_attempts 1001", file: validInstance + "[run]\nmax_attempts = 1001\n",
			want: []string{"run.max_attempts is 1001: it must be at most 1000"}},
		{name: "zero workers", cmd: "status", file: "[run]\nworkers = 0\n",
			want: []string{"run.workers must be greater than 0"}},
		{name: "zero batch_size", cmd: "status", file: "[run]\nbatch_size = 0\n",
			want: []string{"run.batch_size must be greater than 0"}},
		{name: "zero timeout", cmd: "status", file: "[greenapi]\ntimeout = \"0s\"\n",
			want: []string{"greenapi.timeout must be greater than 0"}},
		{name: "table with three parts", cmd: "status", file: "[database]\ntable = \"a.b.c\"\n",
			want: []string{"database.table", "a.b.c"}},
		{name: "table not an identifier", file: validInstance + "[database]\ntable = \"contacts; drop table x\"\n",
			want: []string{"database.table", `"contacts; drop table x"`, "not a plain identifier", "letters, digits and underscores"}},
		{name: "table quoted", cmd: "migrate", file: "[database]\ntable = '\"contacts\"'\n",
			want: []string{"database.table", "not a plain identifier"}},
		{name: "table with a space", cmd: "enqueue", file: "[database]\ntable = \"crm.my contacts\"\n",
			want: []string{"database.table", "not a plain identifier"}},
		{name: "flag table injection", cmd: "status", args: []string{"--table", "x;drop table y"},
			want: []string{"database.table", "not a plain identifier"}},
		{name: "empty table", cmd: "migrate", file: "[database]\ntable = \"\"\n",
			want: []string{"database.table"}},
		{name: "empty database url", cmd: "status", file: "[database]\nurl = \"\"\n", env: map[string]string{"DATABASE_URL": ""},
			want: []string{"no database", "DATABASE_URL", "database.url"}},
		{name: "several instances and GREENAPI_ID_INSTANCE",
			file: validInstance + "[[greenapi.instance]]\nid = \"1101000002\"\ntoken = \"t\"\n",
			env:  map[string]string{"GREENAPI_ID_INSTANCE": "1101000003"},
			want: []string{"GREENAPI_ID_INSTANCE", "several [[greenapi.instance]]"}},
		{name: "several instances and GREENAPI_API_TOKEN_INSTANCE",
			file: validInstance + "[[greenapi.instance]]\nid = \"1101000002\"\ntoken = \"t\"\n",
			env:  map[string]string{"GREENAPI_API_TOKEN_INSTANCE": "t2"},
			want: []string{"GREENAPI_API_TOKEN_INSTANCE", "several [[greenapi.instance]]"}},
		{name: "flag zero workers", file: validInstance, args: []string{"--workers", "0"},
			want: []string{"run.workers must be greater than 0"}},
		{name: "flag not a number", file: validInstance, args: []string{"--workers", "many"},
			want: []string{"-workers", "see enrich run --help"}},
		{name: "flag bad duration", file: validInstance, args: []string{"--lease", "10x"},
			want: []string{"-lease", `"10x" is not a duration`}},
		{name: "flag bad request-by", file: validInstance, args: []string{"--request-by", "phone"},
			want: []string{"greenapi.request_by"}},
		{name: "flag bad table", cmd: "status", args: []string{"--table", "a..b"},
			want: []string{"database.table"}},
		{name: "unknown flag", cmd: "status", args: []string{"--wrokers", "3"},
			want: []string{"wrokers"}},
		{name: "bad log level", cmd: "status", args: []string{"--log-level", "loud"},
			want: []string{"--log-level"}},
		{name: "bad log format", cmd: "status", args: []string{"--log-format", "xml"},
			want: []string{"--log-format"}},
		{name: "config file missing", cmd: "status", args: []string{"--config", "{dir}/none.toml"},
			want: []string{"read config", "none.toml"}},
		{name: "ENRICH_CONFIG with a bad value", cmd: "status", env: map[string]string{"ENRICH_CONFIG": "{dir}/env.toml"},
			want: []string{"env.toml:2:", "run.workerz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, dir, "token", "t0ken\n")
			writeFile(t, dir, "blank", " \n\t\n")
			writeFile(t, dir, "env.toml", "[run]\nworkerz = 1\n")
			expand := func(s string) string { return strings.ReplaceAll(s, "{dir}", dir) }
			env := map[string]string{"DATABASE_URL": closedURL}
			for k, v := range tt.env {
				env[k] = expand(v)
			}
			cmd := tt.cmd
			if cmd == "" {
				cmd = "run"
			}
			args := []string{cmd}
			path := ""
			if tt.file != "" {
				path = writeFile(t, dir, "cfg.toml", expand(tt.file))
				args = append(args, "--config", path)
			}
			for _, a := range tt.args {
				args = append(args, expand(a))
			}

			_, _, err := runCLI(t, env, args...)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("enrich %s: error %v (%T), want a *configError", strings.Join(args, " "), err, err)
			}
			if code := exitCode(err, nil); code != exitConfig {
				t.Errorf("exit code %d, want %d", code, exitConfig)
			}
			for _, w := range tt.want {
				if strings.HasPrefix(w, ":") {
					w = path + w
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestConfigPrecedence: defaults < file < environment < flags, and a flag not given leaves the
// file's value. cmdRun is called with an app of the test's own so the configuration it ended
// up with can be read; it then fails to connect to closedURL (exit code 3), which proves the
// configuration was accepted.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	const fileURL = "postgres://file@127.0.0.1:1/file?sslmode=disable&connect_timeout=5"
	tests := []struct {
		name  string
		file  string // "" means no --config; "{dir}" is replaced by a directory
		env   map[string]string
		args  []string
		check func(t *testing.T, c Config)
	}{
		{
			name: "defaults without a file",
			env:  map[string]string{"GREENAPI_ID_INSTANCE": "1101000009", "GREENAPI_API_TOKEN_INSTANCE": "envtoken"},
			check: func(t *testing.T, c Config) {
				want := defaultConfig()
				want.Database.URL = closedURL
				rps := RPSDefault
				want.GreenAPI.Instances = []InstanceConfig{{ID: "1101000009", Token: "envtoken", RPS: &rps, APIURL: APIURLDefault}}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got:\n%s\nwant:\n%s", dump(t, c), dump(t, want))
				}
			},
		},
		{
			name: "file beats defaults",
			file: validInstance + "[run]\nworkers = 4\nlease = \"2m\"\n",
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != 4 || c.Run.Lease.Duration != 2*time.Minute {
					t.Errorf("workers %d lease %s, want the file's 4 and 2m", c.Run.Workers, c.Run.Lease)
				}
				if c.Run.BatchSize != enrich.BatchSizeDefault || c.Retry.Max.Duration != enrich.RetryMaxDefault {
					t.Errorf("batch_size %d retry.max %s, want the defaults", c.Run.BatchSize, c.Retry.Max)
				}
			},
		},
		{
			name: "flag beats file, flag not given leaves file value",
			file: validInstance + "[run]\nworkers = 4\nlease = \"2m\"\nlimit = 7\n",
			args: []string{"--workers", "9", "--limit", "0"},
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != 9 || c.Run.Limit != 0 {
					t.Errorf("workers %d limit %d, want the flags' 9 and 0", c.Run.Workers, c.Run.Limit)
				}
				if c.Run.Lease.Duration != 2*time.Minute {
					t.Errorf("lease %s, want the file's 2m", c.Run.Lease)
				}
			},
		},
		{
			name: "flag equal to the default still beats file",
			file: validInstance + "[run]\nworkers = 4\n",
			args: []string{"--workers", fmt.Sprint(enrich.WorkersDefault)},
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != enrich.WorkersDefault {
					t.Errorf("workers %d, want %d", c.Run.Workers, enrich.WorkersDefault)
				}
			},
		},
		{
			name: "upper bounds and an http:// api_url accepted",
			file: validInstance + "rps = 0.5\n[greenapi]\napi_url = \"http://127.0.0.1:7780/\"\n[run]\nworkers = 1000\nbatch_size = 5000\nmax_attempts = 1000\n",
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != WorkersMax || c.Run.BatchSize != BatchSizeMax || c.Run.MaxAttempts != MaxAttemptsMax {
					t.Errorf("workers %d batch_size %d max_attempts %d, want the bounds", c.Run.Workers, c.Run.BatchSize, c.Run.MaxAttempts)
				}
			},
		},
		{
			name: "duration and string flags",
			file: validInstance + "[greenapi]\ntimeout = \"5s\"\nrequest_by = \"chatId\"\n[run]\nlease = \"2m\"\nshutdown_grace = \"3s\"\n",
			args: []string{"--lease", "90s", "--timeout", "7s", "--request-by", "phoneNumber", "--max-duration", "1h",
				"--starting-timeout", "1m", "--batch-size", "50", "--max-attempts", "3"},
			check: func(t *testing.T, c Config) {
				if c.Run.Lease.Duration != 90*time.Second || c.GreenAPI.Timeout.Duration != 7*time.Second ||
					c.GreenAPI.RequestBy != "phoneNumber" || c.Run.MaxDuration.Duration != time.Hour ||
					c.Run.StartingTimeout.Duration != time.Minute || c.Run.BatchSize != 50 || c.Run.MaxAttempts != 3 {
					t.Errorf("flags not applied:\n%s", dump(t, c))
				}
				if c.Run.ShutdownGrace.Duration != 3*time.Second {
					t.Errorf("shutdown_grace %s, want the file's 3s", c.Run.ShutdownGrace)
				}
			},
		},
		{
			name: "DATABASE_URL beats file url",
			file: validInstance + "[database]\nurl = \"" + fileURL + "\"\n",
			check: func(t *testing.T, c Config) {
				if c.Database.URL != closedURL {
					t.Errorf("url %q, want DATABASE_URL's %q", c.Database.URL, closedURL)
				}
			},
		},
		{
			name: "file url without DATABASE_URL",
			file: validInstance + "[database]\nurl = \"" + fileURL + "\"\n",
			env:  map[string]string{"DATABASE_URL": ""},
			check: func(t *testing.T, c Config) {
				if c.Database.URL != fileURL {
					t.Errorf("url %q, want the file's %q", c.Database.URL, fileURL)
				}
			},
		},
		{
			name: "GREENAPI_API_URL beats file, --api-url beats both",
			file: validInstance + "[greenapi]\napi_url = \"https://file.example\"\n",
			env:  map[string]string{"GREENAPI_API_URL": "https://env.example"},
			args: []string{"--api-url", "http://flag.example"},
			check: func(t *testing.T, c Config) {
				if c.GreenAPI.APIURL != "http://flag.example" {
					t.Errorf("api_url %q, want the flag's", c.GreenAPI.APIURL)
				}
			},
		},
		{
			name: "GREENAPI_API_URL beats file",
			file: validInstance + "[greenapi]\napi_url = \"https://file.example\"\n",
			env:  map[string]string{"GREENAPI_API_URL": "https://env.example"},
			check: func(t *testing.T, c Config) {
				if c.GreenAPI.APIURL != "https://env.example" {
					t.Errorf("api_url %q, want the environment's", c.GreenAPI.APIURL)
				}
			},
		},
		{
			name: "GREENAPI_API_TOKEN_INSTANCE beats file token",
			file: validInstance + "rps = 2.5\n",
			env:  map[string]string{"GREENAPI_API_TOKEN_INSTANCE": "envtoken"},
			check: func(t *testing.T, c Config) {
				in := c.GreenAPI.Instances
				if len(in) != 1 || in[0].Token != "envtoken" || in[0].ID != "1101000001" || *in[0].RPS != 2.5 {
					t.Errorf("instances %s, want the file's id and rps with the environment's token", dump(t, c))
				}
			},
		},
		{
			name: "GREENAPI_API_TOKEN_INSTANCE beats file token_file",
			file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken_file = '{dir}/token'\n",
			env:  map[string]string{"GREENAPI_API_TOKEN_INSTANCE": "envtoken"},
			check: func(t *testing.T, c Config) {
				in := c.GreenAPI.Instances
				if len(in) != 1 || in[0].Token != "envtoken" || in[0].TokenFile != "" {
					t.Errorf("instances %s, want the environment's token and no token_file", dump(t, c))
				}
			},
		},
		{
			name: "token_file read",
			file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken_file = '{dir}/token'\n",
			check: func(t *testing.T, c Config) {
				if in := c.GreenAPI.Instances; len(in) != 1 || in[0].Token != "filetoken" || *in[0].RPS != RPSDefault {
					t.Errorf("instances %s, want the token file's token and the default rps", dump(t, c))
				}
			},
		},
		{
			name: "GREENAPI_ID_INSTANCE beats file id",
			file: validInstance,
			env:  map[string]string{"GREENAPI_ID_INSTANCE": "1101000002"},
			check: func(t *testing.T, c Config) {
				if in := c.GreenAPI.Instances; len(in) != 1 || in[0].ID != "1101000002" || in[0].Token != "t0ken" {
					t.Errorf("instances %s, want the environment's id and the file's token", dump(t, c))
				}
			},
		},
		{
			name: "--table beats file",
			file: validInstance + "[database]\ntable = \"crm.contacts\"\n",
			args: []string{"--table", "other"},
			check: func(t *testing.T, c Config) {
				if c.Database.Table != "other" {
					t.Errorf("table %q, want the flag's", c.Database.Table)
				}
			},
		},
		{
			name: "ENRICH_CONFIG without --config",
			env:  map[string]string{"ENRICH_CONFIG": "{dir}/env.toml"},
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != 3 {
					t.Errorf("workers %d, want ENRICH_CONFIG's 3", c.Run.Workers)
				}
			},
		},
		{
			name: "--config beats ENRICH_CONFIG",
			file: validInstance + "[run]\nworkers = 5\n",
			env:  map[string]string{"ENRICH_CONFIG": "{dir}/env.toml"},
			check: func(t *testing.T, c Config) {
				if c.Run.Workers != 5 {
					t.Errorf("workers %d, want --config's 5", c.Run.Workers)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, dir, "token", "filetoken\n")
			writeFile(t, dir, "env.toml", validInstance+"[run]\nworkers = 3\n")
			expand := func(s string) string { return strings.ReplaceAll(s, "{dir}", dir) }
			env := map[string]string{"DATABASE_URL": closedURL}
			for k, v := range tt.env {
				env[k] = expand(v)
			}
			var args []string
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, dir, "cfg.toml", expand(tt.file)))
			}
			args = append(args, tt.args...)

			var out, errw bytes.Buffer
			a := &app{io: stdio{in: strings.NewReader(""), out: &out, err: &errw, getenv: envOf(env)}, log: zerolog.Nop()}
			err := cmdRun(context.Background(), a, args)
			if !errors.Is(err, enrich.ErrDatabase) {
				t.Fatalf("enrich run %s: error %v, want a database error (the configuration rejected?)", strings.Join(args, " "), err)
			}
			tt.check(t, a.cfg)
		})
	}
}

// TestSecretsStayOut: a Green API token or a database password never reaches an error
// message or the output, whatever goes wrong.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	const token, password = "SECRETTOKEN123", "hunter2"
	tok := "[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"" + token + "\"\n"
	tests := []struct {
		name string
		file string // "{dir}" is replaced by a directory
		env  map[string]string
		cmd  string
		code int
	}{
		{name: "unknown key", file: tok + "[run]\nworkerz = 3\n", code: exitConfig},
		{name: "unknown key next to the token", file: tok + "tokn = \"" + token + "\"\n", code: exitConfig},
		{name: "bad value", file: tok + "[greenapi]\nrequest_by = \"phone\"\n", code: exitConfig},
		{name: "bad rps", file: tok + "rps = -3\n", code: exitConfig},
		{name: "token and token_file", file: tok + "token_file = '{dir}/token'\n", code: exitConfig},
		{name: "token unquoted", file: "[[greenapi.instance]]\nid = \"1\"\ntoken = " + token + "\n", code: exitConfig},
		{name: "token unterminated", file: "[[greenapi.instance]]\nid = \"1\"\ntoken = \"" + token + "\n[run]\n", code: exitConfig},
		{name: "garbage after the token", file: "[[greenapi.instance]]\nid = \"1\"\ntoken = '" + token + "' x\n", code: exitConfig},
		{name: "token twice", file: tok + "token = \"" + token + "\"\n", code: exitConfig},
		{name: "token a number", file: "[[greenapi.instance]]\nid = \"1\"\ntoken = 123" + token[len(token)-3:] + "\n", code: exitConfig},
		{name: "token with a slash", file: "[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"" + token + "/x\"\n", code: exitConfig},
		{name: "token pasted into api_url", file: tok + "[greenapi]\napi_url = \"https://api.green-api.com/?" + token + "\"\n", code: exitConfig},
		{name: "second token pasted into api_url", file: validInstance + "[[greenapi.instance]]\nid = \"1101000002\"\ntoken = \"" + token +
			"\"\n[greenapi]\napi_url = \"https://api.green-api.com/?" + token + "\"\n", code: exitConfig},
		{name: "token_file with a bad instance", file: "[[greenapi.instance]]\nid = \"1\"\ntoken_file = '{dir}/token'\nrps = 0\n", code: exitConfig},
		{name: "env token with several instances", file: validInstance + "[[greenapi.instance]]\nid = \"2\"\ntoken = \"t\"\n",
			env: map[string]string{"GREENAPI_API_TOKEN_INSTANCE": token}, code: exitConfig},
		{name: "env token with a bad id", env: map[string]string{"GREENAPI_ID_INSTANCE": "x", "GREENAPI_API_TOKEN_INSTANCE": token},
			code: exitConfig},
		{name: "password in DATABASE_URL, closed port", cmd: "status",
			env: map[string]string{"DATABASE_URL": "postgres://u:" + password + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=5"}, code: exitDatabase},
		{name: "password in DATABASE_URL, sslmode prefer", cmd: "status",
			env: map[string]string{"DATABASE_URL": "postgres://u:" + password + "@127.0.0.1:1/x?connect_timeout=5"}, code: exitDatabase},
		{name: "password in a DSN, closed port", cmd: "status",
			env: map[string]string{"DATABASE_URL": "host=127.0.0.1 port=1 user=u password=" + password + " dbname=x sslmode=disable connect_timeout=5"}, code: exitDatabase},
		{name: "password in the file url, closed port", cmd: "migrate",
			file: "[database]\nurl = \"postgres://u:" + password + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=5\"\n", env: map[string]string{"DATABASE_URL": ""}, code: exitDatabase},
		{name: "password in a malformed url", cmd: "status",
			env: map[string]string{"DATABASE_URL": "postgres://u:" + password + "@127.0.0.1:notaport/x"}, code: exitConfig},
		{name: "password in a url with a bad option", cmd: "status",
			env: map[string]string{"DATABASE_URL": "postgres://u:" + password + "@127.0.0.1:1/x?sslmode=sometimes"}, code: exitConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, dir, "token", token+"\n")
			expand := func(s string) string { return strings.ReplaceAll(s, "{dir}", dir) }
			env := map[string]string{"DATABASE_URL": closedURL}
			for k, v := range tt.env {
				env[k] = expand(v)
			}
			cmd := tt.cmd
			if cmd == "" {
				cmd = "run"
			}
			args := []string{cmd}
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, dir, "cfg.toml", expand(tt.file)))
			}
			stdout, stderr, err := runCLI(t, env, args...)
			if err == nil {
				t.Fatal("no error")
			}
			if code := exitCode(err, nil); code != tt.code {
				t.Errorf("exit code %d, want %d; error: %v", code, tt.code, err)
			}
			for _, secret := range []string{token, password} {
				for what, s := range map[string]string{"the error": err.Error(), "stdout": stdout, "stderr": stderr} {
					if strings.Contains(s, secret) {
						t.Errorf("%s shows the secret %q:\n%s", what, secret, s)
					}
				}
			}
		})
	}
}

// TestHelp: --help prints the usage and exits 0; every flag of run is listed by run --help.
func TestHelp(t *testing.T) {
	t.Parallel()
	runFlags := []string{"workers", "batch-size", "lease", "max-attempts", "max-duration", "limit", "shutdown-grace",
		"starting-timeout", "api-url", "request-by", "timeout", "table", "config", "log-format", "log-level"}
	tests := []struct {
		name       string
		args       []string
		code       int
		wantOut    []string
		wantErr    []string
		wantConfig bool // the error is a *configError
	}{
		{name: "enrich --help", args: []string{"--help"}, code: exitOK,
			wantOut: []string{"Usage:", "migrate", "enqueue", "run", "status", "simulate", "demo", "Exit codes"}},
		{name: "enrich -h", args: []string{"-h"}, code: exitOK, wantOut: []string{"Usage:"}},
		{name: "enrich help", args: []string{"help"}, code: exitOK, wantOut: []string{"Usage:"}},
		{name: "enrich", args: nil, code: exitConfig, wantOut: []string{"Usage:"}, wantConfig: true},
		{name: "enrich run --help", args: []string{"run", "--help"}, code: exitOK,
			wantErr: func() []string {
				var w []string
				for _, f := range runFlags {
					w = append(w, "\n  -"+f+" ")
				}
				return append(w, "Usage: enrich run")
			}()},
		{name: "enrich enqueue -h", args: []string{"enqueue", "-h"}, code: exitOK,
			wantErr: []string{"Usage: enrich enqueue", "\n  -table ", "\n  -config "}},
		{name: "enrich status --help", args: []string{"status", "--help"}, code: exitOK,
			wantErr: []string{"\n  -explain"}},
		{name: "unknown command", args: []string{"enrichh"}, code: exitConfig, wantConfig: true},
		{name: "flag before the command", args: []string{"--config", "x.toml", "run"}, code: exitConfig, wantConfig: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, tt.args...)
			if code := exitCode(err, nil); code != tt.code {
				t.Errorf("exit code %d, want %d; error: %v", code, tt.code, err)
			}
			if tt.code == exitOK && err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Errorf("error %v, want nil or flag.ErrHelp", err)
			}
			if tt.code == exitOK && strings.Contains(stderr, "enrich failed") {
				t.Errorf("help logged as a failure:\n%s", stderr)
			}
			var ce *configError
			if tt.wantConfig != errors.As(err, &ce) {
				t.Errorf("error %v (%T): configError %v, want %v", err, err, !tt.wantConfig, tt.wantConfig)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestExitCode maps errors and signals to the documented exit codes.
func TestExitCode(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("step: %w: %w", err, errors.New("cause")) }
	tests := []struct {
		name string
		err  error
		sig  os.Signal
		want int
	}{
		{"nil", nil, nil, 0},
		{"help", flag.ErrHelp, nil, 0},
		{"config error", configErrorf("bad"), nil, 1},
		{"wrapped config error", fmt.Errorf("load: %w", configErrorf("bad")), nil, 1},
		{"no instance", wrap(enrich.ErrNoInstance), nil, 2},
		{"database", wrap(enrich.ErrDatabase), nil, 3},
		{"database error from dbErr", dbErr("status", errors.New("boom")), nil, 3},
		{"any other error", errors.New("boom"), nil, 1},
		{"interrupted by SIGTERM", wrap(enrich.ErrInterrupted), syscall.SIGTERM, 143},
		{"interrupted by SIGINT", wrap(enrich.ErrInterrupted), syscall.SIGINT, 130},
		{"interrupted, signal unknown", wrap(enrich.ErrInterrupted), nil, 143},
		{"finished before SIGINT took effect", nil, syscall.SIGINT, 130},
		{"cancelled by SIGTERM", fmt.Errorf("claim: %w", context.Canceled), syscall.SIGTERM, 143},
		{"database error despite a signal", wrap(enrich.ErrDatabase), syscall.SIGTERM, 3},
		{"query cancelled by SIGTERM", dbErr("status", &pgconn.PgError{Code: "57014", Message: "canceling statement due to user request"}),
			syscall.SIGTERM, 143},
		{"configuration refused by the API", wrap(enrich.ErrConfiguration), nil, 1},
		{"stalled", wrap(enrich.ErrStalled), nil, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := exitCode(tt.err, tt.sig); got != tt.want {
				t.Errorf("exitCode(%v, %v) = %d, want %d", tt.err, tt.sig, got, tt.want)
			}
		})
	}
}

// TestLogOutcome: how a command ended is logged once; a stop by signal is a normal stop,
// logged at info, never as "enrich failed".
func TestLogOutcome(t *testing.T) {
	t.Parallel()
	const written = ": answers received are written, the rest released"
	interrupted := fmt.Errorf("run: %w", enrich.ErrInterrupted)
	tests := []struct {
		name      string
		err       error
		cause     error // the context is cancelled with it when not nil
		wantLevel string
		wantMsg   string // "" with wantLevel "": nothing is logged
	}{
		{name: "success", err: nil},
		{name: "help", err: flag.ErrHelp},
		{name: "config error", err: configErrorf("bad"), wantLevel: "error", wantMsg: "enrich failed"},
		{name: "run stopped by SIGTERM", err: interrupted, cause: signalStop{syscall.SIGTERM},
			wantLevel: "info", wantMsg: "stopped by SIGTERM" + written},
		{name: "run stopped by SIGINT", err: interrupted, cause: signalStop{syscall.SIGINT},
			wantLevel: "info", wantMsg: "stopped by SIGINT" + written},
		{name: "run interrupted, no signal known", err: interrupted, wantLevel: "info", wantMsg: "stopped" + written},
		{name: "enqueue cancelled by SIGTERM", err: dbErr("enqueue", context.Canceled), cause: signalStop{syscall.SIGTERM},
			wantLevel: "info", wantMsg: "stopped by SIGTERM"},
		{name: "cancelled without being asked", err: dbErr("enqueue", context.Canceled), wantLevel: "error", wantMsg: "enrich failed"},
		{name: "database error during a stop", err: dbErr("write", errors.New("boom")), cause: signalStop{syscall.SIGTERM},
			wantLevel: "error", wantMsg: "enrich failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tt.cause != nil {
				cancel(tt.cause)
			}
			var buf bytes.Buffer
			a := &app{log: zerolog.New(&buf)}
			a.logOutcome(ctx, tt.err)
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if tt.wantLevel == "" {
				if buf.Len() != 0 {
					t.Fatalf("logged %q, want nothing", buf.String())
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want 1:\n%s", len(lines), buf.String())
			}
			for _, w := range []string{`"level":"` + tt.wantLevel + `"`, `"message":"` + tt.wantMsg + `"`} {
				if !strings.Contains(lines[0], w) {
					t.Errorf("log line %s does not contain %s", lines[0], w)
				}
			}
		})
	}
}

// acceptCounter is a TCP listener that accepts connections and closes them at once, as a
// DATABASE_URL that tells whether a command tried to connect.
type acceptCounter struct {
	ln       net.Listener
	accepted chan string // the remote address of each connection accepted, in order
}

func newAcceptCounter(t *testing.T) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &acceptCounter{ln: ln, accepted: make(chan string, 1000)}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted <- conn.RemoteAddr().String()
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

// url is a DATABASE_URL pointing at the listener.
func (c *acceptCounter) url() string {
	return "postgres://enrich@" + c.ln.Addr().String() + "/enrich?sslmode=disable&connect_timeout=5"
}

// count returns how many connections were accepted before now. It connects once itself and
// counts those accepted before its own: the listener accepts in arrival order, so no
// connection made before the call is missed, without waiting on a clock.
func (c *acceptCounter) count(t *testing.T) int {
	t.Helper()
	conn, err := net.Dial("tcp", c.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mine := conn.LocalAddr().String()
	n := 0
	for addr := range c.accepted {
		if addr == mine {
			return n
		}
		n++
	}
	return n
}

// TestBadConfigNoConnection: each configuration the issue lists as wrongly accepted exits 1
// before any connection to the database, in-process and as the built binary. An http://
// api_url is accepted with a warning and gets as far as connecting.
func TestBadConfigNoConnection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cmd      string // default "run"
		file     string // "" means no --config
		args     []string
		code     int    // default exitConfig
		wantErr  string // a substring of the error (in-process) or of stderr (binary)
		connects bool
	}{
		{name: "rps nan", file: validInstance + "rps = nan\n", wantErr: ".rps is NaN"},
		{name: "rps inf", file: validInstance + "rps = inf\n", wantErr: ".rps is +Inf"},
		{name: "workers 100000000", file: validInstance + "[run]\nworkers = 100000000\n", wantErr: "run.workers is 100000000"},
		{name: "run extra", file: validInstance, args: []string{"extra"}, wantErr: `unexpected argument \"extra\"`},
		{name: "migrate extra", cmd: "migrate", args: []string{"extra"}, wantErr: `unexpected argument \"extra\"`},
		{name: "status extra", cmd: "status", args: []string{"extra"}, wantErr: `unexpected argument \"extra\"`},
		{name: "demo extra", cmd: "demo", args: []string{"extra"}, wantErr: `unexpected argument \"extra\"`},
		{name: "simulate extra", cmd: "simulate", args: []string{"extra"}, wantErr: `unexpected argument \"extra\"`},
		{name: "enqueue two files", cmd: "enqueue", args: []string{"-", "-"}, wantErr: "takes one FILE"},
		{name: "table not an identifier", file: validInstance + "[database]\ntable = \"contacts; drop table x\"\n",
			wantErr: "database.table"},
		{name: "migrate table not an identifier", cmd: "migrate", args: []string{"--table", "contacts; drop table x"},
			wantErr: "database.table"},
		{name: "api_url https://", file: "[greenapi]\napi_url = \"https://\"\n" + validInstance, wantErr: "greenapi.api_url"},
		{name: "api_url http:// warns and goes on", file: "[greenapi]\napi_url = \"http://127.0.0.1:7780\"\n" + validInstance,
			code: exitDatabase, wantErr: "the apiTokenInstance travels unencrypted", connects: true},
	}
	for _, tt := range tests {
		for _, binary := range []bool{false, true} {
			name := tt.name + "/in-process"
			if binary {
				name = tt.name + "/binary"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				db := newAcceptCounter(t)
				cmd := cmp.Or(tt.cmd, "run")
				args := []string{cmd}
				if tt.file != "" {
					args = append(args, "--config", writeFile(t, t.TempDir(), "cfg.toml", tt.file))
				}
				args = append(args, tt.args...)
				wantCode := cmp.Or(tt.code, exitConfig)

				var code int
				var stderr string
				if binary {
					c := exec.Command(enrichBinary(t), append(args, "--log-format", "json")...)
					c.Env = []string{"DATABASE_URL=" + db.url()}
					var errb bytes.Buffer
					c.Stderr = &errb
					code, stderr = exitStatus(c.Run()), errb.String()
				} else {
					var err error
					_, stderr, err = runCLI(t, map[string]string{"DATABASE_URL": db.url()}, args...)
					code = exitCode(err, nil)
					var ce *configError
					if wantCode == exitConfig && !errors.As(err, &ce) {
						t.Errorf("error %v (%T), want a *configError", err, err)
					}
				}
				if code != wantCode {
					t.Errorf("enrich %s: exit code %d, want %d; stderr:\n%s", strings.Join(args, " "), code, wantCode, stderr)
				}
				if !strings.Contains(stderr, tt.wantErr) {
					t.Errorf("stderr does not contain %q:\n%s", tt.wantErr, stderr)
				}
				if n := db.count(t); (n > 0) != tt.connects {
					t.Errorf("%d connections to the database, want any: %v", n, tt.connects)
				}
			})
		}
	}
}
