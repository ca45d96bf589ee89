package redis

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// The event log on a Redis Cluster. A script may touch the keys of one
// slot only, and the script that settles a device's deliveries (cas) runs
// in the device's slot, so it cannot append to P:{e}:log. It appends
// instead to the outbox of its slot, P:{oN}:out, a stream in the same
// format as the log (keys.go: outboxTags holds, for every slot, a hash
// tag of that slot). The relay then moves outbox entries to the log:
//
//  1. XRANGE of the outboxes (one pipeline),
//  2. the move script on the log's slot, which appends what it has not
//     appended yet as one log entry and records, per slot, the id of the
//     newest outbox entry moved (P:{e}:moved): moving again appends
//     nothing, so two nodes moving at once, or a node that died between
//     2 and 3, never duplicate an event,
//  3. XDEL of the moved entries from the outboxes.
//
// A node moves the outboxes it wrote to after the script call that wrote
// one, at most once per relayInterval (under load a round gathers what the
// interval wrote), and at once before it reads the log (Events: a node
// reads its own writes).
// Every relaySweep it also looks at every outbox (XLEN of all 16,384, one
// pipeline), which moves what a node that died left behind. Per device
// the log keeps the order of the outbox; across devices, the order of
// moving. An event is in the log some tens of milliseconds after the
// script that settled it, or at the next sweep of a live node after its
// node died. A shard that does not answer is given up after
// relayReadTimeout and retried by the goroutine alone, with backoff.

// relaySweep is how often the relay looks at every outbox.
const relaySweep = 10 * time.Second

// relayInterval is the shortest time between two rounds of the relay
// goroutine (a read of the log on the writing node moves at once).
const relayInterval = 20 * time.Millisecond

// relayRead is how many entries of one outbox a round reads.
const relayRead = 100

// relayRound bounds one round of the relay (a sweep and a move).
const relayRound = 5 * time.Second

// Reads of the relay give up on a shard that does not answer within
// these, leaving its outboxes for later, so that it does not hold up the
// events of the other shards: the reads of a move (a few entries per
// outbox, well under a millisecond when the shard answers) and of a sweep.
const (
	relayReadTimeout  = 500 * time.Millisecond
	relaySweepTimeout = 2 * time.Second
)

//go:embed lua/move.lua
var moveLua string

var scriptMove = newScript(moveLua, false)

// outboxTags returns, for each slot, a hash tag of that slot: the first
// of "o0", "o1", … that Redis Cluster puts there.
var outboxTags = sync.OnceValue(func() *[numSlots]string {
	var tags [numSlots]string
	for i, left := 0, numSlots; left > 0; i++ {
		tag := "o" + strconv.Itoa(i)
		if sl := slotOf(tag); tags[sl] == "" {
			tags[sl], left = tag, left-1
		}
	}
	return &tags
})

// slotOf returns the Redis Cluster slot of key, as rueidis routes it.
func slotOf(key string) uint16 {
	c := rueidis.Completed{}.SetSlot(key)
	return c.Slot() % numSlots
}

// relay is the state of a cluster store's relay (see above).
type relay struct {
	sem  chan struct{} // held by flushEvents while it moves
	kick chan struct{} // asks the goroutine to move the dirty outboxes now
	stop context.CancelFunc
	done chan struct{} // closed when the goroutine has returned

	mu sync.Mutex // guards following
	// Slots whose outbox may hold entries → the order they were first
	// marked in (the order in which this store wrote the outboxes:
	// moveGroups keeps it between groups of the same millisecond).
	// dirty: written by this store's scripts, or found by a sweep; retry:
	// a write or a read failed there (its shard did not answer), moved by
	// the goroutine only, so that a shard down does not slow every read of
	// the log.
	dirty, retry map[uint16]outboxMark
	marks        uint64 // slots marked so far
	// The moves under way (taken from dirty or retry), by move: their
	// outboxes still wait (pending).
	moving map[uint64]moveUnderWay
}

// moveUnderWay is the marks of the outboxes one move took, and whether it
// took them from retry.
type moveUnderWay struct {
	marks map[uint16]outboxMark
	retry bool
}

// outboxMark is when and in which order a slot was first marked.
type outboxMark struct {
	order uint64
	since time.Time
}

// mark adds slot to set (dirty or retry), keeping its first mark; r.mu
// must be held.
func (r *relay) mark(set map[uint16]outboxMark, slot uint16) {
	if _, ok := set[slot]; !ok {
		r.marks++
		set[slot] = outboxMark{order: r.marks, since: time.Now()}
	}
}

