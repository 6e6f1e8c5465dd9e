package greenapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

const (
	testID    = "1101000001"
	testToken = "d75b3a66374942c5b3c019c698abc2067e151558acbd4e1fa5"
	testPath  = "/waInstance" + testID + "/getAvatar/" + testToken
	testURL   = "waInstance" + testID + "/getAvatar/***"
)

// recorded is one request the test server saw.
type recorded struct {
	method      string
	path        string
	contentType string
	body        string
}

// bundle is what a client test needs: the client under test and what its server saw.
type bundle struct {
	client *Client
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []recorded
}

// requests returns the requests the server has seen so far.
func (b *bundle) requests() []recorded {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]recorded(nil), b.reqs...)
}

// setup starts a server running h, recording every request, and a Client pointed at it.
// mods adjust the Config before New.
func setup(t *testing.T, h http.HandlerFunc, mods ...func(*Config)) *bundle {
	t.Helper()
	b := &bundle{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, recorded{r.Method, r.URL.Path, r.Header.Get("Content-Type"), string(body)})
		b.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(b.srv.Close)
	cfg := Config{APIURL: b.srv.URL, IDInstance: testID, Token: testToken, HTTPClient: b.srv.Client()}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.client = c
	return b
}

// reply answers every request with status, body and header pairs.
func reply(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// roundTripFunc lets a test be the transport.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newWithTransport makes a Client whose requests go to rt instead of a network.
func newWithTransport(t *testing.T, rt http.RoundTripper, mods ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{APIURL: "https://api.greenapi.test", IDInstance: testID, Token: testToken,
		HTTPClient: &http.Client{Transport: rt}}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// mustTarget parses s or fails the test.
func mustTarget(t *testing.T, s string) Target {
	t.Helper()
	tg, err := ParseTarget(s)
	if err != nil {
		t.Fatalf("ParseTarget(%q): %v", s, err)
	}
	return tg
}

// assertNoToken fails when the token appears anywhere in err: its text, every error it wraps,
// and the *Error fields.
func assertNoToken(t *testing.T, err error) {
	t.Helper()
	assertNoTokenIn(t, err, testToken)
}

// assertNoTokenIn is assertNoToken for a client made with another token.
func assertNoTokenIn(t *testing.T, err error, token string) {
	t.Helper()
	if err == nil {
		return
	}
	texts := []string{err.Error(), fmt.Sprintf("%v|%+v|%s|%q", err, err, err, err)}
	var e *Error
	if errors.As(err, &e) {
		texts = append(texts, e.Reason, e.URL, e.Instance, e.Method, e.Request)
	}
	for u := err; u != nil; u = errors.Unwrap(u) {
		texts = append(texts, u.Error())
	}
	for _, s := range texts {
		if strings.Contains(s, token) {
			t.Fatalf("token leaked into error text %q", s)
		}
	}
}

// asError returns err as *Error after checking the fields every *Error must have.
func asError(t *testing.T, err error, method string) *Error {
	t.Helper()
	assertNoToken(t, err)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	if e.Instance != testID || e.Method != method || e.URL != "waInstance"+testID+"/"+method+"/***" {
		t.Fatalf("Instance/Method/URL = %q/%q/%q", e.Instance, e.Method, e.URL)
	}
	if !strings.HasPrefix(err.Error(), "Green API "+method+" ") || strings.Contains(err.Error(), "greenapi: ") {
		t.Fatalf("error %q does not start with the service and the method, or names the package", err)
	}
	return e
}

func boolPtr(b bool) *bool { return &b }

func ptrString(p *bool) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// bodyForms are the shapes a 400 body with message msg has been seen in or may take. The
// JSON forms echo the token in their path, as the real server does.
func bodyForms(msg string) map[string]string {
	return map[string]string{
		"plain":       msg,
		"plain-upper": strings.ToUpper(msg) + "\n",
		"json":        `{"statusCode":400,"timestamp":"2023-09-13T22:29:37.459Z","path":"` + testPath + `","message":"` + msg + `"}`,
		"json-reason": `{"reason":"` + msg + `"}`,
		"json-error":  `{"error":"` + msg + `"}`,
	}
}

func TestClassifyErrorTable(t *testing.T) {
	t.Parallel()
	type row struct {
		name       string
		status     int
		msg        string // a 400 message, sent in every body form
		body       string // the body otherwise
		wantClass  Class
		wantReason string // a substring of Reason, case-insensitive
	}
	rows := []row{
		{name: "starting", status: 400, msg: "instance in starting process try later", wantClass: ClassStarting, wantReason: ReasonStarting},
		{name: "starting or not authorized", status: 400, msg: "instance is starting or not authorized", wantClass: ClassStarting, wantReason: ReasonStartingOrNotAuth},
		{name: "not authorized", status: 400, msg: "instance account not authorized", wantClass: ClassUnusable, wantReason: ReasonNotAuthorized},
		{name: "expired", status: 400, msg: "Instance account is expired. Please renew the plan", wantClass: ClassUnusable, wantReason: "expired"},
		{name: "deleted", status: 400, msg: "Instance is deleted", wantClass: ClassUnusable, wantReason: "deleted"},
		{name: "bad request data", status: 400, msg: "bad request data", wantClass: ClassInvalid, wantReason: ReasonBadRequestData},
		{name: "validation failed", status: 400, msg: "Validation failed. Details: 'chatId' is required", wantClass: ClassInvalid, wantReason: "'chatId' is required"},
		{name: "unexpected token", status: 400, msg: "Unexpected token } in JSON at position 15", wantClass: ClassInvalid, wantReason: "unexpected token"},
		{name: "avatar timeout", status: 400, msg: "get avatar timeout limit exceeded", wantClass: ClassAvatarTimeout, wantReason: ReasonAvatarTimeout},
		{name: "check timeout", status: 400, msg: "check phone number timeout limit exceeded", wantClass: ClassAvatarTimeout, wantReason: ReasonCheckNumberTimeout},
		{name: "unknown 400", status: 400, msg: "something new went wrong", wantClass: ClassTransient, wantReason: "something new"},
		{name: "empty 400", status: 400, body: "", wantClass: ClassTransient, wantReason: "empty"},
		{name: "401", status: 401, body: "Unauthorized", wantClass: ClassUnusable, wantReason: "wrong apiTokenInstance (HTTP 401)"},
		{name: "401 empty", status: 401, body: "", wantClass: ClassUnusable, wantReason: "apiTokenInstance"},
		{name: "403", status: 403, body: `{"message":"Forbidden"}`, wantClass: ClassUnusable, wantReason: "idInstance"},
		{name: "403 empty", status: 403, body: "", wantClass: ClassUnusable, wantReason: "HTTP 403"},
		{name: "404", status: 404, body: "Cannot POST /x", wantClass: ClassUnusable, wantReason: "HTTP 404"},
		{name: "404 empty", status: 404, body: "", wantClass: ClassUnusable, wantReason: "HTTP 404"},
		{name: "429 empty", status: 429, body: "", wantClass: ClassRateLimited, wantReason: "HTTP 429"},
		{name: "429 text", status: 429, body: "Too Many Requests", wantClass: ClassRateLimited, wantReason: "too many requests"},
		{name: "429 json", status: 429, body: `{"message":"rate limit"}`, wantClass: ClassRateLimited, wantReason: "rate limit"},
		{name: "466 json", status: 466, body: `{"invokeStatus":{"method":"getAvatar","used":100,"total":100,"status":"QUOTE_EXCEEDED","description":"Monthly quota has been exceeded"}}`, wantClass: ClassUnusable, wantReason: "QUOTE_EXCEEDED: getAvatar: Monthly quota has been exceeded: used 100 of 100"},
		{name: "466 text", status: 466, body: "quota exceeded", wantClass: ClassUnusable, wantReason: "HTTP 466): quota exceeded"},
		{name: "466 empty", status: 466, body: "", wantClass: ClassUnusable, wantReason: "HTTP 466"},
		{name: "499", status: 499, body: "", wantClass: ClassTransient, wantReason: "HTTP 499"},
		{name: "500 text", status: 500, body: "Internal Server Error", wantClass: ClassTransient, wantReason: "internal server error"},
		{name: "500 json", status: 500, body: `{"statusCode":500,"message":"Internal server error"}`, wantClass: ClassTransient, wantReason: "internal server error"},
		{name: "502", status: 502, body: "<html>Bad Gateway</html>", wantClass: ClassTransient, wantReason: "bad gateway"},
		{name: "503", status: 503, body: "", wantClass: ClassTransient, wantReason: "HTTP 503"},
		{name: "504", status: 504, body: "Gateway Time-out", wantClass: ClassTransient, wantReason: "HTTP 504"},
		{name: "507 other 5xx", status: 507, body: "", wantClass: ClassTransient, wantReason: "HTTP 507"},
		{name: "409 other", status: 409, body: "conflict", wantClass: ClassTransient, wantReason: "unexpected HTTP 409"},
		{name: "204 other", status: 204, body: "", wantClass: ClassTransient, wantReason: "HTTP 204"},
		{name: "400 with 'instance account not authorized' in 500", status: 500, body: "instance account not authorized", wantClass: ClassTransient, wantReason: "not authorized"},
	}
	type tc struct {
		name   string
		status int
		body   string
		row    row
	}
	var cases []tc
	for _, r := range rows {
		if r.msg == "" {
			cases = append(cases, tc{r.name, r.status, r.body, r})
			continue
		}
		for form, body := range bodyForms(r.msg) {
			cases = append(cases, tc{r.name + "/" + form, r.status, body, r})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(c.status, c.body))
			_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			e := asError(t, err, methodGetAvatar)
			if e.Class != c.row.wantClass {
				t.Errorf("Class = %v, want %v (reason %q)", e.Class, c.row.wantClass, e.Reason)
			}
			if e.Status != c.status {
				t.Errorf("Status = %d, want %d", e.Status, c.status)
			}
			if !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(c.row.wantReason)) {
				t.Errorf("Reason = %q, want it to contain %q", e.Reason, c.row.wantReason)
			}
			if e.RetryAfter != 0 || e.Err != nil {
				t.Errorf("RetryAfter = %v, Err = %v; want none", e.RetryAfter, e.Err)
			}
		})
	}
}

