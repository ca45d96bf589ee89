package http

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/wire"
)

// closeFrameTimeout bounds the wait for the write lock and the write of a
// close frame: Close runs on readers and epoll workers, which must not be
// held by a peer that does not read.
const closeFrameTimeout = 100 * time.Millisecond

// closeGrace is how long the reader keeps reading after the server sent a
// close frame, so that the peer's close frame or FIN arrives and the socket
// ends with FIN rather than RST.
const closeGrace = time.Second

// conn is one upgraded WebSocket connection. Its reader runs on the
// connection's HTTP handler goroutine; writes come from the hub's workers and
// are serialised by wlock, a lock whose wait is bounded by the write deadline.
// It keeps no buffers while idle.
type conn struct {
	c        net.Conn
	r        io.Reader // c, behind whatever the upgrade had buffered
	maxFrame int

	wlock   atomic.Int32 // write lock: 1 while held
	handoff atomic.Int32 // the code of a close frame Close left to the lock's holder (0: none)
	closing atomic.Bool
	once    sync.Once
	srv     *Server // told when the socket is closed; nil in tests

	hookMu   sync.Mutex // guards onClose and closed
	onClose  func()     // set by the poller: watch the close grace period
	closed   bool       // Close has reached the point where it calls onClose
	finished atomic.Bool

	msg        []byte // a fragmented text message being assembled
	fragmented bool
}

var _ hub.Conn = (*conn)(nil)

func newConn(c net.Conn, maxFrame int) *conn {
	_ = c.SetDeadline(time.Time{}) // clear the HTTP server's deadlines
	return &conn{c: c, r: c, maxFrame: maxFrame}
}

// buffered returns a copy of the bytes the client sent right after the
// handshake, which the upgrade has already read.
func buffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	return bytes.Clone(b)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// lock takes the write lock, waiting until deadline at most. The lock is
// one word, not a channel, to keep an idle connection small; it is rarely
// contended (a close frame racing a worker's write), so a waiter polls
// with a short backoff.
func (c *conn) lock(deadline time.Time) bool {
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 5*time.Millisecond) {
		if c.wlock.CompareAndSwap(0, 1) {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(wait, left))
	}
}

// unlock releases the write lock, after sending the close frame, and the
// FIN, that a Close handed off while this held it.
func (c *conn) unlock() {
	if code := c.handoff.Swap(0); code != 0 {
		c.closeFrame(int(code))
	}
	c.wlock.Store(0)
}

// closeFrame writes a close frame with code, within closeFrameTimeout, and
// half-closes the socket; the write lock must be held.
func (c *conn) closeFrame(code int) {
	_ = c.c.SetWriteDeadline(time.Now().Add(closeFrameTimeout))
	_, _ = c.c.Write(ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), wire.CloseReason(code)))))
	c.closing.Store(true)
	if cw, ok := c.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// WriteText writes frames as text messages in one write.
func (c *conn) WriteText(frames [][]byte, deadline time.Time) error {
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			bufPool.Put(buf)
		}
	}()
	for _, f := range frames {
		_ = ws.WriteHeader(buf, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(f))})
		buf.Write(f)
	}
	return c.write(buf.Bytes(), deadline)
}

// Ping writes a WebSocket ping.
func (c *conn) Ping(deadline time.Time) error {
	return c.write(ws.CompiledPing, deadline)
}

// Pong writes a WebSocket pong with payload.
func (c *conn) Pong(payload []byte, deadline time.Time) error {
	return c.write(ws.MustCompileFrame(ws.NewPongFrame(payload)), deadline)
}

func (c *conn) write(p []byte, deadline time.Time) error {
	if c.closing.Load() {
		return net.ErrClosed
	}
	if !c.lock(deadline) {
		return os.ErrDeadlineExceeded
	}
	defer c.unlock()
	if c.closing.Load() { // Close wrote the close frame while this waited
		return net.ErrClosed
	}
	_ = c.c.SetWriteDeadline(deadline)
	_, err := c.c.Write(p)
	return err
}

// Close sends a close frame with code (0: none), half-closes the socket and
// gives the reader closeGrace to see the peer's end; the reader then closes
// the socket. When the write lock stays held past closeFrameTimeout (a
// writer waiting on a peer that does not read, or descheduled), the frame
// and the FIN are handed off to the holder, which sends them as it
// unlocks: Close never waits longer, and the peer still learns the code.
// Safe from any goroutine; idempotent.
func (c *conn) Close(code int) {
	c.once.Do(func() {
		if code != 0 {
			if c.lock(time.Now().Add(closeFrameTimeout)) {
				c.closeFrame(code)
				c.unlock()
			} else {
				c.handoff.Store(int32(code))
				if c.wlock.CompareAndSwap(0, 1) { // the holder left meanwhile
					c.unlock()
				}
			}
		}
		c.closing.Store(true)
		_ = c.c.SetReadDeadline(time.Now().Add(closeGrace))
		c.hookMu.Lock()
		c.closed = true
		hook := c.onClose
		c.hookMu.Unlock()
		if hook != nil {
			hook()
		}
	})
}

// setOnClose sets the hook Close calls once it has sent its close frame
// (nil: none) and reports whether Close had already passed that point, in
// which case the caller must do what the hook does itself.
func (c *conn) setOnClose(hook func()) (closed bool) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	c.onClose = hook
	return c.closed
}

// polled reports whether the poller reads this connection.
func (c *conn) polled() bool {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	return c.onClose != nil
}

// finish closes the socket; only the reader (or the poller) calls it, once
// it is done. Idempotent.
func (c *conn) finish() {
	if c.finished.Swap(true) {
		return
	}
	_ = c.c.Close()
	if c.srv != nil {
		c.srv.connFinished()
	}
}

