package simulator

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/enrich-dev/enrich/greenapi"
)

// Messages the simulator answers that greenapi does not name.
const (
	msgExpired       = "Instance account is expired"
	msgDeleted       = "Instance is deleted"
	msgQuotaExceeded = " calls on this plan has been used up"
	msgBodyNotObject = "Validation failed. Details: the request body must be a JSON object"
	msgUnexpectedEnd = "Unexpected end of JSON input"
	// msgChatIDRequired is the current editions' answer to a body without a chatId, and so
	// to one naming the number as phoneNumber.
	msgChatIDRequired = "Validation failed. Details: 'chatId' is required"
	// msgBadPhoneNumber is checkWhatsapp's refusal of a number (its errors are HTTP 400s).
	msgBadPhoneNumber = "bad phone number, valid 11 or 12 digits"
)

const (
	// maxBodyBytes bounds what is read of a request body; real bodies are tens of bytes.
	maxBodyBytes = 64 << 10
	// z99 is the standard normal's 99th percentile, which turns LatencyP99 into a spread.
	z99 = 2.3263478740408408
	// latencyCapOverP99 caps log-normal delays at this multiple of LatencyP99.
	latencyCapOverP99 = 10
)

// Simulator is a Green API stand-in: an http.Handler serving the configured instances. Make
// one with New; it is safe for concurrent use.
type Simulator struct {
	cfg       Config
	instances []*instance
	byID      map[string]*instance

	// Derived from cfg once.
	seedMix          uint64
	cumulative       [4]float64 // upper edges of avatar, no photo, hidden, no WhatsApp in [0,1)
	groupAvatarShare float64
	oe               string
	// imageHost is where avatar links point (ServeImagesAt); nil: https://pps.whatsapp.net.
	imageHost  atomic.Pointer[string]
	sigma      float64 // log-normal latency spread; 0 = constant
	maxLatency float64
	retryAfter []string

	rngMu sync.Mutex
	rng   *rand.Rand

	requests atomic.Int64
	invalid  atomic.Int64
	refused  atomic.Int64
	errSeq   atomic.Uint64
	shards   [chatShards]chatShard
}

// instance is one served idInstance with its limiters and counters.
type instance struct {
	cfg   Instance
	token []byte

	// minGaps are 1/rps per method for MinGap; 0 means unlimited.
	minGaps [numMethods]time.Duration

	mu        sync.Mutex
	limiters  [numMethods]*rate.Limiter
	quotaUsed [numMethods]int
	window    window
	counters  instanceCounters
	// lastAccepted is when (since start) each method last passed the limiter, when
	// anyAccepted says it has; used only under MinGap.
	lastAccepted [numMethods]time.Duration
	anyAccepted  [numMethods]bool
	// avatarsSeen counts getAvatar requests until the first starting window opens by count
	// (Instance.StartingAfterRequests); opened says it has, at openedAt (since start).
	avatarsSeen int
	opened      bool
	openedAt    time.Duration
}

// newLimiters makes full buckets for every method of in.
func newLimiters(in Instance) [numMethods]*rate.Limiter {
	lim := func(rps float64) *rate.Limiter {
		if rps < 0 {
			return rate.NewLimiter(rate.Inf, in.Burst)
		}
		return rate.NewLimiter(rate.Limit(rps), in.Burst)
	}
	return [numMethods]*rate.Limiter{
		mGetAvatar:        lim(in.RPS),
		mCheckWhatsapp:    lim(in.RPS),
		mGetStateInstance: lim(in.StateRPS),
	}
}

// newMinGaps is 1/rps for every method of in, truncated to whole nanoseconds so a client
// pacing at a time.Duration of 1/rps is never refused; 0 for an unlimited method.
func newMinGaps(in Instance) [numMethods]time.Duration {
	gap := func(rps float64) time.Duration {
		if rps < 0 {
			return 0
		}
		return time.Duration(float64(time.Second) / rps)
	}
	return [numMethods]time.Duration{
		mGetAvatar:        gap(in.RPS),
		mCheckWhatsapp:    gap(in.RPS),
		mGetStateInstance: gap(in.StateRPS),
	}
}

