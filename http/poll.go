//go:build linux

package http

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/tetherpush/tether/hub"
)

// pollReadMax bounds what one wake-up of a connection reads, for fairness
// (a variable for tests only).
var pollReadMax = 256 << 10

// poller is the epoll I/O layer: one goroutine waits for readable sockets
// and a fixed pool of workers reads them without blocking, parses frames
// and feeds the sessions. An idle connection costs no goroutine and no
// buffer: docs/design.md has the measurements.
type poller struct {
	epfd    int
	jobs    chan *pconn
	wg      sync.WaitGroup
	workers int
	cancel  context.CancelFunc

	mu      sync.Mutex // guards following
	conns   map[int]*pconn
	closing []*pconn // connections in their close grace period
	closed  bool
}

// pconn is a connection registered with the poller. Its socket is an
// fdConn: the descriptor stays open while pc.mu is held by its reader.
type pconn struct {
	*conn
	sess *hub.Session
	fd   int

	mu       sync.Mutex // guards following; held by the worker reading it
	buf      []byte     // bytes of an incomplete frame; nil when idle
	done     bool
	graceEnd time.Time
}

func openPoller(workers int) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &poller{epfd: epfd, workers: workers, jobs: make(chan *pconn, 1024), conns: make(map[int]*pconn)}, nil
}

func (p *poller) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1 + p.workers)
	go func() {
		defer p.wg.Done()
		pprof.Do(ctx, pprof.Labels("role", "epoll-wait"), p.wait)
	}()
	for i := 0; i < p.workers; i++ {
		go func() {
			defer p.wg.Done()
			pprof.Do(ctx, pprof.Labels("role", "epoll-worker"), p.work)
		}()
	}
}

// add registers c, whose socket detach took out of Go's netpoller; early
// holds bytes the client sent with the handshake.
func (p *poller) add(c *conn, sess *hub.Session, early []byte) error {
	fc, ok := c.c.(*fdConn)
	if !ok {
		return errNotTCP
	}
	pc := &pconn{conn: c, sess: sess, fd: fc.fd, buf: early}
	// The hook is set before the socket is registered: from the first
	// event on, the shared frame handling must see a polled connection.
	// The session is attached already, so a takeover or the hub may have
	// closed it meanwhile; then its grace period starts here.
	closed := c.setOnClose(func() { p.startGrace(pc) })
	if err := p.register(pc); err != nil {
		c.setOnClose(nil) // the caller reads with a goroutine instead
		return err
	}
	if closed {
		p.startGrace(pc)
	}
	return nil
}

// register adds pc's socket to the epoll set.
func (p *poller) register(pc *pconn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(pc.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, pc.fd, &ev); err != nil {
		return err
	}
	p.conns[pc.fd] = pc
	return nil
}

// wait turns readiness events and expired grace periods into jobs.
func (p *poller) wait(ctx context.Context) {
	events := make([]unix.EpollEvent, 256)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(p.epfd, events, 100)
		if err != nil {
			if !errors.Is(err, unix.EINTR) {
				return
			}
			n = 0 // interrupted by a signal: still sweep the grace periods
		}
		p.mu.Lock()
		ready := make([]*pconn, 0, n)
		for _, ev := range events[:n] {
			if pc := p.conns[int(ev.Fd)]; pc != nil {
				ready = append(ready, pc)
			}
		}
		ready = append(ready, p.expiredLocked(time.Now())...)
		p.mu.Unlock()
		for _, pc := range ready {
			select {
			case p.jobs <- pc:
			case <-ctx.Done():
				return
			}
		}
	}
}

// expiredLocked takes the connections whose close grace has passed.
func (p *poller) expiredLocked(now time.Time) []*pconn {
	var out []*pconn
	keep := p.closing[:0]
	for _, pc := range p.closing {
		if now.After(pc.graceEnd) {
			out = append(out, pc)
		} else {
			keep = append(keep, pc)
		}
	}
	p.closing = keep
	return out
}

func (p *poller) startGrace(pc *pconn) {
	p.mu.Lock()
	pc.graceEnd = time.Now().Add(closeGrace)
	p.closing = append(p.closing, pc)
	p.mu.Unlock()
}

