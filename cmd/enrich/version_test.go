package main

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: enrich version and enrich --version run without a configuration or a database and
// print the Go version; --json parses; what the test binary lacks reads "(devel)" or "unknown".
func TestVersion(t *testing.T) {
	t.Parallel()
	v := buildVersion()
	if v.GoVersion != runtime.Version() || v.Version == "" || v.Revision == "" || v.Time == "" {
		t.Errorf("buildVersion() = %+v", v)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, stderr, err := runCLI(t, nil, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		for _, want := range []string{"enrich " + v.Version + "\n", "revision  " + v.Revision, "time      " + v.Time,
			"go        " + runtime.Version() + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v printed\n%s\nwithout %q", args, out, want)
			}
		}
	}
	out, _, err := runCLI(t, nil, "version", "--json")
	var got versionInfo
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err != nil || dec.Decode(&got) != nil || got != v {
		t.Errorf("version --json: %v\n%s\nwant %+v", err, out, v)
	}
	if _, _, err := runCLI(t, nil, "version", "now"); !isConfigError(err) {
		t.Errorf("version now: %v, want a usage error", err)
	}
}

// TestVersionShort: the runs table's one word names the revision when there is one.
func TestVersionShort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    versionInfo
		want string
	}{
		{versionInfo{Version: "(devel)", Revision: versionUnknown}, "(devel)"},
		{versionInfo{Version: "v1.2.3", Revision: "0123456789abcdef0123"}, "v1.2.3+0123456789ab"},
		{versionInfo{Version: "(devel)", Revision: "0123456789abcdef0123", Modified: true}, "(devel)+0123456789ab.dirty"},
	} {
		if got := tc.v.Short(); got != tc.want {
			t.Errorf("%+v.Short() = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func isConfigError(err error) bool {
	var ce *configError
	return errors.As(err, &ce)
}

// TestVersionHelp: enrich --help lists requeue and version; version --help shows its flag.
func TestVersionHelp(t *testing.T) {
	t.Parallel()
	out, _, err := runCLI(t, nil, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n  requeue    ", "\n  version    ", "enrich --version", "\n  status     "} {
		if !strings.Contains(out, want) {
			t.Errorf("enrich --help lacks %q:\n%s", want, out)
		}
	}
	_, stderr, err := runCLI(t, nil, "version", "--help")
	if exitCode(err, nil) != exitOK || !strings.Contains(stderr, "Usage: enrich version") || !strings.Contains(stderr, "\n  -json") {
		t.Errorf("version --help: %v\n%s", err, stderr)
	}
}
