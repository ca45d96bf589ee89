package hub

import (
	"slices"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/wire"
)

// delivery is a session's reading of its logs: where it is in each, the
// in-flight window, and the marks (sends, acks) not yet committed. It is
// guarded by the session's mu.
type delivery struct {
	loaded       bool // the cursors came from the store
	loading      bool // a cursor load is queued or under way
	reload       bool // membership changed during a load: load again
	paused       bool // membership changed: group logs wait for the new cursors
	commitQueued bool // on the commit loop's queue
	committing   bool // marks handed to the store, not yet answered
	readQueued   bool // on the read loop's queue
	readers      []logReader
	b            *busy // nil while the session has nothing in flight and nothing to commit
}

// busy is the window and the marks of a session that has any.
type busy struct {
	window  map[string]*flight // by message id
	fresh   []*flight          // admitted, never sent, in admission order
	order   uint64             // admission counter
	nextDue int64              // earliest redelivery in the window (Unix ns; 0: none)
	marks   []tether.Mark
	sends   []*flight // first sends not yet recorded: they ride with the next commit
	// recordBy is when the sends must be recorded at the latest, because
	// one of them expires before its redelivery is due (Unix ns; 0: none).
	recordBy int64
	ackIDs   []string // acks of ids the session could not place
	// acking holds the ackIDs handed to the store and not yet answered:
	// with ackIDs, messages the session must not send although its
	// cursors do not know them settled yet.
	acking []string
}

// flight is a message in the window.
type flight struct {
	reader  int
	seq     uint64
	msg     *tether.Message
	frame   []byte // the frame of a first attempt, when the log's feed encoded it
	attempt int    // sends so far
	due     int64  // Unix ns of the next (re)send
	order   uint64
}

// busyLocked returns the session's busy state, made when missing.
func (d *delivery) busyLocked() *busy {
	if d.b == nil {
		d.b = &busy{}
	}
	return d.b
}

// tidyLocked drops the busy state once it holds nothing.
func (d *delivery) tidyLocked() {
	b := d.b
	if b != nil && len(b.window) == 0 && len(b.fresh) == 0 && len(b.marks) == 0 && len(b.sends) == 0 && len(b.ackIDs) == 0 && len(b.acking) == 0 && !d.committing {
		d.b = nil
	}
}

// inflight returns how many messages the window holds.
func (d *delivery) inflight() int {
	if d.b == nil {
		return 0
	}
	return len(d.b.window)
}

// hasMarks reports whether the session has marks not yet committed.
func (d *delivery) hasMarks() bool {
	return d.committing || d.b != nil && (len(d.b.marks) > 0 || len(d.b.ackIDs) > 0)
}

// deliver fills the window from the logs and writes what is due. It
// returns false when the session closed.
func (s *Session) deliver(now time.Time) bool {
	s.mu.Lock()
	d := &s.d
	if !d.loaded {
		s.mu.Unlock()
		return true
	}
	needRead := s.fillLocked(now.UnixNano())
	frames, first, resent := s.dueLocked(now)
	queueCommit := d.b != nil && len(d.b.marks) > 0 && !d.commitQueued && !d.committing
	if queueCommit {
		d.commitQueued = true
	}
	if needRead {
		d.readQueued = true
	}
	closed := s.closed
	d.tidyLocked()
	s.mu.Unlock()
	if needRead {
		s.hub.reads.read(s)
	}
	if queueCommit {
		s.hub.queueCommit(s, closed)
	}
	if len(frames) == 0 {
		return true
	}
	if !s.write(frames) {
		return false
	}
	m := s.hub.m
	m.Deliveries.Add(float64(len(frames)))
	m.Redeliveries.Add(float64(resent))
	for _, pub := range first {
		m.DeliveryLatency.Observe(now.Sub(time.Unix(0, pub)).Seconds())
	}
	return true
}

// fillLocked admits entries into the window while it has room, taking one
// entry of each log in turn. It returns whether a read must be queued.
func (s *Session) fillLocked(now int64) (needRead bool) {
	d := &s.d
	for i := range d.readers {
		d.readers[i].gapDue(now)
	}
	room := s.hub.cfg.MaxInflight - d.inflight()
	for progress := true; room > 0 && progress; {
		progress = false
		for i := range d.readers {
			if room == 0 {
				break
			}
			r := &d.readers[i]
			if d.paused && r.feed != nil {
				continue
			}
			e, ok := r.next()
			if !ok {
				continue
			}
			progress = true
			r.pos = e.Seq
			if r.admits(e, now) && !d.ackedLocked(e.Message.ID) {
				s.admitLocked(i, e, now)
				room--
			}
			r.moved()
		}
	}
	for i := range d.readers {
		d.readers[i].tidy()
	}
	if room == 0 || d.readQueued {
		return false
	}
	for i := range d.readers {
		if d.readers[i].behind && !d.readers[i].reading {
			return true
		}
	}
	return false
}

