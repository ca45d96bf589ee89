package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// buckets are the buckets of one transaction.
type buckets struct {
	msg, rcpt, open, done, exp, gc, idem, dev, mem, grp *bolt.Bucket
}

func bucketsOf(tx *bolt.Tx) buckets {
	return buckets{
		msg: tx.Bucket(bucketMsg), rcpt: tx.Bucket(bucketRcpt),
		open: tx.Bucket(bucketOpen), done: tx.Bucket(bucketDone),
		exp: tx.Bucket(bucketExp), gc: tx.Bucket(bucketGC),
		idem: tx.Bucket(bucketIdem), dev: tx.Bucket(bucketDev),
		mem: tx.Bucket(bucketMem), grp: tx.Bucket(bucketGrp),
	}
}

// Publish stores msgs and one pending delivery per addressed device, in one
// transaction shared with the other writes of its group commit, and returns
// once that transaction is synced. See tether.Store.
//
// A message whose id is already stored for the same target (a retried
// publish) is answered as a duplicate of itself; the same id for another
// target is an EInvalid error, and so is a malformed message (bad target or
// client id, empty or overlong id, zero times, expiry not after
// publication). Errors: ErrClosed after Close, ctx's error (wrapped) when
// ctx ends before the commit — the messages may then be stored or not.
func (s *Store) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	recs := make([][]byte, len(msgs))
	for i, m := range msgs {
		if err := tether.CheckStorable(m); err != nil {
			return nil, err
		}
		recs[i] = encodeMessage(m)
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

// publish stores one message unless it is a duplicate.
func (b buckets) publish(m *tether.Message, rec []byte) (tether.PublishResult, error) {
	id := []byte(m.ID)
	if old := b.msg.Get(id); old != nil {
		return b.republish(m, old)
	}
	var idemKey []byte
	if m.ClientID != "" {
		idemKey = pairKey(m.Target.String(), m.ClientID)
		if v := b.idem.Get(idemKey); v != nil {
			orig, err := decodeIdem(v)
			if err != nil {
				return tether.PublishResult{}, err
			}
			if orig.expiresAt > m.PublishedAt.UnixNano() {
				return tether.PublishResult{ID: orig.id, Recipients: orig.recipients, Duplicate: true}, nil
			}
		}
	}
	devices := b.recipients(m.Target)
	exp := m.ExpiresAt.UnixNano()
	if err := b.msg.Put(id, rec); err != nil {
		return tether.PublishResult{}, err
	}
	if err := b.rcpt.Put(id, encodeRecipients(devices)); err != nil {
		return tether.PublishResult{}, err
	}
	pending := delivery{state: statePending}.encode()
	for _, d := range devices {
		if err := b.open.Put(pairKey(d, m.ID), pending); err != nil {
			return tether.PublishResult{}, err
		}
	}
	if err := b.exp.Put(timeKey(exp, m.ID), nil); err != nil {
		return tether.PublishResult{}, err
	}
	if idemKey != nil {
		v := idem{expiresAt: exp, recipients: len(devices), id: m.ID}.encode()
		if err := b.idem.Put(idemKey, v); err != nil {
			return tether.PublishResult{}, err
		}
	}
	return tether.PublishResult{ID: m.ID, Recipients: len(devices), Devices: devices}, nil
}

// republish answers the publish of a message id already stored: a retry of
// the same message is a duplicate of itself.
func (b buckets) republish(m *tether.Message, old []byte) (tether.PublishResult, error) {
	prev, err := decodeMessage(m.ID, old)
	if err != nil {
		return tether.PublishResult{}, err
	}
	if prev.Target != m.Target {
		return tether.PublishResult{}, tether.Errorf(tether.EInvalid,
			"message %s: id already used for target %s", m.ID, prev.Target)
	}
	devices, err := decodeRecipients(b.rcpt.Get([]byte(m.ID)))
	if err != nil {
		return tether.PublishResult{}, err
	}
	return tether.PublishResult{ID: m.ID, Recipients: len(devices), Duplicate: true}, nil
}

// recipients returns the devices a target addresses now, sorted.
func (b buckets) recipients(t tether.Target) []string {
	if t.Kind == tether.KindDevice {
		return []string{t.ID}
	}
	devices := []string{}
	prefix := prefixKey(t.ID)
	c := b.mem.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		devices = append(devices, string(k[len(prefix):]))
	}
	return devices
}

