package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
)

// testStart is the fixed start of every test simulator, so links and timestamps are exact.
var testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	testID    = "1101000001"
	testToken = "secret-token"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to start + d.
func (c *fakeClock) Set(d time.Duration) {
	c.mu.Lock()
	c.t = testStart.Add(d)
	c.mu.Unlock()
}

// sleepRecorder is an instant Sleep that remembers what it was asked to wait.
type sleepRecorder struct {
	mu    sync.Mutex
	slept []time.Duration
}

func (r *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.slept = append(r.slept, d)
	r.mu.Unlock()
	return nil
}

// bundle is what a test needs around its simulator.
type bundle struct {
	sim    *Simulator
	clock  *fakeClock
	sleeps *sleepRecorder
}

// setup makes a simulator with a fake clock and sleep; when cfg names no instance it serves one
// authorized testID/testToken instance without rate limits.
func setup(t *testing.T, cfg Config) *bundle {
	t.Helper()
	b := &bundle{clock: &fakeClock{t: testStart}, sleeps: &sleepRecorder{}}
	cfg.Now, cfg.Sleep, cfg.Start = b.clock.Now, b.sleeps.Sleep, testStart
	if len(cfg.Instances) == 0 {
		cfg.Instances = []Instance{{ID: testID, Token: testToken, RPS: -1, StateRPS: -1}}
	}
	sim, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.sim = sim
	return b
}

// response is what one call got.
type response struct {
	status int
	body   string
	header http.Header
}

// do sends one raw request through the handler.
func (b *bundle) do(t *testing.T, method, path, body string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	b.sim.ServeHTTP(rec, req)
	return response{status: rec.Code, body: rec.Body.String(), header: rec.Header()}
}

func (b *bundle) avatar(t *testing.T, body string) response {
	t.Helper()
	return b.do(t, "POST", "/waInstance"+testID+"/getAvatar/"+testToken, body)
}

func (b *bundle) check(t *testing.T, body string) response {
	t.Helper()
	return b.do(t, "POST", "/waInstance"+testID+"/checkWhatsapp/"+testToken, body)
}

func (b *bundle) state(t *testing.T) response {
	t.Helper()
	return b.do(t, "GET", "/waInstance"+testID+"/getStateInstance/"+testToken, "")
}

func chatBody(chat string) string { return `{"chatId":"` + chat + `"}` }

// find returns the first phone number from 79000000000+from on whose truth is cat.
func find(t *testing.T, sim *Simulator, cat Category, from int) string {
	t.Helper()
	for i := from; i < from+100000; i++ {
		n := strconv.Itoa(79000000000 + i)
		if sim.Truth(n).Category == cat {
			return n
		}
	}
	t.Fatalf("no number of category %v", cat)
	return ""
}

// wantAvatarBody is the exact GetAvatar body for tr, written independently of the handler.
func wantAvatarBody(tr Truth, edition string) string {
	switch edition {
	case EditionSeed, Edition2023:
		return fmt.Sprintf(`{"existsWhatsapp":%t,"urlAvatar":%q,"reason":""}`, tr.ExistsWhatsapp, tr.URLAvatar)
	case EditionCurrent:
		return fmt.Sprintf(`{"urlAvatar":%q,"available":%t}`, tr.URLAvatar, tr.Available)
	default:
		return fmt.Sprintf(`{"urlAvatar":%q,"available":%t,"base64Avatar":%q}`, tr.URLAvatar, tr.Available, tr.Base64Avatar)
	}
}

// isRefusal reports whether got is a current edition's refusal of phoneNumber: an HTTP 400
// whose JSON message is "Validation failed. Details: 'chatId' is required".
func isRefusal(got response) bool {
	var e struct {
		StatusCode int    `json:"statusCode"`
		Message    string `json:"message"`
	}
	return got.status == 400 && got.header.Get("Content-Type") == "application/json" &&
		json.Unmarshal([]byte(got.body), &e) == nil && e.StatusCode == 400 && e.Message == msgChatIDRequired
}

func TestRouting(t *testing.T) {
	t.Parallel()
	const ok = `{"chatId":"79001234567@c.us"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		bodyHas                  string
	}{
		{"getAvatar", "POST", "/waInstance1101000001/getAvatar/secret-token", ok, 200, `"urlAvatar"`},
		{"method case-insensitive", "POST", "/waInstance1101000001/GetAvatar/secret-token", ok, 200, `"urlAvatar"`},
		{"method upper case", "POST", "/waInstance1101000001/GETAVATAR/secret-token", ok, 200, `"urlAvatar"`},
		{"trailing slash", "POST", "/waInstance1101000001/getAvatar/secret-token/", ok, 200, `"urlAvatar"`},
		{"checkWhatsapp", "POST", "/waInstance1101000001/checkWhatsapp/secret-token", `{"phoneNumber":79001234567}`, 200, `"existsWhatsapp"`},
		{"getStateInstance", "GET", "/waInstance1101000001/getStateInstance/secret-token", "", 200, `{"stateInstance":"authorized"}`},
		{"unknown instance", "POST", "/waInstance999/getAvatar/secret-token", ok, 403, ""},
		{"wrong token", "POST", "/waInstance1101000001/getAvatar/wrong", ok, 401, ""},
		{"wrong token before unknown method", "POST", "/waInstance1101000001/nope/wrong", ok, 401, ""},
		{"unknown method", "POST", "/waInstance1101000001/sendMessage/secret-token", ok, 404, ""},
		{"getAvatar by GET", "GET", "/waInstance1101000001/getAvatar/secret-token", "", 404, ""},
		{"checkWhatsapp by PUT", "PUT", "/waInstance1101000001/checkWhatsapp/secret-token", ok, 404, ""},
		{"getStateInstance by POST", "POST", "/waInstance1101000001/getStateInstance/secret-token", "", 404, ""},
		{"not an API path", "POST", "/health", "", 404, ""},
		{"no token", "POST", "/waInstance1101000001/getAvatar", ok, 404, ""},
		{"extra segment", "POST", "/waInstance1101000001/getAvatar/secret-token/x", ok, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 1})
			got := b.do(t, tc.method, tc.path, tc.body)
			if got.status != tc.status || !strings.Contains(got.body, tc.bodyHas) {
				t.Fatalf("got %d %q, want %d containing %q", got.status, got.body, tc.status, tc.bodyHas)
			}
			if got.status == 200 && (got.header.Get("Content-Type") != "application/json" || !json.Valid([]byte(got.body))) {
				t.Fatalf("200 answer is not JSON: %q %q", got.header.Get("Content-Type"), got.body)
			}
		})
	}
}

func TestErrorBodyForms(t *testing.T) {
	t.Parallel()
	wantJSON := `{"statusCode":400,"timestamp":"2026-03-01T12:00:01.500Z","path":"/waInstance1101000001/getAvatar/***","message":"instance account not authorized"}`
	tests := []struct {
		form string
		want []string // successive bodies
	}{
		{ErrorBodyText, []string{greenapi.ReasonNotAuthorized, greenapi.ReasonNotAuthorized}},
		{ErrorBodyJSON, []string{wantJSON, wantJSON}},
		{ErrorBodyMixed, []string{greenapi.ReasonNotAuthorized, wantJSON, greenapi.ReasonNotAuthorized, wantJSON}},
	}
	for _, tc := range tests {
		t.Run(tc.form, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{ErrorBody: tc.form, Instances: []Instance{{ID: testID, Token: testToken, State: StateNotAuthorized, RPS: -1}}})
			b.clock.Set(1500 * time.Millisecond)
			for i, want := range tc.want {
				got := b.avatar(t, chatBody("79001234567@c.us"))
				if got.status != 400 || got.body != want {
					t.Fatalf("call %d: got %d %q, want 400 %q", i, got.status, got.body, want)
				}
				wantCT := "text/plain; charset=utf-8"
				if strings.HasPrefix(want, "{") {
					wantCT = "application/json"
				}
				if ct := got.header.Get("Content-Type"); ct != wantCT {
					t.Fatalf("call %d: Content-Type %q, want %q", i, ct, wantCT)
				}
			}
		})
	}
}

func TestBodyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		check     bool // checkWhatsapp instead of getAvatar
		body      string
		wantMsg   string
		wantJSONy bool // the message comes JSON-wrapped although ErrorBody is text
	}{
		{"malformed", false, `{"chatId": }`, "Unexpected token } in JSON at position 11", false},
		{"garbage", false, `chatId=1`, "Unexpected token c in JSON at position 0", false},
		{"truncated", false, `{"chatId":"7900`, "Unexpected end of JSON input", false},
		{"empty object", false, `{}`, "Validation failed. Details: 'chatId' is required", true},
		{"empty body", false, ``, "Validation failed. Details: 'chatId' is required", true},
		{"null fields", false, `{"chatId":null,"phoneNumber":null}`, "Validation failed. Details: 'chatId' is required", true},
		{"empty chatId", false, `{"chatId":""}`, "Validation failed. Details: 'chatId' is required", true},
		{"phone as string", false, `{"phoneNumber":"79001234567"}`, "Validation failed. Details: 'phoneNumber' must be a number", true},
		{"phone as float", false, `{"phoneNumber":7.9001234567e10}`, "Validation failed. Details: 'phoneNumber' must be an integer", true},
		{"phone negative", false, `{"phoneNumber":-79001234567}`, "Validation failed. Details: 'phoneNumber' must be an integer", true},
		{"chatId as number", false, `{"chatId":79001234567}`, "Validation failed. Details: 'chatId' must be a string", true},
		{"array", false, `[1]`, msgBodyNotObject, true},
		{"check without phone", true, `{"chatId":"79001234567@c.us"}`, "Validation failed. Details: 'phoneNumber' is required", true},
		{"check phone as string", true, `{"phoneNumber":"79001234567"}`, "Validation failed. Details: 'phoneNumber' must be a number", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 1, ErrorBody: ErrorBodyText})
			var got response
			if tc.check {
				got = b.check(t, tc.body)
			} else {
				got = b.avatar(t, tc.body)
			}
			if got.status != 400 {
				t.Fatalf("status %d, want 400 (%q)", got.status, got.body)
			}
			msg := got.body
			if tc.wantJSONy {
				var e struct {
					StatusCode int    `json:"statusCode"`
					Message    string `json:"message"`
					Path       string `json:"path"`
				}
				if err := json.Unmarshal([]byte(got.body), &e); err != nil {
					t.Fatalf("want a JSON error body, got %q", got.body)
				}
				if e.StatusCode != 400 || !strings.HasSuffix(e.Path, "/***") || strings.Contains(e.Path, testToken) {
					t.Fatalf("bad JSON error body %q", got.body)
				}
				msg = e.Message
			}
			if msg != tc.wantMsg {
				t.Fatalf("message %q, want %q", msg, tc.wantMsg)
			}
			if st := b.sim.Stats(); st.Invalid != 0 {
				t.Fatalf("a malformed body counted as an invalid number: %+v", st)
			}
		})
	}
}

