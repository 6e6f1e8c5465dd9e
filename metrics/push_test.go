package metrics_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/metrics"
)

// TestNewPusher: a Pushgateway URL is checked up front, and credentials in it never show.
func TestNewPusher(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, wantURL, wantErr string
	}{
		{"http://pushgateway:9091", "http://pushgateway:9091", ""},
		{"https://ops:s3cret@push.example:443/", "https://push.example:443/", ""},
		{"pushgateway:9091", "", "base URL"},
		{"ftp://ops:s3cret@push.example", "", "base URL"},
		{"http://push.example/metrics/job/enrich", "", "base URL only"},
		{"http://ops:s3cret@[::1", "", "base URL"},
	}
	for _, tc := range tests {
		p, err := metrics.NewPusher(tc.url, nil)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NewPusher(%q) = %v, want an error saying %q", tc.url, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("NewPusher(%q): the error shows the password: %v", tc.url, err)
			}
		case err != nil:
			t.Errorf("NewPusher(%q): %v", tc.url, err)
		case p.URL() != tc.wantURL:
			t.Errorf("NewPusher(%q).URL() = %q, want %q", tc.url, p.URL(), tc.wantURL)
		}
	}
}

// TestPushBasicAuth: user:password@ in the URL becomes basic auth on the push.
func TestPushBasicAuth(t *testing.T) {
	t.Parallel()
	var user, pass, path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ = r.BasicAuth()
		path = r.URL.Path
	}))
	t.Cleanup(srv.Close)
	p, err := metrics.NewPusher(strings.Replace(srv.URL, "http://", "http://ops:s3cret@", 1), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	err = p.Push(context.Background(), metrics.Completion{Table: "crm.contacts", Success: true, Start: end.Add(-time.Minute), End: end,
		Summary: enrich.Summary{Done: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if user != "ops" || pass != "s3cret" || path != "/metrics/job/enrich/table/crm.contacts" {
		t.Errorf("push as %q:%q to %s, want ops:s3cret to /metrics/job/enrich/table/crm.contacts", user, pass, path)
	}
}
