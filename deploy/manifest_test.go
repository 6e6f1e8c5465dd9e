package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the CronJob's timeZone is checked without the machine's zoneinfo

	"github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const (
	// manifestDir holds the Kubernetes manifests, relative to this package.
	manifestDir = "kubernetes"
	// configKey is the ConfigMap's key holding enrich's TOML config file.
	configKey = "config.toml"
	// placeholder is the only value the committed Secret may hold: real values are created with
	// kubectl create secret, never committed.
	placeholder = "REPLACE_ME"
	// imageUID is the non-root user of the image (distroless "nonroot"): the Dockerfile's USER
	// and every pod's runAsUser.
	imageUID = 65532
	// containerName is the one container of every pod; podFailurePolicy rules name it.
	containerName = "enrich"
	// startSlack is what a Job needs beyond enrich's own durations: scheduling, the image pull,
	// connecting.
	startSlack = 5 * time.Minute
	// alertJob is the job label the alert rules and the dashboard select (deploy/prometheus/).
	alertJob = "enrich"
	// sizedForRows is the backfill Job's annotation saying how many rows its
	// activeDeadlineSeconds was sized for.
	sizedForRows = "enrich.dev/sized-for-rows"
	// backfillMargin and backfillMarginMax bound the backfill's deadline as a multiple of the
	// time its rows take at the instances' rps: room for retries, 429 cuts and restarts, but not
	// so much that a hung backfill holds on for days.
	backfillMargin, backfillMarginMax = 1.2, 2.0
	// graceSlack is what a pod needs between run.shutdown_grace and the kubelet's SIGKILL:
	// writing the last answers and giving the rest back.
	graceSlack = 5 * time.Second
)

// manifests is every object in manifestDir, decoded strictly.
type manifests struct {
	cronJobs    []located[*batchv1.CronJob]
	deployments []located[*appsv1.Deployment]
	jobs        []located[*batchv1.Job]
	configMaps  []located[*corev1.ConfigMap]
	secrets     []located[*corev1.Secret]
	// podMonitors are the Prometheus Operator's scrape configurations.
	podMonitors []located[*podMonitor]
}

// podMonitor is the part of the Prometheus Operator's PodMonitor (monitoring.coreos.com/v1)
// the example uses. The operator's Go types are a large module of their own; decoded strictly
// into this, a field the example misspells or uses without this test knowing it fails.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel            string               `json:"jobLabel"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			HonorLabels bool   `json:"honorLabels"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// located is a decoded object and where it came from, for failure messages.
type located[T any] struct {
	where string
	obj   T
}

// loadManifests decodes every *.yaml file of manifestDir, each document into its API type.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifest in %s (%v)", manifestDir, err)
	}
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read manifest: %v", err)
		}
		for i, doc := range splitYAML(data) {
			where := fmt.Sprintf("%s (document %d)", f, i+1)
			if err := m.add(where, doc); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
		}
	}
	return m
}

// splitYAML splits a multi-document YAML file on its "---" lines, leaving out documents that
// hold only comments.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur []string
	flush := func() {
		for _, l := range cur {
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
				docs = append(docs, []byte(strings.Join(cur, "\n")))
				break
			}
		}
		cur = nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimRight(line, " \t\r") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// decodeStrict decodes one YAML document into T, refusing unknown and duplicate fields, so a
// misspelled field (concurrencyPolcy) fails instead of being dropped as the API server would.
func decodeStrict[T any](doc []byte) (T, error) {
	var obj T
	err := yaml.UnmarshalStrict(doc, &obj)
	return obj, err
}

