package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// TestVersionFromMakeBuild: `make build VERSION=...` on a machine whose Go settings turn VCS
// stamping off (GOFLAGS=-buildvcs=false) still gives a binary that names its release, and its
// commit where Go can read the checkout; without VERSION, make names `git describe`'s.
func TestVersionFromMakeBuild(t *testing.T) {
	t.Parallel()
	git := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			t.Fatalf("git %s: %v (the test needs the checkout make build stamps)", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	root, head := git("rev-parse", "--show-toplevel"), git("rev-parse", "HEAD")
	// The other tests' binary is built with the same flags first, so make build below only
	// links instead of compiling every dependency beside that build.
	enrichBinary(t)
	make := func(args ...string) string {
		t.Helper()
		mk := exec.Command("make", append([]string{"-C", root}, args...)...)
		mk.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
		out, err := mk.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mk, err, out)
		}
		return string(out)
	}
	describe := git("describe", "--tags", "--always", "--dirty")
	if dry := make("-n", "build"); !strings.Contains(dry, `-ldflags "-X main.version=`+describe+`"`) ||
		!strings.Contains(dry, "-buildvcs=true") {
		t.Errorf("make -n build (git describe says %s):\n%s", describe, dry)
	}
	bin := filepath.Join(t.TempDir(), "enrich")
	make("build", "VERSION=v9.8.7-test", "BIN="+bin)
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("enrich version --json: %v", err)
	}
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("enrich version --json: %v\n%s", err, out)
	}
	t.Logf("make build VERSION=v9.8.7-test with GOFLAGS=-buildvcs=false: %+v", v)
	if v.Version != "v9.8.7-test" {
		t.Errorf("enrich version --json = %+v, want version v9.8.7-test", v)
	}
	// Go reads a checkout whose .git is a directory; a `git worktree` (.git a file) it does not
	// recognise at all, -buildvcs=true or not, so there only the version can be checked.
	if fi, err := os.Stat(filepath.Join(root, ".git")); err == nil && fi.IsDir() {
		if v.Revision != head || v.Time == versionUnknown {
			t.Errorf("enrich version --json = %+v, want revision %s and its time (-buildvcs=true)", v, head)
		}
	} else {
		t.Logf("%s/.git is not a directory (a git worktree): Go stamps no revision there; checked the version only", root)
	}
}
