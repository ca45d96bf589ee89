package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
	bolt "go.etcd.io/bbolt"
)

// Publish appends msgs to their targets' logs, in one transaction shared
// with the other writes of its group commit, and returns once that
// transaction is synced: four puts per message (log, ids with the
// message, exp, src; a fifth, idem, with a client id) whatever the size
// of a target group. See tether.Store for duplicates. EInvalid for a malformed message or an id
// already used for another target. Errors: ErrClosed after Close, ctx's
// error (wrapped) when ctx ends before the commit — the messages may then
// be stored or not.
func (s *Store) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	recs := make([][]byte, len(msgs))
	for i, m := range msgs {
		if err := tether.CheckStorable(m); err != nil {
			return nil, err
		}
		recs[i] = ledger.EncodeMessage(m)
	}
	if len(msgs) == 0 {
		return []tether.PublishResult{}, s.check(ctx, "publish")
	}
	var results []tether.PublishResult
	err := s.update(ctx, "publish", func(tx *bolt.Tx) error {
		results = make([]tether.PublishResult, len(msgs))
		b := bucketsOf(tx)
		for i, m := range msgs {
			r, err := b.publish(m, recs[i])
			if err != nil {
				return err
			}
			results[i] = r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// publish appends one message unless it is a duplicate.
func (b buckets) publish(m *tether.Message, rec []byte) (tether.PublishResult, error) {
	if v := b.ids.Get([]byte(m.ID)); v != nil {
		p, _, err := decodeEntry(v)
		if err != nil {
			return tether.PublishResult{}, err
		}
		if p.source != m.Target {
			return tether.PublishResult{}, tether.Errorf(tether.EInvalid, "message %s: id already used for target %s", m.ID, p.source)
		}
		return tether.PublishResult{ID: m.ID, Seq: p.seq, Recipients: p.recipients, Duplicate: true}, nil
	}
	var idemKey []byte
	if m.ClientID != "" {
		idemKey = pairKey(m.Target.String(), m.ClientID)
		if v := b.idem.Get(idemKey); v != nil {
			e, err := ledger.DecodeIdem(v)
			if err != nil {
				return tether.PublishResult{}, err
			}
			if e.ExpiresAt > m.PublishedAt.UnixNano() {
				return tether.PublishResult{ID: e.ID, Seq: e.Seq, Recipients: e.Recipients, Duplicate: true}, nil
			}
		}
	}
	src, err := b.getSource(m.Target)
	if err != nil {
		return tether.PublishResult{}, err
	}
	src.last++
	p := position{source: m.Target, seq: src.last, recipients: 1}
	if m.Target.Kind == tether.KindGroup {
		p.recipients = src.members
	} else {
		src.published()
	}
	exp := m.ExpiresAt.UnixNano()
	puts := []struct {
		bucket *bolt.Bucket
		k, v   []byte
	}{
		{b.log, logKey(m.Target, p.seq), []byte(m.ID)},
		{b.ids, []byte(m.ID), p.encodeEntry(rec)},
		{b.exp, timeKey(exp, m.ID), nil},
		{b.src, []byte(m.Target.String()), src.encode()},
	}
	if idemKey != nil {
		e := ledger.Idem{ExpiresAt: exp, Recipients: p.recipients, Seq: p.seq, ID: m.ID}
		puts = append(puts, struct {
			bucket *bolt.Bucket
			k, v   []byte
		}{b.idem, idemKey, ledger.EncodeIdem(e)})
	}
	for _, put := range puts {
		if err := put.bucket.Put(put.k, put.v); err != nil {
			return tether.PublishResult{}, err
		}
	}
	return tether.PublishResult{ID: m.ID, Seq: p.seq, Recipients: p.recipients}, nil
}

// Read returns, for each request, up to Limit entries of its log after
// After: one range scan per request in one read transaction. EInvalid for
// a malformed source or a limit below 1. See tether.Store.
func (s *Store) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	for _, r := range reqs {
		if err := checkSource(r.Source); err != nil {
			return nil, err
		}
		if r.Limit < 1 {
			return nil, tether.Errorf(tether.EInvalid, "read limit %d: must be at least 1", r.Limit)
		}
	}
	out := make([][]tether.Entry, len(reqs))
	err := s.view(ctx, "read", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i, r := range reqs {
			if i%64 == 63 && ctx.Err() != nil {
				return ctx.Err()
			}
			entries, err := b.readLog(r)
			if err != nil {
				return err
			}
			out[i] = entries
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readLog scans one log and looks each entry's message up.
func (b buckets) readLog(r tether.ReadRequest) ([]tether.Entry, error) {
	prefix := prefixKey(r.Source.String())
	var out []tether.Entry
	c := b.log.Cursor()
	for k, v := c.Seek(seqKey(prefix, r.After+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < r.Limit; k, v = c.Next() {
		_, m, ok, err := b.message(string(v))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("log %s: entry %x names an unknown message: %w", r.Source, k, errCorrupt)
		}
		out = append(out, tether.Entry{Seq: binary.BigEndian.Uint64(k[len(prefix):]), Message: m})
	}
	return out, nil
}

// checkSource returns an EInvalid error for a malformed log source.
func checkSource(t tether.Target) error {
	if t.Kind != tether.KindDevice && t.Kind != tether.KindGroup {
		return tether.Errorf(tether.EInvalid, "source %q: kind must be device or group", t.String())
	}
	return tether.CheckID(string(t.Kind), t.ID)
}

// Message returns a stored message with the state of its delivery to each
// device it is addressed to, sorted by device, in one read transaction:
// the device of a device target, or the devices whose spans in the group
// hold its position. ErrNotFound (wrapped) for an unknown or purged id.
// See tether.Store.
func (s *Store) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	var st tether.MessageStatus
	err := s.view(ctx, "message", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		p, m, ok, err := b.message(id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: %w", id, tether.ErrNotFound)
		}
		devices, err := b.addressed(p.source, p.seq)
		if err != nil {
			return err
		}
		st = tether.MessageStatus{Message: *m, Deliveries: make([]tether.Delivery, 0, len(devices))}
		for _, d := range devices {
			dl, err := b.delivery(d, p.source, p.seq)
			if err != nil {
				return err
			}
			st.Deliveries = append(st.Deliveries, dl)
		}
		return nil
	})
	if err != nil {
		return tether.MessageStatus{}, err
	}
	return st, nil
}

// addressed returns the devices position seq of source is addressed to,
// sorted.
func (b buckets) addressed(source tether.Target, seq uint64) ([]string, error) {
	if source.Kind == tether.KindDevice {
		return []string{source.ID}, nil
	}
	var out []string
	prefix := prefixKey(source.ID)
	c := b.mem.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		spans, err := ledger.DecodeSpans(v)
		if err != nil {
			return nil, err
		}
		cur := tether.Cursor{Source: source, Spans: spans}
		if cur.Addressed(seq) {
			out = append(out, string(k[len(prefix):]))
		}
	}
	sort.Strings(out)
	return out, nil
}

// delivery answers the state of position seq of source for device: from
// its cursor, or from its history once the cursor's floor passed it.
func (b buckets) delivery(device string, source tether.Target, seq uint64) (tether.Delivery, error) {
	cs, err := b.getCursors(device)
	if err != nil {
		return tether.Delivery{}, err
	}
	r, ok := tether.StateIn(cs, source, seq)
	if !ok {
		if r, ok, err = b.history(device, source, seq); err != nil {
			return tether.Delivery{}, err
		}
	}
	if !ok { // settled, but its record is gone: it can only have expired
		r = tether.Range{State: tether.StateExpired}
	}
	return deliveryOf(device, r), nil
}

// deliveryOf returns the delivery to device that r describes.
func deliveryOf(device string, r tether.Range) tether.Delivery {
	d := tether.Delivery{Device: device, State: r.State, Attempts: r.Attempts}
	if r.State == tether.StateAcked {
		d.AckedAt = r.At.UTC()
	}
	return d
}
