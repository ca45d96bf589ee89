package storetest

import (
	"errors"
	"testing"

	"github.com/tetherpush/tether"
)

// testMembersAtPublishTime: a group message is addressed to the members at
// publish time: a device that joins later does not get it, one that leaves
// later still does (SPEC section 3).
func testMembersAtPublishTime(t *testing.T, e *env) {
	e.join("a", "shop-1")
	e.join("b", "shop-1", "shop-2")
	m1 := e.msg(group("shop-1"))
	e.publishOne(m1, 1, 2)

	e.join("c", "shop-1")  // joins after m1
	e.leave("shop-1", "b") // leaves before m2, after m1
	m2 := e.msg(group("shop-1"))
	e.publishOne(m2, 2, 2)
	m3 := e.msg(group("shop-2"))
	e.publishOne(m3, 1, 1)

	e.checkOwed("a", m1.ID, m2.ID)
	e.checkOwed("b", m1.ID, m3.ID)
	e.checkOwed("c", m2.ID)
	pending := want{state: tether.StatePending}
	e.checkDeliveries(m1.ID, with(pending, "a"), with(pending, "b"))
	e.checkDeliveries(m2.ID, with(pending, "a"), with(pending, "c"))
}

func with(w want, device string) want { w.device = device; return w }

// testLeaveStillOwed: a device that left keeps what it was addressed
// before; once it has settled that, its cursor in the group is gone.
func testLeaveStillOwed(t *testing.T, e *env) {
	e.join("b", "g")
	m := e.publishTo(group("g"), 2)
	e.leave("g", "b")
	e.publishTo(group("g"), 1)
	e.checkOwed("b", m...)
	e.checkDevice("b", 2)
	if cs := e.cursors("b"); tether.FindCursor(cs, group("g")) < 0 {
		t.Fatalf("cursors of b = %+v: want its cursor in g while it is owed", cs)
	}
	out := e.settle("b", tether.StateAcked, t0, m...)
	if out.Acked != 2 {
		t.Errorf("acks counted %d, want 2", out.Acked)
	}
	e.checkOwed("b")
	if cs := e.cursors("b"); tether.FindCursor(cs, group("g")) >= 0 {
		t.Errorf("cursors of b = %+v: want none in g once nothing is owed there", cs)
	}
	e.checkDeliveries(m[0], want{"b", tether.StateAcked, 1, t0})
}

// testRejoin: leaving and joining again skips what was published between.
func testRejoin(t *testing.T, e *env) {
	e.join("d", "g")
	m1 := e.publishTo(group("g"), 1)[0]
	e.leave("g", "d")
	m2 := e.publishTo(group("g"), 1)[0]
	e.join("d", "g")
	m3 := e.publishTo(group("g"), 1)[0]
	e.checkOwed("d", m1, m3)
	e.checkDeliveries(m2)
	e.settle("d", tether.StateAcked, t0, m1, m3)
	e.checkOwed("d")
	e.checkDeliveries(m1, want{"d", tether.StateAcked, 1, t0})
	// Left and joined again with nothing published between: one membership.
	e.leave("g", "d")
	e.join("d", "g")
	m4 := e.publishTo(group("g"), 1)[0]
	e.checkOwed("d", m4)
}

// testCursors: a device's own cursor comes first, its groups' by id; a new
// member starts at the end of the group's log.
func testCursors(t *testing.T, e *env) {
	e.publishTo(group("b"), 3)
	e.join("d", "b", "a")
	cs := e.cursors("d")
	if len(cs) != 3 || cs[1].Source != group("a") || cs[2].Source != group("b") {
		t.Fatalf("cursors of d = %+v: want d, group a, group b", cs)
	}
	if cs[2].Floor != 3 || !cs[2].Member() || cs[0].Floor != 0 {
		t.Errorf("cursors of d = %+v: want floor 3 in b (joined after 3 messages), 0 in its own log", cs)
	}
	got, err := e.s.Cursors(e.ctx, []string{"ghost", "d"})
	if err != nil || len(got) != 2 || len(got[0]) != 1 || got[0][0].Source != dev("ghost") || len(got[1]) != 3 {
		t.Errorf("Cursors(ghost, d) = %+v, %v: want ghost's own empty cursor, then d's three", got, err)
	}
}

// testDevice: groups sorted, pending counts unsettled messages only, and a
// device is known through Join or through its log.
func testDevice(t *testing.T, e *env) {
	e.join("d", "z", "a", "m")
	e.checkDevice("d", 0, "a", "m", "z")
	e.join("d", "a") // idempotent
	e.checkDevice("d", 0, "a", "m", "z")

	m := e.publishTo(dev("d"), 4)
	g := e.publishTo(group("m"), 2)
	e.checkDevice("d", 6, "a", "m", "z")
	e.sent("d", 1, m[0])
	e.checkDevice("d", 6, "a", "m", "z") // inflight is still pending
	e.settle("d", tether.StateAcked, t0, m[1], g[0])
	e.settle("d", tether.StateDead, t0, m[2])
	e.checkDevice("d", 3, "a", "m", "z")

	_, err := e.s.Device(e.ctx, "ghost")
	if !errors.Is(err, tether.ErrNotFound) {
		t.Errorf("Device(never seen) error = %v, want ErrNotFound", err)
	}
	e.join("lonely")
	e.checkDevice("lonely", 0)
	e.publishTo(dev("solo"), 1)
	e.checkDevice("solo", 1)
}

// testGroup: members sorted, Join idempotent, an empty group is an empty
// list.
func testGroup(t *testing.T, e *env) {
	e.join("c", "g")
	e.join("a", "g")
	e.join("b", "g", "h")
	e.join("a", "g")
	e.checkGroup("g", "a", "b", "c")
	e.checkGroup("h", "b")
	if r := e.publish(e.msg(group("g")))[0]; r.Recipients != 3 {
		t.Errorf("publish to g: %d recipients, want 3", r.Recipients)
	}

	info, err := e.s.Group(e.ctx, "empty")
	if err != nil {
		t.Fatalf("Group(empty): %v", err)
	}
	if info.ID != "empty" || len(info.Devices) != 0 {
		t.Errorf("Group(empty) = %+v, want id empty with no devices", info)
	}
}

// testLeave: Leave removes one membership, is a no-op for non-members and
// changes who later group messages reach.
func testLeave(t *testing.T, e *env) {
	e.join("a", "g", "h")
	e.join("b", "g")
	e.leave("g", "a")
	e.checkGroup("g", "b")
	e.checkGroup("h", "a")
	e.checkDevice("a", 0, "h")
	e.leave("g", "a")
	e.leave("g", "stranger")
	e.leave("nogroup", "a")
	e.checkGroup("g", "b")
	e.publishOne(e.msg(group("g")), 1, 1)
	e.checkOwed("a")
	e.leave("h", "a")
	e.checkDevice("a", 0) // still known: it joined
	e.checkGroup("h")
}
