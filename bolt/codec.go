package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

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
//	log   source 0x00 seq(8)            → msgID
//	src   source                        → the source record (see source)
//	ids   msgID                         → source 0x00 seq(8) recipients(uvarint) message record (ledger.EncodeMessage)
//	exp   expiresAt(8) msgID            → ∅   messages not yet expired by Expire
//	gc    expiresAt(8) msgID            → ∅   expired, waiting to be purged
//	idem  target 0x00 clientID          → ledger.Idem
//	cur   device                        → the device's cursors (ledger.EncodeCursors)
//	hist  device 0x00 source 0x00 To(8) → history range (ledger.EncodeRange)
//	mem   group 0x00 device             → the device's spans in the group (ledger.EncodeSpans)
//	meta  "version"                     → layout version
//
// A group publish writes one log entry whatever the group's size; an ack
// rewrites one cur record per device. Messages live in ids, whose keys
// (ULIDs, unless a publisher names its own) grow with time, so that the
// data of a burst of publishes fills new pages one after the other; a log
// entry only names its message. A device's own log keeps only what its
// cursor has not passed: Commit deletes the entries its floor passes, so
// that the log of 10,000 busy devices stays a few pages and an ack dirties
// a page that the next publishes to the same devices dirty again (a log
// kept until purge made every delivery dirty a page of its own: 3 × fewer
// deliveries a second, bolt/bench_test.go BenchmarkDirect). Group logs
// keep their entries until purge, since their members read them at their
// own pace. expiresAt(8) is the big-endian UnixNano with its sign bit
// flipped, so that byte order is time order.
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
		bucketCur, bucketHist, bucketMem, bucketMeta, bucketEvents,
	}

	keyVersion = []byte("version")
)

// layoutVersion is stored under meta/version; Open refuses a file written
// with another layout. Version 1 (one record per delivery) was the first
// release's; version 2 (messages in their log entries) never left
// development.
const layoutVersion = 3

// errCorrupt reports a record that cannot be decoded.
var errCorrupt = ledger.ErrCorrupt

// buckets are the buckets of one transaction.
type buckets struct {
	log, src, ids, exp, gc, idem, cur, hist, mem *bolt.Bucket
}

func bucketsOf(tx *bolt.Tx) buckets {
	b := buckets{
		log: tx.Bucket(bucketLog), src: tx.Bucket(bucketSrc), ids: tx.Bucket(bucketIDs),
		exp: tx.Bucket(bucketExp), gc: tx.Bucket(bucketGC), idem: tx.Bucket(bucketIdem),
		cur: tx.Bucket(bucketCur), hist: tx.Bucket(bucketHist), mem: tx.Bucket(bucketMem),
	}
	b.ids.FillPercent, b.exp.FillPercent = appendFill, appendFill
	return b
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

// source is a log's record in src. Purges of a device's own log are
// counted here, since its entries leave the log when acked: oldest and
// holes say which positions are purged (all below oldest, and the runs in
// holes), so that Expire knows what history it may trim.
type source struct {
	last    uint64 // newest position
	members int    // open spans (groups)
	trimmed uint64 // history and spans below it were trimmed
	live    uint64 // device logs: messages stored and not purged
	oldest  uint64 // device logs: every position below it is purged
	holes   []run
}

// run is the positions from…to, inclusive.
type run struct{ from, to uint64 }

// maxHoles bounds source.holes: runs purged out of order beyond it are
// forgotten, which only delays trimming until the log holds nothing.
const maxHoles = 64

func (r source) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+5*binary.MaxVarintLen64), r.last)
	b = binary.AppendUvarint(b, uint64(r.members))
	b = binary.AppendUvarint(b, r.trimmed)
	if r.live == 0 && r.oldest == 0 && len(r.holes) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, r.live)
	b = binary.AppendUvarint(b, r.oldest)
	b = binary.AppendUvarint(b, uint64(len(r.holes)))
	for _, h := range r.holes {
		b = binary.AppendUvarint(b, h.from)
		b = binary.AppendUvarint(b, h.to-h.from)
	}
	return b
}

// errBadSource reports a source record that cannot be decoded; made once,
// as decodeSource runs for every source a commit touches.
var errBadSource = fmt.Errorf("source record: %w", errCorrupt)

