package main

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/pgcluster"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// demoDatabaseRE finds the demo's database name in its output.
var demoDatabaseRE = regexp.MustCompile(`enrich_demo_[0-9a-f]{12}\b`)

// demoPoolRE finds the demo's closing line for a pool: its name, the getAvatar calls it
// answered and the calls that reached it on a wrong host.
var demoPoolRE = regexp.MustCompile(`(?m)^   pool (\d+) [^:\n]*: (\d+) getAvatar calls answered, (\d+) calls on a wrong host$`)

// databaseExists reports whether the server at adminURL has a database called name.
func databaseExists(t *testing.T, adminURL, name string) bool {
	t.Helper()
	var n int
	if err := pgtest.Connect(t, adminURL).QueryRow(context.Background(),
		`SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestDemo runs the whole demo, small, against the test server: it says which server it
// uses, creates a database of its own there, and drops it at the end, also when it is
// interrupted; --keep keeps it and prints its URL. Its three instances are in two pools, each on
// its own host: both pools answer (the first instance restarts early on, so pool 1101 has a
// second), and no call goes to a wrong host.
func TestDemo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		// interruptAt: cancel the context, as SIGINT would, once stdout shows this.
		interruptAt string
		keep        bool
		wantOut     []string
	}{
		{name: "dropped at the end", wantOut: []string{"== verified ", "== dropped database enrich_demo_",
			"   pool 1101 (greenapi.api_url) at http://127.0.0.1:", ": 1101000001, 1101000003\n",
			"   pool 7103 (api_url per instance) at http://127.0.0.1:", ": 7103000002\n"}},
		{name: "--keep", args: []string{"--keep"}, keep: true, wantOut: []string{"== verified ", "== kept database enrich_demo_"}},
		{name: "interrupted", interruptAt: "== enrich run\n", wantOut: []string{"== dropped database enrich_demo_"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			server := pgtest.AdminURL()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			out, errw := &output{}, &output{}
			if tt.interruptAt != "" {
				seen := out.seen(tt.interruptAt)
				go func() {
					select {
					case <-seen:
						cancel(signalStop{syscall.SIGINT})
					case <-ctx.Done():
					}
				}()
			}
			args := append([]string{"demo", "--rows", "200", "--instances", "3", "--rps", "1000", "--log-format", "json"}, tt.args...)
			err := run(ctx, args, stdio{in: strings.NewReader(""), out: out, err: errw,
				getenv: envOf(map[string]string{"DATABASE_URL": server})})
			stdout, stderr := out.String(), errw.String()

			switch {
			case tt.interruptAt == "" && err != nil:
				t.Fatalf("demo failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			case tt.interruptAt != "":
				if !errors.Is(err, enrich.ErrInterrupted) && !errors.Is(err, context.Canceled) {
					t.Fatalf("error %v, want an interruption\nstdout:\n%s", err, stdout)
				}
				if code := exitCode(err, syscall.SIGINT); code != 130 {
					t.Errorf("exit code %d, want 130", code)
				}
				if !strings.Contains(stderr, "stopped by SIGINT") || strings.Contains(stderr, `"level":"error"`) {
					t.Errorf("want one info line saying SIGINT stopped the demo, and no error line; stderr:\n%s", stderr)
				}
			}
			if strings.Contains(stderr, "unencrypted") {
				t.Errorf("the demo's own loopback simulator drew the http:// warning:\n%s", stderr)
			}
			if want := "== PostgreSQL: the server at " + pgcluster.Redact(server) + "\n"; !strings.Contains(stdout, want) {
				t.Errorf("stdout does not say which server (%q):\n%s", want, stdout)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout)
				}
			}
			if tt.interruptAt == "" {
				pools := demoPoolRE.FindAllStringSubmatch(stdout, -1)
				if len(pools) != 2 {
					t.Errorf("want a line for each of the two pools, got %q:\n%s", pools, stdout)
				}
				for _, p := range pools {
					if p[2] == "0" || p[3] != "0" {
						t.Errorf("pool %s: %s getAvatar calls answered, %s on a wrong host; want some and 0", p[1], p[2], p[3])
					}
				}
				// A finished demo shows existence filled: every done personal row has
				// exists_whatsapp (each verified against the truth by the demo), from the avatar or
				// CheckWhatsapp (whose checks wait out the instance's starting window).
				m := regexp.MustCompile(`== existence: (\d+) of (\d+) done personal rows have exists_whatsapp, by source:(.*)\n`).FindStringSubmatch(stdout)
				if m == nil {
					t.Fatalf("stdout has no existence line:\n%s", stdout)
				}
				known, _ := strconv.Atoi(m[1])
				personal, _ := strconv.Atoi(m[2])
				if personal < 150 || known != personal || !strings.Contains(m[3], " avatar=") || !strings.Contains(m[3], " checkWhatsapp=") {
					t.Errorf("existence: %d of %d known (%s), want all of at least 150, from the avatar and CheckWhatsapp", known, personal, m[3])
				}
				t.Logf("existence: %d of %d done personal rows known; by source:%s", known, personal, m[3])
			}
			names := map[string]bool{}
			for _, n := range demoDatabaseRE.FindAllString(stdout, -1) {
				names[n] = true
			}
			if len(names) != 1 {
				t.Fatalf("want one demo database named in the output, got %v:\n%s", names, stdout)
			}
			var name string
			for n := range names {
				name = n
			}
			if tt.keep {
				t.Cleanup(func() {
					if _, err := pgtest.Connect(t, server).Exec(context.Background(),
						"DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
						t.Errorf("drop the kept database: %v", err)
					}
				})
			}
			if got := databaseExists(t, server, name); got != tt.keep {
				t.Fatalf("database %s exists after the demo: %v, want %v", name, got, tt.keep)
			}
			if tt.keep {
				dbURL, err := pgcluster.WithDatabase(server, name)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(stdout, pgcluster.Redact(dbURL)) {
					t.Errorf("--keep does not print the database's URL %s:\n%s", pgcluster.Redact(dbURL), stdout)
				}
				if u, err := url.Parse(server); err == nil && u.User != nil {
					if pw, ok := u.User.Password(); ok && strings.Contains(stdout+stderr, pw) {
						t.Errorf("the database password appears in the output")
					}
				}
			}
		})
	}
}

// TestDemoCreateDatabaseTaken: when the name is taken, createDatabase fails and offers nothing
// to drop, so the demo can never drop a database it did not create.
func TestDemoCreateDatabaseTaken(t *testing.T) {
	t.Parallel()
	theirs := pgtest.NewDB(t)
	u, err := url.Parse(theirs)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	_, drop, err := createDatabase(context.Background(), pgtest.AdminURL(), name)
	if err == nil || drop != nil {
		t.Fatalf("createDatabase(%s) over an existing database: err %v, drop %v; want an error and nothing to drop", name, err, drop != nil)
	}
	if !databaseExists(t, pgtest.AdminURL(), name) {
		t.Fatalf("database %s is gone", name)
	}
}

// TestDemoBadFlags: the demo refuses bad flags and stray arguments before it looks for a
// server (DATABASE_URL points at a closed port: getting that far would be exit code 3).
func TestDemoBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--keep", "extra"}, `unexpected argument "extra"`},
		{[]string{"--rps", "nan"}, "--rps is NaN"},
		{[]string{"--rps", "inf"}, "--rps is +Inf"},
		{[]string{"--rps", "0"}, "--rps is 0"},
		{[]string{"--rows", "0"}, "--rows is 0"},
		{[]string{"--rows", "100000000"}, "--rows is 100000000"},
		{[]string{"--instances", "0"}, "--instances is 0"},
		{[]string{"--instances", "1000"}, "--instances is 1000"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			stdout, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, append([]string{"demo"}, tt.args...)...)
			var ce *configError
			if !errors.As(err, &ce) || exitCode(err, nil) != exitConfig {
				t.Fatalf("error %v (%T), want a configuration error (exit code 1)", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing: the demo must stop before it starts", stdout)
			}
		})
	}
}
