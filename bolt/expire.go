package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
	bolt "go.etcd.io/bbolt"
)

// trimEvery is how far a log's oldest retained position must move before
// Expire trims the history ranges and membership spans below it: trimming
// visits every device the log was addressed to, so it is done in steps.
const trimEvery = 1024

// Expire settles as expired the unsettled deliveries of messages that
// expired at or before now, and purges messages that expired before
// purgeBefore, handling at most limit messages in one write transaction.
// It walks the expiry indexes from the oldest expiry, so it never scans
// messages that are not due. EInvalid for a limit below 1. See
// tether.Store.
func (s *Store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (int, bool, error) {
	if limit < 1 {
		return 0, false, tether.Errorf(tether.EInvalid, "expire limit %d: must be at least 1", limit)
	}
	var (
		expired int
		more    bool
	)
	err := s.update(ctx, "expire", func(tx *bolt.Tx) error {
		e := &expiry{b: bucketsOf(tx), now: now, cursors: map[string][]tether.Cursor{},
			spans: map[string][]memberSpans{}, purged: map[tether.Target]bool{}}
		var err error
		expired, more, err = e.run(now.UnixNano(), purgeBefore.UnixNano(), limit)
		if err != nil {
			return err
		}
		return putEvents(tx, nil, e.events)
	})
	if err != nil {
		return 0, false, err
	}
	return expired, more, nil
}

// expiry is one Expire inside its transaction. It keeps the cursors it
// changed and the membership of the groups it looked at, so that many
// messages of one log cost one read and one write per device.
type expiry struct {
	b       buckets
	now     time.Time
	cursors map[string][]tether.Cursor // device → cursors, changed
	spans   map[string][]memberSpans   // group → membership index
	purged  map[tether.Target]bool
	events  []tether.LogEvent // of the deliveries settled
}

type memberSpans struct {
	device string
	spans  []tether.Span
}

// run expires first the messages due (exp index, expiry ≤ now) and purges
// those also due for purging at once (else they move to the gc index);
// then, with what is left of limit, it purges the gc index's messages due
// (expiry < purgeBefore).
func (e *expiry) run(nowN, purgeN int64, limit int) (expired int, more bool, err error) {
	due := dueKeys(e.b.exp, limit, func(t int64) bool { return t <= nowN })
	for i, k := range due {
		if i == limit {
			more = true
			break
		}
		t, id := splitTimeKey(k)
		n, err := e.expireMessage(id)
		if errors.Is(err, tether.ErrNotFound) {
			n, err = 0, nil // purged meanwhile
		}
		if err != nil {
			return 0, false, err
		}
		expired += n
		if err := e.b.exp.Delete(k); err != nil {
			return 0, false, err
		}
		if t < purgeN {
			err = e.purge(id, k)
		} else {
			err = e.b.gc.Put(k, nil)
		}
		if err != nil {
			return 0, false, err
		}
	}
	if !more {
		left := limit - len(due)
		purge := dueKeys(e.b.gc, left, func(t int64) bool { return t < purgeN })
		for i, k := range purge {
			if i == left {
				more = true
				break
			}
			_, id := splitTimeKey(k)
			if err := e.purge(id, k); err != nil {
				return 0, false, err
			}
		}
	}
	if err := e.flush(); err != nil {
		return 0, false, err
	}
	return expired, more, e.trim()
}

// Cancel settles message id as cancelled for the devices it is addressed
// to that have not settled it, with their delivery.cancelled events, in
// one write of the group commit. See tether.Store.
func (s *Store) Cancel(ctx context.Context, id string, at time.Time, sent map[string]int) ([]string, error) {
	if id == "" || len(id) > tether.MaxMessageIDLength {
		return nil, fmt.Errorf("message %q: %w", id, tether.ErrNotFound)
	}
	var devices []string
	err := s.update(ctx, "cancel", func(tx *bolt.Tx) error {
		e := &expiry{b: bucketsOf(tx), now: at, cursors: map[string][]tether.Cursor{},
			spans: map[string][]memberSpans{}, purged: map[tether.Target]bool{}}
		var err error
		if devices, err = e.settleMessage(id, tether.StateCancelled, sent); err != nil {
			return err
		}
		if err := e.flush(); err != nil {
			return err
		}
		return putEvents(tx, nil, e.events)
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(devices)
	return devices, nil
}

// dueKeys returns copies of the first limit+1 keys of an expiry index
// whose time satisfies due (the extra key says that more work remains).
func dueKeys(index *bolt.Bucket, limit int, due func(t int64) bool) [][]byte {
	var keys [][]byte
	c := index.Cursor()
	for k, _ := c.First(); k != nil && len(keys) <= limit; k, _ = c.Next() {
		if t, _ := splitTimeKey(k); !due(t) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// expireMessage settles message id as expired for every device it is
// addressed to that has not settled it, and returns how many.
func (e *expiry) expireMessage(id string) (int, error) {
	devices, err := e.settleMessage(id, tether.StateExpired, nil)
	return len(devices), err
}

// settleMessage settles message id with state for every device it is
// addressed to that has not settled it (after the sends recorded, or
// those of sent when more), notes their events in e.events and returns
// those devices. ErrNotFound (wrapped) for an unknown id.
func (e *expiry) settleMessage(id string, state tether.DeliveryState, sent map[string]int) ([]string, error) {
	v := e.b.ids.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("message %s: %w", id, tether.ErrNotFound)
	}
	p, _, err := decodeEntry(v)
	if err != nil {
		return nil, err
	}
	devices, err := e.addressed(p.source, p.seq)
	if err != nil {
		return nil, err
	}
	var settled []string
	for _, d := range devices {
		cs, err := e.cursorsOf(d)
		if err != nil {
			return nil, err
		}
		i := tether.FindCursor(cs, p.source)
		if i < 0 {
			if p.source.Kind == tether.KindGroup {
				continue // forgotten: everything addressed was settled
			}
			cs = append(cs, tether.Cursor{Source: p.source})
			i = len(cs) - 1
		}
		attempts := max(cs[i].Attempts(p.seq), sent[d])
		if cs[i].Settle(p.seq, state, attempts, e.now) {
			settled = append(settled, d)
			mark := tether.Mark{Source: p.source, Seq: p.seq, State: state, Attempts: attempts}
			e.events = append(e.events, tether.DeliveryEvents(d, []tether.Mark{mark}, e.now, func(tether.Mark) string { return id })...)
		}
		e.cursors[d] = cs
	}
	return settled, nil
}

// addressed returns the devices position seq of source is addressed to,
// reading a group's membership index once per Expire.
func (e *expiry) addressed(source tether.Target, seq uint64) ([]string, error) {
	if source.Kind == tether.KindDevice {
		return []string{source.ID}, nil
	}
	ms, ok := e.spans[source.ID]
	if !ok {
		var err error
		if ms, err = e.b.members(source.ID); err != nil {
			return nil, err
		}
		e.spans[source.ID] = ms
	}
	var out []string
	for _, m := range ms {
		if (&tether.Cursor{Source: source, Spans: m.spans}).Addressed(seq) {
			out = append(out, m.device)
		}
	}
	return out, nil
}

// members returns group's membership index: every device with spans.
func (b buckets) members(group string) ([]memberSpans, error) {
	var out []memberSpans
	prefix := prefixKey(group)
	c := b.mem.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		spans, err := ledger.DecodeSpans(v)
		if err != nil {
			return nil, err
		}
		out = append(out, memberSpans{device: string(k[len(prefix):]), spans: spans})
	}
	return out, nil
}

// cursorsOf returns device's cursors as this Expire has changed them.
func (e *expiry) cursorsOf(device string) ([]tether.Cursor, error) {
	if cs, ok := e.cursors[device]; ok {
		return cs, nil
	}
	return e.b.getCursors(device)
}

// flush advances and writes the cursors this Expire changed.
func (e *expiry) flush() error {
	for d, cs := range e.cursors {
		kept := cs[:0]
		for i := range cs {
			if err := e.b.putHistory(d, cs[i].Advance()); err != nil {
				return err
			}
			if !cs[i].Exhausted() {
				kept = append(kept, cs[i])
			} else if err := e.b.putHistory(d, cs[i].Retire()); err != nil {
				return err
			}
		}
		if err := e.b.putCursors(d, kept); err != nil {
			return err
		}
	}
	return nil
}

// purge deletes message id (its gc or exp entry is k): its log entry (a
// device log's is gone once acked), its id index entry and its
// idempotency key when that still points to it; a device log's source
// record counts the purge.
func (e *expiry) purge(id string, k []byte) error {
	b := e.b
	if err := b.gc.Delete(k); err != nil {
		return err
	}
	p, m, ok, err := b.message(id)
	if err != nil || !ok {
		return err
	}
	if err := b.dropIdem(m); err != nil {
		return err
	}
	if err := b.log.Delete(logKey(p.source, p.seq)); err != nil {
		return err
	}
	if p.source.Kind == tether.KindDevice {
		src, err := b.getSource(p.source)
		if err != nil {
			return err
		}
		src.purged(p.seq)
		if err := b.putSource(p.source, src); err != nil {
			return err
		}
	}
	e.purged[p.source] = true
	return b.ids.Delete([]byte(id))
}

// dropIdem deletes m's idempotency entry when it still points to m.
func (b buckets) dropIdem(m *tether.Message) error {
	if m.ClientID == "" {
		return nil
	}
	ik := pairKey(m.Target.String(), m.ClientID)
	v := b.idem.Get(ik)
	if v == nil {
		return nil
	}
	if r, err := ledger.DecodeIdem(v); err != nil || r.ID == m.ID {
		return b.idem.Delete(ik)
	}
	return nil
}

// trim drops, for each log that lost messages, the history ranges and
// membership spans that only purged messages needed, once its oldest
// retained position moved trimEvery past the last trim (or the log is
// empty).
func (e *expiry) trim() error {
	for source := range e.purged {
		src, err := e.b.getSource(source)
		if err != nil {
			return err
		}
		oldest := src.last + 1
		if source.Kind == tether.KindDevice {
			oldest = min(oldest, max(src.oldest, 1))
		} else if k := e.b.firstEntry(source); k > 0 {
			oldest = k
		}
		if oldest-min(src.trimmed, oldest) < trimEvery && oldest <= src.last {
			continue
		}
		if err := e.trimSource(source, oldest); err != nil {
			return err
		}
		src.trimmed = oldest
		if err := e.b.putSource(source, src); err != nil {
			return err
		}
	}
	return nil
}

// firstEntry returns the oldest position in source's log, 0 when empty.
func (b buckets) firstEntry(source tether.Target) uint64 {
	prefix := prefixKey(source.String())
	if k, _ := b.log.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return binary.BigEndian.Uint64(k[len(prefix):])
	}
	return 0
}

// trimSource drops the history below oldest of every device source was
// addressed to, and the spans of a group that end below it.
func (e *expiry) trimSource(source tether.Target, oldest uint64) error {
	if source.Kind == tether.KindDevice {
		return e.b.trimHistory(source.ID, source, oldest)
	}
	ms, err := e.b.members(source.ID)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := e.b.trimHistory(m.device, source, oldest); err != nil {
			return err
		}
		kept := m.spans[:0]
		for _, s := range m.spans {
			if s.To == 0 || s.To >= oldest {
				kept = append(kept, s)
			}
		}
		if len(kept) != len(m.spans) {
			if err := e.b.putSpans(source.ID, m.device, kept); err != nil {
				return err
			}
		}
	}
	return nil
}

// trimHistory deletes device's history ranges of source ending below seq.
func (b buckets) trimHistory(device string, source tether.Target, seq uint64) error {
	prefix := histPrefix(device, source)
	end := seqKey(prefix, seq)
	c := b.hist.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
