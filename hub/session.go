package hub

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/wire"
)

// Conn is what the I/O layer gives a session to write to. Implementations
// are safe for concurrent use.
type Conn interface {
	// WriteText writes each frame as one WebSocket text message, in order,
	// within the deadline; a passed deadline returns an error for which
	// os.IsTimeout holds.
	WriteText(frames [][]byte, deadline time.Time) error
	// Ping writes a WebSocket ping within the deadline.
	Ping(deadline time.Time) error
	// Pong writes a WebSocket pong with payload within the deadline.
	Pong(payload []byte, deadline time.Time) error
	// Close writes a close frame with code (best effort, bounded in time)
	// and closes the socket. Idempotent.
	Close(code int)
}

// maxPendingAcks bounds the acks of ids outside the window a session keeps
// until its next commit.
const maxPendingAcks = 8 * wire.MaxAckIDs

// Session is one device's connection to this node: an event-driven state
// machine. Events arrive from the reader (Received, Ended), from the hub
// (new entries, takeover, drain), from the store loops (cursors loaded,
// log read, marks committed) and from the timer; the socket work they
// cause runs on the hub's workers in run.
type Session struct {
	hub         *Hub
	id          string // from Admit
	conn        Conn
	device      string
	connectedAt int64 // Unix ns
	tokenExp    int64 // Unix ns; 0: none
	lastSeen    atomic.Int64

	heapIdx int32 // guarded by hub.sched.mu
	timerAt int64 // guarded by hub.sched.mu

	mu        sync.Mutex // guards following
	closed    bool
	queued    bool // on the run queue
	running   bool // a worker runs it
	again     bool // more work arrived while running
	nextPing  int64
	rateStart int64
	rateCount int32
	ctl       *control // frames owed to the client besides messages; nil when none
	d         delivery // the logs, the window and the marks
}

// control is what a session owes its client besides messages.
type control struct {
	outbox   [][]byte // control frames (pong, errors) to write
	pong     []byte   // payload of the WebSocket pong owed
	pongOwed bool
}

// Attach starts a session for device on conn, replacing (4409) any session
// of the same device on this node, and writes the welcome frame. The caller
// has admitted the session with Admit, which returned id. The session's
// cursors are loaded from the store by the read loop; it sends nothing
// before.
func (h *Hub) Attach(id, device string, groups []string, tokenExp time.Time, conn Conn) (*Session, error) {
	now := time.Now()
	s := &Session{
		hub: h, id: id, conn: conn, device: device,
		connectedAt: now.UnixNano(), heapIdx: -1, nextPing: now.Add(h.cfg.Heartbeat).UnixNano(),
	}
	if !tokenExp.IsZero() {
		s.tokenExp = tokenExp.UnixNano()
	}
	s.lastSeen.Store(now.UnixNano())
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		h.Forget(device, id)
		return nil, ErrDraining
	}
	old := h.sessions[device]
	h.sessions[device] = s
	h.m.Connections.Set(float64(len(h.sessions)))
	h.mu.Unlock()
	if old != nil {
		old.Close(wire.CloseReplaced)
	}
	h.events.presence(tether.EventOnline, device, 0)
	welcome := wire.EncodeWelcome(wire.Welcome{
		Device: device, Groups: groups, Node: h.cfg.Node,
		HeartbeatMS:  h.cfg.Heartbeat.Milliseconds(),
		AckTimeoutMS: h.cfg.AckTimeout.Milliseconds(),
		MaxInflight:  h.cfg.MaxInflight,
	})
	if err := conn.WriteText([][]byte{welcome}, now.Add(h.cfg.WriteTimeout)); err != nil {
		s.Close(closeCodeFor(err))
		return nil, err
	}
	h.reads.load(s)
	s.wake()
	return s, nil
}

// Device returns the session's device id.
func (s *Session) Device() string { return s.device }

// Received handles one complete text message from the client. It never
// blocks on the store or the socket: work is queued for a worker.
func (s *Session) Received(payload []byte) {
	s.lastSeen.Store(time.Now().UnixNano())
	f, err := wire.DecodeClient(payload)
	var unknown *wire.UnknownTypeError
	switch {
	case errors.As(err, &unknown):
		s.queueControl(wire.EncodeError(wire.ErrUnknownType, unknown.Error()))
	case errors.Is(err, wire.ErrNotObject):
		s.closeWithError(wire.CloseInvalidPayload, wire.ErrInvalidFrame, err.Error())
	case err != nil:
		s.closeWithError(wire.ClosePolicyViolation, wire.ErrInvalidFrame, err.Error())
	case f.Type == wire.TypePing:
		s.queueControl(wire.Pong)
	case f.Type == wire.TypeAck:
		s.ack(f.IDs)
	}
}

