package client_test

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tetherpush/tether/wire"
)

// waitTimeout bounds every wait of a test for the client under test.
const waitTimeout = 5 * time.Second

// testServer is a tether stand-in on a loopback port: it upgrades
// connections with gobwas/ws and hands each to the test, which speaks the
// literal protocol v1 frames on it.
type testServer struct {
	ln       net.Listener
	url      string
	conns    chan *serverConn
	reject   atomic.Int32 // HTTP status refusing handshakes; 0 upgrades them
	accepted atomic.Int32 // upgraded connections
	refused  atomic.Int32 // refused handshakes
	wg       sync.WaitGroup
}

// serverConn is one upgraded connection, driven by the test goroutine.
type serverConn struct {
	conn     net.Conn
	path     string
	auth     string
	protocol string
}

// mustServer starts a test server; it stops when the test ends.
func mustServer(tb testing.TB) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	s := &testServer{ln: ln, url: "ws://" + ln.Addr().String(), conns: make(chan *serverConn, 16)}
	s.wg.Go(s.acceptLoop)
	tb.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
		close(s.conns)
		for sc := range s.conns {
			sc.conn.Close()
		}
	})
	return s
}

func (s *testServer) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.upgrade(conn)
	}
}

func (s *testServer) upgrade(conn net.Conn) {
	sc := &serverConn{conn: conn}
	u := ws.Upgrader{
		Protocol: func(p []byte) bool { return string(p) == wire.Subprotocol },
		OnRequest: func(uri []byte) error {
			sc.path = string(uri)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if strings.EqualFold(string(key), "Authorization") {
				sc.auth = string(value)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if status := s.reject.Load(); status != 0 {
				s.refused.Add(1) // before the client can read the answer
				return nil, ws.RejectConnectionError(ws.RejectionStatus(int(status)))
			}
			return nil, nil
		},
	}
	conn.SetDeadline(time.Now().Add(waitTimeout))
	hs, err := u.Upgrade(conn)
	conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return
	}
	sc.protocol = hs.Protocol
	s.accepted.Add(1)
	select {
	case s.conns <- sc:
	default:
		conn.Close()
	}
}

// accept returns the next upgraded connection.
func (s *testServer) accept(tb testing.TB) *serverConn {
	tb.Helper()
	select {
	case sc := <-s.conns:
		tb.Cleanup(func() { sc.conn.Close() })
		return sc
	case <-time.After(waitTimeout):
		tb.Fatalf("no connection within %v", waitTimeout)
		return nil
	}
}

// expectNoConn fails if a connection is upgraded or refused within d.
func (s *testServer) expectNoConn(tb testing.TB, d time.Duration) {
	tb.Helper()
	before := s.accepted.Load() + s.refused.Load()
	time.Sleep(d)
	if got := s.accepted.Load() + s.refused.Load(); got != before {
		tb.Fatalf("%d new connection attempts within %v, want none", got-before, d)
	}
}

func (sc *serverConn) write(tb testing.TB, op ws.OpCode, p []byte) {
	tb.Helper()
	sc.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := wsutil.WriteServerMessage(sc.conn, op, p); err != nil {
		tb.Fatalf("server write: %v", err)
	}
}

func (sc *serverConn) welcome(tb testing.TB, heartbeat time.Duration) {
	tb.Helper()
	sc.write(tb, ws.OpText, wire.EncodeWelcome(wire.Welcome{
		Device:       "pos-1",
		Groups:       []string{"shop-1"},
		Node:         "n1",
		HeartbeatMS:  heartbeat.Milliseconds(),
		AckTimeoutMS: 30000,
		MaxInflight:  256,
	}))
}

// send delivers message id with a small JSON body.
func (sc *serverConn) send(tb testing.TB, id string, attempt int) {
	tb.Helper()
	data := []byte(`{"order":"` + id + `"}`)
	sc.write(tb, ws.OpText, wire.AppendMessage(nil, id, "group:shop-1", data, time.Now(), attempt))
}

// closeWith sends a close frame with code and closes the connection.
func (sc *serverConn) closeWith(tb testing.TB, code int) {
	tb.Helper()
	body := ws.NewCloseFrameBody(ws.StatusCode(code), wire.CloseReason(code))
	sc.write(tb, ws.OpClose, body)
	sc.conn.Close()
}

// next returns the next frame from the client, unmasked, or an error after
// d without one.
func (sc *serverConn) next(d time.Duration) (ws.Frame, error) {
	sc.conn.SetReadDeadline(time.Now().Add(d))
	f, err := ws.ReadFrame(sc.conn)
	if err != nil {
		return f, err
	}
	if !f.Header.Masked {
		return f, errors.New("client frame is not masked")
	}
	return ws.UnmaskFrameInPlace(f), nil
}

// readAck returns the ids of the next ack frame, skipping pings and pongs.
func (sc *serverConn) readAck(tb testing.TB) []string {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		f, err := sc.next(time.Until(deadline))
		if err != nil {
			tb.Fatalf("waiting for an ack: %v", err)
		}
		if f.Header.OpCode != ws.OpText {
			continue
		}
		cf, err := wire.DecodeClient(f.Payload)
		if err != nil {
			tb.Fatalf("client frame %q: %v", f.Payload, err)
		}
		if cf.Type == wire.TypeAck {
			return cf.IDs
		}
	}
}

// expectNoAck fails if an ack frame arrives within d.
func (sc *serverConn) expectNoAck(tb testing.TB, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, err := sc.next(time.Until(deadline))
		if err != nil {
			return // deadline: nothing came
		}
		if f.Header.OpCode == ws.OpText {
			if cf, _ := wire.DecodeClient(f.Payload); cf.Type == wire.TypeAck {
				tb.Fatalf("got ack %q, want none", cf.IDs)
			}
		}
	}
}

// readUntil returns the first frame with opcode op, failing on a timeout.
func (sc *serverConn) readUntil(tb testing.TB, op ws.OpCode) ws.Frame {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		f, err := sc.next(time.Until(deadline))
		if err != nil {
			tb.Fatalf("waiting for opcode %v: %v", op, err)
		}
		if f.Header.OpCode == op {
			return f
		}
	}
}

// mustJSON encodes v for comparisons in failure messages.
func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
