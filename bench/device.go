package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/token"
	"github.com/tetherpush/tether/wire"
)

// Limits of one device connection.
const (
	connectTimeout = 15 * time.Second // dial, handshake and welcome
	writeTimeout   = 2 * time.Second  // one ack, pong or close frame
	maxServerFrame = 8 << 20          // larger frames end the connection
	readBufferSize = 4 << 10
	closeWait      = 2 * time.Second // for the node's close frame after ours
	minBackoff     = 250 * time.Millisecond
	maxBackoff     = 5 * time.Second
)

// device is one simulated device: a connection that reconnects when the
// node ends it, acks what it receives and remembers which messages of its
// group it has had.
type device struct {
	w     *worker
	index int
	id    string
	group int
	local netip.Addr

	wmu     sync.Mutex // guards following: writes and the ack queue
	conn    net.Conn   // nil while not connected
	acks    []string   // ids to ack
	queued  bool       // on the worker's ack queue
	closing bool       // the bench closes the connection; do not reconnect

	mu        sync.Mutex // guards following
	seen      seqSet
	online    bool          // a session is open
	addressed bool          // online when publishing began
	worst     time.Duration // the highest delivery latency of a first receipt
}

// session is one connection of a device.
type session struct {
	c         net.Conn
	r         *bufio.Reader
	heartbeat time.Duration
	buf       []byte // frame payloads
	msg       []byte // a fragmented message being assembled
}

// run connects the device, then serves its connections until ctx ends or
// the bench closes it, reconnecting with backoff whenever the node ends a
// connection. first is called once the first connect has been tried.
func (d *device) run(ctx context.Context, first func(ok bool)) {
	start := time.Now()
	s, err := d.connect(ctx)
	first(err == nil)
	if err != nil {
		if ctx.Err() == nil {
			d.w.connectFailed(err)
		}
		return
	}
	d.w.connected(time.Since(start))
	backoff := minBackoff
	for {
		code, err := d.serve(s)
		if d.isClosing() || ctx.Err() != nil {
			return
		}
		d.w.disconnected(code, err)
		for {
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, maxBackoff)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if s, err = d.connect(ctx); err == nil {
				d.w.reconnected()
				backoff = minBackoff
				break
			}
			if ctx.Err() != nil {
				return
			}
			d.w.connectionError(err)
		}
	}
}

// connect dials from the device's source address, upgrades and waits for
// the welcome frame.
func (d *device) connect(ctx context.Context) (*session, error) {
	claims := token.Claims{Device: d.id, Groups: []string{GroupID(d.group)}, ExpiresAt: time.Now().Add(d.w.job.TokenTTL)}
	if d.w.job.Direct {
		claims.Groups = nil // its own log only
	}
	tok, err := token.Sign(d.w.secret, claims)
	if err != nil {
		return nil, err
	}
	var status string
	local := &net.TCPAddr{IP: d.local.AsSlice()}
	dialer := ws.Dialer{
		Timeout:   connectTimeout,
		Protocols: []string{wire.Subprotocol},
		Header:    ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}}),
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: local}
			return nd.DialContext(ctx, network, addr)
		},
		OnStatusError: func(code int, reason []byte, resp io.Reader) {
			body, _ := io.ReadAll(io.LimitReader(resp, 512))
			status = fmt.Sprintf("%d %s: %s", code, reason, bytes.TrimSpace(body))
		},
	}
	c, br, _, err := dialer.Dial(ctx, d.w.job.WSURL)
	if err != nil {
		if status != "" {
			err = fmt.Errorf("%w (%s)", err, status)
		}
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(c, readBufferSize)
	}
	s := &session{c: c, r: br}
	if err := d.welcome(s); err != nil {
		_ = c.Close()
		return nil, err
	}
	d.wmu.Lock()
	closing := d.closing
	if !closing {
		d.conn = c
	}
	d.wmu.Unlock()
	if closing {
		_ = c.Close()
		return nil, context.Canceled
	}
	d.mu.Lock()
	d.online = true
	d.mu.Unlock()
	d.w.count.open.Add(1)
	return s, nil
}

