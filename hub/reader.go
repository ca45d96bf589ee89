package hub

import (
	"slices"
	"time"

	"github.com/tetherpush/tether"
)

// logReader is a session's position in one log. It is small: what only a
// reader with something in hand needs lives in x, allocated on demand and
// dropped once idle, so that an idle connection costs little memory.
type logReader struct {
	source tether.Target
	feed   *feed // a group's log: the hub's shared feed of it
	// pos: every position at or below it was admitted to the window,
	// skipped, or settled before the session began.
	pos     uint64
	x       *readerState
	behind  bool // the log may hold entries after buf that the session has not read
	reading bool // a read for this reader is under way
	dirty   bool // something was published while it read
}

// readerState is what a reader holds beyond its position.
type readerState struct {
	// cur is the stored cursor while the session may still meet positions
	// it knows about (settled, in flight, outside the spans): until pos
	// reaches horizon (0: keep it).
	cur     *tether.Cursor
	horizon uint64
	buf     []entry // entries after pos, read or offered, not yet taken
	// ahead holds entries of the device's own log offered out of order,
	// until those before come or gapAt (Unix ns) passes.
	ahead map[uint64]*tether.Message
	gapAt int64
}

// state returns r's state, made when missing.
func (r *logReader) state() *readerState {
	if r.x == nil {
		r.x = &readerState{}
	}
	return r.x
}

// tidy drops r's state once it holds nothing.
func (r *logReader) tidy() {
	if x := r.x; x != nil && x.cur == nil && len(x.buf) == 0 && len(x.ahead) == 0 && x.gapAt == 0 {
		r.x = nil
	}
}

