package simulator

import (
	"encoding/base64"
	"strconv"

	"github.com/enrich-dev/enrich/greenapi"
)

// Category is what a number really is, as the simulator decides it from Seed and the number.
type Category uint8

const (
	// CategoryInvalid is input that fails greenapi validation: the server answers "bad
	// request data" and a correct client never sends it.
	CategoryInvalid Category = iota
	// CategoryAvatar has WhatsApp and a visible avatar.
	CategoryAvatar
	// CategoryNoPhoto has WhatsApp and no photo: available, but no link.
	CategoryNoPhoto
	// CategoryHidden has WhatsApp and hides its avatar by privacy settings.
	CategoryHidden
	// CategoryNoWhatsApp has no WhatsApp account.
	CategoryNoWhatsApp
	// CategoryBadRequest is well-formed yet rejected by the server as "bad request data": a
	// share of numbers (Config.WeightBadRequest), and in the seed edition every number of other
	// than the 11 or 12 digits the seed documents. Today's editions take 10 to 15.
	CategoryBadRequest
)

// String names the category for test failures and reports.
func (c Category) String() string {
	switch c {
	case CategoryInvalid:
		return "invalid"
	case CategoryAvatar:
		return "avatar"
	case CategoryNoPhoto:
		return "no_photo"
	case CategoryHidden:
		return "hidden"
	case CategoryNoWhatsApp:
		return "no_whatsapp"
	case CategoryBadRequest:
		return "bad_request"
	}
	return "unknown"
}

// Truth is what the simulator answers for a number once any injected timeouts are spent, so a
// test can check every row a client wrote down against it.
type Truth struct {
	// Key is the normalized chat: "<digits>@c.us" for a phone or personal chat, the group's
	// chatId, or the input itself when it is invalid. Counters are kept per Key.
	Key string
	// Category is what the number is.
	Category Category
	// Edition is the edition this number answers GetAvatar in (Config.Edition, or the pick
	// for this number when that is "mixed").
	Edition string
	// ExistsWhatsapp is the seed edition's existsWhatsapp (and checkWhatsapp's answer).
	ExistsWhatsapp bool
	// Available is the current edition's available: false only when the avatar is hidden (the
	// account exists); true with a photo, without one, and without WhatsApp at all, which the
	// current edition does not tell apart from an account without a photo.
	Available bool
	// URLAvatar is the exact link answered: empty unless Category is CategoryAvatar. Its oe
	// is Config.Start plus LinkLifetime, so it is reproducible.
	URLAvatar string
	// Base64Avatar is what the current+base64 edition adds: a short fake image when there is
	// an avatar, else empty.
	Base64Avatar string
	// BadRequest means the answer is "bad request data" (Category invalid or bad request).
	BadRequest bool
	// TimeoutsFirst is how many calls per method answer the timeout reason before the truth.
	TimeoutsFirst int
	// EmptiesFirst is how many getAvatar calls answer a 200 with none of the documented
	// fields before anything else (Config.EmptyRate); 0 for bad request data.
	EmptiesFirst int
	// ReportedMissing says getAvatar answers existsWhatsapp false for this account, which
	// has WhatsApp (ExistsWhatsapp stays true: checkWhatsapp's answer), per Config.MissingRate.
	ReportedMissing bool
}

// Salts keep the hash-derived choices independent of one another.
const (
	saltCategory uint64 = iota + 1
	saltTimeout
	saltEdition
	saltLink1
	saltLink2
	saltLink3
	saltLink4
	saltEmpty
	saltEmptyForm
	saltMissing
)

// mix64 is splitmix64's finalizer: a cheap, well-spread bijection on uint64.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// keyHash is FNV-1a of the key, mixed with the seed; derive() splits it per choice.
func (s *Simulator) keyHash(key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return mix64(h ^ s.seedMix)
}

// derive is an independent 64-bit value for one choice about one key.
func derive(h, salt uint64) uint64 { return mix64(h + salt*0x9e3779b97f4a7c15) }

// unit maps a hash to [0, 1).
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// editionsMixed are what EditionMixed picks from.
var editionsMixed = [...]string{EditionSeed, Edition2023, EditionCurrent, EditionCurrentBase64}