func TestEditions(t *testing.T) {
	t.Parallel()
	for _, edition := range []string{EditionSeed, Edition2023, EditionCurrent, EditionCurrentBase64} {
		t.Run(edition, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 7, Edition: edition})
			for _, cat := range []Category{CategoryAvatar, CategoryNoPhoto, CategoryHidden, CategoryNoWhatsApp} {
				n := find(t, b.sim, cat, 0)
				tr := b.sim.Truth(n)
				if tr.Edition != edition {
					t.Fatalf("truth edition %q", tr.Edition)
				}
				want := wantAvatarBody(tr, edition)
				if got := b.avatar(t, chatBody(n+"@c.us")); got.status != 200 || got.body != want {
					t.Fatalf("%v by chatId: got %d %q, want 200 %q", cat, got.status, got.body, want)
				}
				// phoneNumber, in any whitespace: answered by the seed and 2023 editions,
				// refused by the current ones.
				for _, body := range []string{`{"phoneNumber":` + n + `}`, "{\n  \"phoneNumber\" : " + n + "\n}"} {
					got := b.avatar(t, body)
					if refusesPhoneNumber(edition) {
						if !isRefusal(got) {
							t.Fatalf("%v %s: got %d %q, want the 'chatId' is required refusal", cat, body, got.status, got.body)
						}
					} else if got.status != 200 || got.body != want {
						t.Fatalf("%v %s: got %d %q, want 200 %q", cat, body, got.status, got.body, want)
					}
				}
				wantChat := ChatStats{Calls: 3, Answers: 3}
				if refusesPhoneNumber(edition) {
					wantChat.Answers = 1
				}
				if got, want := b.check(t, `{"phoneNumber":`+n+`}`), fmt.Sprintf(`{"existsWhatsapp":%t}`, tr.ExistsWhatsapp); got.body != want {
					t.Fatalf("checkWhatsapp %v: got %q, want %q", cat, got.body, want)
				}
				wantChat.CheckCalls, wantChat.CheckAnswers = 1, 1
				if got := b.sim.Chat(n); got != wantChat {
					t.Fatalf("%v: chat %+v, want %+v", cat, got, wantChat)
				}
			}
			// What each category's truth is, in every edition.
			for cat, want := range map[Category][3]bool{ // exists, available, has URL
				CategoryAvatar:     {true, true, true},
				CategoryNoPhoto:    {true, true, false},
				CategoryHidden:     {true, false, false},
				CategoryNoWhatsApp: {false, true, false}, // today's edition cannot tell it from no photo
			} {
				tr := b.sim.Truth(find(t, b.sim, cat, 0))
				if got := [3]bool{tr.ExistsWhatsapp, tr.Available, tr.URLAvatar != ""}; got != want || tr.BadRequest || (tr.Base64Avatar != "") != want[2] {
					t.Fatalf("%v truth %+v", cat, tr)
				}
			}
		})
	}
}

func TestEditionMixed(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 3, Edition: EditionMixed})
	seen := map[string]int{}
	for i := 0; i < 400; i++ {
		n := strconv.Itoa(79100000000 + i)
		tr := b.sim.Truth(n)
		seen[tr.Edition]++
		if tr.BadRequest {
			continue
		}
		got := b.avatar(t, chatBody(n+"@c.us"))
		if want := wantAvatarBody(tr, tr.Edition); got.body != want {
			t.Fatalf("%s (%s): got %q, want %q", n, tr.Edition, got.body, want)
		}
		if again := b.avatar(t, chatBody(n+"@c.us")); again.body != got.body {
			t.Fatalf("%s answered %q then %q", n, got.body, again.body)
		}
	}
	for _, e := range editionsMixed {
		if seen[e] < 60 {
			t.Fatalf("edition %s picked %d times of 400: %v", e, seen[e], seen)
		}
	}
}

func TestBadRequestData(t *testing.T) {
	t.Parallel()
	const bad200 = `{"existsWhatsapp":false,"urlAvatar":"","reason":"bad request data"}`
	tests := []struct {
		edition string
		status  int
		body    string
	}{
		{EditionSeed, 400, "bad request data"},
		{Edition2023, 200, bad200},
		{EditionCurrent, 400, "bad request data"},
		{EditionCurrentBase64, 400, "bad request data"},
	}
	for _, tc := range tests {
		t.Run(tc.edition, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 5, Edition: tc.edition})
			serverRejects := find(t, b.sim, CategoryBadRequest, 0)
			inputs := []struct{ body, key string }{
				{chatBody("7900123@c.us"), "7900123@c.us"},
				{chatBody("79001234"), "79001234"}, // no suffix, and too few digits for a phone number
				{chatBody("79001234567-15@g.us"), "79001234567-15@g.us"},
				{`{"phoneNumber":790012345}`, "790012345"},
				{`{"phoneNumber":7900123456789012}`, "7900123456789012"},
				{chatBody(serverRejects + "@c.us"), serverRejects + "@c.us"},
			}
			for i, in := range inputs {
				got := b.avatar(t, in.body)
				// The current editions refuse phoneNumber before looking at the number.
				refused := strings.Contains(in.body, "phoneNumber") && refusesPhoneNumber(tc.edition)
				switch {
				case refused:
					if !isRefusal(got) {
						t.Fatalf("%s: got %d %q, want the 'chatId' is required refusal", in.body, got.status, got.body)
					}
				case got.status != tc.status || got.body != tc.body:
					t.Fatalf("%s: got %d %q, want %d %q", in.body, got.status, got.body, tc.status, tc.body)
				}
				wantAnswers := 1
				if refused {
					wantAnswers = 0
				}
				if c := b.sim.Stats().Chats[in.key]; c.Calls != 1 || c.Answers != wantAnswers {
					t.Fatalf("%s: counters %+v, want 1 call, %d answers", in.key, c, wantAnswers)
				}
				if !b.sim.Truth(in.key).BadRequest {
					t.Fatalf("%s: truth is not bad request", in.key)
				}
				wantInvalid := min(i+1, len(inputs)-1) // the last input is well-formed
				if st := b.sim.Stats(); st.Invalid != wantInvalid {
					t.Fatalf("after %s: Invalid %d, want %d", in.body, st.Invalid, wantInvalid)
				}
			}
			// checkWhatsapp's errors are HTTP 400s in every edition, in its own words.
			check := b.check(t, `{"phoneNumber":12345}`)
			if check.status != http.StatusBadRequest || !strings.Contains(check.body, msgBadPhoneNumber) {
				t.Fatalf("checkWhatsapp: got %d %q", check.status, check.body)
			}
		})
	}
}

