package greenapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// RequestBy chooses the field a phone number travels in, because API editions differ: every
// edition accepts chatId, only the seed edition documents an integer phoneNumber.
type RequestBy string

const (
	// RequestByChatID sends {"chatId":"<digits>@c.us"} for a phone number: every edition
	// accepts it, so it is the default.
	RequestByChatID RequestBy = "chatId"
	// RequestByPhoneNumber sends {"phoneNumber":<digits>} (a JSON number) for phone numbers and
	// personal chats, as the seed edition documents. Groups always go as chatId.
	RequestByPhoneNumber RequestBy = "phoneNumber"
)

// Defaults for Config, named so callers and docs can refer to them.
const (
	// TimeoutDefault is the per-request timeout: Green API's tail latency reaches tens of
	// seconds, its own Python SDK waits up to 180 s, and a client that gives up before the
	// server's work is done turns that work into a 499 and a retry.
	TimeoutDefault = 180 * time.Second
	// MaxConnsPerHostDefault is the connection pool size of the default HTTP client.
	MaxConnsPerHostDefault = 16
	// RequestByDefault is RequestByChatID, the form every API edition accepts.
	RequestByDefault = RequestByChatID
)

// Instance states GetStateInstance reports, so callers can decide whether an instance is usable
// without spelling the API's strings.
const (
	// StateAuthorized: the WhatsApp account is linked and calls can succeed.
	StateAuthorized = "authorized"
	// StateNotAuthorized: no account is linked; a person must scan the QR code.
	StateNotAuthorized = "notAuthorized"
	// StateBlocked: WhatsApp banned the account.
	StateBlocked = "blocked"
	// StateSleepMode: the phone is offline or asleep.
	StateSleepMode = "sleepMode"
	// StateStarting: the instance is (re)starting; it can take about 5 minutes.
	StateStarting = "starting"
	// StateYellowCard: WhatsApp restricted the account for suspicious activity.
	StateYellowCard = "yellowCard"
)

// Limits on what the client reads, so a misbehaving server cannot exhaust memory.
const (
	// maxErrorBody is how much of a non-200 body is read: enough for any error message.
	maxErrorBody = 64 << 10
	// maxSuccessBody is how much of a 200 body is read: newer editions may inline the image
	// as base64Avatar, so it has to hold a profile photo.
	maxSuccessBody = 4 << 20
	// maxDrain is how much unread body is discarded so the connection can be reused; past it
	// the connection is closed instead.
	maxDrain = 256 << 10
	// maxReason is the longest Reason kept, in runes.
	maxReason = 200
	// maxRetryAfter caps Retry-After so an absurd header cannot park an instance for years.
	maxRetryAfter = 24 * time.Hour
	// redacted stands in for the token wherever text might carry it.
	redacted = "***"
)

// API method names as they appear in the URL path.
const (
	methodGetAvatar        = "getAvatar"
	methodCheckWhatsapp    = "checkWhatsapp"
	methodGetStateInstance = "getStateInstance"
)

// Config says which Green API instance a Client talks to and how. Pass it to New, which
// validates it and fills in the defaults.
type Config struct {
	// APIURL is the instance's API host, its apiUrl in the Green API console, e.g.
	// "https://api.green-api.com" or "https://7103.api.greenapi.com": each pool of instances
	// has its own host, and the wrong one answers 403. Required; http or https; a trailing
	// slash does not matter. No default: the host differs per instance.
	APIURL string
	// IDInstance is the instance's idInstance, digits only, e.g. "1101000001". Required.
	IDInstance string
	// Token is the instance's apiTokenInstance. Required. It is a secret: it travels in the URL
	// path, and the client never puts it into an error, a Reason or a URL it reports.
	Token string
	// RequestBy chooses how a phone number is sent. Default RequestByChatID.
	RequestBy RequestBy
	// Timeout bounds one request, from sending it to reading the whole body. Default
	// TimeoutDefault (180s); must not be negative.
	Timeout time.Duration
	// HTTPClient sends the requests. Share one between the Clients of many instances so they
	// share a connection pool. Its own Timeout should be zero (the client times each request by
	// context). Redirects are never followed, whatever its CheckRedirect says: the token is in
	// the path. Default NewHTTPClient(MaxConnsPerHostDefault), with a response header timeout
	// no shorter than Timeout.
	HTTPClient *http.Client
}