func (m *manifests) add(where string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("parse YAML: %w", err)
	}
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "batch/v1 CronJob":
		var o *batchv1.CronJob
		if o, err = decodeStrict[*batchv1.CronJob](doc); err == nil {
			m.cronJobs = append(m.cronJobs, located[*batchv1.CronJob]{where, o})
		}
	case "apps/v1 Deployment":
		var o *appsv1.Deployment
		if o, err = decodeStrict[*appsv1.Deployment](doc); err == nil {
			m.deployments = append(m.deployments, located[*appsv1.Deployment]{where, o})
		}
	case "batch/v1 Job":
		var o *batchv1.Job
		if o, err = decodeStrict[*batchv1.Job](doc); err == nil {
			m.jobs = append(m.jobs, located[*batchv1.Job]{where, o})
		}
	case "v1 ConfigMap":
		var o *corev1.ConfigMap
		if o, err = decodeStrict[*corev1.ConfigMap](doc); err == nil {
			m.configMaps = append(m.configMaps, located[*corev1.ConfigMap]{where, o})
		}
	case "v1 Secret":
		var o *corev1.Secret
		if o, err = decodeStrict[*corev1.Secret](doc); err == nil {
			m.secrets = append(m.secrets, located[*corev1.Secret]{where, o})
		}
	case "monitoring.coreos.com/v1 PodMonitor":
		var o *podMonitor
		if o, err = decodeStrict[*podMonitor](doc); err == nil {
			m.podMonitors = append(m.podMonitors, located[*podMonitor]{where, o})
		}
	default:
		return fmt.Errorf("apiVersion %q kind %q: this test knows batch/v1 CronJob and Job, apps/v1 Deployment, v1 ConfigMap and Secret, "+
			"monitoring.coreos.com/v1 PodMonitor; "+
			"add the kind to manifests.add with its checks", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return fmt.Errorf("decode %s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return nil
}

// the returns the one object of a kind, failing the test when there are none or several.
func the[T any](t *testing.T, kind string, list []located[T]) located[T] {
	t.Helper()
	if len(list) != 1 {
		var where []string
		for _, l := range list {
			where = append(where, l.where)
		}
		t.Fatalf("want exactly one %s in %s, found %d %v", kind, manifestDir, len(list), where)
	}
	return list[0]
}

// workload is the part of a CronJob, a Job or a Deployment that runs enrich.
type workload struct {
	where, name string
	// job is the Job's spec; nil for the Deployment.
	job *batchv1.JobSpec
	pod *corev1.PodSpec
	// labels are the pod template's.
	labels map[string]string
	c      *corev1.Container
	// command is enrich's subcommand, the first argument: migrate or run.
	command string
	// annotations are the Job's (a CronJob's job template has none of interest).
	annotations map[string]string
}

func newWorkload(t *testing.T, where, name string, job *batchv1.JobSpec) workload {
	t.Helper()
	w := newPodWorkload(t, where, name, &job.Template)
	w.job = job
	return w
}

// newPodWorkload is the workload of a pod template: a Job's or a Deployment's.
func newPodWorkload(t *testing.T, where, name string, tmpl *corev1.PodTemplateSpec) workload {
	t.Helper()
	pod := &tmpl.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != containerName || len(pod.InitContainers) != 0 {
		t.Fatalf("%s: want one container named %q (podFailurePolicy and the downward API name it), got %d", where, containerName, len(pod.Containers))
	}
	c := &pod.Containers[0]
	if len(c.Command) != 0 {
		t.Fatalf("%s: command is set: leave it to the image's ENTRYPOINT [\"/enrich\"] and give the subcommand in args", where)
	}
	if len(c.Args) == 0 {
		t.Fatalf("%s: no args: the first one is enrich's command (run, migrate)", where)
	}
	return workload{where: where, name: name, pod: pod, labels: tmpl.Labels, c: c, command: c.Args[0]}
}

// deployment is the manifests sorted by role, with the config they share.
type deployment struct {
	cron      located[*batchv1.CronJob]
	nightly   workload // the CronJob's job template
	migrate   workload // the Job running enrich migrate
	backfill  workload // the Job running enrich run
	follow    workload // the Deployment running enrich run --follow
	followDep located[*appsv1.Deployment]
	configMap located[*corev1.ConfigMap]
	secret    located[*corev1.Secret]
	monitor   located[*podMonitor]
	cfg       enrichConfig
}

func loadDeployment(t *testing.T) deployment {
	t.Helper()
	m := loadManifests(t)
	d := deployment{cron: the(t, "CronJob", m.cronJobs), configMap: the(t, "ConfigMap", m.configMaps), secret: the(t, "Secret", m.secrets),
		monitor: the(t, "PodMonitor", m.podMonitors)}
	d.nightly = newWorkload(t, d.cron.where, "CronJob "+d.cron.obj.Name, &d.cron.obj.Spec.JobTemplate.Spec)
	if d.nightly.command != "run" {
		t.Fatalf("%s: the CronJob runs %q: want enrich run", d.cron.where, d.nightly.command)
	}
	byCommand := map[string][]workload{}
	for _, j := range m.jobs {
		name := j.obj.Name
		if name == "" {
			name = j.obj.GenerateName + "*"
		}
		w := newWorkload(t, j.where, "Job "+name, &j.obj.Spec)
		w.annotations = j.obj.Annotations
		byCommand[w.command] = append(byCommand[w.command], w)
	}
	for _, cmd := range []string{"migrate", "run"} {
		if len(byCommand[cmd]) != 1 {
			t.Fatalf("want exactly one Job running enrich %s (the migration Job, the backfill Job), found %d", cmd, len(byCommand[cmd]))
		}
	}
	if len(m.jobs) != 2 {
		t.Fatalf("want two Jobs (migrate, backfill), found %d: add the new one's role to loadDeployment", len(m.jobs))
	}
	d.migrate, d.backfill = byCommand["migrate"][0], byCommand["run"][0]
	d.followDep = the(t, "Deployment", m.deployments)
	d.follow = newPodWorkload(t, d.followDep.where, "Deployment "+d.followDep.obj.Name, &d.followDep.obj.Spec.Template)
	if d.follow.command != "run" {
		t.Fatalf("%s: the Deployment runs %q: want enrich run --follow", d.followDep.where, d.follow.command)
	}
	text, ok := d.configMap.obj.Data[configKey]
	if !ok {
		t.Fatalf("%s: ConfigMap %s has no key %q", d.configMap.where, d.configMap.obj.Name, configKey)
	}
	cfg, err := parseConfig(text)
	if err != nil {
		t.Fatalf("%s: %s: %v", d.configMap.where, configKey, err)
	}
	d.cfg = cfg
	return d
}

// workloads lists the four pods that run enrich.
func (d deployment) workloads() []workload {
	return []workload{d.nightly, d.migrate, d.backfill, d.follow}
}

// enrichConfig is the part of enrich's config file the manifests depend on. Durations are
// pointers: the test requires the ConfigMap to state the ones the deadlines are checked
// against, rather than guess enrich's defaults.
type enrichConfig struct {
	Database struct {
		URL      string        `toml:"url"`
		Table    string        `toml:"table"`
		RetryFor *tomlDuration `toml:"retry_for"`
	} `toml:"database"`
	GreenAPI struct {
		APIURL    string        `toml:"api_url"`
		Timeout   *tomlDuration `toml:"timeout"`
		Instances []struct {
			ID        string   `toml:"id"`
			Token     string   `toml:"token"`
			TokenFile string   `toml:"token_file"`
			RPS       *float64 `toml:"rps"`
		} `toml:"instance"`
	} `toml:"greenapi"`
	Run struct {
		MaxDuration   *tomlDuration `toml:"max_duration"`
		ShutdownGrace *tomlDuration `toml:"shutdown_grace"`
	} `toml:"run"`
}

// tomlDuration reads "6h" as enrich does.
type tomlDuration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *tomlDuration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

func parseConfig(text string) (enrichConfig, error) {
	var c enrichConfig
	if err := toml.Unmarshal([]byte(text), &c); err != nil {
		return c, fmt.Errorf("parse TOML: %w", err)
	}
	for key, d := range map[string]*tomlDuration{
		"run.max_duration": c.Run.MaxDuration, "run.shutdown_grace": c.Run.ShutdownGrace,
		"greenapi.timeout": c.GreenAPI.Timeout, "database.retry_for": c.Database.RetryFor,
	} {
		if d == nil {
			return c, fmt.Errorf("state %s explicitly: the pods' deadlines are checked against it", key)
		}
	}
	return c, nil
}

// argValue is the value of flag name in args (--name V, --name=V, -name V, -name=V), as Go's
// flag package reads it.
func argValue(args []string, name string) (string, bool) {
	for i, a := range args {
		for _, p := range []string{"--" + name, "-" + name} {
			switch {
			case a == p && i+1 < len(args):
				return args[i+1], true
			case strings.HasPrefix(a, p+"="):
				return a[len(p)+1:], true
			}
		}
	}
	return "", false
}

// duration is a config duration as the workload's flags leave it.
func (w workload) duration(flag string, fromConfig *tomlDuration) (time.Duration, error) {
	if v, ok := argValue(w.c.Args, flag); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("--%s %q: %w", flag, v, err)
		}
		return d, nil
	}
	return fromConfig.Duration, nil
}

