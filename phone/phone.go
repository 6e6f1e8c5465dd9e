// Package phone reads phone numbers and chatIds as people write them into the targets Green API
// is sent: a chatId as given, a phone number as its digits in international format, country code
// first. It reads national forms of a region (8 900 123-45-67 in RU), separators of any kind and
// a "(0)" trunk prefix, with libphonenumber's knowledge of each country. It refuses only what
// cannot be a phone number, and says so in its own words, never the API's: the API judges the
// rest, and its answer is the row's.
package phone

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/nyaruka/phonenumbers"
)

// NotAPhoneNumber begins every refusal of a phone number, so that a person (and a test) can tell
// a local refusal from the API's "bad request data".
const NotAPhoneNumber = "not a phone number"

// CheckRegion validates a region of national numbers: "" (none) or an ISO 3166 alpha-2 region
// libphonenumber knows, returned in upper case.
func CheckRegion(region string) (string, error) {
	region = strings.ToUpper(strings.TrimSpace(region))
	if region == "" {
		return "", nil
	}
	if _, ok := phonenumbers.GetSupportedRegions()[region]; !ok {
		return "", fmt.Errorf("%q is not a region phone numbers are known for: use an ISO 3166 alpha-2 code "+
			"such as RU, DE, GB or US, or \"\" to take every number as international digits", region)
	}
	return region, nil
}

