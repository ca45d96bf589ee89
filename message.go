package tether

import (
	"encoding/json"
	"time"
)

// Message is one published message. ID is assigned by the gateway, unique,
// and sorts by publish time; ClientID is the publisher's optional
// idempotency key.
type Message struct {
	ID          string
	Target      Target
	Data        json.RawMessage
	ClientID    string
	PublishedAt time.Time
	ExpiresAt   time.Time
}

// MaxMessageIDLength bounds message ids a store accepts (the gateway
// assigns ULIDs, 26 bytes).
const MaxMessageIDLength = 256

// CheckStorable returns an EInvalid error for a message no store accepts:
// the checks every Store.Publish makes before it writes anything.
func CheckStorable(m *Message) error {
	switch {
	case m == nil:
		return Errorf(EInvalid, "message: nil")
	case m.ID == "" || len(m.ID) > MaxMessageIDLength:
		return Errorf(EInvalid, "message id: must be 1-%d bytes", MaxMessageIDLength)
	case m.Target.Kind != KindDevice && m.Target.Kind != KindGroup:
		return Errorf(EInvalid, "message %s: target kind must be device or group", m.ID)
	case !validTime(m.PublishedAt) || !validTime(m.ExpiresAt):
		return Errorf(EInvalid, "message %s: published_at and expires_at must be set (years 1678-2261)", m.ID)
	case !m.ExpiresAt.After(m.PublishedAt):
		return Errorf(EInvalid, "message %s: expires_at must be after published_at", m.ID)
	}
	if err := CheckID(string(m.Target.Kind), m.Target.ID); err != nil {
		return err
	}
	if m.ClientID != "" {
		return CheckID("client message", m.ClientID)
	}
	return nil
}

// validTime reports whether t is set and fits UnixNano.
func validTime(t time.Time) bool {
	return !t.IsZero() && t.Year() >= 1678 && t.Year() < 2262
}

// PublishResult is what a store answers for one published message.
type PublishResult struct {
	// ID is the message id; for a duplicate, the id of the original.
	ID string
	// Seq is the message's position in the log of its target.
	Seq uint64
	// Recipients is how many devices the message is addressed to.
	Recipients int
	// Duplicate is true when a message with the same ClientID and target
	// (or the same ID) was already accepted within its TTL; nothing was
	// stored again.
	Duplicate bool
}

// DeliveryState is the state of one message for one device.
type DeliveryState string

// Delivery states (SPEC section 6, GET /v1/messages/{id}).
const (
	StatePending   DeliveryState = "pending"  // not sent yet
	StateInflight  DeliveryState = "inflight" // sent at least once, not acked
	StateAcked     DeliveryState = "acked"
	StateExpired   DeliveryState = "expired"
	StateDead      DeliveryState = "dead"      // sent MaxAttempts times, never acked
	StateCancelled DeliveryState = "cancelled" // cancelled by DELETE /v1/messages/{id} before an ack
)

// Delivery is one message addressed to one device.
type Delivery struct {
	Device   string
	Message  *Message // set by Store.Pending; nil in MessageStatus
	State    DeliveryState
	Attempts int
	AckedAt  time.Time // zero unless acked
}

// MessageStatus answers GET /v1/messages/{id}.
type MessageStatus struct {
	Message    Message
	Deliveries []Delivery // sorted by device id
}