func TestGetAvatarEditions(t *testing.T) {
	t.Parallel()
	const link = "https://pps.whatsapp.net/v/t61.24694-24/4273448_n.jpg?ccb=11-4&oe=66041D5F&_nc_sid=e6ed6c"
	tests := []struct {
		name string
		body string
		want Avatar
	}{
		{"seed", `{"existsWhatsapp": true, "urlAvatar": "https://pps.whatsapp.net/v/link/to/the/image", "reason": ""}`,
			Avatar{ExistsWhatsapp: boolPtr(true), URLAvatar: "https://pps.whatsapp.net/v/link/to/the/image"}},
		{"seed no avatar", `{"existsWhatsapp": true, "urlAvatar": "", "reason": ""}`, Avatar{ExistsWhatsapp: boolPtr(true)}},
		{"seed no whatsapp", `{"existsWhatsapp":false,"urlAvatar":"","reason":""}`, Avatar{ExistsWhatsapp: boolPtr(false)}},
		{"seed reason whitespace", `{"existsWhatsapp":true,"urlAvatar":"","reason":"  "}`, Avatar{ExistsWhatsapp: boolPtr(true)}},
		{"seed reason null", `{"existsWhatsapp":true,"urlAvatar":"","reason":null}`, Avatar{ExistsWhatsapp: boolPtr(true)}},
		{"current available", `{"urlAvatar":"` + link + `","available":true}`, Avatar{Available: boolPtr(true), URLAvatar: link}},
		{"current available no photo", `{"urlAvatar":"","available":true}`, Avatar{Available: boolPtr(true)}},
		{"current hidden", `{"urlAvatar":"","available":false}`, Avatar{Available: boolPtr(false)}},
		{"base64Avatar", `{"urlAvatar":"` + link + `","available":true,"base64Avatar":"/9j/4AAQSkZJRgABAQAAAQABAAD"}`,
			Avatar{Available: boolPtr(true), URLAvatar: link, Base64Avatar: "/9j/4AAQSkZJRgABAQAAAQABAAD"}},
		{"base64Avatar without a link", `{"urlAvatar":"","available":true,"base64Avatar":"/9j/4AAQ"}`,
			Avatar{Available: boolPtr(true), Base64Avatar: "/9j/4AAQ"}},
		{"unknown fields", `{"urlAvatar":"","available":false,"extra":{"a":[1,2]},"n":null,"existsWhatsapp":null}`, Avatar{Available: boolPtr(false)}},
		{"whitespace around", "\n {\"existsWhatsapp\":false}\n", Avatar{ExistsWhatsapp: boolPtr(false)}},
		{"english: urlAvatar only", `{"urlAvatar":""}`, Avatar{}},
		{"english: urlAvatar and empty reason", `{"urlAvatar":"x","reason":""}`, Avatar{URLAvatar: "x"}},
		{"available only, false", `{"available":false}`, Avatar{Available: boolPtr(false)}},
		{"null urlAvatar beside a field", `{"urlAvatar":null,"available":true}`, Avatar{Available: boolPtr(true)}},
		{"null existsWhatsapp beside a field", `{"existsWhatsapp":null,"urlAvatar":""}`, Avatar{}},
		{"huge base64Avatar", `{"urlAvatar":"x","available":true,"base64Avatar":"` + strings.Repeat("A", 300<<10) + `"}`,
			Avatar{Available: boolPtr(true), URLAvatar: "x", Base64Avatar: strings.Repeat("A", 300<<10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(200, tt.body, "Content-Type", "application/json"))
			got, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			if err != nil {
				t.Fatalf("GetAvatar: %v", err)
			}
			if ptrString(got.ExistsWhatsapp) != ptrString(tt.want.ExistsWhatsapp) ||
				ptrString(got.Available) != ptrString(tt.want.Available) || got.URLAvatar != tt.want.URLAvatar ||
				got.Base64Avatar != tt.want.Base64Avatar {
				t.Fatalf("got {exists %s, available %s, url %q}, want {exists %s, available %s, url %q}",
					ptrString(got.ExistsWhatsapp), ptrString(got.Available), got.URLAvatar,
					ptrString(tt.want.ExistsWhatsapp), ptrString(tt.want.Available), tt.want.URLAvatar)
			}
			if got.HasAvatar() != (tt.want.URLAvatar != "" || tt.want.Base64Avatar != "") {
				t.Errorf("HasAvatar = %v for %+v", got.HasAvatar(), tt.want)
			}
		})
	}
}

