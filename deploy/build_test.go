package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the module's root, relative to this package.
const repoRoot = ".."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is one FROM and what follows it.
type stage struct {
	base, name string
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows what this repository's Dockerfile
// uses: comments, line continuations, one instruction per logical line.
func parseDockerfile(text string) ([]stage, error) {
	var stages []stage
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		s := strings.TrimSpace(lines[i])
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		for strings.HasSuffix(s, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue // a comment inside a continued instruction is dropped, as Docker does
			}
			s = strings.TrimSuffix(s, `\`) + " " + next
		}
		cmd, args, _ := strings.Cut(s, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			w := strings.Fields(in.args)
			w = slices.DeleteFunc(w, func(s string) bool { return strings.HasPrefix(s, "--platform") })
			st := stage{}
			switch {
			case len(w) == 1:
				st.base = w[0]
			case len(w) == 3 && strings.EqualFold(w[1], "AS"):
				st.base, st.name = w[0], w[2]
			default:
				return nil, fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", start, in.args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue // an ARG before the first FROM
			}
			return nil, fmt.Errorf("line %d: %s before the first FROM", start, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages, nil
}

// shellWords splits a command line as sh would, for the quoting these files use: single and
// double quotes, backslash escapes. It expands nothing.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// goBuild is one `go build` command line, taken apart.
type goBuild struct {
	env   map[string]string // NAME=value words before the command
	flags []string          // sorted, each "-name" or "-name=value", without -o
	out   string            // -o
	pkgs  []string
}

// goValueFlags are the go build flags that take the next word as their value.
var goValueFlags = map[string]bool{"-o": true, "-ldflags": true, "-gcflags": true, "-asmflags": true, "-tags": true,
	"-mod": true, "-modfile": true, "-overlay": true, "-pgo": true, "-p": true, "-buildmode": true, "-compiler": true,
	"-installsuffix": true, "-pkgdir": true, "-toolexec": true, "-C": true, "-coverpkg": true, "-covermode": true, "-gccgoflags": true}

func parseGoBuild(words []string) (goBuild, error) {
	b := goBuild{env: map[string]string{}}
	assign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	i := 0
	for ; i < len(words) && assign.MatchString(words[i]); i++ {
		k, v, _ := strings.Cut(words[i], "=")
		b.env[k] = v
	}
	if len(words) < i+2 || words[i] != "go" || words[i+1] != "build" {
		return b, fmt.Errorf("%q: want [NAME=value ...] go build [flags] packages", strings.Join(words, " "))
	}
	for i += 2; i < len(words); i++ {
		w := words[i]
		if slices.Contains([]string{"&&", "||", ";", "|"}, w) {
			return b, fmt.Errorf("%q: keep go build alone on its line, so the two builds can be compared", strings.Join(words, " "))
		}
		if !strings.HasPrefix(w, "-") {
			b.pkgs = append(b.pkgs, w)
			continue
		}
		w = "-" + strings.TrimLeft(w, "-")
		name, value, hasValue := strings.Cut(w, "=")
		if !hasValue && goValueFlags[name] {
			if i+1 >= len(words) {
				return b, fmt.Errorf("%s without a value", name)
			}
			i++
			value, hasValue = words[i], true
		}
		switch {
		case name == "-o":
			b.out = value
		case hasValue:
			b.flags = append(b.flags, name+"="+value)
		default:
			b.flags = append(b.flags, name)
		}
	}
	sort.Strings(b.flags)
	return b, nil
}

// makeBuild is the `go build` line of the Makefile's build target, with its variables expanded;
// set holds variables given on make's command line (`make build VERSION=1.2.3`), which win over
// the Makefile's own.
func makeBuild(makefile string, set map[string]string) (goBuild, error) {
	vars := map[string]string{}
	for k, v := range set {
		vars[k] = v
	}
	assign := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*[?:]?=\s*(.*?)\s*$`)
	lines := strings.Split(makefile, "\n")
	var recipe []string
	for i := 0; i < len(lines); i++ {
		if m := assign.FindStringSubmatch(lines[i]); m != nil {
			if _, seen := vars[m[1]]; !seen {
				vars[m[1]] = m[2]
			}
		}
		if !strings.HasPrefix(lines[i], "build:") {
			continue
		}
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "\t"); i++ {
			l := strings.TrimSpace(lines[i])
			for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
				i++
				l = strings.TrimSuffix(l, `\`) + " " + strings.TrimSpace(lines[i])
			}
			recipe = append(recipe, strings.TrimLeft(l, "@-"))
		}
		break
	}
	if recipe == nil {
		return goBuild{}, errors.New("no build: target")
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var found []string
	for _, l := range recipe {
		if !strings.Contains(l, "$(GO) build") {
			continue
		}
		var missing []string
		l = ref.ReplaceAllStringFunc(l, func(r string) string {
			name := ref.FindStringSubmatch(r)[1]
			v, ok := vars[name]
			if !ok {
				missing = append(missing, name)
			}
			return v
		})
		if missing != nil {
			return goBuild{}, fmt.Errorf("build: %q uses %v, which the Makefile does not define", l, missing)
		}
		found = append(found, l)
	}
	if len(found) != 1 {
		return goBuild{}, fmt.Errorf("build: want one $(GO) build line, found %d", len(found))
	}
	words, err := shellWords(found[0])
	if err != nil {
		return goBuild{}, err
	}
	return parseGoBuild(words)
}

// image is what the test reads from the Dockerfile.
type image struct {
	stages  []stage
	builder stage
	final   stage
	build   goBuild
	// binary is the path of the built binary in the builder stage.
	binary string
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func loadImage(t *testing.T) image {
	t.Helper()
	stages, err := parseDockerfile(readFile(t, filepath.Join(repoRoot, "Dockerfile")))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stage(s): want a builder stage and a minimal final stage", len(stages))
	}
	img := image{stages: stages, final: stages[len(stages)-1]}
	// The builder is the stage the final one copies the binary from.
	from := ""
	for _, in := range img.final.ins {
		if in.cmd == "COPY" && strings.HasPrefix(in.args, "--from=") {
			from = strings.TrimPrefix(strings.Fields(in.args)[0], "--from=")
		}
	}
	for i, st := range stages[:len(stages)-1] {
		if (st.name != "" && st.name == from) || strconv.Itoa(i) == from {
			img.builder = st
		}
	}
	if img.builder.base == "" {
		t.Fatalf("Dockerfile: the final stage copies from %q, which is no earlier stage", from)
	}
	workdir := "/"
	var builds []goBuild
	env := map[string]string{}
	for _, in := range img.builder.ins {
		switch in.cmd {
		case "WORKDIR":
			workdir = path.Join(workdir, in.args)
		case "ENV":
			words, err := shellWords(in.args)
			if err != nil {
				t.Fatalf("Dockerfile line %d: %v", in.line, err)
			}
			for _, w := range words {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					t.Fatalf("Dockerfile line %d: write ENV as NAME=value", in.line)
				}
				env[k] = v
			}
		case "RUN":
			if !strings.Contains(in.args, "go build") {
				continue
			}
			words, err := shellWords(in.args)
			if err != nil {
				t.Fatalf("Dockerfile line %d: %v", in.line, err)
			}
			b, err := parseGoBuild(words)
			if err != nil {
				t.Fatalf("Dockerfile line %d: %v", in.line, err)
			}
			for k, v := range env {
				if _, set := b.env[k]; !set {
					b.env[k] = v
				}
			}
			b.out = path.Join(workdir, b.out)
			builds = append(builds, b)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("Dockerfile: the builder stage has %d go build lines: want one", len(builds))
	}
	img.build, img.binary = builds[0], builds[0].out
	return img
}

// TestImageBuildsAsMake checks that the image's binary is the release build of `make build`:
// the same environment, flags and package.
func TestImageBuildsAsMake(t *testing.T) {
	t.Parallel()
	img := loadImage(t)
	// The image's VERSION build argument is what `make build VERSION=...` sets.
	mk, err := makeBuild(readFile(t, filepath.Join(repoRoot, "Makefile")), map[string]string{"VERSION": "${VERSION}"})
	if err != nil {
		t.Fatalf("Makefile: %v", err)
	}
	if fmt.Sprint(img.build.env) != fmt.Sprint(mk.env) {
		t.Errorf("environment of go build: Dockerfile %v, Makefile %v", img.build.env, mk.env)
	}
	if !slices.Equal(img.build.flags, mk.flags) {
		t.Errorf("go build flags: Dockerfile %q, Makefile %q", img.build.flags, mk.flags)
	}
	// An ARG is seen only in the stage that declares it: without one in the builder, ${VERSION}
	// is empty there whatever --build-arg says.
	hasArg := false
	for _, in := range img.builder.ins {
		name, _, _ := strings.Cut(in.args, "=")
		hasArg = hasArg || (in.cmd == "ARG" && name == "VERSION")
	}
	if !hasArg {
		t.Errorf("Dockerfile: the builder stage declares no ARG VERSION: its go build would link an empty version")
	}
	if !slices.Equal(img.build.pkgs, mk.pkgs) {
		t.Errorf("go build packages: Dockerfile %q, Makefile %q", img.build.pkgs, mk.pkgs)
	}
	for _, want := range []struct{ what, got, want string }{
		{"CGO_ENABLED (a static binary for a base without libc)", mk.env["CGO_ENABLED"], "0"},
		{"-trimpath (no local paths in the binary)", fmt.Sprint(slices.Contains(mk.flags, "-trimpath")), "true"},
		{"the package", strings.Join(mk.pkgs, " "), "./cmd/enrich"},
		{"-buildvcs=true (the revision is stamped even where GOFLAGS turns it off)",
			fmt.Sprint(slices.Contains(mk.flags, "-buildvcs=true")), "true"},
		{"VERSION linked into main.version (enrich version names the release)",
			fmt.Sprint(slices.Contains(mk.flags, "-ldflags=-X main.version=${VERSION}")), "true"},
	} {
		if want.got != want.want {
			t.Errorf("Makefile build: %s is %q: want %q", want.what, want.got, want.want)
		}
	}
}

// TestImage checks the Dockerfile's stages: the pinned Go, the minimal non-root final image.
func TestImage(t *testing.T) {
	t.Parallel()
	img := loadImage(t)
	gomod := readFile(t, filepath.Join(repoRoot, "go.mod"))
	toolchain := regexp.MustCompile(`(?m)^toolchain go(\S+)$`).FindStringSubmatch(gomod)
	if toolchain == nil {
		t.Fatal("go.mod has no toolchain line")
	}
	final := func(cmd string) []instruction {
		var out []instruction
		for _, in := range img.final.ins {
			if in.cmd == cmd {
				out = append(out, in)
			}
		}
		return out
	}
	for _, tt := range []struct {
		name string
		fn   func() error
	}{
		{"builder is go.mod's toolchain", func() error {
			want := regexp.MustCompile(`^golang:` + regexp.QuoteMeta(toolchain[1]) + `(-[a-z0-9.]+)?(@sha256:[0-9a-f]{64})?$`)
			if !want.MatchString(img.builder.base) {
				return fmt.Errorf("builder FROM %s: want golang:%s (go.mod's toolchain line), optionally with a variant", img.builder.base, toolchain[1])
			}
			return nil
		}},
		{"modules before the source", func() error {
			idx := func(match func(instruction) bool) int { return slices.IndexFunc(img.builder.ins, match) }
			mod := idx(func(in instruction) bool {
				return in.cmd == "COPY" && strings.Contains(in.args, "go.mod") && strings.Contains(in.args, "go.sum")
			})
			dl := idx(func(in instruction) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go mod download") })
			src := idx(func(in instruction) bool { return in.cmd == "COPY" && strings.HasPrefix(in.args, ". ") })
			build := idx(func(in instruction) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go build") })
			if mod < 0 || dl < mod || src < dl || build < src {
				return errors.New("builder: want COPY go.mod go.sum, RUN go mod download, COPY . ., then go build, so a source change reuses the module layer")
			}
			return nil
		}},
		{"minimal final base with CA certificates", func() error {
			switch base := img.final.base; {
			case strings.HasPrefix(base, "gcr.io/distroless/static"):
				return nil // ca-certificates, tzdata and /etc/passwd with nonroot
			case base == "scratch":
				for _, in := range final("COPY") {
					if strings.Contains(in.args, "/etc/ssl/certs/ca-certificates.crt") {
						return nil
					}
				}
				return errors.New("FROM scratch without a COPY of /etc/ssl/certs/ca-certificates.crt: Green API is https")
			default:
				return fmt.Errorf("final FROM %s: want gcr.io/distroless/static* or scratch", base)
			}
		}},
		{"non-root USER", func() error {
			users := final("USER")
			if len(users) == 0 {
				return errors.New("the final stage sets no USER")
			}
			u := users[len(users)-1].args
			uid, gid, _ := strings.Cut(u, ":")
			if n, err := strconv.Atoi(uid); err != nil || n != imageUID {
				return fmt.Errorf("USER %s: want the numeric %d (runAsNonRoot can check a number only), as the manifests' runAsUser", u, imageUID)
			}
			if gid != "" {
				if n, err := strconv.Atoi(gid); err != nil || n == 0 {
					return fmt.Errorf("USER %s: want a numeric group other than 0", u)
				}
			}
			return nil
		}},
		{"ENTRYPOINT is the built binary", func() error {
			eps := final("ENTRYPOINT")
			if len(eps) != 1 {
				return errors.New("want one ENTRYPOINT in the final stage")
			}
			var argv []string
			if err := json.Unmarshal([]byte(eps[0].args), &argv); err != nil || len(argv) == 0 {
				return fmt.Errorf("ENTRYPOINT %s: want the exec form, [\"/enrich\"], so signals reach enrich (no shell between)", eps[0].args)
			}
			for _, in := range final("COPY") {
				w := strings.Fields(in.args)
				if len(w) == 3 && strings.HasPrefix(w[0], "--from=") && w[2] == argv[0] {
					if w[1] != img.binary {
						return fmt.Errorf("COPY %s: the builder writes the binary to %s", in.args, img.binary)
					}
					return nil
				}
			}
			return fmt.Errorf("ENTRYPOINT %s: no COPY --from=%s of %s to it", eps[0].args, img.builder.name, img.binary)
		}},
		{"OCI labels", func() error {
			var all string
			for _, in := range final("LABEL") {
				all += " " + in.args
			}
			for _, k := range []string{"title", "source", "version", "revision"} {
				if !strings.Contains(all, "org.opencontainers.image."+k+"=") {
					return fmt.Errorf("LABEL org.opencontainers.image.%s is missing", k)
				}
			}
			return nil
		}},
		{"dockerignore keeps .git and drops bin", func() error {
			var ignore []string
			for _, l := range strings.Split(readFile(t, filepath.Join(repoRoot, ".dockerignore")), "\n") {
				if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
					ignore = append(ignore, l)
				}
			}
			for _, p := range ignore {
				if strings.Trim(p, "/*") == ".git" || p == "*" || p == "**" {
					return fmt.Errorf(".dockerignore has %q: the image's build would lose the VCS stamp `make build` has", p)
				}
			}
			if !slices.Contains(ignore, "bin/") && !slices.Contains(ignore, "bin") {
				return errors.New(".dockerignore: want bin/ (local builds) out of the build context")
			}
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.fn(); err != nil {
				t.Errorf("Dockerfile: %v", err)
			}
		})
	}
}

// TestShellWords checks the splitter the build comparison rests on.
func TestShellWords(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{`CGO_ENABLED=0 go build -trimpath -o bin/enrich ./cmd/enrich`, []string{"CGO_ENABLED=0", "go", "build", "-trimpath", "-o", "bin/enrich", "./cmd/enrich"}},
		{`go build -ldflags "-s -w" -tags 'a b' x\ y`, []string{"go", "build", "-ldflags", "-s -w", "-tags", "a b", "x y"}},
		{`a "b \"c\"" ''`, []string{"a", `b "c"`, ""}},
	} {
		got, err := shellWords(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	b, err := parseGoBuild([]string{"CGO_ENABLED=0", "go", "build", "--trimpath", "-ldflags", "-s", "-o=x", "./cmd/enrich"})
	if err != nil || b.out != "x" || !slices.Equal(b.flags, []string{"-ldflags=-s", "-trimpath"}) || b.env["CGO_ENABLED"] != "0" {
		t.Errorf("parseGoBuild: %+v, %v", b, err)
	}
}
