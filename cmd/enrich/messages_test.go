package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

// TestAPIURLRefusedAdvice: a run whose api_url refuses every connection ends (exit 2) naming
// api_url and the key to fix, not the instance in the console.
func TestAPIURLRefusedAdvice(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	if _, err := pgtest.Connect(t, dbURL).Exec(t.Context(), `INSERT INTO contacts (phone_number) VALUES ('79001234567')`); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, t.TempDir(), "enrich.toml", "[greenapi]\napi_url = \"http://127.0.0.1:1\"\n\n"+
		"[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"tok-refused\"\n\n[run]\nstarting_timeout = \"2s\"\n")
	cmd := exec.Command(enrichBinary(t), "run", "--config", cfg, "--log-format", "json", "--summary", "log")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	out, err := cmd.CombinedOutput()
	if code := exitStatus(err); code != exitNoInstance {
		t.Fatalf("exit %d, want %d:\n%s", code, exitNoInstance, out)
	}
	var last string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, `"message":"enrich failed"`) {
			last = line
		}
	}
	t.Logf("api_url refusing: %s", last)
	if !strings.Contains(last, "api_url http://127.0.0.1:1 refused the connection") || !strings.Contains(last, "check greenapi.api_url") ||
		strings.Contains(last, "check the instance in the Green API console") || strings.Contains(last, "greenapi: ") {
		t.Errorf("the error does not point at api_url:\n%s", out)
	}
}

// TestMessagesForPeople: a wrong flag is said once without the whole usage; a TOML integer id
// is explained in the file's words, not Go's; durations take days like --since; "released" is
// the summary's word as it is the JSON's.
func TestMessagesForPeople(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"run", "status", "enqueue", "export", "requeue", "migrate", "demo", "simulate", "version"} {
		_, stderr, err := runCLI(t, nil, cmd, "--bogus")
		if exitCode(err, nil) != exitConfig || strings.Contains(stderr, "Usage:") || strings.Count(stderr+err.Error(), "-bogus") != 2 ||
			!strings.Contains(err.Error(), "see enrich "+cmd+" --help") {
			t.Errorf("%s --bogus: %v\nstderr:\n%s\nwant one error pointing at --help, no usage", cmd, err, stderr)
		}
	}
	if _, stderr, err := runCLI(t, nil, "run", "--help"); exitCode(err, nil) != exitOK || !strings.Contains(stderr, "Usage: enrich run") {
		t.Errorf("run --help: %v\n%s", err, stderr)
	}

	dir := t.TempDir()
	for _, tc := range []struct{ file, want, not string }{
		{"[[greenapi.instance]]\nid = 1101000001\ntoken = \"t\"\n", `greenapi.instance.id: this is a TOML integer, and the key takes a string: put the value in double quotes (id = "1101000001")`, "main."},
		{"[run]\nworkers = \"4\"\n", "run.workers: this is a TOML string, and the key takes a whole number", "main."},
	} {
		path := writeFile(t, dir, "c.toml", tc.file)
		_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "status", "--config", path)
		t.Logf("%q: %v", tc.file, err)
		if exitCode(err, nil) != exitConfig || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.not) {
			t.Errorf("%q: %v, want %q and no %q", tc.file, err, tc.want, tc.not)
		}
	}

	// Package names stay out of messages about config keys.
	for _, tc := range []struct {
		file string
		args []string
		want string
	}{
		{"", []string{"status", "--table", "x;y"}, "database.table: table name"},
		{"[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"a/b\"\n", []string{"run"}, "greenapi.instance[0] (id 1101000001): Token contains"},
		{"[greenapi]\napi_url = \"ftp://x\"\n[[greenapi.instance]]\nid = \"1101000001\"\ntoken = \"ab\"\n", []string{"run"},
			"greenapi.api_url: APIURL \"ftp://x\" must start with https://"},
	} {
		args := tc.args
		if tc.file != "" {
			args = append(args, "--config", writeFile(t, dir, "p.toml", tc.file))
		}
		_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "store:") ||
			strings.Contains(err.Error(), "greenapi:") || strings.Contains(err.Error(), "invalid Config") {
			t.Errorf("%v: %v, want %q without a package's name", args, err, tc.want)
		}
	}

	var d Duration
	if err := d.Set("1d"); err != nil || d.Duration != 24*time.Hour {
		t.Errorf("--max-duration 1d: %v, %s; want 24h as --since 1d takes it", err, d)
	}
	c, err := loadConfig(writeFile(t, dir, "d.toml", "[run]\nmax_duration = \"2d\"\n"), envOf(nil))
	if err != nil || c.Run.MaxDuration.Duration != 48*time.Hour {
		t.Errorf("max_duration = \"2d\": %v, %s", err, c.Run.MaxDuration)
	}
	if err := d.Set("1w"); err == nil || !strings.Contains(err.Error(), `"1d"`) {
		t.Errorf("1w: %v, want an error showing the forms, days included", err)
	}

	var b strings.Builder
	if err := writeSummaryText(&b, runReport{Run: "r", Table: "contacts"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n  released  ") || strings.Contains(b.String(), "given back") ||
		!strings.Contains(b.String(), "(times: a row put off again counts again; status counts rows)") {
		t.Errorf("summary:\n%s\nwant the row of released rows called released, as in JSON, the log and status", b.String())
	}
}