// errClose carries the close code a read error calls for.
type errClose struct{ code int }

// Error names the close code.
func (e errClose) Error() string { return "close " + wire.CloseReason(e.code) }

// readLoop reads frames until the connection ends, feeding text messages to
// the session. Nothing received for idle closes the session with 4408. It
// is the I/O layer for connections the poller cannot take (TLS, non-Linux).
func (c *conn) readLoop(sess *hub.Session, idle time.Duration) {
	defer c.finish()
	for !c.closing.Load() {
		_ = c.c.SetReadDeadline(time.Now().Add(idle))
		h, payload, err := c.readFrame()
		if err != nil {
			c.endWith(sess, err)
			return
		}
		if !c.handle(sess, h, payload) {
			return
		}
	}
	c.drain(sess)
}

// handle acts on one frame: control frames are answered, text messages
// (reassembled from fragments) go to the session. It returns false when the
// connection must end; the session has then been closed with its code.
func (c *conn) handle(sess *hub.Session, h ws.Header, payload []byte) bool {
	if !sess.Frame() { // every frame counts against the rate: 4429
		c.drain(sess)
		return false
	}
	if h.OpCode.IsControl() {
		return c.control(sess, h, payload)
	}
	switch {
	case h.OpCode == ws.OpBinary && !c.fragmented:
		c.fail(sess, wire.CloseUnsupported)
		return false
	case h.OpCode == ws.OpText && !c.fragmented:
		c.msg, c.fragmented = payload, !h.Fin
	case h.OpCode == ws.OpContinuation && c.fragmented:
		if len(c.msg)+len(payload) > c.maxFrame {
			c.fail(sess, wire.CloseTooBig)
			return false
		}
		c.msg = append(c.msg, payload...)
		c.fragmented = !h.Fin
	default: // continuation without a start, or a new message inside one
		c.fail(sess, int(ws.StatusProtocolError))
		return false
	}
	if c.fragmented {
		return true
	}
	msg := c.msg
	c.msg = nil
	if !utf8.Valid(msg) {
		c.fail(sess, wire.CloseInvalidPayload)
		return false
	}
	sess.Received(msg)
	return true
}

// fail closes the session with code because of what the peer sent.
func (c *conn) fail(sess *hub.Session, code int) {
	sess.Close(code)
	c.drain(sess)
}

// readFrame reads one frame, enforcing RFC 6455 rules and the size limit
// before any payload is read.
func (c *conn) readFrame() (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return h, nil, headerError(err)
	}
	if err := c.check(h); err != nil {
		return h, nil, err
	}
	// Memory grows with what arrives, not with what the header announces.
	payload, err := io.ReadAll(io.LimitReader(c.r, h.Length))
	if err != nil {
		return h, nil, err
	}
	if int64(len(payload)) < h.Length {
		return h, nil, io.ErrUnexpectedEOF
	}
	ws.Cipher(payload, h.Mask, 0)
	return h, payload, nil
}

// headerError turns a malformed frame header into a protocol error close.
func headerError(err error) error {
	if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
		return errClose{int(ws.StatusProtocolError)}
	}
	return err
}

// check applies RFC 6455 and the size limit to a frame header, before any
// payload is read.
func (c *conn) check(h ws.Header) error {
	switch {
	case h.Rsv != 0, !h.Masked, h.OpCode > ws.OpPong, h.OpCode > ws.OpBinary && h.OpCode < ws.OpClose:
		return errClose{int(ws.StatusProtocolError)}
	case h.OpCode.IsControl() && (h.Length > 125 || !h.Fin):
		return errClose{int(ws.StatusProtocolError)}
	case h.Length > int64(c.maxFrame):
		return errClose{wire.CloseTooBig}
	}
	return nil
}

// control handles ping, pong and close; false ends the loop.
func (c *conn) control(sess *hub.Session, h ws.Header, payload []byte) bool {
	sess.Seen()
	switch h.OpCode {
	case ws.OpPing: // a hub worker answers: the reader never writes
		sess.Ping(payload)
	case ws.OpClose:
		code := wire.CloseNormal
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		if len(payload) == 1 || !validCloseCode(code) || !utf8.Valid(payload[min(2, len(payload)):]) {
			code = int(ws.StatusProtocolError)
		}
		c.Close(code)
		sess.EndedBy(code)
		c.drain(sess)
		return false
	}
	return true
}

func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// endWith ends the session after a read error: a timeout is a heartbeat
// failure (4408), an errClose carries its code, anything else means the
// peer is gone.
func (c *conn) endWith(sess *hub.Session, err error) {
	var ec errClose
	switch {
	case errors.As(err, &ec):
		c.fail(sess, ec.code)
	case c.closing.Load():
		sess.Ended()
		c.awaitHandoff()
	case isTimeout(err):
		sess.Close(wire.CloseHeartbeat)
		c.drain(sess)
	default:
		sess.Ended()
	}
}

// awaitHandoff waits, within closeFrameTimeout, for a write in progress
// (the write lock's holder) to end, so that a close frame Close handed
// off to it goes out before the reader closes the socket: the reader's
// deadline can fire just as Close sets closing, before Close extends it
// by closeGrace. The poller never waits: it closes a socket only after
// the grace, or once the peer is gone.
func (c *conn) awaitHandoff() {
	if !c.polled() && c.lock(time.Now().Add(closeFrameTimeout)) {
		c.unlock()
	}
}

// drain discards what the peer still sends until it ends or closeGrace
// (set by Close) passes.
func (c *conn) drain(sess *hub.Session) {
	sess.Ended()
	if c.polled() {
		return // the poller reads on until the peer ends or the grace passes
	}
	var b [512]byte
	for {
		if _, err := c.c.Read(b[:]); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
