package storetest

import (
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// RunDurable checks that a store keeps everything across Close and a
// reopen on the same directory: logs, cursors with their states, attempts and
// ack times, memberships and idempotency keys. open opens the store kept
// in dir; the suite closes what it opens.
func RunDurable(t *testing.T, open func(t *testing.T, dir string) tether.Store) {
	t.Run("Reopen", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		t.Cleanup(func() { s.Close() })
		e := newEnv(t, s)
		e.join("a", "g", "h")
		e.join("b", "g")
		m1 := e.msg(group("g"))
		m1.ClientID = "key-1"
		m2, m3, m4 := e.msg(dev("a")), e.msg(dev("a")), e.msg(dev("a"))
		m4.ExpiresAt = t0.Add(time.Minute)
		e.publish(m1, m2, m3, m4)
		e.sent("a", 2, m1.ID)
		e.sent("a", 1, m2.ID)
		t1 := t0.Add(time.Second)
		e.settle("b", tether.StateAcked, t1, m1.ID)
		e.commit(tether.Change{Device: "a", At: t1, Marks: e.marks(tether.StateDead, 3, m3.ID)})
		e.checkExpire(t0.Add(2*time.Minute), t0, 10, 1, false)
		pos := e.pos
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		s2 := open(t, dir)
		t.Cleanup(func() { s2.Close() })
		e = newEnv(t, s2)
		e.pos = pos
		e.ids.n.Store(100) // ids after the first run's
		ms := e.checkOwed("a", m1.ID, m2.ID)
		if len(ms) == 2 {
			checkMessage(t, ms[0], m1)
			checkMessage(t, ms[1], m2)
		}
		e.checkOwed("b")
		e.checkDeliveries(m1.ID, want{"a", tether.StateInflight, 2, time.Time{}}, want{"b", tether.StateAcked, 1, t1})
		e.checkDeliveries(m3.ID, want{"a", tether.StateDead, 3, time.Time{}})
		e.checkDeliveries(m4.ID, want{"a", tether.StateExpired, 0, time.Time{}})
		if out := e.settle("b", tether.StateAcked, t1, m1.ID); out.Acked != 0 {
			t.Errorf("ack again after reopen counted %d, want 0", out.Acked)
		}
		e.checkDevice("a", 2, "g", "h")
		e.checkGroup("g", "a", "b")

		dup := e.msg(group("g"))
		dup.ClientID = "key-1"
		checkResult(t, "client id after reopen", e.publish(dup)[0],
			tether.PublishResult{ID: m1.ID, Seq: 1, Recipients: 2, Duplicate: true})
		e.publishOne(e.msg(group("g")), 2, 2)
		e.publishOne(e.msg(dev("a")), 4, 1)
	})
}
