// Package wire is protocol v1 between devices and tether (SPEC section 5):
// frame types, close codes and a strict decoder. The gateway, the Go SDK,
// `tether check` and `tether bench` share it; it imports the standard
// library only.
package wire

// Subprotocol is the WebSocket subprotocol name of protocol v1.
const Subprotocol = "tether.v1"

// Path is the WebSocket endpoint on the gateway's listen address.
const Path = "/v1/connect"

// Close codes (SPEC section 5).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001 // server shutting down; reconnect with jitter
	CloseUnsupported     = 1003 // binary frame
	CloseInvalidPayload  = 1007 // frame that is not a JSON object
	ClosePolicyViolation = 1008 // rate limit, protocol misuse
	CloseTooBig          = 1009 // frame larger than --max-message-bytes
	CloseInternal        = 1011
	CloseTokenExpired    = 4401
	CloseHeartbeat       = 4408 // nothing received for 2 × heartbeat
	CloseReplaced        = 4409 // a newer connection of the same device
	CloseRateLimited     = 4429 // too many frames
	CloseSlowConsumer    = 4503 // outbound queue full or write deadline passed
)

// CloseReason returns a short text for a close code, sent in close frames.
func CloseReason(code int) string {
	switch code {
	case CloseNormal:
		return "normal closure"
	case CloseGoingAway:
		return "server shutting down"
	case CloseUnsupported:
		return "binary frames are not supported"
	case CloseInvalidPayload:
		return "frame is not a JSON object"
	case ClosePolicyViolation:
		return "policy violation"
	case CloseTooBig:
		return "frame too large"
	case CloseInternal:
		return "internal error"
	case CloseTokenExpired:
		return "token expired"
	case CloseHeartbeat:
		return "heartbeat timeout"
	case CloseReplaced:
		return "replaced by a newer connection"
	case CloseRateLimited:
		return "rate limited"
	case CloseSlowConsumer:
		return "slow consumer"
	}
	return ""
}

// Retryable reports whether a client should reconnect after close code:
// everything except a rejected or replaced session.
func Retryable(code int) bool {
	switch code {
	case CloseReplaced, CloseUnsupported, CloseInvalidPayload, CloseTooBig:
		return false
	}
	return true
}

// RetryableStatus reports whether a client should dial again after the
// gateway answered the WebSocket handshake with HTTP status instead of 101:
// 401 (token missing, invalid or expired) and 403 (origin refused) are
// final; 429, 503 (node at --max-connections or draining), the other 5xx and
// every other status are worth retrying, after Retry-After when there is
// one. A device gives up only on what a retry cannot change: a proxy's
// passing 404 or 502 during a deploy must not stop it for good.
func RetryableStatus(status int) bool {
	switch status {
	case 401, 403:
		return false
	}
	return true
}

// Frame types.
const (
	TypeWelcome = "welcome"
	TypeMessage = "message"
	TypePong    = "pong"
	TypeError   = "error"
	TypeAck     = "ack"
	TypePing    = "ping"
)

// Error frame codes.
const (
	ErrUnknownType  = "unknown_type"
	ErrInvalidFrame = "invalid_frame"
	ErrTooManyIDs   = "too_many_ids"
)

// MaxAckIDs is the most ids one ack frame may carry.
const MaxAckIDs = 1000
