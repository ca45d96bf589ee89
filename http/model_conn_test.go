package http_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"pgregory.net/rapid"

	"github.com/tetherpush/tether/internal/nodetest"
)

// ---- connections

// mconn is one device connection; a goroutine reads it, answering pings
// and echoing a close frame, and queues the text frames for the model,
// which checks them in order in pump.
type mconn struct {
	id    int
	dev   *mdev
	epoch int
	c     net.Conn
	r     io.Reader

	wmu        sync.Mutex
	mu         sync.Mutex // guards following
	fs         []nodetest.Frame
	code       int      // close code received; 0: none
	afterClose []string // frames after the close frame
	err        error    // read error that ended the reader
	sent       bool     // the client sent a close frame

	arrived   chan struct{}
	done      chan struct{}
	lastWrite atomic.Int64 // unix nanoseconds of the last frame written
	endedAt   atomic.Int64 // unix nanoseconds when the reader ended

	// the model's view, used by the test goroutine only
	next        int
	pongs       int
	lastPong    int
	outstanding map[string]bool      // received here and not acked by the client
	ackedHere   map[string]bool      // acked on this connection
	lastAttempt map[string]int       // per message id
	recvAt      map[string]time.Time // when the model saw the last attempt
}

func (c *mconn) read() {
	defer close(c.done)
	defer func() { c.endedAt.Store(time.Now().UnixNano()) }()
	defer c.c.Close()
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.signal()
			return
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = c.write(ws.NewPongFrame(f.Payload))
		case ws.OpPong:
		case ws.OpClose:
			c.mu.Lock()
			c.code = nodetest.CloseCode(f.Payload)
			echo := !c.sent
			c.mu.Unlock()
			if echo {
				_ = c.write(ws.NewCloseFrame(f.Payload[:min(2, len(f.Payload))]))
			}
			c.readAfterClose()
			c.signal()
			return
		default:
			var fr nodetest.Frame
			if err := json.Unmarshal(f.Payload, &fr); err != nil || f.Header.OpCode != ws.OpText {
				fr = nodetest.Frame{Type: "!invalid", Message: fmt.Sprintf("opcode %v payload %q", f.Header.OpCode, f.Payload)}
			}
			c.mu.Lock()
			c.fs = append(c.fs, fr)
			c.mu.Unlock()
			c.signal()
		}
	}
}

// readAfterClose reads on until the server ends the connection: after its
// close frame it must send nothing more (RFC 6455 section 5.5.1).
func (c *mconn) readAfterClose() {
	_ = c.c.SetReadDeadline(time.Now().Add(mWait))
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.afterClose = append(c.afterClose, fmt.Sprintf("%v %q", f.Header.OpCode, f.Payload))
		c.mu.Unlock()
	}
}

