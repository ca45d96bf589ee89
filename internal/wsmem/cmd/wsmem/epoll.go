package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// serveEpoll is the design considered for tether's I/O layer: gobwas/ws
// upgrades the connection, then the connection's fd is watched by one of a
// few epoll loops (one per CPU). An idle connection has no goroutine and no
// buffer: a loop reads only when epoll reports the fd readable, into the
// loop's own 64 KiB buffer, and parses whole frames out of it. Writes are
// inline with a deadline through the net.Conn (Go's poller handles EAGAIN).
func serveEpoll(ln net.Listener, h *hub) error {
	loops := make([]*eventLoop, runtime.NumCPU())
	for i := range loops {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("epoll_create1: %w", err)
		}
		loops[i] = &eventLoop{epfd: epfd, n: len(loops), h: h, partial: map[int32][]byte{}}
		go loops[i].run() // lives until the process exits
	}
	go acceptLoop(ln, func(c net.Conn) {
		go func() { // lives only until the handshake is done
			device, err := upgrade(c)
			if err != nil {
				_ = c.Close()
				return
			}
			fd, err := rawFD(c)
			if err != nil {
				_ = c.Close()
				return
			}
			s := h.add(device, c)
			s.fd = int32(fd)
			if err := loops[fd%len(loops)].add(s); err != nil {
				h.remove(s)
				_ = c.Close()
			}
		}()
	})
	return nil
}

func rawFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errors.New("not a syscall.Conn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	err = rc.Control(func(f uintptr) { fd = int(f) })
	return fd, err
}

type eventLoop struct {
	epfd int
	n    int // number of loops; this loop owns the fds with fd%n equal to its index
	h    *hub

	mu   sync.Mutex // guards following
	byFD []*session // indexed by fd/n

	partial map[int32][]byte // unfinished frames; touched by run only
}

func (l *eventLoop) add(s *session) error {
	i := int(s.fd) / l.n
	l.mu.Lock()
	for len(l.byFD) <= i {
		l.byFD = append(l.byFD, nil)
	}
	l.byFD[i] = s
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: s.fd}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(s.fd), &ev)
}

func (l *eventLoop) run() {
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10) // shared by every connection of this loop
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "epoll_wait:", err)
			return
		}
		for _, ev := range events[:n] {
			l.mu.Lock()
			s := l.byFD[int(ev.Fd)/l.n]
			l.mu.Unlock()
			if s != nil {
				l.readable(s, buf)
			}
		}
	}
}

var errShort = errors.New("short frame")

// readable reads what the fd has (it is non-blocking) and handles every
// complete frame; a trailing partial frame is kept in l.partial.
func (l *eventLoop) readable(s *session, buf []byte) {
	n, err := unix.Read(int(s.fd), buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if n <= 0 {
		l.close(s)
		return
	}
	data := buf[:n]
	if p, ok := l.partial[s.fd]; ok {
		data = append(p, data...)
		delete(l.partial, s.fd)
	}
	for len(data) > 0 {
		h, payload, rest, err := cutFrame(data)
		if err == errShort {
			l.partial[s.fd] = bytes.Clone(data)
			return
		}
		if err != nil || !handleFrame(s, h, payload) {
			l.close(s)
			return
		}
		data = rest
	}
}

func cutFrame(data []byte) (h ws.Header, payload, rest []byte, err error) {
	r := bytes.NewReader(data)
	h, err = ws.ReadHeader(r)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return h, nil, nil, errShort
	}
	if err != nil {
		return h, nil, nil, err
	}
	if h.Length > 1<<20 {
		return h, nil, nil, errors.New("frame too large")
	}
	if int64(r.Len()) < h.Length {
		return h, nil, nil, errShort
	}
	start := len(data) - r.Len()
	end := start + int(h.Length)
	payload = data[start:end]
	if h.Masked {
		ws.Cipher(payload, h.Mask, 0)
	}
	return h, payload, data[end:], nil
}

// handleFrame echoes data frames and answers control frames; false means
// close the connection. Fragmented messages are not needed by this tool.
func handleFrame(s *session, h ws.Header, payload []byte) bool {
	if !h.Fin {
		return false
	}
	switch h.OpCode {
	case ws.OpText, ws.OpBinary:
		s.received(len(payload))
		if writeFrame(s, ws.NewFrame(h.OpCode, true, payload)) != nil {
			return false
		}
		s.sent(len(payload))
	case ws.OpPing:
		return writeFrame(s, ws.NewPongFrame(payload)) == nil
	case ws.OpClose:
		_ = writeFrame(s, ws.NewCloseFrame(payload))
		return false
	}
	return true
}

func writeFrame(s *session, f ws.Frame) error {
	c := s.conn.(net.Conn)
	_ = c.SetWriteDeadline(time.Now().Add(writeWait))
	return ws.WriteFrame(c, f)
}

func (l *eventLoop) close(s *session) {
	l.mu.Lock()
	l.byFD[int(s.fd)/l.n] = nil
	l.mu.Unlock()
	delete(l.partial, s.fd)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(s.fd), nil)
	l.h.remove(s)
	_ = s.conn.Close()
}
