package storetest

import (
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// testExpire: expired messages are settled as expired for the devices
// that had not settled them (acked ones stay acked), then purged after
// the retention: gone from the log and the id index.
func testExpire(t *testing.T, e *env) {
	short := e.msg(dev("d"))
	short.ExpiresAt = t0.Add(time.Minute)
	acked := e.msg(dev("d"))
	acked.ExpiresAt = t0.Add(time.Minute)
	long := e.msg(dev("d"))
	e.publish(short, acked, long)
	e.settle("d", tether.StateAcked, t0, acked.ID)
	e.sent("d", 2, short.ID)

	e.checkExpire(t0.Add(30*time.Second), t0, 10, 0, false) // nothing due
	if got := e.owed("d", t0.Add(2*time.Minute)); len(got) != 1 || got[0].ID != long.ID {
		t.Errorf("owed at t0+2m: %d messages, want only %s (the expired one is skipped)", len(got), long.ID)
	}
	e.checkExpire(t0.Add(2*time.Minute), t0, 10, 1, false)
	e.checkExpire(t0.Add(2*time.Minute), t0, 10, 0, false) // counted once
	e.checkDeliveries(short.ID, want{"d", tether.StateExpired, 2, time.Time{}})
	e.checkDeliveries(acked.ID, want{"d", tether.StateAcked, 1, t0})
	e.checkDevice("d", 1)
	if c := e.cursors("d")[0]; c.Floor != 2 {
		t.Errorf("floor %d after the expiry, want 2", c.Floor)
	}

	// Purge: expired before purgeBefore.
	e.checkExpire(t0.Add(3*time.Minute), t0.Add(90*time.Second), 10, 0, false)
	e.checkNotFound(short.ID)
	e.checkNotFound(acked.ID)
	if got := e.read(dev("d"), 0, 10); len(got) != 1 || got[0].Seq != 3 {
		t.Errorf("log of d after the purge = %+v, want only position 3", got)
	}
	e.checkDeliveries(long.ID, want{"d", tether.StatePending, 0, time.Time{}})
	e.checkDevice("d", 1)
}

// testExpireGroup: a group message expires for every member that had not
// settled it, once each.
func testExpireGroup(t *testing.T, e *env) {
	for _, d := range []string{"a", "b", "c"} {
		e.join(d, "g")
	}
	m := e.msg(group("g"))
	m.ExpiresAt = t0.Add(time.Minute)
	e.publishOne(m, 1, 3)
	e.settle("b", tether.StateAcked, t0, m.ID)
	e.join("late", "g")
	e.checkExpire(t0.Add(time.Minute), t0, 10, 2, false)
	e.checkDeliveries(m.ID,
		want{"a", tether.StateExpired, 0, time.Time{}},
		want{"b", tether.StateAcked, 1, t0},
		want{"c", tether.StateExpired, 0, time.Time{}})
	for _, d := range []string{"a", "b", "c", "late"} {
		e.checkOwed(d)
		e.checkDevice(d, 0, "g")
	}
	e.checkExpire(t0.Add(2*time.Minute), t0.Add(2*time.Minute), 10, 0, false)
	e.checkNotFound(m.ID)
}

// testExpireLimit: limit bounds the messages handled per call, more says
// whether work remains, and repeated calls finish the job.
func testExpireLimit(t *testing.T, e *env) {
	for i := 0; i < 7; i++ {
		m := e.msg(dev("d"))
		m.ExpiresAt = t0.Add(time.Duration(i+1) * time.Second)
		e.publish(m)
	}
	e.checkExpire(t0.Add(time.Hour), t0, 3, 3, true)
	e.checkExpire(t0.Add(time.Hour), t0, 3, 3, true)
	e.checkExpire(t0.Add(time.Hour), t0, 3, 1, false)
	e.checkDevice("d", 0)
	// Purging, 3 at a time.
	e.checkExpire(t0.Add(time.Hour), t0.Add(time.Hour), 3, 0, true)
	e.checkExpire(t0.Add(time.Hour), t0.Add(time.Hour), 3, 0, true)
	e.checkExpire(t0.Add(time.Hour), t0.Add(time.Hour), 3, 0, false)
	if got := e.read(dev("d"), 0, 10); len(got) != 0 {
		t.Errorf("log of d after purging all: %d entries", len(got))
	}
}

// testPurgeKeepsStatus: purging a device's other messages never loses the
// delivery record of one that is kept, wherever the store holds it (here
// an ack after a resend, which does not join the acks around it), even
// once the purges let the store trim what they needed.
func testPurgeKeepsStatus(t *testing.T, e *env) {
	kept := e.msg(dev("d"))
	kept.ExpiresAt = t0.Add(time.Hour)
	e.publish(kept)
	var short []string
	for range 1100 {
		m := e.msg(dev("d"))
		m.ExpiresAt = t0.Add(time.Minute)
		e.publish(m)
		short = append(short, m.ID)
	}
	e.commit(tether.Change{Device: "d", At: t0, Marks: e.marks(tether.StateAcked, 2, kept.ID)})
	e.settle("d", tether.StateAcked, t0, short...)
	e.checkDeliveries(kept.ID, want{"d", tether.StateAcked, 2, t0})
	for more := true; more; {
		_, more = e.expire(t0.Add(2*time.Minute), t0.Add(2*time.Minute), 500)
	}
	e.checkNotFound(short[0])
	e.checkDeliveries(kept.ID, want{"d", tether.StateAcked, 2, t0})
	e.checkDevice("d", 0)
	e.checkOwed("d")
}
