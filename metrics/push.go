package metrics

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// Job is the Pushgateway job name: one group per table (the grouping key), never per pod, so a
// CronJob's every run replaces the last one's series instead of piling up a group per pod.
const Job = "enrich"

// Completion is how a run ended, for the batch-job series.
type Completion struct {
	// Table names the group (the grouping key's "table" label), so runs over different tables
	// keep their own series.
	Table string
	// Success says the run did its job (exit 0). Only then is enrich_last_success_timestamp_seconds
	// pushed, so the last success stays on the Pushgateway through failed runs.
	Success bool
	// Start and End are when the run began and ended.
	Start, End time.Time
	// Summary is what the run did.
	Summary enrich.Summary
}

// Pusher sends a run's batch-job series to a Pushgateway.
type Pusher struct {
	url        string
	user, pass string
	client     push.HTTPDoer
}

// NewPusher checks a Pushgateway URL (http or https, host and optional port; user:password@ is
// taken for basic auth and kept out of every message). client nil means http.DefaultClient
// with the push's own deadline.
func NewPusher(rawURL string, client push.HTTPDoer) (*Pusher, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--pushgateway %q: give the Pushgateway's base URL, e.g. http://pushgateway:9091", redact(rawURL))
	}
	if strings.Contains(u.Path, "/metrics/") {
		return nil, fmt.Errorf("--pushgateway %s: give the base URL only; enrich adds /metrics/job/%s/table/…", u.Redacted(), Job)
	}
	p := &Pusher{client: client}
	if u.User != nil {
		p.user = u.User.Username()
		p.pass, _ = u.User.Password()
		u.User = nil
	}
	p.url = u.String()
	return p, nil
}

// URL is the Pushgateway's address, without credentials, for logs.
func (p *Pusher) URL() string { return p.url }

// Push sends the batch-job series with POST, which replaces only the series it sends: a failed
// run pushes no success timestamp, so the last success survives it.
func (p *Pusher) Push(ctx context.Context, c Completion) error {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
		reg.MustRegister(g)
		return g
	}
	gauge("last_completion_timestamp_seconds", "When the last run ended, successful or not (Unix time).").
		Set(float64(c.End.UnixNano()) / 1e9)
	if c.Success {
		gauge("last_success_timestamp_seconds", "When the last successful run ended (Unix time). Alert when it is older than a day and a bit.").
			Set(float64(c.End.UnixNano()) / 1e9)
	}
	gauge("duration_seconds", "How long the last run took.").Set(c.End.Sub(c.Start).Seconds())
	failed := 0.0
	if !c.Success {
		failed = 1
	}
	gauge("last_run_failed", "1 when the last run could not do its job (its exit code was not 0).").Set(failed)
	rows := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "rows_processed",
		Help: "Rows the last run wrote, by status: done, failed, rescheduled, released.",
	}, []string{"status"})
	reg.MustRegister(rows)
	s := c.Summary
	rows.WithLabelValues("done").Set(float64(s.Done))
	rows.WithLabelValues("failed").Set(float64(s.Failed))
	rows.WithLabelValues("rescheduled").Set(float64(s.Rescheduled))
	rows.WithLabelValues("released").Set(float64(s.Released))
	gauge("rate_limited", "429 answers in the last run.").Set(float64(s.RateLimited))

	// The text format: any Pushgateway takes it, and a person reading the push can too.
	pu := push.New(p.url, Job).Grouping("table", c.Table).Gatherer(reg).Format(expfmt.NewFormat(expfmt.TypeTextPlain))
	if p.client != nil {
		pu = pu.Client(p.client)
	}
	if p.user != "" || p.pass != "" {
		pu = pu.BasicAuth(p.user, p.pass)
	}
	if err := pu.AddContext(ctx); err != nil {
		return fmt.Errorf("push to %s: %w", p.url, err)
	}
	return nil
}

// redact drops what looks like credentials from a URL that did not parse.
func redact(raw string) string {
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "…@" + raw[i+1:]
		}
		return "…@" + raw[i+1:]
	}
	return raw
}
