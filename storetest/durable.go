package storetest

import (
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// RunDurable checks that a store keeps everything across Close and a
// reopen on the same directory: deliveries with their states, attempts and
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
		e.checkSent("a", []string{m1.ID}, 1)
		e.checkSent("a", []string{m1.ID, m2.ID}, 2, 1)
		t1 := t0.Add(time.Second)
		e.checkAck("b", []string{m1.ID}, t1, 1)
		e.checkKill("a", []string{m3.ID}, 1)
		e.checkExpire(t0.Add(2*time.Minute), t0, 10, 1, false)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		s2 := open(t, dir)
		t.Cleanup(func() { s2.Close() })
		e = newEnv(t, s2)
		e.ids.n.Store(100) // ids after the first run's
		ds := e.checkPending("a", m1.ID, m2.ID)
		if len(ds) == 2 {
			checkMessage(t, ds[0].Message, m1)
			checkMessage(t, ds[1].Message, m2)
		}
		e.checkPending("b")
		e.checkDeliveries(m1.ID, want{"a", tether.StateInflight, 2, time.Time{}}, want{"b", tether.StateAcked, 0, t1})
		e.checkDeliveries(m3.ID, want{"a", tether.StateDead, 0, time.Time{}})
		e.checkDeliveries(m4.ID, want{"a", tether.StateExpired, 0, time.Time{}})
		e.checkAck("b", []string{m1.ID}, t1, 0)
		e.checkSent("a", []string{m1.ID, m3.ID}, 3, 0)
		e.checkDevice("a", 2, "g", "h")
		e.checkGroup("g", "a", "b")

		dup := e.msg(group("g"))
		dup.ClientID = "key-1"
		checkResult(t, "client id after reopen", e.publish(dup)[0],
			tether.PublishResult{ID: m1.ID, Recipients: 2, Duplicate: true})
		e.publishOne(e.msg(group("g")), "a", "b")
	})
}