func seconds(p *int64) time.Duration { return time.Duration(*p) * time.Second }

// check is one property of a workload; it returns why it does not hold.
type check struct {
	name string
	fn   func(d deployment, w workload) error
}

// commonChecks hold for every pod that runs enrich.
var commonChecks = []check{
	{"image is pinned", func(d deployment, w workload) error {
		img := w.c.Image
		name, tag, ok := strings.Cut(path.Base(img), ":")
		if !strings.Contains(img, "@sha256:") && (!ok || tag == "" || tag == "latest") {
			return fmt.Errorf("image %q: pin a version tag or a digest, not latest, so that the migration Job and the runs use the same enrich", img)
		}
		if !strings.HasPrefix(name, "enrich") {
			return fmt.Errorf("image %q: want the enrich image built from the Dockerfile", img)
		}
		return nil
	}},
	{"terminationGracePeriodSeconds above shutdown_grace", func(d deployment, w workload) error {
		grace, err := w.duration("shutdown-grace", d.cfg.Run.ShutdownGrace)
		if err != nil {
			return err
		}
		if w.pod.TerminationGracePeriodSeconds == nil {
			return fmt.Errorf("terminationGracePeriodSeconds is not set: want at least run.shutdown_grace (%s) + %s", grace, graceSlack)
		}
		if got := seconds(w.pod.TerminationGracePeriodSeconds); got < grace+graceSlack {
			return fmt.Errorf("terminationGracePeriodSeconds is %s: want at least run.shutdown_grace (%s) + %s, or the kubelet kills enrich before it has written its answers",
				got, grace, graceSlack)
		}
		return nil
	}},
	{"pod securityContext", func(d deployment, w workload) error {
		sc := w.pod.SecurityContext
		switch {
		case sc == nil:
			return errors.New("no pod securityContext")
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			return errors.New("runAsNonRoot: want true")
		case sc.RunAsUser == nil || *sc.RunAsUser != imageUID:
			return fmt.Errorf("runAsUser: want %d, the image's USER", imageUID)
		case sc.FSGroup == nil:
			return errors.New("fsGroup: set it, so that the non-root user can read the token file (mode 0400 plus group read)")
		case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			return errors.New("seccompProfile: want type RuntimeDefault")
		case w.pod.AutomountServiceAccountToken == nil || *w.pod.AutomountServiceAccountToken:
			return errors.New("automountServiceAccountToken: want false: enrich never calls the Kubernetes API")
		case w.pod.HostNetwork || w.pod.HostPID || w.pod.HostIPC:
			return errors.New("the pod shares a host namespace")
		}
		return nil
	}},
	{"container securityContext", func(d deployment, w workload) error {
		sc := w.c.SecurityContext
		switch {
		case sc == nil:
			return errors.New("no container securityContext")
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			return errors.New("allowPrivilegeEscalation: want false")
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			return errors.New("readOnlyRootFilesystem: want true (enrich writes no file)")
		case sc.Privileged != nil && *sc.Privileged:
			return errors.New("privileged: want unset or false")
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
			return errors.New("capabilities: want drop [ALL] and no add")
		case sc.RunAsUser != nil && *sc.RunAsUser == 0:
			return errors.New("the container's runAsUser is 0")
		}
		return nil
	}},
	{"DATABASE_URL from the Secret", func(d deployment, w workload) error {
		for _, e := range w.c.Env {
			if e.Name != "DATABASE_URL" {
				continue
			}
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				return errors.New("env DATABASE_URL: take it from the Secret (valueFrom.secretKeyRef): it holds the database password")
			}
			return d.secretHasKey(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		}
		return errors.New("no env DATABASE_URL from the Secret: without it enrich connects to 127.0.0.1")
	}},
	{"no secret written into env", func(d deployment, w workload) error {
		secretish := regexp.MustCompile(`TOKEN|PASSWORD|SECRET|DATABASE_URL|PGPASS`)
		for _, e := range w.c.Env {
			if secretish.MatchString(e.Name) && e.Value != "" {
				return fmt.Errorf("env %s has a literal value: take it from the Secret", e.Name)
			}
		}
		return nil
	}},
	{"GOMEMLIMIT about 85% of the memory limit", func(d deployment, w workload) error {
		lim, ok := w.c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			return errors.New("no memory limit: set one, and GOMEMLIMIT to about 85% of it")
		}
		for _, e := range w.c.Env {
			if e.Name != "GOMEMLIMIT" {
				continue
			}
			if e.ValueFrom != nil {
				return errors.New("env GOMEMLIMIT from valueFrom: the downward API gives the whole limit (a divisor changes the unit, not the share), " +
					"which leaves Go no room for what it does not count; write about 85% of the limit as value (218MiB for 256Mi)")
			}
			n, err := parseGoMemLimit(e.Value)
			if err != nil {
				return fmt.Errorf("env GOMEMLIMIT: %w", err)
			}
			share := float64(n) / float64(lim.Value())
			if share < memLimitShareMin || share > memLimitShareMax {
				return fmt.Errorf("env GOMEMLIMIT %s is %.1f%% of the memory limit %s: want %.0f%% to %.0f%% (about %dMiB)",
					e.Value, 100*share, lim.String(), 100*memLimitShareMin, 100*memLimitShareMax, int64(0.85*float64(lim.Value()))>>20)
			}
			return nil
		}
		return fmt.Errorf("no env GOMEMLIMIT: set it to about 85%% of the memory limit %s", lim.String())
	}},
	{"resources", func(d deployment, w workload) error {
		r := w.c.Resources
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := r.Requests[name]
			lim, okLim := r.Limits[name]
			if !okReq || !okLim {
				return fmt.Errorf("resources: set requests and limits of %s", name)
			}
			if req.Cmp(lim) > 0 {
				return fmt.Errorf("resources: the %s request %s is above its limit %s", name, req.String(), lim.String())
			}
		}
		if lim := r.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("64Mi")) < 0 {
			return fmt.Errorf("resources: memory limit %s: enrich holds about 30 MiB at a million rows; give it at least 64Mi", lim.String())
		}
		return nil
	}},
	{"config from the ConfigMap", func(d deployment, w workload) error {
		cfgPath, ok := argValue(w.c.Args, "config")
		if !ok {
			return errors.New("no --config in args")
		}
		dir, file := path.Split(cfgPath)
		if file != configKey {
			return fmt.Errorf("--config %s: want a file named %s, the ConfigMap's key", cfgPath, configKey)
		}
		vol, m, err := w.mounted(path.Clean(dir))
		if err != nil {
			return fmt.Errorf("--config %s: %w", cfgPath, err)
		}
		if vol.ConfigMap == nil || vol.ConfigMap.Name != d.configMap.obj.Name || len(vol.ConfigMap.Items) != 0 {
			return fmt.Errorf("--config %s: volume %s: want the whole ConfigMap %s", cfgPath, vol.Name, d.configMap.obj.Name)
		}
		if !m.ReadOnly {
			return fmt.Errorf("volume mount %s: want readOnly", m.MountPath)
		}
		return nil
	}},
	{"JSON logs", func(d deployment, w workload) error {
		if v, _ := argValue(w.c.Args, "log-format"); v != "json" {
			return fmt.Errorf("--log-format is %q: want json, one object a line for the cluster's log collector", v)
		}
		return nil
	}},
}