func TestStates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state     string
		newer     bool
		avatarMsg string // "" means answered 200
		stateCode int
		stateBody string
	}{
		{StateAuthorized, false, "", 200, `{"stateInstance":"authorized"}`},
		{StateSleepMode, false, "", 200, `{"stateInstance":"sleepMode"}`},
		{StateYellowCard, false, "", 200, `{"stateInstance":"yellowCard"}`},
		{StateNotAuthorized, false, "instance account not authorized", 200, `{"stateInstance":"notAuthorized"}`},
		{StateNotAuthorized, true, "instance is starting or not authorized", 200, `{"stateInstance":"notAuthorized"}`},
		{StateStarting, false, "instance in starting process try later", 200, `{"stateInstance":"starting"}`},
		{StateStarting, true, "instance is starting or not authorized", 200, `{"stateInstance":"starting"}`},
		{StateBlocked, false, "instance is starting or not authorized", 200, `{"stateInstance":"blocked"}`},
		{StateExpired, false, "Instance account is expired", 400, "Instance account is expired"},
		{StateDeleted, false, "Instance is deleted", 400, "Instance is deleted"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/newer=%t", tc.state, tc.newer), func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, State: tc.state, NewerWording: tc.newer, RPS: -1, StateRPS: -1}}})
			for _, got := range []response{b.avatar(t, chatBody("79001234567@c.us")), b.check(t, `{"phoneNumber":79001234567}`)} {
				if tc.avatarMsg == "" && got.status != 200 || tc.avatarMsg != "" && (got.status != 400 || got.body != tc.avatarMsg) {
					t.Fatalf("got %d %q, want message %q", got.status, got.body, tc.avatarMsg)
				}
			}
			if got := b.state(t); got.status != tc.stateCode || got.body != tc.stateBody {
				t.Fatalf("getStateInstance: got %d %q, want %d %q", got.status, got.body, tc.stateCode, tc.stateBody)
			}
		})
	}
}

func TestStartingWindows(t *testing.T) {
	t.Parallel()
	type step struct {
		at       time.Duration
		starting bool
	}
	tests := []struct {
		name  string
		inst  Instance
		steps []step
	}{
		{"once", Instance{StartingAfter: 10 * time.Second, StartingFor: 5 * time.Second}, []step{
			{0, false}, {9999 * time.Millisecond, false}, {10 * time.Second, true}, {14999 * time.Millisecond, true},
			{15 * time.Second, false}, {70 * time.Second, false}, {time.Hour, false},
		}},
		{"at start", Instance{StartingFor: 3 * time.Second}, []step{{0, true}, {2 * time.Second, true}, {3 * time.Second, false}}},
		// Each step sends one getAvatar: the third opens the window, whenever it comes.
		{"after requests", Instance{StartingAfterRequests: 3, StartingFor: 5 * time.Second}, []step{
			{0, false}, {10 * time.Second, false}, {20 * time.Second, true}, {24999 * time.Millisecond, true},
			{25 * time.Second, false}, {time.Hour, false},
		}},
		{"recurring", Instance{StartingAfter: 10 * time.Second, StartingFor: 5 * time.Second, StartingEvery: time.Minute}, []step{
			{0, false}, {10 * time.Second, true}, {15 * time.Second, false}, {69 * time.Second, false},
			{70 * time.Second, true}, {74 * time.Second, true}, {75 * time.Second, false}, {130 * time.Second, true},
			{10*time.Second + 100*time.Minute, true}, {16*time.Second + 100*time.Minute, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := tc.inst
			in.ID, in.Token, in.RPS, in.StateRPS = testID, testToken, -1, -1
			b := setup(t, Config{Seed: 1, Instances: []Instance{in}})
			for _, s := range tc.steps {
				b.clock.Set(s.at)
				got, state := b.avatar(t, chatBody("79001234567@c.us")), b.state(t)
				if s.starting {
					if got.status != 400 || got.body != greenapi.ReasonStarting || state.body != `{"stateInstance":"starting"}` {
						t.Fatalf("at %v: want starting, got %d %q and %q", s.at, got.status, got.body, state.body)
					}
				} else if got.status != 200 || state.body != `{"stateInstance":"authorized"}` {
					t.Fatalf("at %v: want answers, got %d %q and %q", s.at, got.status, got.body, state.body)
				}
			}
		})
	}
}

func TestRateLimiter(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	type call struct {
		at     time.Duration
		method string // "a" getAvatar, "c" checkWhatsapp, "s" getStateInstance
		want   int
	}
	// paced is n getAvatar calls exactly every gap, all expecting want.
	paced := func(n int, gap time.Duration, want int) []call {
		var cs []call
		for i := 0; i < n; i++ {
			cs = append(cs, call{time.Duration(i) * gap, "a", want})
		}
		return cs
	}
	tests := []struct {
		name   string
		rps    float64
		burst  int
		minGap bool
		calls  []call
	}{
		{"exact pacing, burst 2", 10, 2, false, paced(100, 100*ms, 200)},
		{"exact pacing, burst 1", 10, 1, false, paced(100, 100*ms, 200)},
		{"exact pacing at 4 rps, burst 1", 4, 1, false, paced(40, 250*ms, 200)},
		{"burst 2 drains then refills", 10, 2, false, []call{
			{0, "a", 200}, {0, "a", 200}, {0, "a", 429}, {50 * ms, "a", 429}, {100 * ms, "a", 200}, {150 * ms, "a", 429}, {200 * ms, "a", 200},
		}},
		{"burst 1 is a minimum gap", 10, 1, false, []call{
			{0, "a", 200}, {0, "a", 429}, {99 * ms, "a", 429}, {100 * ms, "a", 200}, {150 * ms, "a", 429}, {200 * ms, "a", 200},
		}},
		{"burst 2 forgives one early arrival", 10, 2, false, []call{
			{0, "a", 200}, {100 * ms, "a", 200}, {170 * ms, "a", 200}, {300 * ms, "a", 200}, {400 * ms, "a", 200}, {500 * ms, "a", 200},
		}},
		{"burst 1 does not", 10, 1, false, []call{
			{0, "a", 200}, {100 * ms, "a", 200}, {170 * ms, "a", 429}, {300 * ms, "a", 200},
		}},
		{"twice too fast", 10, 2, false, []call{
			{0, "a", 200}, {50 * ms, "a", 200}, {100 * ms, "a", 200}, {150 * ms, "a", 429}, {200 * ms, "a", 200}, {250 * ms, "a", 429}, {300 * ms, "a", 200},
		}},
		{"methods have their own buckets", 10, 1, false, []call{
			{0, "a", 200}, {0, "c", 200}, {0, "s", 200}, {0, "a", 429}, {0, "c", 429}, {0, "s", 429},
			{100 * ms, "a", 200}, {100 * ms, "c", 200}, {100 * ms, "s", 429}, {time.Second, "s", 200},
		}},
		// MinGap: at least 1/rps since the method's last accepted request, exactly, whatever
		// Burst says.
		{"min gap: the strict reading", 10, 5, true, []call{
			{0, "a", 200}, {100 * ms, "a", 200}, {199 * ms, "a", 429}, {200 * ms, "a", 200},
			{299999 * time.Microsecond, "a", 429}, {300 * ms, "a", 200}, {300 * ms, "a", 429},
			{399999999 * time.Nanosecond, "a", 429}, {400 * ms, "a", 200}, {2 * time.Second, "a", 200}, {2 * time.Second, "a", 429},
		}},
		{"min gap: refusals do not move the mark", 10, 2, true, []call{
			{0, "a", 200}, {10 * ms, "a", 429}, {50 * ms, "a", 429}, {99 * ms, "a", 429}, {100 * ms, "a", 200},
		}},
		{"min gap: no early arrival forgiven", 10, 2, true, []call{
			{0, "a", 200}, {100 * ms, "a", 200}, {170 * ms, "a", 429}, {300 * ms, "a", 200}, {400 * ms, "a", 200},
		}},
		{"min gap: exact pacing", 10, 1, true, paced(100, 100*ms, 200)},
		{"min gap: exact pacing at 3 rps", 3, 1, true, paced(30, time.Second/3, 200)},
		{"min gap: per method", 10, 1, true, []call{
			{0, "a", 200}, {0, "c", 200}, {0, "s", 200}, {0, "a", 429}, {0, "c", 429}, {0, "s", 429},
			{100 * ms, "a", 200}, {100 * ms, "c", 200}, {999 * ms, "s", 429}, {time.Second, "s", 200},
		}},
		{"min gap: unlimited", -1, 1, true, []call{{0, "a", 200}, {0, "a", 200}, {time.Nanosecond, "a", 200}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, RPS: tc.rps, Burst: tc.burst, MinGap: tc.minGap}}})
			var at429 []time.Duration
			for i, c := range tc.calls {
				b.clock.Set(c.at)
				var got response
				switch c.method {
				case "a":
					got = b.avatar(t, chatBody("79001234567@c.us"))
				case "c":
					got = b.check(t, `{"phoneNumber":79001234567}`)
				case "s":
					got = b.state(t)
				}
				if got.status != c.want {
					t.Fatalf("call %d at %v (%s): status %d, want %d", i, c.at, c.method, got.status, c.want)
				}
				if got.status == 429 {
					at429 = append(at429, c.at)
					if got.body != "" || got.header.Get("Retry-After") != "" {
						t.Fatalf("429 with body %q, Retry-After %q", got.body, got.header.Get("Retry-After"))
					}
				}
			}
			st := b.sim.Stats().Instances[testID]
			if st.TooMany != len(at429) || st.Requests != len(tc.calls) {
				t.Fatalf("stats %+v, want %d 429s of %d", st, len(at429), len(tc.calls))
			}
			if !slices.Equal(st.TooManyAt, at429) {
				t.Fatalf("TooManyAt %v, want %v", st.TooManyAt, at429)
			}
		})
	}
}

