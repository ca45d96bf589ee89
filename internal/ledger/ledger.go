// Package ledger holds the binary records both stores keep: messages as
// their logs hold them, a device's cursors, history ranges, membership
// spans and idempotency entries. Records are varints and length-prefixed
// strings, each starting with a version byte; every decoder copies what it
// keeps (bbolt's memory is valid only during its transaction) and answers
// ErrCorrupt for anything it cannot read. The decoders are fuzzed.
package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tetherpush/tether"
)

// ErrCorrupt reports a record that cannot be decoded.
var ErrCorrupt = errors.New("corrupt record")

// Record versions: the first byte of each record.
const (
	versionMessage = 1
	versionCursors = 1
	versionRange   = 1
	versionSpans   = 1
	versionIdem    = 1
)

// maxCount bounds every count a decoder reads, so that a corrupt record
// cannot make it allocate without limit.
const maxCount = 1 << 24

// EncodeMessage encodes a message with its id: version, id, published_at
// and expires_at (varint Unix ns), target kind ('d' or 'g') and id, client
// id, then the data to the end.
func EncodeMessage(m *tether.Message) []byte {
	b := make([]byte, 0, 4+2*binary.MaxVarintLen64+len(m.ID)+len(m.Target.ID)+len(m.ClientID)+len(m.Data)+3)
	b = append(b, versionMessage)
	b = appendString(b, m.ID)
	b = binary.AppendVarint(b, m.PublishedAt.UnixNano())
	b = binary.AppendVarint(b, m.ExpiresAt.UnixNano())
	b = append(b, kindByte(m.Target.Kind))
	b = appendString(b, m.Target.ID)
	b = appendString(b, m.ClientID)
	return append(b, m.Data...)
}

// DecodeMessage decodes a message record.
func DecodeMessage(rec []byte) (*tether.Message, error) {
	d := decoder{b: rec}
	d.version(versionMessage)
	m := &tether.Message{ID: d.string()}
	m.PublishedAt = time.Unix(0, d.varint()).UTC()
	m.ExpiresAt = time.Unix(0, d.varint()).UTC()
	m.Target = tether.Target{Kind: d.kind(), ID: d.string()}
	m.ClientID = d.string()
	if d.err != nil {
		return nil, fmt.Errorf("message: %w", d.err)
	}
	m.Data = append([]byte{}, d.b...)
	return m, nil
}

// MessageExpiry returns the expires_at of a message record (Unix ns)
// without decoding the rest.
func MessageExpiry(rec []byte) (int64, error) {
	d := decoder{b: rec}
	d.version(versionMessage)
	d.skipString()
	d.varint()
	exp := d.varint()
	if d.err != nil {
		return 0, fmt.Errorf("message expiry: %w", d.err)
	}
	return exp, nil
}

// Idem is an idempotency entry: the message a (target, client id) pair
// was first accepted as.
type Idem struct {
	ExpiresAt  int64 // Unix ns
	Recipients int
	Seq        uint64
	ID         string
}

// EncodeIdem encodes an idempotency entry.
func EncodeIdem(e Idem) []byte {
	b := []byte{versionIdem}
	b = binary.AppendVarint(b, e.ExpiresAt)
	b = binary.AppendUvarint(b, uint64(e.Recipients))
	b = binary.AppendUvarint(b, e.Seq)
	return appendString(b, e.ID)
}

// DecodeIdem decodes an idempotency entry.
func DecodeIdem(b []byte) (Idem, error) {
	d := decoder{b: b}
	d.version(versionIdem)
	e := Idem{ExpiresAt: d.varint(), Recipients: int(d.count()), Seq: d.uvarint(), ID: d.string()}
	if d.err != nil || len(d.b) != 0 {
		return Idem{}, fmt.Errorf("idempotency entry: %w", ErrCorrupt)
	}
	return e, nil
}

// EncodeSpans encodes a device's spans in a group (the group's membership
// index keeps a copy of them).
func EncodeSpans(spans []tether.Span) []byte {
	b := []byte{versionSpans}
	return appendSpans(b, spans)
}

// DecodeSpans decodes spans.
func DecodeSpans(b []byte) ([]tether.Span, error) {
	d := decoder{b: b}
	d.version(versionSpans)
	s := d.spans()
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("spans: %w", ErrCorrupt)
	}
	return s, nil
}

// EncodeRange encodes a history range; its To is the key it is stored
// under and is not repeated.
func EncodeRange(r tether.Range) []byte {
	b := []byte{versionRange}
	return appendRangeBody(b, r)
}

// DecodeRange decodes the history range stored under to.
func DecodeRange(to uint64, b []byte) (tether.Range, error) {
	d := decoder{b: b}
	d.version(versionRange)
	r := d.rangeBody(to)
	if d.err != nil || len(d.b) != 0 {
		return tether.Range{}, fmt.Errorf("history range: %w", ErrCorrupt)
	}
	return r, nil
}

// appendRangeBody appends r without its To: From as To−From, state,
// attempts, since (varint Unix ns) and at as at−since.
func appendRangeBody(b []byte, r tether.Range) []byte {
	b = binary.AppendUvarint(b, r.To-r.From)
	b = append(b, stateByte(r.State))
	b = binary.AppendUvarint(b, uint64(r.Attempts))
	b = binary.AppendVarint(b, r.Since.UnixNano())
	return binary.AppendVarint(b, r.At.UnixNano()-r.Since.UnixNano())
}