func (c *mconn) signal() {
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

func (c *mconn) write(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.lastWrite.Store(time.Now().UnixNano())
	_ = c.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return ws.WriteFrame(c.c, ws.MaskFrame(f))
}

func (c *mconn) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// send writes one JSON text frame on c.
func (m *model) send(c *mconn, v any) {
	b, _ := json.Marshal(v)
	if err := c.write(ws.NewTextFrame(b)); err != nil {
		select {
		case <-c.done: // the server ended it: pump says why
			m.pump()
		case <-time.After(mWait):
		}
		m.t.Fatalf("%s: send %s on connection %d: %v", c.dev.name, b, c.id, err)
	}
}

// connect dials device d with a token naming groups. The token's groups are
// members before the welcome; a live connection of d must be replaced with
// close 4409.
func (m *model) connect(d *mdev, groups []string) {
	old := d.conn
	m.t.Logf("connect %s groups %v (takeover: %v)", d.name, groups, old != nil)
	fails := m.fs.Failures()
	dev, status, _, err := m.dial(d.name, groups)
	for deadline := time.Now().Add(mWait); err != nil && status == 503 && (m.fs.Failures() > fails || m.outage()) && time.Now().Before(deadline); {
		m.t.Logf("connect %s: 503 after a store call failed, retry", d.name)
		time.Sleep(100 * time.Millisecond)
		dev, status, _, err = m.dial(d.name, groups)
	}
	if err != nil {
		m.t.Fatalf("dial %s: status %d: %v", d.name, status, err)
	}
	c := &mconn{
		id: len(m.conns), dev: d, epoch: m.tick(), c: dev.Conn, r: dev.Reader(),
		arrived: make(chan struct{}, 1), done: make(chan struct{}),
		outstanding: map[string]bool{}, ackedHere: map[string]bool{},
		lastAttempt: map[string]int{}, recvAt: map[string]time.Time{},
	}
	m.conns = append(m.conns, c)
	go c.read()
	m.waitFor(c, "welcome", func() bool { return c.next > 0 })
	c.mu.Lock()
	w := c.fs[0]
	c.mu.Unlock()
	if !slices.Equal(w.Groups, groups) && len(w.Groups)+len(groups) > 0 {
		m.t.Fatalf("%s: welcome groups %v, token groups %v", d.name, w.Groups, groups)
	}
	for _, g := range groups {
		m.members[g][d.name] = true
	}
	d.conn = c
	if old != nil {
		m.st.takeovers.Add(1)
		m.expectEnd(old, 4409, "takeover")
	}
}

// expectEnd waits for the server to end c with a close frame carrying code
// (0: no close frame, the socket just ends) and retires c.
func (m *model) expectEnd(c *mconn, code int, why string) {
	select {
	case <-c.done:
	case <-time.After(mWait):
		m.t.Fatalf("%s: connection %d of %s still open %v after %s", c.dev.name, c.id, c.dev.name, mWait, why)
	}
	m.pumpConn(c, false)
	c.mu.Lock()
	got, err, after := c.code, c.err, c.afterClose
	c.mu.Unlock()
	if len(after) > 0 {
		m.t.Fatalf("%s: connection %d: frames after the close frame %d: %v", c.dev.name, c.id, got, after)
	}
	if got != code {
		m.t.Fatalf("%s: connection %d ended with close code %d (read error %v) after %s, want %d", c.dev.name, c.id, got, err, why, code)
	}
	m.retire(c)
}

func (m *model) retire(c *mconn) {
	if c.dev.conn == c {
		c.dev.conn = nil
	}
}

// disconnect ends a live connection from the client side.
func (m *model) disconnect() {
	m.disconnectConn(m.drawLive("disconnect").conn, m.drawHow())
}

func (m *model) drawHow() string {
	return rapid.SampledFrom([]string{"close", "fin-wait", "fin", "rst"}).Draw(m.t, "how")
}

func (m *model) disconnectConn(c *mconn, how string) {
	d := c.dev
	m.t.Logf("disconnect %s (connection %d): %s", d.name, c.id, how)
	m.retire(c)
	switch how {
	case "close": // close handshake: the server echoes 1000
		c.mu.Lock()
		c.sent = true
		c.mu.Unlock()
		outage, fails := m.outage(), m.fs.Failures()
		if err := c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))); err != nil {
			m.t.Fatalf("%s: write close: %v", d.name, err)
		}
		m.expectEnd(c, 1000, "the client's close frame")
		ep := m.tick()
		for id := range c.ackedHere {
			del := d.ds[id]
			del.readEp, del.readFails, del.readOutage = ep, fails, outage || m.outage()
		}
	case "fin-wait": // half-close: the server must close its side (rule 3)
		start := time.Now()
		if err := c.c.(*net.TCPConn).CloseWrite(); err != nil {
			m.t.Fatalf("%s: CloseWrite: %v", d.name, err)
		}
		m.expectEnd(c, 0, "the client's FIN")
		if el := time.Since(start); el > 2*time.Second {
			m.t.Fatalf("%s: server closed its side %v after the client's FIN, want about 1s at most", d.name, el)
		}
	case "fin":
		c.c.Close()
	case "rst":
		_ = c.c.(*net.TCPConn).SetLinger(0)
		c.c.Close()
	}
}

// ---- frames and the invariants checked on each

// pump checks every frame received so far, connection by connection in dial
// order (which is the order the server wrote them in), and fails on any
// connection the server ended unasked.
func (m *model) pump() {
	for _, c := range m.conns {
		m.pumpConn(c, false)
		if c.dev.conn == c && c.ended() {
			c.mu.Lock()
			code, err := c.code, c.err
			c.mu.Unlock()
			gap := time.Duration(c.endedAt.Load() - c.lastWrite.Load())
			m.t.Fatalf("%s: the server ended connection %d unasked: close code %d, read error %v; the client last wrote (a pong, ack or ping) %v before", c.dev.name, c.id, code, err, gap)
		}
	}
}

// pumpConn checks c's new frames; with untilPong it stops after the first
// pong and reports whether it saw one.
func (m *model) pumpConn(c *mconn, untilPong bool) bool {
	for {
		c.mu.Lock()
		if c.next >= len(c.fs) {
			c.mu.Unlock()
			return false
		}
		f, idx := c.fs[c.next], c.next
		c.next++
		c.mu.Unlock()
		m.checkFrame(c, idx, f)
		if f.Type == "pong" && untilPong {
			return true
		}
	}
}

func (m *model) checkFrame(c *mconn, idx int, f nodetest.Frame) {
	d := c.dev
	if idx == 0 {
		if f.Type != "welcome" || f.Device != d.name {
			m.t.Fatalf("%s: first frame of connection %d is %+v, want a welcome", d.name, c.id, f)
		}
		return
	}
	switch f.Type {
	case "message":
		m.checkMessage(c, idx, f)
	case "pong":
		c.pongs++
		c.lastPong = idx
	default:
		m.t.Fatalf("%s: unexpected frame on connection %d: %+v", d.name, c.id, f)
	}
}

