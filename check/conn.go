package check

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/wire"
)

// Sizes of a connection.
const (
	readBufferSize = 1024     // the reader's buffer
	outQueue       = 16       // control answers queued for the writer
	maxSamples     = 256      // latency samples kept per connection and kind
	maxPending     = 1024     // unanswered pings per connection; then pinging stops
	maxWelcome     = 64 << 10 // largest first text frame read as a tether welcome
	maxReason      = 123      // a close reason's bytes (RFC 6455 section 5.5)
	closeReason    = "tether check"
)

// probeKind is how a connection ends its side after the hold.
type probeKind int

const (
	probeNone  probeKind = iota
	probeClose           // a close frame (1000)
	probeFIN             // TCP half-close, no close frame
)

// outFrame is a control frame the reader asks the writer to send.
type outFrame struct {
	op      ws.OpCode // ws.OpPong or ws.OpClose
	payload []byte
}

// conn is one client connection under test. Its reader goroutine reads
// every frame and records what the server does; its writer goroutine owns
// the write side: pings during the hold, the answers the reader queues, the
// probe. Neither holds mu across I/O.
type conn struct {
	nc       net.Conn
	tcp      *net.TCPConn // the socket under nc
	br       *bufio.Reader
	timeout  time.Duration
	upAt     time.Time     // when the handshake completed
	protocol string        // the subprotocol the server accepted
	key      sockKey       // the socket's addresses, to find it in /proc/net/tcp
	out      chan outFrame // reader → writer
	hold     chan holdPlan
	probe    chan probeKind
	quit     chan struct{} // closed by stop: the writer returns

	readerDone chan struct{}
	writerDone chan struct{}

	mu sync.Mutex // guards following
	st connState
}

// connState is what a connection saw; conn.mu guards it.
type connState struct {
	seq        uint64
	pending    map[uint64]time.Time // unanswered pings by payload
	unanswered int                  // len(pending), in the copies state returns
	sent       int
	answered   int // within the timeout
	late       int // answered after the timeout
	rtts       samples
	dropped    int // control answers dropped: the writer was behind

	srvPings     int
	lastSrvPing  time.Time
	firstSrvPing time.Duration // after the upgrade
	srvPingGaps  samples
	strayPongs   int // pongs that answer no ping of ours
	dataFrames   int
	welcome      *wire.Welcome

	closeAt     time.Time // the server's close frame
	closeCode   int       // 0: no status in it
	closeReason string
	endAt       time.Time // the reader ended: the server closed TCP, or stop
	endErr      error

	probe      probeKind
	probeAt    time.Time
	cutByProbe int    // in the copies state returns: pings unanswered, sent within probeGrace of probeAt
	sockState  string // FIN probe left open: the client socket's TCP state
}

// samples keeps at most maxSamples durations, a uniform sample of all
// those added (reservoir sampling).
type samples struct {
	n int
	d []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.n++
	if len(s.d) < maxSamples {
		s.d = append(s.d, d)
		return
	}
	if i := rand.IntN(s.n); i < maxSamples {
		s.d[i] = d
	}
}

// dialResult is the outcome of one handshake.
type dialResult struct {
	latency time.Duration
	err     error // nil: upgraded
}

// connectAll opens cfg.Conns connections, cfg.Parallel at a time, and
// starts the goroutines of each. It returns the upgraded connections and the
// outcome of every handshake tried.
func connectAll(ctx context.Context, cfg *Config) ([]*conn, []dialResult) {
	conns := make([]*conn, cfg.Conns)
	dials := make([]dialResult, cfg.Conns)
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	tried := 0
loop:
	for i := range cfg.Conns {
		select {
		case <-ctx.Done():
			break loop
		case sem <- struct{}{}:
		}
		tried++
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], dials[i] = dial(ctx, cfg, i)
		})
	}
	wg.Wait()
	up := conns[:0]
	for _, c := range conns[:tried] {
		if c != nil {
			up = append(up, c)
		}
	}
	return up, dials[:tried]
}

// dial opens connection i and starts its reader and writer.
func dial(ctx context.Context, cfg *Config, i int) (*conn, dialResult) {
	h := cfg.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	host := h.Get("Host")
	h.Del("Host")
	if len(cfg.Tokens) > 0 {
		h.Set("Authorization", "Bearer "+cfg.Tokens[i%len(cfg.Tokens)])
	}
	d := ws.Dialer{
		Timeout:   cfg.Timeout,
		Protocols: cfg.Subprotocols,
		Header:    ws.HandshakeHeaderHTTP(h),
		Host:      host,
		TLSConfig: cfg.TLS,
	}
	start := time.Now()
	nc, br, hs, err := d.Dial(ctx, cfg.URL)
	r := dialResult{latency: time.Since(start), err: err}
	if err != nil {
		return nil, r
	}
	c := &conn{
		nc:         nc,
		br:         br,
		timeout:    cfg.Timeout,
		upAt:       time.Now(),
		protocol:   hs.Protocol,
		out:        make(chan outFrame, outQueue),
		hold:       make(chan holdPlan, 1),
		probe:      make(chan probeKind, 1),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		st:         connState{pending: make(map[uint64]time.Time)},
	}
	c.tcp = tcpConn(nc)
	if c.tcp != nil {
		c.key = keyOf(c.tcp)
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, readBufferSize)
	}
	go pprof.Do(context.Background(), pprof.Labels("check", "reader"), func(context.Context) { c.read() })
	go pprof.Do(context.Background(), pprof.Labels("check", "writer"), func(context.Context) { c.write() })
	return c, r
}

