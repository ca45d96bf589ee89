// Package tether holds the domain of the tether push gateway: devices,
// groups, targets, messages, deliveries, the Store contract every backend
// implements, and the application error type. It imports the standard
// library only; adapters (stores, HTTP, the hub) import it, never the other
// way round.
package tether

import (
	"strings"
	"time"
)

// Defaults of the delivery semantics (SPEC section 3 and 4). A zero field in
// a configuration means the matching default.
const (
	DefaultHeartbeat       = 25 * time.Second
	DefaultAckTimeout      = 30 * time.Second
	DefaultMaxInflight     = 256
	DefaultMaxMessageBytes = 64 << 10
	DefaultTTL             = 24 * time.Hour
	DefaultMaxTTL          = 7 * 24 * time.Hour
	DefaultShutdownTimeout = 30 * time.Second

	// MaxIDLength is the longest device, group or client message id.
	MaxIDLength = 128
	// MaxAckIDs is the most ids one ack frame may carry.
	MaxAckIDs = 1000
	// MaxBatch is the most messages one batch publish may carry.
	MaxBatch = 1000
)

// ValidID reports whether s is a valid device, group or client message id:
// 1–128 characters from [A-Za-z0-9._:-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// TargetKind says whether a target addresses one device or a group.
type TargetKind string

// Target kinds.
const (
	KindDevice TargetKind = "device"
	KindGroup  TargetKind = "group"
)

// Target is the address of a message: one device or one group.
type Target struct {
	Kind TargetKind
	ID   string
}

// DeviceTarget returns the target addressing device id.
func DeviceTarget(id string) Target { return Target{Kind: KindDevice, ID: id} }

// GroupTarget returns the target addressing group id.
func GroupTarget(id string) Target { return Target{Kind: KindGroup, ID: id} }

// String returns the target in its wire form, "device:<id>" or "group:<id>".
func (t Target) String() string { return string(t.Kind) + ":" + t.ID }

// ParseTarget parses "device:<id>" or "group:<id>". Its errors are
// *Error with code EInvalid and say what is wrong.
func ParseTarget(s string) (Target, error) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok {
		return Target{}, Errorf(EInvalid, "target %q: want device:<id> or group:<id>", clip(s))
	}
	t := Target{Kind: TargetKind(kind), ID: id}
	if t.Kind != KindDevice && t.Kind != KindGroup {
		return Target{}, Errorf(EInvalid, "target %q: kind must be device or group", clip(s))
	}
	if !ValidID(id) {
		return Target{}, Errorf(EInvalid, "target %q: id must be 1-128 characters from [A-Za-z0-9._:-]", clip(s))
	}
	return t, nil
}

// CheckID returns an EInvalid error naming what when id is not a valid id.
func CheckID(what, id string) error {
	if ValidID(id) {
		return nil
	}
	return Errorf(EInvalid, "%s id %q: must be 1-128 characters from [A-Za-z0-9._:-]", what, clip(id))
}

// clip shortens hostile input before it is echoed in an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
