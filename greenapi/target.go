package greenapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind tells what a Target names, because the wire form differs: a phone number may travel as
// a chatId or as an integer phoneNumber, a chatId always travels as given.
type Kind uint8

const (
	// KindPhone is a phone number of 11 or 12 digits in international format, without '+'.
	KindPhone Kind = iota + 1
	// KindChat is a personal chat, "<11-12 digits>@c.us".
	KindChat
	// KindGroup is a group chat, "<11-12 digits>-<6-12 digits>@g.us" or "<15-20 digits>@g.us".
	KindGroup
)

// String names the kind for logs and errors.
func (k Kind) String() string {
	switch k {
	case KindPhone:
		return "phone"
	case KindChat:
		return "chat"
	case KindGroup:
		return "group"
	}
	return "unknown"
}

// Target is a validated phone number or chatId. Only ParsePhone, ParseChatID and ParseTarget
// make one, so a Target that exists is one the API accepts: invalid input never costs a call.
type Target struct {
	kind Kind
	// value is the phone number's digits, or the chatId exactly as given.
	value string
}

// Kind tells whether the target is a phone number, a personal chat or a group.
func (t Target) Kind() Kind { return t.kind }

// String is the normalized phone digits or the chatId as given.
func (t Target) String() string { return t.value }

// IsZero reports whether t was never set by a parser.
func (t Target) IsZero() bool { return t.kind == 0 }

// ChatID is the chatId the API is sent for this target: the chatId itself, or
// "<digits>@c.us" for a phone number (which every API edition accepts).
func (t Target) ChatID() string {
	if t.kind == KindPhone {
		return t.value + "@c.us"
	}
	return t.value
}

// PhoneNumber is the integer the API's phoneNumber field takes, and whether the target has
// one: personal chats do (their digits), groups do not.
func (t Target) PhoneNumber() (int64, bool) {
	var digits string
	switch t.kind {
	case KindPhone:
		digits = t.value
	case KindChat:
		digits = strings.TrimSuffix(t.value, "@c.us")
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil
}

// ErrInvalidTarget is the cause of every validation error, so callers can tell "this row is
// malformed" from any other failure with errors.Is.
var ErrInvalidTarget = errors.New("invalid phone number or chatId")

// InvalidTargetError says which input failed validation and how to write it correctly.
type InvalidTargetError struct {
	Input string
	Why   string
}

func (e *InvalidTargetError) Error() string {
	return fmt.Sprintf("greenapi: %q is not a valid phone number or chatId: %s", e.Input, e.Why)
}

// Unwrap makes errors.Is(err, ErrInvalidTarget) true.
func (e *InvalidTargetError) Unwrap() error { return ErrInvalidTarget }

const (
	phoneHint = "a phone number is 11 or 12 digits in international format, e.g. 79001234567"
	chatHint  = "a chatId is 79001234567@c.us, 79001234567-1581234048@g.us or 120363043968066561@g.us"
)

// ParseTarget takes a phone number or a chatId: anything with an '@' is a chatId, taken as
// stored; anything else is a phone number, from which formatting characters are stripped.
func ParseTarget(s string) (Target, error) {
	if strings.IndexByte(s, '@') >= 0 {
		return ParseChatID(s)
	}
	return ParsePhone(s)
}

// ParsePhone strips the formatting people write numbers with ('+', spaces, tabs, dashes, dots,
// parentheses) and requires 11 or 12 ASCII digits to remain.
func ParsePhone(s string) (Target, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == '+' || c == ' ' || c == '\t' || c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return Target{}, &InvalidTargetError{Input: s, Why: fmt.Sprintf("unexpected character %q; %s", rune(c), phoneHint)}
		}
	}
	digits := b.String()
	if n := len(digits); n != 11 && n != 12 {
		return Target{}, &InvalidTargetError{Input: s, Why: fmt.Sprintf("%d digits; %s", n, phoneHint)}
	}
	return Target{kind: KindPhone, value: digits}, nil
}

// ParseChatID validates a chatId exactly as stored, without trimming: a personal chat
// "<11-12 digits>@c.us", a group "<11-12 digits>-<6-12 digits>@g.us" or a newer group
// "<15-20 digits>@g.us".
func ParseChatID(s string) (Target, error) {
	if local, ok := strings.CutSuffix(s, "@c.us"); ok {
		if n := digitRun(local); n == len(local) && (n == 11 || n == 12) {
			return Target{kind: KindChat, value: s}, nil
		}
		return Target{}, &InvalidTargetError{Input: s, Why: "a personal chatId is 11 or 12 digits then @c.us; " + chatHint}
	}
	if local, ok := strings.CutSuffix(s, "@g.us"); ok {
		if owner, stamp, dash := strings.Cut(local, "-"); dash {
			no, ns := digitRun(owner), digitRun(stamp)
			if no == len(owner) && ns == len(stamp) && (no == 11 || no == 12) && ns >= 6 && ns <= 12 {
				return Target{kind: KindGroup, value: s}, nil
			}
		} else if n := digitRun(local); n == len(local) && n >= 15 && n <= 20 {
			return Target{kind: KindGroup, value: s}, nil
		}
		return Target{}, &InvalidTargetError{Input: s, Why: "malformed group chatId; " + chatHint}
	}
	return Target{}, &InvalidTargetError{Input: s, Why: "a chatId ends in @c.us or @g.us; " + chatHint}
}

// digitRun counts the ASCII digits at the start of s.
func digitRun(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return i
		}
	}
	return len(s)
}
