//go:build linux

package http

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fdConn is an upgraded TCP socket held as a bare non-blocking file
// descriptor instead of a *net.TCPConn. The poller waits for its input, so
// Go's netpoller has nothing to do for it, and an idle connection no longer
// pays for what the netpoller keeps per socket: its pollDesc (outside the
// heap), the netFD and both addresses, about 0.9 KiB of 2.4
// (docs/benchmarks.md, idle memory). A read or write that would block waits
// in poll(2), in slices of pollSlice, up to its deadline.
//
// The descriptor is closed once no call uses it any more, so that a write
// still waiting when the connection finishes can never touch a new socket
// that reused the number.
type fdConn struct {
	fd       int
	rdl, wdl atomic.Int64 // read and write deadlines, Unix ns; 0: none

	mu     sync.Mutex // guards following
	users  int
	closed bool
}

// pollSlice bounds one wait in poll(2): a Close is seen that soon.
const pollSlice = 50 * time.Millisecond

var errNotTCP = errors.New("not a TCP socket")

// detach takes the socket of c, a *net.TCPConn, out of Go's netpoller: it
// duplicates the descriptor and closes c. On error c is left as it was.
func detach(c net.Conn) (*fdConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, errNotTCP
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = c.Close() // the duplicate keeps the socket open
	return &fdConn{fd: fd}, nil
}

// acquire counts a call that uses the descriptor; false once closed.
func (f *fdConn) acquire() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.users++
	return true
}

func (f *fdConn) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users--; f.closed && f.users == 0 {
		unix.Close(f.fd)
	}
}

func (f *fdConn) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Close closes the descriptor, or lets the last call using it do so.
func (f *fdConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.users == 0 {
		return unix.Close(f.fd)
	}
	return nil
}

// CloseWrite sends FIN.
func (f *fdConn) CloseWrite() error {
	if !f.acquire() {
		return net.ErrClosed
	}
	defer f.release()
	return unix.Shutdown(f.fd, unix.SHUT_WR)
}

// wait waits until the socket has events or the deadline passes.
func (f *fdConn) wait(events int16, deadline *atomic.Int64) error {
	for {
		if f.isClosed() {
			return net.ErrClosed
		}
		slice := pollSlice
		if d := deadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			slice = min(slice, left)
		}
		fds := []unix.PollFd{{Fd: int32(f.fd), Events: events}}
		n, err := unix.Poll(fds, int((slice+time.Millisecond-1)/time.Millisecond))
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return err
		case n > 0:
			return nil
		}
	}
}

// Read reads from the socket, polling while it has no data until data
// arrives, the read deadline passes or the conn closes.
func (f *fdConn) Read(p []byte) (int, error) {
	if !f.acquire() {
		return 0, net.ErrClosed
	}
	defer f.release()
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case n > 0:
			return n, nil
		case err == nil && len(p) > 0:
			return 0, io.EOF
		case err == nil:
			return 0, nil
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			if err := f.wait(unix.POLLIN, &f.rdl); err != nil {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

// Write writes all of p, polling while the socket buffer is full until
// it drains, the write deadline passes or the conn closes.
func (f *fdConn) Write(p []byte) (int, error) {
	if !f.acquire() {
		return 0, net.ErrClosed
	}
	defer f.release()
	done := 0
	for done < len(p) {
		n, err := unix.Write(f.fd, p[done:])
		switch {
		case n > 0:
			done += n
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			if err := f.wait(unix.POLLOUT, &f.wdl); err != nil {
				return done, err
			}
		case err != nil:
			return done, err
		default:
			return done, io.ErrShortWrite
		}
	}
	return done, nil
}

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// SetDeadline sets the read and write deadlines; the zero time clears them.
func (f *fdConn) SetDeadline(t time.Time) error {
	f.rdl.Store(unixNanos(t))
	f.wdl.Store(unixNanos(t))
	return nil
}

// SetReadDeadline sets the read deadline; the zero time clears it.
func (f *fdConn) SetReadDeadline(t time.Time) error { f.rdl.Store(unixNanos(t)); return nil }

// SetWriteDeadline sets the write deadline; the zero time clears it.
func (f *fdConn) SetWriteDeadline(t time.Time) error { f.wdl.Store(unixNanos(t)); return nil }

// LocalAddr returns nil: the addresses are not kept (nothing after the
// upgrade needs them, and they cost memory per connection).
func (f *fdConn) LocalAddr() net.Addr { return nil }

// RemoteAddr returns nil, for the same reason as LocalAddr.
func (f *fdConn) RemoteAddr() net.Addr { return nil }
