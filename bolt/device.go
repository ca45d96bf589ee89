package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
	bolt "go.etcd.io/bbolt"
)

// Join records device and opens its span in each of groups it is not a
// member of, in one write transaction. Idempotent. EInvalid for a bad
// device or group id. See tether.Store.
func (s *Store) Join(ctx context.Context, device string, groups []string) error {
	if err := checkMembers(device, groups...); err != nil {
		return err
	}
	return s.update(ctx, "join", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		cs, err := b.getCursors(device)
		if err != nil {
			return err
		}
		if tether.FindCursor(cs, tether.DeviceTarget(device)) < 0 {
			cs = append(cs, tether.Cursor{Source: tether.DeviceTarget(device)})
		}
		for _, g := range groups {
			if cs, err = b.join(device, g, cs); err != nil {
				return err
			}
		}
		return b.putCursors(device, cs)
	})
}

// join opens device's span in group g in cs and in the membership index.
func (b buckets) join(device, g string, cs []tether.Cursor) ([]tether.Cursor, error) {
	t := tether.GroupTarget(g)
	src, err := b.getSource(t)
	if err != nil {
		return nil, err
	}
	i := tether.FindCursor(cs, t)
	if i < 0 {
		cs = append(cs, tether.Cursor{Source: t})
		i = len(cs) - 1
	}
	c := &cs[i]
	if !c.Join(src.last) {
		return cs, nil
	}
	if err := b.putHistory(device, c.Advance()); err != nil {
		return nil, err
	}
	src.members++
	if err := b.putSource(t, src); err != nil {
		return nil, err
	}
	return cs, b.changeSpans(g, device, func(m *tether.Cursor) { m.Join(src.last) })
}

// changeSpans applies change to device's spans in group g as the
// membership index keeps them: every span, until Expire trims those whose
// messages are purged (a cursor drops the spans below its floor).
func (b buckets) changeSpans(g, device string, change func(*tether.Cursor)) error {
	spans, err := b.spans(g, device)
	if err != nil {
		return err
	}
	m := tether.Cursor{Source: tether.GroupTarget(g), Spans: spans}
	change(&m)
	return b.putSpans(g, device, m.Spans)
}

// spans returns device's spans in group g from the membership index.
func (b buckets) spans(g, device string) ([]tether.Span, error) {
	v := b.mem.Get(pairKey(g, device))
	if v == nil {
		return nil, nil
	}
	return ledger.DecodeSpans(v)
}

// Leave closes device's span in group in one write transaction; nil when
// it is not a member. EInvalid for a bad id. See tether.Store.
func (s *Store) Leave(ctx context.Context, group, device string) error {
	if err := checkMembers(device, group); err != nil {
		return err
	}
	return s.update(ctx, "leave", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		cs, err := b.getCursors(device)
		if err != nil {
			return err
		}
		t := tether.GroupTarget(group)
		i := tether.FindCursor(cs, t)
		if i < 0 {
			return nil
		}
		src, err := b.getSource(t)
		if err != nil {
			return err
		}
		c := &cs[i]
		if !c.Leave(src.last) {
			return nil
		}
		src.members--
		if err := b.putSource(t, src); err != nil {
			return err
		}
		if err := b.changeSpans(group, device, func(m *tether.Cursor) { m.Leave(src.last) }); err != nil {
			return err
		}
		if c.Exhausted() {
			if err := b.putHistory(device, c.Retire()); err != nil {
				return err
			}
			cs = slices.Delete(cs, i, i+1)
		}
		return b.putCursors(device, cs)
	})
}

// putSpans records device's spans in group, or forgets them when none.
func (b buckets) putSpans(group, device string, spans []tether.Span) error {
	k := pairKey(group, device)
	if len(spans) == 0 {
		return b.mem.Delete(k)
	}
	return b.mem.Put(k, ledger.EncodeSpans(spans))
}

// checkMembers returns an EInvalid error for a bad device or group id.
func checkMembers(device string, groups ...string) error {
	if err := tether.CheckID("device", device); err != nil {
		return err
	}
	for _, g := range groups {
		if err := tether.CheckID("group", g); err != nil {
			return err
		}
	}
	return nil
}