// tcpConn returns the TCP socket under nc, or nil.
func tcpConn(nc net.Conn) *net.TCPConn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, _ := nc.(*net.TCPConn)
	return tc
}

// keyOf returns the addresses of a TCP socket.
func keyOf(tc *net.TCPConn) sockKey {
	var k sockKey
	if a, ok := tc.LocalAddr().(*net.TCPAddr); ok {
		k.local = unmap(a.AddrPort())
	}
	if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		k.remote = unmap(a.AddrPort())
	}
	return k
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// read reads frames until the connection ends, answering the server's
// pings and close frame through the writer.
func (c *conn) read() {
	defer close(c.readerDone)
	for {
		h, err := ws.ReadHeader(c.br)
		if err == nil {
			err = c.handle(h)
		}
		if err != nil {
			c.mu.Lock()
			c.st.endAt, c.st.endErr = time.Now(), err
			c.mu.Unlock()
			return
		}
	}
}

var errBadControl = errors.New("control frame longer than 125 bytes or fragmented")

// handle reads the payload of the frame whose header is h.
func (c *conn) handle(h ws.Header) error {
	if !h.OpCode.IsControl() {
		return c.onData(h)
	}
	if h.Length > 125 || !h.Fin {
		return errBadControl
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	now := time.Now()
	switch h.OpCode {
	case ws.OpPing:
		c.onPing(now)
		c.send(outFrame{op: ws.OpPong, payload: p})
	case ws.OpPong:
		c.onPong(now, p)
	case ws.OpClose:
		c.onClose(now, p)
	}
	return nil
}

// onData counts a data frame and reads a first text frame as a tether
// welcome when it is one; other payloads are discarded as they arrive.
func (c *conn) onData(h ws.Header) error {
	c.mu.Lock()
	c.st.dataFrames++
	first := c.st.dataFrames == 1
	c.mu.Unlock()
	if !first || h.OpCode != ws.OpText || !h.Fin || h.Length > maxWelcome {
		_, err := io.CopyN(io.Discard, c.br, h.Length)
		return err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	if f, err := wire.DecodeServer(p); err == nil && f.Type == wire.TypeWelcome {
		w := f.Welcome()
		c.mu.Lock()
		c.st.welcome = &w
		c.mu.Unlock()
	}
	return nil
}

func (c *conn) onPing(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.srvPings == 0 {
		c.st.firstSrvPing = now.Sub(c.upAt)
	} else {
		c.st.srvPingGaps.add(now.Sub(c.st.lastSrvPing))
	}
	c.st.srvPings++
	c.st.lastSrvPing = now
}

func (c *conn) onPong(now time.Time, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sentAt time.Time
	ok := len(p) == 8
	if ok {
		seq := binary.BigEndian.Uint64(p)
		sentAt, ok = c.st.pending[seq]
		delete(c.st.pending, seq)
	}
	if !ok {
		c.st.strayPongs++
		return
	}
	rtt := now.Sub(sentAt)
	if rtt > c.timeout {
		c.st.late++
	} else {
		c.st.answered++
	}
	c.st.rtts.add(rtt)
}

// onClose records the server's first close frame and has the writer echo
// its code, as RFC 6455 section 5.5.1 asks.
func (c *conn) onClose(now time.Time, p []byte) {
	code, reason := ws.ParseCloseFrameData(p)
	c.mu.Lock()
	if c.st.closeAt.IsZero() {
		c.st.closeAt, c.st.closeCode, c.st.closeReason = now, int(code), reason
	}
	c.mu.Unlock()
	var body []byte
	if len(p) >= 2 {
		body = ws.NewCloseFrameBody(code, "")
	}
	c.send(outFrame{op: ws.OpClose, payload: body})
}

// send queues f for the writer without waiting; when the writer is behind,
// f is dropped and counted.
func (c *conn) send(f outFrame) {
	select {
	case c.out <- f:
	default:
		c.mu.Lock()
		c.st.dropped++
		c.mu.Unlock()
	}
}

// startHold has the writer ping every interval until holdEnd, the first
// time at a random moment of the first interval.
func (c *conn) startHold(holdEnd time.Time, interval time.Duration) {
	c.hold <- holdPlan{end: holdEnd, interval: interval} // buffered; sent once
}

// holdPlan tells the writer when to ping.
type holdPlan struct {
	end      time.Time
	interval time.Duration
}

// write owns the write side of the connection until stop: it answers what
// the reader queues, pings during the hold, sends the probe. After a close
// frame or a FIN it writes nothing more.
func (c *conn) write() {
	defer close(c.writerDone)
	var plan holdPlan
	ping := time.NewTimer(time.Hour)
	ping.Stop()
	defer ping.Stop()
	closed := false // a close frame or a FIN was sent
	for {
		select {
		case <-c.quit:
			return
		case f := <-c.out:
			if !closed {
				closed = f.op == ws.OpClose
				_ = c.writeFrame(f.op, f.payload)
			}
		case plan = <-c.hold:
			ping.Reset(plan.interval/2 + rand.N(plan.interval/2+1))
		case k := <-c.probe:
			if !closed {
				closed = true
				c.doProbe(k)
			}
		case now := <-ping.C:
			if closed || !now.Before(plan.end) || c.readerEnded() {
				continue // and the timer stays stopped
			}
			c.ping()
			ping.Reset(plan.interval)
		}
	}
}

// writeFrame writes one masked frame with a write deadline.
func (c *conn) writeFrame(op ws.OpCode, payload []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	return ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewFrame(op, true, payload)))
}

