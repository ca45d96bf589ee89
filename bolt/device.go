package bolt

import (
	"bytes"
	"context"
	"fmt"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// Join records device and its membership of groups in one write
// transaction. Idempotent. EInvalid for a bad device or group id. See
// tether.Store.
func (s *Store) Join(ctx context.Context, device string, groups []string) error {
	if err := tether.CheckID("device", device); err != nil {
		return err
	}
	for _, g := range groups {
		if err := tether.CheckID("group", g); err != nil {
			return err
		}
	}
	return s.update(ctx, "join", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		// A one-byte value: Get of an empty value may answer nil.
		if err := b.dev.Put([]byte(device), []byte{1}); err != nil {
			return err
		}
		for _, g := range groups {
			if err := b.mem.Put(pairKey(g, device), nil); err != nil {
				return err
			}
			if err := b.grp.Put(pairKey(device, g), nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// Leave removes device from group in one write transaction; nil when it is
// not a member. EInvalid for a bad id. See tether.Store.
func (s *Store) Leave(ctx context.Context, group, device string) error {
	if err := tether.CheckID("group", group); err != nil {
		return err
	}
	if err := tether.CheckID("device", device); err != nil {
		return err
	}
	return s.update(ctx, "leave", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		if err := b.mem.Delete(pairKey(group, device)); err != nil {
			return err
		}
		return b.grp.Delete(pairKey(device, group))
	})
}

// Device returns device's groups (sorted) and the number of its open
// deliveries, in one read transaction. ErrNotFound (wrapped) when the
// device never joined and has no deliveries; EInvalid for a bad id. See
// tether.Store.
func (s *Store) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	if err := tether.CheckID("device", id); err != nil {
		return tether.DeviceInfo{}, err
	}
	info := tether.DeviceInfo{ID: id, Groups: []string{}}
	err := s.view(ctx, "device", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		prefix := prefixKey(id)
		info.Groups = scanSuffixes(b.grp, prefix, info.Groups[:0])
		c := b.open.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if info.Pending++; info.Pending%ctxCheckEvery == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if b.dev.Get([]byte(id)) != nil || info.Pending > 0 {
			return nil
		}
		if k, _ := b.done.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			return nil
		}
		return fmt.Errorf("%s: %w", id, tether.ErrNotFound)
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
	var devices []string
	err := s.view(ctx, "group", func(tx *bolt.Tx) error {
		devices = scanSuffixes(tx.Bucket(bucketMem), prefixKey(id), nil)
		return nil
	})
	if err != nil {
		return tether.GroupInfo{}, err
	}
	info := tether.GroupInfo{ID: id, Devices: make([]tether.GroupMember, len(devices))}
	for i, d := range devices {
		info.Devices[i].ID = d
	}
	return info, nil
}

// scanSuffixes appends to out what follows prefix in every key of bucket
// that starts with prefix, in key order.
func scanSuffixes(bucket *bolt.Bucket, prefix []byte, out []string) []string {
	c := bucket.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}