func decodeSource(b []byte) (source, error) {
	if b == nil {
		return source{}, nil
	}
	if len(b) < 9 {
		return source{}, errBadSource
	}
	d := uvarints(b[8:])
	r := source{last: binary.BigEndian.Uint64(b), members: int(d.next()), trimmed: d.next()}
	if d.bad {
		return source{}, errBadSource
	}
	if len(d.rest) == 0 {
		return r, nil
	}
	r.live, r.oldest = d.next(), d.next()
	holes := d.next()
	if d.bad || holes > maxHoles {
		return source{}, errBadSource
	}
	for range holes {
		from := d.next()
		r.holes = append(r.holes, run{from: from, to: from + d.next()})
	}
	if d.bad || len(d.rest) != 0 {
		return source{}, errBadSource
	}
	return r, nil
}

// uvarintReader reads a sequence of uvarints; bad once one is malformed
// or missing.
type uvarintReader struct {
	rest []byte
	bad  bool
}

func uvarints(b []byte) *uvarintReader { return &uvarintReader{rest: b} }

func (d *uvarintReader) next() uint64 {
	v, w := binary.Uvarint(d.rest)
	if w <= 0 {
		d.bad = true
		return 0
	}
	d.rest = d.rest[w:]
	return v
}

// published counts a new message of a device log.
func (r *source) published() {
	r.live++
	r.oldest = max(r.oldest, 1)
}

// purged counts the purge of position seq of a device log.
func (r *source) purged(seq uint64) {
	r.live = max(r.live, 1) - 1
	if r.live == 0 {
		r.oldest, r.holes = r.last+1, nil
		return
	}
	switch {
	case seq < r.oldest:
		return
	case seq == r.oldest:
		r.oldest++
	default:
		r.addHole(seq)
	}
	for len(r.holes) > 0 && r.holes[0].from <= r.oldest {
		r.oldest = max(r.oldest, r.holes[0].to+1)
		r.holes = r.holes[1:]
	}
	if len(r.holes) == 0 {
		r.holes = nil
	}
}

// addHole records seq (above oldest) as purged, merging adjacent runs.
func (r *source) addHole(seq uint64) {
	i := sort.Search(len(r.holes), func(i int) bool { return r.holes[i].to+1 >= seq })
	h := r.holes
	switch {
	case i < len(h) && h[i].from <= seq && seq <= h[i].to:
	case i < len(h) && h[i].to+1 == seq:
		h[i].to = seq
		if i+1 < len(h) && h[i+1].from == seq+1 {
			h[i].to = h[i+1].to
			r.holes = append(h[:i+1], h[i+2:]...)
		}
	case i < len(h) && h[i].from == seq+1:
		h[i].from = seq
	case len(h) < maxHoles:
		r.holes = append(h, run{})
		copy(r.holes[i+1:], r.holes[i:])
		r.holes[i] = run{from: seq, to: seq}
	}
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

// encodeEntry returns the ids record of a message: its position, then
// its record.
func (p position) encodeEntry(rec []byte) []byte {
	k := logKey(p.source, p.seq)
	k = binary.AppendUvarint(k, uint64(p.recipients))
	return append(k, rec...)
}

// decodeEntry is the inverse of encodeEntry; rec aliases b.
func decodeEntry(b []byte) (p position, rec []byte, err error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 || len(b) < i+1+8+1 {
		return position{}, nil, fmt.Errorf("id index: %w", errCorrupt)
	}
	t, err := tether.ParseTarget(string(b[:i]))
	if err != nil {
		return position{}, nil, fmt.Errorf("id index: %w", errCorrupt)
	}
	p = position{source: t, seq: binary.BigEndian.Uint64(b[i+1:])}
	n, w := binary.Uvarint(b[i+9:])
	if w <= 0 {
		return position{}, nil, fmt.Errorf("id index: %w", errCorrupt)
	}
	p.recipients = int(n)
	return p, b[i+9+w:], nil
}

// message returns the position and message of id; ok is false when the
// id is unknown (or purged).
func (b buckets) message(id string) (p position, m *tether.Message, ok bool, err error) {
	v := b.ids.Get([]byte(id))
	if v == nil {
		return position{}, nil, false, nil
	}
	p, rec, err := decodeEntry(v)
	if err == nil {
		m, err = ledger.DecodeMessage(rec)
	}
	if err != nil {
		return position{}, nil, false, err
	}
	return p, m, true, nil
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

// appendFill is how full bbolt fills a page it splits, in the buckets
// whose keys mostly grow with time (ids, exp, ev): near full, since what
// is split off the last page is never written again. Message ids are
// ULIDs the gateway assigns (tether.Message), so ids grows at its end;
// keys put in random order would cost more at this fill (publishing
// random 32-digit hex ids, 20 a transaction: 5.5 pages a message against
// 4.7 at bbolt's default).
const appendFill = 0.95
