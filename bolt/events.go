package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// The event log (SPEC section 11) lives in bucket ev: the events of each
// write call that appends some (a Commit, an Expire, a Cancel, an Append)
// go into records of about recordBytes, each under the bucket's next
// sequence (8 bytes, big-endian), holding its events (appendEvent). An
// event's ID is that sequence and its index in the record,
// "%016x.%06x": string order is log order, and a few puts per call keep
// the log's cost per acked delivery small.
//
// The webhook sender's lease and progress live in meta under keyLease
// (holder, 0x00, expiry UnixNano(8)) and keySent (the ID last sent).
var (
	bucketEvents = []byte("ev")
	keyLease     = []byte("webhook.lease")
	keySent      = []byte("webhook.sent")
)

// recordBytes is the size at which putEvents closes a record and starts
// the next. bbolt splits a leaf only when it holds more than four keys, so
// a record of many pages (one per call made a commit's 1,300 acks a
// record of 75 KB) shares its leaf with up to three earlier ones, and
// every commit wrote them all again: 100 of the 170 pages of a commit's
// transaction in the groups run at half rate. Records of about 512 bytes
// fill the leaves and are written once.
const recordBytes = 512

// eventID returns the ID of event i of record seq.
func eventID(seq uint64, i int) string { return fmt.Sprintf("%016x.%06x", seq, i) }

// parseEventID splits an ID made by eventID; EInvalid for anything else.
func parseEventID(id string) (seq uint64, i int, err error) {
	a, b, ok := strings.Cut(id, ".")
	s, err1 := strconv.ParseUint(a, 16, 64)
	n, err2 := strconv.ParseUint(b, 16, 32)
	if !ok || len(a) != 16 || len(b) != 6 || err1 != nil || err2 != nil {
		return 0, 0, tether.Errorf(tether.EInvalid, "event cursor %q: not an event id of this store", id)
	}
	return s, int(n), nil
}

// putEvents appends the events of parts, in order, as records of bucket
// ev, each closed once it reaches recordBytes (an event takes at least 8
// bytes, so a record holds at most 64 and an ID's index fits its six hex
// digits), and sets ids[i] to the ID of the i-th event when ids is not
// nil. A Commit passes each change's events as a part, uncopied.
func putEvents(tx *bolt.Tx, ids []string, parts ...[]tether.LogEvent) error {
	ev := tx.Bucket(bucketEvents)
	ev.FillPercent = appendFill
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	// bbolt keeps the value slices it is given until the transaction
	// ends; appending after a record never changes its bytes (a full
	// buffer is copied to a new array, the old one is left as it was).
	buf := make([]byte, 0, 64*total)
	// The open record starts at buf[start] and holds n events, the first
	// of which is the first-th of all.
	start, n, first := 0, 0, 0
	for _, p := range parts {
		for i := range p {
			buf = appendEvent(buf, &p[i])
			n++
			if len(buf)-start < recordBytes && first+n < total {
				continue
			}
			seq, err := ev.NextSequence()
			if err != nil {
				return err
			}
			if err := ev.Put(binary.BigEndian.AppendUint64(nil, seq), buf[start:len(buf):len(buf)]); err != nil {
				return err
			}
			for k := 0; ids != nil && k < n; k++ {
				ids[first+k] = eventID(seq, k)
			}
			start, first, n = len(buf), first+n, 0
		}
	}
	return nil
}

// eventTypes numbers the event types in records; part of the layout.
var eventTypes = []tether.EventType{
	tether.EventAcked, tether.EventDead, tether.EventExpired, tether.EventCancelled,
	tether.EventOnline, tether.EventOffline,
}

