package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tetherpush/tether/wire"
)

// closeTimeout bounds the close frame written as a session ends.
const closeTimeout = time.Second

// session is one WebSocket connection. Its reader goroutine is the only one
// reading conn; the goroutine running writeLoop is the only one writing it.
type session struct {
	c       *Client
	conn    net.Conn
	rd      *wsutil.Reader
	welcome chan wire.Welcome // reader → writer, once
	readErr chan error        // reader → writer, once, as the reader ends
	pongs   chan []byte       // reader → writer: payloads of server pings

	lastRead atomic.Int64 // unix nanoseconds of the latest frame received
}

// runSession dials, runs one session until it ends, and returns how long it
// was connected (0 if no welcome came) and why it ended.
func (c *Client) runSession(ctx context.Context) (time.Duration, error) {
	conn, src, err := c.dial(ctx)
	if err != nil {
		return 0, err
	}
	s := &session{
		c:       c,
		conn:    conn,
		welcome: make(chan wire.Welcome, 1),
		readErr: make(chan error, 1),
		pongs:   make(chan []byte, 4),
	}
	s.rd = &wsutil.Reader{
		Source:         src,
		State:          ws.StateClientSide,
		CheckUTF8:      true,
		MaxMessageSize: c.cfg.MaxFrameBytes,
		OnIntermediate: s.intermediate,
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		pprof.Do(sctx, pprof.Labels("tether", "client-reader"), func(ctx context.Context) {
			s.readErr <- s.readLoop(ctx)
		})
	})
	var connected time.Time
	err = s.writeLoop(sctx, &connected)
	s.end(ctx, err)
	cancel()
	conn.Close()
	wg.Wait()
	if connected.IsZero() {
		return 0, err
	}
	return time.Since(connected), err
}

// dial opens the connection and returns it with the reader to read frames
// from (buffered when the server wrote right after the handshake).
func (c *Client) dial(ctx context.Context) (net.Conn, io.Reader, error) {
	var retryAfter time.Duration
	d := ws.Dialer{
		Timeout:   c.cfg.HandshakeTimeout,
		Protocols: []string{wire.Subprotocol},
		Header:    ws.HandshakeHeaderHTTP(c.header),
		TLSConfig: c.cfg.TLSConfig,
		OnStatusError: func(_ int, _ []byte, resp io.Reader) {
			retryAfter = parseRetryAfter(resp)
		},
	}
	conn, br, _, err := d.Dial(ctx, c.url)
	if err != nil {
		var status ws.StatusError
		if errors.As(err, &status) {
			return nil, nil, &StatusError{Status: int(status), RetryAfter: retryAfter}
		}
		return nil, nil, fmt.Errorf("dial %s: %w", c.url, err)
	}
	if br != nil {
		return conn, br, nil
	}
	return conn, conn, nil
}

// parseRetryAfter reads the Retry-After header, in seconds, of a refused
// handshake; 0 when there is none.
func parseRetryAfter(resp io.Reader) time.Duration {
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return 0
	}
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// end writes the close frame that fits why the session ended: 1000 with
// the queued acks when the client closes, an echo of the server's close,
// 4408 on heartbeat timeout, the code of a protocol violation.
func (s *session) end(ctx context.Context, err error) {
	if ctx.Err() != nil {
		deadline := time.Now().Add(closeTimeout)
		if s.sendAcks(deadline, true) == nil {
			s.writeClose(wire.CloseNormal, "client closing")
		}
		return
	}
	var ce *CloseError
	var pe *protocolError
	var wpe ws.ProtocolError
	switch {
	case errors.As(err, &ce):
		code := ce.Code
		if code == int(ws.StatusNoStatusRcvd) {
			code = wire.CloseNormal
		}
		s.writeClose(code, "")
	case errors.Is(err, ErrHeartbeatTimeout):
		s.writeClose(wire.CloseHeartbeat, wire.CloseReason(wire.CloseHeartbeat))
	case errors.As(err, &pe):
		s.writeClose(pe.code, pe.msg)
	case errors.Is(err, wsutil.ErrMessageTooLarge), errors.Is(err, wsutil.ErrFrameTooLarge):
		s.writeClose(wire.CloseTooBig, wire.CloseReason(wire.CloseTooBig))
	case errors.Is(err, wsutil.ErrInvalidUTF8):
		s.writeClose(wire.CloseInvalidPayload, "invalid UTF-8")
	case errors.As(err, &wpe):
		s.writeClose(int(ws.StatusProtocolError), wpe.Error())
	}
}