// jobChecks hold for the pods of a Job (the CronJob's, the migration's, the backfill's): their
// retries are the Job controller's.
var jobChecks = []check{
	{"restartPolicy Never", func(d deployment, w workload) error {
		if w.pod.RestartPolicy != corev1.RestartPolicyNever {
			return fmt.Errorf("restartPolicy is %q: want Never, so retries are the Job controller's (backoffLimit, podFailurePolicy)", w.pod.RestartPolicy)
		}
		return nil
	}},
	{"backoffLimit", func(d deployment, w workload) error {
		if b := w.job.BackoffLimit; b == nil || *b < 1 || *b > 10 {
			return errors.New("backoffLimit: set it (1 to 10): the default 6 retries a failing run for over an hour")
		}
		return nil
	}},
	{"podFailurePolicy", func(d deployment, w workload) error {
		var failOnConfig, ignoreDisruption bool
		if w.job.PodFailurePolicy == nil {
			return errors.New("no podFailurePolicy: exit 1 (configuration error) must fail the Job at once, and evictions must not count against backoffLimit")
		}
		for _, r := range w.job.PodFailurePolicy.Rules {
			if e := r.OnExitCodes; r.Action == batchv1.PodFailurePolicyActionFailJob && e != nil &&
				e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(e.Values, 1) &&
				(e.ContainerName == nil || *e.ContainerName == containerName) {
				failOnConfig = true
			}
			for _, p := range r.OnPodConditions {
				if r.Action == batchv1.PodFailurePolicyActionIgnore && p.Type == corev1.DisruptionTarget {
					ignoreDisruption = true
				}
			}
		}
		if !failOnConfig || !ignoreDisruption {
			return fmt.Errorf("podFailurePolicy: want FailJob on exit code 1 (%v) and Ignore on DisruptionTarget (%v)", failOnConfig, ignoreDisruption)
		}
		return nil
	}},
}

