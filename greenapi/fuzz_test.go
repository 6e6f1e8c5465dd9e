package greenapi

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseTarget checks that ParseTarget never panics, that a valid target's ChatID parses
// back to the same chat, and that phone targets are 10-15 ASCII digits.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"79001234567", "380123456789", "+7 (900) 123-45-67", "79001234567@c.us",
		"79001234567-1581234048@g.us", "120363043968066561@g.us", "00000000000@c.us",
		"7900123456", "7900123456789", "1234567890123456", "+7\u00a0900\u2013123", "٣٩٠٠١٢٣٤٥٦٧", " 79001234567@c.us", "@c.us", "@g.us", "",
		"79001234567-1581234048@c.us", "79001234567@C.US", "+380 12 345 67 89",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTarget) || !tg.IsZero() {
				t.Fatalf("ParseTarget(%q) = %+v, %v", s, tg, err)
			}
			return
		}
		if tg.IsZero() {
			t.Fatalf("ParseTarget(%q) returned a zero target without error", s)
		}
		back, err := ParseTarget(tg.ChatID())
		if err != nil {
			t.Fatalf("ChatID %q of %q does not parse: %v", tg.ChatID(), s, err)
		}
		if back.ChatID() != tg.ChatID() {
			t.Fatalf("ChatID %q re-parses to ChatID %q", tg.ChatID(), back.ChatID())
		}
		n1, ok1 := tg.PhoneNumber()
		n2, ok2 := back.PhoneNumber()
		if n1 != n2 || ok1 != ok2 {
			t.Fatalf("PhoneNumber %d,%v re-parses to %d,%v", n1, ok1, n2, ok2)
		}
		switch tg.Kind() {
		case KindPhone:
			v := tg.String()
			if len(v) < MinDigits || len(v) > MaxDigits || digitRun(v) != len(v) {
				t.Fatalf("phone target %q from %q is not 10-15 ASCII digits", v, s)
			}
			if back.Kind() != KindChat {
				t.Fatalf("phone ChatID %q parses to %v", tg.ChatID(), back.Kind())
			}
			if again, err := ParseTarget(v); err != nil || again != tg {
				t.Fatalf("phone %q re-parses to %+v, %v", v, again, err)
			}
			if !ok1 {
				t.Fatalf("phone target %q has no PhoneNumber", v)
			}
		case KindChat, KindGroup:
			if back != tg || tg.String() != s {
				t.Fatalf("chatId %q re-parses to %+v", s, back)
			}
		default:
			t.Fatalf("ParseTarget(%q) kind %v", s, tg.Kind())
		}
	})
}

// FuzzParseAvatarResponse feeds arbitrary responses to the GetAvatar response parser and
// classifier: it must never panic, must return an Avatar only for a 200, and otherwise a
// *Error with a known Class whose text never holds the token. "TOKEN" in a body stands for
// the real token, so the fuzzer easily makes bodies that echo it.
func FuzzParseAvatarResponse(f *testing.F) {
	seeds := []struct {
		status     int
		body       string
		retryAfter string
	}{
		{200, `{"existsWhatsapp": true, "urlAvatar": "https://pps.whatsapp.net/v/link/to/the/image", "reason": ""}`, ""},
		{200, `{"existsWhatsapp":false,"urlAvatar":"","reason":"bad request data"}`, ""},
		{200, `{"existsWhatsapp":false,"urlAvatar":"","reason":"get avatar timeout limit exceeded"}`, ""},
		{200, `{"urlAvatar":"https://pps.whatsapp.net/v/t61.24694-24/4273448_n.jpg?oe=66041D5F","available":true}`, ""},
		{200, `{"urlAvatar":"","available":false,"base64Avatar":"/9j/4AAQ"}`, ""},
		{200, `{"reason":"TOKEN"}`, ""},
		{200, `{"existsWhatsapp":"TOKEN"}`, ""},
		{200, ``, ""},
		{400, `instance in starting process try later`, ""},
		{400, `instance is starting or not authorized`, ""},
		{400, `instance account not authorized`, ""},
		{400, `Instance account is expired`, ""},
		{400, `Instance is deleted`, ""},
		{400, `bad request data`, ""},
		{400, `{"statusCode":400,"timestamp":"2023-09-13T22:29:37.459Z","path":"/waInstance1101000001/getAvatar/TOKEN","message":"Validation failed. Details: 'chatId' is required"}`, ""},
		{400, `Unexpected token } in JSON at position 15`, ""},
		{400, `{"message":"TOKEN"}`, ""},
		{401, `Unauthorized TOKEN`, ""},
		{403, ``, ""},
		{404, `Cannot POST /waInstance1101000001/getAvatar/TOKEN`, ""},
		{429, ``, "7"},
		{429, ``, "Wed, 27 Mar 2024 12:01:30 GMT"},
		{466, `{"invokeStatus":{"method":"getAvatar","used":100,"total":100,"status":"QUOTE_EXCEEDED","description":"TOKEN"}}`, ""},
		{499, ``, ""},
		{500, `Internal Server Error`, ""},
		{502, `<html>Bad Gateway</html>`, ""},
		{503, ``, "120"},
		{504, ``, ""},
		{-1, `{}`, "-1"},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body), s.retryAfter)
	}
	c, err := New(Config{APIURL: "https://api.green-api.com", IDInstance: testID, Token: testToken,
		HTTPClient: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
			panic("the parser must not do I/O")
		})}})
	if err != nil {
		f.Fatal(err)
	}
	c.now = func() time.Time { return time.Date(2024, 3, 27, 12, 0, 0, 0, time.UTC) }
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		body = bytes.ReplaceAll(body, []byte("TOKEN"), []byte(testToken))
		header := http.Header{}
		header.Set("Retry-After", retryAfter)
		av, err := c.parseAvatar(status, body, header)
		if err == nil {
			if status != http.StatusOK {
				t.Fatalf("status %d parsed as success %+v", status, av)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v (%T) is not a *Error", err, err)
		}
		if av != (Avatar{}) {
			t.Fatalf("Avatar %+v returned with an error", av)
		}
		if e.Class < ClassTransient || e.Class > ClassUnusable || e.Class.String() == "unknown" {
			t.Fatalf("unknown class %d for status %d body %q", e.Class, status, body)
		}
		if e.Status != status || e.URL != testURL || e.Instance != testID {
			t.Fatalf("Status/URL/Instance = %d/%q/%q", e.Status, e.URL, e.Instance)
		}
		if strings.Contains(e.Reason, testToken) || strings.Contains(err.Error(), testToken) {
			t.Fatalf("token leaked: %q", err)
		}
		if !utf8.ValidString(e.Reason) || utf8.RuneCountInString(e.Reason) > maxReason {
			t.Fatalf("Reason not clean: %q", e.Reason)
		}
		if e.RetryAfter < 0 || e.RetryAfter > maxRetryAfter {
			t.Fatalf("RetryAfter %v out of range", e.RetryAfter)
		}
		if status == http.StatusTooManyRequests && e.Class != ClassRateLimited {
			t.Fatalf("429 classified %v", e.Class)
		}
	})
}
