package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
)

// versionUnknown stands for a VCS field the build did not record (go run, go test, a build
// outside a checkout, or -buildvcs=false).
const versionUnknown = "unknown"

// version is the release's name, set at link time by `make build` and the Dockerfile
// (-ldflags "-X main.version=$(VERSION)"): a checkout's build records "(devel)" as the module
// version, which says nothing of the release. Empty: the module version Go recorded.
var version string

// versionInfo is what the binary knows of its own build, from debug.ReadBuildInfo: for `enrich
// version`, the runs table and the build_info metric.
type versionInfo struct {
	// Version is the VERSION the binary was built with (make build VERSION=..., the Dockerfile's
	// build argument; by default `git describe --tags --always --dirty`), else the main
	// module's version: a tag such as v1.2.3 for `go install ...@v1.2.3`, a pseudo-version or
	// "(devel)" for a plain go build from a checkout.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from; "unknown" when not recorded.
	Revision string `json:"revision"`
	// Time is the commit's time (RFC 3339); "unknown" when not recorded.
	Time string `json:"time"`
	// Modified says the checkout had uncommitted changes.
	Modified bool `json:"modified"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go_version"`
}

// buildVersion reads the binary's build information; what is missing reads "(devel)" or
// "unknown". A version set at link time (version) comes before the module version.
func buildVersion() versionInfo {
	v := readBuildInfo()
	if version != "" {
		v.Version = version
	}
	return v
}

// readBuildInfo is what Go recorded in the binary.
func readBuildInfo() versionInfo {
	v := versionInfo{Version: "(devel)", Revision: versionUnknown, Time: versionUnknown, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				v.Revision = s.Value
			}
		case "vcs.time":
			if s.Value != "" {
				v.Time = s.Value
			}
		case "vcs.modified":
			v.Modified, _ = strconv.ParseBool(s.Value)
		}
	}
	return v
}

// Short is the version in one word, for the runs table: the module version, and the first 12
// digits of the revision when known ("+dirty" when modified).
func (v versionInfo) Short() string {
	s := v.Version
	if v.Revision != versionUnknown {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += "+" + rev
		if v.Modified {
			s += ".dirty"
		}
	}
	return s
}

func cmdVersion(_ context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(a.io.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: enrich version [--json]   (or enrich --version)\n\n"+
			"Prints the version (make build VERSION=...), the VCS revision, its time and modified flag, and the Go version the\n"+
			"binary was built with, from the build information Go records in it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print one JSON object (version, revision, time, modified, go_version)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	v := buildVersion()
	if *asJSON {
		enc := json.NewEncoder(a.io.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Fprintf(a.io.out, "enrich %s\n  revision  %s\n  time      %s\n  modified  %t\n  go        %s\n",
		v.Version, v.Revision, v.Time, v.Modified, v.GoVersion)
	return nil
}