// GOMEMLIMIT's share of the container's memory limit: below it the heap gets less than it could,
// above it Go's uncounted memory (stacks, the binary, the kernel's buffers) can tip the pod over.
const memLimitShareMin, memLimitShareMax = 0.80, 0.90

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does: a number of bytes with an optional
// unit B, KiB, MiB, GiB or TiB (not "M" or "MB": the runtime refuses those and the pod dies at
// start).
func parseGoMemLimit(v string) (int64, error) {
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("%q: write a number of bytes with an optional unit B, KiB, MiB, GiB or TiB, e.g. 218MiB", v)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", v, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// runChecks hold for the pods that run enrich run (the CronJob's and the backfill's).
var runChecks = []check{
	{"token from the Secret as a file", func(d deployment, w workload) error {
		if len(d.cfg.GreenAPI.Instances) == 0 {
			return errors.New("the config has no [[greenapi.instance]]")
		}
		for _, in := range d.cfg.GreenAPI.Instances {
			if in.Token != "" || in.TokenFile == "" {
				return fmt.Errorf("instance %s: want token_file (the Secret mounted as a file), not token in the ConfigMap", in.ID)
			}
			vol, m, err := w.mounted(path.Dir(in.TokenFile))
			if err != nil {
				return fmt.Errorf("instance %s token_file %s: %w", in.ID, in.TokenFile, err)
			}
			s := vol.Secret
			if s == nil || s.SecretName != d.secret.obj.Name {
				return fmt.Errorf("volume %s: want the Secret %s", vol.Name, d.secret.obj.Name)
			}
			if s.DefaultMode == nil || *s.DefaultMode != 0o400 {
				return fmt.Errorf("volume %s: defaultMode: want 0400 (only the owner, and fsGroup, read the token)", vol.Name)
			}
			if !m.ReadOnly {
				return fmt.Errorf("volume mount %s: want readOnly", m.MountPath)
			}
			found := false
			for _, it := range s.Items {
				if it.Path == path.Base(in.TokenFile) {
					found = true
					if err := d.secretHasKey(s.SecretName, it.Key); err != nil {
						return err
					}
				}
			}
			if !found {
				return fmt.Errorf("volume %s: no item with path %s, the token_file of instance %s", vol.Name, path.Base(in.TokenFile), in.ID)
			}
		}
		return nil
	}},
	{"metrics port", func(d deployment, w workload) error {
		addr, ok := argValue(w.c.Args, "metrics-addr")
		if !ok {
			return errors.New("no --metrics-addr: serve /metrics during the run")
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %q: %w", addr, err)
		}
		for _, p := range w.c.Ports {
			if p.Name == "metrics" && strconv.Itoa(int(p.ContainerPort)) == port {
				return nil
			}
		}
		return fmt.Errorf("--metrics-addr %s: want a containerPort %s named metrics", addr, port)
	}},
}

// mounted is the container's volume mount at dir and its volume.
func (w workload) mounted(dir string) (corev1.Volume, corev1.VolumeMount, error) {
	for _, m := range w.c.VolumeMounts {
		if path.Clean(m.MountPath) != dir {
			continue
		}
		if m.SubPath != "" {
			return corev1.Volume{}, m, fmt.Errorf("volume mount %s uses subPath, which never sees an update", m.MountPath)
		}
		for _, v := range w.pod.Volumes {
			if v.Name == m.Name {
				return v, m, nil
			}
		}
		return corev1.Volume{}, m, fmt.Errorf("volume mount %s names volume %s, which the pod does not have", m.MountPath, m.Name)
	}
	return corev1.Volume{}, corev1.VolumeMount{}, fmt.Errorf("nothing is mounted at %s", dir)
}

func (d deployment) secretHasKey(name, key string) error {
	s := d.secret.obj
	if name != s.Name {
		return fmt.Errorf("Secret %q: the manifests define %q", name, s.Name)
	}
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	if !inData && !inString {
		return fmt.Errorf("Secret %s has no key %q", name, key)
	}
	return nil
}

func runChecksOn(t *testing.T, d deployment, w workload, checks []check) {
	t.Helper()
	for _, c := range checks {
		t.Run(w.name+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			if err := c.fn(d, w); err != nil {
				t.Errorf("%s: %v", w.where, err)
			}
		})
	}
}