func TestMinGapReset(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, MinGap: true}}})
	b.clock.Set(time.Second)
	if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 200 {
		t.Fatalf("first call: %d", got.status)
	}
	b.sim.Reset()
	b.clock.Set(time.Second + time.Millisecond)
	if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 200 {
		t.Fatalf("after Reset the last accepted request is remembered: %d", got.status)
	}
	if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 429 {
		t.Fatalf("second call 0s later: %d", got.status)
	}
	if st := b.sim.Stats().Instances[testID]; !slices.Equal(st.TooManyAt, []time.Duration{time.Second + time.Millisecond}) {
		t.Fatalf("TooManyAt %v", st.TooManyAt)
	}
}

func TestTooManyAll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		retryAfter     time.Duration
		wantRetryAfter string
	}{
		{"no Retry-After", 0, ""},
		{"Retry-After", 3 * time.Second, "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 1, RetryAfter: tc.retryAfter,
				Instances: []Instance{{ID: testID, Token: testToken, RPS: -1, StateRPS: -1, TooManyAll: true}}})
			calls := []func() response{
				func() response { return b.avatar(t, chatBody("79001234567@c.us")) },
				func() response { return b.check(t, `{"phoneNumber":79001234567}`) },
				func() response { return b.state(t) },
				func() response { return b.avatar(t, `{"chatId":`) }, // even a malformed body
			}
			var want []time.Duration
			for i, call := range calls {
				at := time.Duration(i) * time.Hour
				b.clock.Set(at)
				want = append(want, at)
				if got := call(); got.status != 429 || got.body != "" || got.header.Get("Retry-After") != tc.wantRetryAfter {
					t.Fatalf("call %d: got %d %q, Retry-After %q", i, got.status, got.body, got.header.Get("Retry-After"))
				}
			}
			if got := b.do(t, "POST", "/waInstance"+testID+"/getAvatar/wrong", chatBody("79001234567@c.us")); got.status != 401 {
				t.Fatalf("wrong token: %d, want 401 before the limit", got.status)
			}
			st := b.sim.Stats()
			in := st.Instances[testID]
			if in.Requests != 4 || in.TooMany != 4 || in.Accepted != 0 || in.Unauthorized != 1 || !slices.Equal(in.TooManyAt, want) {
				t.Fatalf("instance stats %+v", in)
			}
			for _, m := range []string{"getAvatar", "checkWhatsapp", "getStateInstance"} {
				if ms := in.Methods[m]; ms.TooMany != ms.Requests || ms.Accepted != 0 {
					t.Fatalf("%s: %+v", m, ms)
				}
			}
			if c := st.Chats["79001234567@c.us"]; c != (ChatStats{Calls: 1, CheckCalls: 1}) {
				t.Fatalf("chat %+v", c)
			}
		})
	}
}

func TestTooManyAtBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, TooManyAll: true}}})
	in := b.sim.byID[testID]
	for i := range MaxTooManyAt + 10 {
		since := time.Duration(i) * time.Millisecond
		if _, verdict := in.admit(since, testStart.Add(since), mGetAvatar); verdict != tooMany {
			t.Fatalf("arrival %d admitted", i)
		}
	}
	st := b.sim.Stats().Instances[testID]
	if st.TooMany != MaxTooManyAt+10 || len(st.TooManyAt) != MaxTooManyAt {
		t.Fatalf("TooMany %d, len(TooManyAt) %d; want %d, %d", st.TooMany, len(st.TooManyAt), MaxTooManyAt+10, MaxTooManyAt)
	}
	if last := st.TooManyAt[MaxTooManyAt-1]; last != time.Duration(MaxTooManyAt-1)*time.Millisecond {
		t.Fatalf("kept up to %v, want the first %d", last, MaxTooManyAt)
	}
	// Reset starts afresh; a caller appending to what Stats handed out cannot write into the
	// simulator's record, and later 429s do not change it.
	b.sim.Reset()
	for _, at := range []time.Duration{1, 2, 3} { // three: an appended slice then has room
		b.clock.Set(at)
		b.avatar(t, chatBody("79001234567@c.us"))
	}
	first := b.sim.Stats().Instances[testID].TooManyAt
	if cap(first) != len(first) {
		t.Fatalf("TooManyAt has room to append into: len %d, cap %d", len(first), cap(first))
	}
	b.clock.Set(4)
	b.avatar(t, chatBody("79001234567@c.us"))
	if got := b.sim.Stats().Instances[testID].TooManyAt; !slices.Equal(got, []time.Duration{1, 2, 3, 4}) || !slices.Equal(first, []time.Duration{1, 2, 3}) {
		t.Fatalf("after Reset: %v, earlier copy %v", got, first)
	}
}

func TestPhoneNumberRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		edition string
		refuses bool
	}{
		{EditionSeed, false},
		{Edition2023, false},
		{EditionCurrent, true},
		{EditionCurrentBase64, true},
	}
	for _, tc := range tests {
		t.Run(tc.edition, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 4, Edition: tc.edition, ErrorBody: ErrorBodyText})
			n := find(t, b.sim, CategoryAvatar, 0)
			tr := b.sim.Truth(n)
			got := b.avatar(t, `{"phoneNumber":`+n+`}`)
			if isRefusal(got) != tc.refuses || !tc.refuses && got.body != wantAvatarBody(tr, tc.edition) {
				t.Fatalf("phoneNumber: got %d %q, refusal wanted %t", got.status, got.body, tc.refuses)
			}
			// A chatId beside it is what the server reads.
			if got := b.avatar(t, `{"chatId":"`+n+`@c.us","phoneNumber":`+n+`}`); got.status != 200 || got.body != wantAvatarBody(tr, tc.edition) {
				t.Fatalf("chatId and phoneNumber: got %d %q", got.status, got.body)
			}
			// checkWhatsapp takes phoneNumber in every edition.
			if got := b.check(t, `{"phoneNumber":`+n+`}`); got.status != 200 || got.body != `{"existsWhatsapp":true}` {
				t.Fatalf("checkWhatsapp: got %d %q", got.status, got.body)
			}
			want := ChatStats{Calls: 2, Answers: 2, CheckCalls: 1, CheckAnswers: 1}
			if tc.refuses {
				want.Answers = 1
			}
			if c := b.sim.Chat(n); c != want {
				t.Fatalf("chat %+v, want %+v", c, want)
			}
			if st := b.sim.Stats(); st.Invalid != 0 || st.Instances[testID].Accepted != 3 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	t.Run("mixed, per number", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 4, Edition: EditionMixed})
		refused := map[string]int{}
		for i := 0; i < 200; i++ {
			n := strconv.Itoa(79500000000 + i)
			tr := b.sim.Truth(n)
			if tr.BadRequest {
				continue
			}
			got := b.avatar(t, `{"phoneNumber":`+n+`}`)
			switch {
			case refusesPhoneNumber(tr.Edition):
				if !isRefusal(got) {
					t.Fatalf("%s (%s): got %d %q, want the refusal", n, tr.Edition, got.status, got.body)
				}
				refused[tr.Edition]++
			case got.status != 200 || got.body != wantAvatarBody(tr, tr.Edition):
				t.Fatalf("%s (%s): got %d %q", n, tr.Edition, got.status, got.body)
			}
		}
		if refused[EditionCurrent] == 0 || refused[EditionCurrentBase64] == 0 {
			t.Fatalf("refusals by edition: %v", refused)
		}
	})
	t.Run("after the instance's state", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 4, Instances: []Instance{{ID: testID, Token: testToken, State: StateStarting, RPS: -1}}})
		if got := b.avatar(t, `{"phoneNumber":79001234567}`); got.status != 400 || got.body != greenapi.ReasonStarting {
			t.Fatalf("got %d %q, want the starting message first", got.status, got.body)
		}
	})
}

