package tether

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// The delivery model. A message is stored once, in the log of its target:
// the log of one device or the log of one group. A log numbers its
// messages 1, 2, 3… in the order the store commits them (Entry.Seq). A
// device reads its own log and the logs of its groups, and keeps one
// Cursor in each: a floor below which everything addressed to it is
// settled, the few settled positions above it, the attempts of what is in
// flight and, for a group, the spans of positions published while it was
// a member. So a group publish is one write whatever the group's size, and
// an ack is one write per device.

// Entry is one message of a log at its position.
type Entry struct {
	Seq     uint64
	Message *Message
}

// AckTimeResolution is how close in time settlements must be to share one
// Range: a device's acks of consecutive messages within it are kept as one
// record, whose At (the acked_at of each) is the time of the last of them.
const AckTimeResolution = time.Second

// Range is a run of positions From…To (inclusive) of one log that a device
// settled the same way: acked, dead, expired or cancelled, after the same
// number of attempts, within AckTimeResolution.
type Range struct {
	From, To uint64
	State    DeliveryState
	Attempts int
	Since    time.Time // when the first of them settled
	At       time.Time // when the last of them settled
}

// Len returns the number of positions of r.
func (r Range) Len() uint64 { return r.To - r.From + 1 }

// joinable reports whether b continues a into one Range.
func joinable(a, b Range) bool {
	if a.To+1 != b.From || a.State != b.State || a.Attempts != b.Attempts {
		return false
	}
	first, last := a.Since, b.At
	if b.Since.Before(first) {
		first = b.Since
	}
	if a.At.After(last) {
		last = a.At
	}
	return last.Sub(first) < AckTimeResolution
}

// join returns a and b, which are joinable, as one Range.
func join(a, b Range) Range {
	out := a
	out.To = b.To
	if b.Since.Before(out.Since) {
		out.Since = b.Since
	}
	if b.At.After(out.At) {
		out.At = b.At
	}
	return out
}

// Span is the positions From+1…To of a group's log, published while a
// device was a member: the messages addressed to it. To is 0 while it is
// still a member.
type Span struct{ From, To uint64 }

// holds reports whether position seq lies in s.
func (s Span) holds(seq uint64) bool { return seq > s.From && (s.To == 0 || seq <= s.To) }

// Flight is how many times the message at Seq was sent without being
// settled yet.
type Flight struct {
	Seq      uint64
	Attempts int
}

// Cursor is one device's progress through one log: its own (Source is
// device:<id>) or a group's.
type Cursor struct {
	Source Target
	// Floor: every position at or below it addressed to the device is
	// settled.
	Floor uint64
	// Settled holds the settled positions above Floor: sorted, disjoint.
	Settled []Range
	// Flight holds the attempts recorded for positions above Floor that
	// are not settled, sorted by Seq.
	Flight []Flight
	// Spans holds, for a group's log, the positions addressed to the
	// device, sorted; closed spans at or below Floor are dropped. Nil for
	// the device's own log, whose every position is addressed to it.
	Spans []Span
	// Tail is the last Range that fell to or below Floor, kept so that the
	// next one can be joined to it; zero when none.
	Tail Range
}

// HistOp adds Range to a device's history of settled ranges: the ranges
// below a cursor's Floor other than its Tail, kept (by Range.To) until
// their messages are purged, so that GET /v1/messages/{id} can still
// answer. A range reaches the history once, when a newer range takes its
// place as Tail (or its cursor is dropped): the Tail itself lives in the
// cursor and grows there, so in-order acks cost no history write.
type HistOp struct {
	Source Target
	Range  Range
}

// Addressed reports whether position seq of the cursor's log is addressed
// to its device.
func (c *Cursor) Addressed(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if c.Source.Kind != KindGroup {
		return true
	}
	for _, s := range c.Spans {
		if s.holds(seq) {
			return true
		}
	}
	return false
}

// Member reports whether the device is a member of the cursor's group now.
func (c *Cursor) Member() bool {
	n := len(c.Spans)
	return c.Source.Kind == KindGroup && n > 0 && c.Spans[n-1].To == 0
}

