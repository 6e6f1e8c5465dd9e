package greenapi

import (
	"strings"
	"testing"
	"time"
)

func TestLinkExpiry(t *testing.T) {
	t.Parallel()
	const base = "https://pps.whatsapp.net/v/t61.24694-24/4273448_n.jpg?ccb=11-4&oh=01_AdT7&"
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name, link string
		want       time.Time
		ok         bool
	}{
		{"contract example", base + "oe=66041D5F&_nc_sid=e6ed6c", at("2024-03-27T13:21:35Z"), true},
		{"lower case hex", base + "oe=66041d5f", at("2024-03-27T13:21:35Z"), true},
		{"oe first", "https://pps.whatsapp.net/a.jpg?oe=66041D5F&ccb=11-4", at("2024-03-27T13:21:35Z"), true},
		{"subdomain", "https://media-1.pps.whatsapp.net/a.jpg?oe=66041D5F", at("2024-03-27T13:21:35Z"), true},
		{"host case", "https://PPS.WhatsApp.net/a.jpg?oe=66041D5F", at("2024-03-27T13:21:35Z"), true},
		{"last second of 9999", base + "oe=3AFFF4417F", at("9999-12-31T23:59:59Z"), true},
		{"one", "https://pps.whatsapp.net/a.jpg?oe=1", time.Unix(1, 0).UTC(), true},
		{"empty", "", time.Time{}, false},
		{"seed example without oe", "https://pps.whatsapp.net/v/link/to/the/image", time.Time{}, false},
		{"http", "http://pps.whatsapp.net/a.jpg?oe=66041D5F", time.Time{}, false},
		{"other host", "https://example.com/a.jpg?oe=66041D5F", time.Time{}, false},
		{"look-alike host", "https://evilpps.whatsapp.net.example.com/a.jpg?oe=66041D5F", time.Time{}, false},
		{"suffix without dot", "https://xpps.whatsapp.net/a.jpg?oe=66041D5F", time.Time{}, false},
		{"port", "https://pps.whatsapp.net:8443/a.jpg?oe=66041D5F", time.Time{}, false},
		{"user info", "https://u@pps.whatsapp.net/a.jpg?oe=66041D5F", time.Time{}, false},
		{"empty oe", base + "oe=", time.Time{}, false},
		{"two oe", base + "oe=66041D5F&oe=66041D60", time.Time{}, false},
		{"not hex", base + "oe=66041D5G", time.Time{}, false},
		{"0x prefix", base + "oe=0x66041D5F", time.Time{}, false},
		{"sign", base + "oe=-66041D5F", time.Time{}, false},
		{"plus sign", base + "oe=%2B66041D5F", time.Time{}, false},
		{"zero", base + "oe=0", time.Time{}, false},
		{"too long", base + "oe=" + strings.Repeat("F", 17), time.Time{}, false},
		{"overflow", base + "oe=FFFFFFFFFFFFFFFF", time.Time{}, false},
		{"past year 9999", base + "oe=3AFFF44180", time.Time{}, false},
		{"bad escape", base + "oe=66041D5F&x=%zz", time.Time{}, false},
		{"not a url", "::", time.Time{}, false},
		{"oe in the fragment", "https://pps.whatsapp.net/a.jpg#oe=66041D5F", time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := LinkExpiry(tc.link)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Errorf("LinkExpiry(%q) = %v, %v; want %v, %v", tc.link, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzLinkExpiry checks that no link panics, that a known expiry is a whole second in
// PostgreSQL's range and in UTC, and that only pps.whatsapp.net links have one.
func FuzzLinkExpiry(f *testing.F) {
	for _, s := range []string{
		"https://pps.whatsapp.net/v/t61.24694-24/4273448_n.jpg?ccb=11-4&oe=66041D5F&_nc_sid=e6ed6c",
		"https://pps.whatsapp.net/v/link/to/the/image", "", "https://x.pps.whatsapp.net/?oe=1", "https://a/?oe=zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, link string) {
		at, ok := LinkExpiry(link)
		if !ok {
			if !at.IsZero() {
				t.Fatalf("LinkExpiry(%q) = %v without ok", link, at)
			}
			return
		}
		if at.Unix() <= 0 || at.Unix() > maxExpiry || at.Nanosecond() != 0 || at.Location() != time.UTC {
			t.Fatalf("LinkExpiry(%q) = %v: out of range", link, at)
		}
		if !strings.Contains(strings.ToLower(link), linkHost) {
			t.Fatalf("LinkExpiry(%q) = %v for a link off %s", link, at, linkHost)
		}
	})
}