// NewHTTPClient returns an *http.Client tuned for many concurrent calls to one Green API host:
// connections are kept alive and up to maxConnsPerHost of them stay idle between calls, so a
// steady stream of calls does not pay a TLS handshake each. maxConnsPerHost sizes the idle
// pool; it is not a hard cap, because a cap would queue calls behind Green API's slow tail.
// Values below 1 mean MaxConnsPerHostDefault. Redirects are not followed: the token is in
// the path and must not be sent to another URL. The client has no overall Timeout; Client
// times each request through its context.
func NewHTTPClient(maxConnsPerHost int) *http.Client {
	return NewHTTPClientFor(maxConnsPerHost, TimeoutDefault)
}

// NewHTTPClientFor is NewHTTPClient for Clients whose Config.Timeout is timeout: its response
// header timeout is no shorter than timeout, so the transport never cuts a call the Client
// would still wait for. Share it between Clients that all use that timeout.
func NewHTTPClientFor(maxConnsPerHost int, timeout time.Duration) *http.Client {
	return newHTTPClient(maxConnsPerHost, headerTimeout(timeout))
}

// headerTimeout is the response header timeout of a transport serving calls of up to timeout:
// a safety net behind the Client's own deadline, never in front of it.
func headerTimeout(timeout time.Duration) time.Duration {
	return max(2*TimeoutDefault, timeout+30*time.Second)
}

// newHTTPClient is NewHTTPClient with the response header timeout chosen by the caller, so New
// can make it no shorter than Config.Timeout.
func newHTTPClient(maxConnsPerHost int, headerTimeout time.Duration) *http.Client {
	if maxConnsPerHost < 1 {
		maxConnsPerHost = MaxConnsPerHostDefault
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, 4*maxConnsPerHost),
		MaxIdleConnsPerHost:   maxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: tr, CheckRedirect: noRedirect}
}

// noRedirect makes an http.Client return a redirect as the response instead of following it.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Client calls one Green API instance. It is safe for concurrent use; make one per instance
// with New.
type Client struct {
	base      string // APIURL without trailing slashes
	id        string
	token     string
	requestBy RequestBy
	timeout   time.Duration
	hc        *http.Client
	// now is the clock for Retry-After dates; a field so tests can fix it.
	now func() time.Time
}

// New validates cfg, fills in its defaults and returns a Client. A validation error names the
// field and how to fix it, and never contains the token.
func New(cfg Config) (*Client, error) {
	c := &Client{
		id:        cfg.IDInstance,
		token:     cfg.Token,
		requestBy: cfg.RequestBy,
		timeout:   cfg.Timeout,
		hc:        cfg.HTTPClient,
		now:       time.Now,
	}
	if err := c.validate(cfg); err != nil {
		return nil, err
	}
	if c.requestBy == "" {
		c.requestBy = RequestByDefault
	}
	if c.timeout == 0 {
		c.timeout = TimeoutDefault
	}
	if c.hc == nil {
		c.hc = newHTTPClient(MaxConnsPerHostDefault, headerTimeout(c.timeout))
	} else {
		// A shallow copy shares the caller's transport and pool but never follows redirects,
		// whatever the caller's client does: a redirect would carry the token elsewhere.
		hc := *c.hc
		hc.CheckRedirect = noRedirect
		c.hc = &hc
	}
	return c, nil
}