// take empties set (retry tells which one it is) and returns its slots in
// the order they were marked, with their marks, which count as pending in
// their set until the move is deleted from moving.
func (r *relay) take(set map[uint16]outboxMark, retry bool) (slots []uint16, marks map[uint16]outboxMark, move uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	slots = make([]uint16, 0, len(set))
	marks = make(map[uint16]outboxMark, len(set))
	for sl, m := range set {
		slots, marks[sl] = append(slots, sl), m
	}
	slices.SortFunc(slots, func(a, b uint16) int { return cmp.Compare(set[a].order, set[b].order) })
	clear(set)
	r.marks++
	r.moving[r.marks] = moveUnderWay{marks: marks, retry: retry}
	return slots, marks, r.marks
}

// pending returns how long the oldest outbox this store marked has waited
// (0 when none waits), and how many wait in dirty and in retry (a move
// under way counts in the set it took its outboxes from).
func (r *relay) pending(now time.Time) (age time.Duration, dirty, retry int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, set := range []map[uint16]outboxMark{r.dirty, r.retry} {
		for _, m := range set {
			age = max(age, now.Sub(m.since))
		}
	}
	dirty, retry = len(r.dirty), len(r.retry)
	for _, mv := range r.moving {
		for _, m := range mv.marks {
			age = max(age, now.Sub(m.since))
		}
		if mv.retry {
			retry += len(mv.marks)
		} else {
			dirty += len(mv.marks)
		}
	}
	return age, dirty, retry
}

// startRelay starts the relay goroutine, stopped by Close; only on a
// cluster. Its first round is a sweep.
func (s *Store) startRelay() {
	if !s.cluster {
		return
	}
	bg, cancel := context.WithCancel(context.Background())
	s.relay = &relay{sem: make(chan struct{}, 1), kick: make(chan struct{}, 1), stop: cancel,
		done: make(chan struct{}), dirty: map[uint16]outboxMark{}, retry: map[uint16]outboxMark{},
		moving: map[uint64]moveUnderWay{}}
	go pprof.Do(bg, pprof.Labels("role", "redis-relay"), s.runRelay)
}

// stopRelay stops the relay goroutine and waits for it.
func (s *Store) stopRelay() {
	if s.relay != nil {
		s.relay.stop()
		<-s.relay.done
	}
}

// runRelay moves the dirty outboxes when kicked and sweeps every outbox
// every relaySweep, until ctx ends. Outboxes that failed are tried again
// after a backoff of 100 ms doubling to 2 s; a sweep, at the next one.
func (s *Store) runRelay(ctx context.Context) {
	defer close(s.relay.done)
	t := time.NewTicker(relaySweep)
	defer t.Stop()
	sweep, delay := true, time.Duration(0)
	var last time.Time // when the last round started
	for {
		last = time.Now()
		rctx, cancel := context.WithTimeout(ctx, relayRound)
		if sweep {
			s.sweepOutboxes(rctx)
			sweep = false
		}
		err := errors.Join(s.flushEvents(rctx), s.retryOutboxes(rctx))
		cancel()
		var retry <-chan time.Time
		if err == nil {
			delay = 0
		} else {
			delay = min(2*delay+100*time.Millisecond, 2*time.Second)
			retry = time.After(delay)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.relay.kick:
			// At most one round per relayInterval: under load a round
			// gathers what the interval wrote (a round's commands are
			// per outbox: fewer, fuller rounds cost Redis less and hold
			// up other commands less); a lone write moves at once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(last.Add(relayInterval))):
			}
		case <-t.C:
			sweep = true
		case <-retry:
		}
	}
}

