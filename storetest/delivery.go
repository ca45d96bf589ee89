package storetest

import (
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// testAck: acks settle what they name once and move the floor, and acked
// messages are never owed again.
func testAck(t *testing.T, e *env) {
	e.join("d", "g")
	e.join("e", "g")
	m := e.publishTo(dev("d"), 4)
	other := e.publishTo(dev("e"), 1)[0]
	shared := e.publishTo(group("g"), 1)[0]
	t1 := t0.Add(5 * time.Second)

	res := e.commit(tether.Change{Device: "d", At: t1, Marks: e.marks(tether.StateAcked, 1, m[0], m[1], shared)})[0]
	if res.Acked != 3 {
		t.Errorf("first ack counted %d, want 3", res.Acked)
	}
	if own := res.Cursors[0]; own.Source != dev("d") || own.Floor != 2 {
		t.Errorf("cursors after the ack = %+v, want d's own log first with floor 2", res.Cursors)
	}
	if out := e.settle("d", tether.StateAcked, t1, m[0]); out.Acked != 0 {
		t.Errorf("acking again counted %d, want 0", out.Acked)
	}
	e.checkOwed("d", m[2], m[3])
	e.checkOwed("e", other, shared)
	e.checkDeliveries(m[0], want{"d", tether.StateAcked, 1, t1})
	e.checkDeliveries(shared, want{"d", tether.StateAcked, 1, t1}, want{"e", tether.StatePending, 0, time.Time{}})
}

// testAckOutOfOrder: an ack above an unsettled message is kept above the
// floor until the gap is settled.
func testAckOutOfOrder(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 3)
	e.settle("d", tether.StateAcked, t0, m[2])
	c := e.cursors("d")[0]
	if c.Floor != 0 || !c.IsSettled(3) || c.IsSettled(1) {
		t.Errorf("cursor after acking 3 = %+v: want floor 0 with 3 settled", c)
	}
	e.checkOwed("d", m[0], m[1])
	t1 := t0.Add(time.Millisecond)
	e.settle("d", tether.StateAcked, t1, m[0], m[1])
	if c := e.cursors("d")[0]; c.Floor != 3 || len(c.Settled) != 0 {
		t.Errorf("cursor after acking 1 and 2 = %+v: want floor 3 and nothing above", c)
	}
	e.checkOwed("d")
	// Acks within AckTimeResolution share the time of the last of them.
	e.checkDeliveries(m[2], want{"d", tether.StateAcked, 1, t1})
	e.settle("d", tether.StateAcked, t0, e.publishTo(dev("d"), 2)[1])
	if c := e.cursors("d")[0]; c.Floor != 3 || len(c.Settled) != 1 {
		t.Errorf("cursor after acking 5 = %+v: want floor 3 and 5 settled above it", c)
	}
}

// testAckIDs: acks by message id are placed in the device's logs; ids of
// other devices' logs and unknown ids are ignored.
func testAckIDs(t *testing.T, e *env) {
	e.join("d", "g")
	mine := e.publishTo(dev("d"), 2)
	shared := e.publishTo(group("g"), 1)[0]
	theirs := e.publishTo(dev("e"), 1)[0]
	res := e.commit(tether.Change{Device: "d", At: t0, AckIDs: []string{mine[1], shared, theirs, "01JT-unknown"}})[0]
	if res.Acked != 2 {
		t.Errorf("acks by id counted %d, want 2", res.Acked)
	}
	e.checkOwed("d", mine[0])
	e.checkOwed("e", theirs)
	e.checkDeliveries(shared, want{"d", tether.StateAcked, 0, t0})
}

