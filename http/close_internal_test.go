//go:build linux

package http

import (
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestReaderEndSendsHandedOffFrame: when the reader's idle deadline fires
// just after Close handed its close frame off to a write in progress, the
// reader must not close the socket before that write has sent the frame,
// or the peer sees EOF instead of the code. (TestHeartbeatTimeout saw
// "want close 4408, got EOF" in the goroutine I/O pass under CI's load.)
func TestReaderEndSendsHandedOffFrame(t *testing.T) {
	rig := newParserRig(t)
	server, client := tcpPair(t)
	c := newConn(server, 1<<16)
	sess := fuzzAttach(t, rig.h, "pos-1", c)
	c.wlock.Store(1) // a write in progress holds the lock
	c.Close(4408)    // hands its frame off after closeFrameTimeout
	ended := make(chan struct{})
	go func() { // the write ends a little later
		defer close(ended)
		time.Sleep(20 * time.Millisecond)
		c.unlock()
	}()
	// The reader's idle deadline fired as Close set closing: readLoop's end.
	c.endWith(sess, os.ErrDeadlineExceeded)
	c.finish()
	<-ended

	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for { // the welcome comes first
		f, err := ws.ReadFrame(client)
		if err != nil {
			t.Fatalf("peer read %v; want the close frame 4408", err)
		}
		if f.Header.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(f.Payload); code != 4408 {
				t.Fatalf("close code %d, want 4408", code)
			}
			return
		}
	}
}
