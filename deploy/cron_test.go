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

// installStep is one command of the cron file's install guide.
type installStep struct {
	line  string
	words []string
}

// cronInstallSteps are the commands the cron file's header shows, indented under "#   ".
func cronInstallSteps(text string) []installStep {
	var steps []installStep
	for line := range strings.Lines(text) {
		cmd, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "#   ")
		if !ok || !regexp.MustCompile(`^(useradd|install) `).MatchString(cmd) {
			continue
		}
		steps = append(steps, installStep{line: cmd})
	}
	return steps
}

// installed is what the guide has made so far: users, and paths with owner, group and mode.
type installed struct {
	users map[string]string // user: home
	paths map[string]pathInfo
}

type pathInfo struct {
	dir          bool
	owner, group string
	mode         uint64
}

// systemDirs exist on any machine the guide runs on.
var systemDirs = map[string]bool{"/usr/local/bin": true, "/etc/cron.d": true, "/var/lib": true, "/var/log": true, "/etc": true}

// apply checks one step against what exists and records what it makes.
func (st *installed) apply(words []string) error {
	flags := map[string]string{}
	var args []string
	for i := 1; i < len(words); i++ {
		w := words[i]
		switch w {
		case "-o", "-g", "-m", "--home-dir", "--shell":
			if i+1 >= len(words) {
				return fmt.Errorf("%s needs a value", w)
			}
			flags[w] = words[i+1]
			i++
		case "-d", "--system", "--create-home":
			flags[w] = "1"
		default:
			if strings.HasPrefix(w, "-") {
				return fmt.Errorf("option %s: the test does not know it", w)
			}
			args = append(args, w)
		}
	}
	known := func(name string) error {
		if name == "" || name == "root" {
			return nil
		}
		if _, ok := st.users[name]; !ok {
			return fmt.Errorf("user or group %q does not exist yet: create it (useradd) first", name)
		}
		return nil
	}
	if words[0] == "useradd" {
		if len(args) != 1 {
			return fmt.Errorf("useradd: want one user name, got %q", args)
		}
		home := flags["--home-dir"]
		if flags["--system"] == "" || flags["--create-home"] == "" || home == "" {
			return errors.New("useradd: want --system --create-home --home-dir DIR: a system user whose home exists, for its ~/.pgpass")
		}
		if !strings.HasSuffix(flags["--shell"], "nologin") {
			return errors.New("useradd: want --shell /usr/sbin/nologin: nobody logs in as the job's user")
		}
		st.users[args[0]] = home
		st.paths[home] = pathInfo{dir: true, owner: args[0], group: args[0], mode: 0o750}
		return nil
	}
	if err := known(flags["-o"]); err != nil {
		return err
	}
	if err := known(flags["-g"]); err != nil {
		return err
	}
	mode, err := strconv.ParseUint(flags["-m"], 8, 32)
	if err != nil {
		return fmt.Errorf("-m %q: give the mode in octal", flags["-m"])
	}
	info := pathInfo{dir: flags["-d"] != "", owner: cmpOr(flags["-o"], "root"), group: cmpOr(flags["-g"], "root"), mode: mode}
	dst := args[len(args)-1]
	if info.dir {
		if len(args) != 1 {
			return fmt.Errorf("install -d: want one directory, got %q", args)
		}
	} else {
		if len(args) != 2 {
			return fmt.Errorf("install: want SOURCE DEST, got %q", args)
		}
		if dir := filepath.Dir(dst); !systemDirs[dir] && !st.paths[dir].dir {
			return fmt.Errorf("install %s: the directory %s does not exist yet (install -d it first)", dst, dir)
		}
	}
	st.paths[dst] = info
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestCronInstallGuide runs the cron file's install guide on paper: every command parses as
// sh, each has what the earlier ones made (the user before a file it owns, /etc/enrich before
// the config in it, the home directory before its .pgpass), and together they make what the
// cron line and enrich need: the config and token where the line and the config name them, the
// token readable by the job's user only, its .pgpass, the log directory, the cron file last.
// The operator's guide (docs/operations.md) shows the same commands.
func TestCronInstallGuide(t *testing.T) {
	t.Parallel()
	text := readFile(t, cronFile)
	entries, err := parseCronD(text)
	if err != nil || len(entries) != 1 {
		t.Fatalf("%s: %v, %d job lines", cronFile, err, len(entries))
	}
	e := entries[0]
	steps := cronInstallSteps(text)
	if len(steps) < 5 {
		t.Fatalf("%s: %d install commands in the header: want the whole guide", cronFile, len(steps))
	}
	st := installed{users: map[string]string{}, paths: map[string]pathInfo{}}
	for _, s := range steps {
		if out, err := exec.Command("sh", "-n", "-c", s.line).CombinedOutput(); err != nil {
			t.Errorf("%s: %q: sh -n: %v\n%s", cronFile, s.line, err, out)
			continue
		}
		words, err := shellWords(s.line)
		if err != nil {
			t.Fatalf("%s: %q: %v", cronFile, s.line, err)
		}
		if err := st.apply(words); err != nil {
			t.Errorf("%s: %q: %v", cronFile, s.line, err)
		}
	}
	if t.Failed() {
		return
	}
	user := e.user
	home, ok := st.users[user]
	if !ok {
		t.Fatalf("%s: the cron line runs as %q, which the guide does not create", cronFile, user)
	}
	config := regexp.MustCompile(`--config[= ](\S+)`).FindStringSubmatch(e.command)
	logFile := regexp.MustCompile(`>>\s*(\S+)`).FindStringSubmatch(e.command)
	if config == nil || logFile == nil {
		t.Fatalf("%s: the cron line lacks --config FILE or >> LOG", cronFile)
	}
	readable := func(p pathInfo, byUser bool) bool {
		switch {
		case p.owner == user:
			return p.mode&0o400 != 0
		case p.group == user:
			return p.mode&0o040 != 0
		}
		return !byUser || p.mode&0o004 != 0
	}
	for _, tt := range []struct {
		what string
		ok   bool
	}{
		{"the config file " + config[1], st.paths[config[1]] != (pathInfo{}) && readable(st.paths[config[1]], true)},
		{"its directory " + filepath.Dir(config[1]) + ", which the user can enter",
			st.paths[filepath.Dir(config[1])].dir && readable(st.paths[filepath.Dir(config[1])], true) && st.paths[filepath.Dir(config[1])].mode&0o007 == 0},
		{"the config not writable by the job's user", st.paths[config[1]].owner != user && st.paths[config[1]].mode&0o022 == 0},
		{"the token file " + tokenPath + ", the user's alone (0400 or 0600)",
			st.paths[tokenPath].owner == user && st.paths[tokenPath].mode&0o077 == 0},
		{"the .pgpass in the user's home, 0600", st.paths[filepath.Join(home, ".pgpass")].owner == user && st.paths[filepath.Join(home, ".pgpass")].mode == 0o600},
		{"the log directory " + filepath.Dir(logFile[1]) + ", the user's", st.paths[filepath.Dir(logFile[1])].dir && st.paths[filepath.Dir(logFile[1])].owner == user},
		{"the binary in /usr/local/bin (the cron PATH)", st.paths["/usr/local/bin/enrich"].mode&0o001 != 0},
		{"the cron file, installed last", strings.HasPrefix(steps[len(steps)-1].line, "install ") &&
			strings.HasPrefix(st.paths["/etc/cron.d/enrich"].owner, "root") && st.paths["/etc/cron.d/enrich"].mode == 0o644},
	} {
		if !tt.ok {
			t.Errorf("%s: the guide does not make %s", cronFile, tt.what)
		}
	}
	if !strings.Contains(text, `token_file = "`+tokenPath+`"`) {
		t.Errorf("%s: the header does not tell the config's token_file = %q", cronFile, tokenPath)
	}
	guide := readFile(t, filepath.Join(repoRoot, "docs", "operations.md"))
	for _, s := range steps {
		if !strings.Contains(guide, "\n  "+s.line+"\n") {
			t.Errorf("docs/operations.md (Running from cron on a VM) lacks the guide's command %q", s.line)
		}
	}
}

// tokenPath is where the cron guide puts the Green API token, the config's token_file.
const tokenPath = "/etc/enrich/greenapi-token"