func TestGetAvatar200Errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantClass  Class
		wantReason string
	}{
		{"bad request data", `{"existsWhatsapp":false,"urlAvatar":"","reason":"bad request data"}`, ClassInvalid, ReasonBadRequestData},
		{"avatar timeout", `{"existsWhatsapp":false,"urlAvatar":"","reason":"get avatar timeout limit exceeded"}`, ClassAvatarTimeout, ReasonAvatarTimeout},
		{"avatar timeout upper", `{"reason":"Get Avatar Timeout Limit Exceeded"}`, ClassAvatarTimeout, "timeout"},
		{"starting", `{"reason":"instance in starting process try later"}`, ClassStarting, ReasonStarting},
		{"not authorized", `{"existsWhatsapp":false,"reason":"instance account not authorized"}`, ClassUnusable, ReasonNotAuthorized},
		{"unknown reason", `{"existsWhatsapp":false,"urlAvatar":"","reason":"whatsapp is sad"}`, ClassTransient, "whatsapp is sad"},
		{"empty body", ``, ClassTransient, "empty"},
		{"not json", `<html>ok</html>`, ClassTransient, "not a JSON object"},
		{"null", `null`, ClassTransient, "not a JSON object"},
		{"array", `[{"existsWhatsapp":true}]`, ClassTransient, "not a JSON object"},
		{"truncated", `{"existsWhatsapp":tr`, ClassTransient, "unparsable"},
		{"wrong type", `{"existsWhatsapp":"yes"}`, ClassTransient, "unparsable"},
		{"reason not string", `{"reason":42}`, ClassTransient, "unparsable"},
		{"too large", `{"base64Avatar":"` + strings.Repeat("A", maxSuccessBody) + `"}`, ClassTransient, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(200, tt.body))
			av, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567@c.us"))
			e := asError(t, err, methodGetAvatar)
			if e.Class != tt.wantClass || e.Status != 200 {
				t.Errorf("Class, Status = %v, %d; want %v, 200", e.Class, e.Status, tt.wantClass)
			}
			if !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(tt.wantReason)) {
				t.Errorf("Reason = %q, want it to contain %q", e.Reason, tt.wantReason)
			}
			if av != (Avatar{}) {
				t.Errorf("Avatar = %+v on error, want zero", av)
			}
		})
	}
}