// validate checks cfg and sets c.base. Every message goes through redactToken, so a token
// pasted into the wrong field is not echoed.
func (c *Client) validate(cfg Config) error {
	fail := func(format string, args ...any) error {
		return errors.New(redactToken("greenapi: invalid Config: "+fmt.Sprintf(format, args...), cfg.Token))
	}
	if cfg.Token == "" {
		return fail("Token is required: set it to the instance's apiTokenInstance from the Green API console")
	}
	if url.PathEscape(cfg.Token) != cfg.Token {
		return fail("Token contains a character that is not allowed in a URL path (such as '/', '?', '%%', a space or a non-ASCII letter): copy the apiTokenInstance again from the Green API console")
	}
	if cfg.IDInstance == "" {
		return fail("IDInstance is required: set it to the instance's idInstance, e.g. 1101000001")
	}
	if n := digitRun(cfg.IDInstance); n != len(cfg.IDInstance) || n > 20 {
		return fail("IDInstance %q must be the idInstance's digits only, e.g. 1101000001", cfg.IDInstance)
	}
	if cfg.APIURL == "" {
		return fail("APIURL is required: set it to the account's API host, e.g. https://api.green-api.com")
	}
	u, err := url.Parse(cfg.APIURL)
	switch {
	case err != nil:
		return fail("APIURL %q is not a URL; use the account's API host, e.g. https://api.green-api.com", cfg.APIURL)
	case u.Scheme != "http" && u.Scheme != "https":
		return fail("APIURL %q must start with https:// (or http://), e.g. https://api.green-api.com", cfg.APIURL)
	case u.Host == "":
		return fail("APIURL %q has no host; use e.g. https://api.green-api.com", cfg.APIURL)
	case u.User != nil:
		return fail("APIURL must not contain a user name or password")
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(cfg.APIURL, "?") || strings.HasSuffix(cfg.APIURL, "#"):
		return fail("APIURL %q must not have a query or fragment; use the API host only, e.g. https://api.green-api.com", cfg.APIURL)
	case strings.Contains(strings.ToLower(u.Path), "/wainstance"):
		return fail("APIURL %q must be the API host only, without /waInstance...; the client builds the method path", cfg.APIURL)
	}
	switch cfg.RequestBy {
	case "", RequestByChatID, RequestByPhoneNumber:
	default:
		return fail("RequestBy %q is unknown; use %q (the default) or %q", cfg.RequestBy, RequestByChatID, RequestByPhoneNumber)
	}
	if cfg.Timeout < 0 {
		return fail("Timeout %s is negative; use 0 for the default (%s)", cfg.Timeout, TimeoutDefault)
	}
	c.base = strings.TrimRight(cfg.APIURL, "/")
	return nil
}

// ID is the instance's idInstance, so callers can label logs and metrics without the token.
func (c *Client) ID() string { return c.id }

// RequestBy is the form phone numbers are sent in, Config.RequestBy with its default filled
// in, so a caller that sees one locally valid number after another refused (an edition that
// takes only chatId answers phoneNumber with "Validation failed. Details: 'chatId' is
// required") can tell the user which setting to change.
func (c *Client) RequestBy() RequestBy { return c.requestBy }

// GetAvatar asks for the avatar of t. Errors are *Error, except an invalid (zero) target, which
// is an *InvalidTargetError wrapping ErrInvalidTarget and costs no call, and a ctx that ended,
// which wraps ctx.Err() and is nobody's fault.
func (c *Client) GetAvatar(ctx context.Context, t Target) (Avatar, error) {
	if t.IsZero() {
		return Avatar{}, &InvalidTargetError{Input: "", Why: "empty target; " + phoneHint}
	}
	reqBody := c.avatarBody(t)
	status, body, header, err := c.do(ctx, methodGetAvatar, http.MethodPost, reqBody)
	if err != nil {
		return Avatar{}, c.withRequest(err, reqBody)
	}
	av, err := c.parseAvatar(status, body, header)
	return av, c.withRequest(err, reqBody)
}

// avatarBody is the request body for t: chatId by default and always for groups; an integer
// phoneNumber when configured and the target has one.
func (c *Client) avatarBody(t Target) []byte {
	if c.requestBy == RequestByPhoneNumber {
		if n, ok := t.PhoneNumber(); ok {
			return phoneBody(n)
		}
	}
	b, _ := json.Marshal(struct {
		ChatID string `json:"chatId"`
	}{t.ChatID()})
	return b
}

