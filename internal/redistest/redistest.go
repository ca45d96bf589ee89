// Package redistest starts real redis-server processes for tests: one
// instance (Start) or a Redis Cluster of three masters (StartCluster, or
// StartClusterReplicas with replicas), each on free loopback ports, in a
// temporary directory, stopped when the test ends.
//
// When redis-server is not on PATH the test is skipped, or failed when the
// environment variable CI is set, with a message saying how to install it.
// On Linux every process is also killed if the test binary dies
// (Pdeathsig), so no redis-server outlives its test.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the helpers. A server that is not ready within readyTimeout
// fails the test with the tail of its log.
const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	dialTimeout  = time.Second
	replyTimeout = 5 * time.Second
)

// Server is one redis-server process. Its methods fail the test on error;
// they are safe for concurrent use.
type Server struct {
	// Addr is the server's address, 127.0.0.1:port; it does not change
	// across Restart.
	Addr string
	// Dir is the server's working directory (RDB, AOF, nodes.conf and
	// redis.log).
	Dir string

	tb   testing.TB
	bin  string
	args []string // the full command line after bin

	mu     sync.Mutex    // guards following
	cmd    *exec.Cmd     // the current process; nil before the first start
	exited chan struct{} // closed when the current process has exited
}

// Start starts redis-server on a free loopback port in a new temporary
// directory and waits until it answers PING. The server keeps nothing on
// disk unless args say otherwise; args are appended to the command line and
// override the defaults, for example
//
//	redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
//
// The server is killed when the test ends.
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	bin := lookPath(tb, "redis-server")
	dir := tb.TempDir()
	var s *Server
	for attempt := 0; ; attempt++ {
		port := freePort(tb)
		s = newServer(tb, bin, dir, port, args)
		err := s.start()
		if err == nil {
			break
		}
		// Another process may have taken the port between freePort and
		// the bind: try another one.
		if attempt == 2 || !strings.Contains(err.Error(), "Address already in use") {
			tb.Fatalf("redistest: %v", err)
		}
	}
	tb.Cleanup(s.Kill)
	return s
}

func newServer(tb testing.TB, bin, dir string, port int, extra []string) *Server {
	args := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"),
		"--daemonize", "no",
	}
	return &Server{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:  dir,
		tb:   tb,
		bin:  bin,
		args: append(args, extra...),
	}
}

// Pid returns the process id of the running server, or 0.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || isClosed(s.exited) {
		return 0
	}
	return s.cmd.Process.Pid
}

// URL returns the server's redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// start starts the process and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && !isClosed(s.exited) {
		return fmt.Errorf("redis-server on %s: already running", s.Addr)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = sysProcAttr()
	out, err := os.OpenFile(filepath.Join(s.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	return s.waitReady(exited)
}

// waitReady polls PING until the server answers, it exits, or
// readyTimeout passes.
func (s *Server) waitReady(exited chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		reply, err := s.Do("PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		if isClosed(exited) {
			return fmt.Errorf("redis-server on %s exited at start:\n%s", s.Addr, s.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within %v (last: %q, %v):\n%s",
				s.Addr, readyTimeout, reply, err, s.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the server down with SIGTERM, as an operator would (it saves
// and syncs according to its persistence settings), and waits until it has
// exited; after stopTimeout it kills it.
func (s *Server) Stop() {
	s.tb.Helper()
	s.signal(syscall.SIGCONT) // a paused server cannot handle SIGTERM
	s.signal(syscall.SIGTERM)
	if !s.wait(stopTimeout) {
		s.tb.Errorf("redistest: redis-server on %s did not stop within %v; killing it", s.Addr, stopTimeout)
		s.Kill()
	}
}

// Kill kills the server with SIGKILL (a crash: nothing is saved) and waits
// until it has exited. Killing a server that is not running does nothing.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
	s.wait(stopTimeout)
}

// Restart starts the server again on the same port, directory and
// arguments after Stop or Kill, and waits until it answers PING; it loads
// what its persistence settings kept.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
}

// Pause stops the process with SIGSTOP: it keeps its connections open and
// answers nothing, like a hung server.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// signal sends sig to the running process, if any.
func (s *Server) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && !isClosed(s.exited) {
		s.cmd.Process.Signal(sig)
	}
}

// wait waits up to d for the current process to exit and reports whether
// it has.
func (s *Server) wait(d time.Duration) bool {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, name := range []string{"redis.log", "stdout.log"} {
		data, _ := os.ReadFile(filepath.Join(s.Dir, name))
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		b.Write(data)
	}
	return b.String()
}

// Do sends one command on a new connection and returns its reply as text:
// a simple or bulk string as is, an integer in decimal, an array's
// elements one per line, a nil reply as "". An error reply is an error.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, dialTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(replyTimeout))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

// MustDo is Do that fails the test on error.
func (s *Server) MustDo(args ...string) string {
	s.tb.Helper()
	reply, err := s.Do(args...)
	if err != nil {
		s.tb.Fatalf("redistest: %s on %s: %v", strings.Join(args, " "), s.Addr, err)
	}
	return reply
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch body := line[1:]; line[0] {
	case '+', ':':
		return body, nil
	case '-':
		return "", errors.New(body)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return "", err
		}
		elems := make([]string, n)
		for i := range elems {
			if elems[i], err = readReply(r); err != nil {
				return "", err
			}
		}
		return strings.Join(elems, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// lookPath finds a Redis binary or skips the test (fails it when CI is
// set) with a message saying how to install it.
func lookPath(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	msg := fmt.Sprintf("redistest: %s not found on PATH; install Redis (Debian/Ubuntu: apt-get install redis-server)", name)
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