func (d *decoder) rangeBody(to uint64) tether.Range {
	back := d.uvarint()
	if back > to {
		d.fail()
	}
	r := tether.Range{From: to - back, To: to, State: d.state(), Attempts: int(d.count())}
	since := d.varint()
	r.Since = time.Unix(0, since).UTC()
	r.At = time.Unix(0, since+d.varint()).UTC()
	return r
}

// EncodeCursors encodes a device's cursors: version, count, then each
// cursor: source kind and id, floor, settled ranges, flights, spans and
// tail.
func EncodeCursors(cs []tether.Cursor) []byte {
	b := make([]byte, 0, 16+48*len(cs))
	b = append(b, versionCursors)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = append(b, kindByte(c.Source.Kind))
		b = appendString(b, c.Source.ID)
		b = binary.AppendUvarint(b, c.Floor)
		b = binary.AppendUvarint(b, uint64(len(c.Settled)))
		for _, r := range c.Settled {
			b = binary.AppendUvarint(b, r.To)
			b = appendRangeBody(b, r)
		}
		b = binary.AppendUvarint(b, uint64(len(c.Flight)))
		for _, f := range c.Flight {
			b = binary.AppendUvarint(b, f.Seq)
			b = binary.AppendUvarint(b, uint64(f.Attempts))
		}
		b = appendSpans(b, c.Spans)
		b = binary.AppendUvarint(b, c.Tail.To)
		if c.Tail.To != 0 {
			b = appendRangeBody(b, c.Tail)
		}
	}
	return b
}

// DecodeCursors decodes a device's cursors; nil or empty b is no cursor.
func DecodeCursors(b []byte) ([]tether.Cursor, error) {
	if len(b) == 0 {
		return nil, nil
	}
	d := decoder{b: b}
	d.version(versionCursors)
	n := d.count()
	cs := make([]tether.Cursor, 0, min(n, 64))
	for i := uint64(0); i < n && d.err == nil; i++ {
		cs = append(cs, d.cursor())
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("cursors: %w", ErrCorrupt)
	}
	return cs, nil
}

func (d *decoder) cursor() tether.Cursor {
	c := tether.Cursor{Source: tether.Target{Kind: d.kind(), ID: d.string()}, Floor: d.uvarint()}
	if n := d.count(); n > 0 {
		c.Settled = make([]tether.Range, 0, min(n, 256))
		for j := uint64(0); j < n && d.err == nil; j++ {
			c.Settled = append(c.Settled, d.rangeBody(d.uvarint()))
		}
	}
	if n := d.count(); n > 0 {
		c.Flight = make([]tether.Flight, 0, min(n, 256))
		for j := uint64(0); j < n && d.err == nil; j++ {
			c.Flight = append(c.Flight, tether.Flight{Seq: d.uvarint(), Attempts: int(d.count())})
		}
	}
	c.Spans = d.spans()
	if to := d.uvarint(); to != 0 {
		c.Tail = d.rangeBody(to)
	}
	return c
}

func appendSpans(b []byte, spans []tether.Span) []byte {
	b = binary.AppendUvarint(b, uint64(len(spans)))
	for _, s := range spans {
		b = binary.AppendUvarint(b, s.From)
		b = binary.AppendUvarint(b, s.To)
	}
	return b
}

func (d *decoder) spans() []tether.Span {
	n := d.count()
	if n == 0 {
		return nil
	}
	out := make([]tether.Span, 0, min(n, 64))
	for j := uint64(0); j < n && d.err == nil; j++ {
		out = append(out, tether.Span{From: d.uvarint(), To: d.uvarint()})
	}
	return out
}

// Target kinds and delivery states as stored: one byte each.

func kindByte(k tether.TargetKind) byte {
	if k == tether.KindGroup {
		return 'g'
	}
	return 'd'
}

var states = map[byte]tether.DeliveryState{
	'p': tether.StatePending, 'i': tether.StateInflight, 'a': tether.StateAcked,
	'e': tether.StateExpired, 'x': tether.StateDead, 'c': tether.StateCancelled,
}

func stateByte(s tether.DeliveryState) byte {
	for b, st := range states {
		if st == s {
			return b
		}
	}
	return 'p'
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decoder reads a record; the first failure sticks in err and every later
// read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = ErrCorrupt, nil }

func (d *decoder) version(want byte) {
	if len(d.b) == 0 || d.b[0] != want {
		d.fail()
		return
	}
	d.b = d.b[1:]
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, w := binary.Uvarint(d.b)
	if w <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[w:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, w := binary.Varint(d.b)
	if w <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[w:]
	return v
}

// count reads a uvarint bounded by maxCount.
func (d *decoder) count() uint64 {
	n := d.uvarint()
	if n > maxCount {
		d.fail()
		return 0
	}
	return n
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) skipString() {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail()
		return
	}
	if d.err == nil {
		d.b = d.b[n:]
	}
}

func (d *decoder) kind() tether.TargetKind {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return ""
	}
	c := d.b[0]
	d.b = d.b[1:]
	switch c {
	case 'd':
		return tether.KindDevice
	case 'g':
		return tether.KindGroup
	}
	d.fail()
	return ""
}

func (d *decoder) state() tether.DeliveryState {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return ""
	}
	s, ok := states[d.b[0]]
	d.b = d.b[1:]
	if !ok {
		d.fail()
	}
	return s
}