// welcome reads the first text frame of a session, which must be the
// welcome, answering pings meanwhile.
func (d *device) welcome(s *session) error {
	_ = s.c.SetDeadline(time.Now().Add(connectTimeout))
	defer s.c.SetDeadline(time.Time{})
	for {
		h, p, err := s.readFrame()
		if err != nil {
			return fmt.Errorf("waiting for the welcome: %w", err)
		}
		switch h.OpCode {
		case ws.OpPing:
			if _, err := s.c.Write(clientFrame(ws.OpPong, p)); err != nil {
				return err
			}
			continue
		case ws.OpClose:
			return fmt.Errorf("closed before the welcome: %s", closeText(p))
		case ws.OpText:
		default:
			return fmt.Errorf("unexpected %v frame before the welcome", h.OpCode)
		}
		f, err := parseFrame(p)
		if err != nil {
			return fmt.Errorf("welcome: %w", err)
		}
		if f.Type != wire.TypeWelcome {
			return fmt.Errorf("first frame is %q (%s %s), want welcome", f.Type, f.Code, f.Message)
		}
		var w wire.ServerFrame
		if err := json.Unmarshal(p, &w); err == nil && w.HeartbeatMS > 0 {
			s.heartbeat = time.Duration(w.HeartbeatMS) * time.Millisecond
		}
		return nil
	}
}

// serve reads the connection until it ends and returns the node's close
// code (0 when none came) and the error that ended it.
func (d *device) serve(s *session) (code int, err error) {
	defer func() {
		d.wmu.Lock()
		d.conn = nil
		d.wmu.Unlock()
		d.mu.Lock()
		d.online = false
		d.mu.Unlock()
		d.w.count.open.Add(-1)
		_ = s.c.Close()
	}()
	idle := 2*max(s.heartbeat, time.Second) + 10*time.Second
	var deadline time.Time
	for {
		if now := time.Now(); deadline.Sub(now) < idle/2 {
			deadline = now.Add(idle)
			_ = s.c.SetReadDeadline(deadline)
		}
		h, p, err := s.readFrame()
		if err != nil {
			return 0, err
		}
		switch h.OpCode {
		case ws.OpPing:
			d.write(clientFrame(ws.OpPong, p))
		case ws.OpClose:
			code = wire.CloseNormal
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			if !d.isClosing() { // answer the node's close
				d.write(clientFrame(ws.OpClose, p[:min(len(p), 2)]))
			}
			return code, nil
		case ws.OpText, ws.OpContinuation:
			if msg, done := s.assemble(h, p); done {
				d.received(msg)
			}
		case ws.OpBinary:
			return 0, errors.New("binary frame from the node")
		}
	}
}

