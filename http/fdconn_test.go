//go:build linux

package http

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// fdPair returns a detached server side and the client side of a loopback
// TCP connection.
func fdPair(t *testing.T) (*fdConn, net.Conn) {
	t.Helper()
	sc, client := tcpPair(t)
	fc, err := detach(sc)
	if err != nil {
		t.Fatalf("detach: %v", err)
	}
	t.Cleanup(func() { fc.Close() })
	return fc, client
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

// TestFdConnReadWrite: bytes go both ways, a read waits for data, and the
// peer's FIN reads as EOF.
func TestFdConnReadWrite(t *testing.T) {
	fc, client := fdPair(t)
	go func() {
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("ping"))
		client.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(fc)
	if err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v; want ping, EOF", got, err)
	}
	if _, err := fc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	fc.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v; want pong", got, err)
	}
}

// TestFdConnDeadlines: a write to a peer that does not read, and a read
// from a peer that sends nothing, end at their deadlines with a timeout.
func TestFdConnDeadlines(t *testing.T) {
	fc, _ := fdPair(t)
	fc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	if _, err := fc.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("read: %v, want a deadline timeout", err)
	}
	if el := time.Since(start); el < 90*time.Millisecond || el > 2*time.Second {
		t.Errorf("read returned after %v, want about 100ms", el)
	}
	fc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	big := bytes.Repeat([]byte("x"), 1<<20)
	var err error
	for i := 0; i < 256 && err == nil; i++ { // fills both socket buffers
		_, err = fc.Write(big)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that does not read: %v, want a deadline timeout", err)
	}
}

// TestFdConnCloseWhileWriting: Close during a blocked write ends the write
// within a poll slice, and the socket is closed once the write has left
// (the peer reads to EOF).
func TestFdConnCloseWhileWriting(t *testing.T) {
	fc, client := fdPair(t)
	errc := make(chan error, 1)
	go func() {
		big := bytes.Repeat([]byte("x"), 1<<20)
		for {
			if _, err := fc.Write(big); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the writer is blocked by now
	start := time.Now()
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked write after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a write blocked before Close did not return")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("the blocked write returned %v after Close, want within a poll slice", el)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, client); err != nil {
		t.Fatalf("peer reading to EOF after Close: %v", err)
	}
	if _, err := fc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
	if err := fc.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
