package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// opsInstance is the instance the ops tests run against: slow enough that a run lasts seconds.
func opsInstance(token string) (simulator.Instance, simulator.Config) {
	return simulator.Instance{ID: "1101000042", Token: token, RPS: 20},
		simulator.Config{Seed: 3, LatencyMedian: 100 * time.Millisecond, LatencyP99: 200 * time.Millisecond}
}

// TestMetricsDuringRun scrapes /metrics while a run is under way: every series the operator's
// guide names is there, with the instance as a label, and the token nowhere.
func TestMetricsDuringRun(t *testing.T) {
	t.Parallel()
	const token = "tok-metrics-5ecret"
	inst, simCfg := opsInstance(token)
	// 40 answers take at least 2 s at 20 rps: past the first write (flush_interval 1 s), so
	// some rows are done when /metrics is read, with getAvatar's and checkWhatsapp's calls mixed.
	b := setupProc(t, 80, inst, simCfg, "", 40)
	cmd, out := b.command(t, "run", "--log-format", "json", "--metrics-addr", "127.0.0.1:0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-b.answered
	addr := regexp.MustCompile(`"addr":"([^"]+)"[^\n]*"message":"serving metrics`).FindStringSubmatch(out.String())
	if addr == nil {
		t.Fatalf("no \"serving metrics\" line with the address:\n%s", out)
	}
	resp, err := http.Get("http://" + addr[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	text := string(body)
	for _, want := range []string{
		`enrich_api_calls_total{instance="1101000042",method="getAvatar",outcome="ok"}`,
		`enrich_api_calls_total{instance="1101000042",method="getStateInstance",outcome="ok"} 1`,
		`enrich_api_request_duration_seconds_bucket{instance="1101000042",method="getAvatar",le="0.2"}`,
		`enrich_api_rate_limited_total{instance="1101000042"} 0`,
		`enrich_retries_total{instance="1101000042",kind="transient"}`,
		`enrich_rows_total{status="done"}`,
		`enrich_rows_total{status="failed"}`,
		"enrich_rows_due ",
		"enrich_calls_in_flight ",
		`enrich_rows_existence_total{source="avatar"}`,
		`enrich_rows_existence_total{source="checkWhatsapp"}`,
		`enrich_rows_existence_total{source="unchecked"}`,
		"enrich_rows_exists_unknown_total ",
		`enrich_instance_rate_rps{instance="1101000042"} 20`,
		`enrich_instance_headroom_ratio{instance="1101000042"} 0.01`,
		`enrich_instance_state{instance="1101000042",state="running"} 1`,
		`enrich_instance_state{instance="1101000042",state="out"} 0`,
		`enrich_build_info{`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if due := metricValue(t, text, "enrich_rows_due"); due <= 0 || due >= 80 {
		t.Errorf("enrich_rows_due = %v mid-run, want between 0 and 80 (some done, some left)", due)
	}
	if strings.Contains(text, token) || strings.Contains(out.String(), token) {
		t.Errorf("the token appears in /metrics or in the output")
	}
	promtoolCheckMetrics(t, "/metrics during a run", body)
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

// promtoolPath is where tools/test-deps.sh makes promtool be (Debian's prometheus package).
const promtoolPath = "/usr/bin/promtool"

// promtoolCheckMetrics runs Prometheus's own linter on an exposition: names, units, help and
// types as Prometheus's conventions want them. Without promtool the test fails, never skips.
func promtoolCheckMetrics(t *testing.T, what string, exposition []byte) {
	t.Helper()
	if _, err := os.Stat(promtoolPath); err != nil {
		t.Fatalf("%s: %v: install it with tools/test-deps.sh (as root), or apt-get install prometheus", promtoolPath, err)
	}
	cmd := exec.Command(promtoolPath, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("%s: promtool check metrics: %v\n%s", what, err, out)
	}
}

// metricValue is the value of the series line that begins with name and a space.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &f); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

// pushed is one request a fake Pushgateway got.
type pushed struct {
	method, path, body string
}

// fakePushgateway records every push.
func fakePushgateway(t *testing.T) (string, func() []pushed) {
	t.Helper()
	var mu sync.Mutex
	var got []pushed
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, pushed{r.Method, r.URL.Path, string(body)})
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []pushed {
		mu.Lock()
		defer mu.Unlock()
		return append([]pushed(nil), got...)
	}
}

// TestPushAtTheEnd: a run pushes once, with POST (so the Pushgateway keeps series it does not
// send), grouped by job and table only; a successful run pushes its success timestamp, a failed
// one (here a wrong token: exit 2) its completion and no success.
func TestPushAtTheEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, token string
		exit        int
		success     bool
	}{
		{"Success", "tok-push", 0, true},
		{"Failure", "tok-wrong", exitNoInstance, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst, simCfg := opsInstance("tok-push")
			b := setupProc(t, 30, inst, simCfg, "", 1)
			if tc.token != inst.Token { // the config names a token the simulator refuses
				if err := os.WriteFile(b.config, bytes.Replace(mustRead(t, b.config), []byte(inst.Token), []byte(tc.token), 1), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			url, pushes := fakePushgateway(t)
			cmd, out := b.command(t, "run", "--log-format", "json", "--pushgateway", url)
			if code := exitStatus(cmd.Run()); code != tc.exit {
				t.Fatalf("exit %d, want %d\n%s", code, tc.exit, out)
			}
			got := pushes()
			if len(got) != 1 {
				t.Fatalf("%d pushes, want 1: %+v", len(got), got)
			}
			p := got[0]
			if p.method != http.MethodPost || p.path != "/metrics/job/enrich/table/contacts" {
				t.Errorf("push %s %s, want POST /metrics/job/enrich/table/contacts (no per-pod label)", p.method, p.path)
			}
			for _, series := range []string{"enrich_last_completion_timestamp_seconds ", "enrich_duration_seconds ",
				`enrich_rows_processed{status="done"} `, "enrich_last_run_failed "} {
				if !strings.Contains(p.body, series) {
					t.Errorf("the push lacks %s:\n%s", series, p.body)
				}
			}
			if has := strings.Contains(p.body, "enrich_last_success_timestamp_seconds "); has != tc.success {
				t.Errorf("success timestamp pushed: %v, want %v:\n%s", has, tc.success, p.body)
			}
			if tc.success {
				if done := metricValue(t, p.body, `enrich_rows_processed{status="done"}`); done+metricValue(t, p.body, `enrich_rows_processed{status="failed"}`) != 30 {
					t.Errorf("rows processed done = %v (+ failed) , want 30 in all:\n%s", done, p.body)
				}
				if at := metricValue(t, p.body, "enrich_last_success_timestamp_seconds"); time.Since(time.Unix(int64(at), 0)) > time.Minute {
					t.Errorf("success timestamp %v is not now", at)
				}
			}
			for _, secret := range []string{"tok-push", "tok-wrong"} {
				if strings.Contains(p.body, secret) || strings.Contains(p.path, secret) {
					t.Errorf("the push carries the token")
				}
			}
		})
	}
}

// TestProgressBar: under a pseudo-terminal the run draws a live bar (rows done of the total, the
// rate, the instance's state) and prints its logs above it, with no progress log lines; with
// stderr piped, no bar, and the progress log lines instead.
func TestProgressBar(t *testing.T) {
	t.Parallel()
	t.Run("Terminal", func(t *testing.T) {
		t.Parallel()
		inst, simCfg := opsInstance("tok-bar")
		b := setupProc(t, 40, inst, simCfg, "", 1)
		cmd, _ := b.command(t, "run", "--progress-every", "300ms")
		cmd.Stdout, cmd.Stderr = nil, nil
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		copied := make(chan struct{})
		go func() { defer close(copied); _, _ = io.Copy(&buf, tty) }() // ends with EIO when the process exits
		if err := cmd.Wait(); err != nil {
			t.Fatalf("run: %v", err)
		}
		<-copied
		tty.Close()
		text := buf.String()
		for _, want := range []string{"/ 40 rows", "rows/s", "1101000042 running", "run starting", "done"} {
			if !strings.Contains(text, want) {
				t.Errorf("the terminal shows no %q:\n%q", want, text)
			}
		}
		if !strings.Contains(text, "40 / 40 rows") {
			t.Errorf("the bar does not end at 40 / 40 rows:\n%q", text)
		}
		if regexp.MustCompile(`INF progress`).MatchString(text) {
			t.Errorf("progress log lines beside the bar:\n%q", text)
		}
	})
	t.Run("Piped", func(t *testing.T) {
		t.Parallel()
		inst, simCfg := opsInstance("tok-bar")
		b := setupProc(t, 40, inst, simCfg, "", 1)
		cmd, out := b.command(t, "run", "--progress-every", "300ms")
		if err := cmd.Run(); err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
		text := out.String()
		if strings.Contains(text, "\x1b[") || strings.Contains(text, " rows/s") {
			t.Errorf("bar drawing in piped output:\n%q", text)
		}
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			var l struct{ Message string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "progress" {
				lines++
			}
		}
		if lines == 0 {
			t.Errorf("no progress log line in piped output:\n%s", text)
		}
	})
}

// TestSummaryJSON: --summary json prints one JSON object on stdout, the same counts as the log
// line, and nothing else there.
func TestSummaryJSON(t *testing.T) {
	t.Parallel()
	inst, simCfg := opsInstance("tok-sum")
	b := setupProc(t, 25, inst, simCfg, "", 1)
	cmd := exec.Command(enrichBinary(t), "run", "--log-format", "json", "--summary", "json")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+b.dbURL, "ENRICH_CONFIG="+b.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var s summaryJSON
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("stdout is not one summary object: %v\n%s", err, stdout.String())
	}
	if dec.More() {
		t.Fatalf("more than one object on stdout")
	}
	if !s.Success || s.ExitCode != 0 || s.Done+s.Failed != 25 || s.Table != "contacts" || s.Calls["getAvatar ok"] != s.Done {
		t.Errorf("summary %+v: want success, exit 0, 25 rows done or failed, getAvatar ok = done", s)
	}
	var logLine struct {
		Summary struct{ Done, Failed int64 } `json:"summary"`
	}
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, `"message":"run finished"`) {
			_ = json.Unmarshal([]byte(line), &logLine)
		}
	}
	if logLine.Summary.Done != s.Done || logLine.Summary.Failed != s.Failed {
		t.Errorf("log line says %+v, JSON summary done %d failed %d", logLine.Summary, s.Done, s.Failed)
	}

	// The run is in the runs table, as status shows it.
	cmd = exec.Command(enrichBinary(t), "status", "--json")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+b.dbURL, "ENRICH_CONFIG="+b.config)
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var st struct {
		Runs []struct {
			Owner, State string
			ExitCode     *int `json:"exit_code"`
			Counts       struct{ Done, Failed int64 }
		}
	}
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Runs) != 1 {
		t.Fatalf("status --json runs: %v, %d runs\n%s", err, len(st.Runs), raw)
	}
	if r := st.Runs[0]; r.Owner != s.Run || r.State != "finished" || r.ExitCode == nil || *r.ExitCode != 0 ||
		r.Counts.Done != s.Done || r.Counts.Failed != s.Failed {
		t.Errorf("status lists the run as %+v, want owner %s finished with exit 0, %d done, %d failed", r, s.Run, s.Done, s.Failed)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
