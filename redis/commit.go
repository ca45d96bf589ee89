package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
)

// A device's cursors are one value, changed in Go (tether.ApplyMarks, the
// logic the embedded store shares) and written back with compare-and-set:
// the cas script writes only if the value is still the one the change was
// made to. The store remembers the last value it read or wrote of each
// device, so a commit costs one script per device and one round trip for
// all of them; another writer (a takeover on another node, the sweeper)
// makes the script answer the current value, and that device is changed
// again from it.

// Bounds of the compare-and-set. A device's cursors are written by one
// node's commit loop at a time but for takeovers and the sweepers, so a
// retry is rare; among concurrent writers of one device one wins each
// round, and a call retries until its ctx ends or casAttempts rounds.
const (
	casAttempts  = 100     // rounds within one call, whatever its ctx
	cursorCacheN = 1 << 18 // values remembered; past it, a random one is forgotten
)

// errContended reports a device whose cursors changed under every attempt.
var errContended = errors.New("cursors changed meanwhile on every attempt")

// cursorCache remembers the cursors value last seen of each device.
type cursorCache struct {
	mu sync.Mutex // guards following
	m  map[string]string
}

func (c *cursorCache) get(device string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[device]
	return v, ok
}

// refresh replaces the value of device if the cache has one.
func (c *cursorCache) refresh(device, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[device]; ok {
		c.m[device] = v
	}
}

func (c *cursorCache) put(device, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]string)
	}
	if _, ok := c.m[device]; !ok && len(c.m) >= cursorCacheN {
		for d := range c.m { // map iteration starts at a random entry
			delete(c.m, d)
			break
		}
	}
	c.m[device] = v
}

// change is what update does to one device's cursors: it returns the new
// cursors, the history ranges to add and the events that report what it
// settled (appended with the cursors, in the same script). It may run
// several times (once per attempt), each time on the current cursors, so
// the events of a lost attempt are never written.
type change func(i int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error)

