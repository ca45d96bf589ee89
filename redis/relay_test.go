package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
)

// These tests check the relay (relay.go) that carries the delivery events
// of a Redis Cluster from the outboxes of the devices' slots to the event
// log, on a real three-master cluster.

// openPrefix opens a store on c with prefix, closed at the end of the
// test.
func openPrefix(t *testing.T, c *redistest.Cluster, prefix string) *Store {
	t.Helper()
	s := must(t, "open", func(ctx context.Context) (*Store, error) {
		return Open(ctx, Options{Addrs: c.Addrs(), Prefix: prefix})
	})
	t.Cleanup(func() { s.Close() })
	return s
}

// openNoRelay opens a store on c with prefix whose relay is stopped, as
// if its node had died: its scripts still write outboxes, nothing of it
// moves them.
func openNoRelay(t *testing.T, c *redistest.Cluster, prefix string) *Store {
	t.Helper()
	s := openPrefix(t, c, prefix)
	s.stopRelay()
	s.relay = nil
	return s
}

// logEvents returns every event of the log that s reads.
func logEvents(t *testing.T, s *Store) []tether.LogEvent {
	t.Helper()
	return must(t, "events", func(ctx context.Context) ([]tether.LogEvent, error) { return s.Events(ctx, "", 100000) })
}

// outboxEntries returns the number of entries left in every outbox.
func outboxEntries(t *testing.T, s *Store) int64 {
	t.Helper()
	calls := make([]call, numSlots)
	for sl := range calls {
		key := s.k.outbox(uint16(sl))
		calls[sl] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Xlen().Key(key).Build() })
	}
	res := must(t, "xlen", func(ctx context.Context) ([]rueidis.RedisResult, error) { return s.roundTrip(ctx, "xlen", calls) })
	var n int64
	for _, r := range res {
		v, _ := r.AsInt64()
		n += v
	}
	return n
}

// ackAll publishes one message to group and has each device ack it
// through its store (stores[i % len(stores)]); it returns the message id.
func ackAll(t *testing.T, stores []*Store, group string, devices []string) string {
	t.Helper()
	now := time.Now()
	m := groupMessage(fmt.Sprintf("01JRELAY%s", group), group, "", now)
	res := must(t, "publish", func(ctx context.Context) ([]tether.PublishResult, error) {
		return stores[0].Publish(ctx, []*tether.Message{m})
	})
	var wg sync.WaitGroup
	for i, d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			must(t, "commit", func(ctx context.Context) ([]tether.Committed, error) {
				return stores[i%len(stores)].Commit(ctx, []tether.Change{{Device: d, At: now,
					Marks: []tether.Mark{{Source: m.Target, Seq: res[0].Seq, State: tether.StateAcked, Attempts: 1, Message: m.ID}}}})
			})
		}()
	}
	wg.Wait()
	return m.ID
}

// joinAll joins n devices, spread over the slots, to group and returns
// them.
func joinAll(t *testing.T, s *Store, group string, n int) []string {
	t.Helper()
	devices := make([]string, n)
	for i := range devices {
		devices[i] = "pos-" + strconv.Itoa(i)
		must(t, "join", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, s.Join(ctx, devices[i], []string{group})
		})
	}
	return devices
}

// ackedDevices returns, sorted, the devices of the delivery.acked events
// of message id in evs, and fails on a duplicate.
func ackedDevices(t *testing.T, evs []tether.LogEvent, id string) []string {
	t.Helper()
	var out []string
	for _, e := range evs {
		if e.Type == tether.EventAcked && e.Message == id {
			if slices.Contains(out, e.Device) {
				t.Errorf("delivery.acked of %s to %s twice in the log", id, e.Device)
			}
			out = append(out, e.Device)
		}
	}
	slices.Sort(out)
	return out
}