// phoneBody is {"phoneNumber":n}, n a JSON number as the API requires.
func phoneBody(n int64) []byte {
	return []byte(`{"phoneNumber":` + strconv.FormatInt(n, 10) + `}`)
}

// reasonNoDocumentedFields is the Reason of a GetAvatar 200 that is not an answer.
const reasonNoDocumentedFields = "response carries none of the documented fields (existsWhatsapp, available, urlAvatar)"

// parseAvatar turns a GetAvatar response of any edition into an Avatar or a classified *Error.
// A 200 must carry at least one documented field, non-null: existsWhatsapp, available or
// urlAvatar (even ""). One without any ({}, {"urlAvatar":null}, {"error":"..."}) says nothing
// about the number, so it is a ClassTransient failure of the call, never an empty answer.
func (c *Client) parseAvatar(status int, body []byte, header http.Header) (Avatar, error) {
	w, err := c.decode(methodGetAvatar, status, body, header)
	if err != nil {
		return Avatar{}, err
	}
	if w.ExistsWhatsapp == nil && w.Available == nil && w.URLAvatar == nil {
		return Avatar{}, c.newError(methodGetAvatar, ClassTransient, status,
			withMessage(reasonNoDocumentedFields, jsonMessage(body)))
	}
	a := Avatar{ExistsWhatsapp: w.ExistsWhatsapp, Available: w.Available}
	if w.URLAvatar != nil {
		a.URLAvatar = *w.URLAvatar
	}
	if w.Base64Avatar != nil {
		a.Base64Avatar = *w.Base64Avatar
	}
	return a, nil
}

// withRequest records in err, when it is an *Error, the request body that was sent, so a
// caller can quote the form the API refused. The body holds only the target; it is redacted
// all the same, so the token cannot reach an *Error by this road either.
func (c *Client) withRequest(err error, body []byte) error {
	var e *Error
	if errors.As(err, &e) {
		e.Request = redactToken(string(body), c.token)
	}
	return err
}

// CheckWhatsapp asks whether t (a phone number or personal chat) has a WhatsApp account, the
// check Green API advises when GetAvatar reports existsWhatsapp false. A group target is an
// *InvalidTargetError and costs no call. Other errors are as for GetAvatar.
func (c *Client) CheckWhatsapp(ctx context.Context, t Target) (bool, error) {
	n, ok := t.PhoneNumber()
	if !ok {
		why := "CheckWhatsapp takes a phone number or a personal chatId, not a group"
		if t.IsZero() {
			why = "empty target; " + phoneHint
		}
		return false, &InvalidTargetError{Input: t.String(), Why: why}
	}
	reqBody := phoneBody(n)
	status, body, header, err := c.do(ctx, methodCheckWhatsapp, http.MethodPost, reqBody)
	if err != nil {
		return false, c.withRequest(err, reqBody)
	}
	w, err := c.decode(methodCheckWhatsapp, status, body, header)
	if err != nil {
		return false, c.withRequest(err, reqBody)
	}
	if w.ExistsWhatsapp == nil {
		return false, c.withRequest(c.newError(methodCheckWhatsapp, ClassTransient, status, "response has no existsWhatsapp"), reqBody)
	}
	return *w.ExistsWhatsapp, nil
}

// GetStateInstance reports the instance's state (StateAuthorized, StateStarting, ...): a cheap
// pre-flight check, and the way to tell "starting" from "not authorized" when the API answers
// ReasonStartingOrNotAuth. States the client does not know are returned as sent.
func (c *Client) GetStateInstance(ctx context.Context) (string, error) {
	status, body, header, err := c.do(ctx, methodGetStateInstance, http.MethodGet, nil)
	if err != nil {
		return "", err
	}
	w, err := c.decode(methodGetStateInstance, status, body, header)
	if err != nil {
		return "", err
	}
	if w.StateInstance == "" {
		return "", c.newError(methodGetStateInstance, ClassTransient, status, "response has no stateInstance")
	}
	return w.StateInstance, nil
}