// checkMessage applies the invariants to one message frame:
//   - every message a device gets was addressed to it, with its target and
//     data (no phantom, no mix-up; duplicates of a publish are one message),
//     or is one whose publish answered 503 (then the store holds it);
//   - the attempt numbers of a delivery are unique across connections (but
//     for those a crash lost: sends are committed in the background) and
//     increase on one connection;
//   - an ack the server processed (pong after it) is never resent on that
//     connection; an ack known durable (see the top of the file) is never
//     resent on a later connection, across restarts;
//   - first deliveries (attempt 1) of one target arrive in publish order;
//   - at most --max-inflight deliveries the client has not acked are
//     outstanding on a connection.
func (m *model) checkMessage(c *mconn, idx int, f nodetest.Frame) {
	d := c.dev
	m.st.frames.Add(1)
	del := d.ds[f.ID]
	if del == nil && m.byID[f.ID] == nil {
		del = m.adoptArrival(d, f)
	}
	if del == nil {
		m.t.Fatalf("%s: message %s (target %s, data %s) on connection %d was never addressed to it", d.name, f.ID, f.Target, f.Data, c.id)
	}
	mm := del.msg
	if f.Target != mm.target || string(f.Data) != mm.data {
		m.t.Fatalf("%s: message %s is target %s data %s, published as %s %s", d.name, f.ID, f.Target, f.Data, mm.target, mm.data)
	}
	if f.Attempt < 1 || del.attempts[f.Attempt] {
		m.t.Fatalf("%s: message %s attempt %d on connection %d: attempts seen before %v", d.name, f.ID, f.Attempt, c.id, del.attempts)
	}
	if prev, ok := c.lastAttempt[f.ID]; ok && f.Attempt <= prev {
		m.t.Fatalf("%s: message %s attempt %d after attempt %d on connection %d", d.name, f.ID, f.Attempt, prev, c.id)
	}
	if del.received > 0 {
		m.st.redeliveries.Add(1)
	}
	del.attempts[f.Attempt] = true
	del.maxAttempt = max(del.maxAttempt, f.Attempt)
	del.received++
	c.lastAttempt[f.ID] = f.Attempt
	c.recvAt[f.ID] = time.Now()

	switch {
	case del.processedOn == c && idx > del.processedAt:
		m.t.Fatalf("%s: message %s resent (attempt %d) on connection %d after the server answered a ping sent after its ack", d.name, f.ID, f.Attempt, c.id)
	case del.storedEp > 0 && c.epoch > del.storedEp:
		m.t.Fatalf("%s: message %s resent (attempt %d) on connection %d, dialled after its ack was durable (%s)", d.name, f.ID, f.Attempt, c.id, del.stored)
	case del.readEp > 0 && c.epoch > del.readEp:
		m.st.redeliveredAfterAck.Add(1)
		m.st.flushRaces.Add(1)
		if *modelStrict {
			m.t.Fatalf("%s: message %s resent (attempt %d) on connection %d, dialled after the server read its ack", d.name, f.ID, f.Attempt, c.id)
		}
		m.t.Logf("%s: message %s resent on connection %d although the server read its ack", d.name, f.ID, c.id)
	case del.ackSent:
		m.st.redeliveredAfterAck.Add(1)
	}

	if f.Attempt == 1 && !mm.unordered {
		if last, ok := d.lastFirst[mm.target]; ok && mm.seq < last {
			m.t.Fatalf("%s: first delivery of message #%d (%s) of %s after the first delivery of message #%d", d.name, mm.seq, f.ID, mm.target, last)
		}
		d.lastFirst[mm.target] = mm.seq
	}

	if !del.ackSent {
		c.outstanding[f.ID] = true
	}
	n := 0
	for id := range c.outstanding {
		if d.ds[id].ackSent {
			delete(c.outstanding, id)
		} else {
			n++
		}
	}
	if n > mMaxInflight {
		m.t.Fatalf("%s: %d unacked deliveries outstanding on connection %d, --max-inflight is %d: %v", d.name, n, c.id, mMaxInflight, c.outstanding)
	}
}

// waitFor pumps c until cond holds, failing after mWait.
func (m *model) waitFor(c *mconn, what string, cond func() bool) {
	deadline := time.Now().Add(mWait)
	for {
		m.pumpConn(c, false)
		if cond() {
			return
		}
		if c.ended() {
			m.pumpConn(c, false)
			if cond() {
				return
			}
			c.mu.Lock()
			code, err := c.code, c.err
			c.mu.Unlock()
			m.t.Fatalf("%s: connection %d ended (close code %d, read error %v) while waiting for %s", c.dev.name, c.id, code, err, what)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			m.t.Fatalf("%s: no %s on connection %d within %v", c.dev.name, what, c.id, mWait)
		}
		select {
		case <-c.arrived:
		case <-time.After(min(wait, 50*time.Millisecond)):
		}
	}
}