// Pending returns up to limit unacked, unexpired deliveries of device with
// message ids after after, in id order: one range scan of the open
// deliveries of device in a read transaction. EInvalid for a bad device id
// or a limit below 1. See tether.Store.
func (s *Store) Pending(ctx context.Context, device, after string, limit int, now time.Time) ([]tether.Delivery, error) {
	if err := tether.CheckID("device", device); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, tether.Errorf(tether.EInvalid, "pending limit %d: must be at least 1", limit)
	}
	out := []tether.Delivery{}
	nowN := now.UnixNano()
	err := s.view(ctx, "pending", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		prefix := prefixKey(device)
		c := b.open.Cursor()
		n := 0
		for k, v := c.Seek(pairKey(device, after)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if n++; n%ctxCheckEvery == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			id := string(k[len(prefix):])
			if id == after {
				continue
			}
			d, err := b.pendingDelivery(device, id, v, nowN)
			if err != nil || d.Message == nil {
				if err != nil {
					return err
				}
				continue // expired
			}
			if out = append(out, d); len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pendingDelivery decodes an open delivery with its message; Message is nil
// when the message has expired at nowN.
func (b buckets) pendingDelivery(device, id string, v []byte, nowN int64) (tether.Delivery, error) {
	rec := b.msg.Get([]byte(id))
	if rec == nil {
		return tether.Delivery{}, fmt.Errorf("delivery %s of %s without its message: %w", id, device, errCorrupt)
	}
	exp, err := messageExpiry(rec)
	if err != nil || exp <= nowN {
		return tether.Delivery{}, err
	}
	d, err := decodeDelivery(v)
	if err != nil {
		return tether.Delivery{}, err
	}
	m, err := decodeMessage(id, rec)
	if err != nil {
		return tether.Delivery{}, err
	}
	out := d.public(device)
	out.Message = m
	return out, nil
}

// Sent records one more attempt for each open delivery of device in ids and
// returns the attempt numbers, 0 for an id that is not open (unknown,
// acked, expired, dead). EInvalid for a bad device id. See tether.Store.
func (s *Store) Sent(ctx context.Context, device string, ids []string) ([]int, error) {
	if err := tether.CheckID("device", device); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return []int{}, s.check(ctx, "sent")
	}
	var out []int
	err := s.update(ctx, "sent", func(tx *bolt.Tx) error {
		out = make([]int, len(ids))
		open := tx.Bucket(bucketOpen)
		for i, id := range ids {
			k := pairKey(device, id)
			v := open.Get(k)
			if v == nil {
				continue
			}
			d, err := decodeDelivery(v)
			if err != nil {
				return err
			}
			d.state, d.attempts = stateInflight, d.attempts+1
			if err := open.Put(k, d.encode()); err != nil {
				return err
			}
			out[i] = d.attempts
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Ack marks device's open deliveries in ids acked at now and returns how
// many were open. EInvalid for a bad device id. See tether.Store.
func (s *Store) Ack(ctx context.Context, device string, ids []string, now time.Time) (int, error) {
	return s.settle(ctx, "ack", device, ids, delivery{state: stateAcked, ackedAt: now.UnixNano()})
}

// Kill marks device's open deliveries in ids dead and returns how many were
// open. EInvalid for a bad device id. See tether.Store.
func (s *Store) Kill(ctx context.Context, device string, ids []string) (int, error) {
	return s.settle(ctx, "kill", device, ids, delivery{state: stateDead})
}

// settle moves device's open deliveries in ids to done with final's state
// (and acked time), keeping their attempts. It returns how many moved.
func (s *Store) settle(ctx context.Context, op, device string, ids []string, final delivery) (int, error) {
	if err := tether.CheckID("device", device); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, s.check(ctx, op)
	}
	var n int
	err := s.update(ctx, op, func(tx *bolt.Tx) error {
		n = 0
		b := bucketsOf(tx)
		for _, id := range ids {
			ok, err := b.settleDelivery(pairKey(device, id), final)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// settleDelivery moves the open delivery at k, if any, to done with final's
// state and acked time.
func (b buckets) settleDelivery(k []byte, final delivery) (bool, error) {
	v := b.open.Get(k)
	if v == nil {
		return false, nil
	}
	d, err := decodeDelivery(v)
	if err != nil {
		return false, err
	}
	d.state, d.ackedAt = final.state, final.ackedAt
	if err := b.open.Delete(k); err != nil {
		return false, err
	}
	return true, b.done.Put(k, d.encode())
}

// Message returns a stored message with its deliveries sorted by device,
// in one read transaction. ErrNotFound (wrapped) for an unknown or purged
// id. See tether.Store.
func (s *Store) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	var st tether.MessageStatus
	err := s.view(ctx, "message", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		rec := b.msg.Get([]byte(id))
		if rec == nil {
			return fmt.Errorf("%s: %w", id, tether.ErrNotFound)
		}
		m, err := decodeMessage(id, rec)
		if err != nil {
			return err
		}
		devices, err := decodeRecipients(b.rcpt.Get([]byte(id)))
		if err != nil {
			return err
		}
		st = tether.MessageStatus{Message: *m, Deliveries: make([]tether.Delivery, 0, len(devices))}
		for _, dev := range devices {
			k := pairKey(dev, id)
			v := b.open.Get(k)
			if v == nil {
				v = b.done.Get(k)
			}
			if v == nil {
				return fmt.Errorf("message %s: delivery to %s missing: %w", id, dev, errCorrupt)
			}
			d, err := decodeDelivery(v)
			if err != nil {
				return err
			}
			st.Deliveries = append(st.Deliveries, d.public(dev))
		}
		return nil
	})
	if err != nil {
		return tether.MessageStatus{}, err
	}
	return st, nil
}
