package check

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// sockKey names a TCP socket by its two ends; IPv4-mapped IPv6 addresses
// are unmapped.
type sockKey struct {
	local, remote netip.AddrPort
}

// tcpStates are the names of the states in /proc/net/tcp, as ss prints
// them (include/net/tcp_states.h).
var tcpStates = map[uint64]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

// procNetTCP are the socket tables of Linux.
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// maxSocketLines bounds what socketStates reads of one table.
const maxSocketLines = 1 << 21

// socketStates returns the TCP state of the sockets of this network
// namespace whose local port is one of ports (all when ports is nil), or
// nil where /proc/net/tcp is not there to read.
func socketStates(ports map[uint16]bool) map[sockKey]string {
	if runtime.GOOS != "linux" {
		return nil
	}
	states := make(map[sockKey]string)
	for _, path := range procNetTCP {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		_ = parseSockets(f, ports, states)
		f.Close()
	}
	return states
}

// parseSockets adds the sockets of one /proc/net/tcp{,6} table whose local
// port is one of ports (all when ports is nil) to states. A busy host has
// hundreds of thousands of lines: the port is looked at first.
func parseSockets(r io.Reader, ports map[uint16]bool, states map[sockKey]string) error {
	sc := bufio.NewScanner(r)
	for n := 0; sc.Scan() && n < maxSocketLines; n++ {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasSuffix(f[0], ":") {
			continue // the header line
		}
		if ports != nil {
			_, hexPort, _ := strings.Cut(f[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil || !ports[uint16(p)] {
				continue
			}
		}
		local, err1 := parseSockAddr(f[1])
		remote, err2 := parseSockAddr(f[2])
		st, err3 := strconv.ParseUint(f[3], 16, 8)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		name := tcpStates[st]
		if name == "" {
			name = "STATE_" + f[3]
		}
		states[sockKey{local: local, remote: remote}] = name
	}
	return sc.Err()
}

var errSockAddr = errors.New("malformed socket address")

// parseSockAddr parses "0100007F:1F90": the address as 32-bit words in the
// kernel's byte order, then the port.
func parseSockAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, errSockAddr
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, errSockAddr
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, errSockAddr
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