// ackedLocked reports whether message id is in the window or was acked by
// id and is not yet known settled by the session's cursors.
func (d *delivery) ackedLocked(id string) bool {
	b := d.b
	if b == nil {
		return false
	}
	return b.window[id] != nil || slices.Contains(b.ackIDs, id) || slices.Contains(b.acking, id)
}

// admitLocked puts entry e of reader i into the window, due now.
func (s *Session) admitLocked(i int, e entry, now int64) {
	b := s.d.busyLocked()
	if b.window == nil {
		b.window = make(map[string]*flight, 8)
	}
	b.order++
	f := &flight{reader: i, seq: e.Seq, msg: e.Message, frame: e.frame, due: now, order: b.order,
		attempt: s.d.readers[i].attempts(e.Seq)}
	b.window[e.Message.ID] = f
	b.fresh = append(b.fresh, f)
}

// dueLocked returns the frames of every message of the window whose time
// has come, records their sends, and returns the publish times of first
// attempts and the number of redeliveries. Expired messages leave the
// window (the sweeper settles them); those sent MaxAttempts times become
// dead.
func (s *Session) dueLocked(now time.Time) (frames [][]byte, first []int64, resent int) {
	b := s.d.b
	if b == nil {
		return nil, nil, 0
	}
	due := b.fresh
	b.fresh = nil
	nowN := now.UnixNano()
	if b.nextDue != 0 && b.nextDue <= nowN {
		due = append(due, b.redue(nowN)...)
	}
	for _, f := range due {
		if b.window[f.msg.ID] != f {
			continue // acked before it was sent
		}
		frame, ok := s.sendLocked(f, now)
		if !ok {
			continue
		}
		frames = append(frames, frame)
		if f.attempt == 1 {
			first = append(first, f.msg.PublishedAt.UnixNano())
		} else {
			resent++
		}
	}
	if b.recordBy != 0 && b.recordBy <= nowN {
		s.d.recordSendsLocked()
	}
	return frames, first, resent
}

// recordAhead is how long before it expires a first send not yet recorded
// is recorded, when no redelivery comes first: time for the commit to
// reach the store before the sweeper (every second) settles the delivery.
const recordAhead = time.Second

// redue returns the sent messages of the window due again, in admission
// order, and recomputes nextDue.
func (b *busy) redue(now int64) []*flight {
	var due []*flight
	b.nextDue = 0
	for _, f := range b.window {
		switch {
		case f.attempt == 0: // fresh: sent by the caller
		case f.due <= now:
			due = append(due, f)
		case b.nextDue == 0 || f.due < b.nextDue:
			b.nextDue = f.due
		}
	}
	slices.SortFunc(due, func(x, y *flight) int { return cmpUint(x.order, y.order) })
	return due
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sendLocked makes one more attempt of f: its frame and its mark, or none
// when f expired or reached MaxAttempts (then it leaves the window).
func (s *Session) sendLocked(f *flight, now time.Time) ([]byte, bool) {
	b := s.d.b
	src := s.d.readers[f.reader].source
	if !f.msg.ExpiresAt.After(now) {
		delete(b.window, f.msg.ID)
		return nil, false
	}
	if max := s.hub.cfg.MaxAttempts; max > 0 && f.attempt >= max {
		delete(b.window, f.msg.ID)
		b.marks = append(b.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateDead, Attempts: f.attempt, Message: f.msg.ID})
		return nil, false
	}
	f.attempt++
	f.due = now.Add(s.backoff(f.attempt)).UnixNano()
	if b.nextDue == 0 || f.due < b.nextDue {
		b.nextDue = f.due
	}
	switch {
	case f.attempt == 1:
		// A first send is recorded lazily, with the next commit the
		// session makes for its acks, a redelivery or its close. One
		// that expires before its redelivery is due is recorded
		// recordAhead before it expires at the latest: the sweeper would
		// otherwise settle it first, and its delivery.expired must count
		// this send.
		b.sends = append(b.sends, f)
		if exp := f.msg.ExpiresAt.UnixNano(); exp <= f.due {
			if by := exp - int64(recordAhead); b.recordBy == 0 || by < b.recordBy {
				b.recordBy = by
			}
		}
	default:
		b.marks = append(b.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateInflight, Attempts: f.attempt})
	}
	if f.attempt == 1 && f.frame != nil {
		return f.frame, true
	}
	m := f.msg
	return wire.AppendMessage(make([]byte, 0, len(m.Data)+len(m.ID)+len(m.Target.ID)+112), m.ID, m.Target.String(), m.Data, m.PublishedAt, f.attempt), true
}

// nextDueLocked returns when the window next needs the session (Unix ns;
// 0: never): a redelivery, a first send to record before it expires, or
// the end of a wait for an out-of-order offer.
func (d *delivery) nextDueLocked() int64 {
	var next int64
	if d.b != nil {
		next = d.b.nextDue
		if r := d.b.recordBy; r != 0 && (next == 0 || r < next) {
			next = r
		}
	}
	for _, r := range d.readers {
		if r.x != nil && r.x.gapAt != 0 && (next == 0 || r.x.gapAt < next) {
			next = r.x.gapAt
		}
	}
	return next
}

