package greenapi

import (
	"errors"
	"strings"
	"testing"
)

// checkParse runs parse on in and checks the outcome: the kind and value for a valid input, or
// an *InvalidTargetError naming the input and wrapping ErrInvalidTarget.
func checkParse(t *testing.T, parse func(string) (Target, error), in string, wantKind Kind, wantValue string) {
	t.Helper()
	got, err := parse(in)
	if wantKind == 0 {
		var ie *InvalidTargetError
		if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidTarget) {
			t.Fatalf("parse(%q) = %+v, %v; want *InvalidTargetError wrapping ErrInvalidTarget", in, got, err)
		}
		if ie.Input != in || ie.Why == "" {
			t.Fatalf("parse(%q): InvalidTargetError{Input %q, Why %q}", in, ie.Input, ie.Why)
		}
		if !got.IsZero() {
			t.Fatalf("parse(%q) returned non-zero %+v with an error", in, got)
		}
		return
	}
	if err != nil {
		t.Fatalf("parse(%q): %v", in, err)
	}
	if got.Kind() != wantKind || got.String() != wantValue || got.IsZero() {
		t.Fatalf("parse(%q) = %v %q, want %v %q", in, got.Kind(), got.String(), wantKind, wantValue)
	}
}

func TestParsePhone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		wantValid bool
		want      string
	}{
		{"79001234567", true, "79001234567"},
		{"380123456789", true, "380123456789"},
		{"+7 (900) 123-45-67", true, "79001234567"},
		{"+380 12 345 67 89", true, "380123456789"},
		{"7.900.123.45.67", true, "79001234567"},
		{"\t79001234567 ", true, "79001234567"},
		{"+-()79001234567()-+", true, "79001234567"},
		// Every length E.164 allows from the shortest Green API serves: 10 to 15 digits.
		{"6591234567", true, "6591234567"},            // Singapore, 10 digits
		{"+47 912 34 567", true, "4791234567"},        // Norway, 10 digits
		{"+55 11 91234-5678", true, "5511912345678"},  // Brazil, 13 digits
		{"+54 9 11 2345-6789", true, "5491123456789"}, // Argentina, 13 digits
		{"+52 1 55 1234 5678", true, "5215512345678"}, // Mexico's old mobile form, 13 digits
		{"86138123456789", true, "86138123456789"},    // 14 digits
		{"123456789012345", true, "123456789012345"},  // 15 digits
		{"659123456", false, ""},                      // 9 digits
		{"1234567890123456", false, ""},               // 16 digits
		// Unicode separators: no-break spaces, dashes and the minus sign.
		{"+7\u00a0900\u00a0123\u00a045\u00a067", true, "79001234567"},
		{"+7\u202f900\u202f1234567", true, "79001234567"},
		{"+7 900 123\u201045\u201167", true, "79001234567"},
		{"+7 900 123\u201245\u201367", true, "79001234567"},
		{"+7 900 123\u201445\u201567", true, "79001234567"},
		{"+7 900 123\u221245\u221267", true, "79001234567"},
		{"+7 900 123\u201645 67", false, ""}, // a double vertical line is no dash
		{"+7 900 123\u200b45 67", false, ""}, // zero-width space
		{"", false, ""},
		{"+", false, ""},
		{"   ", false, ""},
		{"+7 900 123 45", false, ""},            // 9 digits
		{"+7 900 123 45 6", true, "7900123456"}, // 10 digits: a shape any country may have; the API judges it
		{"٣٩٠٠١٢٣٤٥٦٧", false, ""},              // Arabic-Indic digits
		{"7900123456٣", false, ""},              // one of them
		{"７９００１２３４５６７", false, ""},              // fullwidth digits
		{"7900123456a", false, ""},
		{"79001234567\n", false, ""},
		{"79001234567/", false, ""},
		{"79001234567@c.us", false, ""}, // ParsePhone does not take chatIds
		{"7900123\x004567", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			kind := Kind(0)
			if tt.wantValid {
				kind = KindPhone
			}
			checkParse(t, ParsePhone, tt.in, kind, tt.want)
		})
	}
}

