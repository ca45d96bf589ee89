package redis

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Join records device and its membership of groups: one pipeline, to the
// device's shard and each group's. Idempotent; on a cluster the shards are
// written independently, so a failed Join may have recorded part of it,
// which a retry completes. EInvalid for a bad device or group id. See
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
	if err := s.check(ctx, "join"); err != nil {
		return err
	}
	dk := s.k.device(device)
	calls := []call{plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Set().Key(dk.joined).Value("1").Build() })}
	if len(groups) > 0 {
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Sadd().Key(dk.groups).Member(groups...).Build()
		}))
	}
	for _, g := range groups {
		key := s.k.members(g)
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Sadd().Key(key).Member(device).Build() }))
	}
	_, err := s.roundTrip(ctx, "join", calls)
	return err
}

// Leave removes device from group: one pipeline to the group's shard and
// the device's. Not a member: nil. EInvalid for a bad id. See
// tether.Store.
func (s *Store) Leave(ctx context.Context, group, device string) error {
	if err := tether.CheckID("group", group); err != nil {
		return err
	}
	if err := tether.CheckID("device", device); err != nil {
		return err
	}
	if err := s.check(ctx, "leave"); err != nil {
		return err
	}
	members, groups := s.k.members(group), s.k.device(device).groups
	_, err := s.roundTrip(ctx, "leave", []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Srem().Key(members).Member(device).Build() }),
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Srem().Key(groups).Member(group).Build() }),
	})
	return err
}

// Device returns device's groups (sorted) and the number of its open
// deliveries: one pipeline to the device's shard. ErrNotFound (wrapped)
// when the device never joined and has no deliveries; EInvalid for a bad
// id. See tether.Store.
func (s *Store) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	if err := tether.CheckID("device", id); err != nil {
		return tether.DeviceInfo{}, err
	}
	if err := s.check(ctx, "device"); err != nil {
		return tether.DeviceInfo{}, err
	}
	dk := s.k.device(id)
	res, err := s.roundTrip(ctx, "device", []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Smembers().Key(dk.groups).Build() }),
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Zcard().Key(dk.open).Build() }),
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Exists().Key(dk.joined).Build() }),
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hlen().Key(dk.dlv).Build() }),
	})
	if err != nil {
		return tether.DeviceInfo{}, err
	}
	groups, err1 := res[0].AsStrSlice()
	pending, err2 := res[1].AsInt64()
	joined, err3 := res[2].AsInt64()
	deliveries, err4 := res[3].AsInt64()
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return tether.DeviceInfo{}, fmt.Errorf("redis device %s: unexpected answer", id)
	}
	if joined == 0 && deliveries == 0 {
		return tether.DeviceInfo{}, fmt.Errorf("redis device %s: %w", id, tether.ErrNotFound)
	}
	slices.Sort(groups)
	if groups == nil {
		groups = []string{}
	}
	return tether.DeviceInfo{ID: id, Groups: groups, Pending: int(pending)}, nil
}

// Group returns the members of group id sorted by id: one command on the
// group's shard. An empty list for a group without members; EInvalid for a
// bad id. See tether.Store.
func (s *Store) Group(ctx context.Context, id string) (tether.GroupInfo, error) {
	if err := tether.CheckID("group", id); err != nil {
		return tether.GroupInfo{}, err
	}
	if err := s.check(ctx, "group"); err != nil {
		return tether.GroupInfo{}, err
	}
	key := s.k.members(id)
	res, err := s.roundTrip(ctx, "group", []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Smembers().Key(key).Build() }),
	})
	if err != nil {
		return tether.GroupInfo{}, err
	}
	devices, err := res[0].AsStrSlice()
	if err != nil {
		return tether.GroupInfo{}, fmt.Errorf("redis group %s: %w", id, err)
	}
	slices.Sort(devices)
	info := tether.GroupInfo{ID: id, Devices: make([]tether.GroupMember, len(devices))}
	for i, d := range devices {
		info.Devices[i].ID = d
	}
	return info, nil
}