// New validates cfg, fills in its defaults and returns a simulator serving it.
func New(cfg Config) (*Simulator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Simulator{
		cfg:     cfg,
		byID:    make(map[string]*instance, len(cfg.Instances)),
		seedMix: mix64(cfg.Seed ^ 0x5851f42d4c957f2d),
		oe:      strings.ToUpper(strconv.FormatInt(cfg.Start.Add(LinkLifetime).Unix(), 16)),
		rng:     rand.New(cfg.Rand),
	}
	for _, ic := range cfg.Instances {
		in := &instance{cfg: ic, token: []byte(ic.Token), limiters: newLimiters(ic), minGaps: newMinGaps(ic)}
		s.instances = append(s.instances, in)
		s.byID[ic.ID] = in
	}
	for i := range s.shards {
		s.shards[i].chats = make(map[string]*ChatStats)
	}
	w := [5]float64{cfg.WeightAvatar, cfg.WeightNoPhoto, cfg.WeightHidden, cfg.WeightNoWhatsApp, cfg.WeightBadRequest}
	total := w[0] + w[1] + w[2] + w[3] + w[4]
	var acc float64
	for i := range s.cumulative {
		acc += w[i]
		s.cumulative[i] = acc / total
	}
	s.groupAvatarShare = 0.5
	if w[0]+w[1] > 0 {
		s.groupAvatarShare = w[0] / (w[0] + w[1])
	}
	if cfg.LatencyMedian > 0 && cfg.LatencyP99 > cfg.LatencyMedian {
		s.sigma = math.Log(float64(cfg.LatencyP99)/float64(cfg.LatencyMedian)) / z99
		s.maxLatency = float64(cfg.LatencyP99) * latencyCapOverP99
	}
	if cfg.RetryAfter > 0 {
		secs := int64((cfg.RetryAfter + time.Second - 1) / time.Second)
		s.retryAfter = []string{strconv.FormatInt(secs, 10)}
	}
	return s, nil
}

// Start is the simulator's start: starting windows count from it, and avatar links expire
// LinkLifetime after it.
func (s *Simulator) Start() time.Time { return s.cfg.Start }

// Config is the configuration in use, defaults filled in.
func (s *Simulator) Config() Config {
	c := s.cfg
	c.Instances = append([]Instance(nil), c.Instances...)
	return c
}

var (
	ctJSON = []string{"application/json"}
	ctText = []string{"text/plain; charset=utf-8"}
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// ServeHTTP answers one API call, checking in the order Green API does: path and credentials,
// rate limit, quota, then (for admitted calls) latency and injected faults, the instance's
// state, the body (including whether the number's edition takes phoneNumber), and finally
// the number's truth, after any empty 200s and timeouts it answers first.
// ServeHTTP is the host of pool "": see Instance.Pool and Pool.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serve(w, r, "") }

// Pool is the host of pool name: it serves the instances whose Instance.Pool is name and
// answers 403 to the others, as Green API's host of another pool does. Every pool shares the
// simulator's truth, counters and Stats. Pool("") is the simulator itself.
func (s *Simulator) Pool(name string) http.Handler {
	if name == "" {
		return s
	}
	return poolHost{s: s, pool: name}
}

// Pools lists the pools of the configured instances, each once, in the order they first
// appear: what a caller needs a host (a listener) for.
func (s *Simulator) Pools() []string {
	var pools []string
	for _, in := range s.instances {
		if !slices.Contains(pools, in.cfg.Pool) {
			pools = append(pools, in.cfg.Pool)
		}
	}
	return pools
}

// poolHost serves one named pool of s.
type poolHost struct {
	s    *Simulator
	pool string
}

func (p poolHost) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.s.serve(w, r, p.pool) }

