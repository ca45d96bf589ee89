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
	loaded  bool // the cursors came from the store
	loading bool // a cursor load is queued or under way
	reload  bool // membership changed during a load: load again
	readers []logReader
	window  map[string]*flight // by message id
	fresh   []*flight          // admitted, never sent, in admission order
	order   uint64             // admission counter
	nextDue int64              // earliest redelivery in the window (Unix ns; 0: none)

	marks        []tether.Mark
	sends        []*flight // first sends not yet recorded: they ride with the next commit
	ackIDs       []string  // acks of ids the session could not place
	commitQueued bool      // on the commit loop's queue
	committing   bool      // marks handed to the store, not yet answered
	readQueued   bool      // on the read loop's queue
}

// logReader is a session's position in one log.
type logReader struct {
	source tether.Target
	feed   *feed // a group's log: the hub's shared feed of it
	// pos: every position at or below it was admitted to the window,
	// skipped, or settled before the session began.
	pos uint64
	// cur is the stored cursor while the session may still meet positions
	// it knows about (settled, in flight, outside the spans): until pos
	// reaches horizon (0: keep it).
	cur     *tether.Cursor
	horizon uint64
	buf     []entry // entries after pos, read or offered, not yet taken
	behind  bool    // the log may hold entries after buf that the session has not read
	reading bool    // a read for this reader is under way
	dirty   bool    // something was published while it read
	// ahead holds entries of the device's own log offered out of order,
	// until those before come or gapAt (Unix ns) passes.
	ahead map[uint64]*tether.Message
	gapAt int64
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

// end returns the last position the reader holds or has passed.
func (r *logReader) end() uint64 {
	if n := len(r.buf); n > 0 {
		return r.buf[n-1].Seq
	}
	return r.pos
}

// newReader returns a reader starting at cursor c's floor.
func newReader(c tether.Cursor) logReader {
	r := logReader{source: c.Source, pos: c.Floor, behind: true}
	r.setCursor(c)
	return r
}

// setCursor keeps c for as long as it tells more than "everything after
// pos is addressed and unsettled".
func (r *logReader) setCursor(c tether.Cursor) {
	h := c.Floor
	for _, s := range c.Settled {
		h = max(h, s.To)
	}
	for _, f := range c.Flight {
		h = max(h, f.Seq)
	}
	if c.Source.Kind == tether.KindGroup {
		switch n := len(c.Spans); {
		case n == 0 || c.Spans[n-1].To != 0:
			h = 0 // not a member: nothing after the last span is addressed
		default:
			h = max(h, c.Spans[n-1].From)
		}
	}
	if h != 0 && h <= r.pos {
		r.cur, r.horizon = nil, 0
		return
	}
	r.cur, r.horizon = &c, h
}

// admits reports whether entry e may be sent: addressed to the device, not
// settled, not expired.
func (r *logReader) admits(e entry, now int64) bool {
	if r.cur != nil && (!r.cur.Addressed(e.Seq) || r.cur.IsSettled(e.Seq)) {
		return false
	}
	return e.Message.ExpiresAt.UnixNano() > now
}

// loaded sets the session up with its cursors, as the store answered them:
// one reader per log, starting at its floor (a reload keeps the positions
// of the logs it reads already and takes their new spans).
func (s *Session) loaded(cs []tether.Cursor) {
	var join []int
	s.mu.Lock()
	d := &s.d
	d.loading = false
	if s.closed {
		s.mu.Unlock()
		return
	}
	for _, c := range cs {
		i := slices.IndexFunc(d.readers, func(r logReader) bool { return r.source == c.Source })
		if i >= 0 {
			d.readers[i].setCursor(c)
			continue
		}
		d.readers = append(d.readers, newReader(c))
		if c.Source.Kind == tether.KindGroup {
			join = append(join, len(d.readers)-1)
		}
	}
	d.loaded = true
	again := d.reload
	d.reload = false
	s.mu.Unlock()
	for _, i := range join {
		s.mu.Lock()
		group := s.d.readers[i].source.ID
		s.mu.Unlock()
		f := s.hub.feedFor(group, s)
		s.mu.Lock()
		s.d.readers[i].feed = f
		closed := s.closed
		s.mu.Unlock()
		if closed {
			f.leave(s)
		}
	}
	if again {
		s.reload()
	}
	s.wake()
}

// reload makes the session load its cursors again (membership changed).
func (s *Session) reload() {
	s.mu.Lock()
	if s.d.loading {
		s.d.reload = true
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.hub.reads.load(s)
}

// feedsLocked returns the feeds the session reads.
func (d *delivery) feedsLocked() []*feed {
	var out []*feed
	for _, r := range d.readers {
		if r.feed != nil {
			out = append(out, r.feed)
		}
	}
	return out
}

// offer hands the session an entry of its own log published on this node
// (msg nil: only its position is known). One that does not follow the
// entries held waits up to gapWait for those before it (concurrent
// publishes finish in any order); then the session reads its log.
func (s *Session) offer(seq uint64, msg *tether.Message) {
	s.mu.Lock()
	if s.d.loaded && len(s.d.readers) > 0 {
		r := &s.d.readers[0]
		switch end := r.end(); {
		case seq <= end:
		case msg != nil && !r.behind && seq == end+1 && len(r.buf) < feedCap:
			r.buf = append(r.buf, entry{Entry: tether.Entry{Seq: seq, Message: msg}})
			r.catchUp()
		case msg != nil && !r.behind && len(r.ahead) < maxAhead:
			if r.ahead == nil {
				r.ahead = make(map[uint64]*tether.Message)
			}
			r.ahead[seq] = msg
			if r.gapAt == 0 {
				r.gapAt = time.Now().Add(gapWait).UnixNano()
			}
		default:
			r.behind = true
			r.dirty = r.dirty || r.reading
		}
	}
	s.mu.Unlock()
	s.wake()
}

// catchUp moves the entries waiting ahead that now follow into buf.
func (r *logReader) catchUp() {
	for len(r.ahead) > 0 {
		end := r.end()
		for seq := range r.ahead {
			if seq <= end {
				delete(r.ahead, seq)
			}
		}
		m, ok := r.ahead[end+1]
		if !ok {
			return
		}
		delete(r.ahead, end+1)
		r.buf = append(r.buf, entry{Entry: tether.Entry{Seq: end + 1, Message: m}})
	}
	r.ahead, r.gapAt = nil, 0
}

// announce tells the session that its own log has entries it has not seen
// (published on another node).
func (s *Session) announce() { s.offer(^uint64(0), nil) }

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
	queueCommit := len(d.marks) > 0 && !d.commitQueued && !d.committing
	if queueCommit {
		d.commitQueued = true
	}
	if needRead {
		d.readQueued = true
	}
	closed := s.closed
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
		if r := &d.readers[i]; r.gapAt != 0 && now >= r.gapAt {
			r.gapAt, r.behind = 0, true // what came ahead waits no more: read the log
			r.dirty = r.dirty || r.reading
		}
	}
	room := s.hub.cfg.MaxInflight - len(d.window)
	for progress := true; room > 0 && progress; {
		progress = false
		for i := range d.readers {
			if room == 0 {
				break
			}
			r := &d.readers[i]
			e, ok := r.next()
			if !ok {
				continue
			}
			progress = true
			r.pos = e.Seq
			if r.admits(e, now) && d.window[e.Message.ID] == nil {
				s.admitLocked(i, e, now)
				room--
			}
			if r.horizon != 0 && r.pos >= r.horizon {
				r.cur, r.horizon = nil, 0
			}
		}
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

// next returns the reader's next entry after pos: from its buffer, else
// from its group's feed. A feed that cannot answer makes it behind.
func (r *logReader) next() (entry, bool) {
	for {
		for len(r.buf) > 0 {
			e := r.buf[0]
			r.buf = r.buf[1:]
			if len(r.buf) == 0 {
				r.buf = nil
			}
			if e.Seq > r.pos {
				return e, true
			}
		}
		if r.feed == nil || r.behind {
			return entry{}, false
		}
		es, need := r.feed.after(r.pos, 64)
		if need {
			r.behind = true
			return entry{}, false
		}
		if len(es) == 0 {
			return entry{}, false
		}
		r.buf = es
	}
}

// admitLocked puts entry e of reader i into the window, due now.
func (s *Session) admitLocked(i int, e entry, now int64) {
	d := &s.d
	if d.window == nil {
		d.window = make(map[string]*flight, 8)
	}
	d.order++
	f := &flight{reader: i, seq: e.Seq, msg: e.Message, frame: e.frame, due: now, order: d.order}
	if c := d.readers[i].cur; c != nil {
		f.attempt = c.Attempts(e.Seq)
	}
	d.window[e.Message.ID] = f
	d.fresh = append(d.fresh, f)
}

// dueLocked returns the frames of every message of the window whose time
// has come, records their sends as marks, and returns the publish times of
// first attempts and the number of redeliveries. Expired messages leave the
// window (the sweeper settles them); those sent MaxAttempts times become
// dead.
func (s *Session) dueLocked(now time.Time) (frames [][]byte, first []int64, resent int) {
	d := &s.d
	due := d.fresh
	d.fresh = nil
	nowN := now.UnixNano()
	if d.nextDue != 0 && d.nextDue <= nowN {
		due = append(due, d.redueLocked(nowN)...)
	}
	for _, f := range due {
		if d.window[f.msg.ID] != f {
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
	return frames, first, resent
}

// redueLocked returns the sent messages of the window due again, in
// admission order, and recomputes nextDue.
func (d *delivery) redueLocked(now int64) []*flight {
	var due []*flight
	d.nextDue = 0
	for _, f := range d.window {
		switch {
		case f.attempt == 0: // fresh: sent by the caller
		case f.due <= now:
			due = append(due, f)
		case d.nextDue == 0 || f.due < d.nextDue:
			d.nextDue = f.due
		}
	}
	slices.SortFunc(due, func(a, b *flight) int { return cmpUint(a.order, b.order) })
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
	d := &s.d
	src := d.readers[f.reader].source
	if !f.msg.ExpiresAt.After(now) {
		delete(d.window, f.msg.ID)
		return nil, false
	}
	if max := s.hub.cfg.MaxAttempts; max > 0 && f.attempt >= max {
		delete(d.window, f.msg.ID)
		d.marks = append(d.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateDead, Attempts: f.attempt})
		return nil, false
	}
	f.attempt++
	f.due = now.Add(s.backoff(f.attempt)).UnixNano()
	if d.nextDue == 0 || f.due < d.nextDue {
		d.nextDue = f.due
	}
	if f.attempt == 1 {
		// A first send is recorded lazily, with the next commit the
		// session makes for its acks, a redelivery or its close.
		d.sends = append(d.sends, f)
	} else {
		d.marks = append(d.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateInflight, Attempts: f.attempt})
	}
	if f.attempt == 1 && f.frame != nil {
		return f.frame, true
	}
	m := f.msg
	return wire.AppendMessage(make([]byte, 0, len(m.Data)+len(m.ID)+len(m.Target.ID)+112), m.ID, m.Target.String(), m.Data, m.PublishedAt, f.attempt), true
}

// nextDueLocked returns when the window next needs the session (Unix ns;
// 0: never): a redelivery, or the end of a wait for an out-of-order offer.
func (d *delivery) nextDueLocked() int64 {
	next := d.nextDue
	for _, r := range d.readers {
		if r.gapAt != 0 && (next == 0 || r.gapAt < next) {
			next = r.gapAt
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
	earned := false
	for _, id := range ids {
		if f := d.window[id]; f != nil {
			earned = earned || f.attempt > 0
			delete(d.window, id)
			src := d.readers[f.reader].source
			d.marks = append(d.marks, tether.Mark{Source: src, Seq: f.seq, State: tether.StateAcked, Attempts: f.attempt})
		} else if len(d.ackIDs) < maxPendingAcks {
			d.ackIDs = append(d.ackIDs, id)
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
	s.mu.Unlock()
	if queue {
		s.hub.queueCommit(s, closed)
	}
	s.wake()
}

// hasMarks reports whether the session has marks not yet committed.
func (d *delivery) hasMarks() bool {
	return len(d.marks) > 0 || len(d.ackIDs) > 0 || d.committing
}

// sendMarksLocked returns the marks of the first sends still in flight,
// and forgets them.
func (d *delivery) sendMarksLocked() []tether.Mark {
	var out []tether.Mark
	for _, f := range d.sends {
		if d.window[f.msg.ID] == f {
			out = append(out, tether.Mark{Source: d.readers[f.reader].source, Seq: f.seq, State: tether.StateInflight, Attempts: f.attempt})
		}
	}
	d.sends = nil
	return out
}

// sessionRead is one read a session needs: entries of its reader's log
// after after.
type sessionRead struct {
	s      *Session
	reader int
	source tether.Target
	after  uint64
	limit  int
}

// takeReads returns the reads the session needs now and marks them under
// way.
func (s *Session) takeReads() []sessionRead {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.d
	d.readQueued = false
	if s.closed || !d.loaded {
		return nil
	}
	var out []sessionRead
	for i := range d.readers {
		r := &d.readers[i]
		if r.behind && !r.reading {
			r.reading, r.dirty = true, false
			out = append(out, sessionRead{s: s, reader: i, source: r.source, after: r.end(), limit: s.hub.cfg.MaxInflight})
		}
	}
	return out
}

// readDone takes the answer of a read: es are the entries after after; full
// says the read answered all it asked for, so more may follow. On error the
// reader stays behind and is read again.
func (s *Session) readDone(rd sessionRead, es []tether.Entry, err error) {
	s.mu.Lock()
	r := &s.d.readers[rd.reader]
	r.reading = false
	if err == nil {
		for _, e := range es {
			if e.Seq > r.end() {
				r.buf = append(r.buf, entry{Entry: e})
			}
		}
		r.behind = len(es) == rd.limit || r.dirty
		r.dirty = false
		r.catchUp()
	}
	s.mu.Unlock()
	s.wake()
}

// takeMarks hands the session's uncommitted marks to the commit loop.
func (s *Session) takeMarks(at time.Time) (tether.Change, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.d
	d.commitQueued = false
	if len(d.marks) == 0 && len(d.ackIDs) == 0 {
		return tether.Change{}, false
	}
	ch := tether.Change{Device: s.device, At: at, Marks: append(d.sendMarksLocked(), d.marks...), AckIDs: d.ackIDs}
	d.marks, d.ackIDs, d.committing = nil, nil, true
	return ch, true
}

// committed ends a commit of the session's marks. When it failed, the marks
// go back before those made since. It returns whether the session must be
// queued again, and whether a closed session has nothing left to commit.
func (s *Session) committed(ch tether.Change, err error) (requeue, finished bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &s.d
	d.committing = false
	if err != nil {
		d.marks = append(ch.Marks, d.marks...)
		d.ackIDs = append(ch.AckIDs, d.ackIDs...)
	}
	requeue = (len(d.marks) > 0 || len(d.ackIDs) > 0) && !d.commitQueued
	if requeue {
		d.commitQueued = true
	}
	return requeue, s.closed && !d.hasMarks() && !d.commitQueued
}

// attempts returns how many times message id was sent in this session's
// window (0: not there).
func (s *Session) attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.d.window[id]; f != nil {
		return f.attempt
	}
	return 0
}
