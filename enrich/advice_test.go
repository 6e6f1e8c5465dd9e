package enrich

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/enrich-dev/enrich/greenapi"
)

// TestUnreachableAdvice: a host that does not resolve, refuses or cannot be dialled names
// api_url, not the instance in the console; an answer (any status) is not this advice's.
func TestUnreachableAdvice(t *testing.T) {
	t.Parallel()
	transport := func(status int, err error) error {
		return &greenapi.Error{Class: greenapi.ClassTransient, Instance: "1101000001", Method: "getAvatar", Status: status,
			APIURL: "https://api.example.invalid", Err: err}
	}
	for _, tc := range []struct {
		name  string
		cause error
		want  []string // "" : no advice
	}{
		{"dns", transport(0, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.example.invalid", IsNotFound: true}}),
			[]string{"api_url https://api.example.invalid", "does not resolve (no such host)", "greenapi.api_url", "DNS"}},
		{"refused", transport(0, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}),
			[]string{"api_url https://api.example.invalid refused the connection", "greenapi.api_url"}},
		{"unreachable", transport(0, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}),
			[]string{"api_url https://api.example.invalid could not be reached", "network, firewall and proxy"}},
		{"an answer", transport(502, nil), nil},
		{"a reset after the connection", transport(0, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), nil},
		{"not the API's", errors.New("boom"), nil},
	} {
		got, ok := unreachableAdvice(tc.cause)
		if ok != (tc.want != nil) {
			t.Errorf("%s: advice %q (%t), want advice: %t", tc.name, got, ok, tc.want != nil)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: advice %q lacks %q", tc.name, got, w)
			}
		}
	}
}
