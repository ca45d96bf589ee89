package fault_test

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// monitor samples, every 100 ms, the server sockets of a listen port in
// CLOSE_WAIT (each one aged by its (local, remote) addresses), the
// goroutines and the open files of this process; every second the heap.
type monitor struct {
	port int
	stop chan struct{}
	done chan struct{}

	mu          sync.Mutex // guards following
	firstSeen   map[string]time.Time
	maxAge      time.Duration
	oldest      string // the socket that reached maxAge
	maxCW       int    // most server sockets in CLOSE_WAIT at once
	maxRecvQ    int64  // their receive queues then
	maxG        int
	maxFDs      int
	maxHeap     uint64
	samples     int
	sampleError error
}

func startMonitor(tb testing.TB, port int) *monitor {
	m := &monitor{port: port, stop: make(chan struct{}), done: make(chan struct{}), firstSeen: map[string]time.Time{}}
	go m.run()
	tb.Cleanup(m.halt)
	return m
}

func (m *monitor) halt() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

func (m *monitor) run() {
	defer close(m.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastHeap time.Time
	for {
		m.sample(time.Since(lastHeap) >= time.Second)
		if time.Since(lastHeap) >= time.Second {
			lastHeap = time.Now()
		}
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
	}
}

func (m *monitor) sample(heap bool) {
	now := time.Now()
	cw, recvQ, err := closeWaitSockets(m.port)
	g := runtime.NumGoroutine()
	fds := openFiles()
	var hi uint64
	if heap {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		hi = ms.HeapInuse
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	if err != nil {
		m.sampleError = err
		return
	}
	seen := make(map[string]time.Time, len(cw))
	for _, k := range cw {
		first, ok := m.firstSeen[k]
		if !ok {
			first = now
		}
		seen[k] = first
		if age := now.Sub(first); age > m.maxAge {
			m.maxAge, m.oldest = age, k
		}
	}
	m.firstSeen = seen
	if len(cw) > m.maxCW {
		m.maxCW, m.maxRecvQ = len(cw), recvQ
	}
	m.maxG = max(m.maxG, g)
	m.maxFDs = max(m.maxFDs, fds)
	m.maxHeap = max(m.maxHeap, hi)
}

// figures is what the monitor saw.
type figures struct {
	MaxCloseWaitAge time.Duration
	Oldest          string
	MaxCloseWait    int
	MaxRecvQ        int64
	MaxGoroutines   int
	MaxFDs          int
	MaxHeapInuse    uint64
	Samples         int
	Err             error
}

func (m *monitor) figures() figures {
	m.mu.Lock()
	defer m.mu.Unlock()
	return figures{m.maxAge, m.oldest, m.maxCW, m.maxRecvQ, m.maxG, m.maxFDs, m.maxHeap, m.samples, m.sampleError}
}

// closeWaitSockets returns "local remote" of every socket in CLOSE_WAIT
// whose local address is 127.0.0.1:port, from /proc/net/tcp and tcp6, and
// the bytes waiting in their receive queues.
func closeWaitSockets(port int) (out []string, recvQ int64, err error) {
	// Only server sockets of 127.0.0.1:port (also as an IPv4-mapped IPv6
	// address): other processes' sockets on other loopback addresses may
	// use the same port number.
	local4 := fmt.Sprintf("0100007F:%04X", port)
	local6 := fmt.Sprintf("0000000000000000FFFF00000100007F:%04X", port)
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			if name == "/proc/net/tcp6" {
				continue
			}
			return nil, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			// sl local remote st tx_queue:rx_queue …; st 08 is CLOSE_WAIT
			if len(fl) < 5 || fl[3] != "08" || (fl[1] != local4 && fl[1] != local6) {
				continue
			}
			out = append(out, fl[1]+" "+fl[2])
			if _, rx, ok := strings.Cut(fl[4], ":"); ok {
				n, _ := strconv.ParseInt(rx, 16, 64)
				recvQ += n
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, 0, err
		}
	}
	return out, recvQ, nil
}

// openFiles counts this process's open file descriptors.
func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
