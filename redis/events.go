package redis

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// The event log (SPEC section 11) is one stream, P:{e}:log (keys.go). An
// entry holds the events of one Append, or those one script call of
// Commit, Expire or Cancel settled (the deliveries of up to maxUnits
// devices), as JSON lines (a field n, their number, then one or more
// fields e, each holding lines): the delivery engine settles up to 100,000
// deliveries a second, and one XADD per script call rather than per event
// keeps that cheap. An event's ID is its entry's id and its index in the
// entry, zero-padded so that string order is log order (a stream id as
// XADD writes it is not: "5-10" < "5-9").
//
// Delivery events are appended by the cas script that settles them, in
// the same script, so that none is lost or invented. On a Redis Cluster
// the cursors of devices live on every shard and no script of theirs may
// write the log: the script appends to its slot's outbox instead, and the
// relay moves outboxes to the log, each entry exactly once (relay.go).

// Widths of an event ID's parts, "<ms>-<seq>.<index>": the entry's
// milliseconds and sequence number, and the index of the event in it. An
// entry's events are one script argument, at most 512 MB, and each takes
// more than 60 bytes: fewer than 10^7.
const eventIDFormat = "%015d-%010d.%07d"

var (
	//go:embed lua/events.lua
	eventsLua string
	//go:embed lua/lease.lua
	leaseLua string
	//go:embed lua/sent.lua
	sentLua string
)

var (
	scriptEvents = newScript(eventsLua, true)
	scriptLease  = newScript(leaseLua, false)
	scriptSent   = newScript(sentLua, false)
)

// Append adds events as one entry of the event log's stream (XADD, one
// command) and sets their IDs. See tether.EventStore.
func (s *Store) Append(ctx context.Context, events []tether.LogEvent) error {
	if err := s.check(ctx, "append events"); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	lines, key, n := encodeEvents(events), s.k.eventLog().log, strconv.Itoa(len(events))
	res, err := s.roundTrip(ctx, "append events", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
		return b.Xadd().Key(key).Id("*").FieldValue().FieldValue("n", n).FieldValue("e", lines).Build()
	})})
	if err != nil {
		return err
	}
	id, _ := res[0].ToString()
	ms, seq, ok := parseStreamID(id)
	if !ok {
		return fmt.Errorf("redis append events: XADD answered %q: %w", clip(id), errCorrupt)
	}
	for i := range events {
		events[i].ID = eventID(ms, seq, i)
	}
	return nil
}

// Events returns up to limit events after the event after, oldest first:
// one read-only script, which reads the stream from after's entry (or the
// oldest retained, when that is gone) only as far as it must. On a
// cluster the outboxes this store wrote to are moved to the log first
// (flushEvents), so that it reads its own writes; when that fails the log
// is read as it is. EInvalid for an after this store did not make. See
// tether.EventStore.
func (s *Store) Events(ctx context.Context, after string, limit int) ([]tether.LogEvent, error) {
	if err := s.check(ctx, "events"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []tether.LogEvent{}, nil
	}
	from, seen, skip := "-", "", 0
	if after != "" {
		ms, seq, idx, ok := parseEventID(after)
		if !ok {
			return nil, tether.Errorf(tether.EInvalid, "event cursor %q: not an event id", clip(after))
		}
		from = strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10)
		seen, skip = from, idx+1
	}
	if s.relay != nil {
		fctx, cancel := context.WithTimeout(ctx, flushBound)
		s.flushEvents(fctx) // an error leaves the outboxes dirty, for the relay
		cancel()
	}
	res, err := s.roundTrip(ctx, "events", []call{scriptCall(scriptEvents, []string{s.k.eventLog().log},
		from, seen, strconv.Itoa(skip), strconv.Itoa(limit))})
	if err != nil {
		return nil, err
	}
	flat, err := res[0].ToArray()
	if err != nil || len(flat)%2 != 0 {
		return nil, fmt.Errorf("redis events: unexpected answer: %w", errCorrupt)
	}
	out := make([]tether.LogEvent, 0, min(limit, 1024))
	for i := 0; i < len(flat) && len(out) < limit; i += 2 {
		id, err1 := flat[i].ToString()
		fields, err2 := flat[i+1].AsStrSlice()
		ms, seq, ok := parseStreamID(id)
		if err1 != nil || err2 != nil || !ok || len(fields)%2 != 0 {
			return nil, fmt.Errorf("redis events: entry %q: %w", clip(id), errCorrupt)
		}
		first := 0
		if id == seen {
			first = skip
		}
		if out, err = decodeEvents(out, fields, ms, seq, first, limit); err != nil {
			return nil, fmt.Errorf("redis events: entry %s: %w", id, err)
		}
	}
	return out, nil
}

