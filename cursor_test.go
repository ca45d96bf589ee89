package tether

import (
	"slices"
	"testing"
	"time"
)

var c0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return c0.Add(time.Duration(ms) * time.Millisecond) }

func settleAll(t *testing.T, c *Cursor, state DeliveryState, when time.Time, seqs ...uint64) {
	t.Helper()
	for _, s := range seqs {
		if !c.Settle(s, state, 1, when) {
			t.Fatalf("Settle(%d) = false, want true", s)
		}
	}
}

func TestCursorInOrderAcksJoinOneHistoryRange(t *testing.T) {
	c := Cursor{Source: DeviceTarget("pos-1")}
	settleAll(t, &c, StateAcked, at(0), 1, 2)
	if ops := c.Advance(); len(ops) != 0 || c.Floor != 2 || len(c.Settled) != 0 {
		t.Fatalf("floor %d settled %v ops %v, want 2, none, none (the range is the Tail)", c.Floor, c.Settled, ops)
	}
	// Within AckTimeResolution of the first: joined to the Tail, no write.
	settleAll(t, &c, StateAcked, at(400), 3)
	if ops := c.Advance(); len(ops) != 0 || c.Tail.From != 1 || c.Tail.To != 3 || !c.Tail.At.Equal(at(400)) {
		t.Fatalf("tail %+v ops %v, want 1…3 at 400ms and no history write", c.Tail, ops)
	}
	// A second after the first: the old Tail goes to the history.
	settleAll(t, &c, StateAcked, at(1000), 4)
	ops := c.Advance()
	if len(ops) != 1 || ops[0].Range.From != 1 || ops[0].Range.To != 3 {
		t.Fatalf("history ops %+v, want 1…3 written", ops)
	}
	if c.Tail.From != 4 || c.Tail.To != 4 {
		t.Fatalf("tail %+v, want 4…4", c.Tail)
	}
	if r := c.Retire(); len(r) != 1 || r[0].Range != c.Tail {
		t.Errorf("Retire = %+v, want the Tail", r)
	}
}

func TestCursorOutOfOrderAcksWaitForTheGap(t *testing.T) {
	c := Cursor{Source: DeviceTarget("pos-1")}
	settleAll(t, &c, StateAcked, at(0), 2, 3, 5)
	if ops := c.Advance(); len(ops) != 0 || c.Floor != 0 {
		t.Fatalf("floor %d ops %v: want 0 and none while 1 is unsettled", c.Floor, ops)
	}
	if got := c.Unsettled(6); got != 3 { // 1, 4, 6
		t.Errorf("Unsettled(6) = %d, want 3", got)
	}
	if c.Settle(3, StateAcked, 1, at(5)) {
		t.Error("settling 3 twice: true, want false")
	}
	settleAll(t, &c, StateDead, at(10), 1)
	ops := c.Advance()
	if c.Floor != 3 {
		t.Fatalf("floor %d, want 3 (4 unsettled)", c.Floor)
	}
	// 1 is dead, 2…3 acked: two records, the first written, the second the Tail.
	if len(ops) != 1 || ops[0].Range.State != StateDead || c.Tail.From != 2 || c.Tail.To != 3 {
		t.Fatalf("history ops %+v tail %+v, want dead 1 written and acked 2…3 the Tail", ops, c.Tail)
	}
	if r, ok := c.State(5); !ok || r.State != StateAcked {
		t.Errorf("State(5) = %+v %v, want acked", r, ok)
	}
	if r, ok := c.State(4); !ok || r.State != StatePending {
		t.Errorf("State(4) = %+v %v, want pending", r, ok)
	}
	if _, ok := c.State(1); ok {
		t.Error("State(1): known to the cursor, want the history's answer (Tail is 2…3)")
	}
}

func TestCursorFlight(t *testing.T) {
	c := Cursor{Source: DeviceTarget("pos-1")}
	c.Sent(2, 1)
	c.Sent(1, 1)
	c.Sent(2, 3)
	c.Sent(2, 2) // never lowers
	if got := c.Attempts(2); got != 3 {
		t.Fatalf("Attempts(2) = %d, want 3", got)
	}
	if r, _ := c.State(2); r.State != StateInflight || r.Attempts != 3 {
		t.Errorf("State(2) = %+v, want inflight after 3", r)
	}
	c.Settle(2, StateAcked, 0, at(0)) // 0: the recorded attempts
	if c.Settled[0].Attempts != 3 || c.Attempts(2) != 0 || len(c.Flight) != 1 {
		t.Errorf("after the ack: settled %+v flight %+v", c.Settled, c.Flight)
	}
	if c.Sent(2, 4) {
		t.Error("Sent of a settled position: true, want false")
	}
}

