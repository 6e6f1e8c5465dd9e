package greenapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestErrorNamesAPIURL: every *Error names the host the call went to (without trailing
// slashes), so that a 403 from the wrong pool's host can say where it came from; a token
// pasted into the URL's path is redacted from it.
func TestErrorNamesAPIURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, suffix, want string
	}{
		{"bare", "", ""},
		{"trailing slash", "/", ""},
		{"path prefix", "/proxy/", "/proxy"},
		{"token in the path", "/" + testToken + "/", "/***"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var srvURL string
			b := setup(t, reply(http.StatusForbidden, ""), func(c *Config) { srvURL = c.APIURL; c.APIURL += tt.suffix })
			_, err := b.client.GetStateInstance(context.Background())
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusForbidden || e.Class != ClassUnusable {
				t.Fatalf("GetStateInstance: %v, want a 403 *Error", err)
			}
			if want := srvURL + tt.want; e.APIURL != want {
				t.Errorf("APIURL = %q, want %q", e.APIURL, want)
			}
			if strings.Contains(e.APIURL, testToken) || strings.Contains(err.Error(), testToken) {
				t.Errorf("the token leaks: %q, %v", e.APIURL, err)
			}
		})
	}
}

// TestNewHTTPClientFor: a shared client made for a timeout never cuts a call before it: its
// response header timeout is at least the timeout (NewHTTPClient's alone would stop a 10 min
// call at 2 × TimeoutDefault).
func TestNewHTTPClientFor(t *testing.T) {
	t.Parallel()
	for _, timeout := range []time.Duration{time.Second, TimeoutDefault, 10 * time.Minute} {
		c := NewHTTPClientFor(4, timeout)
		tr := c.Transport.(*http.Transport)
		if tr.ResponseHeaderTimeout < timeout || tr.ResponseHeaderTimeout < TimeoutDefault || c.Timeout != 0 {
			t.Errorf("timeout %s: header timeout %s, client timeout %s", timeout, tr.ResponseHeaderTimeout, c.Timeout)
		}
		if tr.MaxIdleConnsPerHost < 4 {
			t.Errorf("timeout %s: MaxIdleConnsPerHost %d, want at least 4", timeout, tr.MaxIdleConnsPerHost)
		}
	}
}
