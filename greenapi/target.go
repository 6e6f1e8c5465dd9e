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
	// KindPhone is a phone number of 10 to 15 digits in international format, without '+'.
	KindPhone Kind = iota + 1
	// KindChat is a personal chat, "<10-15 digits>@c.us".
	KindChat
	// KindGroup is a group chat, "<10-15 digits>-<6-12 digits>@g.us" or "<15-20 digits>@g.us".
	KindGroup
)

// Lengths of a phone number in international format, in digits: E.164 allows at most 15, and
// the shortest numbers Green API serves have 10 (Singapore 65 + 8, Norway 47 + 8). The seed
// (2020) documented only 11 and 12 (SeedMinDigits, SeedMaxDigits), but Brazil and Argentina have
// 13: a number of any length in between is sent, and the API's answer is the row's.
const (
	MinDigits     = 10
	MaxDigits     = 15
	SeedMinDigits = 11
	SeedMaxDigits = 12
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
// make one, so a Target that exists has a form the API accepts: what cannot be a phone number or
// chatId never costs a call.
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

// SeedLength reports whether the target's phone digits (a phone number's, a personal chat's or
// an old group's owner's) are 11 or 12, the only lengths the seed (2020) documents; a newer group
// has no owner and reports true. An API may refuse another length as "bad request data": that is
// the number's answer, never a sign that the request's form is wrong.
func (t Target) SeedLength() bool {
	var digits string
	switch t.kind {
	case KindPhone:
		digits = t.value
	case KindChat:
		digits = strings.TrimSuffix(t.value, "@c.us")
	case KindGroup:
		owner, _, old := strings.Cut(strings.TrimSuffix(t.value, "@g.us"), "-")
		if !old {
			return true
		}
		digits = owner
	default:
		return false
	}
	return len(digits) >= SeedMinDigits && len(digits) <= SeedMaxDigits
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
	return fmt.Sprintf("%q is not a valid phone number or chatId: %s", e.Input, e.Why)
}

// Unwrap makes errors.Is(err, ErrInvalidTarget) true.
func (e *InvalidTargetError) Unwrap() error { return ErrInvalidTarget }

const (
	phoneHint = "a phone number is 10 to 15 digits in international format, country code first, e.g. 79001234567"
	chatHint  = "a chatId is 79001234567@c.us, 79001234567-1581234048@g.us or 120363043968066561@g.us"
)

// IsSeparator reports whether r is a character people write between a phone number's digits:
// '+', spaces (also the no-break spaces U+00A0 and U+202F that word processors and spreadsheets
// put in numbers), tabs, dots, parentheses and dashes (also the Unicode dashes U+2010-U+2015 and
// the minus sign U+2212). Nothing else is, so a number with a letter or a foreign digit in it is
// refused, never guessed at.
func IsSeparator(r rune) bool {
	switch r {
	case '+', ' ', '\t', '-', '.', '(', ')', '\u00a0', '\u202f', '\u2212':
		return true
	}
	return r >= '\u2010' && r <= '\u2015'
}

// ParseTarget takes a phone number or a chatId: anything with an '@' is a chatId, taken as
// stored; anything else is a phone number, from which formatting characters are stripped.
func ParseTarget(s string) (Target, error) {
	if strings.IndexByte(s, '@') >= 0 {
		return ParseChatID(s)
	}
	return ParsePhone(s)
}

// ParsePhone strips the separators people write numbers with (see IsSeparator) and requires
// MinDigits to MaxDigits ASCII digits to remain.
func ParsePhone(s string) (Target, error) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case IsSeparator(r):
		default:
			return Target{}, &InvalidTargetError{Input: s, Why: fmt.Sprintf("unexpected character %s; %s", QuoteRune(r), phoneHint)}
		}
	}
	digits := b.String()
	if n := len(digits); n < MinDigits || n > MaxDigits {
		return Target{}, &InvalidTargetError{Input: s, Why: fmt.Sprintf("%d digits; %s", n, phoneHint)}
	}
	return Target{kind: KindPhone, value: digits}, nil
}

// ParseChatID validates a chatId exactly as stored, without trimming: a personal chat
// "<10-15 digits>@c.us", a group "<10-15 digits>-<6-12 digits>@g.us" or a newer group
// "<15-20 digits>@g.us".
func ParseChatID(s string) (Target, error) {
	if local, ok := strings.CutSuffix(s, "@c.us"); ok {
		if n := digitRun(local); n == len(local) && n >= MinDigits && n <= MaxDigits {
			return Target{kind: KindChat, value: s}, nil
		}
		return Target{}, &InvalidTargetError{Input: s, Why: "a personal chatId is 10 to 15 digits then @c.us; " + chatHint}
	}
	if local, ok := strings.CutSuffix(s, "@g.us"); ok {
		if owner, stamp, dash := strings.Cut(local, "-"); dash {
			no, ns := digitRun(owner), digitRun(stamp)
			if no == len(owner) && ns == len(stamp) && no >= MinDigits && no <= MaxDigits && ns >= 6 && ns <= 12 {
				return Target{kind: KindGroup, value: s}, nil
			}
		} else if n := digitRun(local); n == len(local) && n >= 15 && n <= 20 {
			return Target{kind: KindGroup, value: s}, nil
		}
		return Target{}, &InvalidTargetError{Input: s, Why: "malformed group chatId; " + chatHint}
	}
	return Target{}, &InvalidTargetError{Input: s, Why: "a chatId ends in @c.us or @g.us; " + chatHint}
}

// QuoteRune shows one character of an input in a message: quoted as it is, with its code point
// when it is not plain ASCII, so a no-break space or a foreign digit can be told from what it
// looks like ('\u00a0' U+00A0, '٣' U+0663).
func QuoteRune(r rune) string {
	if r < 0x80 {
		return strconv.QuoteRune(r)
	}
	return fmt.Sprintf("%s (U+%04X)", strconv.QuoteRune(r), r)
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