// serve answers one API call on the host of pool.
func (s *Simulator) serve(w http.ResponseWriter, r *http.Request, pool string) {
	if strings.HasPrefix(r.URL.Path, imagePath) {
		s.serveImage(w, r)
		return
	}
	s.requests.Add(1)
	if s.outageAt(s.cfg.Now()) {
		s.refuse(w)
		return
	}
	id, methodSeg, token, ok := splitPath(r.URL.Path)
	if !ok {
		writeStatus(w, http.StatusNotFound)
		return
	}
	in := s.byID[id]
	if in == nil {
		writeStatus(w, http.StatusForbidden)
		return
	}
	if in.cfg.Pool != pool {
		// Another pool's host does not know the instance, whatever the token.
		in.mu.Lock()
		in.counters.wrongHost++
		in.mu.Unlock()
		writeStatus(w, http.StatusForbidden)
		return
	}
	if subtle.ConstantTimeCompare([]byte(token), in.token) != 1 {
		in.mu.Lock()
		in.counters.unauthorized++
		in.mu.Unlock()
		writeStatus(w, http.StatusUnauthorized)
		return
	}
	m := numMethods
	for i := range methods {
		if strings.EqualFold(methodSeg, methods[i].name) {
			m = methodID(i)
			break
		}
	}
	if m == numMethods || r.Method != methods[m].httpMethod {
		writeStatus(w, http.StatusNotFound)
		return
	}

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var req request
	if m != mGetStateInstance {
		body, err := readBody((*bp)[:0], r.Body)
		*bp = body[:0]
		if err != nil {
			return // the client went away mid-body
		}
		req = parseRequest(m, body)
		if req.key != "" {
			req.hash = s.keyHash(req.key)
			s.countCall(m, req)
		}
	}

	// Rate limit and quota, decided under the instance's lock against one reading of the clock.
	now := s.cfg.Now()
	quotaUsed, verdict := in.admit(now.Sub(s.cfg.Start), now, m)
	switch verdict {
	case tooMany:
		if s.retryAfter != nil {
			w.Header()["Retry-After"] = s.retryAfter
		}
		w.WriteHeader(http.StatusTooManyRequests)
		return
	case overQuota:
		b := append((*bp)[:0], `{"invokeStatus":{"method":"`...)
		b = append(b, methods[m].name...)
		b = append(b, `","used":`...)
		b = strconv.AppendInt(b, int64(quotaUsed), 10)
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, int64(in.quota(m)), 10)
		b = append(b, `,"status":"QUOTE_EXCEEDED","description":"Monthly quota of `...)
		b = append(b, methods[m].name...)
		b = append(b, msgQuotaExceeded...)
		b = append(b, `"}}`...)
		*bp = b
		writeBody(w, 466, ctJSON, b)
		return
	}

	// Faults and latency, which only admitted calls meet.
	ctx := r.Context()
	if s.cfg.HangRate > 0 && s.randFloat() < s.cfg.HangRate {
		in.mu.Lock()
		in.counters.hung++
		in.mu.Unlock()
		<-ctx.Done()
		return
	}
	if s.cfg.LatencyMedian > 0 {
		if err := s.cfg.Sleep(ctx, s.latency()); err != nil {
			return
		}
	}
	if s.cfg.ServerErrorRate > 0 && s.randFloat() < s.cfg.ServerErrorRate {
		in.mu.Lock()
		in.counters.serverErrors++
		in.mu.Unlock()
		codes := [...]int{500, 502, 503, 504}
		writeStatus(w, codes[s.randN(len(codes))])
		return
	}

	// The instance's state, as of now (after any latency).
	now = s.cfg.Now()
	starting := in.startingAt(now.Sub(s.cfg.Start), m == mGetAvatar)
	if m == mGetStateInstance {
		state := in.cfg.State
		switch {
		case state == StateExpired:
			s.write400(w, bp, in, m, msgExpired, false)
		case state == StateDeleted:
			s.write400(w, bp, in, m, msgDeleted, false)
		default:
			if starting {
				state = StateStarting
			}
			b := append((*bp)[:0], `{"stateInstance":"`...)
			b = append(b, state...)
			b = append(b, `"}`...)
			*bp = b
			writeBody(w, http.StatusOK, ctJSON, b)
		}
		return
	}
	if msg := in.stateError(starting); msg != "" {
		s.write400(w, bp, in, m, msg, false)
		return
	}

	// The body.
	if req.errMsg != "" {
		s.write400(w, bp, in, m, req.errMsg, req.errJSON)
		return
	}
	if m == mGetAvatar && req.byPhone && refusesPhoneNumber(s.editionOf(req.hash)) {
		s.write400(w, bp, in, m, msgChatIDRequired, true)
		return
	}

	// Validation, empty 200s and timeouts first, then the truth.
	tr := s.truthOf(req.key, req.kind, req.hash)
	sh := s.shard(req.hash)
	sh.mu.Lock()
	c := sh.chat(req.key)
	timeout, empty := false, -1
	if m == mGetAvatar {
		switch {
		case c.Empties < tr.EmptiesFirst:
			empty = c.Empties
			c.Empties++
		case c.Timeouts < tr.TimeoutsFirst:
			timeout = true
			c.Timeouts++
		default:
			c.Answers++
		}
	} else {
		if timeout = c.CheckTimeouts < tr.TimeoutsFirst; timeout {
			c.CheckTimeouts++
		} else {
			c.CheckAnswers++
		}
	}
	sh.mu.Unlock()
	if empty >= 0 {
		in.mu.Lock()
		in.counters.empty++
		in.mu.Unlock()
		b := append((*bp)[:0], emptyBody(req.hash, empty)...)
		*bp = b
		writeBody(w, http.StatusOK, ctJSON, b)
		return
	}

	var reason string
	switch {
	case timeout && m == mGetAvatar:
		reason = greenapi.ReasonAvatarTimeout
	case timeout:
		// checkWhatsapp's errors are HTTP 400s in every edition (docs/greenapi.md).
		s.write400(w, bp, in, m, greenapi.ReasonCheckNumberTimeout, false)
		return
	case tr.BadRequest && m == mCheckWhatsapp:
		s.write400(w, bp, in, m, msgBadPhoneNumber, false)
		return
	case tr.BadRequest:
		if tr.Edition != Edition2023 {
			s.write400(w, bp, in, m, greenapi.ReasonBadRequestData, false)
			return
		}
		reason = greenapi.ReasonBadRequestData
	}
	b := (*bp)[:0]
	if m == mGetAvatar {
		b = appendAvatar(b, &tr, reason)
	} else {
		b = appendCheck(b, &tr, reason)
	}
	*bp = b
	writeBody(w, http.StatusOK, ctJSON, b)
}