// TestGetAvatarNoDocumentedFields checks that a 200 without existsWhatsapp, available or
// urlAvatar (non-null) is a transient failure of the call, never an empty answer.
func TestGetAvatarNoDocumentedFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantReason string // the server's words appended, if any
	}{
		{"empty object", `{}`, ""},
		{"empty object spaced", " { }\n", ""},
		{"error field", `{"error":"temporarily unavailable"}`, ": temporarily unavailable"},
		{"message field", `{"message":"try again"}`, ": try again"},
		{"null urlAvatar", `{"urlAvatar":null}`, ""},
		{"every field null", `{"existsWhatsapp":null,"available":null,"urlAvatar":null,"reason":null}`, ""},
		{"empty reason", `{"reason":""}`, ""},
		{"blank reason", `{"reason":"  "}`, ""},
		{"unknown field", `{"foo":1}`, ""},
		{"base64Avatar only", `{"base64Avatar":"/9j/4AAQ"}`, ""},
		{"other method's field", `{"stateInstance":"authorized"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(200, tt.body, "Content-Type", "application/json"))
			av, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			e := asError(t, err, methodGetAvatar)
			if e.Class != ClassTransient || e.Status != 200 {
				t.Errorf("Class, Status = %v, %d; want transient, 200", e.Class, e.Status)
			}
			if want := reasonNoDocumentedFields + tt.wantReason; e.Reason != want {
				t.Errorf("Reason = %q, want %q", e.Reason, want)
			}
			if e.Request != `{"chatId":"79001234567@c.us"}` {
				t.Errorf("Request = %q", e.Request)
			}
			if IsSystemic(err) {
				t.Error("a 200 without documented fields is systemic; it is about one call")
			}
			if av != (Avatar{}) {
				t.Errorf("Avatar = %+v on error, want zero", av)
			}
		})
	}
}

// TestErrorRequest checks that every *Error of GetAvatar and CheckWhatsapp carries the body
// that was sent, in the configured form, and that GetStateInstance's carries none.
func TestErrorRequest(t *testing.T) {
	t.Parallel()
	type call func(t *testing.T, c *Client) error
	getAvatar := func(target string) call {
		return func(t *testing.T, c *Client) error {
			_, err := c.GetAvatar(context.Background(), mustTarget(t, target))
			return err
		}
	}
	check := func(t *testing.T, c *Client) error {
		_, err := c.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567"))
		return err
	}
	state := func(_ *testing.T, c *Client) error { _, err := c.GetStateInstance(context.Background()); return err }
	validation := `{"statusCode":400,"path":"/x","message":"Validation failed. Details: 'chatId' is required"}`
	tests := []struct {
		name      string
		requestBy RequestBy
		status    int
		body      string
		call      call
		want      string
	}{
		{"phoneNumber refused", RequestByPhoneNumber, 400, validation, getAvatar("79001234567"), `{"phoneNumber":79001234567}`},
		{"chatId default", "", 400, "bad request data", getAvatar("+7 900 123-45-67"), `{"chatId":"79001234567@c.us"}`},
		{"group as chatId", RequestByPhoneNumber, 500, "", getAvatar("120363043968066561@g.us"), `{"chatId":"120363043968066561@g.us"}`},
		{"200 reason", RequestByPhoneNumber, 200, `{"reason":"bad request data"}`, getAvatar("380123456789"), `{"phoneNumber":380123456789}`},
		{"429", "", 429, "", getAvatar("79001234567"), `{"chatId":"79001234567@c.us"}`},
		{"unparsable 200", "", 200, "{", getAvatar("79001234567"), `{"chatId":"79001234567@c.us"}`},
		{"checkWhatsapp 400", "", 400, "bad phone number, valid 11 or 12 digits", check, `{"phoneNumber":79001234567}`},
		{"checkWhatsapp no field", "", 200, `{}`, check, `{"phoneNumber":79001234567}`},
		{"checkWhatsapp 200 reason", "", 200, `{"reason":"check phone number timeout limit exceeded"}`, check, `{"phoneNumber":79001234567}`},
		{"getStateInstance", RequestByPhoneNumber, 400, "instance account not authorized", state, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(tt.status, tt.body), func(c *Config) { c.RequestBy = tt.requestBy })
			err := tt.call(t, b.client)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *Error", err, err)
			}
			if e.Request != tt.want {
				t.Errorf("Request = %q, want %q", e.Request, tt.want)
			}
			if tt.want != "" && e.Request != b.requests()[0].body {
				t.Errorf("Request = %q, but %q was sent", e.Request, b.requests()[0].body)
			}
			if e.Request != "" && strings.Contains(err.Error(), e.Request) {
				t.Errorf("Error() %q quotes the request", err)
			}
		})
	}
	t.Run("transport error", func(t *testing.T) {
		t.Parallel()
		c := newWithTransport(t, roundTripFunc(func(*http.Request) (*http.Response, error) {
			return nil, errors.New("connection refused")
		}), func(c *Config) { c.RequestBy = RequestByPhoneNumber })
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		if e := asError(t, err, methodGetAvatar); e.Request != `{"phoneNumber":79001234567}` {
			t.Errorf("Request = %q", e.Request)
		}
	})
}

func TestIsSystemic(t *testing.T) {
	t.Parallel()
	transient := func(status int) *Error { return &Error{Class: ClassTransient, Status: status} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"network error", &Error{Class: ClassTransient, Err: errors.New("connection refused")}, true},
		{"timeout", &Error{Class: ClassTransient, Err: context.DeadlineExceeded}, true},
		{"body cut short", &Error{Class: ClassTransient, Status: 200, Err: io.ErrUnexpectedEOF}, true},
		{"wrapped", fmt.Errorf("step: %w", transient(502)), true},
		{"499", transient(499), true},
		{"500", transient(500), true},
		{"502", transient(502), true},
		{"503", transient(503), true},
		{"504", transient(504), true},
		{"599", transient(599), true},
		{"caller cancelled", fmt.Errorf("greenapi: getAvatar: %w", context.Canceled), false},
		{"caller deadline", context.DeadlineExceeded, false},
		{"429", &Error{Class: ClassRateLimited, Status: 429}, false},
		{"400 bad request data", &Error{Class: ClassInvalid, Status: 400, Reason: ReasonBadRequestData}, false},
		{"400 starting", &Error{Class: ClassStarting, Status: 400}, false},
		{"400 unknown words", transient(400), false},
		{"200 avatar timeout", &Error{Class: ClassAvatarTimeout, Status: 200}, false},
		{"200 no documented fields", &Error{Class: ClassTransient, Status: 200, Reason: reasonNoDocumentedFields}, false},
		{"200 too large", &Error{Class: ClassTransient, Status: 200, Reason: "response body larger than 4194304 bytes"}, false},
		{"302", transient(302), false},
		{"409", transient(409), false},
		{"401", &Error{Class: ClassUnusable, Status: 401}, false},
		{"466", &Error{Class: ClassUnusable, Status: 466}, false},
		{"cannot build request", &Error{Class: ClassUnusable, Err: errors.New("parse")}, false},
		{"5xx of another class", &Error{Class: ClassUnusable, Status: 500}, false},
		{"not an *Error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsSystemic(tt.err); got != tt.want {
				t.Errorf("IsSystemic(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	// And as the client makes them.
	t.Run("from the client", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			status int
			body   string
			want   bool
		}{{503, "", true}, {499, "", true}, {500, "instance account not authorized", true}, {429, "", false}, {400, "bad request data", false}, {200, "{}", false}} {
			b := setup(t, reply(c.status, c.body))
			_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			if got := IsSystemic(err); got != c.want {
				t.Errorf("HTTP %d %q: IsSystemic = %v, want %v (%v)", c.status, c.body, got, c.want, err)
			}
		}
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		cl, err := New(Config{APIURL: closed.URL, IDInstance: testID, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.GetAvatar(context.Background(), mustTarget(t, "79001234567")); !IsSystemic(err) {
			t.Errorf("connection refused: IsSystemic false (%v)", err)
		}
		timeout := newWithTransport(t, blockUntilDone(nil), func(c *Config) { c.Timeout = time.Millisecond })
		if _, err := timeout.GetAvatar(context.Background(), mustTarget(t, "79001234567")); !IsSystemic(err) {
			t.Errorf("per-request timeout: IsSystemic false (%v)", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := timeout.GetAvatar(ctx, mustTarget(t, "79001234567")); IsSystemic(err) {
			t.Errorf("caller's cancellation: IsSystemic true (%v)", err)
		}
	})
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 3, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		status int
		header []string
		want   time.Duration
	}{
		{"absent", 429, nil, 0},
		{"seconds", 429, []string{"Retry-After", "7"}, 7 * time.Second},
		{"zero", 429, []string{"Retry-After", "0"}, 0},
		{"date", 429, []string{"Retry-After", now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{"date past", 429, []string{"Retry-After", now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"malformed", 429, []string{"Retry-After", "soon"}, 0},
		{"negative", 429, []string{"Retry-After", "-5"}, 0},
		{"fraction", 429, []string{"Retry-After", "1.5"}, 0},
		{"huge", 429, []string{"Retry-After", "99999999999999999999"}, maxRetryAfter},
		{"on 503", 503, []string{"Retry-After", "3"}, 3 * time.Second},
		{"ignored on 500", 500, []string{"Retry-After", "3"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(tt.status, "", tt.header...))
			b.client.now = func() time.Time { return now }
			_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			e := asError(t, err, methodGetAvatar)
			if e.RetryAfter != tt.want {
				t.Errorf("RetryAfter = %v, want %v", e.RetryAfter, tt.want)
			}
			if tt.status == 429 && e.Class != ClassRateLimited {
				t.Errorf("Class = %v, want rate_limited", e.Class)
			}
		})
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		requestBy RequestBy
		target    string
		wantBody  string
	}{
		{"phone default", "", "+7 (900) 123-45-67", `{"chatId":"79001234567@c.us"}`},
		{"phone chatId", RequestByChatID, "380123456789", `{"chatId":"380123456789@c.us"}`},
		{"chat default", "", "79001234567@c.us", `{"chatId":"79001234567@c.us"}`},
		{"group default", "", "79001234567-1581234048@g.us", `{"chatId":"79001234567-1581234048@g.us"}`},
		{"phone as number", RequestByPhoneNumber, "79001234567", `{"phoneNumber":79001234567}`},
		{"12 digits as number", RequestByPhoneNumber, "380123456789", `{"phoneNumber":380123456789}`},
		{"chat as number", RequestByPhoneNumber, "79001234567@c.us", `{"phoneNumber":79001234567}`},
		{"group stays chatId", RequestByPhoneNumber, "79001234567-1581234048@g.us", `{"chatId":"79001234567-1581234048@g.us"}`},
		{"new group stays chatId", RequestByPhoneNumber, "120363043968066561@g.us", `{"chatId":"120363043968066561@g.us"}`},
		// Every length from 10 to 15 digits is sent, in either form.
		{"10 digits", "", "+65 9123 4567", `{"chatId":"6591234567@c.us"}`},
		{"10 digits as number", RequestByPhoneNumber, "4791234567", `{"phoneNumber":4791234567}`},
		{"13 digits", "", "+55 11 91234-5678", `{"chatId":"5511912345678@c.us"}`},
		{"13 digits as number", RequestByPhoneNumber, "5491123456789@c.us", `{"phoneNumber":5491123456789}`},
		{"15 digits as number", RequestByPhoneNumber, "123456789012345", `{"phoneNumber":123456789012345}`},
		{"13-digit owner's group", RequestByPhoneNumber, "5511912345678-1581234048@g.us", `{"chatId":"5511912345678-1581234048@g.us"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(200, `{"urlAvatar":"","available":true}`), func(c *Config) { c.RequestBy = tt.requestBy })
			if want := cmp.Or(tt.requestBy, RequestByDefault); b.client.RequestBy() != want {
				t.Errorf("RequestBy() = %q, want %q", b.client.RequestBy(), want)
			}
			if _, err := b.client.GetAvatar(context.Background(), mustTarget(t, tt.target)); err != nil {
				t.Fatalf("GetAvatar: %v", err)
			}
			reqs := b.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.body != tt.wantBody {
				t.Errorf("body = %s, want %s", r.body, tt.wantBody)
			}
			if r.method != http.MethodPost || r.path != testPath || r.contentType != "application/json" {
				t.Errorf("request = %s %s (%s), want POST %s (application/json)", r.method, r.path, r.contentType, testPath)
			}
		})
	}
}

func TestAPIURLForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		suffix   string
		wantPath string
	}{
		{"bare", "", testPath},
		{"trailing slash", "/", testPath},
		{"two trailing slashes", "//", testPath},
		{"path prefix", "/proxy/green", "/proxy/green" + testPath},
		{"path prefix slash", "/proxy/green/", "/proxy/green" + testPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var srvURL string
			b := setup(t, reply(200, `{"available":true}`), func(c *Config) { srvURL = c.APIURL; c.APIURL += tt.suffix })
			if _, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567")); err != nil {
				t.Fatalf("GetAvatar via %q: %v", srvURL+tt.suffix, err)
			}
			if got := b.requests()[0].path; got != tt.wantPath {
				t.Errorf("path = %q, want %q (method name case exactly getAvatar)", got, tt.wantPath)
			}
		})
	}
}

func TestInvalidTargetsCostNoCall(t *testing.T) {
	t.Parallel()
	b := setup(t, reply(200, `{"existsWhatsapp":true}`))
	ctx := context.Background()
	_, err := b.client.GetAvatar(ctx, Target{})
	if !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("GetAvatar(zero) err = %v, want ErrInvalidTarget", err)
	}
	if ClassOf(err) != 0 {
		t.Errorf("ClassOf(GetAvatar(zero)) = %v, want 0", ClassOf(err))
	}
	for _, tg := range []Target{{}, mustTarget(t, "79001234567-1581234048@g.us"), mustTarget(t, "120363043968066561@g.us")} {
		if _, err := b.client.CheckWhatsapp(ctx, tg); !errors.Is(err, ErrInvalidTarget) {
			t.Errorf("CheckWhatsapp(%q) err = %v, want ErrInvalidTarget", tg, err)
		}
	}
	if n := len(b.requests()); n != 0 {
		t.Errorf("%d requests made for invalid targets, want 0", n)
	}
}