// TestWorkloads checks what every pod running enrich needs, and what the ones running
// `enrich run` need besides.
func TestWorkloads(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	for _, w := range d.workloads() {
		runChecksOn(t, d, w, commonChecks)
		if w.job != nil {
			runChecksOn(t, d, w, jobChecks)
		}
		if w.command == "run" {
			runChecksOn(t, d, w, runChecks)
		}
	}
}

// TestCronJob checks the nightly schedule: one run at a time, a deadline above the run's own
// window, and no overlap with the next night.
func TestCronJob(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	cj, w := d.cron.obj, d.nightly
	maxDuration, err := w.duration("max-duration", d.cfg.Run.MaxDuration)
	if err != nil {
		t.Fatal(err)
	}
	grace, err := w.duration("shutdown-grace", d.cfg.Run.ShutdownGrace)
	if err != nil {
		t.Fatal(err)
	}
	apiTimeout, err := w.duration("timeout", d.cfg.GreenAPI.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	// After max_duration a run stops claiming, lets calls in flight finish (greenapi.timeout),
	// writes (waiting out the database for up to retry_for), and a SIGTERM at the deadline gets
	// shutdown_grace more.
	window := maxDuration + apiTimeout + d.cfg.Database.RetryFor.Duration + grace + startSlack
	for _, tt := range []struct {
		name string
		fn   func() error
	}{
		{"concurrencyPolicy", func() error {
			if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				return fmt.Errorf("concurrencyPolicy is %q: want Forbid", cj.Spec.ConcurrencyPolicy)
			}
			return nil
		}},
		{"startingDeadlineSeconds", func() error {
			if s := cj.Spec.StartingDeadlineSeconds; s == nil || *s < 10 {
				return errors.New("startingDeadlineSeconds: set it, at least 10 (the controller looks every 10 s), so a missed start is skipped rather than made up at any hour")
			}
			return nil
		}},
		{"timeZone", func() error {
			if cj.Spec.TimeZone == nil {
				return errors.New("timeZone: set it (e.g. Etc/UTC): the default is the controller manager's zone")
			}
			if _, err := time.LoadLocation(*cj.Spec.TimeZone); err != nil {
				return fmt.Errorf("timeZone %q: %w", *cj.Spec.TimeZone, err)
			}
			return nil
		}},
		{"nightly schedule", func() error {
			f := strings.Fields(cj.Spec.Schedule)
			if len(f) != 5 || f[2] != "*" || f[3] != "*" || f[4] != "*" {
				return fmt.Errorf("schedule %q: want once a day (\"M H * * *\")", cj.Spec.Schedule)
			}
			if err := cronField(f[0], 0, 59); err != nil {
				return fmt.Errorf("schedule %q: minute: %w", cj.Spec.Schedule, err)
			}
			if err := cronField(f[1], 0, 23); err != nil {
				return fmt.Errorf("schedule %q: hour: %w", cj.Spec.Schedule, err)
			}
			if strings.ContainsAny(f[0]+f[1], "*,-/") {
				return fmt.Errorf("schedule %q: want one minute and one hour a day", cj.Spec.Schedule)
			}
			return nil
		}},
		{"run.max_duration", func() error {
			if maxDuration <= 0 {
				return errors.New("run.max_duration is 0 (until no row is due): the nightly run needs a window; set it in the ConfigMap")
			}
			return nil
		}},
		{"activeDeadlineSeconds above max_duration", func() error {
			if w.job.ActiveDeadlineSeconds == nil {
				return fmt.Errorf("jobTemplate activeDeadlineSeconds: set it to at least %s", window)
			}
			if got := seconds(w.job.ActiveDeadlineSeconds); got < window {
				return fmt.Errorf("activeDeadlineSeconds is %s: want at least run.max_duration %s + greenapi.timeout %s + database.retry_for %s + shutdown_grace %s + %s to start, = %s",
					got, maxDuration, apiTimeout, d.cfg.Database.RetryFor.Duration, grace, startSlack, window)
			}
			return nil
		}},
		{"no overlap with the next night", func() error {
			if w.job.ActiveDeadlineSeconds == nil || cj.Spec.StartingDeadlineSeconds == nil {
				return errors.New("activeDeadlineSeconds and startingDeadlineSeconds must be set")
			}
			if end := seconds(cj.Spec.StartingDeadlineSeconds) + seconds(w.job.ActiveDeadlineSeconds); end >= 24*time.Hour {
				return fmt.Errorf("a late start plus the deadline is %s: a run could still hold the next night's start (Forbid would skip it)", end)
			}
			return nil
		}},
		{"pushgateway opt-in", func() error {
			if v, ok := argValue(w.c.Args, "pushgateway"); ok {
				return fmt.Errorf("--pushgateway %s is live: an example address logs an error every night where there is no Pushgateway; "+
					"leave it commented out, for the operator to turn on", v)
			}
			file, _, _ := strings.Cut(d.cron.where, " (")
			_, err := pushgatewayExample(readFile(t, file))
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.fn(); err != nil {
				t.Errorf("%s: %v", d.cron.where, err)
			}
		})
	}
}

