package check_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// behavior is how a test server treats its connections.
type behavior struct {
	// keepAfterFIN is the incident: after the client's FIN the server stops
	// reading but never closes its side, so its socket sits in CLOSE_WAIT.
	keepAfterFIN bool
	noPongs      bool          // never answers pings
	idle         time.Duration // close with 4000 after this long without a data frame
	pingEvery    time.Duration // the server's own pings
	protocol     string        // subprotocol accepted when offered
}

// server is a WebSocket server on raw TCP and gobwas/ws, on a loopback :0
// port; one goroutine per connection (two with pingEvery).
type server struct {
	ln   net.Listener
	b    behavior
	quit chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex // guards following
	conns map[net.Conn]bool
	auth  []string // Authorization headers received
}

// startServer starts a server; it is closed when the test ends.
func startServer(tb testing.TB, b behavior) *server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{ln: ln, b: b, quit: make(chan struct{}), conns: map[net.Conn]bool{}}
	s.wg.Go(s.accept)
	tb.Cleanup(s.close)
	return s
}

func (s *server) url() string { return "ws://" + s.ln.Addr().String() + "/ws" }

func (s *server) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[nc] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(nc) })
	}
}

// close closes the listener and every connection and waits for the
// server's goroutines.
func (s *server) close() {
	close(s.quit)
	s.ln.Close()
	s.mu.Lock()
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) authHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

// wsConn is one server connection: frames are written under wmu.
type wsConn struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
}

func (c *wsConn) write(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return ws.WriteFrame(c.nc, ws.NewFrame(op, true, p))
}

func (s *server) serve(nc net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
	}()
	if !s.upgrade(nc) {
		return
	}
	c := &wsConn{nc: nc, br: bufio.NewReader(nc)}
	if s.b.pingEvery > 0 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { s.ping(c, stop) })
		defer func() { close(stop); wg.Wait() }()
	}
	s.readLoop(c)
}

func (s *server) upgrade(nc net.Conn) bool {
	u := ws.Upgrader{
		OnHeader: func(key, value []byte) error {
			if string(key) == "Authorization" {
				s.mu.Lock()
				s.auth = append(s.auth, string(value))
				s.mu.Unlock()
			}
			return nil
		},
		Protocol: func(p []byte) bool { return s.b.protocol != "" && string(p) == s.b.protocol },
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Upgrade(nc); err != nil {
		return false
	}
	_ = nc.SetDeadline(time.Time{})
	return true
}

func (s *server) ping(c *wsConn, stop chan struct{}) {
	t := time.NewTicker(s.b.pingEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if c.write(ws.OpPing, []byte("hb")) != nil {
				return
			}
		}
	}
}

// readLoop answers pings and close frames until the connection ends.
func (s *server) readLoop(c *wsConn) {
	lastData := time.Now()
	for {
		if s.b.idle > 0 {
			_ = c.nc.SetReadDeadline(lastData.Add(s.b.idle))
		}
		h, err := ws.ReadHeader(c.br)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			_ = c.write(ws.OpClose, ws.NewCloseFrameBody(4000, "idle timeout"))
			s.awaitEcho(c)
			return
		case errors.Is(err, io.EOF) && s.b.keepAfterFIN:
			<-s.quit // the bug: the socket stays open, in CLOSE_WAIT
			return
		case err != nil:
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			if !s.b.noPongs {
				_ = c.write(ws.OpPong, p)
			}
		case ws.OpClose:
			_ = c.write(ws.OpClose, p)
			return
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
			lastData = time.Now()
		}
	}
}

// awaitEcho reads until the client's close frame or a second passes.
func (s *server) awaitEcho(c *wsConn) {
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	for {
		f, err := ws.ReadFrame(c.br)
		if err != nil || f.Header.OpCode == ws.OpClose {
			return
		}
	}
}
