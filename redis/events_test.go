package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
	"github.com/tetherpush/tether/storetest"
)

func TestEvents(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunEvents(t, func(t *testing.T) tether.EventStore {
		return MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	})
}

// eventsEnv is a store on a server of its own, with helpers that fail the
// test on error.
type eventsEnv struct {
	t   *testing.T
	srv *redistest.Server
	s   *redis.Store
	ctx context.Context
	n   int
}

func newEventsEnv(t *testing.T, args ...string) *eventsEnv {
	srv := redistest.Start(t, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &eventsEnv{t: t, srv: srv, s: MustOpen(t, redis.Options{URL: srv.URL(), Prefix: "ev"}), ctx: ctx}
}

// publish publishes one message to target and returns it with its
// position.
func (e *eventsEnv) publish(target tether.Target) (*tether.Message, uint64) {
	e.t.Helper()
	e.n++
	now := time.Now()
	m := &tether.Message{ID: fmt.Sprintf("01JE%06d", e.n), Target: target, Data: json.RawMessage(`{}`),
		PublishedAt: now, ExpiresAt: now.Add(time.Hour)}
	res, err := e.s.Publish(e.ctx, []*tether.Message{m})
	if err != nil {
		e.t.Fatalf("publish: %v", err)
	}
	return m, res[0].Seq
}

func (e *eventsEnv) commit(s *redis.Store, changes ...tether.Change) []tether.Committed {
	e.t.Helper()
	out, err := s.Commit(e.ctx, changes)
	if err != nil {
		e.t.Fatalf("commit: %v", err)
	}
	return out
}

// lines returns the event log, one line per event (without its ID).
func (e *eventsEnv) lines() []string {
	e.t.Helper()
	evs, err := e.s.Events(e.ctx, "", 1000)
	if err != nil {
		e.t.Fatalf("events: %v", err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s %s %s %s %d", ev.Type, ev.Message, ev.Target, ev.Device, ev.Attempts)
	}
	return out
}

func (e *eventsEnv) checkLines(what string, want ...string) {
	e.t.Helper()
	if got := e.lines(); !slices.Equal(got, want) {
		e.t.Errorf("%s: event log\n  %s\nwant\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestCommitEvents: an ack appends exactly one delivery.acked with its
// message, target, device and attempts, in one stream entry with the
// cursors; a repeated ack appends none, a dead delivery its event, and a
// Commit of many devices one stream entry for all of them.
func TestCommitEvents(t *testing.T) {
	e := newEventsEnv(t)
	m, seq := e.publish(tether.DeviceTarget("pos-1"))
	at := time.Now()
	ack := tether.Change{Device: "pos-1", At: at, Marks: []tether.Mark{{Source: m.Target, Seq: seq, State: tether.StateAcked, Attempts: 2}}}
	e.commit(e.s, ack)
	want := []string{"delivery.acked " + m.ID + " device:pos-1 pos-1 2"}
	e.checkLines("after an ack", want...)
	e.commit(e.s, ack)
	e.checkLines("after the same ack again", want...)

	dead, seq := e.publish(tether.DeviceTarget("pos-2"))
	e.commit(e.s, tether.Change{Device: "pos-2", At: at, Marks: []tether.Mark{{Source: dead.Target, Seq: seq, State: tether.StateDead, Attempts: 5}}})
	want = append(want, "delivery.dead "+dead.ID+" device:pos-2 pos-2 5")
	e.checkLines("after a dead delivery", want...)

	// A position the store did not publish or read on this node (another
	// store, no cache) is looked up.
	other := MustOpen(t, redis.Options{URL: e.srv.URL(), Prefix: "ev"})
	m3, seq3 := e.publish(tether.DeviceTarget("pos-3"))
	e.commit(other, tether.Change{Device: "pos-3", At: at, Marks: []tether.Mark{{Source: m3.Target, Seq: seq3, State: tether.StateAcked, Attempts: 1}}})
	want = append(want, "delivery.acked "+m3.ID+" device:pos-3 pos-3 1")
	e.checkLines("after an ack through another store", want...)

	// A position no log holds settles, with no event.
	e.commit(e.s, tether.Change{Device: "pos-4", At: at, Marks: []tether.Mark{{Source: tether.DeviceTarget("pos-4"), Seq: 99, State: tether.StateAcked, Attempts: 1}}})
	e.checkLines("after an ack of a position never published", want...)

	entries := e.srv.MustDo("XLEN", "ev:{e}:log")
	changes := make([]tether.Change, 50)
	for i := range changes {
		d := tether.DeviceTarget(fmt.Sprintf("many-%d", i))
		m, seq := e.publish(d)
		changes[i] = tether.Change{Device: d.ID, At: at, Marks: []tether.Mark{{Source: d, Seq: seq, State: tether.StateAcked, Attempts: 1}}}
		want = append(want, "delivery.acked "+m.ID+" "+d.String()+" "+d.ID+" 1")
	}
	e.commit(e.s, changes...)
	e.checkLines("after a commit of 50 devices", want...)
	if got := e.srv.MustDo("XLEN", "ev:{e}:log"); got != fmt.Sprint(mustAtoi(t, entries)+1) {
		t.Errorf("a commit of 50 acks added %d stream entries, want 1", mustAtoi(t, got)-mustAtoi(t, entries))
	}
}

// TestCommitEventsSplitBySize: a Commit whose devices settle more events
// than one script call should carry (maxCallBytes of arguments) is split
// into several calls, each appending its own stream entry, so that no one
// call holds Redis for long; every event is in the log exactly once.
func TestCommitEventsSplitBySize(t *testing.T) {
	e := newEventsEnv(t)
	const devices, each = 12, 1000 // 12,000 acks: about 1.5 MB of event lines
	at := time.Now()
	var changes []tether.Change
	want := map[string]bool{}
	for d := range devices {
		target := tether.DeviceTarget(fmt.Sprintf("big-%d", d))
		msgs := make([]*tether.Message, each)
		for i := range msgs {
			e.n++
			msgs[i] = &tether.Message{ID: fmt.Sprintf("01JS%08d", e.n), Target: target, Data: json.RawMessage(`{}`),
				PublishedAt: at, ExpiresAt: at.Add(time.Hour)}
			want[msgs[i].ID] = true
		}
		res, err := e.s.Publish(e.ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		ch := tether.Change{Device: target.ID, At: at}
		for _, r := range res {
			ch.Marks = append(ch.Marks, tether.Mark{Source: target, Seq: r.Seq, State: tether.StateAcked, Attempts: 1})
		}
		changes = append(changes, ch)
	}
	for i, c := range e.commit(e.s, changes...) {
		if c.Acked != each {
			t.Fatalf("device %d: %d acked, want %d", i, c.Acked, each)
		}
	}
	if n := mustAtoi(t, e.srv.MustDo("XLEN", "ev:{e}:log")); n < 2 || n >= devices {
		t.Errorf("the commit appended %d stream entries, want 2 to %d (split by size, not per device)", n, devices-1)
	}
	after := ""
	for {
		evs, err := e.s.Events(e.ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			if !want[ev.Message] {
				t.Fatalf("event %s: message %s not acked, or reported twice", ev.ID, ev.Message)
			}
			delete(want, ev.Message)
		}
		after = evs[len(evs)-1].ID
	}
	if len(want) > 0 {
		t.Errorf("%d acks have no event", len(want))
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// TestCommitEventsRetried: a compare-and-set that loses to another writer
// is redone from the current cursors, and so are its events: an ack
// another store committed meanwhile is reported once, not twice.
func TestCommitEventsRetried(t *testing.T) {
	e := newEventsEnv(t)
	m1, seq1 := e.publish(tether.DeviceTarget("pos-1"))
	m2, seq2 := e.publish(tether.DeviceTarget("pos-1"))
	src, at := m1.Target, time.Now()
	sent := tether.Change{Device: "pos-1", At: at, Marks: []tether.Mark{
		{Source: src, Seq: seq1, State: tether.StateInflight, Attempts: 1}, {Source: src, Seq: seq2, State: tether.StateInflight, Attempts: 1}}}
	e.commit(e.s, sent) // e.s caches pos-1's cursors
	other := MustOpen(t, redis.Options{URL: e.srv.URL(), Prefix: "ev"})
	e.commit(other, tether.Change{Device: "pos-1", At: at, Marks: []tether.Mark{{Source: src, Seq: seq1, State: tether.StateAcked, Attempts: 1}}})
	// e.s starts from its stale cursors, where m1 is not settled: it
	// loses, and its retry settles m2 alone.
	out := e.commit(e.s, tether.Change{Device: "pos-1", At: at, Marks: []tether.Mark{
		{Source: src, Seq: seq1, State: tether.StateAcked, Attempts: 1}, {Source: src, Seq: seq2, State: tether.StateAcked, Attempts: 1}}})
	if out[0].Acked != 1 {
		t.Errorf("retried commit acked %d, want 1", out[0].Acked)
	}
	e.checkLines("after a lost compare-and-set",
		"delivery.acked "+m1.ID+" device:pos-1 pos-1 1",
		"delivery.acked "+m2.ID+" device:pos-1 pos-1 1")
}

// TestCancelEvents: Cancel of a group message settles the members that
// had not settled it, with one delivery.cancelled each; expired
// deliveries have theirs; a second Cancel and an unknown id change
// nothing.
func TestCancelEvents(t *testing.T) {
	e := newEventsEnv(t)
	for _, d := range []string{"pos-b", "pos-a", "pos-c"} {
		if err := e.s.Join(e.ctx, d, []string{"shop"}); err != nil {
			t.Fatal(err)
		}
	}
	m, seq := e.publish(tether.GroupTarget("shop"))
	at := time.Now()
	e.commit(e.s, tether.Change{Device: "pos-b", At: at, Marks: []tether.Mark{{Source: m.Target, Seq: seq, State: tether.StateAcked, Attempts: 1}}})
	devices, err := e.s.Cancel(e.ctx, m.ID, at, nil)
	if err != nil || !slices.Equal(devices, []string{"pos-a", "pos-c"}) {
		t.Fatalf("Cancel = %v, %v; want [pos-a pos-c]", devices, err)
	}
	want := []string{
		"delivery.acked " + m.ID + " group:shop pos-b 1",
		"delivery.cancelled " + m.ID + " group:shop pos-a 0",
		"delivery.cancelled " + m.ID + " group:shop pos-c 0",
	}
	e.checkLines("after Cancel", want...)
	if devices, err := e.s.Cancel(e.ctx, m.ID, at, nil); err != nil || len(devices) != 0 {
		t.Errorf("second Cancel = %v, %v; want no devices", devices, err)
	}
	if _, err := e.s.Cancel(e.ctx, "01JNOSUCH", at, nil); !errors.Is(err, tether.ErrNotFound) {
		t.Errorf("Cancel of an unknown id: %v, want ErrNotFound", err)
	}
	e.checkLines("after a second Cancel", want...)

	x, _ := e.publish(tether.DeviceTarget("pos-x"))
	if n, _, err := e.s.Expire(e.ctx, x.ExpiresAt, x.PublishedAt.Add(-time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	want = append(want, "delivery.expired "+x.ID+" device:pos-x pos-x 0")
	e.checkLines("after Expire", want...)
	if _, err := e.s.Cancel(e.ctx, x.ID, at, nil); err != nil {
		t.Errorf("Cancel of an expired message: %v", err)
	}
	e.checkLines("after Cancel of an expired message", want...)
}

// TestEventsSurviveRestart: with appendfsync always, the event log, the
// lease's progress and the IDs' order survive a crash of redis-server.
func TestEventsSurviveRestart(t *testing.T) {
	e := newEventsEnv(t, "--appendonly", "yes", "--appendfsync", "always")
	m, seq := e.publish(tether.DeviceTarget("pos-1"))
	e.commit(e.s, tether.Change{Device: "pos-1", At: time.Now(), Marks: []tether.Mark{{Source: m.Target, Seq: seq, State: tether.StateAcked, Attempts: 1}}})
	presence := []tether.LogEvent{{Type: tether.EventOnline, At: time.Now().Truncate(time.Millisecond), Device: "pos-1", Node: "n1"}}
	if err := e.s.Append(e.ctx, presence); err != nil {
		t.Fatal(err)
	}
	if held, _, err := e.s.Lease(e.ctx, "n1", time.Minute); err != nil || !held {
		t.Fatalf("Lease = %v, %v", held, err)
	}
	if err := e.s.Sent(e.ctx, "n1", presence[0].ID); err != nil {
		t.Fatal(err)
	}
	before := e.lines()
	e.srv.Kill()
	e.srv.Restart()
	e.s = MustOpen(t, redis.Options{URL: e.srv.URL(), Prefix: "ev"})
	e.checkLines("after a restart", before...)
	held, sent, err := e.s.Lease(e.ctx, "n1", time.Minute)
	if err != nil || !held || sent != presence[0].ID {
		t.Errorf("Lease after a restart = %v, %q, %v; want true, %q", held, sent, err, presence[0].ID)
	}
	more := []tether.LogEvent{{Type: tether.EventOffline, At: time.Now().Truncate(time.Millisecond), Device: "pos-1", Node: "n1", Code: 1001}}
	if err := e.s.Append(e.ctx, more); err != nil {
		t.Fatal(err)
	}
	if more[0].ID <= presence[0].ID {
		t.Errorf("ID %q after the restart is not after %q", more[0].ID, presence[0].ID)
	}
}