// pushgatewayExample is the Pushgateway address the CronJob's manifest shows commented out, as
// "# - --pushgateway" and "# - URL" lines in its args: what an operator uncomments.
func pushgatewayExample(manifest string) (string, error) {
	m := regexp.MustCompile(`(?m)^\s*#\s*- --pushgateway\s*\n\s*#\s*- (\S+)\s*$`).FindStringSubmatch(manifest)
	if m == nil {
		return "", errors.New("no commented-out example \"# - --pushgateway\" / \"# - http://...\" in the args: show the operator how to turn the push on")
	}
	if !strings.HasPrefix(m[1], "http://") && !strings.HasPrefix(m[1], "https://") {
		return "", fmt.Errorf("the example --pushgateway %q: want the Pushgateway's http(s) base URL", m[1])
	}
	return m[1], nil
}

// TestJobs checks the migration Job and the backfill Job.
func TestJobs(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	for _, tt := range []struct {
		name string
		w    workload
		fn   func(w workload) error
	}{
		{"migrate has a deadline", d.migrate, func(w workload) error {
			if w.job.ActiveDeadlineSeconds == nil {
				return errors.New("activeDeadlineSeconds: set it: a migration waiting for a lock must not wait forever")
			}
			return nil
		}},
		{"migrate sees no token", d.migrate, func(w workload) error {
			for _, v := range w.pod.Volumes {
				if v.Secret != nil || v.Projected != nil {
					return fmt.Errorf("volume %s mounts a Secret: enrich migrate needs the database only", v.Name)
				}
			}
			for _, e := range w.c.Env {
				if strings.HasPrefix(e.Name, "GREENAPI_") {
					return fmt.Errorf("env %s: enrich migrate needs the database only", e.Name)
				}
			}
			return nil
		}},
		{"backfill parallelism", d.backfill, func(w workload) error {
			p, c := w.job.Parallelism, w.job.Completions
			if p == nil || *p < 2 {
				return errors.New("parallelism: want several pods (3): they share each instance's budget and claim different rows")
			}
			if c != nil && *c != *p {
				return fmt.Errorf("completions %d: leave it unset (a work queue: done when a pod finds no row due) or equal to parallelism %d", *c, *p)
			}
			return nil
		}},
		{"backfill deadline sized for its rows", d.backfill, func(w workload) error {
			if w.job.ActiveDeadlineSeconds == nil {
				return errors.New("activeDeadlineSeconds: set it, so a backfill that hangs ends: rows ÷ (instances × rps) plus a margin")
			}
			deadline := seconds(w.job.ActiveDeadlineSeconds)
			maxDuration, err := w.duration("max-duration", d.cfg.Run.MaxDuration)
			if err != nil {
				return err
			}
			if maxDuration > 0 && deadline < maxDuration+startSlack {
				return fmt.Errorf("activeDeadlineSeconds is %s, below max_duration %s + %s", deadline, maxDuration, startSlack)
			}
			v, ok := w.annotations[sizedForRows]
			rows, err := strconv.ParseInt(strings.ReplaceAll(v, ",", ""), 10, 64)
			if !ok || err != nil || rows <= 0 {
				return fmt.Errorf("annotation %s %q: say how many rows activeDeadlineSeconds was sized for", sizedForRows, v)
			}
			var rps float64
			for _, in := range d.cfg.GreenAPI.Instances {
				if in.RPS == nil {
					return fmt.Errorf("%s: instance %s: state rps explicitly: the backfill's deadline is sized on it", d.configMap.where, in.ID)
				}
				rps += *in.RPS
			}
			if rps <= 0 {
				return errors.New("the instances' rps add up to 0")
			}
			need := time.Duration(float64(rows) / rps * float64(time.Second))
			if lo, hi := time.Duration(float64(need)*backfillMargin), time.Duration(float64(need)*backfillMarginMax); deadline < lo || deadline > hi {
				return fmt.Errorf("activeDeadlineSeconds is %s: %d rows ÷ %g requests a second (%d instances) take %s; want that plus %.0f%% to %.0f%%, %s to %s",
					deadline, rows, rps, len(d.cfg.GreenAPI.Instances), need, 100*(backfillMargin-1), 100*(backfillMarginMax-1), lo, hi)
			}
			return nil
		}},
		{"backfill pushes nothing", d.backfill, func(w workload) error {
			if _, ok := argValue(w.c.Args, "pushgateway"); ok {
				return errors.New("--pushgateway: parallel pods would overwrite each other's push, and a backfill's success would stand in for the nightly run's")
			}
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.fn(tt.w); err != nil {
				t.Errorf("%s: %v", tt.w.where, err)
			}
		})
	}
}

// TestSameImage checks that the migration Job migrates the schema the runs expect.
func TestSameImage(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	for _, w := range d.workloads() {
		if w.c.Image != d.nightly.c.Image {
			t.Errorf("%s: image %s, the CronJob's is %s: migrate with the image that will run", w.where, w.c.Image, d.nightly.c.Image)
		}
	}
}