// backoff is how long to wait for an ack of attempt n before sending again:
// the ack timeout doubled per attempt, capped at DefaultMaxBackoff of them.
func (s *Session) backoff(n int) time.Duration {
	mult := DefaultMaxBackoff
	if n >= 1 && n <= 6 {
		mult = 1 << (n - 1)
	}
	return time.Duration(mult) * s.hub.cfg.AckTimeout
}

// ack takes ids off the window and marks them acked. An ack that completes
// an in-flight message was earned by the server's own send, so it does not
// count against the frame rate; floods of acks of unknown ids do.
func (s *Session) ack(ids []string) {
	s.mu.Lock()
	d := &s.d
	b := d.busyLocked()
	earned := false
	for _, id := range ids {
		if f := b.window[id]; f != nil {
			earned = earned || f.attempt > 0
			delete(b.window, id)
			src := d.readers[f.reader].source
			b.marks = append(b.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateAcked, Attempts: f.attempt, Message: id})
		} else if len(b.ackIDs) < maxPendingAcks {
			b.ackIDs = append(b.ackIDs, id)
		}
	}
	if earned && s.rateCount > 0 {
		s.rateCount--
	}
	queue := d.hasMarks() && !d.commitQueued && !d.committing
	if queue {
		d.commitQueued = true
	}
	closed := s.closed
	d.tidyLocked()
	s.mu.Unlock()
	if queue {
		s.hub.queueCommit(s, closed)
	}
	s.wake()
}

// sendMarksLocked returns the marks of the first sends still in flight,
// and forgets them.
func (d *delivery) sendMarksLocked() []tether.Mark {
	b := d.b
	if b == nil {
		return nil
	}
	var out []tether.Mark
	b.recordBy = 0
	for _, f := range b.sends {
		if b.window[f.msg.ID] == f {
			out = append(out, tether.Mark{Source: d.readers[f.reader].source, Seq: f.seq, State: tether.StateInflight, Attempts: f.attempt})
		}
	}
	b.sends = nil
	return out
}

// recordSendsLocked turns the first sends not yet recorded into marks,
// ahead of the marks made since.
func (d *delivery) recordSendsLocked() {
	if sends := d.sendMarksLocked(); len(sends) > 0 {
		b := d.busyLocked()
		b.marks = append(sends, b.marks...)
	}
}

// closeMarksLocked makes the marks of a closing session: its first sends
// go to the store with its acks. It returns whether a commit must be
// queued.
func (d *delivery) closeMarksLocked() bool {
	d.recordSendsLocked()
	queue := d.b != nil && len(d.b.marks) > 0 && !d.commitQueued && !d.committing
	if queue {
		d.commitQueued = true
	}
	return queue
}

// takeMarks hands the session's uncommitted marks to the commit loop.
func (s *Session) takeMarks(at time.Time) (tether.Change, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.d
	d.commitQueued = false
	b := d.b
	if b == nil || len(b.marks) == 0 && len(b.ackIDs) == 0 {
		return tether.Change{}, false
	}
	ch := tether.Change{Device: s.device, At: at, Marks: append(d.sendMarksLocked(), b.marks...), AckIDs: b.ackIDs}
	b.marks, b.ackIDs, b.acking, d.committing = nil, nil, ch.AckIDs, true
	return ch, true
}

// committed ends a commit of the session's marks: cs are the device's
// cursors the store answered. When it failed, the marks go back before
// those made since. It returns whether the session must be queued again,
// and whether a closed session has nothing left to commit.
func (s *Session) committed(ch tether.Change, cs []tether.Cursor, err error) (requeue, finished bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.d
	d.committing = false
	if d.b != nil {
		d.b.acking = nil
	}
	if err != nil && (len(ch.Marks) > 0 || len(ch.AckIDs) > 0) {
		b := d.busyLocked()
		b.marks = append(ch.Marks, b.marks...)
		b.ackIDs = append(ch.AckIDs, b.ackIDs...)
	}
	if err == nil && len(ch.AckIDs) > 0 {
		// Acks by id settled messages the session may not have reached
		// yet: its cursors learn them.
		for _, c := range cs {
			if i := slices.IndexFunc(d.readers, func(r logReader) bool { return r.source == c.Source }); i >= 0 {
				d.readers[i].setCursor(c)
			}
		}
	}
	requeue = d.b != nil && (len(d.b.marks) > 0 || len(d.b.ackIDs) > 0) && !d.commitQueued
	if requeue {
		d.commitQueued = true
	}
	d.tidyLocked()
	return requeue, s.closed && !d.hasMarks() && !d.commitQueued
}

// attempts returns how many times message id was sent in this session's
// window (0: not there).
func (s *Session) attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.d.b; b != nil {
		if f := b.window[id]; f != nil {
			return f.attempt
		}
	}
	return 0
}