// Truth is the simulator's answer for target (a phone number or a chatId, in any form
// greenapi.ParseTarget accepts; "79001234567" and "79001234567@c.us" are the same number).
func (s *Simulator) Truth(target string) Truth {
	t, err := greenapi.ParseTarget(target)
	if err != nil {
		return s.truthOf(target, 0, s.keyHash(target))
	}
	key := t.ChatID()
	return s.truthOf(key, t.Kind(), s.keyHash(key))
}

// truthOf decides everything about a normalized key whose keyHash is h; kind 0 means the key
// failed validation.
func (s *Simulator) truthOf(key string, kind greenapi.Kind, h uint64) Truth {
	tr := Truth{Key: key, Edition: s.editionOf(h)}
	u := unit(derive(h, saltCategory))
	switch {
	case kind == 0:
		tr.Category = CategoryInvalid
	case tr.Edition == EditionSeed && !seedLength(key):
		tr.Category = CategoryBadRequest
	case kind == greenapi.KindGroup:
		tr.Category = CategoryNoPhoto
		if u < s.groupAvatarShare {
			tr.Category = CategoryAvatar
		}
	default:
		tr.Category = CategoryBadRequest
		for i, edge := range s.cumulative {
			if u < edge {
				tr.Category = Category(i + 1)
				break
			}
		}
	}
	switch tr.Category {
	case CategoryAvatar:
		tr.ExistsWhatsapp, tr.Available = true, true
		tr.URLAvatar = s.link(h)
		tr.Base64Avatar = fakeImage(h)
	case CategoryNoPhoto:
		tr.ExistsWhatsapp, tr.Available = true, true
	case CategoryHidden:
		tr.ExistsWhatsapp = true
	case CategoryNoWhatsApp:
		tr.Available = true
	case CategoryInvalid, CategoryBadRequest:
		tr.BadRequest = true
	}
	if !tr.BadRequest && s.cfg.TimeoutRate > 0 && unit(derive(h, saltTimeout)) < s.cfg.TimeoutRate {
		tr.TimeoutsFirst = s.cfg.TimeoutTimes
	}
	if tr.Category == CategoryNoPhoto && (tr.Edition == EditionSeed || tr.Edition == Edition2023) &&
		s.cfg.MissingRate > 0 && unit(derive(h, saltMissing)) < s.cfg.MissingRate {
		tr.ReportedMissing = true
	}
	if !tr.BadRequest && s.cfg.EmptyRate > 0 && unit(derive(h, saltEmpty)) < s.cfg.EmptyRate {
		tr.EmptiesFirst = s.cfg.EmptyTimes
	}
	return tr
}

// seedLength reports whether a valid chat key's phone digits are the seed's 11 or 12 (see
// greenapi.Target.SeedLength).
func seedLength(key string) bool {
	t, err := greenapi.ParseChatID(key)
	return err == nil && t.SeedLength()
}

// editionOf is the edition the key whose keyHash is h answers in: Config.Edition, or its pick
// when that is "mixed".
func (s *Simulator) editionOf(h uint64) string {
	if s.cfg.Edition == EditionMixed {
		return editionsMixed[derive(h, saltEdition)%uint64(len(editionsMixed))]
	}
	return s.cfg.Edition
}

// refusesPhoneNumber reports whether edition takes only chatId for getAvatar, as Green API's
// current editions do.
func refusesPhoneNumber(edition string) bool {
	return edition == EditionCurrent || edition == EditionCurrentBase64
}

// emptyBodies are the 200s without a documented field that EmptyRate numbers answer first,
// in rotation.
var emptyBodies = [...]string{`{}`, `{"error":"temporarily unavailable"}`, `{"urlAvatar":null}`}

// emptyBody is the i-th (from 0) empty 200 of the key whose keyHash is h: each key starts the
// rotation at its own place, so one empty answer per number still shows every form.
func emptyBody(h uint64, i int) string {
	n := uint64(len(emptyBodies))
	return emptyBodies[(derive(h, saltEmptyForm)%n+uint64(i)%n)%n]
}