func TestParseChatID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Kind // 0: invalid
	}{
		{"79001234567@c.us", KindChat},
		{"380123456789@c.us", KindChat},
		{"79001234567-1581234048@g.us", KindGroup},
		{"380123456789-158123@g.us", KindGroup},        // 6-digit stamp
		{"79001234567-158123404812@g.us", KindGroup},   // 12-digit stamp
		{"120363043968066561@g.us", KindGroup},         // newer group, 18 digits
		{"120363043968066@g.us", KindGroup},            // 15 digits
		{"12036304396806656112@g.us", KindGroup},       // 20 digits
		{"12036304396806@g.us", 0},                     // 14 digits
		{"120363043968066561123@g.us", 0},              // 21 digits
		{"79001234567-15812@g.us", 0},                  // 5-digit stamp
		{"79001234567-1581234048123@g.us", 0},          // 13-digit stamp
		{"7900123456-1581234048@g.us", KindGroup},      // 10-digit owner
		{"790012345-1581234048@g.us", 0},               // 9-digit owner
		{"5511912345678-1581234048@g.us", KindGroup},   // 13-digit owner (Brazil)
		{"123456789012345-1581234048@g.us", KindGroup}, // 15-digit owner
		{"1234567890123456-1581234048@g.us", 0},        // 16-digit owner
		{"-1581234048@g.us", 0},                        // no owner
		{"79001234567-@g.us", 0},                       // no stamp
		{"79001234567-1581-234048@g.us", 0},            // two dashes
		{"79001234567@g.us", 0},                        // personal digits as a group
		{"79001234567-1581234048@c.us", 0},             // group digits as a personal chat
		{"120363043968066561@c.us", 0},                 // newer group digits as a personal chat
		{"6591234567@c.us", KindChat},                  // 10 digits (Singapore)
		{"4791234567@c.us", KindChat},                  // 10 digits (Norway)
		{"5511912345678@c.us", KindChat},               // 13 digits (Brazil)
		{"5491123456789@c.us", KindChat},               // 13 digits (Argentina)
		{"86138123456789@c.us", KindChat},              // 14 digits
		{"123456789012345@c.us", KindChat},             // 15 digits
		{"659123456@c.us", 0},                          // 9 digits
		{"1234567890123456@c.us", 0},                   // 16 digits
		{" 79001234567@c.us", 0},                       // no trimming
		{"79001234567@c.us ", 0},                       // no trimming
		{"79001234567@c.us\n", 0},                      // no trimming
		{"+79001234567@c.us", 0},                       // no formatting in chatIds
		{"7 900 123 45 67@c.us", 0},                    // no formatting in chatIds
		{"79001234567@C.US", 0},                        // suffix is case-sensitive
		{"79001234567@s.whatsapp.net", 0},              // other domain
		{"79001234567@c.us@c.us", 0},                   // double suffix
		{"@c.us", 0},                                   // empty
		{"@g.us", 0},                                   // empty
		{"", 0},                                        // empty
		{"٣9001234567@c.us", 0},                        // non-ASCII digit
		{"7900123456a@c.us", 0},                        // letter
		{"79001234567", 0},                             // a phone is not a chatId
		{"120363043968066561@g.us.", 0},                // trailing dot
		{"79001234567-1581234048@g.us\x00", 0},         // NUL
		{"79001234567-158123404８@g.us", 0},             // fullwidth digit
		{"79001234567-1581234048-1581234048@g.us", 0},  // three parts
		{"1203630439680665611203630439680665@g.us", 0}, // far too long
		{"79001234567--1581234048@g.us", 0},            // double dash
		{"0000000000000000@g.us", KindGroup},           // 16 zeros: shape only
		{"00000000000@c.us", KindChat},                 // the docs' placeholder shape
		{"79001234567-0000000000@g.us", KindGroup},     // the docs' placeholder shape
		{"79001234567 -1581234048@g.us", 0},            // space
		{"79001234567-1581234048 @g.us", 0},            // space
		{"79001234567-1581234048@g.us@g.us", 0},        // double suffix
		{"79001234567@c.usx", 0},                       // junk after suffix
		{"79001234567-1581234048@g.usx", 0},            // junk after suffix
		{"x79001234567@c.us", 0},                       // junk before
		{"79001234567@@c.us", 0},                       // double at
		{"79001234567@c.us-1581234048@g.us", 0},        // mixed
		{"1581234048-79001234567@g.us", KindGroup},     // 10-digit owner, 11-digit stamp: the shape fits
		{"1581234048-7900123456789@g.us", 0},           // 13-digit stamp
		{"380123456789-1581234048@g.us", KindGroup},    // 12-digit owner
		{"3801234567890-1581234048@g.us", KindGroup},   // 13-digit owner
		{"79001234567-1581234048@G.US", 0},             // suffix is case-sensitive
		{"79001234567-1581234048@g.u", 0},              // truncated suffix
		{"79001234567-1581234048g.us", 0},              // no at
		{"120363043968066561-1581234048@g.us", 0},      // 18-digit owner
		{"79001234567-1581234048\u200b@g.us", 0},       // zero-width space
		{"79001234567\u00a0@c.us", 0},                  // no-break space
		{"７９００１２３４５６７@c.us", 0},                        // fullwidth digits
		{"79001234567-1581234048@g.us\t", 0},           // no trimming
		{"\t120363043968066561@g.us", 0},               // no trimming
		{"12036304396806656a@g.us", 0},                 // letter
		{"120363043968066561-1@g.us", 0},               // 1-digit stamp
		{"79001234567-1581234048@c.us\x00", 0},         // NUL
		{"79001234567@c.us\x00", 0},                    // NUL
		{"79001234567@g.us-1581234048", 0},             // misplaced
		{"79001234567@c.us.", 0},                       // trailing dot
		{"c.us", 0},                                    // no at
		{"g.us", 0},                                    // no at
		{"79001234567@", 0},                            // no domain
		{"@", 0},                                       // nothing
		{"79001234567-1581234048", 0},                  // no domain
		{"79001234567-1581234048@", 0},                 // no domain
		{"79001234567-1581234048@g.us 79001234567", 0}, // two ids
		{"79001234567@c.us,79001234567@c.us", 0},       // two ids
		{"79001234567@c.us;79001234567@c.us", 0},       // two ids
		{"79001234567@c.us\n79001234567@c.us", 0},      // two ids
		{"79001234567-1581234048@g.us\r\n", 0},         // CRLF
		{"790012345670@c.us", KindChat},                // 12 digits
		{"79001234567-158123404@g.us", KindGroup},      // 9-digit stamp
		{"790012345678-1581234048@g.us", KindGroup},    // 12-digit owner
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			checkParse(t, ParseChatID, tt.in, tt.want, tt.in)
		})
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		wantKind  Kind
		wantValue string
	}{
		{"79001234567", KindPhone, "79001234567"},
		{"+7 (900) 123-45-67", KindPhone, "79001234567"},
		{"380123456789", KindPhone, "380123456789"},
		{"79001234567@c.us", KindChat, "79001234567@c.us"},
		{"79001234567-1581234048@g.us", KindGroup, "79001234567-1581234048@g.us"},
		{"120363043968066561@g.us", KindGroup, "120363043968066561@g.us"},
		{" 79001234567@c.us", 0, ""},     // a chatId is not trimmed
		{"+7 900 123 45 67@c.us", 0, ""}, // an '@' makes it a chatId: no formatting
		{"79001234567-1581234048", 0, ""},
		{"120363043968066561", 0, ""}, // group digits without @g.us are too many for a phone
		{"6591234567", KindPhone, "6591234567"},
		{"5511912345678", KindPhone, "5511912345678"},
		{"5511912345678@c.us", KindChat, "5511912345678@c.us"},
		{"4791234567@c.us", KindChat, "4791234567@c.us"},
		{"123456789012345", KindPhone, "123456789012345"},
		{"1234567890123456", 0, ""},
		{"659123456", 0, ""},
		{"٣٩٠٠١٢٣٤٥٦٧", 0, ""},
		{"abc", 0, ""},
		{"", 0, ""},
		{"790012345", 0, ""},
		{"7900123456789012", 0, ""},
		{"79001234567@", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			checkParse(t, ParseTarget, tt.in, tt.wantKind, tt.wantValue)
		})
	}
}

