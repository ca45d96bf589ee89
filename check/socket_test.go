package check

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// procAddr formats ap the way /proc/net/tcp{,6} does: the address as
// 32-bit words in the kernel's byte order, then the port, in hex.
func procAddr(ap netip.AddrPort, six bool) string {
	var b []byte
	if six {
		a := ap.Addr().As16()
		b = a[:]
	} else {
		a := ap.Addr().As4()
		b = a[:]
	}
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	fmt.Fprintf(&s, ":%04X", ap.Port())
	return s.String()
}

func TestParseSockets(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:41234")
	remote := netip.MustParseAddrPort("10.1.2.3:8080")
	local6 := netip.MustParseAddrPort("[2001:db8::1]:5000")
	remote6 := netip.MustParseAddrPort("[2001:db8::2]:443")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(local.Addr().As16()), 40000)
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: " + procAddr(local, false) + " " + procAddr(remote, false) + " 05 00000000:00000000 00:00000000 00000000  1000        0 1 1 0\n" +
		"   1: " + procAddr(remote, false) + " " + procAddr(local, false) + " 08 00000000:00000004 00:00000000 00000000  1000        0 2 1 0\n" +
		"   2: " + procAddr(local6, true) + " " + procAddr(remote6, true) + " 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0\n" +
		"   3: " + procAddr(mapped, true) + " " + procAddr(netip.AddrPortFrom(netip.AddrFrom16(remote.Addr().As16()), 80), true) + " 0D 0 0\n" +
		"   4: garbage line\n" +
		"   5: 0100007F:ZZZZ 00000000:0000 0A\n"
	states := map[sockKey]string{}
	if err := parseSockets(strings.NewReader(table), nil, states); err != nil {
		t.Fatal(err)
	}
	want := map[sockKey]string{
		{local, remote}:   "FIN_WAIT2",
		{remote, local}:   "CLOSE_WAIT",
		{local6, remote6}: "ESTABLISHED",
		{netip.AddrPortFrom(local.Addr(), 40000), netip.AddrPortFrom(remote.Addr(), 80)}: "STATE_0D",
	}
	if len(states) != len(want) {
		t.Errorf("parsed %d sockets, want %d: %v", len(states), len(want), states)
	}
	for k, v := range want {
		if states[k] != v {
			t.Errorf("state of %v→%v = %q, want %q", k.local, k.remote, states[k], v)
		}
	}

	only := map[sockKey]string{}
	if err := parseSockets(strings.NewReader(table), map[uint16]bool{local.Port(): true}, only); err != nil {
		t.Fatal(err)
	}
	if len(only) != 1 || only[sockKey{local, remote}] != "FIN_WAIT2" {
		t.Errorf("sockets of port %d: %v, want the FIN_WAIT2 one alone", local.Port(), only)
	}
}

// TestSocketStatesSeesFinWait2 half-closes a real loopback connection whose
// server never closes and finds the client socket in FIN_WAIT2.
func TestSocketStatesSeesFinWait2(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/net/tcp is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tc := cc.(*net.TCPConn)
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	key := keyOf(tc)
	peer := sockKey{local: key.remote, remote: key.local}
	deadline := time.Now().Add(2 * time.Second)
	for {
		states := socketStates(map[uint16]bool{key.local.Port(): true, key.remote.Port(): true})
		if states[key] == "FIN_WAIT2" && states[peer] == "CLOSE_WAIT" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %q, server %q; want FIN_WAIT2 and CLOSE_WAIT", states[key], states[peer])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQuantile(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := quantile(d, tc.q); got != tc.want {
			t.Errorf("quantile(1..100ms, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("quantile of one = %v, want it", got)
	}
}

func TestFmtDur(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{123 * time.Microsecond, "0.12ms"},
		{12345 * time.Microsecond, "12.3ms"},
		{123456 * time.Microsecond, "123ms"},
		{time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "1m30s"},
	} {
		if got := fmtDur(tc.d); got != tc.want {
			t.Errorf("fmtDur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