func TestCursorGroupSpans(t *testing.T) {
	c := Cursor{Source: GroupTarget("shop-1")}
	c.Join(10)
	c.Advance()
	if c.Floor != 10 || c.Addressed(10) || !c.Addressed(11) {
		t.Fatalf("after joining at 10: floor %d, addressed(10) %v, addressed(11) %v", c.Floor, c.Addressed(10), c.Addressed(11))
	}
	if c.Join(12) {
		t.Error("Join while a member: true, want false")
	}
	c.Leave(20)
	if c.Addressed(21) || !c.Addressed(20) || c.Member() {
		t.Fatalf("after leaving at 20: addressed(20) %v addressed(21) %v member %v", c.Addressed(20), c.Addressed(21), c.Member())
	}
	c.Join(30)
	if got := c.Unsettled(35); got != 15 { // 11…20 and 31…35
		t.Errorf("Unsettled(35) = %d, want 15", got)
	}
	for s := uint64(11); s <= 20; s++ {
		c.Settle(s, StateAcked, 1, at(0))
	}
	if c.Settle(25, StateAcked, 1, at(0)) {
		t.Error("settled position 25, published between the spans: want false")
	}
	c.Advance()
	if c.Floor != 30 || len(c.Spans) != 1 || c.Spans[0] != (Span{From: 30}) {
		t.Fatalf("floor %d spans %v, want 30 and only the open span", c.Floor, c.Spans)
	}
	c.Leave(32)
	if c.Exhausted() {
		t.Fatal("exhausted with 31, 32 unsettled")
	}
	c.Settle(31, StateAcked, 1, at(0))
	c.Settle(32, StateExpired, 0, at(0))
	c.Advance()
	if !c.Exhausted() {
		t.Fatalf("not exhausted: floor %d spans %v", c.Floor, c.Spans)
	}
}

func TestCursorLeaveAndJoinWithNothingBetween(t *testing.T) {
	c := Cursor{Source: GroupTarget("g")}
	c.Join(5)
	c.Leave(5) // nothing published while a member: the span goes
	if len(c.Spans) != 0 || !c.Exhausted() {
		t.Fatalf("spans %v, want none", c.Spans)
	}
	c.Join(5)
	c.Leave(8)
	c.Join(8) // rejoined at once: one span again
	if len(c.Spans) != 1 || c.Spans[0] != (Span{From: 5}) {
		t.Fatalf("spans %v, want [{5 0}]", c.Spans)
	}
}

func TestApplyMarks(t *testing.T) {
	cs := []Cursor{{Source: GroupTarget("g"), Floor: 4, Spans: []Span{{From: 4}}}}
	marks := []Mark{
		{Source: DeviceTarget("d"), Seq: 1, State: StateAcked, Attempts: 1},
		{Source: DeviceTarget("d"), Seq: 2, State: StateInflight, Attempts: 1},
		{Source: GroupTarget("g"), Seq: 5, State: StateDead, Attempts: 3},
		{Source: GroupTarget("other"), Seq: 1, State: StateAcked, Attempts: 1},
		{Source: GroupTarget("g"), Seq: 5, State: StateAcked, Attempts: 3}, // dead already
	}
	cs, out, hist := ApplyMarks(cs, "d", marks, at(0))
	if out.Acked != 1 || out.Dead != 1 || out.Expired != 0 || out.Cancelled != 0 {
		t.Errorf("outcome %+v, want 1 acked 1 dead", out)
	}
	settled := []Mark{
		{Source: DeviceTarget("d"), Seq: 1, State: StateAcked, Attempts: 1},
		{Source: GroupTarget("g"), Seq: 5, State: StateDead, Attempts: 3},
	}
	if !slices.Equal(out.Settled, settled) {
		t.Errorf("settled %+v, want %+v (what the event log reports)", out.Settled, settled)
	}
	i := FindCursor(cs, DeviceTarget("d"))
	if i < 0 || cs[i].Floor != 1 || cs[i].Attempts(2) != 1 {
		t.Fatalf("device cursor %+v", cs)
	}
	if FindCursor(cs, GroupTarget("other")) >= 0 {
		t.Error("a cursor made for a group the device is no member of")
	}
	if len(hist) != 0 {
		t.Errorf("history ops %+v, want none (each range is its cursor's Tail)", hist)
	}
	cs[FindCursor(cs, GroupTarget("g"))].Leave(5)
	cs, _, hist = ApplyMarks(cs, "d", nil, at(0))
	if FindCursor(cs, GroupTarget("g")) >= 0 || len(hist) != 1 || hist[0].Range.To != 5 {
		t.Errorf("an exhausted cursor: cursors %+v hist %+v, want it dropped and its Tail kept", cs, hist)
	}
}
