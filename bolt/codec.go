package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tetherpush/tether"
)

// Key layout. Every bucket lives at the root of the file; ids never contain
// a 0x00 byte (tether.ValidID), so "a\x00b" keys sort by a, then by b, and a
// prefix scan on "a\x00" never strays into another a. Message ids are opaque
// bytes that sort by publish time; they always come last in a key.
//
//	msg   msgID                    → message record
//	rcpt  msgID                    → recipient list (sorted device ids)
//	open  device 0x00 msgID        → delivery record, state pending or inflight
//	done  device 0x00 msgID        → delivery record, state acked, expired or dead
//	exp   expiresAt(8) msgID       → ∅   messages whose open deliveries are not yet expired
//	gc    expiresAt(8) msgID       → ∅   expired messages waiting to be purged
//	idem  target 0x00 clientID     → expiresAt(8) recipients(uvarint) msgID
//	dev   device                   → ∅   devices known through Join
//	mem   group 0x00 device        → ∅   members by group
//	grp   device 0x00 group        → ∅   groups by device
//	meta  "version"                → layout version
//
// Pending is a range scan of open from device 0x00 after; a delivery moves
// from open to done when it is acked, expired or killed, so open holds
// exactly the unacked deliveries. Expire walks exp and gc from the oldest
// expiry. expiresAt(8) is the big-endian UnixNano with its sign bit flipped,
// so that byte order is time order.
var (
	bucketMsg  = []byte("msg")
	bucketRcpt = []byte("rcpt")
	bucketOpen = []byte("open")
	bucketDone = []byte("done")
	bucketExp  = []byte("exp")
	bucketGC   = []byte("gc")
	bucketIdem = []byte("idem")
	bucketDev  = []byte("dev")
	bucketMem  = []byte("mem")
	bucketGrp  = []byte("grp")
	bucketMeta = []byte("meta")

	allBuckets = [][]byte{
		bucketMsg, bucketRcpt, bucketOpen, bucketDone, bucketExp, bucketGC,
		bucketIdem, bucketDev, bucketMem, bucketGrp, bucketMeta,
	}

	keyVersion = []byte("version")
)

// layoutVersion is stored under meta/version; Open refuses a file written
// with another layout.
const layoutVersion = 1

// errCorrupt reports a record that cannot be decoded.
var errCorrupt = errors.New("corrupt record")

// pairKey returns a 0x00 b: device+msgID, group+device, device+group,
// target+clientID.
func pairKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// prefixKey returns a 0x00, the prefix of every pairKey(a, …).
func prefixKey(a string) []byte {
	k := make([]byte, 0, len(a)+1)
	return append(append(k, a...), 0)
}

// timeKey returns the sortable 8-byte encoding of t followed by id.
func timeKey(t int64, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t)^(1<<63))
	return append(k, id...)
}

// splitTimeKey is the inverse of timeKey.
func splitTimeKey(k []byte) (int64, string) {
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)), string(k[8:])
}

// Delivery states as stored: one byte.
const (
	statePending byte = iota + 1
	stateInflight
	stateAcked
	stateExpired
	stateDead
)

var stateNames = [...]tether.DeliveryState{
	statePending:  tether.StatePending,
	stateInflight: tether.StateInflight,
	stateAcked:    tether.StateAcked,
	stateExpired:  tether.StateExpired,
	stateDead:     tether.StateDead,
}

// delivery is the stored state of one message for one device:
// state(1) attempts(uvarint) [ackedAt(varint UnixNano) when acked].
type delivery struct {
	state    byte
	attempts int
	ackedAt  int64
}

func (d delivery) encode() []byte {
	b := make([]byte, 1, 1+2*binary.MaxVarintLen64)
	b[0] = d.state
	b = binary.AppendUvarint(b, uint64(d.attempts))
	if d.state == stateAcked {
		b = binary.AppendVarint(b, d.ackedAt)
	}
	return b
}

func decodeDelivery(b []byte) (delivery, error) {
	if len(b) < 2 || b[0] < statePending || b[0] > stateDead {
		return delivery{}, fmt.Errorf("delivery: %w", errCorrupt)
	}
	d := delivery{state: b[0]}
	n, w := binary.Uvarint(b[1:])
	if w <= 0 {
		return delivery{}, fmt.Errorf("delivery attempts: %w", errCorrupt)
	}
	d.attempts = int(n)
	if d.state == stateAcked {
		at, w2 := binary.Varint(b[1+w:])
		if w2 <= 0 {
			return delivery{}, fmt.Errorf("delivery acked_at: %w", errCorrupt)
		}
		d.ackedAt = at
	}
	return d, nil
}

// public returns d as the domain type.
func (d delivery) public(device string) tether.Delivery {
	out := tether.Delivery{Device: device, State: stateNames[d.state], Attempts: d.attempts}
	if d.state == stateAcked {
		out.AckedAt = time.Unix(0, d.ackedAt).UTC()
	}
	return out
}