func TestEmpties(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		edition  string
		timeouts bool // TimeoutRate 1 as well: empties come first, then timeouts
	}{
		{"current", EditionCurrent, false},
		{"seed", EditionSeed, false},
		{"with timeouts", EditionCurrent, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Seed: 6, Edition: tc.edition, EmptyRate: 1, EmptyTimes: 4}
			if tc.timeouts {
				cfg.TimeoutRate, cfg.TimeoutTimes = 1, 2
			}
			b := setup(t, cfg)
			n := find(t, b.sim, CategoryAvatar, 0)
			tr := b.sim.Truth(n)
			if tr.EmptiesFirst != 4 {
				t.Fatalf("truth %+v", tr)
			}
			var empties []string
			for i := 0; i < 4; i++ {
				got := b.avatar(t, chatBody(n+"@c.us"))
				if got.status != 200 || got.header.Get("Content-Type") != "application/json" || !slices.Contains(emptyBodies[:], got.body) {
					t.Fatalf("call %d: got %d %q, want an empty 200", i, got.status, got.body)
				}
				empties = append(empties, got.body)
			}
			if empties[3] != empties[0] || len(slices.Compact(slices.Sorted(slices.Values(empties[:3])))) != 3 {
				t.Fatalf("empty bodies do not rotate: %q", empties)
			}
			want := ChatStats{Calls: 4, Empties: 4}
			if tc.timeouts {
				for i := 0; i < 2; i++ {
					if got := b.avatar(t, chatBody(n+"@c.us")); !strings.Contains(got.body, greenapi.ReasonAvatarTimeout) {
						t.Fatalf("timeout %d: got %q", i, got.body)
					}
				}
				want.Calls, want.Timeouts = 6, 2
			}
			if got := b.avatar(t, chatBody(n+"@c.us")); got.status != 200 || got.body != wantAvatarBody(tr, tc.edition) {
				t.Fatalf("after the empties: got %d %q", got.status, got.body)
			}
			want.Calls++
			want.Answers++
			// checkWhatsapp never answers empty.
			wantCheck := `{"existsWhatsapp":true}`
			if tc.timeouts {
				wantCheck = "check phone number timeout limit exceeded" // an HTTP 400
			}
			if got := b.check(t, `{"phoneNumber":`+n+`}`); got.body != wantCheck {
				t.Fatalf("checkWhatsapp: %q", got.body)
			}
			want.CheckCalls, want.CheckAnswers, want.CheckTimeouts = 1, 1, 0
			if tc.timeouts {
				want.CheckAnswers, want.CheckTimeouts = 0, 1
			}
			if c := b.sim.Chat(n); c != want {
				t.Fatalf("chat %+v, want %+v", c, want)
			}
			if st := b.sim.Stats().Instances[testID]; st.Empty != 4 {
				t.Fatalf("instance Empty %d, want 4", st.Empty)
			}
			// Bad-request numbers answer at once.
			bad := find(t, b.sim, CategoryBadRequest, 0)
			if tr := b.sim.Truth(bad); tr.EmptiesFirst != 0 || tr.TimeoutsFirst != 0 {
				t.Fatalf("bad request truth %+v", tr)
			}
			if got := b.avatar(t, chatBody(bad+"@c.us")); !strings.Contains(got.body, greenapi.ReasonBadRequestData) {
				t.Fatalf("bad request number: %d %q", got.status, got.body)
			}
		})
	}
}

func TestEmptyShare(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 12, EmptyRate: 0.3, WeightAvatar: 1, WeightBadRequest: 1})
	var empty, bad int
	forms := map[string]int{}
	for i := 0; i < 10000; i++ {
		n := strconv.Itoa(79600000000 + i)
		tr := b.sim.Truth(n)
		switch {
		case tr.BadRequest:
			bad++
			if tr.EmptiesFirst != 0 {
				t.Fatalf("bad request %s answers empty first", n)
			}
		case tr.EmptiesFirst == EmptyTimesDefault:
			empty++
			if i < 900 {
				forms[b.avatar(t, chatBody(n+"@c.us")).body]++
			}
		case tr.EmptiesFirst != 0:
			t.Fatalf("EmptiesFirst %d", tr.EmptiesFirst)
		}
	}
	if share := float64(empty) / float64(10000-bad); share < 0.27 || share > 0.33 {
		t.Fatalf("%d of %d numbers answer empty first, want about 30%%", empty, 10000-bad)
	}
	for _, f := range emptyBodies {
		if forms[f] < 20 {
			t.Fatalf("one empty answer per number: forms %v", forms)
		}
	}
}

// TestEmptiesThroughClient checks that the client and the simulator agree: an empty 200 is a
// transient failure of the call, and a current edition's refusal of phoneNumber is an invalid
// request whose Request the client reports.
func TestEmptiesThroughClient(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 6, EmptyRate: 1, EmptyTimes: 3})
	srv := httptest.NewServer(b.sim)
	t.Cleanup(srv.Close)
	newClient := func(by greenapi.RequestBy) *greenapi.Client {
		c, err := greenapi.New(greenapi.Config{APIURL: srv.URL, IDInstance: testID, Token: testToken, RequestBy: by, HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	n := find(t, b.sim, CategoryAvatar, 0)
	target, err := greenapi.ParseTarget(n)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(greenapi.RequestByChatID)
	for i := 0; i < 3; i++ {
		_, err := c.GetAvatar(context.Background(), target)
		var e *greenapi.Error
		if !errors.As(err, &e) || e.Class != greenapi.ClassTransient || e.Status != 200 || !strings.Contains(e.Reason, "none of the documented fields") || greenapi.IsSystemic(err) {
			t.Fatalf("empty %d: %v", i, err)
		}
	}
	av, err := c.GetAvatar(context.Background(), target)
	want := b.sim.Truth(n).Avatar()
	if err != nil || av.ExistsWhatsapp != nil || av.Available == nil || *av.Available != *want.Available || av.URLAvatar != want.URLAvatar {
		t.Fatalf("after the empties: %+v, %v; want %+v", av, err, want)
	}
	_, err = newClient(greenapi.RequestByPhoneNumber).GetAvatar(context.Background(), target)
	var e *greenapi.Error
	if !errors.As(err, &e) || e.Class != greenapi.ClassInvalid || e.Status != 400 || e.Request != `{"phoneNumber":`+n+`}` || !strings.Contains(e.Reason, "'chatId' is required") {
		t.Fatalf("phoneNumber to the current edition: %#v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, RetryAfter: 1500 * time.Millisecond, Instances: []Instance{{ID: testID, Token: testToken, Burst: 1}}})
	b.avatar(t, chatBody("79001234567@c.us"))
	got := b.avatar(t, chatBody("79001234567@c.us"))
	if got.status != 429 || got.header.Get("Retry-After") != "2" || got.body != "" {
		t.Fatalf("got %d, Retry-After %q, body %q", got.status, got.header.Get("Retry-After"), got.body)
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, Quota: 3, Burst: 1}}})
	want466 := `{"invokeStatus":{"method":"getAvatar","used":3,"total":3,"status":"QUOTE_EXCEEDED","description":"Monthly quota of getAvatar calls on this plan has been used up"}}`
	steps := []struct {
		at   time.Duration
		want int
	}{
		{0, 200}, {0, 429}, {100 * time.Millisecond, 200}, {200 * time.Millisecond, 200}, {200 * time.Millisecond, 429},
		{300 * time.Millisecond, 466}, {400 * time.Millisecond, 466},
	}
	for i, s := range steps {
		b.clock.Set(s.at)
		got := b.avatar(t, chatBody("79001234567@c.us"))
		if got.status != s.want || s.want == 466 && got.body != want466 {
			t.Fatalf("call %d: got %d %q, want %d", i, got.status, got.body, s.want)
		}
	}
	// checkWhatsapp has no quota here.
	b.clock.Set(time.Second)
	if got := b.check(t, `{"phoneNumber":79001234567}`); got.status != 200 {
		t.Fatalf("checkWhatsapp after quota: %d", got.status)
	}
	if st := b.sim.Stats().Instances[testID]; st.QuotaExceeded != 2 || st.TooMany != 2 {
		t.Fatalf("stats %+v", st)
	}
	if c := b.sim.Chat("79001234567"); c.Calls != 7 || c.Answers != 3 {
		t.Fatalf("chat %+v", c)
	}
}

// TestCheckQuota: checkWhatsapp's quota is counted apart from getAvatar's: once spent, only
// checkWhatsapp answers 466, naming itself.
func TestCheckQuota(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, Instances: []Instance{{ID: testID, Token: testToken, CheckQuota: 2, RPS: -1}}})
	for i := range 2 {
		if got := b.check(t, `{"phoneNumber":79001234567}`); got.status != 200 {
			t.Fatalf("checkWhatsapp %d: %d %q", i, got.status, got.body)
		}
	}
	got := b.check(t, `{"phoneNumber":79001234567}`)
	want := `{"invokeStatus":{"method":"checkWhatsapp","used":2,"total":2,"status":"QUOTE_EXCEEDED","description":"Monthly quota of checkWhatsapp calls on this plan has been used up"}}`
	if got.status != 466 || got.body != want {
		t.Fatalf("checkWhatsapp after its quota: %d %q, want 466 %q", got.status, got.body, want)
	}
	if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 200 {
		t.Fatalf("getAvatar after checkWhatsapp's quota: %d %q", got.status, got.body)
	}
}

// TestMissingRate: an account without a photo that getAvatar reports missing (the known bug)
// is there for checkWhatsapp; the current edition, with no existsWhatsapp field, is not affected.
func TestMissingRate(t *testing.T) {
	t.Parallel()
	for _, edition := range []string{EditionSeed, EditionCurrent} {
		b := setup(t, Config{Seed: 1, Edition: edition, MissingRate: 1, Instances: []Instance{{ID: testID, Token: testToken, RPS: -1}}})
		var n string
		for i := 0; n == ""; i++ {
			if c := fmt.Sprintf("7900%07d", i); b.sim.Truth(c).Category == CategoryNoPhoto {
				n = c
			}
		}
		tr := b.sim.Truth(n)
		if tr.ReportedMissing != (edition == EditionSeed) || !tr.ExistsWhatsapp {
			t.Fatalf("%s: truth %+v: want ReportedMissing %v and ExistsWhatsapp", edition, tr, edition == EditionSeed)
		}
		got := b.avatar(t, chatBody(n+"@c.us"))
		if edition == EditionSeed && !strings.Contains(got.body, `"existsWhatsapp":false`) {
			t.Fatalf("getAvatar for %s: %q, want existsWhatsapp false", n, got.body)
		}
		if got := b.check(t, `{"phoneNumber":`+n+`}`); !strings.Contains(got.body, `"existsWhatsapp":true`) {
			t.Fatalf("checkWhatsapp for %s: %q, want existsWhatsapp true", n, got.body)
		}
	}
}

