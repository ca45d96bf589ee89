package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tetherpush/tether"
)

// errCorrupt reports a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt record")

// recordVersion is the first byte of a message record.
const recordVersion = 1

// encodeMessage encodes a message record: version, published_at and
// expires_at (varint Unix ns), target kind ('d' or 'g'), target id and
// client id (uvarint length and bytes), then the data to the end. The id
// is the key or field the record is stored under.
func encodeMessage(m *tether.Message) string {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+3+len(m.Target.ID)+len(m.ClientID)+len(m.Data)+2)
	b = append(b, recordVersion)
	b = binary.AppendVarint(b, m.PublishedAt.UnixNano())
	b = binary.AppendVarint(b, m.ExpiresAt.UnixNano())
	kind := byte('d')
	if m.Target.Kind == tether.KindGroup {
		kind = 'g'
	}
	b = append(b, kind)
	b = appendString(b, m.Target.ID)
	b = appendString(b, m.ClientID)
	return string(append(b, m.Data...))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeMessage decodes the record of message id.
func decodeMessage(id, rec string) (*tether.Message, error) {
	d := decoder{b: []byte(rec)}
	if v := d.byte(); v != recordVersion {
		return nil, fmt.Errorf("message %s: record version %d: %w", id, v, errCorrupt)
	}
	m := &tether.Message{ID: id}
	m.PublishedAt = time.Unix(0, d.varint()).UTC()
	m.ExpiresAt = time.Unix(0, d.varint()).UTC()
	switch d.byte() {
	case 'd':
		m.Target.Kind = tether.KindDevice
	case 'g':
		m.Target.Kind = tether.KindGroup
	default:
		d.err = errCorrupt
	}
	m.Target.ID = d.string()
	m.ClientID = d.string()
	if d.err != nil {
		return nil, fmt.Errorf("message %s: %w", id, errCorrupt)
	}
	m.Data = append([]byte(nil), d.b...)
	return m, nil
}

// decoder reads a record; the first failure sticks in err.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if d.err != nil || n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n, k := binary.Uvarint(d.b)
	if d.err != nil || k <= 0 || n > uint64(len(d.b)-k) {
		d.err = errCorrupt
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

// meta is what an expiry bucket keeps of a message: what Expire needs to
// find its deliveries and idempotency key, and what Message needs to list
// its deliveries.
type meta struct {
	target     tether.Target
	clientID   string
	recipients []string // sorted
}

// encode returns "target\nclientID\ndevice\n…": ids never contain a
// newline (tether.ValidID).
func (m meta) encode() string {
	var b strings.Builder
	b.WriteString(m.target.String())
	b.WriteByte('\n')
	b.WriteString(m.clientID)
	for _, d := range m.recipients {
		b.WriteByte('\n')
		b.WriteString(d)
	}
	return b.String()
}

// metaTarget returns the target part of an encoded meta, as Lua sees it.
func metaTarget(s string) string {
	t, _, _ := strings.Cut(s, "\n")
	return t
}

func decodeMeta(s string) (meta, error) {
	parts := strings.Split(s, "\n")
	if len(parts) < 2 {
		return meta{}, fmt.Errorf("message meta %q: %w", clip(s), errCorrupt)
	}
	t, err := tether.ParseTarget(parts[0])
	if err != nil {
		return meta{}, fmt.Errorf("message meta target %q: %w", clip(parts[0]), errCorrupt)
	}
	return meta{target: t, clientID: parts[1], recipients: parts[2:]}, nil
}

// Delivery states as stored.
const (
	stPending  = 'p'
	stInflight = 'i'
	stAcked    = 'a'
	stExpired  = 'e'
	stDead     = 'd'
)

var states = map[byte]tether.DeliveryState{
	stPending: tether.StatePending, stInflight: tether.StateInflight,
	stAcked: tether.StateAcked, stExpired: tether.StateExpired, stDead: tether.StateDead,
}

// newDelivery returns the stored form of a pending delivery of a message
// expiring at exp (Unix ns).
func newDelivery(exp int64) string {
	ms, sub := splitMs(exp)
	return "p|0|" + strconv.FormatInt(ms, 10) + "|" + strconv.FormatInt(sub, 10) + "|"
}

// decodeDelivery decodes a stored delivery of device.
func decodeDelivery(device, v string) (tether.Delivery, error) {
	parts := strings.Split(v, "|")
	if len(parts) != 5 || len(parts[0]) != 1 {
		return tether.Delivery{}, fmt.Errorf("delivery %q: %w", clip(v), errCorrupt)
	}
	st, ok := states[parts[0][0]]
	attempts, err := strconv.Atoi(parts[1])
	if !ok || err != nil {
		return tether.Delivery{}, fmt.Errorf("delivery %q: %w", clip(v), errCorrupt)
	}
	d := tether.Delivery{Device: device, State: st, Attempts: attempts}
	if parts[4] != "" {
		ns, err := strconv.ParseInt(parts[4], 10, 64)
		if err != nil {
			return tether.Delivery{}, fmt.Errorf("delivery %q: %w", clip(v), errCorrupt)
		}
		d.AckedAt = time.Unix(0, ns).UTC()
	}
	return d, nil
}

// idem is an idempotency entry: the message accepted for a client id and
// target, with its expiry and recipient count.
type idem struct {
	expiresAt  int64
	recipients int
	id         string
}

// encode returns timeKey(expiresAt) recipients "|" id.
func (e idem) encode() string {
	return timeKey(e.expiresAt) + strconv.Itoa(e.recipients) + "|" + e.id
}

func decodeIdem(s string) (idem, error) {
	if len(s) < timeKeyLen {
		return idem{}, fmt.Errorf("idempotency entry %q: %w", clip(s), errCorrupt)
	}
	exp, ok := parseTimeKey(s[:timeKeyLen])
	n, id, found := strings.Cut(s[timeKeyLen:], "|")
	count, err := strconv.Atoi(n)
	if !ok || !found || err != nil || count < 0 {
		return idem{}, fmt.Errorf("idempotency entry %q: %w", clip(s), errCorrupt)
	}
	return idem{expiresAt: exp, recipients: count, id: id}, nil
}

// clip shortens a stored value quoted in an error.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}
