package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	corev1 "k8s.io/api/core/v1"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// removeBinary deletes the directory enrichBinary built into, if it built.
func removeBinary() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

// enrichBinary builds enrich once per test process with the Makefile's own build line (its
// environment, flags and package; only -o differs), so the release build is known to work.
func enrichBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		mk, err := makeBuild(readFile(t, filepath.Join(repoRoot, "Makefile")), map[string]string{"VERSION": "deploy-test"})
		if err != nil {
			buildErr = fmt.Errorf("Makefile: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "enrich-deploy-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "enrich")
		cmd := exec.Command("go", append(append([]string{"build"}, mk.flags...), append([]string{"-o", binPath}, mk.pkgs...)...)...)
		cmd.Dir = repoRoot
		cmd.Env = os.Environ()
		for k, v := range mk.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s: %v\n%s", cmd, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// podRun runs enrich as a workload's pod would: its args and env, with what only the cluster
// has replaced by the test's (the paths of the mounted files, the database, the API host).
type podRun struct {
	bin      string
	config   string // the ConfigMap's config.toml, written to a temp file
	dbURL    string
	apiURL   string
	pushURL  string
	token    string
	forbidIn []string // strings no output may contain
}

// env is the pod's environment: each valueFrom resolved as the kubelet would, plus
// GREENAPI_API_URL pointing at the simulator (the ConfigMap's api_url is Green API's).
func (p podRun) env(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || name == "ENRICH_CONFIG" || name == "GOMEMLIMIT" || strings.HasPrefix(name, "GREENAPI_") {
			continue
		}
		env = append(env, kv)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Key == "database-url":
			env = append(env, e.Name+"="+p.dbURL)
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			// What the downward API gives with the default divisor: the limit in bytes.
			lim := c.Resources.Limits[corev1.ResourceMemory]
			env = append(env, e.Name+"="+strconv.FormatInt(lim.Value(), 10))
		default:
			t.Fatalf("env %s: the test does not know how to resolve its valueFrom", e.Name)
		}
	}
	return append(env, "GREENAPI_API_URL="+p.apiURL)
}

// args are the container's args with the cluster's addresses swapped for the test's.
func (p podRun) args(c *corev1.Container) []string {
	args := append([]string(nil), c.Args...)
	for i := 0; i+1 < len(args); i++ {
		switch strings.TrimLeft(args[i], "-") {
		case "config":
			args[i+1] = p.config
		case "metrics-addr":
			args[i+1] = "127.0.0.1:0"
		case "pushgateway":
			args[i+1] = p.pushURL
		}
	}
	return args
}

// run runs one command and returns its stdout; it fails the test unless enrich exits 0.
func (p podRun) run(t *testing.T, what string, env, args []string, stdin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	for _, s := range p.forbidIn {
		if strings.Contains(stdout.String()+stderr.String(), s) {
			t.Errorf("%s: the output shows the token", what)
		}
	}
	if err != nil {
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		t.Fatalf("%s: enrich %s exited %d (%v), want 0\nstdout:\n%s\nstderr:\n%s", what, strings.Join(args, " "), code, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestManifestsRunEnrich runs the real binary, built as `make build` builds it, with each
// manifest's args, environment and ConfigMap: the migration Job's migrate (twice: it is
// idempotent), the CronJob's run over a few rows, the backfill's run with nothing left, and the
// Deployment's follower, which answers a row inserted while it runs and exits 143 on SIGTERM.
// enrich's own loader and validation judge the config; a flag that enrich does not know fails.
func TestManifestsRunEnrich(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	bin := enrichBinary(t)
	dir := t.TempDir()

	// The Secret's files: the token file at a local path instead of /run/secrets/....
	if len(d.cfg.GreenAPI.Instances) != 1 {
		t.Fatalf("%s: the test expects one instance, found %d", d.configMap.where, len(d.cfg.GreenAPI.Instances))
	}
	in := d.cfg.GreenAPI.Instances[0]
	token := "deploy-test-token-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	text := d.configMap.obj.Data[configKey]
	quoted := `"` + in.TokenFile + `"`
	if strings.Count(text, quoted) != 1 {
		t.Fatalf("%s: want %s once in %s", d.configMap.where, quoted, configKey)
	}
	config := filepath.Join(dir, configKey)
	if err := os.WriteFile(config, []byte(strings.Replace(text, quoted, `"`+tokenFile+`"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	sim, err := simulator.New(simulator.Config{Instances: []simulator.Instance{{ID: in.ID, Token: token}}, WeightAvatar: 1})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim)
	t.Cleanup(api.Close)
	var pushes atomic.Int64
	push := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(push.Close)

	p := podRun{bin: bin, config: config, dbURL: pgtest.NewEmptyDB(t), apiURL: api.URL, pushURL: push.URL, token: token, forbidIn: []string{token}}

	mig := d.migrate.c
	if out := p.run(t, "migration Job", p.env(t, mig), p.args(mig), ""); !strings.Contains(out, "applied") {
		t.Errorf("migration Job: want migrations applied to a new database, got %q", out)
	}
	if out := p.run(t, "migration Job again", p.env(t, mig), p.args(mig), ""); !strings.Contains(out, "up to date") {
		t.Errorf("migration Job again: want \"up to date\", got %q", out)
	}

	numbers := []string{"79001230001", "79001230002", "79001230003"}
	p.run(t, "enqueue", p.env(t, mig), []string{"enqueue", "--config", config, "-"}, strings.Join(numbers, "\n")+"\n")

	// The CronJob as an operator with a Pushgateway runs it: the commented-out example turned on.
	cron := *d.nightly.c
	file, _, _ := strings.Cut(d.cron.where, " (")
	example, err := pushgatewayExample(readFile(t, file))
	if err != nil {
		t.Fatalf("%s: %v", d.cron.where, err)
	}
	cron.Args = append(append([]string(nil), cron.Args...), "--pushgateway", example)
	p.run(t, "CronJob", p.env(t, &cron), p.args(&cron), "")
	pool := pgtest.Connect(t, p.dbURL)
	var done int
	table := d.cfg.Database.Table
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM `+strconv.Quote(table)+` WHERE status = 'done'`).Scan(&done); err != nil {
		t.Fatalf("count done rows: %v", err)
	}
	if done != len(numbers) {
		t.Errorf("after the CronJob's run, %d rows done, want %d", done, len(numbers))
	}
	if pushes.Load() == 0 {
		t.Error("the CronJob's run with the example --pushgateway turned on pushed nothing")
	}

	bf := d.backfill.c
	p.run(t, "backfill Job", p.env(t, bf), p.args(bf), "")

	p.follow(t, d.follow.c, pool, table)
}
