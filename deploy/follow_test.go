package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// TestFollowDeployment checks the follower: `enrich run --follow` with no max_duration, its
// container restarted on any exit (the stall watchdog's 4 among them), a liveness probe on the
// metrics server's /healthz, and a rollout that never leaves it without a pod.
func TestFollowDeployment(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	dep, w := d.followDep.obj, d.follow
	for _, tt := range []struct {
		name string
		fn   func() error
	}{
		{"--follow", func() error {
			if !slices.Contains(w.c.Args, "--follow") {
				return fmt.Errorf("args %q: want --follow, or the pod ends when no row is due and restarts for ever", w.c.Args)
			}
			return nil
		}},
		{"no max_duration", func() error {
			maxDuration, err := w.duration("max-duration", d.cfg.Run.MaxDuration)
			if err != nil {
				return err
			}
			if maxDuration != 0 {
				return fmt.Errorf("max_duration is %s (the ConfigMap's nightly window): a follower stops then and restarts; pass --max-duration 0s", maxDuration)
			}
			return nil
		}},
		{"restartPolicy Always", func() error {
			if p := w.pod.RestartPolicy; p != "" && p != corev1.RestartPolicyAlways {
				return fmt.Errorf("restartPolicy %q: a Deployment takes Always only", p)
			}
			return nil
		}},
		{"selector matches the pods", func() error {
			sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
			if err != nil || sel.Empty() {
				return fmt.Errorf("selector %v: %v", dep.Spec.Selector, err)
			}
			if !sel.Matches(k8slabels.Set(w.labels)) {
				return fmt.Errorf("selector %v does not match the pod labels %v", dep.Spec.Selector, w.labels)
			}
			if w.labels["app.kubernetes.io/component"] == d.nightly.labels["app.kubernetes.io/component"] {
				return errors.New("the follower's pods have the nightly run's component label: the Deployment would count the CronJob's pods as its own")
			}
			return nil
		}},
		{"one replica or more", func() error {
			if r := dep.Spec.Replicas; r != nil && *r < 1 {
				return fmt.Errorf("replicas %d: want at least one follower", *r)
			}
			return nil
		}},
		{"rollout keeps a follower", func() error {
			s := dep.Spec.Strategy
			if s.Type == appsv1.RecreateDeploymentStrategyType {
				return nil // a gap of seconds, during which the poll of the next pod catches up
			}
			if s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
				return errors.New("strategy: want RollingUpdate with maxUnavailable 0 (two followers at once are safe), or Recreate")
			}
			return nil
		}},
		{"liveness from the watchdog", func() error {
			p := w.c.LivenessProbe
			if p == nil || p.HTTPGet == nil {
				return errors.New("no livenessProbe httpGet: probe /healthz on the metrics port, which fails once the run is stalled")
			}
			if p.HTTPGet.Path != "/healthz" {
				return fmt.Errorf("livenessProbe path %q: want /healthz", p.HTTPGet.Path)
			}
			port := p.HTTPGet.Port
			found := false
			for _, cp := range w.c.Ports {
				found = found || (port.StrVal != "" && cp.Name == port.StrVal) || (port.StrVal == "" && cp.ContainerPort == port.IntVal)
			}
			if !found || port.StrVal != "metrics" {
				return fmt.Errorf("livenessProbe port %s: want the container port named metrics (--metrics-addr)", port.String())
			}
			// The probe must not cut an idle follower or a slow call: /healthz fails only after
			// run.stall_timeout, so the probe's own period only adds to it.
			if period := time.Duration(p.PeriodSeconds) * time.Second * time.Duration(max(p.FailureThreshold, 1)); period < 30*time.Second {
				return fmt.Errorf("livenessProbe: %s between the first failure and a restart: want at least 30 s, so a passing hiccup (a slow scrape) restarts nothing", period)
			}
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.fn(); err != nil {
				t.Errorf("%s: %v", d.followDep.where, err)
			}
		})
	}
}

// follow runs the Deployment's container c: it stays up with nothing due, answers a row inserted
// into table meanwhile, and ends with exit 143 on SIGTERM, as at a rollout or a drain.
func (p podRun) follow(t *testing.T, c *corev1.Container, pool *pgxpool.Pool, table string) {
	t.Helper()
	cmd := exec.Command(p.bin, p.args(c)...)
	cmd.Env = p.env(t, c)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO `+strconv.Quote(table)+` (phone_number) VALUES ('79001239999')`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var done int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+strconv.Quote(table)+
			` WHERE phone_number = '79001239999' AND status = 'done'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done == 1 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the follower exited (%v) with a row to answer:\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not answer a row inserted while it ran within 60 s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 143 {
			t.Fatalf("the follower after SIGTERM: %v, want exit 143:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the follower did not end within 60 s of SIGTERM:\n%s", out.String())
	}
	for _, s := range p.forbidIn {
		if strings.Contains(out.String(), s) {
			t.Errorf("the follower's output shows the token")
		}
	}
}

// lockedBuffer is a bytes.Buffer a process's stdout and stderr may write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