// ping sends a ping whose payload is its sequence number, unless
// maxPending pings are unanswered already.
func (c *conn) ping() {
	c.mu.Lock()
	if len(c.st.pending) >= maxPending {
		c.mu.Unlock()
		return
	}
	c.st.seq++
	seq := c.st.seq
	c.st.pending[seq] = time.Now()
	c.st.sent++
	c.mu.Unlock()
	p := binary.BigEndian.AppendUint64(nil, seq)
	if err := c.writeFrame(ws.OpPing, p); err != nil {
		c.mu.Lock()
		delete(c.st.pending, seq)
		c.st.sent--
		c.mu.Unlock()
	}
}

// startProbe has the writer end the client's side with k.
func (c *conn) startProbe(k probeKind) {
	c.probe <- k // buffered; sent once
}

// doProbe sends a close frame or a FIN and records when.
func (c *conn) doProbe(k probeKind) {
	c.mu.Lock()
	c.st.probe, c.st.probeAt = k, time.Now()
	c.mu.Unlock()
	switch k {
	case probeClose:
		_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, closeReason))
	case probeFIN:
		_ = c.closeWrite()
	}
}

// closeWrite half-closes the connection: close_notify for TLS, then a FIN.
func (c *conn) closeWrite() error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if t, ok := c.nc.(*tls.Conn); ok {
		if err := t.CloseWrite(); err != nil {
			return err
		}
	}
	if c.tcp == nil {
		return errors.New("not a TCP connection")
	}
	return c.tcp.CloseWrite()
}

func (c *conn) readerEnded() bool {
	select {
	case <-c.readerDone:
		return true
	default:
		return false
	}
}

// closedBefore reports whether the server sent a close frame or closed TCP
// before t.
func (c *conn) closedBefore(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return (!c.st.closeAt.IsZero() && c.st.closeAt.Before(t)) || (!c.st.endAt.IsZero() && c.st.endAt.Before(t))
}

// awaitingPong reports whether an open connection has a ping unanswered.
func (c *conn) awaitingPong() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.st.pending) > 0 && c.st.closeAt.IsZero() && c.st.endAt.IsZero()
}

// noteSocketState records the TCP state of the client socket when the
// server has not closed the connection.
func (c *conn) noteSocketState(states map[sockKey]string) {
	if c.readerEnded() {
		return
	}
	s := states[c.key]
	if s == "" {
		s = "unknown"
	}
	c.mu.Lock()
	c.st.sockState = s
	c.mu.Unlock()
}

// probeGrace is how long before the check closes a connection (or sends
// its FIN) a ping may have been sent and still go unanswered without
// counting against the server: a server that reads the ping and then the
// close may echo the close first and drop the pong, as RFC 6455 allows
// (nothing is sent after a close). At most a quarter of the timeout.
const probeGrace = 250 * time.Millisecond

// state returns a copy of what the connection saw.
func (c *conn) state() connState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.unanswered = len(c.st.pending)
	if !st.probeAt.IsZero() {
		from := st.probeAt.Add(-min(probeGrace, c.timeout/4))
		for _, at := range c.st.pending {
			if at.After(from) {
				st.cutByProbe++
			}
		}
	}
	st.pending = nil
	st.rtts.d = append([]time.Duration(nil), c.st.rtts.d...)
	st.srvPingGaps.d = append([]time.Duration(nil), c.st.srvPingGaps.d...)
	return st
}

// stop ends the connection's goroutines without waiting for them. A
// connection the server has not closed is reset (SO_LINGER 0) rather than
// closed, so that no half-closed socket lingers on either side after the
// check.
func (c *conn) stop() {
	close(c.quit)
	if c.tcp != nil && !c.readerEnded() {
		_ = c.tcp.SetLinger(0)
	}
	_ = c.nc.Close()
}

// wait waits for the goroutines of a stopped connection.
func (c *conn) wait() {
	<-c.writerDone
	<-c.readerDone
}

// closeText describes a close code for people: the server's reason, else
// the protocol v1 reason of a tether close code.
func closeText(code int, reason string) string {
	if reason == "" {
		reason = wire.CloseReason(code)
	}
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	if code == 0 {
		return "no status"
	}
	if reason == "" {
		return strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + strconv.Quote(reason)
}
