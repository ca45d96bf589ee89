package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// serveGobwas is gobwas/ws with one reader goroutine per connection, no
// writer goroutine and no bufio kept: ws.Upgrade borrows pooled buffers for
// the handshake only, and writes are done inline with a deadline.
func serveGobwas(ln net.Listener, h *hub) error {
	go acceptLoop(ln, func(c net.Conn) { go serveGobwasConn(c, h) })
	return nil
}

func serveGobwasConn(c net.Conn, h *hub) {
	device, err := upgrade(c)
	if err != nil {
		_ = c.Close()
		return
	}
	s := h.add(device, c)
	defer h.remove(s)
	defer c.Close()
	for {
		msg, op, err := wsutil.ReadClientData(c) // answers pings, returns on close
		if err != nil {
			return
		}
		s.received(len(msg))
		_ = c.SetWriteDeadline(time.Now().Add(writeWait))
		if err := wsutil.WriteServerMessage(c, op, msg); err != nil {
			return
		}
		s.sent(len(msg))
	}
}

// upgrade performs the gobwas/ws zero-copy handshake on a raw connection
// and returns the device query parameter.
func upgrade(c net.Conn) (device string, err error) {
	u := ws.Upgrader{OnRequest: func(uri []byte) error {
		device = deviceFrom(string(uri))
		return nil
	}}
	_ = c.SetDeadline(time.Now().Add(writeWait))
	_, err = u.Upgrade(c)
	_ = c.SetDeadline(time.Time{})
	return device, err
}

// acceptLoop hands every accepted connection to handle; it lives until the
// listener fails or the process exits.
func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return
		}
		handle(c)
	}
}
