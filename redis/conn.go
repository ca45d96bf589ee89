package redis

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialFunc is rueidis's ClientOption.DialCtxFn.
type dialFunc = func(ctx context.Context, dst string, d *net.Dialer, config *tls.Config) (net.Conn, error)

// dialer returns rueidis's dial function: base (the URL's, for unix
// sockets) or TCP, with TLS when config is set, followed by a probe. A
// dial ends by the deadline of its ctx, DialTimeout after it started, and
// while openBy is set (Unix ns) by then too: Open's deadline, as rueidis
// dials first in NewClient, which takes no ctx.
//
// rueidis dials in the first caller that finds a connection broken; the
// callers that come meanwhile wait for that dial, and a handshake that
// fails (the server accepts connections but answers nothing) costs a
// further second while rueidis closes the half-made connection. The
// probe — one PING answered before the deadline, before rueidis sends
// anything — turns a hung server into a failed dial, which rueidis reports
// to every waiting caller at once. Then no caller waits past the deadline
// of the one dialling, and at most DialTimeout.
func dialer(base dialFunc, openBy *atomic.Int64, conns *connSet) dialFunc {
	return func(ctx context.Context, dst string, d *net.Dialer, config *tls.Config) (net.Conn, error) {
		deadline := time.Now().Add(d.Timeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		if by := openBy.Load(); by != 0 && by < deadline.UnixNano() {
			deadline = time.Unix(0, by)
		}
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var (
			c   net.Conn
			err error
		)
		switch {
		case base != nil:
			c, err = base(ctx, dst, d, config)
		case config != nil:
			c, err = (&tls.Dialer{NetDialer: d, Config: config}).DialContext(ctx, "tcp", dst)
		default:
			c, err = d.DialContext(ctx, "tcp", dst)
		}
		if err != nil {
			return nil, err
		}
		if err := probe(c, deadline); err != nil {
			c.Close()
			return nil, fmt.Errorf("redis %s did not answer PING: %w", dst, err)
		}
		return conns.add(c)
	}
}

// probe sends PING on a new connection and reads one reply line before
// deadline. Any reply counts (+PONG, or an error such as NOAUTH before
// authentication): the server answers.
func probe(c net.Conn, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	var line []byte
	buf := make([]byte, 64)
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if line = append(line, buf[:n]...); len(line) > 512 {
			return fmt.Errorf("reply line longer than 512 bytes")
		}
	}
	return c.SetDeadline(time.Time{})
}

// connSet is the connections the client dialled and has not closed.
// Store.Close closes them before it closes the client: rueidis, closing a
// connection, first waits up to a second for the answer to a PING, which a
// hung server never sends; on a connection already closed that PING fails
// at once.
type connSet struct {
	mu     sync.Mutex // guards following
	conns  map[*trackedConn]struct{}
	closed bool
}

// trackedConn is a connection of a connSet.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

// Close removes the connection from its set, once, and closes it.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.conns, c)
		c.set.mu.Unlock()
	})
	return c.Conn.Close()
}

// add tracks c, or closes it when the set is closed already.
func (s *connSet) add(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.conns == nil {
		s.conns = map[*trackedConn]struct{}{}
	}
	tc := &trackedConn{Conn: c, set: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// closeAll closes every tracked connection and every later one.
func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns, s.closed = nil, true
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}