// Message record: publishedAt(varint UnixNano) expiresAt(varint)
// kind(1: 'd' or 'g') len(uvarint) targetID len(uvarint) clientID data…
// The id is the key. Binary rather than JSON: see docs/notes/store.md and
// BenchmarkCodec.

func encodeMessage(m *tether.Message) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+3+len(m.Target.ID)+len(m.ClientID)+len(m.Data))
	b = binary.AppendVarint(b, m.PublishedAt.UnixNano())
	b = binary.AppendVarint(b, m.ExpiresAt.UnixNano())
	kind := byte('d')
	if m.Target.Kind == tether.KindGroup {
		kind = 'g'
	}
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(m.Target.ID)))
	b = append(b, m.Target.ID...)
	b = binary.AppendUvarint(b, uint64(len(m.ClientID)))
	b = append(b, m.ClientID...)
	return append(b, m.Data...)
}

// messageExpiry returns the expiresAt of a message record without decoding
// the rest.
func messageExpiry(b []byte) (int64, error) {
	_, w := binary.Varint(b)
	if w <= 0 {
		return 0, fmt.Errorf("message published_at: %w", errCorrupt)
	}
	exp, w2 := binary.Varint(b[w:])
	if w2 <= 0 {
		return 0, fmt.Errorf("message expires_at: %w", errCorrupt)
	}
	return exp, nil
}

// decodeMessage decodes a message record, copying every byte out of b
// (bbolt's memory is valid only during its transaction).
func decodeMessage(id string, b []byte) (*tether.Message, error) {
	m := &tether.Message{ID: id}
	pub, w := binary.Varint(b)
	if w <= 0 {
		return nil, fmt.Errorf("message %q published_at: %w", id, errCorrupt)
	}
	b = b[w:]
	exp, w := binary.Varint(b)
	if w <= 0 || len(b) <= w {
		return nil, fmt.Errorf("message %q expires_at: %w", id, errCorrupt)
	}
	b = b[w:]
	m.PublishedAt, m.ExpiresAt = time.Unix(0, pub).UTC(), time.Unix(0, exp).UTC()
	switch b[0] {
	case 'd':
		m.Target.Kind = tether.KindDevice
	case 'g':
		m.Target.Kind = tether.KindGroup
	default:
		return nil, fmt.Errorf("message %q target kind: %w", id, errCorrupt)
	}
	var s string
	var err error
	if s, b, err = readString(b[1:]); err != nil {
		return nil, fmt.Errorf("message %q target: %w", id, err)
	}
	m.Target.ID = s
	if m.ClientID, b, err = readString(b); err != nil {
		return nil, fmt.Errorf("message %q client id: %w", id, err)
	}
	m.Data = bytes.Clone(b)
	if m.Data == nil {
		m.Data = []byte{}
	}
	return m, nil
}

// readString reads a uvarint length and that many bytes.
func readString(b []byte) (string, []byte, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return "", nil, errCorrupt
	}
	return string(b[w : w+int(n)]), b[w+int(n):], nil
}

// encodeRecipients encodes a sorted device list: count(uvarint) then each
// id as len(uvarint) bytes.
func encodeRecipients(devices []string) []byte {
	size := binary.MaxVarintLen64
	for _, d := range devices {
		size += 1 + len(d)
	}
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(len(devices)))
	for _, d := range devices {
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	return b
}

func decodeRecipients(b []byte) ([]string, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("recipients: %w", errCorrupt)
	}
	b = b[w:]
	out := make([]string, 0, n)
	for i := uint64(0); i < n; i++ {
		var d string
		var err error
		if d, b, err = readString(b); err != nil {
			return nil, fmt.Errorf("recipients: %w", err)
		}
		out = append(out, d)
	}
	return out, nil
}

// idem is an idempotency record: the message a (target, client id) pair
// was first accepted as.
type idem struct {
	expiresAt  int64
	recipients int
	id         string
}

func (r idem) encode() []byte {
	b := make([]byte, 8, 8+binary.MaxVarintLen64+len(r.id))
	binary.BigEndian.PutUint64(b, uint64(r.expiresAt))
	b = binary.AppendUvarint(b, uint64(r.recipients))
	return append(b, r.id...)
}

func decodeIdem(b []byte) (idem, error) {
	if len(b) < 9 {
		return idem{}, fmt.Errorf("idempotency key: %w", errCorrupt)
	}
	r := idem{expiresAt: int64(binary.BigEndian.Uint64(b))}
	n, w := binary.Uvarint(b[8:])
	if w <= 0 {
		return idem{}, fmt.Errorf("idempotency key: %w", errCorrupt)
	}
	r.recipients, r.id = int(n), string(b[8+w:])
	return r, nil
}