func TestNetworkErrors(t *testing.T) {
	t.Parallel()
	t.Run("closed server", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c, err := New(Config{APIURL: srv.URL, IDInstance: testID, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		e := asError(t, err, methodGetAvatar)
		if e.Class != ClassTransient || e.Status != 0 || e.Err == nil || e.Reason != "" {
			t.Fatalf("got %+v, want transient, status 0, Err set, no Reason", e)
		}
	})
	t.Run("transport echoes URL", func(t *testing.T) {
		t.Parallel()
		c := newWithTransport(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return nil, fmt.Errorf("proxy refused %s (token %s)", r.URL, testToken)
		}))
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		e := asError(t, err, methodGetAvatar)
		if e.Class != ClassTransient || e.Status != 0 || !strings.Contains(e.Err.Error(), "proxy refused") {
			t.Fatalf("got %v, want transient with the scrubbed cause", err)
		}
	})
	t.Run("body cut short", func(t *testing.T) {
		t.Parallel()
		c := newWithTransport(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(io.MultiReader(
				strings.NewReader(`{"existsWhatsapp":`), errReader{io.ErrUnexpectedEOF}))}, nil
		}))
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		e := asError(t, err, methodGetAvatar)
		if e.Class != ClassTransient || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v, want transient wrapping ErrUnexpectedEOF", err)
		}
	})
	t.Run("redirect not followed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, reply(http.StatusFound, "", "Location", "/elsewhere"))
		if b.srv.Client().CheckRedirect != nil {
			t.Fatal("New changed the caller's http.Client")
		}
		_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		e := asError(t, err, methodGetAvatar)
		if e.Class != ClassTransient || e.Status != http.StatusFound || len(b.requests()) != 1 {
			t.Fatalf("got %v after %d requests, want transient 302 after 1", err, len(b.requests()))
		}
	})
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// blockUntilDone is a transport that answers only when the request's context ends.
func blockUntilDone(onCall func()) roundTripFunc {
	return func(r *http.Request) (*http.Response, error) {
		if onCall != nil {
			onCall()
		}
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
}

func TestTimeoutAndCancellation(t *testing.T) {
	t.Parallel()
	t.Run("per-request timeout is transient", func(t *testing.T) {
		t.Parallel()
		c := newWithTransport(t, blockUntilDone(nil), func(c *Config) { c.Timeout = 20 * time.Millisecond })
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		e := asError(t, err, methodGetAvatar)
		if e.Class != ClassTransient || e.Status != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want transient wrapping DeadlineExceeded", err)
		}
		if !strings.Contains(err.Error(), "20ms") {
			t.Errorf("error %q does not say which timeout", err)
		}
	})
	t.Run("caller cancels mid-call", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := newWithTransport(t, blockUntilDone(cancel))
		_, err := c.GetAvatar(ctx, mustTarget(t, "79001234567"))
		assertNoToken(t, err)
		if !errors.Is(err, context.Canceled) || ClassOf(err) != 0 {
			t.Fatalf("got %v (class %v), want context.Canceled and no class", err, ClassOf(err))
		}
	})
	t.Run("caller cancelled before", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int32
		c := newWithTransport(t, blockUntilDone(func() { calls.Add(1) }))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for _, call := range []func() error{
			func() error { _, err := c.GetAvatar(ctx, mustTarget(t, "79001234567")); return err },
			func() error { _, err := c.CheckWhatsapp(ctx, mustTarget(t, "79001234567")); return err },
			func() error { _, err := c.GetStateInstance(ctx); return err },
		} {
			err := call()
			assertNoToken(t, err)
			if !errors.Is(err, context.Canceled) || ClassOf(err) != 0 {
				t.Errorf("got %v, want context.Canceled and no class", err)
			}
		}
		if n := calls.Load(); n != 0 {
			t.Errorf("%d round trips with a cancelled context, want 0", n)
		}
	})
	t.Run("caller deadline is the caller's", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		c := newWithTransport(t, blockUntilDone(nil))
		_, err := c.GetAvatar(ctx, mustTarget(t, "79001234567"))
		assertNoToken(t, err)
		if !errors.Is(err, context.DeadlineExceeded) || ClassOf(err) != 0 {
			t.Fatalf("got %v (class %v), want DeadlineExceeded and no class", err, ClassOf(err))
		}
	})
}

func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	bodies := []struct {
		status int
		body   string
	}{
		{400, "bad request data"},
		{400, "bad request data " + strings.Repeat("x", maxErrorBody+1000)}, // longer than read, drained
		{500, "Internal Server Error"},
		{429, ""},
		{200, `{"urlAvatar":"","available":true}`},
		{200, `{"available":true}` + strings.Repeat(" ", 1000)},
	}
	var i atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		b := bodies[int(i.Add(1)-1)%len(bodies)]
		w.WriteHeader(b.status)
		_, _ = io.WriteString(w, b.body)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(Config{APIURL: srv.URL, IDInstance: testID, Token: testToken, HTTPClient: NewHTTPClient(4)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 * len(bodies) {
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		assertNoToken(t, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential calls, want 1 (bodies not drained?)", n)
	}
}

func TestReasonIsCleaned(t *testing.T) {
	t.Parallel()
	long := "bad request data: " + strings.Repeat("é", 500)
	b := setup(t, reply(400, "  "+long+"\r\n\t"))
	_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
	e := asError(t, err, methodGetAvatar)
	if e.Class != ClassInvalid {
		t.Errorf("Class = %v, want invalid", e.Class)
	}
	if n := utf8.RuneCountInString(e.Reason); n > maxReason || !utf8.ValidString(e.Reason) || !strings.HasPrefix(e.Reason, "bad request data: ") {
		t.Errorf("Reason has %d runes, valid UTF-8 %v: %q", n, utf8.ValidString(e.Reason), e.Reason)
	}
}

func TestGetStateInstance(t *testing.T) {
	t.Parallel()
	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		b := setup(t, reply(200, `{"stateInstance":"starting"}`))
		got, err := b.client.GetStateInstance(context.Background())
		if err != nil || got != StateStarting {
			t.Fatalf("GetStateInstance = %q, %v; want starting", got, err)
		}
		r := b.requests()[0]
		if want := "/waInstance" + testID + "/getStateInstance/" + testToken; r.method != http.MethodGet || r.path != want || r.body != "" {
			t.Errorf("request = %s %s %q, want GET %s with no body", r.method, r.path, r.body, want)
		}
	})
	tests := []struct {
		name      string
		status    int
		body      string
		wantClass Class
	}{
		{"401", 401, "", ClassUnusable},
		{"no state", 200, `{"foo":"bar"}`, ClassTransient},
		{"starting 400", 400, `{"message":"instance in starting process try later"}`, ClassStarting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(tt.status, tt.body))
			_, err := b.client.GetStateInstance(context.Background())
			if e := asError(t, err, methodGetStateInstance); e.Class != tt.wantClass {
				t.Fatalf("Class = %v, want %v", e.Class, tt.wantClass)
			}
		})
	}
}