func TestTimeoutsFirst(t *testing.T) {
	t.Parallel()
	for _, edition := range []string{EditionSeed, EditionCurrent} {
		t.Run(edition, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{Seed: 9, Edition: edition, TimeoutRate: 1, TimeoutTimes: 3})
			n := find(t, b.sim, CategoryAvatar, 0)
			tr := b.sim.Truth(n)
			if tr.TimeoutsFirst != 3 {
				t.Fatalf("truth %+v", tr)
			}
			wantTimeout := `{"existsWhatsapp":false,"urlAvatar":"","reason":"get avatar timeout limit exceeded"}`
			if edition == EditionCurrent {
				wantTimeout = `{"urlAvatar":"","available":false,"reason":"get avatar timeout limit exceeded"}`
			}
			body := `{"phoneNumber":` + n + `}` // the same chat as its chatId
			if refusesPhoneNumber(edition) {
				body = chatBody(n + "@c.us")
			}
			for i := 0; i < 5; i++ {
				want := wantTimeout
				if i >= 3 {
					want = wantAvatarBody(tr, edition)
				}
				if got := b.avatar(t, body); got.status != 200 || got.body != want {
					t.Fatalf("call %d: got %d %q, want %q", i, got.status, got.body, want)
				}
			}
			// checkWhatsapp's timeouts are HTTP 400s, as all its errors (docs/greenapi.md).
			for i, want := range []struct {
				status int
				body   string
			}{
				{400, "check phone number timeout limit exceeded"},
				{400, "check phone number timeout limit exceeded"},
				{400, "check phone number timeout limit exceeded"},
				{200, `{"existsWhatsapp":true}`},
			} {
				if got := b.check(t, `{"phoneNumber":`+n+`}`); got.status != want.status || got.body != want.body {
					t.Fatalf("check %d: got %d %q, want %d %q", i, got.status, got.body, want.status, want.body)
				}
			}
			want := ChatStats{Calls: 5, Answers: 2, Timeouts: 3, CheckCalls: 4, CheckAnswers: 1, CheckTimeouts: 3}
			if got := b.sim.Chat(n + "@c.us"); got != want {
				t.Fatalf("chat stats %+v, want %+v", got, want)
			}
			// Bad-request numbers are rejected before WhatsApp is asked, so they never time out.
			if tr := b.sim.Truth(find(t, b.sim, CategoryBadRequest, 0)); tr.TimeoutsFirst != 0 {
				t.Fatalf("bad request truth %+v", tr)
			}
		})
	}
}

func TestTimeoutShare(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 11, TimeoutRate: 0.25, WeightAvatar: 1})
	var n int
	for i := 0; i < 10000; i++ {
		tr := b.sim.Truth(strconv.Itoa(79200000000 + i))
		if tr.TimeoutsFirst == TimeoutTimesDefault {
			n++
		} else if tr.TimeoutsFirst != 0 {
			t.Fatalf("TimeoutsFirst %d", tr.TimeoutsFirst)
		}
	}
	if n < 2300 || n > 2700 {
		t.Fatalf("%d of 10000 numbers time out first, want about 2500", n)
	}
}

func TestServerErrors(t *testing.T) {
	t.Parallel()
	run := func() []int {
		b := setup(t, Config{Seed: 42, ServerErrorRate: 0.2})
		var statuses []int
		for i := 0; i < 2000; i++ {
			statuses = append(statuses, b.avatar(t, chatBody("79001234567@c.us")).status)
		}
		if st := b.sim.Stats().Instances[testID]; st.ServerErrors != 2000-count(statuses, 200) {
			t.Fatalf("ServerErrors %d", st.ServerErrors)
		}
		return statuses
	}
	first := run()
	if !slices.Equal(first, run()) {
		t.Fatal("the same seed gave different faults")
	}
	faults := len(first) - count(first, 200)
	if faults < 340 || faults > 460 {
		t.Fatalf("%d faults of 2000, want about 400", faults)
	}
	for _, code := range []int{500, 502, 503, 504} {
		if count(first, code) < 50 {
			t.Fatalf("status %d seen %d times", code, count(first, code))
		}
	}
	// An injected Rand is used instead of the seed's.
	b := setup(t, Config{Seed: 42, ServerErrorRate: 0.2, Rand: rand.NewPCG(1, 2)})
	var other []int
	for i := 0; i < 2000; i++ {
		other = append(other, b.avatar(t, chatBody("79001234567@c.us")).status)
	}
	if slices.Equal(first, other) {
		t.Fatal("Config.Rand was ignored")
	}
}

func count(xs []int, x int) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

func TestLatency(t *testing.T) {
	t.Parallel()
	t.Run("log-normal", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 2, LatencyMedian: 200 * time.Millisecond, LatencyP99: 2 * time.Second})
		for i := 0; i < 4000; i++ {
			if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 200 {
				t.Fatalf("status %d", got.status)
			}
		}
		d := slices.Clone(b.sleeps.slept)
		slices.Sort(d)
		if len(d) != 4000 {
			t.Fatalf("%d sleeps", len(d))
		}
		med, p99 := d[len(d)/2], d[len(d)*99/100]
		if med < 180*time.Millisecond || med > 220*time.Millisecond || p99 < 1500*time.Millisecond || p99 > 2600*time.Millisecond {
			t.Fatalf("median %v, p99 %v", med, p99)
		}
		if d[len(d)-1] > 20*time.Second {
			t.Fatalf("max %v exceeds the cap", d[len(d)-1])
		}
	})
	t.Run("constant", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 2, LatencyMedian: 300 * time.Millisecond})
		b.avatar(t, chatBody("79001234567@c.us"))
		b.state(t)
		if !slices.Equal(b.sleeps.slept, []time.Duration{300 * time.Millisecond, 300 * time.Millisecond}) {
			t.Fatalf("slept %v", b.sleeps.slept)
		}
	})
	t.Run("not for 429s", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 2, LatencyMedian: time.Second, Instances: []Instance{{ID: testID, Token: testToken, Burst: 1}}})
		b.avatar(t, chatBody("79001234567@c.us"))
		if got := b.avatar(t, chatBody("79001234567@c.us")); got.status != 429 || len(b.sleeps.slept) != 1 {
			t.Fatalf("got %d after %v", got.status, b.sleeps.slept)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 2, LatencyMedian: time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequest("POST", "/waInstance"+testID+"/getAvatar/"+testToken, strings.NewReader(chatBody("79001234567@c.us"))).WithContext(ctx)
		rec := httptest.NewRecorder()
		b.sim.ServeHTTP(rec, req)
		if rec.Body.Len() != 0 || b.sim.Answers("79001234567") != 0 {
			t.Fatalf("a cancelled request was answered %q", rec.Body.String())
		}
	})
}

func TestHang(t *testing.T) {
	t.Parallel()
	t.Run("handler", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 1, HangRate: 1})
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequest("POST", "/waInstance"+testID+"/getAvatar/"+testToken, strings.NewReader(chatBody("79001234567@c.us"))).WithContext(ctx)
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			b.sim.ServeHTTP(rec, req)
			close(done)
		}()
		waitFor(t, func() bool { return b.sim.Stats().Instances[testID].Hung == 1 })
		select {
		case <-done:
			t.Fatal("a hanging request was answered")
		default:
		}
		cancel()
		<-done
		if rec.Body.Len() != 0 || b.sim.Chat("79001234567").Calls != 1 || b.sim.Answers("79001234567") != 0 {
			t.Fatalf("after hanging: body %q, chat %+v", rec.Body.String(), b.sim.Chat("79001234567"))
		}
	})
	t.Run("over HTTP", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Seed: 1, HangRate: 1})
		srv := httptest.NewServer(b.sim)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/waInstance"+testID+"/getAvatar/"+testToken, strings.NewReader(chatBody("79001234567@c.us")))
		errc := make(chan error, 1)
		go func() {
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		waitFor(t, func() bool { return b.sim.Stats().Instances[testID].Hung == 1 })
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("a hanging request was answered")
		}
		srv.Close() // waits for the handler: it must have returned
	})
}

// waitFor spins (yielding, never sleeping) until cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		runtime.Gosched()
	}
}

