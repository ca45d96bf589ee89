package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tetherpush/tether/wire"
)

// ErrClosed is what Err reports after Close, or after the context given to
// Dial is done.
var ErrClosed = errors.New("client closed")

// ErrHeartbeatTimeout reports a server that sent nothing, not even a
// WebSocket ping, for twice the heartbeat of its welcome frame. The client
// closes such a connection with code 4408 and reconnects.
var ErrHeartbeatTimeout = errors.New("heartbeat timeout: server silent for 2 × heartbeat")

// ErrProtocol is wrapped by every error about a server that broke protocol v1
// (no welcome first, a frame that is not a JSON object, a binary frame). The
// client closes the connection with a matching close code and reconnects.
var ErrProtocol = errors.New("protocol violation")

// CloseError is a close frame received from the server. Its Code is one of
// the wire.Close* constants; wire.Retryable says whether the client
// reconnects after it.
type CloseError struct {
	Code   int
	Reason string
}

// Error gives the close code and the reason the server sent, or the
// protocol's name for the code when it sent none.
func (e *CloseError) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = wire.CloseReason(e.Code)
	}
	if reason == "" {
		return fmt.Sprintf("closed by server: code %d", e.Code)
	}
	return fmt.Sprintf("closed by server: code %d (%s)", e.Code, reason)
}

// StatusError is an HTTP answer other than 101 to the WebSocket handshake:
// 401 (bad or expired token) and 403 (origin refused) end the client; others,
// such as 503 at --max-connections, are retried, no sooner than RetryAfter
// when the server sent one (capped at MaxBackoff).
type StatusError struct {
	Status     int
	RetryAfter time.Duration
}

// Error gives the HTTP status of the answer.
func (e *StatusError) Error() string {
	return "handshake: HTTP " + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
}

// protocolError is an ErrProtocol with the close code the client sends.
type protocolError struct {
	code int
	msg  string
}

// Error is ErrProtocol's message followed by what was wrong.
func (e *protocolError) Error() string { return ErrProtocol.Error() + ": " + e.msg }

// Unwrap returns ErrProtocol, so errors.Is(err, ErrProtocol) holds.
func (e *protocolError) Unwrap() error { return ErrProtocol }

func protoErrorf(code int, format string, args ...any) error {
	return &protocolError{code: code, msg: fmt.Sprintf(format, args...)}
}

// retryable reports whether the client reconnects after a session that
// ended with err.
func retryable(err error) bool {
	var ce *CloseError
	if errors.As(err, &ce) {
		return wire.Retryable(ce.Code)
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status != http.StatusUnauthorized && se.Status != http.StatusForbidden
	}
	return true
}
