package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// runClient opens n upgraded connections (global indexes first..first+n-1),
// proves each with one echoed text frame, prints "connected n", then holds
// them without any goroutine until stdin closes or timeout passes.
func runClient(addr string, first, n, net2 int, timeout time.Duration) error {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // dials in flight
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], errs[i] = dialOne(addr, first+i, net2)
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // reset: leave no TIME_WAIT behind
				}
				_ = c.Close()
			}
		}
	}()
	failed := 0
	var firstErr error
	for _, err := range errs {
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d connections failed, first: %w", failed, n, firstErr)
	}
	fmt.Println("connected", n)

	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	return nil
}

// dialOne connects from a loopback source address of its own (1000
// connections per address, 127.NET.x.y) so ephemeral ports never run out,
// upgrades, and waits for the echo of one text frame.
func dialOne(addr string, g, net2 int) (net.Conn, error) {
	k := g / 1000
	local := &net.TCPAddr{IP: net.IPv4(127, byte(net2), byte(k/250), byte(2+k%250))}
	d := ws.Dialer{NetDial: func(ctx context.Context, network, a string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: local}
		return nd.DialContext(ctx, network, a)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, br, _, err := d.Dial(ctx, "ws://"+addr+"/v1/connect?device=dev-"+strconv.Itoa(g))
	if err != nil {
		return nil, err
	}
	var rw io.ReadWriter = c
	if br != nil { // the server spoke right after the handshake
		rw = struct {
			io.Reader
			io.Writer
		}{br, c}
		defer ws.PutReader(br)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := []byte("hello " + strconv.Itoa(g))
	if err := wsutil.WriteClientText(c, msg); err != nil {
		_ = c.Close()
		return nil, err
	}
	got, err := wsutil.ReadServerText(rw)
	if err == nil && !bytes.Equal(got, msg) {
		err = fmt.Errorf("echo %q, want %q", got, msg)
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
