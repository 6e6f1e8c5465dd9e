package phone

import (
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/greenapi"
)

// TestNormalize: the messy forms people write numbers in, with and without a region, every
// length Green API takes, and what is refused locally, in words of its own.
func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, region string
		want       string        // the target's digits or chatId; "" rejected
		kind       greenapi.Kind // of want; 0 is KindPhone
		wantErr    string        // in the rejection's reason
		national   bool
	}{
		// With a region: national forms become international digits.
		{in: "8 900 123 45 67", region: "RU", want: "79001234567"},
		{in: "8 (900) 123-45-67", region: "RU", want: "79001234567"},
		{in: "89001234567", region: "RU", want: "79001234567"},
		{in: "(900) 123-45-67", region: "RU", want: "79001234567"},
		{in: "+7 900 123-45-67", region: "RU", want: "79001234567"},
		{in: "7.900.123.45.67", region: "RU", want: "79001234567"},
		{in: "79001234567", region: "RU", want: "79001234567"},
		{in: "  +7\t900 123 45 67 ", region: "RU", want: "79001234567"},
		{in: "8-800-555-35-35", region: "RU", want: "78005553535"},
		// A trunk prefix says national even when the digits are another country's too
		// (+84 951 234 567 is a Vietnamese mobile).
		{in: "8 495 123 45 67", region: "RU", want: "74951234567"},
		// Dialled abroad with the region's international prefix.
		{in: "810 49 30 1234567", region: "RU", want: "49301234567"},
		// The (0) trunk prefix of an international number is dropped, whatever the region.
		{in: "+49 (0) 30 1234567", region: "RU", want: "49301234567"},
		{in: "+49 (0) 30 1234567", region: "DE", want: "49301234567"},
		{in: "030 1234567", region: "DE", want: "49301234567"},
		{in: "+44 (0) 20 7946 0958", region: "RU", want: "442079460958"},
		{in: "020 7946 0958", region: "GB", want: "442079460958"},
		{in: "+1 (212) 555-0100", region: "RU", want: "12125550100"},
		// International digits valid as such stay what they are, with or without '+', though
		// they are not valid as dialled in the region (they were read as +7 442..., refused).
		{in: "442079460958", region: "RU", want: "442079460958"},
		{in: "12125550123", region: "RU", want: "12125550123"},
		{in: "380501234567", region: "RU", want: "380501234567"},
		{in: "+380 50 123 45 67", region: "RU", want: "380501234567"},
		// A national reading that would move the number to another country is refused.
		{in: "4930123456", region: "RU", wantErr: `"4930123456" is ambiguous: dialled in RU it is +74930123456, but its digits are already another country's number, +4930123456 (DE)`},
		{in: "4930123456", region: "RU", wantErr: "write it with + and its country code, or as dialled in RU with its trunk prefix 8"},
		{in: "+49 30 123456", region: "RU", want: "4930123456"}, // with + it is Berlin's
		{in: "8 493 012 34 56", region: "RU", want: "74930123456"},
		// Every length Green API takes, in a region.
		{in: "+55 11 91234-5678", region: "RU", want: "5511912345678"},  // Brazil, 13
		{in: "(11) 91234-5678", region: "BR", want: "5511912345678"},    // Brazil, 13
		{in: "+54 9 11 2345-6789", region: "RU", want: "5491123456789"}, // Argentina, 13
		{in: "+65 9123 4567", region: "RU", want: "6591234567"},         // Singapore, 10
		{in: "9123 4567", region: "SG", want: "6591234567"},             // Singapore, 10
		{in: "+47 912 34 567", region: "RU", want: "4791234567"},        // Norway, 10
		{in: "+49 (0) 30 123456", region: "DE", want: "4930123456"},     // Berlin, 10
		{in: "+86 138 1234 5678", region: "RU", want: "8613812345678"},  // China, 13
		{in: "+683 4002", region: "RU", wantErr: "it has 7 digits, and a chatId's number has 10 to 15"},
		// Invalid for its country, or not a number at all.
		{in: "8 (900) 123-45-6", region: "RU", wantErr: "not a phone number: \"8 (900) 123-45-6\" is not a valid number (read in region RU as +7 8900123456)"},
		{in: "123", region: "RU", wantErr: "not a valid number"},
		{in: "hello", region: "RU", wantErr: "not a phone number: \"hello\": unexpected character 'h'"},
		{in: "+7 900 123 45 6x", region: "RU", wantErr: "unexpected character 'x'"},
		{in: "8 900 123 45 67 ext. 5", region: "RU", wantErr: "unexpected character 'e'"},
		// Separators outside ASCII: no-break spaces, Unicode dashes, the minus sign.
		{in: "+7\u00a0900\u00a0123\u00a045\u00a067", region: "RU", want: "79001234567"},
		{in: "8\u202f900\u202f123\u201145\u201167", region: "RU", want: "79001234567"},
		{in: "+7 900 123\u201045\u201267", want: "79001234567"},
		{in: "+7 900 123\u201345\u201467", want: "79001234567"},
		{in: "+7\u00a0900\u00a0123\u201545\u221267", want: "79001234567"},
		// A rejected character is shown as it is: never a byte of it read as a character
		// (a no-break space was 'Â').
		{in: "+7\u00a0900\u00a0123 45 6٣", region: "RU", wantErr: `"+7\u00a0900\u00a0123 45 6٣": unexpected character '٣' (U+0663)`},
		{in: "+7\u00a0900\u00a0123 45 6٣", wantErr: `"+7\u00a0900\u00a0123 45 6٣": unexpected character '٣' (U+0663)`},
		{in: "+7 900\u200b123 45 67", wantErr: `unexpected character '\u200b' (U+200B)`},
		{in: "8\u00a0900\u00a0123 45 6x", wantErr: `unexpected character 'x'`, national: true},
		// chatIds are taken as given, with or without a region: 10 to 15 digits.
		{in: "79001234567@c.us", region: "RU", want: "79001234567@c.us", kind: greenapi.KindChat},
		{in: "5511912345678@c.us", want: "5511912345678@c.us", kind: greenapi.KindChat},
		{in: "6591234567@c.us", region: "RU", want: "6591234567@c.us", kind: greenapi.KindChat},
		{in: "79001234567-1581234048@g.us", want: "79001234567-1581234048@g.us", kind: greenapi.KindGroup},
		{in: "5491123456789-1581234048@g.us", want: "5491123456789-1581234048@g.us", kind: greenapi.KindGroup},
		{in: "79001234567@c.uss", region: "RU", wantErr: "@c.us or @g.us"},
		{in: "659123456@c.us", wantErr: "10 to 15 digits then @c.us"},
		// Without a region: international digits, and national-looking numbers are flagged.
		{in: "+7 (900) 123-45-67", want: "79001234567"},
		{in: "8 900 123 45 67", want: "89001234567", national: true},
		{in: "0 30 123456", wantErr: `not a phone number: "0 30 123456" has 9 digits`, national: true},
		// The (0) is a trunk prefix where libphonenumber says so: dropped in Germany, kept in
		// Italy, where the 0 is dialled from abroad too.
		{in: "+49 (0) 30 1234567", want: "49301234567"},
		{in: "+49 (0) 30 123456", want: "4930123456"},
		{in: "+44 (0)20 7946 0958", want: "442079460958"},
		{in: "+39 (0)6 1234 5678", want: "390612345678"},
		// Every length from 10 to 15, without a region: Brazil, Argentina, Mexico's old 521
		// mobiles (libphonenumber no longer knows them, Green API's FAQ does), Singapore, Norway.
		{in: "5511912345678", want: "5511912345678"},
		{in: "+55 (11) 91234-5678", want: "5511912345678"},
		{in: "5491123456789", want: "5491123456789"},
		{in: "+52 1 55 1234 5678", want: "5215512345678"},
		{in: "6591234567", want: "6591234567"},
		{in: "4791234567", want: "4791234567"},
		{in: "+47 91 23 45 67", want: "4791234567"},
		{in: "123456789012345", want: "123456789012345"},
		{in: "1234567890123456", wantErr: "has 16 digits; a phone number is 10 to 15 digits"},
		{in: "12345", wantErr: "5 digits"},
	}
	for _, tt := range tests {
		t.Run(tt.region+" "+tt.in, func(t *testing.T) {
			t.Parallel()
			got, national, err := Normalize(tt.in, tt.region)
			kind := tt.kind
			if kind == 0 {
				kind = greenapi.KindPhone
			}
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Normalize(%q, %q) = %q, %v; want an error containing %q", tt.in, tt.region, got, err, tt.wantErr)
			case tt.wantErr != "" && !got.IsZero():
				t.Errorf("Normalize(%q, %q) = %q with an error", tt.in, tt.region, got)
			case tt.wantErr == "" && (err != nil || got.String() != tt.want || got.Kind() != kind):
				t.Errorf("Normalize(%q, %q) = %v %q, %v; want %v %q", tt.in, tt.region, got.Kind(), got, err, kind, tt.want)
			}
			if national != tt.national {
				t.Errorf("Normalize(%q, %q): looks national %v, want %v", tt.in, tt.region, national, tt.national)
			}
			if err != nil && (strings.Contains(err.Error(), greenapi.ReasonBadRequestData) || strings.ContainsRune(err.Error(), 'Â')) {
				t.Errorf("Normalize(%q, %q): %v: a local refusal in the API's words, or a byte shown as a character", tt.in, tt.region, err)
			}
		})
	}
}

// TestCheckRegion: a region is an ISO 3166 alpha-2 code in any case, or "" for none.
func TestCheckRegion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "", "RU": "RU", "de": "DE", " gb ": "GB", "br": "BR"} {
		if got, err := CheckRegion(in); err != nil || got != want {
			t.Errorf("CheckRegion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"RUS", "XX", "Russia", "7"} {
		if _, err := CheckRegion(in); err == nil || !strings.Contains(err.Error(), "ISO 3166") {
			t.Errorf("CheckRegion(%q): %v, want an error saying how to write a region", in, err)
		}
	}
}
