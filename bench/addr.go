package bench

import (
	"fmt"
	"net/netip"
	"strings"
)

// Source addresses. A TCP connection is named by its four-tuple, so one
// source address can reach one server port from at most the ephemeral port
// range (about 28,000 ports on Linux). Connections are spread over many
// loopback source addresses instead: on Linux every address of 127.0.0.0/8
// is local without any configuration, so more than 64k connections fit.
const (
	// DefaultPerAddress is how many connections share one source address;
	// far below the ephemeral port range, so that sockets a previous run
	// left in TIME_WAIT never exhaust it.
	DefaultPerAddress = 1000
	// firstSource is the first source address; 127.0.0.1 is left to the
	// node.
	firstSource = 0x7f000002 // 127.0.0.2
	lastSource  = 0x7ffffffe // 127.255.255.254
)

// MaxSources is how many distinct source addresses SourceAddr hands out.
const MaxSources = lastSource - firstSource + 1

// SourceAddr returns the loopback source address of connection i (0-based,
// counted over every worker) when perAddr connections share an address:
// connections 0 … perAddr-1 use 127.0.0.2, the next perAddr 127.0.0.3, and
// so on through 127.255.255.254. It fails when i is negative, perAddr is
// not positive or the range is exhausted.
func SourceAddr(i, perAddr int) (netip.Addr, error) {
	if i < 0 || perAddr <= 0 {
		return netip.Addr{}, fmt.Errorf("source address of connection %d with %d per address: out of range", i, perAddr)
	}
	k := i / perAddr
	if k >= MaxSources {
		return netip.Addr{}, fmt.Errorf("source address of connection %d: 127.0.0.0/8 holds only %d addresses of %d connections each", i, MaxSources, perAddr)
	}
	v := uint32(firstSource + k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// SourceCount returns how many source addresses conns connections use.
func SourceCount(conns, perAddr int) int {
	if conns <= 0 || perAddr <= 0 {
		return 0
	}
	return (conns + perAddr - 1) / perAddr
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
