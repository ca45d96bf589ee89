package hub

import (
	"context"
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

// maxPendingAcks bounds the ids a session buffers before flushing them.
const maxPendingAcks = 8 * wire.MaxAckIDs

// Session is one device's connection to this node: an event-driven state
// machine. Events arrive from the reader (Received, Ended), from the hub
// (wake on publish, takeover, drain) and from the timer; the work they cause
// runs on the hub's workers in run.
type Session struct {
	hub         *Hub
	id          string // from Admit
	conn        Conn
	device      string
	groups      []string
	connectedAt time.Time
	tokenExp    time.Time
	lastSeen    atomic.Int64 // unix nanoseconds of the last frame received

	heapIdx int       // guarded by hub.sched.mu
	timerAt time.Time // guarded by hub.sched.mu

	mu        sync.Mutex // guards following
	closed    bool
	queued    bool // on the run queue
	running   bool // a worker runs it
	again     bool // more work arrived while running
	fetch     bool // the store may hold deliveries not yet in the window
	inflight  map[string]*flight
	unflushed map[string]struct{} // acked ids of the window not yet in the store
	acks      []string
	retryAt   time.Time // no store work before this, after a store error
	outbox    [][]byte  // control frames (pong, errors) to write
	pong      []byte    // payload of the WebSocket pong owed
	pongOwed  bool
	nextPing  time.Time
	rateStart time.Time
	rateCount int
}

// flight is a delivery in the window.
type flight struct {
	msg     *tether.Message
	attempt int       // attempts recorded by the store
	due     time.Time // when to (re)send
}

// Attach starts a session for device on conn, replacing (4409) any session
// of the same device on this node, and writes the welcome frame. The caller
// has admitted the session with Admit, which returned id.
func (h *Hub) Attach(id, device string, groups []string, tokenExp time.Time, conn Conn) (*Session, error) {
	now := time.Now()
	s := &Session{
		hub: h, id: id, conn: conn, device: device, groups: groups,
		connectedAt: now, tokenExp: tokenExp, heapIdx: -1,
		fetch: true, nextPing: now.Add(h.cfg.Heartbeat),
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
	s.pong, s.pongOwed = append(s.pong[:0], payload...), true
	s.mu.Unlock()
	s.wake()
}

// rateLimit returns 4429 when the client sends more than twice the allowed
// frame rate within one second.
func (s *Session) rateLimit(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.rateStart) >= time.Second {
		s.rateStart, s.rateCount = now, 0
	}
	s.rateCount++
	if s.rateCount > 2*s.hub.cfg.MaxFrameRate {
		return wire.CloseRateLimited
	}
	return 0
}

// ack takes ids off the window and queues them for the store. An ack that
// completes an in-flight delivery was earned by the server's own send, so it
// does not count against the frame rate; floods of acks of unknown ids do.
func (s *Session) ack(ids []string) {
	s.mu.Lock()
	earned := false
	for _, id := range ids {
		if _, ok := s.inflight[id]; ok {
			earned = true
			delete(s.inflight, id)
			if s.unflushed == nil {
				s.unflushed = make(map[string]struct{})
			}
			s.unflushed[id] = struct{}{}
			s.fetch = true
		} else if len(s.acks) >= maxPendingAcks {
			continue // an ack flood of unknown ids: drop the excess
		}
		s.acks = append(s.acks, id)
	}
	if earned && s.rateCount > 0 {
		s.rateCount--
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Session) queueControl(frame []byte) {
	s.mu.Lock()
	if len(s.outbox) < 64 {
		s.outbox = append(s.outbox, frame)
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

// Close closes the session with code (0: the connection is already gone)
// and forgets it; acks already received are still flushed. Idempotent.
func (s *Session) Close(code int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	h := s.hub
	h.mu.Lock()
	if h.sessions[s.device] == s {
		delete(h.sessions, s.device)
	}
	h.ending[s] = struct{}{} // until its acks are stored
	h.m.Connections.Set(float64(len(h.sessions)))
	h.mu.Unlock()
	h.sched.set(s, time.Time{})
	h.Forget(s.device, s.id)
	if code != 0 {
		h.m.Closes.WithLabelValues(codeLabel(code)).Inc()
	}
	s.conn.Close(code)
	s.wake() // flush pending acks
}

// wake puts the session on the run queue unless it is there or running.
func (s *Session) wake() {
	s.mu.Lock()
	switch {
	case s.running:
		s.again = true
		s.mu.Unlock()
		return
	case s.queued:
		s.mu.Unlock()
		return
	}
	s.queued = true
	s.mu.Unlock()
	s.hub.queue.push(s)
}

func (s *Session) timerFired() { s.wake() }

// notify tells the session the store has new deliveries for it.
func (s *Session) notify() {
	s.mu.Lock()
	s.fetch = true
	s.mu.Unlock()
	s.wake()
}

func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// maxSteps is how many passes a session runs before it gives its worker
// back and waits its turn again, so that a busy session cannot starve the
// others.
const maxSteps = 4

// run does the session's pending work on a worker, then reschedules.
func (s *Session) run(ctx context.Context) {
	s.mu.Lock()
	s.queued, s.running = false, true
	s.mu.Unlock()
	for i := 1; ; i++ {
		s.step(ctx)
		s.mu.Lock()
		if !s.again {
			s.running = false
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

// step is one pass of work: write control frames, flush acks, top up the
// window from the store, (re)send what is due, ping, and set the next timer.
func (s *Session) step(ctx context.Context) {
	now := time.Now()
	s.mu.Lock()
	closed := s.closed
	storeOK := !now.Before(s.retryAt)
	var acks []string
	if storeOK {
		acks, s.acks = s.acks, nil
	}
	outbox := s.outbox
	s.outbox = nil
	pongOwed := s.pongOwed
	pong := append([]byte(nil), s.pong...)
	s.pongOwed = false
	s.mu.Unlock()

	if len(acks) > 0 && !s.flushAcks(ctx, acks, now) {
		storeOK = false
	}
	if closed {
		s.ended()
		return
	}
	if !s.checkToken(now) {
		return
	}
	if pongOwed { // first: the ping came before what the outbox answers
		if err := s.conn.Pong(pong, time.Now().Add(s.hub.cfg.WriteTimeout)); err != nil {
			s.Close(closeCodeFor(err))
			return
		}
	}
	if len(outbox) > 0 && !s.write(outbox) {
		return
	}
	if storeOK && (!s.topUp(ctx, now) || !s.sendDue(ctx, now)) {
		return
	}
	if !s.heartbeat(now) {
		return
	}
	s.schedule()
}

// ended finishes a closed session's pass: once its acks are stored it
// leaves the hub's ending set; while it holds some (a store error's backoff)
// it runs again when the backoff ends.
func (s *Session) ended() {
	s.mu.Lock()
	held, at := len(s.acks) > 0, s.retryAt
	s.mu.Unlock()
	if held {
		s.hub.sched.set(s, at)
		return
	}
	s.hub.mu.Lock()
	delete(s.hub.ending, s)
	s.hub.mu.Unlock()
}

// storeFailed backs the session's store work off for a second.
func (s *Session) storeFailed(op string, err error) {
	if !errors.Is(err, context.Canceled) {
		s.hub.log.Warn("store call failed; session retries in 1s", "op", op, "device", s.device, "err", err)
	}
	s.mu.Lock()
	s.retryAt = time.Now().Add(time.Second)
	s.mu.Unlock()
}

// flushAcks records acks in the store; on failure they are kept and retried.
func (s *Session) flushAcks(ctx context.Context, ids []string, now time.Time) bool {
	n, err := s.hub.store.Ack(ctx, s.device, ids, now)
	if err != nil {
		s.mu.Lock()
		s.acks = append(ids, s.acks...)
		s.mu.Unlock()
		s.storeFailed("ack", err) // a closed session retries in ended
		return false
	}
	s.hub.m.Acks.Add(float64(n))
	s.mu.Lock()
	for _, id := range ids {
		delete(s.unflushed, id)
	}
	s.mu.Unlock()
	return true
}

func (s *Session) checkToken(now time.Time) bool {
	if !s.tokenExp.IsZero() && !now.Before(s.tokenExp) {
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
	if now.Sub(time.Unix(0, s.lastSeen.Load())) >= 2*s.hub.cfg.Heartbeat {
		s.Close(wire.CloseHeartbeat)
		return false
	}
	s.mu.Lock()
	due := !now.Before(s.nextPing)
	if due {
		s.nextPing = now.Add(s.hub.cfg.Heartbeat)
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
	if silent := time.Unix(0, s.lastSeen.Load()).Add(2 * s.hub.cfg.Heartbeat); silent.Before(next) {
		next = silent
	}
	if s.retryAt.After(time.Now()) && s.retryAt.Before(next) {
		next = s.retryAt
	}
	if !s.tokenExp.IsZero() && s.tokenExp.Before(next) {
		next = s.tokenExp
	}
	for _, f := range s.inflight {
		if f.due.Before(next) {
			next = f.due
		}
	}
	s.mu.Unlock()
	s.hub.sched.set(s, next)
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
