package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// servers maps a design name to a function that starts serving WebSocket
// echo on ln and returns; every upgraded connection gets a session in h.
var servers = map[string]func(ln net.Listener, h *hub) error{
	"gorilla": serveGorilla,
	"coder":   serveCoder,
	"gobwas":  serveGobwas,
	"epoll":   serveEpoll,
	"nbio":    serveNbio,
}

const writeWait = 5 * time.Second

// session is the per-connection state every design keeps, about 200 bytes
// like a push gateway's: identity, counters, and an in-flight map that is
// allocated lazily (nil while the connection is idle).
type session struct {
	id          uint64
	device      string
	groups      []string
	conn        io.Closer // lets the hub close the connection (takeover, drain)
	connected   time.Time
	lastSeen    time.Time
	ackDeadline time.Time
	inflight    map[string]time.Time // allocated on first delivery
	framesIn    uint64
	framesOut   uint64
	bytesIn     uint64
	bytesOut    uint64
	acked       uint64
	redelivered uint64
	maxInflight int32
	fd          int32 // epoll design only
	closeCode   uint16
}

func (s *session) received(n int) {
	s.lastSeen = time.Now()
	s.framesIn++
	s.bytesIn += uint64(n)
}

func (s *session) sent(n int) {
	s.framesOut++
	s.bytesOut += uint64(n)
}

// hub is the registry of live sessions, as a gateway's hub would hold it.
type hub struct {
	mu       sync.Mutex // guards following
	next     uint64
	sessions map[uint64]*session
}

func (h *hub) add(device string, c io.Closer) *session {
	now := time.Now()
	s := &session{device: device, conn: c, connected: now, lastSeen: now, maxInflight: 256, fd: -1}
	h.mu.Lock()
	h.next++
	s.id = h.next
	h.sessions[s.id] = s
	h.mu.Unlock()
	return s
}

func (h *hub) remove(s *session) {
	h.mu.Lock()
	delete(h.sessions, s.id)
	h.mu.Unlock()
}

func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// closerFunc adapts a close method that is not an io.Closer.
type closerFunc func() error

// Close calls f.
func (f closerFunc) Close() error { return f() }

// deviceFrom returns the device query parameter of a request URI.
func deviceFrom(uri string) string {
	_, q, _ := strings.Cut(uri, "?")
	for kv := range strings.SplitSeq(q, "&") {
		if v, ok := strings.CutPrefix(kv, "device="); ok {
			return strings.Clone(v)
		}
	}
	return ""
}

// runServer serves one design on a loopback port and answers "stats" lines
// on stdin until stdin closes.
func runServer(design string, settle time.Duration) error {
	serve, ok := servers[design]
	if !ok {
		return fmt.Errorf("unknown design %q", design)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := &hub{sessions: map[uint64]*session{}}
	if err := serve(ln, h); err != nil {
		return fmt.Errorf("%s: %w", design, err)
	}
	fmt.Println("ready", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "stats" {
			continue
		}
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(settle)
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("stats sessions=%d goroutines=%d heap=%d stack=%d\n",
			h.len(), runtime.NumGoroutine(), ms.HeapInuse, ms.StackInuse)
	}
	return nil // stdin closed: the orchestrator is done with us
}
