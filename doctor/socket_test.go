//go:build linux

package doctor

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mustListen listens on a loopback port below the ephemeral range, closed
// when the test ends. Sockets of other programs on this host may take any
// ephemeral port as their own port on another address, and would be
// counted with the test's; they never take a port below the range.
func mustListen(tb testing.TB) *net.TCPListener {
	tb.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low <= 2048 {
		tb.Skipf("the ephemeral port range starts at %d: no port is safe from other programs", low)
	}
	for range 100 {
		port := 1024 + rand.IntN(low-1024)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		tb.Cleanup(func() { ln.Close() })
		return ln.(*net.TCPListener)
	}
	tb.Fatalf("no free port below %d", low)
	return nil
}

// mustConnect dials ln and accepts, and returns both ends, closed when
// the test ends.
func mustConnect(tb testing.TB, ln *net.TCPListener) (client, server net.Conn) {
	tb.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close() })
	return client, server
}

// TestSockets builds the incident's socket states on a real port: a
// listener, established connections with unread bytes, and a connection
// whose client closed and whose server did not (CLOSE_WAIT on the server,
// FIN_WAIT_2 on the client).
func TestSockets(t *testing.T) {
	ln := mustListen(t)
	port := ln.Addr().(*net.TCPAddr).Port
	mustConnect(t, ln)
	_, server2 := mustConnect(t, ln)
	client3, _ := mustConnect(t, ln)
	// 3 bytes the client never reads; 5 the server never reads before the
	// client closes.
	if _, err := server2.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := client3.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	client3.Close()

	want := map[string]SocketState{
		"LISTEN":      {Count: 1, Local: 1},
		"ESTABLISHED": {Count: 4, Local: 2, Remote: 2, RecvQ: 3},
		"CLOSE_WAIT":  {Count: 1, Local: 1, RecvQ: 6}, // the kernel counts the FIN as a byte, as ss shows
		"FIN_WAIT_2":  {Count: 1, Remote: 1},
	}
	var r SocketReport
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if r, err = Sockets(port); err != nil {
			t.Fatal(err)
		}
		if socketsMatch(r, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for state, w := range want {
		w.State = state
		if got := r.State(state); got != w {
			t.Errorf("%s: got %+v, want %+v", state, got, w)
		}
	}
	if r.Total != 7 || len(r.States) != len(want) {
		t.Errorf("total %d in %d states, want 7 in %d: %+v", r.Total, len(r.States), len(want), r.States)
	}

	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"CLOSE_WAIT", "1 socket in CLOSE_WAIT (Recv-Q 6 bytes)", "ESTABLISHED"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, b.String())
		}
	}
}

func socketsMatch(r SocketReport, want map[string]SocketState) bool {
	for state, w := range want {
		w.State = state
		if r.State(state) != w {
			return false
		}
	}
	return r.Total == 7
}

// TestSocketsListenerOnly counts a listener nobody has connected to.
func TestSocketsListenerOnly(t *testing.T) {
	ln := mustListen(t)
	port := ln.Addr().(*net.TCPAddr).Port
	r, err := Sockets(port)
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 1 || r.State("LISTEN").Local != 1 || r.Port != port {
		t.Errorf("report %+v, want one listener", r)
	}
	var b bytes.Buffer
	if err := (SocketReport{Port: port}).WriteText(&b); err != nil || !strings.Contains(b.String(), "No TCP socket has port") {
		t.Errorf("empty report: %v\n%s", err, b.String())
	}
}

func TestSocketsBadPort(t *testing.T) {
	for _, p := range []int{0, -1, 65536} {
		if _, err := Sockets(p); err == nil {
			t.Errorf("port %d: no error", p)
		}
	}
}
