package tether

import (
	"context"
	"encoding/json"
	"time"
)

// EventType names what a LogEvent reports (SPEC section 11).
type EventType string

// Event types of the event log.
const (
	EventAcked     EventType = "delivery.acked"
	EventDead      EventType = "delivery.dead"
	EventExpired   EventType = "delivery.expired"
	EventCancelled EventType = "delivery.cancelled"
	EventOnline    EventType = "device.online"
	EventOffline   EventType = "device.offline"
)

// LogEvent is one entry of the event log backends read (GET /v1/events)
// or receive by webhook. ID is assigned by the store when the event is
// appended: unique, and ordered as the log is; backends de-duplicate by
// it and pass it back as a cursor.
type LogEvent struct {
	ID   string
	Type EventType
	At   time.Time
	// Delivery events: the message, its target, the device and how many
	// times it was sent.
	Message  string
	Target   string
	Attempts int
	Device   string
	// Presence events: the node of the session and, for device.offline,
	// the close code (0 when the connection just went away).
	Node string
	Code int
}

// IsDelivery reports whether e is one of the delivery.* events.
func (e *LogEvent) IsDelivery() bool {
	switch e.Type {
	case EventAcked, EventDead, EventExpired, EventCancelled:
		return true
	}
	return false
}

// logEventJSON is the wire form of a LogEvent (SPEC section 11), as
// UnmarshalJSON reads it and AppendJSON writes it: delivery events carry
// message, target, device and attempts; presence events device, node and
// (offline) code.
type logEventJSON struct {
	ID       string    `json:"id"`
	Type     EventType `json:"type"`
	At       string    `json:"at"`
	Message  string    `json:"message,omitempty"`
	Target   string    `json:"target,omitempty"`
	Device   string    `json:"device"`
	Attempts *int      `json:"attempts,omitempty"`
	Node     string    `json:"node,omitempty"`
	Code     *int      `json:"code,omitempty"`
}

// TimeFormat is how the HTTP API and the event log write times:
// RFC 3339 in UTC with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON writes e as the event log's JSON object (AppendJSON).
func (e LogEvent) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(nil, true), nil
}

// UnmarshalJSON reads the event log's JSON object.
func (e *LogEvent) UnmarshalJSON(b []byte) error {
	var w logEventJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	at, err := time.Parse(time.RFC3339Nano, w.At)
	if err != nil && w.At != "" {
		return err
	}
	*e = LogEvent{ID: w.ID, Type: w.Type, At: at, Message: w.Message, Target: w.Target, Device: w.Device, Node: w.Node}
	if w.Attempts != nil {
		e.Attempts = *w.Attempts
	}
	if w.Code != nil {
		e.Code = *w.Code
	}
	return nil
}

// EventStore is the durable, ordered event log of SPEC section 11, kept in
// the store. Delivery events are appended by the Store itself in the same
// transaction or script as the state change they report (Commit, Expire,
// Cancel), so none is lost or invented across a crash; presence events
// are appended by the hub with Append.
//
// The log also keeps, for the webhook sender, a lease (so that exactly one
// node of a fleet sends) and how far the holder has sent. Every method
// honours ctx and is one round trip.
type EventStore interface {
	// Append adds events at the end of the log, setting their ID.
	Append(ctx context.Context, events []LogEvent) error

	// Events returns up to limit events after the event whose ID is after
	// (after "" : from the oldest retained event), oldest first. An after
	// older than the oldest retained event reads from the oldest.
	Events(ctx context.Context, after string, limit int) ([]LogEvent, error)

	// Trim drops the events appended before before.
	Trim(ctx context.Context, before time.Time) error

	// Lease takes the webhook sender's lease for holder for ttl, or renews
	// it when holder has it. It answers whether holder has the lease and,
	// when it has, the ID of the last event sent ("" when none was).
	Lease(ctx context.Context, holder string, ttl time.Duration) (held bool, sent string, err error)

	// Sent records that the events up to and including id were sent, when
	// holder still has the lease; ErrLeaseLost (wrapped) otherwise.
	Sent(ctx context.Context, holder, id string) error
}

// DeliveryEvents returns the events that report settled (Outcome.Settled)
// for device at at. message returns the id of the message at a mark's
// position when the mark does not carry it; a position whose message it
// does not know ("") has no event.
func DeliveryEvents(device string, settled []Mark, at time.Time, message func(Mark) string) []LogEvent {
	if len(settled) == 0 {
		return nil
	}
	out := make([]LogEvent, 0, len(settled))
	for _, m := range settled {
		typ, ok := settledEvent[m.State]
		if !ok {
			continue
		}
		id := m.Message
		if id == "" {
			id = message(m)
		}
		if id == "" {
			continue
		}
		out = append(out, LogEvent{Type: typ, At: at, Message: id, Target: m.Source.String(), Device: device, Attempts: m.Attempts})
	}
	return out
}

// settledEvent is the event type of each settled state.
var settledEvent = map[DeliveryState]EventType{
	StateAcked:     EventAcked,
	StateDead:      EventDead,
	StateExpired:   EventExpired,
	StateCancelled: EventCancelled,
}