// writeLoop waits for the welcome, then writes acks, pongs and pings until
// ctx is done, the reader ends or a write fails. connected is set when the
// welcome arrives.
func (s *session) writeLoop(ctx context.Context, connected *time.Time) error {
	w, err := s.awaitWelcome(ctx)
	if err != nil {
		return err
	}
	*connected = time.Now()
	s.c.setWelcome(w)
	s.c.state(StateConnected, nil)
	hb := heartbeat(w)
	tick := time.NewTicker(hb / 4)
	defer tick.Stop()
	batch := time.NewTimer(time.Hour)
	batch.Stop()
	defer batch.Stop()
	armed := false
	var lastPing time.Time
	acks := s.c.acks
	select { // acks left over from the previous session take the usual path
	case acks.notify <- struct{}{}:
	default:
	}
	for {
		select {
		case <-ctx.Done():
			return ErrClosed
		case err := <-s.readErr:
			return err
		case p := <-s.pongs:
			err = s.write(s.writeDeadline(), ws.OpPong, p)
		case <-acks.notify:
			// Full frames go now; the rest waits for the batch timer.
			if acks.len() >= s.c.cfg.AckMax {
				err = s.sendAcks(s.writeDeadline(), false)
			}
			if acks.len() > 0 && !armed {
				batch.Reset(s.c.cfg.AckBatch)
				armed = true
			}
		case <-batch.C:
			armed = false
			err = s.sendAcks(s.writeDeadline(), true)
		case now := <-tick.C:
			if now.Sub(s.lastReadTime()) >= hb && now.Sub(lastPing) >= hb {
				lastPing = now
				err = s.write(s.writeDeadline(), ws.OpText, wire.Ping)
			}
		}
		if err != nil {
			return err
		}
	}
}

// awaitWelcome waits for the reader to get the welcome frame, answering
// server pings meanwhile. The reader's deadline bounds the wait.
func (s *session) awaitWelcome(ctx context.Context) (wire.Welcome, error) {
	for {
		select {
		case <-ctx.Done():
			return wire.Welcome{}, ErrClosed
		case err := <-s.readErr:
			select {
			case w := <-s.welcome: // a session that ended right after its welcome still began
				s.readErr <- err
				return w, nil
			default:
				return wire.Welcome{}, err
			}
		case w := <-s.welcome:
			return w, nil
		case p := <-s.pongs:
			if err := s.write(s.writeDeadline(), ws.OpPong, p); err != nil {
				return wire.Welcome{}, err
			}
		}
	}
}

// sendAcks sends the queued ids, AckMax per frame, by deadline: all of them,
// or only full frames. Ids of a frame that fails to go out are not queued
// again: the server redelivers them and the de-duplication set acks them.
func (s *session) sendAcks(deadline time.Time, all bool) error {
	if n := s.c.acks.takeDropped(); n > 0 {
		s.c.log.Warn("tether ack queue full, oldest acks dropped", "dropped", n)
	}
	for {
		if !all && s.c.acks.len() < s.c.cfg.AckMax {
			return nil
		}
		ids := s.c.acks.take(s.c.cfg.AckMax)
		if len(ids) == 0 {
			return nil
		}
		if err := s.write(deadline, ws.OpText, wire.EncodeAck(ids)); err != nil {
			return err
		}
	}
}

// writeDeadline is the deadline of a frame written now.
func (s *session) writeDeadline() time.Time {
	return time.Now().Add(s.c.cfg.WriteTimeout)
}