func TestTargetAccessors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		wantKind  string
		wantChat  string
		wantPhone int64
		wantHas   bool
	}{
		{"79001234567", "phone", "79001234567@c.us", 79001234567, true},
		{"+380 12 345 67 89", "phone", "380123456789@c.us", 380123456789, true},
		{"79001234567@c.us", "chat", "79001234567@c.us", 79001234567, true},
		{"380123456789@c.us", "chat", "380123456789@c.us", 380123456789, true},
		{"6591234567", "phone", "6591234567@c.us", 6591234567, true},
		{"5511912345678@c.us", "chat", "5511912345678@c.us", 5511912345678, true},
		{"123456789012345", "phone", "123456789012345@c.us", 123456789012345, true},
		{"79001234567-1581234048@g.us", "group", "79001234567-1581234048@g.us", 0, false},
		{"120363043968066561@g.us", "group", "120363043968066561@g.us", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			tg := mustTarget(t, tt.in)
			if tg.Kind().String() != tt.wantKind || tg.ChatID() != tt.wantChat {
				t.Errorf("Kind, ChatID = %v, %q; want %s, %q", tg.Kind(), tg.ChatID(), tt.wantKind, tt.wantChat)
			}
			if n, ok := tg.PhoneNumber(); n != tt.wantPhone || ok != tt.wantHas {
				t.Errorf("PhoneNumber = %d, %v; want %d, %v", n, ok, tt.wantPhone, tt.wantHas)
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		t.Parallel()
		var z Target
		if !z.IsZero() || z.Kind().String() != "unknown" || z.ChatID() != "" || z.String() != "" {
			t.Errorf("zero Target: IsZero %v, Kind %v, ChatID %q", z.IsZero(), z.Kind(), z.ChatID())
		}
		if _, ok := z.PhoneNumber(); ok {
			t.Error("zero Target has a PhoneNumber")
		}
	})
}