// verdicts of instance.admit.
const (
	admitted = iota
	tooMany
	overQuota
)

// admit counts an arrival at since (the simulator's clock) and asks the method's limiter (or
// TooManyAll, or MinGap's rule) and, for getAvatar, the quota. It returns the quota used so
// far and the verdict. since and now are one clock reading, so a stub clock decides exactly.
func (in *instance) admit(since time.Duration, now time.Time, m methodID) (int, int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	c := &in.counters
	c.maxInAnySecond = max(c.maxInAnySecond, in.window.add(since))
	c.requests++
	ms := &c.methods[m]
	ms.Requests++
	var ok bool
	switch {
	case in.cfg.TooManyAll:
	case in.cfg.MinGap:
		ok = !in.anyAccepted[m] || since-in.lastAccepted[m] >= in.minGaps[m]
		if ok {
			in.lastAccepted[m], in.anyAccepted[m] = since, true
		}
	default:
		ok = in.limiters[m].AllowN(now, 1)
	}
	if !ok {
		c.tooMany++
		ms.TooMany++
		if len(c.tooManyAt) < MaxTooManyAt {
			c.tooManyAt = append(c.tooManyAt, since)
		}
		return 0, tooMany
	}
	c.accepted++
	ms.Accepted++
	if quota := in.quota(m); quota > 0 {
		if in.quotaUsed[m] >= quota {
			c.quotaExceeded++
			return in.quotaUsed[m], overQuota
		}
		in.quotaUsed[m]++
	}
	return in.quotaUsed[m], admitted
}

// quota is method m's quota: Quota for getAvatar, CheckQuota for checkWhatsapp, else none.
func (in *instance) quota(m methodID) int {
	switch m {
	case mGetAvatar:
		return in.cfg.Quota
	case mCheckWhatsapp:
		return in.cfg.CheckQuota
	}
	return 0
}

