//go:build linux

package http

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/tetherpush/tether/wire"
)

// TestPollerReadsPastItsShare: one report of a socket reads at most
// pollReadMax, here cut to one read (64 KiB). A client that sent more
// before the poller looked, and then waits, must still have the rest read:
// no later arrival will make epoll report the socket, so the poller must
// re-arm it. The whole burst is in the socket before it is registered.
func TestPollerReadsPastItsShare(t *testing.T) {
	old := pollReadMax
	pollReadMax = 1
	t.Cleanup(func() { pollReadMax = old }) // after the poller has stopped
	rig := newParserRig(t)
	fc, client := fdPair(t)
	_ = unix.SetsockoptInt(fc.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	_ = client.(*net.TCPConn).SetWriteBuffer(4 << 20)

	ids := make([]string, wire.MaxAckIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("01JDUNKNOWN%015d", i)
	}
	var burst bytes.Buffer
	for burst.Len() < 200<<10 {
		_ = ws.WriteFrame(&burst, ws.MaskFrame(ws.NewTextFrame(wire.EncodeAck(ids))))
	}
	_ = ws.WriteFrame(&burst, ws.MaskFrame(ws.NewTextFrame(wire.Ping)))
	_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}

	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n, err := unix.IoctlGetInt(fc.fd, unix.SIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == burst.Len() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes in the server's socket after 5 s", n, burst.Len())
		}
	}
	c := newConn(fc, 1<<16)
	sess := fuzzAttach(t, rig.h, "pos-1", c)
	p, err := openPoller(2)
	if err != nil {
		t.Fatal(err)
	}
	p.start()
	defer p.close()
	if err := p.add(c, sess, nil); err != nil {
		t.Fatal(err)
	}

	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(client)
	for {
		f, err := ws.ReadFrame(r)
		if err != nil {
			t.Fatalf("no pong for the ping at the end of a %d-byte burst: %v", burst.Len(), err)
		}
		if string(f.Payload) == string(wire.Pong) {
			break
		}
	}
}

// TestRearmReportsPendingData pins what readAll's stop at a short read
// relies on: bytes that arrive while a one-shot registration is disarmed
// (after the poller's last read, before it re-arms the socket) are
// reported as soon as EPOLL_CTL_MOD re-arms it, with no later arrival.
func TestRearmReportsPendingData(t *testing.T) {
	fc, client := fdPair(t)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fc.fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fc.fd, &ev); err != nil {
		t.Fatal(err)
	}
	reported := func(ms int) bool {
		evs := make([]unix.EpollEvent, 1)
		for {
			n, err := unix.EpollWait(epfd, evs, ms)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			return n == 1
		}
	}
	if _, err := client.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if !reported(5000) {
		t.Fatal("the first byte was not reported")
	}
	buf := make([]byte, 64)
	if n, err := unix.Read(fc.fd, buf); n != 1 || err != nil {
		t.Fatalf("read %d, %v; want the one byte", n, err)
	}
	if _, err := client.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if n, _ := unix.IoctlGetInt(fc.fd, unix.SIOCINQ); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second byte did not reach the socket")
		}
	}
	if reported(50) {
		t.Fatal("reported while disarmed")
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, fc.fd, &ev); err != nil {
		t.Fatal(err)
	}
	if !reported(1000) {
		t.Fatal("the byte that arrived while the socket was disarmed was not reported when it was re-armed")
	}
}
