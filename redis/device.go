package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Join records device and opens its span in each of groups it is not a
// member of. Two round trips: one member script per group, on the group's
// shard, opens the span at the group log's newest position atomically
// with the group's publishes; then the device's cursors take the spans
// (compare-and-set on the device's shard; nothing is written when they
// have them already). A failure between the two leaves the device a
// member whose cursors lack the span: a retry (every connect joins the
// token's groups) completes it, with the span where the group opened it.
// EInvalid for a bad device or group id. See tether.Store.
func (s *Store) Join(ctx context.Context, device string, groups []string) error {
	if err := checkMembers(device, groups...); err != nil {
		return err
	}
	if err := s.check(ctx, "join"); err != nil {
		return err
	}
	spans, err := s.member(ctx, "join", device, groups, "j")
	if err != nil {
		return err
	}
	_, err = s.update(ctx, "join", []string{device}, false, func(_ int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error) {
		if tether.FindCursor(cs, tether.DeviceTarget(device)) < 0 {
			cs = append(cs, tether.Cursor{Source: tether.DeviceTarget(device)})
		}
		var hist []tether.HistOp
		for i, g := range groups {
			open, ok := openSpan(spans[i])
			if !ok {
				continue
			}
			t := tether.GroupTarget(g)
			j := tether.FindCursor(cs, t)
			if j < 0 {
				cs = append(cs, tether.Cursor{Source: t})
				j = len(cs) - 1
			}
			if c := &cs[j]; takeSpan(c, open, spans[i]) {
				hist = append(hist, c.Advance()...)
			}
		}
		return cs, hist, nil, nil
	})
	return err
}

// takeSpan gives cursor c of a group the device's open span there, open,
// as the group opened it (at its newest position, or earlier when a
// failed Join is being completed); group is all the device's spans the
// group records. It reports whether c changed. An open span of c that
// the group has closed since (a Leave whose second step failed) is first
// closed as the group closed it, or where open starts when the group no
// longer has it.
func takeSpan(c *tether.Cursor, open tether.Span, group []tether.Span) bool {
	n := len(c.Spans)
	if n > 0 && c.Spans[n-1].To == 0 {
		if c.Spans[n-1].From == open.From {
			return false
		}
		stale := c.Spans[n-1]
		stale.To = open.From
		for _, s := range group {
			if s.From == stale.From {
				stale.To = s.To
			}
		}
		c.Spans = c.Spans[:n-1]
		if stale.To > stale.From {
			c.Spans = append(c.Spans, stale)
		}
	}
	c.Spans = append(c.Spans, open)
	return true
}

// openSpan returns the open span of a device's spans in a group.
func openSpan(spans []tether.Span) (tether.Span, bool) {
	if n := len(spans); n > 0 && spans[n-1].To == 0 {
		return spans[n-1], true
	}
	return tether.Span{}, false
}

// member runs the member script (op 'j' join, 'l' leave) of device in each
// of groups, one pipeline, and returns the device's spans in each.
func (s *Store) member(ctx context.Context, op, device string, groups []string, how string) ([][]tether.Span, error) {
	calls := make([]call, len(groups))
	for i, g := range groups {
		lk := s.k.log(tether.GroupTarget(g))
		calls[i] = scriptCall(scriptMember, []string{lk.seq, lk.mem, lk.members}, device, how)
	}
	res, err := s.roundTrip(ctx, op, calls)
	if err != nil {
		return nil, err
	}
	out := make([][]tether.Span, len(groups))
	for i, r := range res {
		v, err := r.AsStrSlice()
		if err != nil || len(v) != 2 {
			return nil, fmt.Errorf("redis %s: member answer: %v", op, err)
		}
		if out[i], err = decodeSpans(v[1]); err != nil {
			return nil, fmt.Errorf("redis %s: %w", op, err)
		}
	}
	return out, nil
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

// Leave closes device's span in group: the member script on the group's
// shard, then the device's cursors (compare-and-set). Not a member: nil.
// EInvalid for a bad id. See tether.Store.
func (s *Store) Leave(ctx context.Context, group, device string) error {
	if err := checkMembers(device, group); err != nil {
		return err
	}
	if err := s.check(ctx, "leave"); err != nil {
		return err
	}
	spans, err := s.member(ctx, "leave", device, []string{group}, "l")
	if err != nil {
		return err
	}
	t := tether.GroupTarget(group)
	_, err = s.update(ctx, "leave", []string{device}, false, func(_ int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error) {
		i := tether.FindCursor(cs, t)
		if i < 0 || !cs[i].Member() {
			return cs, nil, nil, nil
		}
		if _, open := openSpan(spans[0]); open {
			return cs, nil, nil, nil // joined again meanwhile
		}
		// The group closed the span at its newest position, or dropped it
		// when nothing was published in it: the cursor does the same.
		c := &cs[i]
		n := len(c.Spans)
		end := c.Spans[n-1].From
		if m := len(spans[0]); m > 0 && spans[0][m-1].From == end {
			end = spans[0][m-1].To
		}
		c.Leave(end)
		if cs[i].Exhausted() {
			hist := cs[i].Retire()
			return slices.Delete(cs, i, i+1), hist, nil, nil
		}
		return cs, nil, nil, nil
	})
	return err
}

// Device returns device's groups (sorted) and the number of messages
// addressed to it and not settled: its cursors, then the newest position
// of each of their logs (two round trips). ErrNotFound (wrapped) when the
// device never joined and its log is empty; EInvalid for a bad id. See
// tether.Store.
func (s *Store) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	if err := tether.CheckID("device", id); err != nil {
		return tether.DeviceInfo{}, err
	}
	all, err := s.Cursors(ctx, []string{id})
	if err != nil {
		return tether.DeviceInfo{}, err
	}
	cs := all[0]
	calls := make([]call, len(cs))
	for i, c := range cs {
		key := s.k.log(c.Source).seq
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(key).Build() })
	}
	res, err := s.roundTrip(ctx, "device", calls)
	if err != nil {
		return tether.DeviceInfo{}, err
	}
	stored, _ := s.cache.get(id)
	info := tether.DeviceInfo{ID: id, Groups: []string{}}
	for i, c := range cs {
		last, err := lastOf(res[i])
		if err != nil {
			return tether.DeviceInfo{}, fmt.Errorf("redis device %s: %w", id, err)
		}
		if i == 0 && last == 0 && stored == "" {
			return tether.DeviceInfo{}, fmt.Errorf("redis device %s: %w", id, tether.ErrNotFound)
		}
		info.Pending += c.Unsettled(last)
		if c.Member() {
			info.Groups = append(info.Groups, c.Source.ID)
		}
	}
	return info, nil
}

// lastOf decodes a GET of a log's seq (nil: 0).
func lastOf(r rueidis.RedisResult) (uint64, error) {
	v, err := r.ToString()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
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
	key := s.k.log(tether.GroupTarget(id)).members
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