// Seen records activity that is not a text message (a pong).
func (s *Session) Seen() { s.lastSeen.Store(time.Now().UnixNano()) }

// Frame counts one frame of any kind from the client (text, fragment,
// ping, pong) against the frame rate. It returns false, having closed the
// session with 4429, when the client sends too many.
func (s *Session) Frame() bool {
	now := time.Now()
	s.lastSeen.Store(now.UnixNano())
	if code := s.rateLimit(now); code != 0 {
		s.Close(code)
		return false
	}
	return true
}

// Ping records a WebSocket ping from the client; a worker answers it. Only
// the latest ping is answered when several wait, so a client that pings
// without reading costs one pending pong, not a queue.
func (s *Session) Ping(payload []byte) {
	s.mu.Lock()
	c := s.controlLocked()
	c.pong, c.pongOwed = append(c.pong[:0], payload...), true
	s.mu.Unlock()
	s.wake()
}

func (s *Session) controlLocked() *control {
	if s.ctl == nil {
		s.ctl = &control{}
	}
	return s.ctl
}

// rateLimit returns 4429 when the client sends more than twice the allowed
// frame rate within one second.
func (s *Session) rateLimit(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.UnixNano()-s.rateStart >= int64(time.Second) {
		s.rateStart, s.rateCount = now.UnixNano(), 0
	}
	s.rateCount++
	if int(s.rateCount) > 2*s.hub.cfg.MaxFrameRate {
		return wire.CloseRateLimited
	}
	return 0
}

func (s *Session) queueControl(frame []byte) {
	s.mu.Lock()
	if c := s.controlLocked(); len(c.outbox) < 64 {
		c.outbox = append(c.outbox, frame)
	}
	s.mu.Unlock()
	s.wake()
}

// closeWithError writes an error frame, then closes with code. Called from
// the reader: the write is bounded by a short deadline.
func (s *Session) closeWithError(code int, errCode, msg string) {
	_ = s.conn.WriteText([][]byte{wire.EncodeError(errCode, msg)}, time.Now().Add(readerWriteTimeout))
	s.Close(code)
}

// readerWriteTimeout bounds the few writes made on the reader's goroutine
// (an error frame before a close), which must not hold it long.
const readerWriteTimeout = 100 * time.Millisecond

// Ended tells the session its connection is gone (the reader stopped).
func (s *Session) Ended() { s.Close(0) }

// EndedBy tells the session the client closed the connection with code,
// which the I/O layer has echoed: it ends as with Ended, and its
// device.offline event reports code.
func (s *Session) EndedBy(code int) { s.close(0, code) }

// Close closes the session with code (0: the connection is already gone)
// and forgets it; the acks already received are still committed.
// Idempotent.
func (s *Session) Close(code int) { s.close(code, code) }

// close closes the session with code and reports reported in its
// device.offline event.
func (s *Session) close(code, reported int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	feeds := s.d.feedsLocked()
	queue := s.d.closeMarksLocked() // what it sent goes to the store now
	pending := s.d.hasMarks()
	s.mu.Unlock()
	h := s.hub
	h.mu.Lock()
	if h.sessions[s.device] == s {
		delete(h.sessions, s.device)
	}
	if pending {
		h.ending[s] = struct{}{} // until its marks are committed
	}
	h.m.Connections.Set(float64(len(h.sessions)))
	h.mu.Unlock()
	for _, f := range feeds {
		f.leave(s)
	}
	if queue {
		h.commit.queue(s)
	}
	h.sched.set(s, time.Time{})
	h.Forget(s.device, s.id)
	h.events.presence(tether.EventOffline, s.device, reported)
	if code != 0 {
		h.m.Closes.WithLabelValues(codeLabel(code)).Inc()
	}
	s.conn.Close(code)
}