// update applies fn to the cursors of each of devices and writes them back
// with compare-and-set, in one pipeline per attempt. It starts from the
// cached cursors (one round trip first for the devices the cache does not
// know), or with fresh from cursors read now, and then does not write the
// devices fn leaves as they were, and adds no device to the cache, only
// refreshes those it has (Expire: most devices have settled what expires,
// and few are this node's). It returns each device's cursors as written.
func (s *Store) update(ctx context.Context, op string, devices []string, fresh bool, fn change) ([][]tether.Cursor, error) {
	base, err := s.bases(ctx, op, devices, fresh)
	if err != nil {
		return nil, err
	}
	out := make([][]tether.Cursor, len(devices))
	todo := make([]int, len(devices))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt == casAttempts {
			return nil, fmt.Errorf("redis %s of %s: %w", op, devices[todo[0]], errContended)
		}
		if err := ctx.Err(); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		units := make([]unit, 0, len(todo))
		sent := make([]int, 0, len(todo))
		writes := make([]string, len(devices))
		for _, i := range todo {
			c, blob, changed, err := s.casCall(devices[i], base[i], func(cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error) {
				return fn(i, cs)
			})
			if err != nil {
				return nil, err
			}
			if fresh && !changed {
				out[i], _ = ledger.DecodeCursors([]byte(blob))
				continue
			}
			units, sent, writes[i] = append(units, c), append(sent, i), blob
		}
		todo, err = s.casRound(ctx, op, devices, units, sent, writes, base, out, !fresh)
		s.markOutboxes(units, err != nil)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// casRound sends one round of cas units (for devices[sent[j]]) and
// returns the devices to try again, base holding their current cursors.
// The written cursors go to out and to the cache (without cache, only to
// devices it has).
func (s *Store) casRound(ctx context.Context, op string, devices []string, units []unit, sent []int, writes, base []string, out [][]tether.Cursor, cache bool) ([]int, error) {
	res, err := s.runUnits(ctx, op, units)
	if err != nil {
		return nil, err
	}
	var again []int
	for j, i := range sent {
		if !res[j].IsInt64() && !res[j].IsString() {
			return nil, fmt.Errorf("redis %s: cas answer: %w", op, errCorrupt)
		}
		cur, _ := res[j].ToString() // the current cursors, when it is no number
		if res[j].IsInt64() {
			s.remember(devices[i], writes[i], cache)
			if out[i], err = ledger.DecodeCursors([]byte(writes[i])); err != nil {
				return nil, fmt.Errorf("redis %s: %w", op, err)
			}
			continue
		}
		base[i] = cur
		s.remember(devices[i], cur, cache)
		again = append(again, i)
	}
	return again, nil
}

// casCall returns the cas script writing the cursors fn makes of the
// encoded cursors old, with the events fn reports (appended to the event
// log, or on a cluster to the outbox of the device's slot: relay.go), the
// value it writes, and whether fn changed anything (the value, or history
// to add).
func (s *Store) casCall(device, old string, fn func([]tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error)) (unit, string, bool, error) {
	cs, err := ledger.DecodeCursors([]byte(old))
	if err != nil {
		return unit{}, "", false, fmt.Errorf("redis cursors of %s: %w", device, err)
	}
	cs, hist, events, err := fn(cs)
	if err != nil {
		return unit{}, "", false, err
	}
	blob := ""
	if len(cs) > 0 {
		blob = string(ledger.EncodeCursors(cs))
	}
	lines, n := "", "0"
	if len(events) > 0 {
		lines, n = encodeEvents(events), strconv.Itoa(len(events))
	}
	keys := []string{s.k.cursors(device)}
	args := []string{old, blob, lines, n}
	for _, h := range hist {
		keys = append(keys, s.k.hist(device, h.Source))
		args = append(args, strconv.Itoa(len(keys)), strconv.FormatUint(h.Range.To, 10), histMember(h.Range))
	}
	u := unit{sc: scriptCAS, keys: keys, args: args}
	switch {
	case lines != "" && s.cluster:
		slot := slotOf(u.keys[0])
		u.keys, u.outbox = append(u.keys, s.k.outbox(slot)), int(slot)+1
	case lines != "":
		u.keys = append(u.keys, s.k.eventLog().log)
	}
	return u, blob, blob != old || len(hist) > 0, nil
}

// bases returns the cursors value of each device: from the cache unless
// fresh, and from Redis (GET, one round trip for all) for the others.
func (s *Store) bases(ctx context.Context, op string, devices []string, fresh bool) ([]string, error) {
	out := make([]string, len(devices))
	var miss []int
	for i, d := range devices {
		v, ok := "", false
		if !fresh {
			v, ok = s.cache.get(d)
		}
		if !ok {
			miss = append(miss, i)
		}
		out[i] = v
	}
	if len(miss) == 0 {
		return out, nil
	}
	calls := make([]call, len(miss))
	for j, i := range miss {
		key := s.k.cursors(devices[i])
		calls[j] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(key).Build() })
	}
	res, err := s.roundTrip(ctx, op, calls)
	if err != nil {
		return nil, err
	}
	for j, i := range miss {
		v, err := res[j].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("redis %s: %w", op, err)
		}
		out[i] = v
		s.remember(devices[i], v, !fresh)
	}
	return out, nil
}

// remember puts device's cursors v in the cache; without add, only if the
// cache has the device already.
func (s *Store) remember(device, v string, add bool) {
	if add {
		s.cache.put(device, v)
	} else {
		s.cache.refresh(device, v)
	}
}

// Cursors returns each device's cursors, its own log's first: one GET per
// device, in one pipeline. EInvalid for a bad device id. See tether.Store.
func (s *Store) Cursors(ctx context.Context, devices []string) ([][]tether.Cursor, error) {
	for _, d := range devices {
		if err := tether.CheckID("device", d); err != nil {
			return nil, err
		}
	}
	if err := s.check(ctx, "cursors"); err != nil {
		return nil, err
	}
	calls := make([]call, len(devices))
	for i, d := range devices {
		key := s.k.cursors(d)
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(key).Build() })
	}
	res, err := s.roundTrip(ctx, "cursors", calls)
	if err != nil {
		return nil, err
	}
	out := make([][]tether.Cursor, len(devices))
	for i, d := range devices {
		v, err := res[i].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("redis cursors: %w", err)
		}
		s.cache.put(d, v)
		cs, err := ledger.DecodeCursors([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("redis cursors of %s: %w", d, err)
		}
		out[i] = tether.OrderCursors(d, cs)
	}
	return out, nil
}

