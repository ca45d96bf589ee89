package tether

import (
	"context"
	"errors"
	"fmt"
)

// Application error codes. Each maps to one HTTP status in the HTTP adapter's
// single table; anything that is not an *Error is internal.
const (
	EInvalid      = "invalid"      // 400: the request is malformed
	EUnauthorized = "unauthorized" // 401: missing or bad credentials
	ENotFound     = "not_found"    // 404
	ETooLarge     = "too_large"    // 413: body or message data too large
	ERateLimited  = "rate_limited" // 429
	EUnavailable  = "unavailable"  // 503: store down, draining
	EOverloaded   = "overloaded"   // 503: the node is behind; retry after a while
	EInternal     = "internal"     // 500: never shown in detail
)

// Error is tether's application error: a code from the list above and a
// message a person can act on.
type Error struct {
	Code    string
	Message string
	Err     error // underlying cause, if any; never shown to clients
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error, and "" for nil. Deadline and cancellation
// errors count as EUnavailable: the store did not answer in time.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return EUnavailable
	}
	return EInternal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic text for internal errors (their detail is logged, never shown).
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	if ErrorCode(err) == EUnavailable {
		return "the store did not answer in time; retry later"
	}
	return "internal error"
}

// Sentinel errors stores return.
var (
	// ErrNotFound: the message, device or group is unknown.
	ErrNotFound = &Error{Code: ENotFound, Message: "not found"}
	// ErrUnavailable: the store cannot answer now (closed, down, timed out).
	ErrUnavailable = errors.New("store unavailable")
	// ErrClosed: the store or component was closed.
	ErrClosed = fmt.Errorf("closed: %w", ErrUnavailable)
	// ErrLeaseLost: another node holds the webhook sender's lease now.
	ErrLeaseLost = errors.New("webhook lease held by another node")
)
