package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// publishTo publishes n messages to target, one call each, and returns
// their ids.
func (e *env) publishTo(target tether.Target, n int) []string {
	e.t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		m := e.msg(target)
		e.publish(m)
		out = append(out, m.ID)
	}
	return out
}

// testSent: attempts count up per device and id; settled, unknown and
// other devices' ids answer 0.
func testSent(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 4)
	other := e.publishTo(dev("e"), 1)[0]

	e.checkSent("d", []string{m[0]}, 1)
	e.checkSent("d", []string{m[0], m[1]}, 2, 1)
	ds := e.checkPending("d", m...)
	wantStates := []struct {
		state    tether.DeliveryState
		attempts int
	}{{tether.StateInflight, 2}, {tether.StateInflight, 1}, {tether.StatePending, 0}, {tether.StatePending, 0}}
	for i, d := range ds {
		if i < len(wantStates) && (d.State != wantStates[i].state || d.Attempts != wantStates[i].attempts) {
			t.Errorf("Pending(d)[%d] = %s attempts %d, want %s attempts %d",
				i, d.State, d.Attempts, wantStates[i].state, wantStates[i].attempts)
		}
	}

	e.checkAck("d", []string{m[2]}, t0, 1)
	e.checkKill("d", []string{m[3]}, 1)
	e.checkSent("d", []string{"01JT-unknown", m[2], m[3], other, m[0]}, 0, 0, 0, 0, 3)
	e.checkDeliveries(other, want{"e", tether.StatePending, 0, time.Time{}})
	e.checkDeliveries(m[2], want{"d", tether.StateAcked, 0, t0})
	e.checkDeliveries(m[3], want{"d", tether.StateDead, 0, time.Time{}})
}

// testAck: acks count only deliveries that become acked, ignore unknown
// and other devices' ids, and acked deliveries never come back.
func testAck(t *testing.T, e *env) {
	e.join("d", "g")
	e.join("e", "g")
	m := e.publishTo(dev("d"), 4)
	other := e.publishTo(dev("e"), 1)[0]
	shared := e.publishTo(group("g"), 1)[0]
	t1 := t0.Add(5 * time.Second)

	e.checkSent("d", []string{m[1]}, 1)
	e.checkAck("d", []string{m[0], m[1], "01JT-unknown", other}, t1, 2)
	e.checkAck("d", []string{m[0], m[1]}, t1.Add(time.Second), 0)
	e.checkAck("d", []string{m[2], m[2]}, t1, 1)
	e.checkAck("d", []string{shared}, t1, 1)
	e.checkPending("d", m[3])
	e.checkPending("e", other, shared)
	e.checkDeliveries(m[0], want{"d", tether.StateAcked, 0, t1})
	e.checkDeliveries(m[1], want{"d", tether.StateAcked, 1, t1})
	e.checkDeliveries(shared, want{"d", tether.StateAcked, 0, t1}, want{"e", tether.StatePending, 0, time.Time{}})

	e.checkKill("d", []string{m[3]}, 1)
	e.checkAck("d", []string{m[3]}, t1, 0)
	e.checkDeliveries(m[3], want{"d", tether.StateDead, 0, time.Time{}})
	e.checkPending("d")
}

// testKill: dead deliveries keep their attempts, are counted once and are
// never pending or sent again.
func testKill(t *testing.T, e *env) {
	m := e.publishTo(dev("d"), 3)
	e.checkSent("d", []string{m[0]}, 1)
	e.checkSent("d", []string{m[0]}, 2)
	e.checkKill("d", []string{m[0], "01JT-unknown"}, 1)
	e.checkKill("d", []string{m[0]}, 0)
	e.checkAck("d", []string{m[1]}, t0, 1)
	e.checkKill("d", []string{m[1]}, 0)
	e.checkKill("e", []string{m[2]}, 0) // not e's delivery
	e.checkPending("d", m[2])
	e.checkDeliveries(m[0], want{"d", tether.StateDead, 2, time.Time{}})
	e.checkDeliveries(m[1], want{"d", tether.StateAcked, 0, t0})
	e.checkSent("d", []string{m[0]}, 0)
	e.checkDevice("d", 1)
}

// testPendingHidesExpired: a message is hidden from the instant it
// expires, without counting toward limit, and without changing its state.
func testPendingHidesExpired(t *testing.T, e *env) {
	m1, m2 := e.msg(dev("d")), e.msg(dev("d"))
	m2.ExpiresAt = t0.Add(2 * time.Hour)
	e.publish(m1, m2)
	cases := []struct {
		now   time.Time
		limit int
		want  []string
	}{
		{m1.ExpiresAt.Add(-time.Millisecond), 10, []string{m1.ID, m2.ID}},
		{m1.ExpiresAt, 10, []string{m2.ID}},
		{m1.ExpiresAt, 1, []string{m2.ID}},
		{m2.ExpiresAt, 10, nil},
	}
	for _, c := range cases {
		if got := ids(e.pending("d", "", c.limit, c.now)); !slices.Equal(got, c.want) {
			t.Errorf("Pending(d, limit %d) at t0+%v = %q, want %q", c.limit, c.now.Sub(t0), got, c.want)
		}
	}
	e.checkDeliveries(m1.ID, want{"d", tether.StatePending, 0, time.Time{}})
}