// Commit applies each change to its device's cursors with compare-and-set:
// one script per device, all in one pipeline (plus one round trip to find
// the positions of acks by id, when a change has some, one for devices
// the store has not seen yet, and one for the message ids of settled
// positions it did not publish or read recently). The script that writes
// a device's cursors appends the delivery events of what they settle
// (Outcome.Settled) to the event log (on a Redis Cluster, to its slot's
// outbox, which the relay moves to the log: relay.go). EInvalid for a bad
// device id. See tether.Store.
func (s *Store) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	for _, ch := range changes {
		if err := tether.CheckID("device", ch.Device); err != nil {
			return nil, err
		}
	}
	if err := s.check(ctx, "commit"); err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return []tether.Committed{}, nil
	}
	devices := make([]string, len(changes))
	for i, ch := range changes {
		devices[i] = ch.Device
	}
	marks, err := s.placeAcks(ctx, changes)
	if err != nil {
		return nil, err
	}
	ids, err := s.knownIDs(ctx, "commit", marks)
	if err != nil {
		return nil, err
	}
	idOf := func(m tether.Mark) string { return ids[pos{m.Source, m.Seq}] }
	out := make([]tether.Committed, len(changes))
	cs, err := s.update(ctx, "commit", devices, false, func(i int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error) {
		cs, outcome, hist := tether.ApplyMarks(cs, changes[i].Device, marks[i], changes[i].At)
		out[i].Outcome = outcome
		return cs, hist, tether.DeliveryEvents(changes[i].Device, outcome.Settled, changes[i].At, idOf), nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Cursors = tether.OrderCursors(devices[i], cs[i])
	}
	return out, nil
}

// placeAcks returns each change's marks with its acks by id appended as
// acked marks, for the ids found in the logs the device reads (its own,
// its groups', as the cache knows them): one HMGET per such log, in one
// pipeline, after one round trip of GETs for the devices the cache does
// not know. An id the device acked in a group the cache does not know of
// yet is not found, and ignored: the message is delivered again.
func (s *Store) placeAcks(ctx context.Context, changes []tether.Change) ([][]tether.Mark, error) {
	out := make([][]tether.Mark, len(changes))
	var acking []int
	var devices []string
	for i, ch := range changes {
		out[i] = ch.Marks
		if len(ch.AckIDs) > 0 {
			acking, devices = append(acking, i), append(devices, ch.Device)
		}
	}
	if len(acking) == 0 {
		return out, nil
	}
	base, err := s.bases(ctx, "commit", devices, false)
	if err != nil {
		return nil, err
	}
	type lookup struct {
		change int
		source tether.Target
	}
	var looks []lookup
	var calls []call
	for j, i := range acking {
		ch := changes[i]
		cs, err := ledger.DecodeCursors([]byte(base[j]))
		if err != nil {
			return nil, fmt.Errorf("redis cursors of %s: %w", ch.Device, err)
		}
		for _, c := range tether.OrderCursors(ch.Device, cs) {
			key, ids := s.k.log(c.Source).ids, ch.AckIDs
			looks = append(looks, lookup{i, c.Source})
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hmget().Key(key).Field(ids...).Build() }))
		}
	}
	res, err := s.roundTrip(ctx, "commit", calls)
	if err != nil {
		return nil, err
	}
	for j, l := range looks {
		vals, err := res[j].ToArray()
		if err != nil {
			return nil, fmt.Errorf("redis commit: %w", err)
		}
		marks := slices.Clone(out[l.change])
		ids := changes[l.change].AckIDs
		for k, v := range vals {
			str, err := v.ToString()
			if err != nil {
				continue // not in this log
			}
			seq, _, err := parseIDs(str)
			if err != nil {
				return nil, fmt.Errorf("redis commit: %w", err)
			}
			marks = append(marks, tether.Mark{Source: l.source, Seq: seq, State: tether.StateAcked})
			if k < len(ids) {
				s.ids.putOne(pos{l.source, seq}, ids[k])
			}
		}
		out[l.change] = marks
	}
	return out, nil
}