// Exhausted reports whether nothing more of a group's log can be addressed
// to the device: it is no member and Floor is past its last span. Such a
// cursor can be forgotten.
func (c *Cursor) Exhausted() bool {
	if c.Source.Kind != KindGroup || c.Member() {
		return false
	}
	n := len(c.Spans)
	return n == 0 || c.Floor >= c.Spans[n-1].To
}

// settledIndex returns the index of the first Range of Settled whose To is
// at or above seq.
func (c *Cursor) settledIndex(seq uint64) int {
	return sort.Search(len(c.Settled), func(i int) bool { return c.Settled[i].To >= seq })
}

// IsSettled reports whether position seq is settled for the device: at or
// below Floor, or in Settled.
func (c *Cursor) IsSettled(seq uint64) bool {
	if seq <= c.Floor {
		return true
	}
	i := c.settledIndex(seq)
	return i < len(c.Settled) && c.Settled[i].From <= seq
}

// Attempts returns the attempts recorded for position seq in flight.
func (c *Cursor) Attempts(seq uint64) int {
	i, ok := slices.BinarySearchFunc(c.Flight, seq, func(f Flight, s uint64) int { return cmpSeq(f.Seq, s) })
	if !ok {
		return 0
	}
	return c.Flight[i].Attempts
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Sent records that position seq was sent attempts times. It reports
// whether seq is addressed and unsettled.
func (c *Cursor) Sent(seq uint64, attempts int) bool {
	if c.IsSettled(seq) || !c.Addressed(seq) {
		return false
	}
	i, ok := slices.BinarySearchFunc(c.Flight, seq, func(f Flight, s uint64) int { return cmpSeq(f.Seq, s) })
	switch {
	case ok:
		c.Flight[i].Attempts = max(c.Flight[i].Attempts, attempts)
	default:
		c.Flight = slices.Insert(c.Flight, i, Flight{Seq: seq, Attempts: attempts})
	}
	return true
}

// dropFlight forgets the attempts of position seq.
func (c *Cursor) dropFlight(seq uint64) {
	if i, ok := slices.BinarySearchFunc(c.Flight, seq, func(f Flight, s uint64) int { return cmpSeq(f.Seq, s) }); ok {
		c.Flight = slices.Delete(c.Flight, i, i+1)
	}
}

// Settle records that the device settled position seq with state (acked,
// dead, expired or cancelled) at at, after attempts sends (0: the attempts
// recorded in Flight). It reports whether seq was addressed and unsettled;
// a settled position stays as it was (an ack after an expiry changes
// nothing). Call Advance afterwards.
func (c *Cursor) Settle(seq uint64, state DeliveryState, attempts int, at time.Time) bool {
	if c.IsSettled(seq) || !c.Addressed(seq) {
		return false
	}
	if attempts <= 0 {
		attempts = c.Attempts(seq)
	}
	c.dropFlight(seq)
	r := Range{From: seq, To: seq, State: state, Attempts: attempts, Since: at, At: at}
	i := c.settledIndex(seq)
	c.Settled = slices.Insert(c.Settled, i, r)
	if i+1 < len(c.Settled) && joinable(c.Settled[i], c.Settled[i+1]) {
		c.Settled[i] = join(c.Settled[i], c.Settled[i+1])
		c.Settled = slices.Delete(c.Settled, i+1, i+2)
	}
	if i > 0 && joinable(c.Settled[i-1], c.Settled[i]) {
		c.Settled[i-1] = join(c.Settled[i-1], c.Settled[i])
		c.Settled = slices.Delete(c.Settled, i, i+1)
	}
	return true
}

// Advance moves Floor over the settled positions that follow it and, in a
// group's log, over positions not addressed to the device. Each range that
// falls below Floor joins Tail when it continues it, or becomes the new
// Tail; Advance returns the history operations for the Tails it replaced.
func (c *Cursor) Advance() []HistOp {
	var ops []HistOp
	for {
		next := c.Floor + 1
		if c.Source.Kind == KindGroup {
			s, ok := c.spanAt(next)
			if !ok {
				break // nothing further is addressed (yet)
			}
			if next <= s.From {
				c.Floor = s.From
				continue
			}
		}
		if len(c.Settled) == 0 || c.Settled[0].From != next {
			break
		}
		r := c.Settled[0]
		c.Settled = slices.Delete(c.Settled, 0, 1)
		c.Floor = r.To
		switch {
		case c.Tail.To != 0 && joinable(c.Tail, r):
			c.Tail = join(c.Tail, r)
		default:
			ops = append(ops, c.Retire()...)
			c.Tail = r
		}
	}
	c.trimSpans()
	return ops
}

// Retire returns the history operation that keeps Tail once it is no
// longer the cursor's: call it before dropping a cursor.
func (c *Cursor) Retire() []HistOp {
	if c.Tail.To == 0 {
		return nil
	}
	return []HistOp{{Source: c.Source, Range: c.Tail}}
}

// spanAt returns the first span that holds a position at or above seq.
func (c *Cursor) spanAt(seq uint64) (Span, bool) {
	for _, s := range c.Spans {
		if s.To == 0 || s.To >= seq {
			return s, true
		}
	}
	return Span{}, false
}

// trimSpans drops the closed spans at or below Floor; the last span stays
// so that Exhausted can tell where it ended.
func (c *Cursor) trimSpans() {
	i := 0
	for i < len(c.Spans)-1 && c.Spans[i].To != 0 && c.Spans[i].To <= c.Floor {
		i++
	}
	if i > 0 {
		c.Spans = slices.Delete(c.Spans, 0, i)
	}
}

// Unsettled returns how many positions up to last (the log's newest) are
// addressed to the device and not settled.
func (c *Cursor) Unsettled(last uint64) int {
	if last <= c.Floor {
		return 0
	}
	var n uint64
	if c.Source.Kind == KindGroup {
		for _, s := range c.Spans {
			lo, hi := max(s.From, c.Floor), last
			if s.To != 0 {
				hi = min(s.To, last)
			}
			if hi > lo {
				n += hi - lo
			}
		}
	} else {
		n = last - c.Floor
	}
	for _, r := range c.Settled {
		if r.From <= last {
			n -= min(r.To, last) - r.From + 1
		}
	}
	return int(n)
}

// State returns what the cursor knows of position seq: a settled Range
// holding it (from Settled, or Tail), or, for an unsettled position, a
// Range of state pending or inflight with its attempts. ok is false for a
// position at or below Floor that Tail does not hold: the answer is in the
// device's history.
func (c *Cursor) State(seq uint64) (r Range, ok bool) {
	if seq <= c.Floor {
		if c.Tail.From <= seq && seq <= c.Tail.To {
			return c.Tail, true
		}
		return Range{}, false
	}
	if i := c.settledIndex(seq); i < len(c.Settled) && c.Settled[i].From <= seq {
		return c.Settled[i], true
	}
	if n := c.Attempts(seq); n > 0 {
		return Range{From: seq, To: seq, State: StateInflight, Attempts: n}, true
	}
	return Range{From: seq, To: seq, State: StatePending}, true
}

// Join opens a span at last, the group log's newest position, unless the
// device is a member already. It reports whether it opened one. Call
// Advance afterwards: a new cursor then starts at the end of the log.
func (c *Cursor) Join(last uint64) bool {
	if c.Member() {
		return false
	}
	if n := len(c.Spans); n > 0 && c.Spans[n-1].To == last {
		c.Spans[n-1].To = 0 // left and joined again with nothing published between
		return true
	}
	c.Spans = append(c.Spans, Span{From: last})
	return true
}

// Leave closes the open span at last. A span that holds no position is
// removed. It reports whether the device was a member.
func (c *Cursor) Leave(last uint64) bool {
	if !c.Member() {
		return false
	}
	n := len(c.Spans)
	if c.Spans[n-1].From >= last {
		c.Spans = c.Spans[:n-1]
	} else {
		c.Spans[n-1].To = last
	}
	return true
}

// Mark is one change a session asks of a device's cursor: a send recorded
// (State StateInflight with its Attempts), or a settlement (acked, dead,
// expired or cancelled).
type Mark struct {
	Source   Target
	Seq      uint64
	State    DeliveryState
	Attempts int
	// Message is the id of the message at the position, when the caller
	// knows it (optional): the event log reports it, and a store need
	// not look it up.
	Message string
}

// Outcome counts what a set of marks changed.
type Outcome struct {
	Acked, Dead, Expired, Cancelled int
	// Settled are the marks that settled a position, with the attempts
	// recorded for it: the deliveries the event log reports (SPEC
	// section 11). Not counted by Add.
	Settled []Mark
}

func (o *Outcome) count(s DeliveryState) {
	switch s {
	case StateAcked:
		o.Acked++
	case StateDead:
		o.Dead++
	case StateExpired:
		o.Expired++
	case StateCancelled:
		o.Cancelled++
	}
}

// Add adds p to o.
func (o *Outcome) Add(p Outcome) {
	o.Acked += p.Acked
	o.Dead += p.Dead
	o.Expired += p.Expired
	o.Cancelled += p.Cancelled
}

// FindCursor returns the index of the cursor of source in cs, or -1.
func FindCursor(cs []Cursor, source Target) int {
	for i := range cs {
		if cs[i].Source == source {
			return i
		}
	}
	return -1
}

// OrderCursors returns cs with device's own cursor first (a new one when it
// has none) and the groups' by id: the order both stores answer cursors in.
func OrderCursors(device string, cs []Cursor) []Cursor {
	own := DeviceTarget(device)
	if FindCursor(cs, own) < 0 {
		cs = append(cs, Cursor{Source: own})
	}
	slices.SortFunc(cs, func(a, b Cursor) int {
		switch {
		case a.Source == own:
			return -1
		case b.Source == own:
			return 1
		}
		return strings.Compare(a.Source.ID, b.Source.ID)
	})
	return cs
}

// StateIn answers the state of position seq of source from a device's
// cursors cs (a device's own log with no cursor yet: nothing settled); ok
// is false when they no longer know it (below the floor: see the
// device's history).
func StateIn(cs []Cursor, source Target, seq uint64) (Range, bool) {
	if i := FindCursor(cs, source); i >= 0 {
		return cs[i].State(seq)
	}
	if source.Kind == KindDevice {
		return (&Cursor{Source: source}).State(seq)
	}
	return Range{}, false
}

// ApplyMarks applies marks made at at to the cursors of device (its own
// log's cursor is created when missing; marks of a group log it has no
// cursor for address nothing) and advances every cursor it touched. It
// returns what changed, the history operations, and the cursors without
// those that became Exhausted (their Tail goes to the history). Stores call it inside the transaction or
// the compare-and-set that writes the cursors.
func ApplyMarks(cs []Cursor, device string, marks []Mark, at time.Time) ([]Cursor, Outcome, []HistOp) {
	var out Outcome
	touched := make([]bool, len(cs))
	for _, m := range marks {
		i := FindCursor(cs, m.Source)
		if i < 0 {
			if m.Source != DeviceTarget(device) {
				continue
			}
			cs = append(cs, Cursor{Source: m.Source})
			touched = append(touched, false)
			i = len(cs) - 1
		}
		c := &cs[i]
		switch m.State {
		case StateInflight:
			c.Sent(m.Seq, m.Attempts)
		case StateAcked, StateDead, StateExpired, StateCancelled:
			attempts := max(m.Attempts, c.Attempts(m.Seq)) // attempts only grow
			if c.Settle(m.Seq, m.State, attempts, at) {
				out.count(m.State)
				if out.Settled == nil { // sized once: this runs on the store's writer
					out.Settled = make([]Mark, 0, len(marks))
				}
				out.Settled = append(out.Settled, Mark{Source: m.Source, Seq: m.Seq, State: m.State, Attempts: attempts, Message: m.Message})
			}
		default:
			continue
		}
		touched[i] = true
	}
	var hist []HistOp
	kept := cs[:0]
	for i := range cs {
		if touched[i] {
			hist = append(hist, cs[i].Advance()...)
		}
		if cs[i].Exhausted() {
			hist = append(hist, cs[i].Retire()...)
		} else {
			kept = append(kept, cs[i])
		}
	}
	return kept, out, hist
}
