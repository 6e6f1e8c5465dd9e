package deploy

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// cronFile is the /etc/cron.d file for VMs, relative to this package.
var cronFile = filepath.Join("cron", "enrich.cron")

// cronField checks one crontab time field: a comma list of *, N, N-M, each optionally /STEP,
// with numbers in [lo, hi]. Names (mon, jan) are not used here.
func cronField(f string, lo, hi int) error {
	num := func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%q: want a number from %d to %d", s, lo, hi)
		}
		return nil
	}
	for _, item := range strings.Split(f, ",") {
		rng, step, hasStep := strings.Cut(item, "/")
		if hasStep {
			if n, err := strconv.Atoi(step); err != nil || n < 1 {
				return fmt.Errorf("step %q: want a number above 0", step)
			}
		}
		if rng == "*" {
			continue
		}
		a, b, isRange := strings.Cut(rng, "-")
		if err := num(a); err != nil {
			return err
		}
		if isRange {
			if err := num(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// cronEntry is one job line of a /etc/cron.d file.
type cronEntry struct {
	line    int
	fields  []string // minute, hour, day of month, month, day of week
	user    string
	command string
}

// parseCronD reads a /etc/cron.d file: comments, NAME=value lines, and job lines of five time
// fields, a user and a command.
func parseCronD(text string) ([]cronEntry, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("the last line has no newline: cron ignores it")
	}
	envLine := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\s*=`)
	job := regexp.MustCompile(`^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.+)$`)
	var entries []cronEntry
	for i, line := range strings.Split(text, "\n") {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") || envLine.MatchString(s) {
			continue
		}
		m := job.FindStringSubmatch(s)
		if m == nil {
			return nil, fmt.Errorf("line %d: want five time fields, a user and a command", i+1)
		}
		entries = append(entries, cronEntry{line: i + 1, fields: m[1:6], user: m[6], command: m[7]})
	}
	return entries, nil
}

// TestCronLine checks the VM's crontab line: it parses, runs as a non-root user, holds a lock
// so two runs never overlap, and logs JSON.
func TestCronLine(t *testing.T) {
	t.Parallel()
	entries, err := parseCronD(readFile(t, cronFile))
	if err != nil {
		t.Fatalf("%s: %v", cronFile, err)
	}
	if len(entries) != 1 {
		t.Fatalf("%s: %d job lines: want one", cronFile, len(entries))
	}
	e := entries[0]
	ranges := []struct {
		name   string
		lo, hi int
	}{{"minute", 0, 59}, {"hour", 0, 23}, {"day of month", 1, 31}, {"month", 1, 12}, {"day of week", 0, 7}}
	for i, r := range ranges {
		if err := cronField(e.fields[i], r.lo, r.hi); err != nil {
			t.Errorf("%s:%d: %s field: %v", cronFile, e.line, r.name, err)
		}
	}
	if e.user == "root" || !regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`).MatchString(e.user) {
		t.Errorf("%s:%d: user %q: want a system user of its own, not root", cronFile, e.line, e.user)
	}
	words := strings.Fields(e.command)
	for _, tt := range []struct {
		what string
		ok   bool
	}{
		{"flock -n (a run still going makes the next one not start)", regexp.MustCompile(`\bflock\s+(-\S+\s+)*-n\b`).MatchString(e.command)},
		{"a lock file in /run/lock or /var/lock", regexp.MustCompile(`\sflock\s.*\s/(run|var)/lock/\S+`).MatchString(" " + e.command)},
		{"enrich run", regexp.MustCompile(`\benrich run\b`).MatchString(e.command)},
		{"--config FILE", regexp.MustCompile(`\s--config[= ]/\S+`).MatchString(e.command)},
		{"--log-format json", strings.Contains(e.command, "--log-format json")},
		{"the output kept (>> a file, or | logger)", strings.Contains(e.command, ">>") || strings.Contains(e.command, "| logger")},
		{"no unescaped % (cron makes it a newline)", !regexp.MustCompile(`(^|[^\\])%`).MatchString(e.command)},
		{"flock before enrich", len(words) > 0 && words[0] == "flock"},
	} {
		if !tt.ok {
			t.Errorf("%s:%d: the command lacks %s: %s", cronFile, e.line, tt.what, e.command)
		}
	}
	// cron hands the command to /bin/sh -c.
	if out, err := exec.Command("sh", "-n", "-c", e.command).CombinedOutput(); err != nil {
		t.Errorf("%s:%d: sh -n: %v\n%s", cronFile, e.line, err, out)
	}
}

// TestCronField checks the field parser on what it must refuse.
func TestCronField(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		f      string
		lo, hi int
		ok     bool
	}{
		{"0", 0, 59, true}, {"*/15", 0, 59, true}, {"1-5,7", 0, 7, true},
		{"60", 0, 59, false}, {"*/0", 0, 59, false}, {"x", 0, 23, false}, {"0-32", 1, 31, false},
	} {
		if err := cronField(tt.f, tt.lo, tt.hi); (err == nil) != tt.ok {
			t.Errorf("cronField(%q, %d, %d) = %v, want ok %v", tt.f, tt.lo, tt.hi, err, tt.ok)
		}
	}
	if _, err := parseCronD("0 1 * * * enrich true"); err == nil {
		t.Error("parseCronD accepted a last line without a newline")
	}
}