func TestTruth(t *testing.T) {
	t.Parallel()
	a, same, other := setup(t, Config{Seed: 100}), setup(t, Config{Seed: 100}), setup(t, Config{Seed: 101})
	var differ int
	for i := 0; i < 2000; i++ {
		n := strconv.Itoa(79300000000 + i)
		ta := a.sim.Truth(n)
		if tb := same.sim.Truth(n); ta != tb {
			t.Fatalf("%s: %+v vs %+v with the same seed", n, ta, tb)
		}
		if to := other.sim.Truth(n); ta != to {
			differ++
		}
		if tc := a.sim.Truth(n + "@c.us"); tc != ta || ta.Key != n+"@c.us" {
			t.Fatalf("%s and its chatId differ: %+v vs %+v", n, ta, tc)
		}
	}
	if differ < 1000 {
		t.Fatalf("only %d of 2000 truths differ with another seed", differ)
	}
	if got, want := a.sim.Truth("+7 (900) 123-45-67"), a.sim.Truth("79001234567@c.us"); got != want {
		t.Fatalf("formatted phone %+v, chat %+v", got, want)
	}
	tr := a.sim.Truth(find(t, a.sim, CategoryAvatar, 0))
	wantOE := "&oe=" + strings.ToUpper(strconv.FormatInt(testStart.Add(14*24*time.Hour).Unix(), 16)) + "&"
	if !strings.HasPrefix(tr.URLAvatar, "https://pps.whatsapp.net/v/") || !strings.Contains(tr.URLAvatar, wantOE) {
		t.Fatalf("link %q lacks %q", tr.URLAvatar, wantOE)
	}
	if inv := a.sim.Truth("12345"); inv.Category != CategoryInvalid || !inv.BadRequest || inv.Key != "12345" {
		t.Fatalf("invalid truth %+v", inv)
	}
	// A chatId without its suffix is invalid on the wire, but as a target it is a phone number.
	b := setup(t, Config{Seed: 100})
	if got := b.avatar(t, chatBody("79001234567")); got.body != "bad request data" || b.sim.Stats().Chats["79001234567"].Calls != 1 || b.sim.Calls("79001234567") != 0 {
		t.Fatalf("suffixless chatId: %q, %+v", got.body, b.sim.Stats().Chats)
	}
	groups := map[Category]int{}
	for i := 0; i < 1000; i++ {
		g := a.sim.Truth("120363" + strconv.Itoa(100000000000+i) + "@g.us")
		groups[g.Category]++
		if !g.ExistsWhatsapp || g.Key != "120363"+strconv.Itoa(100000000000+i)+"@g.us" {
			t.Fatalf("group truth %+v", g)
		}
	}
	if len(groups) != 2 || groups[CategoryAvatar] < 600 || groups[CategoryNoPhoto] < 150 {
		t.Fatalf("group categories %v", groups)
	}
}

func TestTruthShares(t *testing.T) {
	t.Parallel()
	weights := map[Category]float64{CategoryAvatar: 4, CategoryNoPhoto: 3, CategoryHidden: 1, CategoryNoWhatsApp: 1.5, CategoryBadRequest: 0.5}
	b := setup(t, Config{Seed: 77, WeightAvatar: 4, WeightNoPhoto: 3, WeightHidden: 1, WeightNoWhatsApp: 1.5, WeightBadRequest: 0.5})
	got := map[Category]int{}
	const n = 10000
	for i := 0; i < n; i++ {
		got[b.sim.Truth(strconv.Itoa(380000000000+i*7919)).Category]++
	}
	for cat, w := range weights {
		share := float64(got[cat]) / n
		if want := w / 10; share < want-0.02 || share > want+0.02 {
			t.Fatalf("%v: share %.3f, want %.3f (%v)", cat, share, want, got)
		}
	}
	// Default weights.
	d := setup(t, Config{Seed: 77})
	bad := 0
	for i := 0; i < n; i++ {
		if d.sim.Truth(strconv.Itoa(79400000000+i)).Category == CategoryBadRequest {
			bad++
		}
	}
	if bad < 120 || bad > 280 {
		t.Fatalf("default bad-request share %d/10000", bad)
	}
}

func TestCountersScripted(t *testing.T) {
	t.Parallel()
	// The seed edition, which takes phoneNumber: step 1 names a chat both ways.
	b := setup(t, Config{Seed: 1, Edition: EditionSeed, Instances: []Instance{{ID: testID, Token: testToken, RPS: 10, Burst: 2}}})
	a, c := find(t, b.sim, CategoryAvatar, 0), find(t, b.sim, CategoryHidden, 0)
	ms := time.Millisecond
	steps := []struct {
		at     time.Duration
		call   func() response
		status int
	}{
		{0, func() response { return b.avatar(t, chatBody(a+"@c.us")) }, 200},
		{0, func() response { return b.avatar(t, `{"phoneNumber":`+a+`}`) }, 200},
		{0, func() response { return b.avatar(t, chatBody(c+"@c.us")) }, 429},
		{100 * ms, func() response { return b.avatar(t, chatBody(c+"@c.us")) }, 200},
		{200 * ms, func() response { return b.check(t, `{"phoneNumber":`+a+`}`) }, 200},
		{300 * ms, func() response { return b.avatar(t, chatBody("123@c.us")) }, 400},
		{400 * ms, func() response {
			return b.do(t, "POST", "/waInstance"+testID+"/getAvatar/wrong", chatBody(a+"@c.us"))
		}, 401},
		{1100 * ms, func() response { return b.avatar(t, chatBody(a+"@c.us")) }, 200},
		{1150 * ms, func() response { return b.avatar(t, chatBody(a+"@c.us")) }, 200},
		{1160 * ms, func() response { return b.avatar(t, chatBody(a+"@c.us")) }, 429},
	}
	for i, s := range steps {
		b.clock.Set(s.at)
		if got := s.call(); got.status != s.status {
			t.Fatalf("step %d: status %d %q, want %d", i, got.status, got.body, s.status)
		}
	}
	st := b.sim.Stats()
	wantInst := InstanceStats{
		Requests: 9, Accepted: 7, TooMany: 2, TooManyAt: []time.Duration{0, 1160 * ms}, Unauthorized: 1, MaxInAnySecond: 6,
		Methods: map[string]MethodStats{
			"getAvatar":     {Requests: 8, Accepted: 6, TooMany: 2},
			"checkWhatsapp": {Requests: 1, Accepted: 1},
		},
	}
	if got := st.Instances[testID]; fmt.Sprint(got) != fmt.Sprint(wantInst) {
		t.Fatalf("instance stats\n got %+v\nwant %+v", got, wantInst)
	}
	if st.Requests != 10 || st.Invalid != 1 {
		t.Fatalf("Requests %d, Invalid %d", st.Requests, st.Invalid)
	}
	wantChats := map[string]ChatStats{
		a + "@c.us": {Calls: 5, Answers: 4, CheckCalls: 1, CheckAnswers: 1},
		c + "@c.us": {Calls: 2, Answers: 1},
		"123@c.us":  {Calls: 1, Answers: 1},
	}
	if fmt.Sprint(st.Chats) != fmt.Sprint(wantChats) {
		t.Fatalf("chats\n got %+v\nwant %+v", st.Chats, wantChats)
	}
	if b.sim.Calls(a) != 5 || b.sim.Answers("+"+a) != 4 || b.sim.Calls("79999999999") != 0 {
		t.Fatal("Calls/Answers helpers disagree with Stats")
	}

	b.sim.Reset()
	if st := b.sim.Stats(); st.Requests != 0 || len(st.Chats) != 0 || st.Instances[testID].Requests != 0 {
		t.Fatalf("after Reset: %+v", st)
	}
	if got := b.avatar(t, chatBody(a+"@c.us")); got.status != 200 {
		t.Fatalf("after Reset the bucket is not full: %d", got.status)
	}
}

func TestMaxInAnySecond(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1})
	// 10 per second for 5 s, then 15 within 0.5 s, then quiet.
	for i := 0; i < 50; i++ {
		b.clock.Set(time.Duration(i) * 100 * time.Millisecond)
		b.avatar(t, chatBody("79001234567@c.us"))
	}
	if got := b.sim.Stats().Instances[testID].MaxInAnySecond; got != 10 {
		t.Fatalf("paced at 10/s: MaxInAnySecond %d", got)
	}
	for i := 0; i < 15; i++ {
		b.clock.Set(10*time.Second + time.Duration(i)*30*time.Millisecond)
		b.avatar(t, chatBody("79001234567@c.us"))
	}
	if got := b.sim.Stats().Instances[testID].MaxInAnySecond; got != 15 {
		t.Fatalf("after a burst: MaxInAnySecond %d", got)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	bad := []Config{
		{Edition: "2020"},
		{ErrorBody: "xml"},
		{WeightAvatar: -1},
		{ServerErrorRate: 1.5},
		{HangRate: -0.1},
		{TimeoutTimes: -1},
		{EmptyRate: 1.5},
		{EmptyRate: -0.1},
		{EmptyTimes: -1},
		{LatencyMedian: -time.Second},
		{Instances: []Instance{{ID: ""}}},
		{Instances: []Instance{{ID: "a/b"}}},
		{Instances: []Instance{{ID: "1"}, {ID: "1"}}},
		{Instances: []Instance{{ID: "1", State: "asleep"}}},
		{Instances: []Instance{{ID: "1", Quota: -1}}},
	}
	for i, cfg := range bad {
		if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), "simulator: ") {
			t.Errorf("config %d (%+v): err %v", i, cfg, err)
		}
	}
	sim, err := New(Config{TimeoutRate: 0.1, EmptyRate: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	got := sim.Config()
	in := got.Instances[0]
	if in.ID != InstanceIDDefault || in.Token != TokenDefault || in.State != StateAuthorized || in.RPS != RPSDefault ||
		in.StateRPS != StateRPSDefault || in.Burst != BurstDefault || got.Edition != EditionDefault ||
		got.ErrorBody != ErrorBodyDefault || got.TimeoutTimes != TimeoutTimesDefault || got.EmptyTimes != EmptyTimesDefault ||
		got.WeightAvatar != WeightAvatarDefault || in.MinGap || in.TooManyAll {
		t.Fatalf("defaults not filled in: %+v", got)
	}
	if sim.Start().IsZero() {
		t.Fatal("Start not set")
	}
}

func TestOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 1, Edition: EditionSeed})
	srv := httptest.NewServer(b.sim)
	defer srv.Close()
	n := find(t, b.sim, CategoryAvatar, 0)
	resp, err := srv.Client().Post(srv.URL+"/waInstance"+testID+"/getAvatar/"+testToken, "application/json", strings.NewReader(`{"phoneNumber": `+n+`}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		ExistsWhatsapp bool   `json:"existsWhatsapp"`
		URLAvatar      string `json:"urlAvatar"`
		Reason         string `json:"reason"`
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || !got.ExistsWhatsapp || got.URLAvatar != b.sim.Truth(n).URLAvatar {
		t.Fatalf("got %d %s (%v)", resp.StatusCode, body, err)
	}
}

func TestAppendJSONText(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "ctl \x01\n\t end", "юникод ✓", `"`, "\x1f"} {
		got := `"` + string(appendJSONText(nil, s)) + `"`
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil || back != s {
			t.Fatalf("%q encoded as %s, decoded %q (%v)", s, got, back, err)
		}
	}
}

