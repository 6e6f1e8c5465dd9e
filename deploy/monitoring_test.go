package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/metrics"
	"sigs.k8s.io/yaml"
)

const (
	// promtoolPath is where tools/test-deps.sh makes promtool be (Debian's prometheus package).
	promtoolPath = "/usr/bin/promtool"
	// prometheusDir holds the alert rules, their unit tests and the dashboard.
	prometheusDir = "prometheus"
)

var (
	rulesFile     = filepath.Join(prometheusDir, "enrich-rules.yaml")
	rulesTestFile = filepath.Join(prometheusDir, "enrich-rules.test.yaml")
	dashboardFile = filepath.Join(prometheusDir, "enrich-dashboard.json")
)

// promtool runs Prometheus's own promtool with args (stdin when not nil) and returns its output
// and error. Without promtool the test fails, never skips: tools/test-deps.sh installs it.
func promtool(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	if _, err := os.Stat(promtoolPath); err != nil {
		t.Fatalf("%s: %v: install it with tools/test-deps.sh (as root), or apt-get install prometheus", promtoolPath, err)
	}
	cmd := exec.Command(promtoolPath, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// knownSeries are the names of every series enrich serves on /metrics during a run and pushes
// at its end, from the metrics package itself (a histogram's _bucket, _sum and _count
// included), with the exposition of each for promtool.
func knownSeries(t *testing.T) (names map[string]bool, scraped, pushed []byte) {
	t.Helper()
	m := metrics.New(metrics.Build{Version: "test", Revision: "test", GoVersion: "go"})
	m.Follow(func() enrich.Snapshot {
		return enrich.Snapshot{Due: 10, Instances: []enrich.InstanceSnapshot{{ID: "1101000001", State: "running", Rate: 10, Headroom: 0.015}}}
	})
	m.Call("1101000001", "getAvatar", "ok", 300*time.Millisecond)
	m.Call("1101000001", "getAvatar", "rate_limited", 100*time.Millisecond)
	m.Rows("done", 1)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	scraped, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}

	push := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushed, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer push.Close()
	p, err := metrics.NewPusher(push.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := p.Push(context.Background(), metrics.Completion{Table: "contacts", Success: true, Start: now.Add(-time.Hour), End: now,
		Summary: enrich.Summary{Done: 1}}); err != nil {
		t.Fatal(err)
	}

	names = map[string]bool{}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)
	for _, body := range [][]byte{scraped, pushed} {
		for _, m := range typeLine.FindAllStringSubmatch(string(body), -1) {
			names[m[1]] = true
			switch m[2] {
			case "histogram":
				names[m[1]+"_bucket"], names[m[1]+"_sum"], names[m[1]+"_count"] = true, true, true
			case "summary":
				names[m[1]+"_sum"], names[m[1]+"_count"] = true, true
			}
		}
	}
	for _, want := range []string{"enrich_api_calls_total", "enrich_last_success_timestamp_seconds", "enrich_api_request_duration_seconds_bucket"} {
		if !names[want] {
			t.Fatalf("the metrics package serves or pushes no %s: the test reads the expositions wrong (%d names)", want, len(names))
		}
	}
	return names, scraped, pushed
}

// promqlWords are PromQL's keywords and the identifiers that are not series names.
var promqlWords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "atan2": true}