// Normalize turns one input value into a target: a chatId as given (it must be one), a phone
// number as digits in international format.
//
// Without a region, a phone number is international digits: any 10 to 15 of them (E.164's
// lengths; libphonenumber's tables lag behind real numbering plans, such as Mexico's 521...
// mobiles, so they do not judge it), and a "(0)" after the country code is dropped where
// libphonenumber says it is a trunk prefix (+49 (0) 30 1234567 is 49301234567). national then
// reports a number that looks national (a leading 8 or 0, no '+'), whatever else is wrong with
// it: the hint to pass a region.
//
// With a region (an ISO 3166 code CheckRegion accepted), a number must be valid for its country.
// One written with '+' is international. One without is read as dialled in the region (8 900
// 123-45-67 in RU is 79001234567), unless its digits are already a valid international number
// that is not valid as dialled there (442079460958 in RU stays 442079460958). When both readings
// are valid and differ (4930123456 in RU: +7 493 012-34-56, or Berlin's +49 30 123456), a
// leading trunk prefix (RU 8, DE 0) says it is national; without one the number is refused, not
// moved to another country.
func Normalize(s, region string) (t greenapi.Target, national bool, err error) {
	s = strings.TrimSpace(s)
	if strings.IndexByte(s, '@') >= 0 {
		t, err = greenapi.ParseChatID(s)
		return t, false, err
	}
	national = region == "" && looksNational(s)
	if i := strings.IndexFunc(s, func(r rune) bool { return !isDigit(r) && !greenapi.IsSeparator(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return t, national, fmt.Errorf("%s: %q: unexpected character %s: a phone number is digits with +, spaces, "+
			"dashes, dots or parentheses", NotAPhoneNumber, s, greenapi.QuoteRune(r))
	}
	plain := ascii(s)
	if region == "" {
		t, err = international(s, plain)
		return t, national, err
	}
	t, err = inRegion(s, plain, region)
	return t, false, err
}

// international reads a number without a region: its digits, less a "(0)" trunk prefix.
func international(s, plain string) (greenapi.Target, error) {
	digits := digitsOf(plain)
	compact := strings.ReplaceAll(plain, " ", "")
	if strings.HasPrefix(compact, "+") && strings.Contains(compact, "(0)") {
		without := digitsOf(strings.Replace(compact, "(0)", "", 1))
		if num, err := phonenumbers.Parse(plain, "ZZ"); err == nil && e164(num) == without {
			digits = without
		}
	}
	return checkLength(s, digits, "")
}

// inRegion reads a number with a region: see Normalize.
func inRegion(s, plain, region string) (greenapi.Target, error) {
	num, err := phonenumbers.Parse(plain, region)
	if err != nil {
		return greenapi.Target{}, fmt.Errorf("%s: %q (region %s): %v", NotAPhoneNumber, s, region, err)
	}
	if strings.HasPrefix(strings.TrimSpace(plain), "+") {
		if !phonenumbers.IsValidNumber(num) {
			return greenapi.Target{}, fmt.Errorf("%s: %q is not a valid number (+%d %d)", NotAPhoneNumber, s,
				num.GetCountryCode(), num.GetNationalNumber())
		}
		return checkLength(s, e164(num), "a valid number")
	}
	digits := digitsOf(plain)
	nat := phonenumbers.IsValidNumber(num)
	intl, ierr := phonenumbers.Parse("+"+digits, "ZZ")
	isIntl := ierr == nil && phonenumbers.IsValidNumber(intl)
	ndd := phonenumbers.GetNddPrefixForRegion(region, true)
	trunk := ndd != "" && strings.HasPrefix(digits, ndd)
	// A number dialled with an international prefix (810 49 ... in RU) is in another country
	// on purpose.
	dialledAbroad := int(num.GetCountryCode()) != phonenumbers.GetCountryCodeForRegion(region)
	switch {
	case nat && (!isIntl || trunk || dialledAbroad || e164(num) == e164(intl)):
		return checkLength(s, e164(num), "a valid number")
	case isIntl && !nat:
		return checkLength(s, e164(intl), "a valid international number")
	case nat && isIntl:
		how := "with its trunk prefix " + ndd
		if ndd == "" {
			how = "with +" + strconv.Itoa(phonenumbers.GetCountryCodeForRegion(region))
		}
		return greenapi.Target{}, fmt.Errorf("%q is ambiguous: dialled in %s it is +%s, but its digits are already "+
			"another country's number, +%s (%s); refused rather than moved to another country: write it with + and "+
			"its country code, or as dialled in %s %s", s, region, e164(num), e164(intl),
			phonenumbers.GetRegionCodeForNumber(intl), region, how)
	}
	return greenapi.Target{}, fmt.Errorf("%s: %q is not a valid number (read in region %s as +%d %d)", NotAPhoneNumber,
		s, region, num.GetCountryCode(), num.GetNationalNumber())
}

// checkLength makes a phone target of digits, or says why they cannot be one: what says the
// number is valid, if anything does, and how many digits it has.
func checkLength(s, digits, valid string) (greenapi.Target, error) {
	t, err := greenapi.ParsePhone(digits)
	if err == nil {
		return t, nil
	}
	if valid != "" {
		return t, fmt.Errorf("%s Green API can be sent: %q is +%s, %s, but it has %d digits, and a chatId's number "+
			"has %d to %d", NotAPhoneNumber, s, digits, valid, len(digits), greenapi.MinDigits, greenapi.MaxDigits)
	}
	return t, fmt.Errorf("%s: %q has %d digits; a phone number is %d to %d digits in international format, "+
		"country code first", NotAPhoneNumber, s, len(digits), greenapi.MinDigits, greenapi.MaxDigits)
}

// e164 is num's digits in international format, without the '+'.
func e164(num *phonenumbers.PhoneNumber) string {
	return strings.TrimPrefix(phonenumbers.Format(num, phonenumbers.E164), "+")
}

// ascii rewrites the separators outside ASCII (no-break spaces, Unicode dashes and the minus
// sign) and tabs as ASCII spaces, which every reader of numbers takes.
func ascii(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= utf8.RuneSelf || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// digitsOf keeps the ASCII digits of s.
func digitsOf(s string) string {
	return strings.Map(func(r rune) rune {
		if isDigit(r) {
			return r
		}
		return -1
	}, s)
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

// looksNational reports whether a phone number's first digit is 8 or 0 with no '+' before it:
// the national form of Russia and others (8 900 ...) or a trunk prefix (0 30 ...).
func looksNational(s string) bool {
	i := strings.IndexFunc(s, func(r rune) bool { return isDigit(r) || r == '+' })
	return i >= 0 && (s[i] == '8' || s[i] == '0')
}