// Cursors returns each device's cursors, its own log's first, in one read
// transaction. EInvalid for a bad device id. See tether.Store.
func (s *Store) Cursors(ctx context.Context, devices []string) ([][]tether.Cursor, error) {
	for _, d := range devices {
		if err := tether.CheckID("device", d); err != nil {
			return nil, err
		}
	}
	out := make([][]tether.Cursor, len(devices))
	err := s.view(ctx, "cursors", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i, d := range devices {
			cs, err := b.getCursors(d)
			if err != nil {
				return err
			}
			out[i] = tether.OrderCursors(d, cs)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Commit applies each change to its device's cursors and stores them with
// their history, in one transaction shared with the other writes of its
// group commit. Acked ids are found through the id index among the
// device's logs. EInvalid for a bad device id. See tether.Store.
func (s *Store) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	for _, ch := range changes {
		if err := tether.CheckID("device", ch.Device); err != nil {
			return nil, err
		}
	}
	if len(changes) == 0 {
		return []tether.Committed{}, s.check(ctx, "commit")
	}
	var out []tether.Committed
	err := s.update(ctx, "commit", func(tx *bolt.Tx) error {
		out = make([]tether.Committed, len(changes))
		b := bucketsOf(tx)
		parts := make([][]tether.LogEvent, len(changes)) // each change's events
		for i, ch := range changes {
			c, evs, err := b.commit(ch)
			if err != nil {
				return err
			}
			out[i], parts[i] = c, evs
		}
		return putEvents(tx, nil, parts...)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// commit applies one change and returns the events of what it settled.
func (b buckets) commit(ch tether.Change) (tether.Committed, []tether.LogEvent, error) {
	cs, err := b.getCursors(ch.Device)
	if err != nil {
		return tether.Committed{}, nil, err
	}
	marks := ch.Marks
	if len(ch.AckIDs) > 0 {
		if marks, err = b.placeAcks(ch.Device, cs, ch.AckIDs, slices.Clone(marks)); err != nil {
			return tether.Committed{}, nil, err
		}
	}
	own := tether.DeviceTarget(ch.Device)
	var floor uint64
	if i := tether.FindCursor(cs, own); i >= 0 {
		floor = cs[i].Floor
	}
	cs, outcome, hist := tether.ApplyMarks(cs, ch.Device, marks, ch.At)
	events := tether.DeliveryEvents(ch.Device, outcome.Settled, ch.At, b.messageAt) // before dropSettled
	if err := b.putHistory(ch.Device, hist); err != nil {
		return tether.Committed{}, nil, err
	}
	if i := tether.FindCursor(cs, own); i >= 0 && cs[i].Floor > floor {
		if err := b.dropSettled(own, floor, cs[i].Floor); err != nil {
			return tether.Committed{}, nil, err
		}
	}
	if err := b.putCursors(ch.Device, cs); err != nil {
		return tether.Committed{}, nil, err
	}
	return tether.Committed{Outcome: outcome, Cursors: tether.OrderCursors(ch.Device, cs)}, events, nil
}

// messageAt returns the id of the message at m's position ("" when its
// entry is gone).
func (b buckets) messageAt(m tether.Mark) string {
	return string(b.log.Get(logKey(m.Source, m.Seq)))
}

// dropSettled deletes the entries of device log source at positions
// from+1…to, which its cursor's floor passed: nothing reads them again
// (their messages stay in ids until purged).
func (b buckets) dropSettled(source tether.Target, from, to uint64) error {
	prefix := prefixKey(source.String())
	end := seqKey(prefix, to)
	c := b.log.Cursor()
	for k, _ := c.Seek(seqKey(prefix, from+1)); k != nil && bytes.Compare(k, end) <= 0; k, _ = c.Seek(seqKey(prefix, from+1)) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// placeAcks appends an acked mark for each id of ids that lives in one of
// device's logs.
func (b buckets) placeAcks(device string, cs []tether.Cursor, ids []string, marks []tether.Mark) ([]tether.Mark, error) {
	for _, id := range ids {
		v := b.ids.Get([]byte(id))
		if v == nil {
			continue
		}
		p, _, err := decodeEntry(v)
		if err != nil {
			return nil, err
		}
		if p.source == tether.DeviceTarget(device) || tether.FindCursor(cs, p.source) >= 0 {
			marks = append(marks, tether.Mark{Source: p.source, Seq: p.seq, State: tether.StateAcked})
		}
	}
	return marks, nil
}

// Device returns device's groups (sorted) and the number of messages
// addressed to it and not settled, in one read transaction. ErrNotFound
// (wrapped) when the device never joined and its log is empty; EInvalid
// for a bad id. See tether.Store.
func (s *Store) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	if err := tether.CheckID("device", id); err != nil {
		return tether.DeviceInfo{}, err
	}
	info := tether.DeviceInfo{ID: id, Groups: []string{}}
	err := s.view(ctx, "device", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		cs, err := b.getCursors(id)
		if err != nil {
			return err
		}
		own, err := b.getSource(tether.DeviceTarget(id))
		if err != nil {
			return err
		}
		if cs == nil && own.last == 0 {
			return fmt.Errorf("%s: %w", id, tether.ErrNotFound)
		}
		for _, c := range tether.OrderCursors(id, cs) {
			src, err := b.getSource(c.Source)
			if err != nil {
				return err
			}
			info.Pending += c.Unsettled(src.last)
			if c.Member() {
				info.Groups = append(info.Groups, c.Source.ID)
			}
		}
		return nil
	})
	if err != nil {
		return tether.DeviceInfo{}, err
	}
	return info, nil
}

// Group returns the members of group id sorted by id, in one read
// transaction; an empty list for a group without members. EInvalid for a
// bad id. See tether.Store.
func (s *Store) Group(ctx context.Context, id string) (tether.GroupInfo, error) {
	if err := tether.CheckID("group", id); err != nil {
		return tether.GroupInfo{}, err
	}
	info := tether.GroupInfo{ID: id, Devices: []tether.GroupMember{}}
	err := s.view(ctx, "group", func(tx *bolt.Tx) error {
		prefix := prefixKey(id)
		c := tx.Bucket(bucketMem).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			spans, err := ledger.DecodeSpans(v)
			if err != nil {
				return err
			}
			if n := len(spans); n > 0 && spans[n-1].To == 0 {
				info.Devices = append(info.Devices, tether.GroupMember{ID: string(k[len(prefix):])})
			}
		}
		return nil
	})
	if err != nil {
		return tether.GroupInfo{}, err
	}
	return info, nil
}
