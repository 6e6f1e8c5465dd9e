// Package metrics shows a run to Prometheus. Counters and the latency histogram are fed by the
// engine as it works (Metrics is an enrich.Observer); the gauges (rows due, calls in flight, each
// instance's rate and state) are read from the run's Snapshot when /metrics is scraped, so the
// hot path pays for nothing it does not count. A batch job may end before any scrape, so Push
// sends the batch-job series to a Pushgateway at the end.
//
// Instance ids are labels; tokens never reach this package.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every series.
const namespace = "enrich"

// latencyBuckets cover Green API's latency: around 300 ms usually, tens of seconds at the tail.
var latencyBuckets = []float64{.025, .05, .1, .2, .3, .4, .5, .75, 1, 2, 5, 10, 30, 60}

// Build names the binary in enrich_build_info, so a dashboard shows which version ran.
type Build struct {
	Version, Revision, GoVersion string
}

// Metrics holds one run's series in its own registry (nothing global: two runs in one process,
// as in tests, never share a series).
type Metrics struct {
	reg *prometheus.Registry

	calls       *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	rateLimited *prometheus.CounterVec
	retries     *prometheus.CounterVec
	rows        *prometheus.CounterVec

	mu       sync.Mutex
	snapshot func() enrich.Snapshot
}

// New makes the registry with the run's series, the build info, and the Go runtime's and the
// process's own collectors.
func New(b Build) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_calls_total",
			Help: "Green API calls by instance, method and outcome (ok, or the failure's class: rate_limited, starting, transient, invalid, unusable, avatar_timeout, canceled).",
		}, []string{"instance", "method", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "api_request_duration_seconds",
			Help:    "Time from sending a Green API request to its answer, by instance and method.",
			Buckets: latencyBuckets,
		}, []string{"instance", "method"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_rate_limited_total",
			Help: "Answers of 429 Too Many Requests, by instance. Any is a sign that something else spends the instance's budget.",
		}, []string{"instance"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "retries_total",
			Help: "Calls to be made again within the run, by instance and kind: transient (after a backoff), starting or rate_limited (the row went back to the queue untouched).",
		}, []string{"instance", "kind"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rows_total",
			Help: "Rows written by status: done, failed (final), rescheduled (due again later), released (left untouched for a later run), lost (another run's claim took the row over).",
		}, []string{"status"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info", Help: "Always 1: the version of enrich that runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	info.Set(1)
	m.reg.MustRegister(m.calls, m.latency, m.rateLimited, m.retries, m.rows, info, snapshotCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, s := range []string{"done", "failed", "rescheduled", "released", "lost"} {
		m.rows.WithLabelValues(s) // every status shows, at 0, from the first scrape
	}
	return m
}

// Follow makes the gauges read snap (the run's Runner.Snapshot) at every scrape; before it, the
// gauges are absent. The run's instances' 429 and retry counters show from then on, at 0, so a
// rate() over them starts from the first scrape rather than the first 429.
func (m *Metrics) Follow(snap func() enrich.Snapshot) {
	m.mu.Lock()
	m.snapshot = snap
	m.mu.Unlock()
	for _, in := range snap().Instances {
		m.rateLimited.WithLabelValues(in.ID)
		for _, kind := range []string{"transient", "starting", "rate_limited"} {
			m.retries.WithLabelValues(in.ID, kind)
		}
	}
}

// Registry is where the run's series live, to serve or to push.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's text and protobuf formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Call counts one API call and its latency (enrich.Observer).
func (m *Metrics) Call(instance, method, outcome string, took time.Duration) {
	m.calls.WithLabelValues(instance, method, outcome).Inc()
	m.latency.WithLabelValues(instance, method).Observe(took.Seconds())
	if outcome == "rate_limited" {
		m.rateLimited.WithLabelValues(instance).Inc()
	}
}

// Rows counts rows written with a status (enrich.Observer).
func (m *Metrics) Rows(status string, n int64) {
	if n > 0 {
		m.rows.WithLabelValues(status).Add(float64(n))
	}
}

// Retry counts a call to be made again (enrich.Observer).
func (m *Metrics) Retry(instance, kind string) { m.retries.WithLabelValues(instance, kind).Inc() }

var _ enrich.Observer = (*Metrics)(nil)

// snapshotCollector reads the run's Snapshot once per scrape.
type snapshotCollector struct{ m *Metrics }

var (
	descDue = prometheus.NewDesc(namespace+"_rows_due",
		"Rows due when the run began (capped by run.limit) that it has not finished yet; absent until counted.", nil, nil)
	descInFlight = prometheus.NewDesc(namespace+"_calls_in_flight",
		"GetAvatar calls sent and not yet answered.", nil, nil)
	descRate = prometheus.NewDesc(namespace+"_instance_rate_rps",
		"The instance's current request rate, shared by every run on it; below its rps after 429s, 0 once out of the run.",
		[]string{"instance"}, nil)
	descHeadroom = prometheus.NewDesc(namespace+"_instance_headroom_ratio",
		"The share by which the instance's requests are spaced wider than 1/rate for jitter: 0.01 at first, more after 429s, 0 once out of the run.",
		[]string{"instance"}, nil)
	descState = prometheus.NewDesc(namespace+"_instance_state",
		"1 for the instance's current state: running, paused (starting, unreachable or throttled), capped (daily cap spent) or out (taken out of the run).",
		[]string{"instance", "state"}, nil)
)

// descExistence and descExistsUnknown are the run's answers by where exists_whatsapp came from,
// read from its Summary: counters, since they only grow during a run.
var (
	descExistence = prometheus.NewDesc(namespace+"_rows_existence_total",
		"Answers this run by where exists_whatsapp came from: getAvatar, avatar (a link, an inlined image or available false), checkWhatsapp; "+
			"unchecked and badPhoneNumber leave it NULL; none is a group whose answer says nothing of it.",
		[]string{"source"}, nil)
	descExistsUnknown = prometheus.NewDesc(namespace+"_rows_exists_unknown_total",
		"Answers this run of personal rows whose existence stays unknown (exists_whatsapp NULL, source unchecked: CheckWhatsapp's quota spent, "+
			"a check failed, or the checks off); a later run with greenapi.confirm_missing completes them.", nil, nil)
)

// existenceSources are the sources shown from the first scrape, at 0.
var existenceSources = []string{enrich.SourceGetAvatar, enrich.SourceAvatar, enrich.SourceCheckWhatsapp,
	enrich.SourceUnchecked, enrich.SourceBadPhoneNumber, "none"}

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descExistence
	ch <- descExistsUnknown
	ch <- descDue
	ch <- descInFlight
	ch <- descRate
	ch <- descHeadroom
	ch <- descState
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	snap := c.m.snapshot
	c.m.mu.Unlock()
	if snap == nil {
		return
	}
	s := snap()
	if left := s.Left(); left >= 0 {
		ch <- prometheus.MustNewConstMetric(descDue, prometheus.GaugeValue, float64(left))
	}
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(s.InFlight))
	for _, src := range existenceSources {
		ch <- prometheus.MustNewConstMetric(descExistence, prometheus.CounterValue, float64(s.Summary.Existence[src]), src)
	}
	ch <- prometheus.MustNewConstMetric(descExistsUnknown, prometheus.CounterValue, float64(s.Summary.ExistsUnknown))
	for _, in := range s.Instances {
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, in.Rate, in.ID)
		ch <- prometheus.MustNewConstMetric(descHeadroom, prometheus.GaugeValue, in.Headroom, in.ID)
		for _, st := range enrich.InstanceStates {
			v := 0.0
			if st == in.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, in.ID, st)
		}
	}
}
