package http

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// pipeConn returns a conn on one end of a pipe, and a function that ends
// the pipe and returns the frames the conn wrote.
func pipeConn() (*conn, func() []ws.Frame) {
	a, b := net.Pipe()
	var got bytes.Buffer
	var rd sync.WaitGroup
	rd.Add(1)
	go func() { defer rd.Done(); _, _ = io.Copy(&got, b) }()
	return newConn(a, 1<<16), func() []ws.Frame {
		a.Close()
		rd.Wait()
		var frames []ws.Frame
		for r := bytes.NewReader(got.Bytes()); ; {
			f, err := ws.ReadFrame(r)
			if err != nil {
				return frames
			}
			frames = append(frames, f)
		}
	}
}

// TestNoFrameAfterClose: a write that waited for the write lock while Close
// held it must not follow the close frame (RFC 6455 section 5.5.1). Found by
// TestModelDelivery.
func TestNoFrameAfterClose(t *testing.T) {
	c, written := pipeConn()
	c.wlock.Store(1) // a write in progress (a pong, say) holds the lock
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.Close(1000) }() // echoes the peer's close frame
	time.Sleep(10 * time.Millisecond)
	go func() { // a worker writes a delivery meanwhile
		defer wg.Done()
		_ = c.WriteText([][]byte{[]byte(`{"type":"message"}`)}, time.Now().Add(time.Second))
	}()
	time.Sleep(10 * time.Millisecond)
	c.unlock() // the write in progress ends
	wg.Wait()
	var ops []ws.OpCode
	for _, f := range written() {
		ops = append(ops, f.Header.OpCode)
	}
	if len(ops) == 0 || ops[len(ops)-1] != ws.OpClose {
		t.Fatalf("frames written: %v; want the close frame last (RFC 6455 section 5.5.1)", ops)
	}
}

// TestCloseFrameHandedOff: when the write lock stays held past
// closeFrameTimeout (a writer stuck on a peer that does not read, or a
// thread descheduled under load), Close does not wait longer and does not
// drop its close frame: the holder sends it as it unlocks, so the peer
// still learns the code. (TestHeartbeatTimeout once saw EOF instead of
// 4408 under the full suite's load.)
func TestCloseFrameHandedOff(t *testing.T) {
	c, written := pipeConn()
	c.wlock.Store(1) // a write in progress holds the lock
	c.Close(4408)    // gives up waiting after closeFrameTimeout
	if c.handoff.Load() != 4408 {
		t.Fatalf("handed-off code %d, want 4408", c.handoff.Load())
	}
	if err := c.WriteText([][]byte{[]byte(`{"type":"message"}`)}, time.Now().Add(time.Second)); err == nil {
		t.Error("a write after Close succeeded")
	}
	c.unlock() // the write in progress ends: it sends the close frame
	frames := written()
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpClose {
		t.Fatalf("frames written: %d; want one close frame", len(frames))
	}
	if code, _ := ws.ParseCloseFrameData(frames[0].Payload); code != 4408 {
		t.Fatalf("close code %d, want 4408", code)
	}
}