// end returns the last position the reader holds or has passed.
func (r *logReader) end() uint64 {
	if x := r.x; x != nil && len(x.buf) > 0 {
		return x.buf[len(x.buf)-1].Seq
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
	keep := h > r.pos
	if c.Source.Kind == tether.KindGroup {
		switch n := len(c.Spans); {
		case n == 0 || c.Spans[n-1].To != 0:
			keep, h = true, 0 // not a member: nothing after the last span is addressed
		case c.Spans[n-1].From > r.pos:
			keep, h = true, max(h, c.Spans[n-1].From)
		}
	}
	if !keep {
		if r.x != nil {
			r.x.cur, r.x.horizon = nil, 0
			r.tidy()
		}
		return
	}
	x := r.state()
	x.cur, x.horizon = &c, h
}

// admits reports whether entry e may be sent: addressed to the device, not
// settled, not expired.
func (r *logReader) admits(e entry, now int64) bool {
	if x := r.x; x != nil && x.cur != nil && (!x.cur.Addressed(e.Seq) || x.cur.IsSettled(e.Seq)) {
		return false
	}
	return e.Message.ExpiresAt.UnixNano() > now
}

// attempts returns the sends the stored cursor knows of position seq.
func (r *logReader) attempts(seq uint64) int {
	if x := r.x; x != nil && x.cur != nil {
		return x.cur.Attempts(seq)
	}
	return 0
}

// moved records that pos advanced: the cursor is dropped past its horizon.
func (r *logReader) moved() {
	if x := r.x; x != nil && x.cur != nil && x.horizon != 0 && r.pos >= x.horizon {
		x.cur, x.horizon = nil, 0
	}
}

// next returns the reader's next entry after pos: from its buffer, else
// from its group's feed. A feed that cannot answer makes it behind.
func (r *logReader) next() (entry, bool) {
	for {
		if x := r.x; x != nil {
			for len(x.buf) > 0 {
				e := x.buf[0]
				x.buf = x.buf[1:]
				if len(x.buf) == 0 {
					x.buf = nil
				}
				if e.Seq > r.pos {
					return e, true
				}
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
		r.state().buf = es
	}
}

// add appends e to the buffer when it follows what the reader holds.
func (r *logReader) add(e entry) {
	if e.Seq > r.end() {
		x := r.state()
		x.buf = append(x.buf, e)
	}
}

// catchUp moves the entries waiting ahead that now follow into buf.
func (r *logReader) catchUp() {
	x := r.x
	for x != nil && len(x.ahead) > 0 {
		end := r.end()
		for seq := range x.ahead {
			if seq <= end {
				delete(x.ahead, seq)
			}
		}
		m, ok := x.ahead[end+1]
		if !ok {
			return
		}
		delete(x.ahead, end+1)
		r.add(entry{Entry: tether.Entry{Seq: end + 1, Message: m}})
	}
	if x != nil {
		x.ahead, x.gapAt = nil, 0
	}
}

// wait keeps msg, offered out of order at seq, until those before come.
func (r *logReader) wait(seq uint64, msg *tether.Message) {
	x := r.state()
	if x.ahead == nil {
		x.ahead = make(map[uint64]*tether.Message)
	}
	x.ahead[seq] = msg
	if x.gapAt == 0 {
		x.gapAt = time.Now().Add(gapWait).UnixNano()
	}
}

// gapDue reports whether an out-of-order wait is over at now; the reader
// then reads its log.
func (r *logReader) gapDue(now int64) bool {
	x := r.x
	if x == nil || x.gapAt == 0 || now < x.gapAt {
		return false
	}
	x.gapAt, r.behind = 0, true
	r.dirty = r.dirty || r.reading
	return true
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
	for i := range d.readers {
		// A group the store no longer has a cursor for: the device left it
		// and was owed nothing more, so the store dropped the cursor. Nothing
		// after this is addressed to the device (an empty cursor has no span).
		r := &d.readers[i]
		if r.source.Kind == tether.KindGroup && !slices.ContainsFunc(cs, func(c tether.Cursor) bool { return c.Source == r.source }) {
			r.setCursor(tether.Cursor{Source: r.source})
		}
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
	if b := d.b; b != nil {
		for id, f := range b.window {
			src := d.readers[f.reader].source
			if i := slices.IndexFunc(cs, func(c tether.Cursor) bool { return c.Source == src }); i >= 0 && cs[i].IsSettled(f.seq) {
				delete(b.window, id) // settled elsewhere (cancelled): never sent again
			}
		}
	}
	d.loaded = true
	again := d.reload
	d.reload, d.paused = false, again
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
// Until they come, it sends nothing more of its groups' logs: a message
// published after a device left its group must not reach it.
func (s *Session) reload() {
	s.mu.Lock()
	s.d.paused = s.d.loaded
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
		case msg != nil && !r.behind && seq == end+1 && (r.x == nil || len(r.x.buf) < feedCap):
			r.add(entry{Entry: tether.Entry{Seq: seq, Message: msg}})
			r.catchUp()
		case msg != nil && !r.behind && (r.x == nil || len(r.x.ahead) < maxAhead):
			r.wait(seq, msg)
		default:
			r.behind = true
			r.dirty = r.dirty || r.reading
		}
	}
	s.mu.Unlock()
	s.wake()
}

// announce tells the session that its own log has entries it has not seen
// (published on another node).
func (s *Session) announce() { s.offer(^uint64(0), nil) }

// reread has the session read group's log from the store itself, from its
// own position: the log may hold entries nobody announced, and the group's
// feed does not know where the log ends.
func (s *Session) reread(group string) {
	s.mu.Lock()
	for i := range s.d.readers {
		if r := &s.d.readers[i]; r.source == tether.GroupTarget(group) {
			r.behind = true
			r.dirty = r.dirty || r.reading
		}
	}
	s.mu.Unlock()
	s.wake()
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
			r.add(entry{Entry: e})
		}
		r.behind = len(es) == rd.limit || r.dirty
		r.dirty = false
		r.catchUp()
		r.tidy()
	}
	s.mu.Unlock()
	s.wake()
}

// memberOf returns the groups whose logs the session reads as a member,
// sorted.
func (s *Session) memberOf() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{}
	for _, r := range s.d.readers {
		if r.source.Kind == tether.KindGroup && (r.x == nil || r.x.cur == nil || r.x.cur.Member()) {
			out = append(out, r.source.ID)
		}
	}
	slices.Sort(out)
	return out
}
