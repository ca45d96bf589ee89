package fault_test

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// TestMonitorSeesCloseWait: the monitor the Redis fault tests rely on
// does see, and age, a server socket left in CLOSE_WAIT by a server that
// never closes what its peer closed.
func TestMonitorSeesCloseWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, ps, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(ps)
	mon := startMonitor(t, port)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close() // only at the end: CLOSE_WAIT meanwhile
	c.Close()
	time.Sleep(700 * time.Millisecond)
	mon.halt()
	fig := mon.figures()
	if fig.MaxCloseWait != 1 || fig.MaxCloseWaitAge < 400*time.Millisecond {
		t.Fatalf("monitor saw %d sockets in CLOSE_WAIT, oldest %v; want 1, at least 400ms", fig.MaxCloseWait, fig.MaxCloseWaitAge)
	}
}
