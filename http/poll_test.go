package http_test

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tetherpush/tether/internal/nodetest"
)

// TestIdleConnectionsCostNoGoroutines holds many idle sessions and checks
// the goroutine count: with the epoll layer it must not grow with the
// connections (SPEC section 2, rule 4, and the density goal).
func TestIdleConnectionsCostNoGoroutines(t *testing.T) {
	if *ioMode != "epoll" {
		t.Skip("the goroutine I/O layer has one reader per connection by design")
	}
	n := mustOpenNode(t, nil)
	warm := n.Dial(t, nodetest.MustToken(t, "warm"))
	warm.MustNext("welcome")
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	const conns = 300
	for i := 0; i < conns; i++ {
		d := n.Dial(t, nodetest.MustToken(t, fmt.Sprintf("idle-%d", i)))
		d.MustNext("welcome")
	}
	nodetest.Eventually(t, 5*time.Second, "all sessions attached", func() bool { return n.Hub.Connections() == conns+1 })
	time.Sleep(100 * time.Millisecond) // let the handshake goroutines end
	after := runtime.NumGoroutine()
	if grown := after - before; grown > 20 {
		t.Fatalf("goroutines grew by %d for %d idle connections; want a constant", grown, conns)
	}
	// The sessions still work: a message reaches the last one.
	d := n.Dial(t, nodetest.MustToken(t, "idle-last"))
	d.MustNext("welcome")
	id := n.Publish(t, "device:idle-last", 1)
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("got %+v", m)
	}
}

// TestPeerCloseClosesSocketPromptly checks rule 3: when the peer closes,
// the server's side is closed at once (the session leaves the hub).
func TestPeerCloseClosesSocketPromptly(t *testing.T) {
	n := mustOpenNode(t, nil)
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	start := time.Now()
	d.Conn.Close()
	nodetest.Eventually(t, time.Second, "session gone after the peer's FIN", func() bool { return n.Hub.Connections() == 0 })
	t.Logf("session ended %v after the peer closed", time.Since(start))
}

// TestPollerSurvivesSignals: epoll_wait interrupted by signals (the Go
// runtime's own SIGURG preemption does this all the time) must not disturb
// the poller.
func TestPollerSurvivesSignals(t *testing.T) {
	n := mustOpenNode(t, nil)
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	// Signal every thread, so that the one blocked in epoll_wait is hit.
	pid := os.Getpid()
	for i := 0; i < 50; i++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Skip("no /proc/self/task")
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			_ = syscall.Tgkill(pid, tid, syscall.SIGURG)
		}
		time.Sleep(2 * time.Millisecond)
	}
	id := n.Publish(t, "device:pos-1", "after signals")
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("got %+v", m)
	}
}