// write sends one frame, masked as a client must, by deadline.
func (s *session) write(deadline time.Time, op ws.OpCode, p []byte) error {
	if err := s.conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := wsutil.WriteClientMessage(s.conn, op, p); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// writeClose sends a close frame, best effort, within closeTimeout.
func (s *session) writeClose(code int, reason string) {
	if len(reason) > 123 {
		reason = reason[:123] // a control frame holds 125 bytes
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(closeTimeout)); err != nil {
		return
	}
	body := ws.NewCloseFrameBody(ws.StatusCode(code), reason)
	_ = wsutil.WriteClientMessage(s.conn, ws.OpClose, body)
}

func (s *session) lastReadTime() time.Time {
	return time.Unix(0, s.lastRead.Load())
}

// heartbeat returns the server heartbeat a welcome announces.
func heartbeat(w wire.Welcome) time.Duration {
	if w.HeartbeatMS <= 0 {
		return DefaultHeartbeat
	}
	return time.Duration(w.HeartbeatMS) * time.Millisecond
}

// readLoop reads frames until the connection fails or closes: the welcome
// first, then messages into the client's inbox. Before the welcome the read
// deadline is HandshakeTimeout; after it, 2 × heartbeat.
func (s *session) readLoop(ctx context.Context) error {
	p, err := s.readText(s.c.cfg.HandshakeTimeout)
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	w, err := decodeWelcome(p)
	if err != nil {
		return err
	}
	s.welcome <- w
	timeout := 2 * heartbeat(w)
	for {
		p, err := s.readText(timeout)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrHeartbeatTimeout
		}
		if err != nil {
			return err
		}
		f, err := decodeServer(p)
		if err != nil {
			return err
		}
		if err := s.dispatch(ctx, &f); err != nil {
			return err
		}
	}
}

// dispatch acts on one server frame after the welcome.
func (s *session) dispatch(ctx context.Context, f *wire.ServerFrame) error {
	switch f.Type {
	case wire.TypeMessage:
		if f.ID == "" {
			return protoErrorf(wire.ClosePolicyViolation, "message frame without id")
		}
		m := Message{ID: f.ID, Target: f.Target, Data: f.Data, PublishedAt: f.PublishedAt, Attempt: f.Attempt}
		select {
		case s.c.inbox <- m:
		case <-ctx.Done():
			return ctx.Err()
		}
	case wire.TypeError:
		s.c.log.Warn("tether server error", "code", f.Code, "message", f.Message)
	case wire.TypePong:
	default:
		// A newer server may send frames this client does not know.
		s.c.log.Debug("tether frame ignored", "type", f.Type)
	}
	return nil
}

// decodeWelcome decodes the first frame of a session, which must be a welcome.
func decodeWelcome(p []byte) (wire.Welcome, error) {
	f, err := decodeServer(p)
	if err != nil {
		return wire.Welcome{}, err
	}
	if f.Type != wire.TypeWelcome {
		return wire.Welcome{}, protoErrorf(wire.ClosePolicyViolation, "first frame is %q, want %q", f.Type, wire.TypeWelcome)
	}
	return wire.Welcome{
		Type:         f.Type,
		Device:       f.Device,
		Groups:       f.Groups,
		Node:         f.Node,
		HeartbeatMS:  f.HeartbeatMS,
		AckTimeoutMS: f.AckTimeoutMS,
		MaxInflight:  f.MaxInflight,
	}, nil
}

// decodeServer decodes a server frame: one JSON object with a type.
func decodeServer(p []byte) (wire.ServerFrame, error) {
	var f wire.ServerFrame
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return f, protoErrorf(wire.CloseInvalidPayload, "server frame is not a JSON object")
	}
	if err := json.Unmarshal(p, &f); err != nil {
		return f, protoErrorf(wire.CloseInvalidPayload, "server frame: %v", err)
	}
	if f.Type == "" {
		return f, protoErrorf(wire.ClosePolicyViolation, "server frame without type")
	}
	return f, nil
}

// readText returns the payload of the next text message, handling control
// frames on the way. Every frame must start within timeout.
func (s *session) readText(timeout time.Duration) ([]byte, error) {
	for {
		if err := s.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, err
		}
		hdr, err := s.rd.NextFrame()
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		s.lastRead.Store(time.Now().UnixNano())
		p, err := io.ReadAll(s.rd)
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		switch {
		case hdr.OpCode.IsControl():
			if err := s.control(hdr.OpCode, p); err != nil {
				return nil, err
			}
		case hdr.OpCode == ws.OpText:
			return p, nil
		default:
			return nil, protoErrorf(wire.CloseUnsupported, "binary frame")
		}
	}
}

// intermediate handles a control frame between fragments of a message.
func (s *session) intermediate(hdr ws.Header, r io.Reader) error {
	p, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return s.control(hdr.OpCode, p)
}

// control handles a control frame: a ping is answered by the writer, a
// close ends the session with a *CloseError.
func (s *session) control(op ws.OpCode, p []byte) error {
	switch op {
	case ws.OpPing:
		select {
		case s.pongs <- p:
		default: // pongs are already waiting; one answers them all
		}
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		if code.Empty() {
			code = ws.StatusNoStatusRcvd
		}
		return &CloseError{Code: int(code), Reason: reason}
	}
	return nil
}