// waitAcked reads the log through s until it holds the delivery.acked
// events of message id to n devices, for 5 s at most, and returns those
// devices and how long it waited.
func waitAcked(t *testing.T, s *Store, id string, n int) ([]string, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		got := ackedDevices(t, logEvents(t, s), id)
		if len(got) >= n || time.Since(start) > 5*time.Second {
			return got, time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRelayAcrossNodes: two nodes settle the deliveries of 60 devices
// spread over the cluster's slots; each reads its own events at once, the
// other's within moments, each exactly once, and no outbox keeps an
// entry.
func TestRelayAcrossNodes(t *testing.T) {
	c := redistest.StartCluster(t)
	a, b := openPrefix(t, c, "ra"), openPrefix(t, c, "ra")
	devices := joinAll(t, a, "shop", 60)
	id := ackAll(t, []*Store{a}, "shop", devices[:30])
	if got := ackedDevices(t, logEvents(t, a), id); len(got) != 30 {
		t.Errorf("right after its commits node A reads %d acked events, want 30", len(got))
	}
	ackAll(t, []*Store{b}, "shop", devices[30:])
	want := slices.Clone(devices)
	slices.Sort(want)
	got, took := waitAcked(t, a, id, len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("node A reads acked events of %d devices, want %d", len(got), len(want))
	}
	t.Logf("node B's events read on node A after %v", took)
	if n := outboxEntries(t, a); n != 0 {
		t.Errorf("%d entries left in the outboxes", n)
	}
}

// TestRelayAfterDeath: events a node wrote to the outboxes and never moved
// (its relay stopped, as if it died) are moved by the sweep of a node
// that opens later, once.
func TestRelayAfterDeath(t *testing.T) {
	c := redistest.StartCluster(t)
	dead := openNoRelay(t, c, "rd")
	devices := joinAll(t, dead, "shop", 40)
	id := ackAll(t, []*Store{dead}, "shop", devices)
	if got := ackedDevices(t, logEvents(t, dead), id); len(got) != 0 {
		t.Fatalf("%d events in the log without a relay", len(got))
	}
	if n := outboxEntries(t, dead); n != 40 {
		t.Fatalf("%d outbox entries, want 40", n)
	}
	live := openPrefix(t, c, "rd")
	got, took := waitAcked(t, live, id, 40)
	if len(got) != 40 {
		t.Fatalf("after a live node's sweep: %d acked events, want 40", len(got))
	}
	t.Logf("moved by the live node's first sweep %v after it opened", took)
	if n := outboxEntries(t, live); n != 0 {
		t.Errorf("%d entries left in the outboxes", n)
	}
}

// TestRelayMovesOnce: many movers of the same outboxes at once, and a
// mover that moved but died before deleting (the move script run again
// over what is already in the log), append every event exactly once, in
// each outbox's order.
func TestRelayMovesOnce(t *testing.T) {
	c := redistest.StartCluster(t)
	s := openNoRelay(t, c, "ro")
	const slots, perSlot = 8, 250 // over relayRead: several rounds per outbox
	var want []string
	for sl := range slots {
		slot := uint16(sl * 2000)
		key := s.k.outbox(slot)
		for i := range perSlot {
			dev := fmt.Sprintf("s%d-%03d", slot, i)
			line := fmt.Sprintf(`{"type":"device.online","at":"2026-12-04T10:00:00Z","device":%q}`, dev)
			must(t, "xadd", func(ctx context.Context) ([]rueidis.RedisResult, error) {
				return s.roundTrip(ctx, "xadd", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
					return b.Xadd().Key(key).Id("*").FieldValue().FieldValue("n", "1").FieldValue("e", line).Build()
				})})
			})
			want = append(want, dev)
		}
	}
	// A mover that died after its move script, before XDEL: read and move
	// the first entries of one outbox, delete nothing.
	first := must(t, "xrange", func(ctx context.Context) ([]rueidis.RedisResult, error) {
		return s.roundTrip(ctx, "xrange", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Xrange().Key(s.k.outbox(0)).Start("-").End("+").Count(10).Build()
		})})
	})
	entries, err := parseOutbox(first[0])
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.moveOnce(context.Background(), []outboxGroup{{slot: 0, entries: entries}}); err != nil || len(again) != 0 {
		t.Fatalf("move of the first entries: %v, %v", again, err)
	}
	// Four movers of every outbox at once.
	all := make([]uint16, slots)
	for i := range all {
		all[i] = uint16(i * 2000)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			must(t, "move outboxes", func(ctx context.Context) ([]uint16, error) { return s.moveOutboxes(ctx, all) })
		}()
	}
	wg.Wait()
	var got []string
	for _, e := range logEvents(t, s) {
		got = append(got, e.Device)
	}
	slices.Sort(got) // across outboxes the log has the order of moving
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("log holds %d events (want %d, each once)", len(got), len(want))
	}
	// Within an outbox, its order.
	last := map[string]string{}
	for _, e := range logEvents(t, s) {
		prefix := e.Device[:len(e.Device)-4]
		if e.Device < last[prefix] {
			t.Errorf("%s after %s in the log", e.Device, last[prefix])
		}
		last[prefix] = e.Device
	}
	if n := outboxEntries(t, s); n != 0 {
		t.Errorf("%d entries left in the outboxes", n)
	}
}

// TestOutboxTags: every slot has a tag, and the tag is in its slot.
func TestOutboxTags(t *testing.T) {
	tags := outboxTags()
	for sl, tag := range tags {
		if tag == "" || slotOf(tag) != uint16(sl) || slotOf("p:{"+tag+"}:out") != uint16(sl) {
			t.Fatalf("slot %d: tag %q in slot %d", sl, tag, slotOf(tag))
		}
	}
}

