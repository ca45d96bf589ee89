package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Welcome is the first frame of every session.
type Welcome struct {
	Type         string   `json:"type"`
	Device       string   `json:"device"`
	Groups       []string `json:"groups"`
	Node         string   `json:"node"`
	HeartbeatMS  int64    `json:"heartbeat_ms"`
	AckTimeoutMS int64    `json:"ack_timeout_ms"`
	MaxInflight  int      `json:"max_inflight"`
}

// Error is an error frame: before a close, or alone for a non-fatal problem.
type Error struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Ack is the client's acknowledgement of message ids.
type Ack struct {
	Type string   `json:"type"`
	IDs  []string `json:"ids"`
}

// ServerFrame is any frame the server sends, as a client decodes it.
type ServerFrame struct {
	Type string `json:"type"`
	// welcome
	Device       string   `json:"device,omitempty"`
	Groups       []string `json:"groups,omitempty"`
	Node         string   `json:"node,omitempty"`
	HeartbeatMS  int64    `json:"heartbeat_ms,omitempty"`
	AckTimeoutMS int64    `json:"ack_timeout_ms,omitempty"`
	MaxInflight  int      `json:"max_inflight,omitempty"`
	// message
	ID          string          `json:"id,omitempty"`
	Target      string          `json:"target,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	PublishedAt time.Time       `json:"published_at,omitzero"`
	Attempt     int             `json:"attempt,omitempty"`
	// error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// ClientFrame is a decoded frame from a client.
type ClientFrame struct {
	Type string   // TypeAck or TypePing
	IDs  []string // for TypeAck
}

// Decode errors. ErrNotObject closes with 1007; *UnknownTypeError is answered
// with an error frame and the connection stays open; ErrBadFrame closes with
// 1008 after an error frame.
var (
	ErrNotObject = errors.New("frame is not a JSON object")
	ErrBadFrame  = errors.New("malformed frame")
)

// UnknownTypeError reports a frame whose type is not one of protocol v1.
type UnknownTypeError struct{ Type string }

// Error quotes the type, clipped to 32 bytes, and names the types a
// client may send.
func (e *UnknownTypeError) Error() string {
	t := e.Type
	if len(t) > 32 {
		t = t[:32] + "…"
	}
	return fmt.Sprintf("unknown frame type %q: want ack or ping", t)
}

// DecodeClient decodes one client frame strictly: one JSON object with a
// known type and well-formed fields. Whitespace around the object is the
// JSON kind only (space, tab, CR, LF). Fields a frame type does not use are
// ignored, so that a newer client may add some.
func DecodeClient(b []byte) (ClientFrame, error) {
	if f, ok := decodeFast(b); ok {
		return f, nil
	}
	return decodeClientJSON(b)
}

// decodeClientJSON is DecodeClient with encoding/json, for every frame.
func decodeClientJSON(b []byte) (ClientFrame, error) {
	var raw struct {
		Type *string         `json:"type"`
		IDs  json.RawMessage `json:"ids"`
	}
	if !isObject(b) {
		return ClientFrame{}, ErrNotObject
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if raw.Type == nil {
		return ClientFrame{}, fmt.Errorf("%w: missing \"type\"", ErrBadFrame)
	}
	switch *raw.Type {
	case TypePing:
		return ClientFrame{Type: TypePing}, nil
	case TypeAck:
		ids, err := decodeIDs(raw.IDs)
		if err != nil {
			return ClientFrame{}, err
		}
		return ClientFrame{Type: TypeAck, IDs: ids}, nil
	}
	return ClientFrame{}, &UnknownTypeError{Type: *raw.Type}
}

// decodeIDs decodes the "ids" of an ack: an array of at most MaxAckIDs
// strings.
func decodeIDs(raw json.RawMessage) ([]string, error) {
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil || ids == nil {
		return nil, fmt.Errorf("%w: ack needs \"ids\", an array of strings", ErrBadFrame)
	}
	if len(ids) > MaxAckIDs {
		return nil, fmt.Errorf("%w: ack carries %d ids, at most %d allowed", ErrBadFrame, len(ids), MaxAckIDs)
	}
	// encoding/json decodes a null element as "": look closer only then,
	// so that the usual ack costs nothing more.
	if slices.Contains(ids, "") && hasNonString(raw) {
		return nil, fmt.Errorf("%w: ack needs \"ids\", an array of strings", ErrBadFrame)
	}
	return ids, nil
}

// hasNonString reports whether the JSON array raw holds an element that is
// not a string.
func hasNonString(raw json.RawMessage) bool {
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return true
	}
	for _, e := range elems {
		if e = bytes.TrimLeft(e, " \t\r\n"); len(e) == 0 || e[0] != '"' {
			return true
		}
	}
	return false
}

// isObject reports whether b is one valid JSON value, an object, with
// nothing but JSON whitespace around it.
func isObject(b []byte) bool {
	v := bytes.TrimLeft(b, " \t\r\n")
	return len(v) > 0 && v[0] == '{' && json.Valid(b)
}

// DecodeServer decodes one server frame strictly: one JSON object with a
// non-empty string "type" and fields of the right JSON types. It returns
// ErrNotObject for anything but a JSON object and wraps ErrBadFrame for a
// missing type or a mistyped field. A type this package does not know is
// not an error: a newer server may send frames an older client skips.
func DecodeServer(b []byte) (ServerFrame, error) {
	var f ServerFrame
	if !isObject(b) {
		return ServerFrame{}, ErrNotObject
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return ServerFrame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if f.Type == "" {
		return ServerFrame{}, fmt.Errorf("%w: missing \"type\"", ErrBadFrame)
	}
	return f, nil
}

// Welcome returns the welcome fields of f. It does not check f.Type.
func (f ServerFrame) Welcome() Welcome {
	return Welcome{
		Type:         f.Type,
		Device:       f.Device,
		Groups:       f.Groups,
		Node:         f.Node,
		HeartbeatMS:  f.HeartbeatMS,
		AckTimeoutMS: f.AckTimeoutMS,
		MaxInflight:  f.MaxInflight,
	}
}

// AppendMessage appends a message frame to dst. id and target must be
// JSON-safe (validated ids are); data must be valid compact JSON.
func AppendMessage(dst []byte, id, target string, data []byte, publishedAt time.Time, attempt int) []byte {
	dst = append(dst, `{"type":"message","id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","target":"`...)
	dst = append(dst, target...)
	dst = append(dst, `","data":`...)
	dst = append(dst, data...)
	dst = append(dst, `,"published_at":"`...)
	dst = publishedAt.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","attempt":`...)
	dst = strconv.AppendInt(dst, int64(attempt), 10)
	return append(dst, '}')
}

// EncodeWelcome returns a welcome frame.
func EncodeWelcome(w Welcome) []byte {
	w.Type = TypeWelcome
	if w.Groups == nil {
		w.Groups = []string{}
	}
	return mustJSON(w)
}

// EncodeError returns an error frame.
func EncodeError(code, message string) []byte {
	return mustJSON(Error{Type: TypeError, Code: code, Message: message})
}

// Pong is the answer to an application ping.
var Pong = []byte(`{"type":"pong"}`)

// Ping is a client's application ping.
var Ping = []byte(`{"type":"ping"}`)

// EncodeAck returns an ack frame for ids; nil ids encode as [], never as
// null, which DecodeClient refuses.
func EncodeAck(ids []string) []byte {
	if ids == nil {
		ids = []string{}
	}
	return mustJSON(Ack{Type: TypeAck, IDs: ids})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("wire: encode %T: %v", v, err))
	}
	return b
}