// TestSeedLength: the seed's 11 and 12 digits, told apart from the lengths it did not document,
// for every kind that has phone digits; a newer group has none and counts as the seed's.
func TestSeedLength(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"79001234567":                   true,
		"380123456789@c.us":             true,
		"79001234567-1581234048@g.us":   true,
		"120363043968066561@g.us":       true,
		"6591234567":                    false,
		"4791234567@c.us":               false,
		"5511912345678":                 false,
		"5491123456789@c.us":            false,
		"5511912345678-1581234048@g.us": false,
		"123456789012345":               false,
	} {
		if got := mustTarget(t, in).SeedLength(); got != want {
			t.Errorf("SeedLength(%q) = %v, want %v", in, got, want)
		}
	}
	if (Target{}).SeedLength() {
		t.Error("the zero Target has the seed's length")
	}
}

// TestParsePhoneShowsCharacters: a rejected character is shown as it is, with its code point
// when it is not ASCII: never one byte of it read as a character ('Â' for a no-break space).
func TestParsePhoneShowsCharacters(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"7900123456٣":           `'٣' (U+0663)`,
		"+7 900 123\u200b45 67": `'\u200b' (U+200B)`,
		"+7 900 123 45 6x":      `'x'`,
		"+7\u00a0900 123 45 6é": `'é' (U+00E9)`,
		"７９００１２３４５６７":           `'７' (U+FF17)`,
	} {
		_, err := ParsePhone(in)
		if err == nil || !strings.Contains(err.Error(), "unexpected character "+want) {
			t.Errorf("ParsePhone(%q) = %v, want it to name the character %s", in, err, want)
		}
		if err != nil && strings.ContainsRune(err.Error(), 'Â') {
			t.Errorf("ParsePhone(%q): %v shows a byte as a character", in, err)
		}
	}
}
