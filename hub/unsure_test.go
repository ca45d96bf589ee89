package hub

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// TestUnsureTellsTwice: the targets of unsure publishes are told when the
// store first answers again, once more unsureAgain later, and then
// forgotten; a new failure starts over, but tellings stay unsureAgain
// apart.
func TestUnsureTellsTwice(t *testing.T) {
	var u unsure
	t0 := time.Now()
	if _, _, _, ok := u.due(t0); ok {
		t.Fatal("an empty set is due")
	}
	u.add(tether.DeviceTarget("d1"), tether.GroupTarget("g1"), tether.DeviceTarget("d1"))
	devices, groups, all, ok := u.due(t0)
	if !ok || all || !slices.Equal(devices, []string{"d1"}) || !slices.Equal(groups, []string{"g1"}) {
		t.Fatalf("first telling: %v %v all=%v ok=%v; want [d1] [g1]", devices, groups, all, ok)
	}
	if _, _, _, ok := u.due(t0.Add(unsureAgain / 2)); ok {
		t.Fatal("told again before unsureAgain")
	}
	if devices, _, _, ok := u.due(t0.Add(unsureAgain)); !ok || len(devices) != 1 {
		t.Fatalf("second telling: %v ok=%v; want [d1]", devices, ok)
	}
	if _, _, _, ok := u.due(t0.Add(3 * unsureAgain)); ok {
		t.Fatal("told a third time: the targets were not forgotten")
	}
	u.add(tether.DeviceTarget("d2"))
	if devices, _, _, ok := u.due(t0.Add(4 * unsureAgain)); !ok || !slices.Equal(devices, []string{"d2"}) {
		t.Fatalf("after a new failure: %v ok=%v; want [d2]", devices, ok)
	}
	u.add(tether.DeviceTarget("d3")) // failures go on: the count starts over
	if _, _, _, ok := u.due(t0.Add(4*unsureAgain + unsureAgain/2)); ok {
		t.Fatal("told twice within unsureAgain")
	}
	for i, want := range []bool{true, true, false} {
		if _, _, _, ok := u.due(t0.Add(time.Duration(5+i) * unsureAgain)); ok != want {
			t.Fatalf("telling %d after the last failure: ok=%v, want %v", i+1, ok, want)
		}
	}
}

// TestUnsureBounded: past maxUnsure targets the set keeps none and asks
// for every session and feed instead.
func TestUnsureBounded(t *testing.T) {
	var u unsure
	targets := make([]tether.Target, maxUnsure+1)
	for i := range targets {
		targets[i] = tether.DeviceTarget(fmt.Sprintf("d%d", i))
	}
	u.add(targets...)
	if len(u.devices) != 0 || !u.all {
		t.Fatalf("%d devices kept, all=%v; want none kept and all", len(u.devices), u.all)
	}
	if devices, _, all, ok := u.due(time.Now()); !ok || !all || len(devices) != 0 {
		t.Fatalf("due: %d devices all=%v ok=%v; want all", len(devices), all, ok)
	}
}