// wireResponse is the union of the 200 bodies of every method and edition. Pointers keep
// "absent" (or null) apart from false and ""; unknown fields (future ones) are ignored.
type wireResponse struct {
	ExistsWhatsapp *bool   `json:"existsWhatsapp"`
	Available      *bool   `json:"available"`
	URLAvatar      *string `json:"urlAvatar"`
	Base64Avatar   *string `json:"base64Avatar"`
	Reason         string  `json:"reason"`
	StateInstance  string  `json:"stateInstance"`
}

// decode turns a response into its 200 body or a classified *Error: a non-200 status, an
// unparsable body and a non-empty reason (which 2020-2023 editions send with HTTP 200) are
// all errors.
func (c *Client) decode(method string, status int, body []byte, header http.Header) (wireResponse, error) {
	var w wireResponse
	if status != http.StatusOK {
		return w, c.classify(method, status, body, header)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return w, c.newError(method, ClassTransient, status, "empty response body")
	}
	if trimmed[0] != '{' {
		return w, c.newError(method, ClassTransient, status, "response body is not a JSON object")
	}
	if err := json.Unmarshal(trimmed, &w); err != nil {
		return wireResponse{}, c.newError(method, ClassTransient, status, "unparsable response body: "+err.Error())
	}
	if reason := strings.TrimSpace(w.Reason); reason != "" {
		return wireResponse{}, c.newError(method, classifyMessage(reason), status, reason)
	}
	return w, nil
}

// classify turns a non-200 response into an *Error, one row of the contract's error table per
// branch. Unknown 400 messages are ClassTransient, not ClassInvalid: a change in the server's
// wording must not fail rows permanently; they are retried and fail after the engine's last
// attempt, with the reason recorded.
func (c *Client) classify(method string, status int, body []byte, header http.Header) *Error {
	msg := bodyMessage(body)
	var class Class
	var reason string
	var retryAfter time.Duration
	switch {
	case status == http.StatusBadRequest:
		class, reason = classifyMessage(msg), msg
		if reason == "" {
			reason = "empty error body"
		}
	case status == http.StatusUnauthorized:
		class, reason = ClassUnusable, withMessage("wrong apiTokenInstance (HTTP 401)", msg)
	case status == http.StatusForbidden:
		class, reason = ClassUnusable, withMessage("wrong idInstance or APIURL (HTTP 403)", msg)
	case status == http.StatusNotFound:
		class, reason = ClassUnusable, withMessage("wrong method, path or HTTP method (HTTP 404)", msg)
	case status == 466:
		class, reason = ClassUnusable, "quota exceeded on the account's plan (HTTP 466)"
		if q := quotaMessage(body); q != "" {
			reason += ": " + q
		} else {
			reason = withMessage(reason, msg)
		}
	case status == http.StatusTooManyRequests:
		class, reason = ClassRateLimited, withMessage("too many requests (HTTP 429)", msg)
		retryAfter = parseRetryAfter(header.Get("Retry-After"), c.now())
	default: // 499, 5xx and anything unexpected: retry with backoff.
		class = ClassTransient
		reason = withMessage(fmt.Sprintf("unexpected HTTP %d", status), msg)
		if status == 499 || status >= 500 && status <= 599 {
			reason = withMessage(fmt.Sprintf("server error (HTTP %d)", status), msg)
		}
		if status == http.StatusServiceUnavailable {
			retryAfter = parseRetryAfter(header.Get("Retry-After"), c.now())
		}
	}
	e := c.newError(method, class, status, reason)
	e.RetryAfter = retryAfter
	return e
}

// withMessage appends the server's own words to a fixed description, when it sent any.
func withMessage(what, msg string) string {
	if msg == "" {
		return what
	}
	return what + ": " + msg
}