// startingAt reports whether the instance is starting at since (the simulator's clock), for a
// request that is a getAvatar one when avatar says so (it may open a window by count).
func (in *instance) startingAt(since time.Duration, avatar bool) bool {
	c := &in.cfg
	if c.State == StateStarting {
		return true
	}
	after := c.StartingAfter
	if c.StartingAfterRequests > 0 {
		in.mu.Lock()
		if avatar && !in.opened {
			in.avatarsSeen++
			if in.avatarsSeen >= c.StartingAfterRequests {
				in.opened, in.openedAt = true, since
			}
		}
		opened, at := in.opened, in.openedAt
		in.mu.Unlock()
		if !opened {
			return false
		}
		after = at
	}
	if c.StartingFor <= 0 || since < after {
		return false
	}
	into := since - after
	if c.StartingEvery > 0 {
		into %= c.StartingEvery
	}
	return into < c.StartingFor
}

// stateError is the 400 message the instance's state makes every call fail with, or "".
func (in *instance) stateError(starting bool) string {
	newer := in.cfg.NewerWording
	if starting {
		if newer {
			return greenapi.ReasonStartingOrNotAuth
		}
		return greenapi.ReasonStarting
	}
	switch in.cfg.State {
	case StateNotAuthorized:
		if newer {
			return greenapi.ReasonStartingOrNotAuth
		}
		return greenapi.ReasonNotAuthorized
	case StateBlocked:
		return greenapi.ReasonStartingOrNotAuth
	case StateExpired:
		return msgExpired
	case StateDeleted:
		return msgDeleted
	}
	return ""
}

// countCall records that a request named req's chat, whatever the answer will be.
func (s *Simulator) countCall(m methodID, req request) {
	if req.kind == 0 {
		s.invalid.Add(1)
	}
	sh := s.shard(req.hash)
	sh.mu.Lock()
	c := sh.chat(req.key)
	if m == mGetAvatar {
		c.Calls++
	} else {
		c.CheckCalls++
	}
	sh.mu.Unlock()
}

// randFloat draws from the injected source.
func (s *Simulator) randFloat() float64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()
}