// Trim drops the entries of the event log appended before before, to the
// millisecond (XTRIM MINID, one command): the stream's ids are the times
// Redis appended them. See tether.EventStore.
func (s *Store) Trim(ctx context.Context, before time.Time) error {
	if err := s.check(ctx, "trim events"); err != nil {
		return err
	}
	ms := before.UnixMilli()
	if ms <= 0 {
		return nil
	}
	key, min := s.k.eventLog().log, strconv.FormatInt(ms, 10)
	_, err := s.roundTrip(ctx, "trim events", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
		return b.Xtrim().Key(key).Minid().Threshold(min).Build()
	})})
	return err
}

// Lease takes or renews the webhook sender's lease for holder (the lease
// script: one key with a PX ttl; renewing with a shorter ttl shortens
// it). EInvalid for an empty holder or a ttl under a millisecond. See
// tether.EventStore.
func (s *Store) Lease(ctx context.Context, holder string, ttl time.Duration) (bool, string, error) {
	if err := s.check(ctx, "lease"); err != nil {
		return false, "", err
	}
	if holder == "" || ttl < time.Millisecond {
		return false, "", tether.Errorf(tether.EInvalid, "lease for %q for %v: a holder and a ttl of at least 1ms are required", holder, ttl)
	}
	ek := s.k.eventLog()
	res, err := s.roundTrip(ctx, "lease", []call{scriptCall(scriptLease, []string{ek.lease, ek.sent},
		holder, strconv.FormatInt(ttl.Milliseconds(), 10))})
	if err != nil {
		return false, "", err
	}
	vals, err := res[0].ToArray()
	if err != nil || len(vals) != 2 {
		return false, "", fmt.Errorf("redis lease: unexpected answer: %w", errCorrupt)
	}
	held, err1 := vals[0].AsInt64()
	sent, err2 := vals[1].ToString()
	if err1 != nil || err2 != nil {
		return false, "", fmt.Errorf("redis lease: unexpected answer: %w", errCorrupt)
	}
	return held == 1, sent, nil
}

// Sent records id as the last event sent when holder has the lease (the
// sent script); an error wrapping tether.ErrLeaseLost when it has not.
// EInvalid for an id this store did not make. See tether.EventStore.
func (s *Store) Sent(ctx context.Context, holder, id string) error {
	if err := s.check(ctx, "sent"); err != nil {
		return err
	}
	if _, _, _, ok := parseEventID(id); !ok && id != "" {
		return tether.Errorf(tether.EInvalid, "sent %q: not an event id", clip(id))
	}
	ek := s.k.eventLog()
	res, err := s.roundTrip(ctx, "sent", []call{scriptCall(scriptSent, []string{ek.lease, ek.sent}, holder, id)})
	if err != nil {
		return err
	}
	if n, err := res[0].AsInt64(); err != nil || n != 1 {
		return fmt.Errorf("redis sent %s by %s: %w", id, holder, tether.ErrLeaseLost)
	}
	return nil
}

// flushBound bounds the wait of Events for the move of this store's
// outboxes (a shard that does not answer would otherwise hold every read
// of the log).
const flushBound = relayReadTimeout

// eventID returns the ID of event index of stream entry ms-seq.
func eventID(ms, seq uint64, index int) string {
	return fmt.Sprintf(eventIDFormat, ms, seq, index)
}

// parseEventID decodes an eventID.
func parseEventID(id string) (ms, seq uint64, index int, ok bool) {
	entry, idx, found := strings.Cut(id, ".")
	if !found || len(id) != 15+1+10+1+7 {
		return 0, 0, 0, false
	}
	ms, seq, ok = parseStreamID(entry)
	i, err := strconv.Atoi(idx)
	return ms, seq, i, ok && err == nil && i >= 0
}

// parseStreamID decodes a stream entry id "ms-seq".
func parseStreamID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, found && err1 == nil && err2 == nil
}

