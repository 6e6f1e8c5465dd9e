package greenapi

import (
	"errors"
	"fmt"
	"time"
)

// Class is what the engine does about a failed call. Green API reports failures as HTTP
// statuses, plain-text or JSON bodies and "reason" fields across editions; the client folds
// them all into these few classes so that the engine never parses a body.
type Class uint8

const (
	// ClassTransient is worth retrying with backoff: 5xx, 499, network errors, timeouts.
	ClassTransient Class = iota + 1
	// ClassAvatarTimeout is the reason "get avatar timeout limit exceeded": WhatsApp did not
	// answer in time. Transient, but it spends one of the row's attempts.
	ClassAvatarTimeout
	// ClassStarting means the instance is starting or restarting ("instance in starting
	// process try later", or the newer "instance is starting or not authorized", which
	// GetStateInstance tells apart). Pause the instance; the row is not at fault.
	ClassStarting
	// ClassRateLimited is HTTP 429: slow down and retry; the row is not at fault.
	ClassRateLimited
	// ClassInvalid means the request is wrong for this row ("bad request data", "Validation
	// failed", a JSON syntax error): record the reason and never retry it.
	ClassInvalid
	// ClassUnusable means nothing will succeed on this instance until a person acts: not
	// authorized, expired, deleted, blocked, wrong token (401) or id (403), quota spent (466),
	// wrong method (404).
	ClassUnusable
)

// String names the class in logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassAvatarTimeout:
		return "avatar_timeout"
	case ClassStarting:
		return "starting"
	case ClassRateLimited:
		return "rate_limited"
	case ClassInvalid:
		return "invalid"
	case ClassUnusable:
		return "unusable"
	}
	return "unknown"
}

// Reasons the API sends in a 200 body's "reason" field or as a 400 body.
const (
	ReasonBadRequestData     = "bad request data"
	ReasonAvatarTimeout      = "get avatar timeout limit exceeded"
	ReasonStarting           = "instance in starting process try later"
	ReasonStartingOrNotAuth  = "instance is starting or not authorized"
	ReasonNotAuthorized      = "instance account not authorized"
	ReasonCheckNumberTimeout = "check phone number timeout limit exceeded"
	// ReasonBadPhoneNumber is CheckWhatsapp's refusal of a number ("bad phone number, valid 11
	// or 12 digits"): permanent for that number, the row's own (ClassInvalid).
	ReasonBadPhoneNumber      = "bad phone number"
	ReasonValidationFailedPfx = "validation failed"
)

// Error is every failure the client returns for a call that was attempted. It never holds the
// apiTokenInstance: URL is redacted ("waInstance1101000001/getAvatar/***") and Err has been
// scrubbed of the real URL.
type Error struct {
	// Class is what to do about it.
	Class Class
	// Instance is the idInstance the call was made on, so a person knows which to fix.
	Instance string
	// Method is the API method, e.g. "getAvatar".
	Method string
	// Status is the HTTP status, or 0 when no response arrived.
	Status int
	// Reason is the API's own words (the reason field, or the 400 body's message), trimmed to
	// a sane length; empty for network errors.
	Reason string
	// RetryAfter is the server's Retry-After on a 429, or 0 when it sent none.
	RetryAfter time.Duration
	// URL is the redacted request URL.
	URL string
	// APIURL is the host the call went to (Config.APIURL without trailing slashes), so that a
	// 403 from the wrong pool's host can name the host that refused. It is not secret; the
	// token is redacted from it all the same, in case one was pasted into it.
	APIURL string
	// Request is the request body as sent for GetAvatar and CheckWhatsapp, e.g.
	// {"phoneNumber":79001234567} or {"chatId":"79001234567@c.us"}, so a caller can quote the
	// form an API edition refused ("Validation failed. Details: 'chatId' is required" means
	// phoneNumber is not accepted) and point at the setting to change. It holds the target,
	// never the token (redacted all the same), and is empty for GetStateInstance. Error()
	// leaves it out: the message stays one line about the call, not about the row.
	Request string
	// Err is the underlying transport error, if any, with the real URL removed.
	Err error
}

// Error reads "Green API <method> <redacted URL>[: HTTP <status>][: <reason>][: <cause>]
// (<class>)": enough for a log line, without the token or the request body. It names the
// service, not this package: operators read it.
func (e *Error) Error() string {
	msg := fmt.Sprintf("Green API %s %s", e.Method, e.URL)
	if e.Status != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Reason != "" {
		msg += fmt.Sprintf(": %s", e.Reason)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + " (" + e.Class.String() + ")"
}

// Unwrap is the transport error, so errors.Is sees context.DeadlineExceeded and the like.
func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err, or 0 when err is not a *Error (a bug or a cancelled
// context, never a row's fault).
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return 0
}

// IsSystemic reports whether a failed call says nothing about the row it was for, so that the
// engine can tell an instance outage (several systemic failures in a row, on different rows,
// pause the instance) from a row's own failure. It is true for a ClassTransient *Error that
// got no complete response (a network error or timeout: Status 0, or a body cut short, which
// carries Err), and for HTTP 499 and 5xx. It is false for nil, for the caller's own
// cancellation (not an *Error), for 429 (ClassRateLimited, handled by slowing down), for 400
// reasons, for 200s that are not answers (such as one with none of the documented fields:
// those are about one call), and for every other class.
func IsSystemic(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Class != ClassTransient {
		return false
	}
	return e.Status == 0 || e.Err != nil || e.Status == 499 || e.Status >= 500 && e.Status <= 599
}
