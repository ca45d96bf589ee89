package bolt

import (
	"bytes"
	"context"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// Expire marks expired the open deliveries of messages that expired at or
// before now, and purges messages (with their deliveries and idempotency
// key) that expired before purgeBefore, handling at most limit messages in
// one write transaction. It walks the expiry indexes from the oldest
// expiry, so it never scans messages that are not due. EInvalid for a limit
// below 1. See tether.Store.
func (s *Store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (int, bool, error) {
	if limit < 1 {
		return 0, false, tether.Errorf(tether.EInvalid, "expire limit %d: must be at least 1", limit)
	}
	var (
		expired int
		more    bool
	)
	nowN, purgeN := now.UnixNano(), purgeBefore.UnixNano()
	err := s.update(ctx, "expire", func(tx *bolt.Tx) error {
		var err error
		expired, more, err = bucketsOf(tx).expire(nowN, purgeN, limit)
		return err
	})
	if err != nil {
		return 0, false, err
	}
	return expired, more, nil
}

// expire is Expire inside its transaction. First the messages due to
// expire (exp index, expiry ≤ now): their open deliveries become expired,
// and the message is purged at once when it is also due for purging, or
// else moved to the gc index. Then, with what is left of limit, the
// messages of the gc index due for purging (expiry < purgeBefore).
func (b buckets) expire(nowN, purgeN int64, limit int) (expired int, more bool, err error) {
	due := dueKeys(b.exp, limit, func(t int64) bool { return t <= nowN })
	for i, k := range due {
		if i == limit {
			return expired, true, nil
		}
		t, id := splitTimeKey(k)
		n, err := b.expireDeliveries(id)
		if err != nil {
			return 0, false, err
		}
		expired += n
		if err := b.exp.Delete(k); err != nil {
			return 0, false, err
		}
		if t < purgeN {
			err = b.purge(id)
		} else {
			err = b.gc.Put(k, nil)
		}
		if err != nil {
			return 0, false, err
		}
	}
	left := limit - len(due)
	purge := dueKeys(b.gc, left, func(t int64) bool { return t < purgeN })
	for i, k := range purge {
		if i == left {
			return expired, true, nil
		}
		_, id := splitTimeKey(k)
		if err := b.purge(id); err != nil {
			return 0, false, err
		}
	}
	return expired, false, nil
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

// expireDeliveries moves the open deliveries of message id to done as
// expired and returns how many it moved.
func (b buckets) expireDeliveries(id string) (int, error) {
	devices, err := decodeRecipients(b.rcpt.Get([]byte(id)))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range devices {
		ok, err := b.settleDelivery(pairKey(d, id), delivery{state: stateExpired})
		if err != nil {
			return 0, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// purge deletes message id, its deliveries, its expiry index entries and
// its idempotency key when that still points to it.
func (b buckets) purge(id string) error {
	rec := b.msg.Get([]byte(id))
	if rec == nil {
		return nil
	}
	m, err := decodeMessage(id, rec)
	if err != nil {
		return err
	}
	devices, err := decodeRecipients(b.rcpt.Get([]byte(id)))
	if err != nil {
		return err
	}
	for _, d := range devices {
		k := pairKey(d, id)
		if err := b.open.Delete(k); err != nil {
			return err
		}
		if err := b.done.Delete(k); err != nil {
			return err
		}
	}
	if m.ClientID != "" {
		ik := pairKey(m.Target.String(), m.ClientID)
		if v := b.idem.Get(ik); v != nil {
			if r, err := decodeIdem(v); err != nil || r.id == id {
				if err := b.idem.Delete(ik); err != nil {
					return err
				}
			}
		}
	}
	tk := timeKey(m.ExpiresAt.UnixNano(), id)
	if err := b.exp.Delete(tk); err != nil {
		return err
	}
	if err := b.gc.Delete(tk); err != nil {
		return err
	}
	if err := b.rcpt.Delete([]byte(id)); err != nil {
		return err
	}
	return b.msg.Delete([]byte(id))
}