func TestCheckWhatsapp(t *testing.T) {
	t.Parallel()
	for _, want := range []bool{true, false} {
		t.Run(fmt.Sprint(want), func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(200, fmt.Sprintf(`{"existsWhatsapp":%v}`, want)))
			got, err := b.client.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567@c.us"))
			if err != nil || got != want {
				t.Fatalf("CheckWhatsapp = %v, %v; want %v", got, err, want)
			}
			r := b.requests()[0]
			wantPath := "/waInstance" + testID + "/checkWhatsapp/" + testToken
			if r.method != http.MethodPost || r.path != wantPath || r.body != `{"phoneNumber":79001234567}` || r.contentType != "application/json" {
				t.Errorf("request = %s %s %s %q", r.method, r.path, r.contentType, r.body)
			}
		})
	}
	tests := []struct {
		name      string
		status    int
		body      string
		wantClass Class
	}{
		{"timeout reason", 200, `{"existsWhatsapp":false,"reason":"check phone number timeout limit exceeded"}`, ClassAvatarTimeout},
		{"466", 466, `{"invokeStatus":{"method":"checkWhatsapp","used":3000,"total":3000,"status":"QUOTE_EXCEEDED","description":"quota"}}`, ClassUnusable},
		{"missing field", 200, `{}`, ClassTransient},
		// Its errors are HTTP 400s (docs/greenapi.md, "Related methods").
		{"timeout 400", 400, "check phone number timeout limit exceeded", ClassAvatarTimeout},
		{"bad phone number 400", 400, "bad phone number, valid 11 or 12 digits", ClassInvalid},
		{"bad phone number 400 json", 400, `{"statusCode":400,"message":"bad phone number, valid 11 or 12 digits"}`, ClassInvalid},
		{"starting 400", 400, "instance is starting or not authorized", ClassStarting},
		{"validation 400", 400, `{"statusCode":400,"message":"Validation failed. Details: 'phoneNumber' is required"}`, ClassInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(tt.status, tt.body))
			_, err := b.client.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567"))
			if e := asError(t, err, methodCheckWhatsapp); e.Class != tt.wantClass {
				t.Fatalf("Class = %v, want %v (%v)", e.Class, tt.wantClass, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	valid := Config{APIURL: "https://api.greenapi.test", IDInstance: testID, Token: testToken}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		c, err := New(valid)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID() != testID || c.timeout != TimeoutDefault || c.RequestBy() != RequestByChatID || c.hc == nil || c.now == nil {
			t.Errorf("defaults not applied: id %q timeout %v requestBy %q", c.ID(), c.timeout, c.requestBy)
		}
		if c.base != "https://api.greenapi.test" {
			t.Errorf("base = %q", c.base)
		}
		tr := c.hc.Transport.(*http.Transport)
		if tr.ResponseHeaderTimeout < c.timeout || c.hc.Timeout != 0 {
			t.Errorf("default client: header timeout %v, client timeout %v", tr.ResponseHeaderTimeout, c.hc.Timeout)
		}
	})
	t.Run("long timeout stretches header timeout", func(t *testing.T) {
		t.Parallel()
		cfg := valid
		cfg.Timeout = 10 * time.Minute
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if tr := c.hc.Transport.(*http.Transport); tr.ResponseHeaderTimeout < cfg.Timeout {
			t.Errorf("header timeout %v shorter than Timeout %v", tr.ResponseHeaderTimeout, cfg.Timeout)
		}
	})
	tests := []struct {
		name      string
		mod       func(*Config)
		wantField string
	}{
		{"no url", func(c *Config) { c.APIURL = "" }, "APIURL"},
		{"no scheme", func(c *Config) { c.APIURL = "api.greenapi.test" }, "APIURL"},
		{"ftp", func(c *Config) { c.APIURL = "ftp://api.greenapi.test" }, "APIURL"},
		{"no host", func(c *Config) { c.APIURL = "https://" }, "APIURL"},
		{"query", func(c *Config) { c.APIURL = "https://api.greenapi.test/?x=1" }, "APIURL"},
		{"user info", func(c *Config) { c.APIURL = "https://user:" + testToken + "@api.greenapi.test" }, "APIURL"},
		{"full method url", func(c *Config) {
			c.APIURL = "https://api.greenapi.test/waInstance" + testID + "/getAvatar/" + testToken
		}, "APIURL"},
		{"bad url", func(c *Config) { c.APIURL = "https://api.greenapi.test/%zz" + testToken }, "APIURL"},
		{"no id", func(c *Config) { c.IDInstance = "" }, "IDInstance"},
		{"id letters", func(c *Config) { c.IDInstance = "110100000a" }, "IDInstance"},
		{"token as id", func(c *Config) { c.IDInstance = testToken }, "IDInstance"},
		{"no token", func(c *Config) { c.Token = "" }, "Token"},
		{"token with slash", func(c *Config) { c.Token = testToken + "/x" }, "Token"},
		{"token with space", func(c *Config) { c.Token = " " + testToken }, "Token"},
		{"request by", func(c *Config) { c.RequestBy = "phone" }, "RequestBy"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tt.mod(&cfg)
			c, err := New(cfg)
			if err == nil {
				t.Fatalf("New succeeded: %+v", c)
			}
			if !strings.Contains(err.Error(), tt.wantField) || !strings.HasPrefix(err.Error(), "greenapi: ") {
				t.Errorf("error %q does not name %s", err, tt.wantField)
			}
			for _, tok := range []string{testToken, cfg.Token} {
				if tok != "" && strings.Contains(err.Error(), tok) {
					t.Errorf("error %q leaks the token", err)
				}
			}
		})
	}
}

func TestNewHTTPClient(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, 0, 1, 16, 500} {
		c := NewHTTPClient(n)
		tr, ok := c.Transport.(*http.Transport)
		if !ok {
			t.Fatalf("Transport is %T", c.Transport)
		}
		want := max(n, 1)
		if n < 1 {
			want = MaxConnsPerHostDefault
		}
		if tr.MaxIdleConnsPerHost < want || tr.MaxIdleConns < tr.MaxIdleConnsPerHost || tr.MaxConnsPerHost != 0 {
			t.Errorf("n=%d: MaxIdleConnsPerHost %d, MaxIdleConns %d, MaxConnsPerHost %d", n, tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.MaxConnsPerHost)
		}
		if c.Timeout != 0 || tr.DisableKeepAlives || tr.IdleConnTimeout == 0 || tr.TLSHandshakeTimeout == 0 || tr.ResponseHeaderTimeout < TimeoutDefault {
			t.Errorf("n=%d: timeouts/keep-alive not tuned: %+v", n, tr)
		}
		if err := c.CheckRedirect(nil, nil); !errors.Is(err, http.ErrUseLastResponse) {
			t.Errorf("CheckRedirect = %v, want ErrUseLastResponse", err)
		}
	}
}