// appendEvent appends e's encoding to b: its type's index in eventTypes
// (1 byte), At as varint UnixNano, Attempts and Code as varints, then
// Message, Target, Device and Node, each a uvarint length and its bytes.
// A record is its events' encodings one after another. About 60 bytes for
// an ack, against 150 in JSON: the log is written at the rate of acks.
func appendEvent(b []byte, e *tether.LogEvent) []byte {
	b = append(b, byte(slices.Index(eventTypes, e.Type)))
	b = binary.AppendVarint(b, e.At.UnixNano())
	b = binary.AppendVarint(b, int64(e.Attempts))
	b = binary.AppendVarint(b, int64(e.Code))
	for _, s := range []string{e.Message, e.Target, e.Device, e.Node} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeEvents decodes record seq, setting the events' IDs.
func decodeEvents(seq uint64, v []byte) ([]tether.LogEvent, error) {
	var evs []tether.LogEvent
	bad := func() error { return fmt.Errorf("event record %d: %w", seq, errCorrupt) }
	for len(v) > 0 {
		if int(v[0]) >= len(eventTypes) {
			return nil, bad()
		}
		e := tether.LogEvent{ID: eventID(seq, len(evs)), Type: eventTypes[v[0]]}
		v = v[1:]
		var n [3]int64
		for i := range n {
			x, w := binary.Varint(v)
			if w <= 0 {
				return nil, bad()
			}
			n[i], v = x, v[w:]
		}
		e.At, e.Attempts, e.Code = time.Unix(0, n[0]).UTC(), int(n[1]), int(n[2])
		for _, dst := range []*string{&e.Message, &e.Target, &e.Device, &e.Node} {
			l, w := binary.Uvarint(v)
			if w <= 0 || uint64(len(v)-w) < l {
				return nil, bad()
			}
			*dst, v = string(v[w:w+int(l)]), v[w+int(l):]
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// Append adds events at the end of the log in one write of the group
// commit. See tether.EventStore.
func (s *Store) Append(ctx context.Context, events []tether.LogEvent) error {
	if len(events) == 0 {
		return s.check(ctx, "append events")
	}
	ids := make([]string, len(events))
	err := s.update(ctx, "append events", func(tx *bolt.Tx) error {
		return putEvents(tx, ids, events)
	})
	if err != nil {
		return err
	}
	for i := range events {
		events[i].ID = ids[i]
	}
	return nil
}

// Events returns up to limit events after the event after, oldest first.
// EInvalid for a cursor this store did not make. See tether.EventStore.
func (s *Store) Events(ctx context.Context, after string, limit int) ([]tether.LogEvent, error) {
	var seq uint64
	idx := -1
	if after != "" {
		var err error
		if seq, idx, err = parseEventID(after); err != nil {
			return nil, err
		}
	}
	if limit < 1 {
		return nil, tether.Errorf(tether.EInvalid, "events limit %d: must be at least 1", limit)
	}
	var out []tether.LogEvent
	err := s.view(ctx, "events", func(tx *bolt.Tx) error {
		out = nil
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, seq)); k != nil && len(out) < limit; k, v = c.Next() {
			ks := binary.BigEndian.Uint64(k)
			evs, err := decodeEvents(ks, v)
			if err != nil {
				return err
			}
			for i, e := range evs {
				if (ks > seq || i > idx) && len(out) < limit {
					out = append(out, e)
				}
			}
		}
		return nil
	})
	return out, err
}

// Trim drops the records whose every event happened before before. See
// tether.EventStore.
func (s *Store) Trim(ctx context.Context, before time.Time) error {
	return s.update(ctx, "trim events", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			evs, err := decodeEvents(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if !e.At.Before(before) {
					return nil
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Lease takes or renews the webhook sender's lease (a shorter ttl
// shortens it). See tether.EventStore.
func (s *Store) Lease(ctx context.Context, holder string, ttl time.Duration) (bool, string, error) {
	if holder == "" {
		return false, "", tether.Errorf(tether.EInvalid, "lease holder: must not be empty")
	}
	var (
		held bool
		sent string
	)
	err := s.update(ctx, "lease", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		now := time.Now()
		if cur, until, ok := decodeLease(meta.Get(keyLease)); ok && cur != holder && now.Before(until) {
			held, sent = false, ""
			return nil
		}
		v := append(append([]byte(holder), 0), binary.BigEndian.AppendUint64(nil, uint64(now.Add(ttl).UnixNano()))...)
		held, sent = true, string(meta.Get(keySent))
		return meta.Put(keyLease, v)
	})
	return held, sent, err
}

// Sent records the webhook sender's progress if holder has the lease.
// See tether.EventStore.
func (s *Store) Sent(ctx context.Context, holder, id string) error {
	if _, _, err := parseEventID(id); err != nil {
		return err
	}
	return s.update(ctx, "sent", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cur, until, ok := decodeLease(meta.Get(keyLease))
		if !ok || cur != holder || !time.Now().Before(until) {
			return fmt.Errorf("bolt sent: %w", tether.ErrLeaseLost)
		}
		return meta.Put(keySent, []byte(id))
	})
}

// decodeLease splits a keyLease value.
func decodeLease(v []byte) (holder string, until time.Time, ok bool) {
	i := bytes.IndexByte(v, 0)
	if i < 0 || len(v) != i+9 {
		return "", time.Time{}, false
	}
	return string(v[:i]), time.Unix(0, int64(binary.BigEndian.Uint64(v[i+1:]))), true
}
