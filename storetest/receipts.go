package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// events returns every event of the store's log, oldest first.
func (e *env) events() []tether.LogEvent {
	e.t.Helper()
	evs, err := e.s.Events(e.ctx, "", 1000)
	if err != nil {
		e.t.Fatalf("events: %v", err)
	}
	return evs
}

// eventLine is an event without its ID, for comparing.
func eventLine(ev tether.LogEvent) string {
	return fmt.Sprintf("%s %s %s %s attempts=%d at=%s", ev.Type, ev.Message, ev.Target, ev.Device, ev.Attempts, ev.At.UTC().Format(time.RFC3339Nano))
}

// checkEvents compares the log with want (eventLine forms), in order.
// Events that one call settled for several devices may come in any order
// (on a Redis Cluster each device's are written on its own shard): a want
// element may hold several lines separated by "|", for a run of events in
// any order.
func (e *env) checkEvents(want ...string) {
	e.t.Helper()
	var got []string
	for _, ev := range e.events() {
		got = append(got, eventLine(ev))
	}
	var flat []string
	for _, w := range want {
		run := strings.Split(w, "|")
		if i := len(flat); i+len(run) <= len(got) && len(run) > 1 {
			slices.Sort(run)
			slices.Sort(got[i : i+len(run)])
		}
		flat = append(flat, run...)
	}
	want = flat
	if !slices.Equal(got, want) {
		e.t.Errorf("event log:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// testDeliveryEvents: a Commit appends one event per delivery it settles
// (acked, dead) with its message, target, device and attempts; an ack
// of a settled delivery and a send append none.
func testDeliveryEvents(t *testing.T, e *env) {
	e.join("d1", "g")
	e.join("d2", "g")
	m := e.publishTo(dev("d1"), 2)
	gm := e.publishTo(group("g"), 1)[0]
	e.sent("d1", 2, m[0])
	e.checkEvents()
	t1 := t0.Add(time.Second)
	e.settle("d1", tether.StateAcked, t1, m[0], gm)
	e.commit(tether.Change{Device: "d2", At: t1, Marks: e.marks(tether.StateDead, 3, gm)})
	e.settle("d1", tether.StateAcked, t1.Add(time.Second), m[0]) // settled already
	at := t1.Format(time.RFC3339Nano)
	e.checkEvents(
		"delivery.acked "+m[0]+" device:d1 d1 attempts=2 at="+at, // the sends recorded: more than the ack names
		"delivery.acked "+gm+" group:g d1 attempts=1 at="+at,
		"delivery.dead "+gm+" group:g d2 attempts=3 at="+at,
	)
}

// testAckIDEvents: an ack by id (Change.AckIDs) is reported like one by
// position.
func testAckIDEvents(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 1)[0]
	e.sent("d", 1, m)
	e.commit(tether.Change{Device: "d", At: t0, AckIDs: []string{m, "unknown"}})
	e.commit(tether.Change{Device: "d", At: t0, AckIDs: []string{m}})
	e.checkEvents("delivery.acked " + m + " device:d d attempts=1 at=" + t0.Format(time.RFC3339Nano))
}

// testExpireEvents: Expire appends delivery.expired for each delivery it
// settles, once.
func testExpireEvents(t *testing.T, e *env) {
	e.join("d1", "g")
	e.join("d2", "g")
	m := e.msg(group("g"))
	m.ExpiresAt = t0.Add(time.Minute)
	e.publish(m)
	e.sent("d1", 1, m.ID)
	e.settle("d2", tether.StateAcked, t0, m.ID)
	now := t0.Add(2 * time.Minute)
	e.checkExpire(now, t0, 10, 1, false)
	e.checkExpire(now, t0, 10, 0, false)
	e.checkEvents(
		"delivery.acked "+m.ID+" group:g d2 attempts=1 at="+t0.Format(time.RFC3339Nano),
		"delivery.expired "+m.ID+" group:g d1 attempts=1 at="+now.Format(time.RFC3339Nano),
	)
}

// testCancel: Cancel settles the deliveries not settled yet as
// cancelled, returns their devices, appends their events, and nothing is
// owed any more; a second Cancel changes nothing; an unknown id is not
// found.
func testCancel(t *testing.T, e *env) {
	for _, d := range []string{"d3", "d1", "d2"} {
		e.join(d, "g")
	}
	m := e.publishTo(group("g"), 1)[0]
	e.sent("d1", 1, m)
	e.settle("d2", tether.StateAcked, t0, m)
	t1 := t0.Add(time.Second)
	devices, err := e.s.Cancel(e.ctx, m, t1, map[string]int{"d3": 2, "d2": 5})
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if !slices.Equal(devices, []string{"d1", "d3"}) {
		t.Errorf("cancel returned devices %v, want [d1 d3] (d2 acked)", devices)
	}
	e.checkDeliveries(m,
		want{"d1", tether.StateCancelled, 1, time.Time{}},
		want{"d2", tether.StateAcked, 1, t0},
		want{"d3", tether.StateCancelled, 2, time.Time{}}) // sent twice, as the caller says
	e.checkOwed("d1")
	e.checkOwed("d3")
	if again, err := e.s.Cancel(e.ctx, m, t1, nil); err != nil || len(again) != 0 {
		t.Errorf("second cancel: %v, %v, want no devices", again, err)
	}
	if out := e.settle("d1", tether.StateAcked, t1, m); out.Acked != 0 {
		t.Errorf("an ack after the cancel counted %d, want 0", out.Acked)
	}
	at := t1.Format(time.RFC3339Nano)
	e.checkEvents(
		"delivery.acked "+m+" group:g d2 attempts=1 at="+t0.Format(time.RFC3339Nano),
		"delivery.cancelled "+m+" group:g d1 attempts=1 at="+at+
			"|delivery.cancelled "+m+" group:g d3 attempts=2 at="+at,
	)
	if _, err := e.s.Cancel(e.ctx, "no-such-message", t1, nil); !errors.Is(err, tether.ErrNotFound) {
		t.Errorf("cancel of an unknown id: %v, want not found", err)
	}
}