// classifyMessage maps the API's words (a 400 body or a 200 reason) to a Class, matching
// case-insensitively by containment so both plain and JSON forms, and small additions around
// them, match. Unknown words are ClassTransient (see classify).
func classifyMessage(msg string) Class {
	m := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	// Before "not authorized": the newer wording contains it.
	case has(ReasonStarting, ReasonStartingOrNotAuth, "instance in starting process"):
		return ClassStarting
	case has(ReasonNotAuthorized, "account is expired", "instance is expired", "instance is deleted", "instance deleted"):
		return ClassUnusable
	case has(ReasonAvatarTimeout, ReasonCheckNumberTimeout, "timeout limit exceeded"):
		return ClassAvatarTimeout
	case has(ReasonBadRequestData, ReasonBadPhoneNumber, ReasonValidationFailedPfx, "unexpected token", "in json at position", "unexpected end of json"):
		return ClassInvalid
	}
	return ClassTransient
}

// bodyMessage extracts the message of an error body, plain text or JSON ({"message"},
// {"reason"}, {"error"}, or a JSON string), trimmed. Other JSON is kept as text.
func bodyMessage(body []byte) string {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return ""
	}
	switch b[0] {
	case '{':
		if msg := jsonMessage(b); msg != "" {
			return msg
		}
	case '"':
		var s string
		if json.Unmarshal(b, &s) == nil {
			return strings.TrimSpace(s)
		}
	}
	return string(b)
}