// randN draws an int in [0, n) from the injected source.
func (s *Simulator) randN(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// latency draws one delay: log-normal around LatencyMedian with the configured P99.
func (s *Simulator) latency() time.Duration {
	if s.sigma == 0 {
		return s.cfg.LatencyMedian
	}
	s.rngMu.Lock()
	z := s.rng.NormFloat64()
	s.rngMu.Unlock()
	d := float64(s.cfg.LatencyMedian) * math.Exp(s.sigma*z)
	return time.Duration(min(d, s.maxLatency))
}

// splitPath takes "/waInstance{id}/{method}/{token}" apart; one trailing slash is tolerated.
func splitPath(p string) (id, method, token string, ok bool) {
	p, ok = strings.CutPrefix(p, "/waInstance")
	if !ok {
		return "", "", "", false
	}
	p = strings.TrimSuffix(p, "/")
	id, rest, ok1 := strings.Cut(p, "/")
	method, token, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || id == "" || method == "" || token == "" || strings.IndexByte(token, '/') >= 0 {
		return "", "", "", false
	}
	return id, method, token, true
}

// readBody appends r (at most maxBodyBytes of it) to b.
func readBody(b []byte, r io.Reader) ([]byte, error) {
	r = io.LimitReader(r, maxBodyBytes)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// request is what the body named.
type request struct {
	// key is the chat key: a valid target's chatId, or the raw input when invalid; "" when the
	// body named no chat.
	key  string
	kind greenapi.Kind // 0 when key failed validation
	hash uint64
	// byPhone means the body named the number as phoneNumber, without a chatId: what the
	// current editions refuse for getAvatar.
	byPhone bool
	// errMsg is the 400 message for a malformed body; errJSON forces the JSON form.
	errMsg  string
	errJSON bool
}

// parseRequest reads {"chatId": "..."} or {"phoneNumber": 79001234567} (checkWhatsapp: only
// phoneNumber) as Green API's validator does. A phoneNumber that is not an integer is refused
// here in every edition; whether an integer one is accepted for getAvatar depends on the
// number's edition, which ServeHTTP decides (see request.byPhone).
func parseRequest(m methodID, body []byte) request {
	f, ok := scanSimple(body)
	if !ok {
		var errReq request
		if f, errReq = decodeFields(body); errReq.errMsg != "" {
			return errReq
		}
	}
	if m == mGetAvatar && f.chatSet {
		if f.chatNotString {
			return request{errMsg: "Validation failed. Details: 'chatId' must be a string", errJSON: true}
		}
		if f.chat != "" {
			t, err := greenapi.ParseChatID(f.chat)
			if err != nil {
				return request{key: f.chat}
			}
			return request{key: t.ChatID(), kind: t.Kind()}
		}
	}
	if raw := f.phone; len(raw) > 0 {
		if raw[0] == '"' {
			return request{errMsg: "Validation failed. Details: 'phoneNumber' must be a number", errJSON: true}
		}
		for _, c := range raw {
			if c < '0' || c > '9' {
				return request{errMsg: "Validation failed. Details: 'phoneNumber' must be an integer", errJSON: true}
			}
		}
		digits := string(raw)
		t, err := greenapi.ParsePhone(digits)
		if err != nil {
			return request{key: digits, byPhone: true}
		}
		return request{key: t.ChatID(), kind: t.Kind(), byPhone: true}
	}
	if m == mCheckWhatsapp {
		return request{errMsg: "Validation failed. Details: 'phoneNumber' is required", errJSON: true}
	}
	return request{errMsg: msgChatIDRequired, errJSON: true}
}

// fields are the body's two fields of interest, decoded.
type fields struct {
	chat          string
	chatSet       bool // chatId present and not null
	chatNotString bool
	phone         []byte // phoneNumber's raw JSON, nil when absent or null
}

// decodeFields is the general path: encoding/json, with its errors worded as Green API's.
func decodeFields(body []byte) (fields, request) {
	var f fields
	if len(bytes.TrimSpace(body)) == 0 {
		return f, request{} // an empty body is an empty object
	}
	var raw struct {
		ChatID      json.RawMessage `json:"chatId"`
		PhoneNumber json.RawMessage `json:"phoneNumber"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn) && syn.Error() != "unexpected end of JSON input":
			return f, request{errMsg: syntaxMessage(body, syn.Offset)}
		case syn != nil:
			return f, request{errMsg: msgUnexpectedEnd}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return f, request{errMsg: msgUnexpectedEnd}
		default:
			return f, request{errMsg: msgBodyNotObject, errJSON: true}
		}
	}
	if len(raw.ChatID) > 0 && string(raw.ChatID) != "null" {
		f.chatSet = true
		f.chatNotString = json.Unmarshal(raw.ChatID, &f.chat) != nil
	}
	if len(raw.PhoneNumber) > 0 && string(raw.PhoneNumber) != "null" {
		f.phone = raw.PhoneNumber
	}
	return f, request{}
}

// scanSimple is the fast path for the bodies clients send: exactly one field, chatId with a
// string free of escapes or phoneNumber with digits, in any whitespace. Anything else is
// left to decodeFields.
func scanSimple(b []byte) (fields, bool) {
	var f fields
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	// str reads a string without escapes or control characters and returns its contents.
	str := func() ([]byte, bool) {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		start := i + 1
		for j := start; j < len(b); j++ {
			switch c := b[j]; {
			case c == '"':
				i = j + 1
				return b[start:j], true
			case c == '\\' || c < 0x20 || c >= 0x80:
				return nil, false
			}
		}
		return nil, false
	}
	ws()
	if i >= len(b) || b[i] != '{' {
		return f, false
	}
	i++
	ws()
	name, ok := str()
	if !ok {
		return f, false
	}
	ws()
	if i >= len(b) || b[i] != ':' {
		return f, false
	}
	i++
	ws()
	switch string(name) {
	case "chatId":
		v, ok := str()
		if !ok {
			return f, false
		}
		f.chat, f.chatSet = string(v), true
	case "phoneNumber":
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return f, false
		}
		f.phone = b[start:i]
	default:
		return f, false
	}
	ws()
	if i >= len(b) || b[i] != '}' {
		return f, false
	}
	i++
	ws()
	return f, i == len(b)
}

// syntaxMessage words a JSON syntax error as Green API's Node.js server does.
func syntaxMessage(body []byte, offset int64) string {
	pos := int(offset) - 1
	if pos < 0 || pos >= len(body) {
		return msgUnexpectedEnd
	}
	r, _ := utf8.DecodeRune(body[pos:])
	return "Unexpected token " + string(r) + " in JSON at position " + strconv.Itoa(pos)
}

// write400 answers an HTTP 400 with msg, as plain text or JSON per Config.ErrorBody.
func (s *Simulator) write400(w http.ResponseWriter, bp *[]byte, in *instance, m methodID, msg string, forceJSON bool) {
	asJSON := forceJSON
	switch s.cfg.ErrorBody {
	case ErrorBodyJSON:
		asJSON = true
	case ErrorBodyMixed:
		asJSON = asJSON || (s.errSeq.Add(1)-1)%2 == 1
	}
	b := (*bp)[:0]
	if !asJSON {
		b = append(b, msg...)
		*bp = b
		writeBody(w, http.StatusBadRequest, ctText, b)
		return
	}
	b = append(b, `{"statusCode":400,"timestamp":"`...)
	b = s.cfg.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","path":"/waInstance`...)
	b = appendJSONText(b, in.cfg.ID)
	b = append(b, '/')
	b = append(b, methods[m].name...)
	b = append(b, `/***","message":"`...)
	b = appendJSONText(b, msg)
	b = append(b, `"}`...)
	*bp = b
	writeBody(w, http.StatusBadRequest, ctJSON, b)
}

// appendAvatar writes a GetAvatar 200 body in tr's edition; a reason replaces the truth.
func appendAvatar(b []byte, tr *Truth, reason string) []byte {
	exists, available, url, b64 := tr.ExistsWhatsapp && !tr.ReportedMissing, tr.Available, tr.URLAvatar, tr.Base64Avatar
	if reason != "" {
		exists, available, url, b64 = false, false, "", ""
	}
	switch tr.Edition {
	case EditionSeed, Edition2023:
		b = append(b, `{"existsWhatsapp":`...)
		b = strconv.AppendBool(b, exists)
		b = append(b, `,"urlAvatar":"`...)
		b = appendJSONText(b, url)
		b = append(b, `","reason":"`...)
		b = appendJSONText(b, reason)
		return append(b, `"}`...)
	}
	b = append(b, `{"urlAvatar":"`...)
	b = appendJSONText(b, url)
	b = append(b, `","available":`...)
	b = strconv.AppendBool(b, available)
	if tr.Edition == EditionCurrentBase64 {
		b = append(b, `,"base64Avatar":"`...)
		b = append(b, b64...)
		b = append(b, '"')
	}
	if reason != "" {
		b = append(b, `,"reason":"`...)
		b = appendJSONText(b, reason)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendCheck writes a CheckWhatsapp 200 body: the truth (its errors are 400s, never a reason
// in a 200).
func appendCheck(b []byte, tr *Truth, _ string) []byte {
	b = append(b, `{"existsWhatsapp":`...)
	b = strconv.AppendBool(b, tr.ExistsWhatsapp)
	return append(b, '}')
}

// outageAt says whether now falls in the configured outage (Config.OutageAfter, OutageFor).
func (s *Simulator) outageAt(now time.Time) bool {
	if s.cfg.OutageFor <= 0 {
		return false
	}
	since := now.Sub(s.cfg.Start)
	return since >= s.cfg.OutageAfter && since < s.cfg.OutageAfter+s.cfg.OutageFor
}

// refuse answers nothing: it closes the request's connection, as an unreachable server does,
// so the client gets a network error and no status. A ResponseWriter that cannot be hijacked
// (HTTP/2) gets its handler aborted instead, which resets the stream.
func (s *Simulator) refuse(w http.ResponseWriter) {
	s.refused.Add(1)
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
				_ = tc.SetLinger(0) // a reset, not a graceful close
			}
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// appendJSONText appends s escaped for the inside of a JSON string.
func appendJSONText(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0 // s[start:i] needs no escaping and is appended in one go
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		if c < 0x20 {
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, '\\', c)
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

// writeBody sends status with body.
func writeBody(w http.ResponseWriter, status int, contentType []string, body []byte) {
	w.Header()["Content-Type"] = contentType
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeStatus sends status with its standard text as a plain body.
func writeStatus(w http.ResponseWriter, status int) {
	w.Header()["Content-Type"] = ctText
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status))
}