// TestNumberLengths: today's editions take numbers of 10 to 15 digits as Green API does
// (Singapore and Norway have 10, Brazil and Argentina 13) and answer each its truth; the seed
// edition answers "bad request data" to every number of other than the 11 or 12 digits it
// documents; nothing of 9 or 16 digits is a number at all.
func TestNumberLengths(t *testing.T) {
	t.Parallel()
	numbers := []string{"6591234567", "4791234567", "79001234567", "380501234567", "5511912345678",
		"5491123456789", "86138123456789", "123456789012345"}
	for _, edition := range []string{EditionSeed, Edition2023, EditionCurrent, EditionCurrentBase64} {
		t.Run(edition, func(t *testing.T) {
			t.Parallel()
			// No share of bad-request numbers: any "bad request data" is the length rule's.
			b := setup(t, Config{Seed: 7, Edition: edition, WeightAvatar: 0.6, WeightNoPhoto: 0.2, WeightNoWhatsApp: 0.2})
			for _, n := range append(numbers, "5511912345678-1581234048@g.us") {
				chat := n
				if !strings.Contains(n, "@") {
					chat += "@c.us"
				}
				tr := b.sim.Truth(chat)
				seedLen := len(n) == 11 || len(n) == 12 || strings.HasPrefix(n, "79001234567-")
				got := b.avatar(t, chatBody(chat))
				switch {
				case edition == EditionSeed && !seedLen:
					if tr.Category != CategoryBadRequest || !tr.BadRequest || got.status != 400 || got.body != "bad request data" {
						t.Errorf("%s: %v, %d %q; want the seed's bad request data", chat, tr.Category, got.status, got.body)
					}
				case tr.BadRequest || tr.Category == CategoryInvalid || got.status != 200 || got.body != wantAvatarBody(tr, edition):
					t.Errorf("%s: %v, %d %q; want its truth answered", chat, tr.Category, got.status, got.body)
				}
			}
			for _, bad := range []string{"659123456@c.us", "1234567890123456@c.us"} {
				if tr := b.sim.Truth(bad); tr.Category != CategoryInvalid {
					t.Errorf("%s: %v, want invalid", bad, tr.Category)
				}
			}
			if inv := b.sim.Stats().Invalid; inv != 0 {
				t.Errorf("%d requests counted invalid, want 0", inv)
			}
		})
	}
}

// TestTodayByDefault: with no Edition set the simulator answers as Green API does today:
// {urlAvatar, available}, and a number without WhatsApp is {"urlAvatar":"","available":true},
// the same answer as an account without a photo (docs/greenapi.md); only checkWhatsapp tells
// them apart. Existence says what a correct client records for each.
func TestTodayByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Seed: 3})
	if got := b.sim.Config().Edition; got != EditionCurrent {
		t.Fatalf("default edition %q, want %q", got, EditionCurrent)
	}
	yes, no := true, false
	tests := []struct {
		cat        Category
		body       string // "" means the link answer
		check      string
		wantExists *bool
		wantSource string
	}{
		{CategoryNoWhatsApp, `{"urlAvatar":"","available":true}`, `{"existsWhatsapp":false}`, &no, SourceCheckWhatsapp},
		{CategoryNoPhoto, `{"urlAvatar":"","available":true}`, `{"existsWhatsapp":true}`, &yes, SourceCheckWhatsapp},
		{CategoryHidden, `{"urlAvatar":"","available":false}`, `{"existsWhatsapp":true}`, &yes, SourceAvatar},
		{CategoryAvatar, "", `{"existsWhatsapp":true}`, &yes, SourceAvatar},
	}
	for _, tt := range tests {
		n := find(t, b.sim, tt.cat, 0)
		tr := b.sim.Truth(n)
		want := tt.body
		if want == "" {
			want = `{"urlAvatar":"` + tr.URLAvatar + `","available":true}`
		}
		if got := b.avatar(t, chatBody(n+"@c.us")); got.status != 200 || got.body != want {
			t.Errorf("%v: getAvatar %d %q, want %q", tt.cat, got.status, got.body, want)
		}
		if got := b.check(t, `{"phoneNumber":`+n+`}`); got.status != 200 || got.body != tt.check {
			t.Errorf("%v: checkWhatsapp %d %q, want %q", tt.cat, got.status, got.body, tt.check)
		}
		if exists, source := tr.Existence(false); exists == nil || *exists != *tt.wantExists || source != tt.wantSource {
			t.Errorf("%v: Existence = %v %q, want %v %q", tt.cat, exists, source, *tt.wantExists, tt.wantSource)
		}
	}
	// The seed edition is still there to choose.
	seed := setup(t, Config{Seed: 3, Edition: EditionSeed})
	n := find(t, seed.sim, CategoryNoWhatsApp, 0)
	if got := seed.avatar(t, chatBody(n+"@c.us")); got.body != `{"existsWhatsapp":false,"urlAvatar":"","reason":""}` {
		t.Errorf("seed edition, no WhatsApp: %q", got.body)
	}
	if exists, source := seed.sim.Truth(n).Existence(false); exists == nil || *exists || source != SourceCheckWhatsapp {
		t.Errorf("seed edition, no WhatsApp: Existence = %v %q, want false checkWhatsapp", exists, source)
	}
	if exists, source := seed.sim.Truth(find(t, seed.sim, CategoryNoPhoto, 0)).Existence(false); exists == nil || !*exists || source != SourceGetAvatar {
		t.Errorf("seed edition, no photo: Existence = %v %q, want true getAvatar", exists, source)
	}
}

// TestOutage: between OutageAfter and OutageAfter+OutageFor every API request gets no answer, its
// connection closed (a network error to the client, systemic, no status); before and after, the
// same requests are answered. Stats.Refused counts the refused ones.
func TestOutage(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: testStart}
	sim, err := New(Config{Now: clock.Now, Start: testStart, OutageAfter: time.Minute, OutageFor: 30 * time.Second,
		Instances: []Instance{{ID: testID, Token: testToken, RPS: -1, StateRPS: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c, err := greenapi.New(greenapi.Config{APIURL: srv.URL, IDInstance: testID, Token: testToken, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := greenapi.ParseTarget("79001234567")
	for _, tt := range []struct {
		at      time.Duration
		refused bool
	}{
		{0, false}, {time.Minute - time.Nanosecond, false}, {time.Minute, true}, {80 * time.Second, true},
		{90*time.Second - time.Nanosecond, true}, {90 * time.Second, false}, {time.Hour, false},
	} {
		clock.Set(tt.at)
		_, err := c.GetAvatar(context.Background(), target)
		var e *greenapi.Error
		switch {
		case tt.refused && !(errors.As(err, &e) && e.Status == 0 && greenapi.IsSystemic(err)):
			t.Errorf("at %v: %v, want a network error (systemic, no status)", tt.at, err)
		case !tt.refused && err != nil:
			t.Errorf("at %v: %v, want an answer", tt.at, err)
		}
		if _, err := c.GetStateInstance(context.Background()); (err != nil) != tt.refused {
			t.Errorf("at %v: getStateInstance %v, refused %v", tt.at, err, tt.refused)
		}
	}
	if got := sim.Stats().Refused; got != 6 {
		t.Errorf("Refused = %d, want 6 (3 instants, 2 methods)", got)
	}
	if _, err := New(Config{OutageFor: -time.Second}); err == nil {
		t.Error("a negative outage is accepted")
	}
}