// jsonMessage is the trimmed text of a JSON object's "message", "reason", "error" or
// "description" field (the first that is a non-blank string), or "" when it has none.
func jsonMessage(body []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(bytes.TrimSpace(body), &m) != nil {
		return ""
	}
	for _, k := range []string{"message", "reason", "error", "description"} {
		var s string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

// quotaMessage describes a 466 body, or "" when it has no invokeStatus: the limit that was hit,
// from whichever object says so. A method's quota says it in invokeStatus (status
// QUOTE_EXCEEDED, the method, used of total); the chats limit answers invokeStatus.status
// QUOTE_ALLOWED (the method itself is allowed) with a correspondentsStatus object naming the
// limit, so that object is what is reported, as "chats limit: ...", never "QUOTE_ALLOWED".
func quotaMessage(body []byte) string {
	type status struct {
		Method      string          `json:"method"`
		Used        json.RawMessage `json:"used"`
		Total       json.RawMessage `json:"total"`
		Status      string          `json:"status"`
		Description string          `json:"description"`
	}
	var q struct {
		InvokeStatus         *status `json:"invokeStatus"`
		CorrespondentsStatus *status `json:"correspondentsStatus"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &q) != nil || q.InvokeStatus == nil {
		return ""
	}
	describe := func(s *status, skipStatus string) string {
		var parts []string
		for _, p := range []string{s.Status, s.Method, s.Description} {
			if p = strings.TrimSpace(p); p != "" && !strings.EqualFold(p, skipStatus) {
				parts = append(parts, p)
			}
		}
		if len(s.Used) > 0 && len(s.Total) > 0 {
			parts = append(parts, fmt.Sprintf("used %s of %s", s.Used, s.Total))
		}
		return strings.Join(parts, ": ")
	}
	if strings.EqualFold(strings.TrimSpace(q.InvokeStatus.Status), QuotaAllowed) {
		msg := "chats limit"
		if c := q.CorrespondentsStatus; c != nil {
			if d := describe(c, ""); d != "" {
				msg += ": " + d
			}
		} else {
			msg += " (no correspondentsStatus in the answer)"
		}
		if m := strings.TrimSpace(q.InvokeStatus.Method); m != "" {
			msg += " (method " + m + ")"
		}
		return msg
	}
	return describe(q.InvokeStatus, "")
}

// QuotaAllowed is invokeStatus.status when the method's own quota is not what a 466 is about: the
// chats (correspondents) limit was hit, and correspondentsStatus says how.
const QuotaAllowed = "QUOTE_ALLOWED"

// parseRetryAfter reads a Retry-After header, delay-seconds or HTTP-date, relative to now. It
// is 0 when the header is absent, malformed or in the past, and at most maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if digitRun(v) == len(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter // only digits, so the error is overflow
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// do sends one request with the per-request timeout and reads a bounded body, always draining
// and closing it so the connection is reused. err is an *Error (ClassTransient) when no
// complete response arrived, or wraps ctx.Err() when the caller's ctx ended.
func (c *Client) do(ctx context.Context, method, httpMethod string, body []byte) (int, []byte, http.Header, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, nil, c.callerDone(ctx, method)
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, httpMethod, c.base+"/waInstance"+c.id+"/"+method+"/"+c.token, rd)
	if err != nil {
		e := c.newError(method, ClassUnusable, 0, "cannot build the request; check APIURL")
		e.Err = c.scrub(err)
		return 0, nil, nil, e
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, c.transportError(ctx, method, 0, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()
	limit := int64(maxErrorBody)
	if resp.StatusCode == http.StatusOK {
		limit = maxSuccessBody
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, nil, c.transportError(ctx, method, resp.StatusCode, err)
	}
	if int64(len(b)) > limit {
		if resp.StatusCode == http.StatusOK {
			return 0, nil, nil, c.newError(method, ClassTransient, resp.StatusCode,
				fmt.Sprintf("response body larger than %d bytes", limit))
		}
		b = b[:limit] // the start of an error body is enough to classify it
	}
	return resp.StatusCode, b, resp.Header, nil
}

// callerDone is the error for a call whose caller's ctx ended: not an *Error, because neither
// the row nor the instance is at fault.
func (c *Client) callerDone(ctx context.Context, method string) error {
	return fmt.Errorf("Green API %s %s: %w", method, c.redactedURL(method), ctx.Err())
}

// transportError is the error for a request that got no complete response: the caller's
// cancellation, or a ClassTransient *Error carrying the scrubbed cause.
func (c *Client) transportError(ctx context.Context, method string, status int, err error) error {
	if ctx.Err() != nil {
		return c.callerDone(ctx, method)
	}
	e := c.newError(method, ClassTransient, status, "")
	e.Err = c.scrub(err)
	if errors.Is(err, context.DeadlineExceeded) {
		e.Err = fmt.Errorf("no complete response within %s: %w", c.timeout, e.Err)
	}
	return e
}

// newError makes an *Error for method with the redacted URL and a redacted, trimmed Reason.
func (c *Client) newError(method string, class Class, status int, reason string) *Error {
	return &Error{
		Class:    class,
		Instance: c.id,
		Method:   method,
		Status:   status,
		Reason:   c.cleanReason(reason),
		URL:      c.redactedURL(method),
		APIURL:   redactToken(c.base, c.token),
	}
}

// redactedURL is the request path with the token replaced, safe for logs.
func (c *Client) redactedURL(method string) string {
	return "waInstance" + c.id + "/" + method + "/" + redacted
}

// cleanReason makes server text fit for a log line and a table cell: valid UTF-8, whitespace
// collapsed, the token redacted, and at most maxReason runes. Redaction comes before the cut,
// so the cut cannot expose what redaction would have caught.
func (c *Client) cleanReason(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	s = redactToken(s, c.token)
	if utf8.RuneCountInString(s) <= maxReason {
		return s
	}
	r := []rune(s)
	return string(r[:maxReason-1]) + "…"
}

// scrub removes the request URL, which holds the token, from a transport error: *url.Error is
// replaced by its cause, and a cause whose text still holds the token is replaced by its
// redacted text (keeping context errors visible to errors.Is).
func (c *Client) scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	msg := err.Error()
	if c.token == "" || !strings.Contains(msg, c.token) {
		return err
	}
	se := &scrubbedError{msg: redactToken(msg, c.token)}
	for _, sentinel := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, sentinel) {
			se.cause = sentinel
		}
	}
	return se
}

// scrubbedError is a transport error whose text held the token. It unwraps only to the
// context sentinel it matched, never to the original error.
type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.cause }

// redactToken replaces every occurrence of token in s. Tokens are ASCII without '*', so the
// result cannot contain the token again.
func redactToken(s, token string) string {
	if token == "" {
		return s
	}
	return strings.ReplaceAll(s, token, redacted)
}
