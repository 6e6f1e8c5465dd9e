package greenapi

// Avatar is one GetAvatar answer, whatever the API edition that sent it. A field the edition
// does not carry stays nil, so "the API did not say" never turns into false in the table.
type Avatar struct {
	// ExistsWhatsapp is the seed edition's existsWhatsapp; nil in the current edition. Beware
	// Green API's known bug: an account without a photo may be reported false.
	ExistsWhatsapp *bool
	// Available is the current edition's available (false when privacy settings hide the
	// avatar); nil in the seed edition.
	Available *bool
	// URLAvatar is the link to the image, "" when there is none. Links expire (see the oe
	// query parameter).
	URLAvatar string
	// Base64Avatar is the image itself, base64-encoded, when the edition inlines it (seen in
	// Green API's own code in 2026); "" when the answer carries none. Like a link, it means the
	// account exists.
	Base64Avatar string
}

// HasAvatar says whether the answer carries an avatar: a link or an inlined image. Only an
// existing account has one.
func (a Avatar) HasAvatar() bool { return a.URLAvatar != "" || a.Base64Avatar != "" }
