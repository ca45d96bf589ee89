package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// SocketReport counts the TCP sockets of one port by state, like
// `ss -tan '( sport = :P or dport = :P )'`.
type SocketReport struct {
	Port   int           `json:"port"`
	Total  int           `json:"total"`
	States []SocketState `json:"states"` // in TCPStates order; states with no socket are left out
}

// SocketState counts the sockets of a port in one TCP state.
type SocketState struct {
	State string `json:"state"` // one of TCPStates: "ESTABLISHED", "CLOSE_WAIT", …
	Count int    `json:"count"`
	// Local counts the sockets whose local port is the port: the server
	// side when it is a listening port. Remote counts those whose peer's
	// port is: the client side. A socket with both counts in both.
	Local  int `json:"local"`
	Remote int `json:"remote"`
	// RecvQ and SendQ sum the bytes queued in the sockets: received and
	// not yet read by the program, and sent and not yet acknowledged by
	// the peer, as the kernel counts them (a FIN received and not yet
	// read counts as one byte, as in ss). For a LISTEN socket, RecvQ counts the connections waiting
	// for accept, and SendQ is 0 (the kernel does not show the backlog
	// in /proc).
	RecvQ int64 `json:"recv_q_bytes"`
	SendQ int64 `json:"send_q_bytes"`
}

// TCPStates returns the names of the TCP states in the order of the
// kernel's numbering (include/net/tcp_states.h), which is the order of
// SocketReport.States.
func TCPStates() []string {
	return []string{"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT",
		"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE"}
}

// State returns the counts of one state; zero counts when no socket is in
// it.
func (r SocketReport) State(name string) SocketState {
	for _, s := range r.States {
		if s.State == name {
			return s
		}
	}
	return SocketState{State: name}
}

// procNetTCP are the kernel's tables of TCP sockets.
const (
	procNetTCP  = "/proc/net/tcp"
	procNetTCP6 = "/proc/net/tcp6"
)

// Sockets counts the TCP sockets whose local or remote port is port, by
// state, from /proc/net/tcp and /proc/net/tcp6: every socket of the
// calling process's network namespace, whatever process owns it. A
// missing /proc/net/tcp6 (IPv6 disabled) is not an error; a missing
// /proc/net/tcp is (not Linux, or no /proc).
func Sockets(port int) (SocketReport, error) {
	if port < 1 || port > 65535 {
		return SocketReport{}, fmt.Errorf("sockets: port %d out of range 1-65535", port)
	}
	var c socketCounter
	for _, name := range []string{procNetTCP, procNetTCP6} {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) && name == procNetTCP6 {
			continue
		}
		if err != nil {
			return SocketReport{}, fmt.Errorf("sockets: %w", err)
		}
		err = c.read(f, port)
		f.Close()
		if err != nil {
			return SocketReport{}, fmt.Errorf("sockets: read %s: %w", name, err)
		}
	}
	return c.report(port), nil
}

// socketCounter accumulates the counts of the lines of /proc/net/tcp*.
type socketCounter struct {
	states [16]SocketState // indexed by the kernel's state number
	total  int
}

// read counts the sockets of port in one /proc/net/tcp table. Lines it
// cannot read are skipped.
func (c *socketCounter) read(r io.Reader, port int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		c.line(sc.Text(), port)
	}
	return sc.Err()
}

// line counts one line of /proc/net/tcp:
//
//	sl  local_address rem_address   st tx_queue:rx_queue …
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 …
func (c *socketCounter) line(s string, port int) {
	fields := strings.Fields(s)
	if len(fields) < 5 || !strings.HasSuffix(fields[0], ":") {
		return
	}
	local, lok := hexPort(fields[1])
	remote, rok := hexPort(fields[2])
	st, err := strconv.ParseUint(fields[3], 16, 8)
	txs, rxs, qok := strings.Cut(fields[4], ":")
	tx, err1 := strconv.ParseUint(txs, 16, 63)
	rx, err2 := strconv.ParseUint(rxs, 16, 63)
	if !lok || !rok || err != nil || !qok || err1 != nil || err2 != nil || st == 0 || int(st) >= len(c.states) {
		return
	}
	isLocal, isRemote := local == port, remote == port
	if !isLocal && !isRemote {
		return
	}
	s2 := &c.states[st]
	s2.Count++
	c.total++
	if isLocal {
		s2.Local++
	}
	if isRemote {
		s2.Remote++
	}
	s2.RecvQ += int64(rx)
	s2.SendQ += int64(tx)
}

// hexPort returns the port of "0100007F:1F90".
func hexPort(addr string) (int, bool) {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(p, 16, 16)
	return int(n), err == nil
}

func (c *socketCounter) report(port int) SocketReport {
	r := SocketReport{Port: port, Total: c.total, States: []SocketState{}}
	names := TCPStates()
	for i := 1; i < len(c.states); i++ {
		s := c.states[i]
		if s.Count == 0 {
			continue
		}
		s.State = fmt.Sprintf("STATE_%d", i)
		if i-1 < len(names) {
			s.State = names[i-1]
		}
		r.States = append(r.States, s)
	}
	return r
}

// sockets returns "1 socket" or "n sockets".
func sockets(n int) string {
	if n == 1 {
		return "1 socket"
	}
	return fmt.Sprintf("%d sockets", n)
}

// WriteText writes the counts as a table, with a word on CLOSE_WAIT.
func (r SocketReport) WriteText(w io.Writer) error {
	tw := &textWriter{w: w}
	tw.printf("TCP sockets with local or remote port %d:\n", r.Port)
	tw.printf("  %-14s %7s %7s %7s %10s %10s\n", "STATE", "COUNT", "LOCAL", "REMOTE", "RECV-Q", "SEND-Q")
	for _, s := range r.States {
		tw.printf("  %-14s %7d %7d %7d %10d %10d\n", s.State, s.Count, s.Local, s.Remote, s.RecvQ, s.SendQ)
	}
	tw.printf("  %-14s %7d\n", "total", r.Total)
	if tw.err != nil {
		return tw.err
	}
	if r.Total == 0 {
		_, err := fmt.Fprintf(w, "No TCP socket has port %d as its local or remote port.\n", r.Port)
		return err
	}
	if cw := r.State("CLOSE_WAIT"); cw.Count > 0 {
		_, err := fmt.Fprintf(w, "\n%s in CLOSE_WAIT (Recv-Q %d bytes): the peer has closed, the program owning "+
			"the socket has not. A count that grows means it does not close connections whose peer left "+
			"(SPEC section 2).\n", sockets(cw.Count), cw.RecvQ)
		return err
	}
	return nil
}