// markOutboxes records the outboxes units wrote to, or may have when
// failed is set (the call failed, perhaps after running: those go to
// retry), and kicks the relay.
func (s *Store) markOutboxes(units []unit, failed bool) {
	r := s.relay
	if r == nil {
		return
	}
	set, marked := r.dirty, false
	if failed {
		set = r.retry
	}
	r.mu.Lock()
	for _, u := range units {
		if u.outbox > 0 {
			r.mark(set, uint16(u.outbox-1))
			marked = true
		}
	}
	r.mu.Unlock()
	if marked {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// flushEvents moves the dirty outboxes into the log, within ctx; nothing
// on a single instance. A flush under way ends first, so what this
// store's scripts appended before the call is in the log when it returns
// nil (but in outboxes whose shard failed: retry). Outboxes it cannot
// move go to retry.
func (s *Store) flushEvents(ctx context.Context) error {
	r := s.relay
	if r == nil {
		return nil
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return s.wrap(ctx, "move events", ctx.Err())
	}
	defer func() { <-r.sem }()
	return s.moveSet(ctx, r.dirty, false)
}

// retryOutboxes moves the outboxes in retry.
func (s *Store) retryOutboxes(ctx context.Context) error {
	return s.moveSet(ctx, s.relay.retry, true)
}

// moveSet moves the outboxes of set (dirty, or retry when retry is true);
// those it cannot move go to retry, keeping their first mark.
func (s *Store) moveSet(ctx context.Context, set map[uint16]outboxMark, retry bool) error {
	r := s.relay
	slots, marks, move := r.take(set, retry)
	failed, err := s.moveOutboxes(ctx, slots)
	if err != nil && failed == nil {
		failed = slots
	}
	r.mu.Lock()
	delete(r.moving, move)
	for _, sl := range failed {
		if m, ok := r.retry[sl]; !ok || marks[sl].since.Before(m.since) {
			r.retry[sl] = marks[sl]
		}
	}
	r.mu.Unlock()
	return err
}

// sweepOutboxes marks dirty every outbox that holds entries: XLEN of
// every slot's outbox, one pipeline. Outboxes on a shard that does not
// answer are left to the next sweep.
func (s *Store) sweepOutboxes(ctx context.Context) {
	b := s.c.B()
	cmds := make(rueidis.Commands, numSlots)
	for sl := range cmds {
		cmds[sl] = b.Xlen().Key(s.k.outbox(uint16(sl))).Build()
	}
	rctx, cancel := context.WithTimeout(ctx, relaySweepTimeout)
	res := s.c.DoMulti(rctx, cmds...)
	cancel()
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	for sl, r := range res {
		if n, err := r.AsInt64(); err == nil && n > 0 {
			s.relay.mark(s.relay.dirty, uint16(sl))
		}
	}
}

// outboxEntry is one entry of an outbox: its stream id (ms-seq), its
// number of events and the JSON lines of its e fields, joined.
type outboxEntry struct {
	id      string
	ms, seq uint64
	n       int
	lines   string
}

// outboxGroup is the entries read from the outbox of slot, oldest first.
type outboxGroup struct {
	slot    uint16
	entries []outboxEntry
}

// moveOutboxes moves every entry of the outboxes of slots into the log:
// rounds of reading (up to relayRead entries per outbox, one pipeline),
// moving and deleting, until the outboxes read are drained. It returns
// the slots whose outbox could not be read (their shard did not answer,
// or an entry is not one the scripts write: that outbox stays, the others
// move), or an error when the move itself failed.
func (s *Store) moveOutboxes(ctx context.Context, slots []uint16) ([]uint16, error) {
	var failed []uint16
	var corrupt error
	for len(slots) > 0 {
		b := s.c.B()
		cmds := make(rueidis.Commands, len(slots))
		for i, sl := range slots {
			cmds[i] = b.Xrange().Key(s.k.outbox(sl)).Start("-").End("+").Count(relayRead).Build()
		}
		var groups []outboxGroup
		var full []uint16
		rctx, cancel := context.WithTimeout(ctx, relayReadTimeout)
		res := s.c.DoMulti(rctx, cmds...)
		cancel()
		for i, r := range res {
			if r.Error() != nil {
				failed = append(failed, slots[i])
				continue
			}
			es, err := parseOutbox(r)
			if err != nil {
				failed, corrupt = append(failed, slots[i]), fmt.Errorf("redis outbox %s: %w", s.k.outbox(slots[i]), err)
				continue
			}
			if len(es) == relayRead {
				full = append(full, slots[i])
			}
			if len(es) > 0 {
				groups = append(groups, outboxGroup{slot: slots[i], entries: es})
			}
		}
		if err := s.moveGroups(ctx, groups); err != nil {
			return nil, err
		}
		slots = full
	}
	if corrupt != nil {
		return failed, corrupt
	}
	if len(failed) > 0 {
		return failed, fmt.Errorf("redis move events: %w: %d outboxes not read", tether.ErrUnavailable, len(failed))
	}
	return nil, nil
}

// parseOutbox decodes an XRANGE answer.
func parseOutbox(r rueidis.RedisResult) ([]outboxEntry, error) {
	raw, err := r.ToArray()
	if err != nil {
		return nil, fmt.Errorf("xrange answer: %w", errCorrupt)
	}
	out := make([]outboxEntry, 0, len(raw))
	for _, e := range raw {
		pair, err := e.ToArray()
		if err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("xrange entry: %w", errCorrupt)
		}
		id, err1 := pair[0].ToString()
		fields, err2 := pair[1].AsStrSlice()
		ms, seq, ok := parseStreamID(id)
		if err1 != nil || err2 != nil || !ok || len(fields) < 2 || len(fields)%2 != 0 || fields[0] != "n" {
			return nil, fmt.Errorf("entry %q: %w", clip(id), errCorrupt)
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("entry %q: %w", clip(id), errCorrupt)
		}
		en := outboxEntry{id: id, ms: ms, seq: seq, n: n}
		for f := 3; f < len(fields); f += 2 {
			if en.lines != "" {
				en.lines += "\n"
			}
			en.lines += fields[f]
		}
		out = append(out, en)
	}
	return out, nil
}

// relayGroups bounds the groups of one move script (a field each in one
// XADD, and two values each in one HSET: Lua's unpack takes at most
// about 8,000 values).
const relayGroups = 1000

// moveAttempts bounds the move scripts for one group whose outbox other
// movers keep moving at the same time.
const moveAttempts = 4

// moveGroups appends groups to the log, ordered by the stream ids of
// their first entries (the times their shards appended them; ties keep
// the order of groups), with move scripts of up to relayGroups groups (one
// pipeline), then deletes them from their outboxes (XDEL, one pipeline).
// A group another mover moved part of meanwhile is sent again without
// that part.
func (s *Store) moveGroups(ctx context.Context, groups []outboxGroup) error {
	slices.SortStableFunc(groups, func(a, b outboxGroup) int {
		return cmp.Or(cmp.Compare(a.entries[0].ms, b.entries[0].ms), cmp.Compare(a.entries[0].seq, b.entries[0].seq))
	})
	done := groups
	for attempt := 0; len(groups) > 0; attempt++ {
		if attempt == moveAttempts {
			return fmt.Errorf("redis move events: %d outboxes moved by others at the same time, %d times: %w", len(groups), attempt, errContended)
		}
		var err error
		if groups, err = s.moveOnce(ctx, groups); err != nil {
			return err
		}
	}
	// What XDEL fails to delete is read again by a later move or sweep,
	// and skipped by the move script.
	b := s.c.B()
	dels := make(rueidis.Commands, len(done))
	for i, g := range done {
		ids := make([]string, len(g.entries))
		for j, e := range g.entries {
			ids[j] = e.id
		}
		dels[i] = b.Xdel().Key(s.k.outbox(g.slot)).Id(ids...).Build()
	}
	s.c.DoMulti(ctx, dels...)
	return nil
}

// moveOnce sends groups to the move script (one round trip) and returns
// the groups it left alone because the slot's cursor cuts them, each
// without the entries at or before that cursor.
func (s *Store) moveOnce(ctx context.Context, groups []outboxGroup) ([]outboxGroup, error) {
	ek := s.k.eventLog()
	var calls []call
	var sent [][]outboxGroup
	for len(groups) > 0 {
		part := groups[:min(len(groups), relayGroups)]
		groups = groups[len(part):]
		args := make([]string, 1, 1+5*len(part))
		args[0] = strconv.Itoa(len(part))
		for _, g := range part {
			n, lines := 0, make([]string, len(g.entries))
			for i, e := range g.entries {
				n, lines[i] = n+e.n, e.lines
			}
			args = append(args, strconv.Itoa(int(g.slot)), g.entries[0].id, g.entries[len(g.entries)-1].id,
				strconv.Itoa(n), strings.Join(lines, "\n"))
		}
		calls, sent = append(calls, scriptCall(scriptMove, []string{ek.log, ek.moved}, args...)), append(sent, part)
	}
	res, err := s.roundTrip(ctx, "move events", calls)
	if err != nil {
		return nil, err
	}
	var again []outboxGroup
	for i, r := range res {
		vals, err := r.AsStrSlice()
		if err != nil || len(vals)%2 != 1 {
			return nil, fmt.Errorf("redis move events: unexpected answer: %w", errCorrupt)
		}
		for j := 1; j < len(vals); j += 2 {
			slot, err1 := strconv.Atoi(vals[j])
			ms, seq, ok := parseStreamID(vals[j+1])
			if err1 != nil || !ok {
				return nil, fmt.Errorf("redis move events: unexpected answer: %w", errCorrupt)
			}
			for _, g := range sent[i] {
				if int(g.slot) != slot {
					continue
				}
				k := 0
				for k < len(g.entries) && cmp.Or(cmp.Compare(g.entries[k].ms, ms), cmp.Compare(g.entries[k].seq, seq)) <= 0 {
					k++
				}
				again = append(again, outboxGroup{slot: g.slot, entries: g.entries[k:]})
			}
		}
	}
	return again, nil
}