func (p *poller) work(ctx context.Context) {
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-ctx.Done():
			return
		case pc := <-p.jobs:
			p.serve(pc, buf)
		}
	}
}

// serve reads what pc has without blocking, handles whole frames, and
// re-arms it or finishes it.
func (p *poller) serve(pc *pconn, buf []byte) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.done {
		return
	}
	if pc.closing.Load() {
		if end := pc.graceEndLocked(p); !end.IsZero() && time.Now().After(end) {
			p.finishLocked(pc)
			return
		}
	}
	if over := p.readAll(pc, buf); over {
		pc.sess.Ended()
		p.finishLocked(pc)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(pc.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, pc.fd, &ev); err != nil {
		pc.sess.Ended()
		p.finishLocked(pc)
	}
}

func (pc *pconn) graceEndLocked(p *poller) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pc.graceEnd
}

// readAll reads until the socket is drained and handles complete frames;
// true means the peer is gone (EOF or error). A read shorter than buf
// emptied the socket's receive queue, so readAll stops there rather than
// make a read that would only return EAGAIN (half the reads when frames
// come one at a time): what arrives after it is reported again, since
// re-arming a one-shot registration (EPOLL_CTL_MOD) checks the socket's
// readiness at once. After the session closed, what the peer still sends
// is read and discarded until it ends or the close grace passes, so that
// the socket ends with FIN rather than RST.
func (p *poller) readAll(pc *pconn, buf []byte) (over bool) {
	if len(pc.buf) > 0 { // early bytes
		p.parse(pc, nil)
	}
	for total := 0; total < pollReadMax; {
		n, rerr := unix.Read(pc.fd, buf) // never parks: the poller waits
		switch {
		case errors.Is(rerr, unix.EAGAIN):
			return false
		case errors.Is(rerr, unix.EINTR):
			continue
		case rerr != nil, n <= 0:
			return true
		}
		total += n
		if !pc.closing.Load() {
			p.parse(pc, buf[:n])
		}
		if n < len(buf) {
			return false
		}
	}
	return false
}

// parse appends data to pc's pending bytes and handles every complete
// frame; the incomplete rest is kept, bounded by the frame size limit,
// which is checked as soon as a header is complete.
func (p *poller) parse(pc *pconn, data []byte) {
	in := data
	if len(pc.buf) > 0 {
		pc.buf = append(pc.buf, data...)
		in = pc.buf
	}
	for len(in) > 0 && !pc.closing.Load() {
		r := bytes.NewReader(in)
		h, err := ws.ReadHeader(r)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err == nil {
			err = pc.check(h)
		} else {
			err = headerError(err)
		}
		if err != nil {
			pc.endWith(pc.sess, err)
			break
		}
		hlen := len(in) - r.Len()
		if int64(r.Len()) < h.Length {
			break
		}
		payload := bytes.Clone(in[hlen : hlen+int(h.Length)])
		in = in[hlen+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		if !pc.handle(pc.sess, h, payload) {
			break
		}
	}
	switch {
	case len(in) == 0 || pc.closing.Load():
		pc.buf = nil
	case len(pc.buf) > 0 && len(in) == len(pc.buf):
		// nothing consumed: keep the buffer, so that a frame trickling in
		// costs O(n) copying, not O(n²)
	case len(pc.buf) > 0:
		pc.buf = append(pc.buf[:0], in...) // shift the rest to the front
	default:
		pc.buf = bytes.Clone(in) // in is the worker's buffer
	}
}

// finishLocked unregisters and closes the socket.
func (p *poller) finishLocked(pc *pconn) {
	pc.done = true
	p.mu.Lock()
	delete(p.conns, pc.fd)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, pc.fd, nil)
	pc.finish()
}

// count returns how many connections the poller holds.
func (p *poller) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close stops the poller and closes every connection it holds.
func (p *poller) close() {
	p.mu.Lock()
	p.closed = true
	list := make([]*pconn, 0, len(p.conns))
	for _, pc := range p.conns {
		list = append(list, pc)
	}
	p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	for _, pc := range list {
		pc.mu.Lock()
		if !pc.done {
			pc.sess.Ended()
			p.finishLocked(pc)
		}
		pc.mu.Unlock()
	}
	_ = unix.Close(p.epfd)
}
