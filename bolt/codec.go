package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
	bolt "go.etcd.io/bbolt"
)

// Key layout (docs/notes/store.md). Every bucket lives at the root of the
// file. A source is a log's target in its wire form ("device:pos-1",
// "group:shop-1"); ids never contain a 0x00 byte (tether.ValidID), so
// "a\x00b" keys sort by a, then by b, and a prefix scan on "a\x00" never
// strays into another a. seq(8) is a position, big-endian.
//
//	log   source 0x00 seq(8)            → message record (ledger.EncodeMessage)
//	src   source                        → last seq(8) members(uvarint) trimmed(uvarint)
//	ids   msgID                         → source 0x00 seq(8) recipients(uvarint)
//	exp   expiresAt(8) msgID            → ∅   messages not yet expired by Expire
//	gc    expiresAt(8) msgID            → ∅   expired, waiting to be purged
//	idem  target 0x00 clientID          → ledger.Idem
//	cur   device                        → the device's cursors (ledger.EncodeCursors)
//	hist  device 0x00 source 0x00 To(8) → history range (ledger.EncodeRange)
//	mem   group 0x00 device             → the device's spans in the group (ledger.EncodeSpans)
//	meta  "version"                     → layout version
//
// A group publish writes one log entry whatever the group's size; an ack
// rewrites one cur record per device. src counts a group's members (open
// spans) so that a publish knows its recipients without scanning mem;
// trimmed is the position below which history and spans of the source
// were last trimmed. expiresAt(8) is the big-endian UnixNano with its sign
// bit flipped, so that byte order is time order.
var (
	bucketLog  = []byte("log")
	bucketSrc  = []byte("src")
	bucketIDs  = []byte("ids")
	bucketExp  = []byte("exp")
	bucketGC   = []byte("gc")
	bucketIdem = []byte("idem")
	bucketCur  = []byte("cur")
	bucketHist = []byte("hist")
	bucketMem  = []byte("mem")
	bucketMeta = []byte("meta")

	allBuckets = [][]byte{
		bucketLog, bucketSrc, bucketIDs, bucketExp, bucketGC, bucketIdem,
		bucketCur, bucketHist, bucketMem, bucketMeta,
	}

	keyVersion = []byte("version")
)

// layoutVersion is stored under meta/version; Open refuses a file written
// with another layout. Version 1 (one record per delivery) was the first
// release's.
const layoutVersion = 2

// errCorrupt reports a record that cannot be decoded.
var errCorrupt = ledger.ErrCorrupt

// buckets are the buckets of one transaction.
type buckets struct {
	log, src, ids, exp, gc, idem, cur, hist, mem *bolt.Bucket
}

func bucketsOf(tx *bolt.Tx) buckets {
	return buckets{
		log: tx.Bucket(bucketLog), src: tx.Bucket(bucketSrc), ids: tx.Bucket(bucketIDs),
		exp: tx.Bucket(bucketExp), gc: tx.Bucket(bucketGC), idem: tx.Bucket(bucketIdem),
		cur: tx.Bucket(bucketCur), hist: tx.Bucket(bucketHist), mem: tx.Bucket(bucketMem),
	}
}

// pairKey returns a 0x00 b.
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

// seqKey returns prefix followed by seq(8).
func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, seq)
}

// logKey returns the key of position seq of source's log.
func logKey(source tether.Target, seq uint64) []byte {
	return seqKey(prefixKey(source.String()), seq)
}

// histPrefix returns the prefix of the history keys of device in source.
func histPrefix(device string, source tether.Target) []byte {
	return prefixKey(string(pairKey(device, source.String())))
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

// source is a log's record in src.
type source struct {
	last    uint64 // newest position
	members int    // open spans (groups)
	trimmed uint64 // history and spans below it were trimmed
}

func (r source) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+2*binary.MaxVarintLen64), r.last)
	b = binary.AppendUvarint(b, uint64(r.members))
	return binary.AppendUvarint(b, r.trimmed)
}

func decodeSource(b []byte) (source, error) {
	if b == nil {
		return source{}, nil
	}
	if len(b) < 9 {
		return source{}, fmt.Errorf("source record: %w", errCorrupt)
	}
	r := source{last: binary.BigEndian.Uint64(b)}
	n, w := binary.Uvarint(b[8:])
	t, w2 := binary.Uvarint(b[8+max(w, 0):])
	if w <= 0 || w2 <= 0 {
		return source{}, fmt.Errorf("source record: %w", errCorrupt)
	}
	r.members, r.trimmed = int(n), t
	return r, nil
}

// getSource reads source t's record (zero when none).
func (b buckets) getSource(t tether.Target) (source, error) {
	return decodeSource(b.src.Get([]byte(t.String())))
}

func (b buckets) putSource(t tether.Target, r source) error {
	return b.src.Put([]byte(t.String()), r.encode())
}

// position is where a message id lives: its log, position and recipients.
type position struct {
	source     tether.Target
	seq        uint64
	recipients int
}

func (p position) encode() []byte {
	k := logKey(p.source, p.seq)
	return binary.AppendUvarint(k, uint64(p.recipients))
}

func decodePosition(b []byte) (position, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 || len(b) < i+1+8+1 {
		return position{}, fmt.Errorf("id index: %w", errCorrupt)
	}
	t, err := tether.ParseTarget(string(b[:i]))
	if err != nil {
		return position{}, fmt.Errorf("id index: %w", errCorrupt)
	}
	p := position{source: t, seq: binary.BigEndian.Uint64(b[i+1:])}
	n, w := binary.Uvarint(b[i+9:])
	if w <= 0 {
		return position{}, fmt.Errorf("id index: %w", errCorrupt)
	}
	p.recipients = int(n)
	return p, nil
}

// getCursors decodes device's cursors (nil when it has none stored).
func (b buckets) getCursors(device string) ([]tether.Cursor, error) {
	cs, err := ledger.DecodeCursors(b.cur.Get([]byte(device)))
	if err != nil {
		return nil, fmt.Errorf("cursors of %s: %w", device, err)
	}
	return cs, nil
}

func (b buckets) putCursors(device string, cs []tether.Cursor) error {
	return b.cur.Put([]byte(device), ledger.EncodeCursors(cs))
}

// putHistory applies history operations of device.
func (b buckets) putHistory(device string, ops []tether.HistOp) error {
	for _, op := range ops {
		k := seqKey(histPrefix(device, op.Source), op.Range.To)
		if err := b.hist.Put(k, ledger.EncodeRange(op.Range)); err != nil {
			return err
		}
	}
	return nil
}

// history returns the history range of device in source that holds seq.
func (b buckets) history(device string, source tether.Target, seq uint64) (tether.Range, bool, error) {
	prefix := histPrefix(device, source)
	k, v := b.hist.Cursor().Seek(seqKey(prefix, seq))
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
		return tether.Range{}, false, nil
	}
	r, err := ledger.DecodeRange(binary.BigEndian.Uint64(k[len(prefix):]), v)
	if err != nil || r.From > seq {
		return tether.Range{}, false, err
	}
	return r, true, nil
}