// wake puts the session on the run queue unless it is there or running.
func (s *Session) wake() {
	s.mu.Lock()
	switch {
	case s.running:
		s.again = true
		s.mu.Unlock()
		return
	case s.queued || s.closed:
		s.mu.Unlock()
		return
	}
	s.queued = true
	s.mu.Unlock()
	s.hub.queue.push(s)
}

func (s *Session) timerFired() { s.wake() }

// maxSteps is how many passes a session runs before it gives its worker
// back and waits its turn again, so that a busy session cannot starve the
// others.
const maxSteps = 4

// run does the session's pending work on a worker, then reschedules.
func (s *Session) run() {
	s.mu.Lock()
	s.queued, s.running = false, true
	s.mu.Unlock()
	for i := 1; ; i++ {
		s.step()
		s.mu.Lock()
		if !s.again || s.closed {
			s.running, s.again = false, false
			s.mu.Unlock()
			return
		}
		s.again = false
		if i == maxSteps { // more work came: back of the queue
			s.running, s.queued = false, true
			s.mu.Unlock()
			s.hub.queue.push(s)
			return
		}
		s.mu.Unlock()
	}
}

// step is one pass of socket work: control frames, the window's due
// messages, the heartbeat, and the next timer. It never calls the store.
func (s *Session) step() {
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	ctl := s.ctl
	s.ctl = nil
	s.mu.Unlock()

	if !s.checkToken(now) {
		return
	}
	if ctl != nil && ctl.pongOwed { // first: the ping came before what the outbox answers
		if err := s.conn.Pong(ctl.pong, time.Now().Add(s.hub.cfg.WriteTimeout)); err != nil {
			s.Close(closeCodeFor(err))
			return
		}
	}
	if ctl != nil && len(ctl.outbox) > 0 && !s.write(ctl.outbox) {
		return
	}
	if !s.deliver(now) || !s.heartbeat(now) {
		return
	}
	s.schedule()
}

func (s *Session) checkToken(now time.Time) bool {
	if s.tokenExp != 0 && now.UnixNano() >= s.tokenExp {
		_ = s.conn.WriteText([][]byte{wire.EncodeError("token_expired", "the device token expired; reconnect with a new token")}, now.Add(time.Second))
		s.Close(wire.CloseTokenExpired)
		return false
	}
	return true
}

// write writes frames; a failed write closes the session (4503 on timeout).
func (s *Session) write(frames [][]byte) bool {
	err := s.conn.WriteText(frames, time.Now().Add(s.hub.cfg.WriteTimeout))
	if err != nil {
		s.Close(closeCodeFor(err))
		return false
	}
	return true
}

// heartbeat closes a silent session with 4408 (nothing received for
// 2 × heartbeat, whatever the I/O layer) and sends the periodic ping.
func (s *Session) heartbeat(now time.Time) bool {
	if now.UnixNano()-s.lastSeen.Load() >= int64(2*s.hub.cfg.Heartbeat) {
		s.Close(wire.CloseHeartbeat)
		return false
	}
	s.mu.Lock()
	due := now.UnixNano() >= s.nextPing
	if due {
		s.nextPing = now.Add(s.hub.cfg.Heartbeat).UnixNano()
	}
	s.mu.Unlock()
	if !due {
		return true
	}
	if err := s.conn.Ping(now.Add(s.hub.cfg.WriteTimeout)); err != nil {
		s.Close(closeCodeFor(err))
		return false
	}
	return true
}

// schedule sets the session's timer to its earliest due event.
func (s *Session) schedule() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	next := s.nextPing
	if silent := s.lastSeen.Load() + int64(2*s.hub.cfg.Heartbeat); silent < next {
		next = silent
	}
	if s.tokenExp != 0 && s.tokenExp < next {
		next = s.tokenExp
	}
	if due := s.d.nextDueLocked(); due != 0 && due < next {
		next = due
	}
	s.mu.Unlock()
	s.hub.sched.set(s, time.Unix(0, next))
}

// closeCodeFor maps a write error to a close code.
func closeCodeFor(err error) int {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return wire.CloseSlowConsumer
	}
	return wire.CloseInternal
}

func codeLabel(code int) string {
	switch code {
	case 1000, 1001, 1003, 1007, 1008, 1009, 1011, 4401, 4408, 4409, 4429, 4503:
		return itoa(code)
	}
	return "other"
}

func itoa(n int) string {
	var b [8]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