// TestNoSecretCommitted checks that the Secret and the ConfigMap hold no credential.
func TestNoSecretCommitted(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	s := d.secret.obj
	if len(s.Data)+len(s.StringData) == 0 {
		t.Errorf("%s: the Secret lists no key: show each key the manifests read, with the value %s", d.secret.where, placeholder)
	}
	for k, v := range s.StringData {
		if v != placeholder {
			t.Errorf("%s: stringData.%s is not the placeholder %s: never commit a credential; create the Secret with kubectl create secret generic", d.secret.where, k, placeholder)
		}
	}
	for k, v := range s.Data {
		if !bytes.Equal(v, []byte(placeholder)) {
			t.Errorf("%s: data.%s is not the placeholder %s: never commit a credential; create the Secret with kubectl create secret generic", d.secret.where, k, placeholder)
		}
	}
	for _, in := range d.cfg.GreenAPI.Instances {
		if in.Token != "" {
			t.Errorf("%s: instance %s has a token in the ConfigMap: use token_file", d.configMap.where, in.ID)
		}
	}
	if d.cfg.Database.URL != "" {
		t.Errorf("%s: database.url is set in the ConfigMap: it comes from the Secret through DATABASE_URL", d.configMap.where)
	}
}

// TestParseGoMemLimit checks the GOMEMLIMIT reader on what the Go runtime takes and refuses.
func TestParseGoMemLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v    string
		want int64
		ok   bool
	}{
		{"218MiB", 218 << 20, true}, {"268435456", 256 << 20, true}, {"1GiB", 1 << 30, true}, {"512B", 512, true},
		{"218M", 0, false}, {"218MB", 0, false}, {"85%", 0, false}, {"", 0, false}, {"-1", 0, false},
	} {
		got, err := parseGoMemLimit(tt.v)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseGoMemLimit(%q) = %d, %v; want %d, ok %v", tt.v, got, err, tt.want, tt.ok)
		}
	}
}

// TestPodMonitor checks the example scrape configuration: it selects the pods that serve
// /metrics (the CronJob's and the backfill's, not the migration's) on their port named metrics,
// and names the job as the alert rules and the dashboard expect.
func TestPodMonitor(t *testing.T) {
	t.Parallel()
	d := loadDeployment(t)
	pm := d.monitor.obj
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatalf("%s: selector: %v", d.monitor.where, err)
	}
	if sel.Empty() {
		t.Fatalf("%s: the selector is empty: it would scrape every pod of the namespace", d.monitor.where)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%s: %d podMetricsEndpoints, want one", d.monitor.where, len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Path != "" && ep.Path != "/metrics" {
		t.Errorf("%s: path %q: enrich serves /metrics", d.monitor.where, ep.Path)
	}
	if !ep.HonorLabels {
		t.Errorf("%s: honorLabels: want true: enrich's instance label (the Green API instance id) would become exported_instance, "+
			"and the alert rules and the dashboard group by instance", d.monitor.where)
	}
	if iv, err := time.ParseDuration(ep.Interval); ep.Interval != "" && (err != nil || iv > 30*time.Second) {
		t.Errorf("%s: interval %q: want 30s or less, a run can be short", d.monitor.where, ep.Interval)
	}
	for _, w := range d.workloads() {
		labels := w.labels
		selected := sel.Matches(k8slabels.Set(labels))
		serves := false
		for _, p := range w.c.Ports {
			serves = serves || p.Name == ep.Port
		}
		_, metricsOn := argValue(w.c.Args, "metrics-addr")
		switch {
		case metricsOn && !selected:
			t.Errorf("%s: the PodMonitor does not select %s (labels %v), which serves /metrics", d.monitor.where, w.name, labels)
		case metricsOn && !serves:
			t.Errorf("%s: %s has no container port named %q, the PodMonitor's port", w.where, w.name, ep.Port)
		case !metricsOn && selected:
			t.Errorf("%s: the PodMonitor selects %s, which serves no /metrics (a target always down)", d.monitor.where, w.name)
		}
		if selected && labels[pm.Spec.JobLabel] != alertJob {
			t.Errorf("%s: jobLabel %q is %q on %s: the alert rules and the dashboard want job=%q",
				d.monitor.where, pm.Spec.JobLabel, labels[pm.Spec.JobLabel], w.name, alertJob)
		}
	}
}

// TestDecodeIsStrict makes sure a misspelled field fails the decode, as the manifests' checks
// assume.
func TestDecodeIsStrict(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"apiVersion: batch/v1\nkind: CronJob\nspec:\n  concurrencyPolcy: Forbid\n",
		"apiVersion: batch/v1\nkind: CronJob\nspec:\n  schedule: a\n  schedule: b\n",
	} {
		if _, err := decodeStrict[*batchv1.CronJob]([]byte(doc)); err == nil {
			t.Errorf("decodeStrict accepted %q", doc)
		}
	}
	if got := splitYAML([]byte("# only a comment\n---\na: 1\n---  \nb: 2\n")); len(got) != 2 {
		t.Errorf("splitYAML: %d documents, want 2", len(got))
	}
}