// readFrame reads one frame; its payload aliases s.buf.
func (s *session) readFrame() (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(s.r)
	if err != nil {
		return h, nil, err
	}
	if h.Length > maxServerFrame {
		return h, nil, fmt.Errorf("frame of %d bytes from the node", h.Length)
	}
	if int64(cap(s.buf)) < h.Length {
		s.buf = make([]byte, h.Length)
	}
	p := s.buf[:h.Length]
	if _, err := io.ReadFull(s.r, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return h, p, nil
}

// assemble joins fragmented text messages; done is false while one is
// incomplete.
func (s *session) assemble(h ws.Header, p []byte) (msg []byte, done bool) {
	if h.OpCode == ws.OpText && h.Fin && s.msg == nil {
		return p, true
	}
	s.msg = append(s.msg, p...)
	if !h.Fin {
		return nil, false
	}
	msg, s.msg = s.msg, nil
	return msg, true
}

// received handles one text message.
func (d *device) received(b []byte) {
	now := time.Now()
	f, err := parseFrame(b)
	if err != nil {
		d.w.connectionError(fmt.Errorf("undecodable frame: %w", err))
		return
	}
	switch f.Type {
	case wire.TypeMessage:
	case wire.TypeError:
		d.w.connectionError(fmt.Errorf("error frame %s: %s", f.Code, f.Message))
		return
	default:
		return
	}
	c := &d.w.count
	c.received.Add(1)
	if f.Attempt > 1 {
		c.redelivered.Add(1)
	}
	p, ok := parsePayload(f.Data)
	switch {
	case !ok || p.G != d.group:
		c.foreign.Add(1)
	case p.Run != d.w.job.Run:
		c.stale.Add(1)
	default:
		lat := now.Sub(f.PublishedAt)
		d.mu.Lock()
		had := d.seen.add(p.S)
		if !had {
			d.worst = max(d.worst, lat)
		}
		d.mu.Unlock()
		if had {
			c.duplicates.Add(1)
		} else {
			c.delivered.Add(1)
			d.w.delivered(p.G, p.S, f.ID, lat)
		}
	}
	d.ack(f.ID)
}

// ack queues id; a full frame goes at once, others wait up to AckDelay
// for company (like the Go SDK).
func (d *device) ack(id string) {
	d.wmu.Lock()
	d.acks = append(d.acks, id)
	if len(d.acks) >= AckMax {
		d.flushLocked()
	} else if !d.queued {
		d.queued = true
		d.w.acks.push(d)
	}
	d.wmu.Unlock()
}

// flushAcks writes the queued acks.
func (d *device) flushAcks() {
	d.wmu.Lock()
	d.flushLocked()
	d.wmu.Unlock()
}

// flushLocked writes the queued ids in one ack frame. Ids queued while
// the device is not connected are dropped: the node redelivers them.
func (d *device) flushLocked() {
	ids := d.acks
	d.acks, d.queued = nil, false
	if len(ids) == 0 || d.conn == nil {
		return
	}
	if d.writeLocked(clientFrame(ws.OpText, wire.EncodeAck(ids))) {
		d.w.count.acked.Add(int64(len(ids)))
		d.w.count.ackFrames.Add(1)
	}
}

// write writes one frame if the device is connected.
func (d *device) write(frame []byte) {
	d.wmu.Lock()
	d.writeLocked(frame)
	d.wmu.Unlock()
}

// writeLocked writes frame within writeTimeout; a failed write ends the
// connection (its reader then sees the error).
func (d *device) writeLocked(frame []byte) bool {
	if d.conn == nil {
		return false
	}
	_ = d.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := d.conn.Write(frame); err != nil {
		_ = d.conn.Close()
		return false
	}
	return true
}

// shutdown starts the bench's close of the device's connection: acks are
// flushed, a close frame (1000) goes out and the reader waits closeWait
// at most for the node's.
func (d *device) shutdown() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closing {
		return
	}
	d.flushLocked()
	d.closing = true
	if d.conn == nil {
		return
	}
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "")
	d.writeLocked(clientFrame(ws.OpClose, body))
	_ = d.conn.SetReadDeadline(time.Now().Add(closeWait))
}

// kill resets the connection at once (SO_LINGER 0): for connections whose
// reader did not end after shutdown.
func (d *device) kill() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.closing = true
	if d.conn == nil {
		return
	}
	if tc, ok := d.conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = d.conn.Close()
}

func (d *device) isClosing() bool {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.closing
}

// clientFrame returns a masked client frame holding p.
func clientFrame(op ws.OpCode, p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	var b bytes.Buffer
	b.Grow(ws.HeaderSize(h) + len(p))
	_ = ws.WriteHeader(&b, h)
	n := b.Len()
	b.Write(p)
	out := b.Bytes()
	ws.Cipher(out[n:], h.Mask, 0)
	return out
}

// closeText describes a close frame's payload.
func closeText(p []byte) string {
	if len(p) < 2 {
		return "close frame without a code"
	}
	code := int(binary.BigEndian.Uint16(p))
	if r := string(p[2:]); r != "" {
		return strconv.Itoa(code) + " " + r
	}
	return strconv.Itoa(code)
}