// encodeEvents returns the JSON lines of events, without their IDs (an
// entry's events take their IDs from it).
func encodeEvents(events []tether.LogEvent) string {
	b := make([]byte, 0, 160*len(events))
	for i := range events {
		if i > 0 {
			b = append(b, '\n')
		}
		b = events[i].AppendJSON(b, false)
	}
	return string(b)
}

// decodeEvents appends to out the events of entry ms-seq, whose fields
// are fields (n and its count, then e and JSON lines, one or more times),
// from index first on, until out holds limit.
func decodeEvents(out []tether.LogEvent, fields []string, ms, seq uint64, first, limit int) ([]tether.LogEvent, error) {
	i := 0
	for f := 2; f < len(fields) && len(out) < limit; f += 2 {
		for lines := fields[f+1]; lines != "" && len(out) < limit; i++ {
			var line string
			line, lines, _ = strings.Cut(lines, "\n")
			if i < first {
				continue
			}
			var e tether.LogEvent
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				return nil, fmt.Errorf("event %d: %w: %v", i, errCorrupt, err)
			}
			e.ID = eventID(ms, seq, i)
			out = append(out, e)
		}
	}
	return out, nil
}

// Message ids of positions, for the delivery events of Commit: the hub
// acks positions it read from the store (Read) or that it published
// (Publish), so the store remembers the message id of the positions it
// recently answered, and looks up only the others before the
// compare-and-set (knownIDs). Two generations of idCacheN positions: a
// position is remembered for at least idCacheN publishes and reads after
// it (over half a second at 100,000 a second).
const idCacheN = 1 << 16

// pos is a position in a log.
type pos struct {
	source tether.Target
	seq    uint64
}

// idCache remembers the message id at positions of logs.
type idCache struct {
	mu       sync.Mutex // guards following
	cur, old map[pos]string
}

// put remembers the id of each message of es.
func (c *idCache) put(source tether.Target, es []tether.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range es {
		c.putLocked(pos{source, e.Seq}, e.Message.ID)
	}
}

// putOne remembers id at p.
func (c *idCache) putOne(p pos, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(p, id)
}

func (c *idCache) putLocked(p pos, id string) {
	if c.cur == nil {
		c.cur, c.old = make(map[pos]string), make(map[pos]string)
	}
	if len(c.cur) >= idCacheN {
		c.old, c.cur = c.cur, c.old
		clear(c.cur)
	}
	c.cur[p] = id
}

func (c *idCache) get(p pos) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.cur[p]; ok {
		return id, true
	}
	id, ok := c.old[p]
	return id, ok
}

// settles reports whether a mark of state st may settle a position.
func settles(st tether.DeliveryState) bool {
	switch st {
	case tether.StateAcked, tether.StateDead, tether.StateExpired, tether.StateCancelled:
		return true
	}
	return false
}

// knownIDs returns the message id at every position marks may settle
// that the marks do not name (the hub names those of its acks and dead
// deliveries): from the cache, and for the others from their logs (ZRANGEBYSCORE of
// the position, one round trip for all). A position no log holds has no
// id.
func (s *Store) knownIDs(ctx context.Context, op string, marks [][]tether.Mark) (map[pos]string, error) {
	ids := map[pos]string{}
	var missing []pos
	for _, ms := range marks {
		for _, m := range ms {
			p := pos{m.Source, m.Seq}
			if !settles(m.State) || m.Message != "" { // the caller knows it
				continue
			}
			if _, ok := ids[p]; ok {
				continue
			}
			id, ok := s.ids.get(p)
			if !ok {
				missing = append(missing, p)
			}
			ids[p] = id
		}
	}
	if len(missing) == 0 {
		return ids, nil
	}
	calls := make([]call, len(missing))
	for i, p := range missing {
		key, at := s.k.log(p.source).log, strconv.FormatUint(p.seq, 10)
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Zrangebyscore().Key(key).Min(at).Max(at).Withscores().Limit(0, 1).Build()
		})
	}
	res, err := s.roundTrip(ctx, op, calls)
	if err != nil {
		return nil, err
	}
	for i, p := range missing {
		es, err := entriesOf(res[i])
		if err != nil {
			return nil, fmt.Errorf("redis %s: %s at %d: %w", op, p.source, p.seq, err)
		}
		if len(es) == 1 {
			ids[p] = es[0].Message.ID
			s.ids.putOne(p, es[0].Message.ID)
		}
	}
	return ids, nil
}