// testSent: sends recorded with Commit show as inflight with their
// attempts, never lower an attempt count, and are dropped with the ack.
func testSent(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 3)
	e.sent("d", 1, m[0], m[1])
	e.sent("d", 3, m[0])
	e.sent("d", 2, m[0]) // never lowers
	c := e.cursors("d")[0]
	if c.Attempts(1) != 3 || c.Attempts(2) != 1 || c.Attempts(3) != 0 {
		t.Errorf("cursor flights = %+v, want 1:3 2:1", c.Flight)
	}
	e.checkDeliveries(m[0], want{"d", tether.StateInflight, 3, time.Time{}})
	e.checkDeliveries(m[2], want{"d", tether.StatePending, 0, time.Time{}})
	e.checkOwed("d", m...) // inflight is still owed

	// An ack that does not say its attempts keeps the recorded ones.
	mk := e.marks(tether.StateAcked, 0, m[0])
	e.commit(tether.Change{Device: "d", At: t0, Marks: mk})
	e.checkDeliveries(m[0], want{"d", tether.StateAcked, 3, t0})
	if c := e.cursors("d")[0]; c.Attempts(1) != 0 {
		t.Errorf("flight of an acked message kept: %+v", c.Flight)
	}
	e.sent("d", 4, m[0]) // settled: ignored
	e.checkDeliveries(m[0], want{"d", tether.StateAcked, 3, t0})
}

// testDead: a dead message is settled: counted, never owed again, and an
// ack after it changes nothing.
func testDead(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 2)
	res := e.commit(tether.Change{Device: "d", At: t0, Marks: e.marks(tether.StateDead, 5, m[0])})[0]
	if res.Dead != 1 || res.Acked != 0 {
		t.Errorf("outcome %+v, want 1 dead", res.Outcome)
	}
	if out := e.settle("d", tether.StateAcked, t0, m[0]); out.Acked != 0 {
		t.Errorf("ack of a dead message counted %d, want 0", out.Acked)
	}
	e.checkOwed("d", m[1])
	e.checkDeliveries(m[0], want{"d", tether.StateDead, 5, time.Time{}})
}

// testHistory: the state of a message stays known once the floor passed
// it: acks within AckTimeResolution share one record and report the time
// of the last of them; a later ack gets its own.
func testHistory(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 4)
	e.settle("d", tether.StateAcked, t0, m[0])
	t1 := t0.Add(tether.AckTimeResolution / 2)
	e.settle("d", tether.StateAcked, t1, m[1])
	t2 := t0.Add(2 * tether.AckTimeResolution)
	e.settle("d", tether.StateDead, t2, m[2])
	e.settle("d", tether.StateAcked, t2, m[3])
	if c := e.cursors("d")[0]; c.Floor != 4 {
		t.Fatalf("floor %d, want 4", c.Floor)
	}
	e.checkDeliveries(m[0], want{"d", tether.StateAcked, 1, t1})
	e.checkDeliveries(m[1], want{"d", tether.StateAcked, 1, t1})
	e.checkDeliveries(m[2], want{"d", tether.StateDead, 1, time.Time{}})
	e.checkDeliveries(m[3], want{"d", tether.StateAcked, 1, t2})
}

// testMessageStatus: each recipient's state, sorted by device.
func testMessageStatus(t *testing.T, e *env) {
	for _, d := range []string{"d4", "d2", "d1", "d3", "d5"} {
		e.join(d, "g")
	}
	m := e.msg(group("g"))
	m.ExpiresAt = t0.Add(time.Minute)
	e.publishOne(m, 1, 5)
	t1 := t0.Add(3 * time.Second)
	e.sent("d1", 2, m.ID)
	e.sent("d2", 1, m.ID)
	e.commit(tether.Change{Device: "d2", At: t1, Marks: e.marks(tether.StateAcked, 0, m.ID)})
	e.commit(tether.Change{Device: "d3", At: t1, Marks: e.marks(tether.StateDead, 4, m.ID)})
	e.checkExpire(t0.Add(2*time.Minute), t0, 10, 3, false) // d1, d4, d5
	st := e.message(m.ID)
	checkMessage(t, &st.Message, m)
	e.checkDeliveries(m.ID,
		want{"d1", tether.StateExpired, 2, time.Time{}},
		want{"d2", tether.StateAcked, 1, t1},
		want{"d3", tether.StateDead, 4, time.Time{}},
		want{"d4", tether.StateExpired, 0, time.Time{}},
		want{"d5", tether.StateExpired, 0, time.Time{}})
}