// TestRelayShardPaused: while one shard does not answer (SIGSTOP), the
// events of the others still reach the log, and reading the log stays
// quick, though an outbox of the stopped shard is dirty; once it answers
// again its events follow.
func TestRelayShardPaused(t *testing.T) {
	c := redistest.StartCluster(t)
	w := openNoRelay(t, c, "rp")
	s := openPrefix(t, c, "rp")
	logNode := owner(t, c, s.k.eventLog().log)
	paused := (logNode + 1) % len(c.Nodes)
	group, mid := "", ""
	for i := 0; group == "" || mid == ""; i++ {
		if g := fmt.Sprintf("shop-%d", i); group == "" && owner(t, c, s.k.log(tether.GroupTarget(g)).seq) != paused {
			group = g
		}
		if id := fmt.Sprintf("01JRELAYP%04d", i); mid == "" && owner(t, c, s.k.bucket(bucketOf(id)).due) != paused {
			mid = id
		}
	}
	devices := joinAll(t, s, group, 40)
	var onPaused, others []string
	for _, d := range devices {
		if owner(t, c, s.k.cursors(d)) == paused {
			onPaused = append(onPaused, d)
		} else {
			others = append(others, d)
		}
	}
	if len(onPaused) == 0 || len(others) == 0 {
		t.Fatalf("no devices on both sides: %d on the paused shard, %d elsewhere", len(onPaused), len(others))
	}
	id := ackAll(t, []*Store{w}, group, onPaused) // left in the paused shard's outboxes
	s.relay.mu.Lock()
	for _, d := range onPaused {
		s.relay.mark(s.relay.dirty, slotOf(s.k.cursors(d)))
	}
	s.relay.mu.Unlock()
	c.Nodes[paused].Pause()
	defer c.Nodes[paused].Resume()
	m := groupMessage(mid, group, "", time.Now())
	res := must(t, "publish", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{m})
	})
	for _, d := range others {
		must(t, "commit", func(ctx context.Context) ([]tether.Committed, error) {
			return s.Commit(ctx, []tether.Change{{Device: d, At: time.Now(),
				Marks: []tether.Mark{{Source: m.Target, Seq: res[0].Seq, State: tether.StateAcked, Attempts: 1, Message: m.ID}}}})
		})
	}
	start := time.Now()
	var got []string
	var slowest time.Duration
	for len(got) < len(others) && time.Since(start) < 3*time.Second {
		read := time.Now()
		got = ackedDevices(t, logEvents(t, s), m.ID)
		slowest = max(slowest, time.Since(read))
	}
	if len(got) != len(others) {
		t.Errorf("with a shard stopped the log holds %d of the %d acked events of the other shards after %v", len(got), len(others), time.Since(start))
	}
	if slowest > time.Second {
		t.Errorf("a read of the log took %v with a shard stopped", slowest)
	}
	t.Logf("with a shard stopped and its outbox dirty, the other shards' events were in the log after %v; slowest read %v", time.Since(start), slowest)
	// The backlog shows in the relay's gauges (tether_event_relay_*).
	if age, dirty, retry := s.relay.pending(time.Now()); dirty+retry == 0 || age < time.Since(start) {
		t.Errorf("with a shard stopped: %d outboxes waiting, the oldest %v; want some, waiting over %v", dirty+retry, age, time.Since(start))
	}
	// They count in retry, also while the relay tries them again (a move
	// under way), and nothing is left in dirty.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, dirty, retry := s.relay.pending(time.Now()); dirty != 0 || retry == 0 {
			t.Errorf("with a shard stopped: %d outboxes dirty and %d in retry; want 0 and some", dirty, retry)
			break
		}
	}
	c.Nodes[paused].Resume()
	waitUntil(t, "the stopped shard's events in the log", func() bool {
		return len(ackedDevices(t, logEvents(t, s), id)) == len(onPaused)
	})
	waitUntil(t, "the relay's backlog gone", func() bool {
		age, dirty, retry := s.relay.pending(time.Now())
		return age == 0 && dirty == 0 && retry == 0
	})
}

// TestRelayCorruptOutbox: an outbox entry the scripts did not write (no
// event count) stays in its outbox, with its slot to retry, and does not
// hold up the other outboxes.
func TestRelayCorruptOutbox(t *testing.T) {
	c := redistest.StartCluster(t)
	s := openNoRelay(t, c, "rc")
	line := `{"type":"device.online","at":"2026-12-04T10:00:00Z","device":"pos-1"}`
	for sl, fields := range map[uint16][]string{1: {"x", "1"}, 2: {"n", "1", "e", line}} {
		key := s.k.outbox(sl)
		must(t, "xadd", func(ctx context.Context) ([]rueidis.RedisResult, error) {
			return s.roundTrip(ctx, "xadd", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
				return b.Arbitrary("XADD").Keys(key).Args(append([]string{"*"}, fields...)...).Build()
			})})
		})
	}
	failed, err := s.moveOutboxes(context.Background(), []uint16{1, 2})
	if !slices.Equal(failed, []uint16{1}) || !errors.Is(err, errCorrupt) {
		t.Errorf("moveOutboxes = %v, %v; want slot 1 failed as corrupt", failed, err)
	}
	if evs := logEvents(t, s); len(evs) != 1 || evs[0].Device != "pos-1" {
		t.Errorf("log holds %v, want the one event of the sound outbox", evs)
	}
	if n := outboxEntries(t, s); n != 1 {
		t.Errorf("%d entries left in the outboxes, want the corrupt one", n)
	}
}