// seriesNames are the series names a PromQL expression reads: what is left once strings, label
// matchers, ranges, grouping clauses, function calls and keywords are taken out.
func seriesNames(expr string) []string {
	for _, re := range []string{`"(\\.|[^"\\])*"`, `'(\\.|[^'\\])*'`, `\{[^}]*\}`, `\[[^\]]*\]`,
		`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	var names []string
	ident := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	for _, loc := range ident.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.$") {
			continue // an exponent (1e6) or a variable ($__rate_interval)
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") || promqlWords[strings.ToLower(word)] {
			continue // a function or aggregation, or a keyword
		}
		names = append(names, word)
	}
	return names
}

// TestSeriesNames checks the expression reader the dashboard and rules tests rely on.
func TestSeriesNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`sum by (instance) (rate(enrich_api_calls_total{job="enrich", outcome=~"ok|x{y}"}[$__rate_interval]))`, []string{"enrich_api_calls_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket{method="getAvatar"}[5m])))`, []string{"a_bucket"}},
		{"time() - max(b) > 26 * 3600\nor absent(c{job=\"enrich\"})", []string{"b", "c"}},
		{`x / ignoring(status) group_left y offset 5m and on(table) z == bool 1`, []string{"x", "y", "z"}},
		{`count(max by (instance) (s{state="out"}) == 1) or vector(0)`, []string{"s"}},
	} {
		if got := seriesNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("seriesNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// TestMetricsLint runs promtool check metrics on what enrich serves and what it pushes (the run's
// own /metrics, scraped from the real binary, is checked in cmd/enrich's TestMetricsDuringRun),
// and makes sure promtool does report a series named against the conventions.
func TestMetricsLint(t *testing.T) {
	t.Parallel()
	_, scraped, pushed := knownSeries(t)
	for what, body := range map[string][]byte{"/metrics": scraped, "the push": pushed} {
		if out, err := promtool(t, body, "check", "metrics"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%s: promtool check metrics: %v\n%s", what, err, out)
		}
	}
	bad := "# HELP enrich_rows_count Rows.\n# TYPE enrich_rows_count counter\nenrich_rows_count 1\n"
	if out, err := promtool(t, []byte(bad), "check", "metrics"); err == nil || !strings.Contains(out, "_total") {
		t.Errorf("promtool check metrics passed a counter without _total (%v): %s", err, out)
	}
}

// ruleGroups is the part of a Prometheus rules file the test reads.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert string `json:"alert"`
			Expr  string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

// ruleTests is the part of a promtool test file the test reads.
type ruleTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string            `json:"alertname"`
			ExpAlerts []json.RawMessage `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertRules checks the alert rules with Prometheus's own tools: promtool check rules, then
// promtool test rules on the unit tests, which must make every alert fire and stay quiet at
// least once; and every series a rule reads is one enrich serves or pushes.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	if out, err := promtool(t, nil, "check", "rules", rulesFile); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	out, err := promtool(t, nil, "test", "rules", rulesTestFile)
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", rulesTestFile, err, out)
	}
	t.Logf("promtool test rules %s:\n%s", rulesTestFile, out)

	var rules ruleGroups
	// Not strict: rules carry for, labels and annotations too, which promtool has checked.
	if err := yaml.Unmarshal([]byte(readFile(t, rulesFile)), &rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var tests ruleTests
	if err := yaml.Unmarshal([]byte(readFile(t, rulesTestFile)), &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Contains(tests.RuleFiles, filepath.Base(rulesFile)) {
		t.Errorf("%s: rule_files %q: want %s", rulesTestFile, tests.RuleFiles, filepath.Base(rulesFile))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	known, _, _ := knownSeries(t)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: alert %s: a test where it fires %t, one where it stays quiet %t: want both", rulesTestFile, r.Alert, fires[r.Alert], quiet[r.Alert])
			}
			names := seriesNames(r.Expr)
			if len(names) == 0 {
				t.Errorf("%s: alert %s reads no series: %s", rulesFile, r.Alert, r.Expr)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("%s: alert %s reads %s, which enrich neither serves nor pushes", rulesFile, r.Alert, n)
				}
			}
			if !strings.Contains(r.Expr, `job="enrich"`) {
				t.Errorf("%s: alert %s: select job=\"enrich\", as the PodMonitor and the push name it", rulesFile, r.Alert)
			}
		}
	}
	// The alerts the operator's guide's "Alerts to set" (docs/operations.md) names.
	for _, want := range []string{"EnrichNoSuccess", "EnrichLastRunFailed", "EnrichFailedRowsShare", "EnrichInstanceOut", "EnrichRateLimited"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("%s: no alert %s", rulesFile, want)
		}
	}
	guide := readFile(t, filepath.Join(repoRoot, "docs", "operations.md"))
	for _, a := range alerts {
		if !strings.Contains(guide, "`"+a+"`") {
			t.Errorf("docs/operations.md (Alerts to set) does not name %s", a)
		}
	}
}

// dashboardExprs are the PromQL expressions of a Grafana dashboard's panels (rows' nested panels
// included), by panel title.
func dashboardExprs(t *testing.T, text string) map[string][]string {
	t.Helper()
	type panel struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(text), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: want a title and a uid", dashboardFile)
	}
	out := map[string][]string{}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: panel: %v", dashboardFile, err)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q queries nothing", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				out[p.Title] = append(out[p.Title], tg.Expr)
			}
		}
	}
	walk(d.Panels)
	return out
}

// TestDashboard checks that every series the Grafana dashboard queries is one enrich serves or
// pushes, and that it shows what an operator looks for: each instance's rate and 429s, rows by
// status, rows due and the latency.
func TestDashboard(t *testing.T) {
	t.Parallel()
	known, _, _ := knownSeries(t)
	exprs := dashboardExprs(t, readFile(t, dashboardFile))
	used := map[string]bool{}
	var titles []string
	for title, es := range exprs {
		titles = append(titles, title)
		for _, e := range es {
			names := seriesNames(e)
			if len(names) == 0 {
				t.Errorf("%s: panel %q: %q reads no series", dashboardFile, title, e)
			}
			for _, n := range names {
				used[n] = true
				if !known[n] {
					t.Errorf("%s: panel %q queries %s, which enrich neither serves nor pushes", dashboardFile, title, n)
				}
			}
			if !strings.Contains(e, `job="enrich"`) {
				t.Errorf("%s: panel %q: %q: select job=\"enrich\"", dashboardFile, title, e)
			}
		}
	}
	sort.Strings(titles)
	t.Logf("%s: %d panels: %s", dashboardFile, len(titles), strings.Join(titles, "; "))
	for series, what := range map[string]string{
		"enrich_instance_rate_rps":                   "each instance's rate",
		"enrich_api_calls_total":                     "the requests sent per instance",
		"enrich_api_rate_limited_total":              "429s",
		"enrich_rows_total":                          "rows by status",
		"enrich_rows_due":                            "rows due",
		"enrich_api_request_duration_seconds_bucket": "the latency",
	} {
		if !used[series] {
			t.Errorf("%s: no panel shows %s (%s)", dashboardFile, what, series)
		}
	}
}