// TestTokenNeverLeaks runs every failing path with servers and transports that echo the token
// and checks that no error text carries it.
func TestTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	echo := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, strings.ReplaceAll(body, "URL", r.URL.String()))
		}
	}
	var handlers []http.HandlerFunc
	for _, status := range []int{400, 401, 403, 404, 429, 466, 499, 500, 502, 503, 504, 302, 418} {
		for _, body := range []string{
			"URL",
			"bad request data at URL",
			"instance account not authorized " + testToken,
			`{"statusCode":400,"path":"URL","message":"Validation failed for URL"}`,
			`{"message":"` + testToken + `"}`,
			`{"path":"URL"}`,
			`{"invokeStatus":{"method":"URL","status":"QUOTE_EXCEEDED","description":"` + testToken + `"}}`,
			strings.Repeat("x", 190) + testToken, // the token straddles the cut
		} {
			handlers = append(handlers, echo(status, body))
		}
	}
	for _, body := range []string{
		`{"reason":"URL"}`,
		`{"existsWhatsapp":false,"reason":"bad request data ` + testToken + `"}`,
		`{"reason":"` + strings.Repeat("y", 195) + testToken + `"}`,
		`not json URL`,
		`{"existsWhatsapp":"URL"}`,
		`{"existsWhatsapp":true,` + testToken,
		`{"error":"URL"}`,
		`{"message":"` + testToken + `"}`,
		`{"urlAvatar":null,"description":"` + strings.Repeat("z", 120) + testToken + `"}`,
	} {
		handlers = append(handlers, echo(200, body))
	}
	var errs []error
	for _, h := range handlers {
		b := setup(t, h)
		_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		errs = append(errs, err)
		_, err = b.client.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567"))
		errs = append(errs, err)
		_, err = b.client.GetStateInstance(context.Background())
		errs = append(errs, err)
	}
	// Transports that fail with the URL or the token in their text.
	for _, rt := range []roundTripFunc{
		func(r *http.Request) (*http.Response, error) { return nil, errors.New("boom " + r.URL.String()) },
		func(r *http.Request) (*http.Response, error) {
			return nil, fmt.Errorf("wrapped: %w", context.DeadlineExceeded)
		},
		func(r *http.Request) (*http.Response, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New(r.URL.Path)}
		},
		blockUntilDone(nil),
	} {
		c := newWithTransport(t, rt, func(c *Config) { c.Timeout = 10 * time.Millisecond })
		_, err := c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
		errs = append(errs, err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c, err := New(Config{APIURL: srv.URL, IDInstance: testID, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
	errs = append(errs, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.GetAvatar(ctx, mustTarget(t, "79001234567"))
	errs = append(errs, err)
	// Validation errors with the token in every field.
	for _, cfg := range []Config{
		{APIURL: "ftp://x/" + testToken, IDInstance: testID, Token: testToken},
		{APIURL: "https://x/?" + testToken, IDInstance: testID, Token: testToken},
		{APIURL: testToken, IDInstance: testID, Token: testToken},
		{APIURL: "https://x", IDInstance: testToken, Token: testToken},
		{APIURL: "https://x", IDInstance: testID, Token: testToken, RequestBy: RequestBy(testToken)},
		{APIURL: "https://api.greenapi.test/waInstance1/getAvatar/" + testToken, IDInstance: testID, Token: testToken},
	} {
		_, err := New(cfg)
		if err == nil {
			t.Errorf("New succeeded for a bad config")
		}
		errs = append(errs, err)
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		assertNoToken(t, err)
	}
	// A token made of digits that the request body also holds: Request is redacted too.
	const digitToken = "9001234567"
	for _, requestBy := range []RequestBy{RequestByChatID, RequestByPhoneNumber} {
		for _, h := range []http.HandlerFunc{echo(400, "URL"), echo(200, `{}`), echo(503, "")} {
			b := setup(t, h, func(c *Config) { c.Token, c.RequestBy = digitToken, requestBy })
			_, err := b.client.GetAvatar(context.Background(), mustTarget(t, "79001234567"))
			assertNoTokenIn(t, err, digitToken)
			_, err = b.client.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567"))
			assertNoTokenIn(t, err, digitToken)
			if e := (*Error)(nil); !errors.As(err, &e) || e.Request != `{"phoneNumber":7***}` {
				t.Errorf("CheckWhatsapp error %#v, want Request with the token redacted", err)
			}
		}
	}
}

// TestQuota466Named: a 466 reports the limit that was hit, from whichever object says so. The
// chats limit answers invokeStatus.status QUOTE_ALLOWED (the method's own quota is fine) with a
// correspondentsStatus object: the reason names the chats limit from that object, and never
// reports "QUOTE_ALLOWED" as if it were the problem.
func TestQuota466Named(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       []string
		notWant    string
	}{
		{"method quota", `{"invokeStatus":{"method":"checkWhatsapp","used":100,"total":100,"status":"QUOTE_EXCEEDED","description":"Monthly quota has been exceeded"}}`,
			[]string{"HTTP 466", "QUOTE_EXCEEDED", "checkWhatsapp", "used 100 of 100"}, "chats limit"},
		{"chats limit", `{"invokeStatus":{"method":"checkWhatsapp","status":"QUOTE_ALLOWED","description":"The method is allowed"},` +
			`"correspondentsStatus":{"status":"CORRESPONDENTS_QUOTE_EXCEEDED","description":"Exceeded the limit on the number of chats","used":3,"total":3}}`,
			[]string{"HTTP 466", "chats limit", "CORRESPONDENTS_QUOTE_EXCEEDED", "Exceeded the limit on the number of chats", "used 3 of 3", "checkWhatsapp"}, "QUOTE_ALLOWED:"},
		{"chats limit without its object", `{"invokeStatus":{"method":"getAvatar","status":"QUOTE_ALLOWED"}}`,
			[]string{"chats limit", "no correspondentsStatus"}, "QUOTE_ALLOWED:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, reply(466, tt.body))
			_, err := b.client.CheckWhatsapp(context.Background(), mustTarget(t, "79001234567"))
			e := asError(t, err, methodCheckWhatsapp)
			if e.Class != ClassUnusable || e.Status != 466 {
				t.Fatalf("Class, Status = %v, %d; want unusable, 466", e.Class, e.Status)
			}
			for _, w := range tt.want {
				if !strings.Contains(e.Reason, w) {
					t.Errorf("Reason %q lacks %q", e.Reason, w)
				}
			}
			if strings.Contains(e.Reason, tt.notWant) || strings.HasSuffix(e.Reason, "QUOTE_ALLOWED") {
				t.Errorf("Reason %q reports %q", e.Reason, tt.notWant)
			}
		})
	}
}