// link builds a pps.whatsapp.net-like URL whose path and oh carry the number's hash and whose
// oe is the fixed expiry, so it is exactly reproducible.
func (s *Simulator) link(h uint64) string {
	b := make([]byte, 0, 192)
	if host := s.imageHost.Load(); host != nil {
		b = append(b, *host...)
	} else {
		b = append(b, "https://pps.whatsapp.net"...)
	}
	b = append(b, imagePath+"t61.24694-24/"...)
	b = strconv.AppendUint(b, derive(h, saltLink1)%1_000_000_000, 10)
	b = append(b, '_')
	b = strconv.AppendUint(b, derive(h, saltLink2)%1_000_000_000_000_000, 10)
	b = append(b, '_')
	b = strconv.AppendUint(b, derive(h, saltLink3)%10_000_000_000_000_000, 10)
	b = append(b, "_n.jpg?ccb=11-4&oh=01_"...)
	b = strconv.AppendUint(b, derive(h, saltLink4), 16)
	b = append(b, "&oe="...)
	b = append(b, s.oe...)
	b = append(b, "&_nc_sid=e6ed6c&_nc_cat="...)
	b = strconv.AppendUint(b, h%120+1, 10)
	return string(b)
}

// fakeImage is a short base64 string starting like a JPEG, different per number.
func fakeImage(h uint64) string {
	var raw [16]byte
	copy(raw[:4], []byte{0xff, 0xd8, 0xff, 0xe0})
	for i := 0; i < 12; i++ {
		raw[4+i] = byte(derive(h, uint64(100+i)))
	}
	return base64.StdEncoding.EncodeToString(raw[:])
}

// Avatar is what a client that parses this number's answer correctly records: the edition's
// own fields only, so an edition that does not say existsWhatsapp leaves it nil. Tests and
// the demo compare every row a run wrote against it. Meaningless when BadRequest is true.
func (t Truth) Avatar() greenapi.Avatar {
	a := greenapi.Avatar{URLAvatar: t.URLAvatar}
	switch t.Edition {
	case EditionSeed, Edition2023:
		exists := t.ExistsWhatsapp
		a.ExistsWhatsapp = &exists
	default:
		available := t.Available
		a.Available = &available
	}
	if t.Edition == EditionCurrentBase64 {
		a.Base64Avatar = t.Base64Avatar
	}
	return a
}

// Existence sources, as enrich records them in exists_source (enrich.Source*): the simulator
// names them so that tests and the demo can say what a correct client writes.
const (
	SourceGetAvatar     = "getAvatar"
	SourceAvatar        = "avatar"
	SourceCheckWhatsapp = "checkWhatsapp"
)

// Existence is what a correct client that checks existence (enrich's greenapi.confirm_missing,
// on by default) records for this number once every call succeeded: exists_whatsapp and where it
// came from. A group is not asked of CheckWhatsapp: it records the seed editions' existsWhatsapp
// (source getAvatar), else nothing (nil, ""). A personal number: the seed editions'
// existsWhatsapp true stands (getAvatar); a link, an inlined image or available false mean the
// account exists (avatar); anything else (existsWhatsapp false, or {"urlAvatar":"",
// "available":true}) is asked of CheckWhatsapp, which tells the truth (checkWhatsapp).
// Meaningless when BadRequest is true.
func (t Truth) Existence(group bool) (*bool, string) {
	yes := true
	av := t.Avatar()
	if av.ExistsWhatsapp != nil {
		said := t.ExistsWhatsapp && !t.ReportedMissing // what getAvatar answered
		av.ExistsWhatsapp = &said
	}
	switch {
	case group && av.ExistsWhatsapp != nil:
		return av.ExistsWhatsapp, SourceGetAvatar
	case group:
		return nil, ""
	case av.ExistsWhatsapp != nil && *av.ExistsWhatsapp:
		return &yes, SourceGetAvatar
	case av.ExistsWhatsapp == nil && (av.HasAvatar() || av.Available != nil && !*av.Available):
		return &yes, SourceAvatar
	}
	exists := t.ExistsWhatsapp
	return &exists, SourceCheckWhatsapp
}