// testExpire: Expire settles pending and inflight deliveries due at now,
// counts them once, and purges what expired before purgeBefore.
func testExpire(t *testing.T, e *env) {
	e.join("d", "g")
	e.join("e", "g")
	m1, m2, m3 := e.msg(dev("d")), e.msg(group("g")), e.msg(dev("d"))
	m2.ExpiresAt, m3.ExpiresAt = t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	e.publish(m1, m2, m3)
	e.checkSent("d", []string{m2.ID}, 1)
	e.checkAck("e", []string{m2.ID}, t0, 1)

	e.checkExpire(t0.Add(30*time.Minute), t0.Add(-24*time.Hour), 100, 0, false)
	// m1 (pending for d) and m2 (inflight for d; acked by e) are due; m2
	// expires exactly at now.
	e.checkExpire(t0.Add(2*time.Hour), t0, 100, 2, false)
	e.checkExpire(t0.Add(2*time.Hour), t0, 100, 0, false)
	e.checkDeliveries(m1.ID, want{"d", tether.StateExpired, 0, time.Time{}})
	e.checkDeliveries(m2.ID, want{"d", tether.StateExpired, 1, time.Time{}}, want{"e", tether.StateAcked, 0, t0})
	e.checkDeliveries(m3.ID, want{"d", tether.StatePending, 0, time.Time{}})
	e.checkPending("d", m3.ID) // at t0: expired state, not time, hides m1 and m2
	e.checkSent("d", []string{m1.ID, m2.ID}, 0, 0)
	e.checkAck("d", []string{m1.ID, m2.ID}, t0, 0)
	e.checkKill("d", []string{m1.ID}, 0)
	e.checkDevice("d", 1, "g")

	// m3 expires; m1 and m2 expired before purgeBefore and go.
	e.checkExpire(t0.Add(4*time.Hour), t0.Add(2*time.Hour+time.Millisecond), 100, 1, false)
	e.checkNotFound(m1.ID)
	e.checkNotFound(m2.ID)
	e.checkDeliveries(m3.ID, want{"d", tether.StateExpired, 0, time.Time{}})
	e.checkExpire(t0.Add(4*time.Hour), t0.Add(5*time.Hour), 100, 0, false)
	e.checkNotFound(m3.ID)
	e.checkPending("d")
	e.checkDevice("d", 0, "g")
}

// testExpireLimit: Expire handles at most limit messages per call and says
// whether more remains, both when expiring and when purging.
func testExpireLimit(t *testing.T, e *env) {
	e.join("a", "g")
	e.join("b", "g")
	m := e.publishTo(group("g"), 5) // 10 deliveries
	const limit = 2
	total, calls := 0, 0
	for more := true; more; calls++ {
		if calls == 10 {
			t.Fatalf("Expire still reports more after %d calls of limit %d for 5 messages", calls, limit)
		}
		var n int
		n, more = e.expire(t0.Add(2*time.Hour), t0, limit)
		if n > limit*2 {
			t.Errorf("Expire call %d expired %d deliveries, want at most %d (limit %d messages of 2 members)", calls, n, limit*2, limit)
		}
		if calls == 0 && !more {
			t.Errorf("first Expire(limit %d) over 5 due messages reported no more work", limit)
		}
		total += n
	}
	if total != 10 {
		t.Errorf("Expire calls expired %d deliveries in all, want 10", total)
	}
	for calls = 0; ; calls++ {
		if calls == 10 {
			t.Fatalf("purging Expire still reports more after %d calls", calls)
		}
		n, more := e.expire(t0.Add(2*time.Hour), t0.Add(2*time.Hour), limit)
		if n != 0 {
			t.Errorf("purging Expire call %d expired %d deliveries, want 0", calls, n)
		}
		if calls == 0 && !more {
			t.Errorf("first purging Expire(limit %d) over 5 messages reported no more work", limit)
		}
		if !more {
			break
		}
	}
	for _, id := range m {
		e.checkNotFound(id)
	}
}

// testMessageStatus: Message returns the message and its deliveries sorted
// by device with states, attempts and ack times.
func testMessageStatus(t *testing.T, e *env) {
	e.join("c", "g")
	e.join("a", "g")
	e.join("b", "g")
	m := e.msg(group("g"))
	m.ClientID = "cid-1"
	e.publishOne(m, "a", "b", "c")
	t1 := t0.Add(1500 * time.Millisecond)
	e.checkSent("b", []string{m.ID}, 1)
	e.checkSent("b", []string{m.ID}, 2)
	e.checkSent("a", []string{m.ID}, 1)
	e.checkAck("a", []string{m.ID}, t1, 1)

	st := e.message(m.ID)
	checkMessage(t, &st.Message, m)
	e.checkDeliveries(m.ID,
		want{"a", tether.StateAcked, 1, t1},
		want{"b", tether.StateInflight, 2, time.Time{}},
		want{"c", tether.StatePending, 0, time.Time{}})
}
