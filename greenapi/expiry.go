package greenapi

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// linkHost is where Green API's avatar links live (docs/greenapi.md, "urlAvatar"). Only its
// links carry an oe the contract describes; a number called oe on another host means nothing.
const linkHost = "pps.whatsapp.net"

// LinkExpiry is when an avatar link stops working: the oe query parameter of a
// https://pps.whatsapp.net link (or one of its subdomains: WhatsApp's CDN names hosts that way),
// a hexadecimal Unix time in seconds (oe=66041D5F is 2024-03-27T13:21:35Z). The store keeps it in
// url_expires_at so that a row is checked again before its link dies.
//
// ok is false, and the link has no known expiry, for "" and for anything else: another scheme or
// host, no oe, oe given twice, or an oe that is not 1 to 16 hexadecimal digits or is 0. That is
// the safe answer: such a row is refreshed by age (refresh_after) alone, never made due by a
// garbled parameter.
func LinkExpiry(link string) (at time.Time, ok bool) {
	if link == "" {
		return time.Time{}, false
	}
	u, err := url.Parse(link)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Port() != "" {
		return time.Time{}, false
	}
	host := strings.ToLower(u.Hostname())
	if host != linkHost && !strings.HasSuffix(host, "."+linkHost) {
		return time.Time{}, false
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return time.Time{}, false
	}
	vs := q["oe"]
	if len(vs) != 1 || len(vs[0]) == 0 || len(vs[0]) > 16 {
		return time.Time{}, false
	}
	// ParseInt alone would take a sign or a 0x prefix; the contract's oe is bare hex digits.
	for _, c := range vs[0] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return time.Time{}, false
		}
	}
	sec, err := strconv.ParseInt(vs[0], 16, 64)
	// Past year 9999 PostgreSQL's timestamptz cannot hold it (and no link lives that long).
	if err != nil || sec <= 0 || sec > maxExpiry {
		return time.Time{}, false
	}
	return time.Unix(sec, 0).UTC(), true
}

// maxExpiry is 9999-12-31T23:59:59Z, the last second of the years PostgreSQL's timestamptz
// range and Go's time formatting share.
const maxExpiry = 253402300799
