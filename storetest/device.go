package storetest

import (
	"errors"
	"testing"

	"github.com/tetherpush/tether"
)

// testDevice: groups sorted, pending counts open deliveries only, and a
// device is known through Join or through deliveries.
func testDevice(t *testing.T, e *env) {
	e.join("d", "z", "a", "m")
	e.checkDevice("d", 0, "a", "m", "z")
	e.join("d", "a") // idempotent
	e.checkDevice("d", 0, "a", "m", "z")

	m := e.publishTo(dev("d"), 4)
	e.checkDevice("d", 4, "a", "m", "z")
	e.checkSent("d", []string{m[0]}, 1)
	e.checkDevice("d", 4, "a", "m", "z") // inflight is still pending
	e.checkAck("d", []string{m[1]}, t0, 1)
	e.checkKill("d", []string{m[2]}, 1)
	e.checkDevice("d", 2, "a", "m", "z")

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
	e.publishOne(e.msg(group("g")), "b")
	e.checkPending("a")
	e.leave("h", "a")
	e.checkDevice("a", 0) // still known: it joined
	e.checkGroup("h")
}
