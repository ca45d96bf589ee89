package fault_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether/fault"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
)

// storeTimeout is the node's hub.Config.StoreTimeout in the Redis fault
// tests; answerMargin is how much later than it an answer may come (the
// scheduling delay of a loaded two-core machine under -race).
const (
	storeTimeout = time.Second
	answerMargin = time.Second
)

// phase is one step of a fault scenario: begin runs at its start, then it
// lasts for its duration. During an outage phase the store cannot answer:
// publishes must be 503 (after the first storeTimeout) and /readyz 503.
type phase struct {
	name   string
	dur    time.Duration
	outage bool
	begin  func()
	tick   func() // optional, every 500 ms
}

// phaseStats is what the publisher saw in one phase.
type phaseStats struct {
	accepted, unavailable, other int
	slowest                      time.Duration
	readyCodes                   map[int]int
}

// published is a message accepted with 202.
type published struct{ id, target string }

// TestRedisFrozen: redis-server stopped with SIGSTOP under a node with
// hundreds of devices and connection churn.
func TestRedisFrozen(t *testing.T) {
	srv := redistest.Start(t)
	n := mustOpenNode(t, redisOptions(srv.URL()), nil)
	out := outageLength()
	runScenario(t, n, []phase{
		{name: "before", dur: time.Second},
		{name: fmt.Sprintf("SIGSTOP %v", out), dur: out, outage: true, begin: srv.Pause},
		{name: "resumed", dur: 2 * time.Second, begin: srv.Resume},
	})
}

// TestRedisBlackholed: the node reaches Redis through a fault proxy that
// blackholes, then delays, then resets every connection.
func TestRedisBlackholed(t *testing.T) {
	srv := redistest.Start(t)
	p, err := fault.Listen(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ro := redisOptions("redis://" + p.Addr() + "/0")
	ro.DialTimeout = 500 * time.Millisecond
	n := mustOpenNode(t, ro, nil)
	out := outageLength()
	var resets atomic.Int64
	defer func() { t.Logf("the proxy reset %d connections", resets.Load()) }()
	runScenario(t, n, []phase{
		{name: "before", dur: time.Second},
		{name: fmt.Sprintf("blackhole %v", out), dur: out, outage: true, begin: p.Blackhole},
		{name: fmt.Sprintf("delay 200ms for %v", out/2), dur: out / 2, begin: func() { p.Delay(200 * time.Millisecond) }},
		{name: fmt.Sprintf("reset every 500ms for %v", out/2), dur: out / 2, begin: p.Pass, tick: func() { resets.Add(int64(p.Reset())) }},
		{name: "pass", dur: 2 * time.Second, begin: p.Pass},
	})
}

func outageLength() time.Duration { return outageD() }

// runScenario holds devicesN() devices and a churn on n, publishes and
// probes /readyz through the phases, checks the monitor's bounds, then
// waits until every accepted message has been acked by all its devices.
func runScenario(t *testing.T, n *nodetest.Node, phases []phase) {
	devices, groups := devicesN(), 20
	f := startFleet(t, n, devices, groups)
	runtime.GC()
	baseFDs, baseG := openFiles(), runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse
	mon := startMonitor(t, n.Port)
	ch := startChurn(t, n, 4)

	var accepted []published
	stats := make([]phaseStats, len(phases))
	for i, ph := range phases {
		stats[i].readyCodes = map[int]int{}
		if ph.begin != nil {
			ph.begin()
		}
		accepted = append(accepted, drive(t, n, ph, devices, groups, &stats[i])...)
	}
	ch.stop()
	fig := mon.figures()
	for i, ph := range phases {
		s := stats[i]
		t.Logf("phase %-26s publishes: %3d accepted, %3d 503, %d other; slowest answer %v; /readyz %v",
			ph.name, s.accepted, s.unavailable, s.other, s.slowest.Round(time.Millisecond), s.readyCodes)
		if ph.outage && s.unavailable == 0 {
			t.Errorf("phase %s: no publish answered 503", ph.name)
		}
		if ph.outage && s.readyCodes[http.StatusServiceUnavailable] == 0 {
			t.Errorf("phase %s: /readyz never answered 503: %v", ph.name, s.readyCodes)
		}
	}

	start := time.Now()
	waitAcked(t, n, accepted, 90*time.Second)
	t.Logf("after the faults: all %d accepted messages acked by all their devices in %v; lost 0", len(accepted), time.Since(start).Round(time.Millisecond))

	mon.halt()
	fig = mon.figures()
	t.Logf("%d devices, churn %d dials (%d failed; closed by %s %d, %s %d, %s %d, %s %d)", devices,
		ch.dials.Load(), ch.fails.Load(), closeKinds[0], ch.byClose[0].Load(), closeKinds[1], ch.byClose[1].Load(),
		closeKinds[2], ch.byClose[2].Load(), closeKinds[3], ch.byClose[3].Load())
	t.Logf("monitor (%d samples): CLOSE_WAIT at most %d server sockets at once (Recv-Q %d B), oldest %v; goroutines %d → max %d; fds %d → max %d; heap in use %d MiB → max %d MiB",
		fig.Samples, fig.MaxCloseWait, fig.MaxRecvQ, fig.MaxCloseWaitAge.Round(time.Millisecond), baseG, fig.MaxGoroutines,
		baseFDs, fig.MaxFDs, baseHeap>>20, fig.MaxHeapInuse>>20)
	if fig.Err != nil {
		t.Errorf("monitor: %v", fig.Err)
	}
	if fig.MaxCloseWaitAge > time.Second {
		t.Errorf("server socket %s stayed in CLOSE_WAIT for %v, want at most 1s", fig.Oldest, fig.MaxCloseWaitAge)
	}
	// One goroutine per device is the test's own client; the node may
	// have one more per connection (goroutine I/O layer) plus its pools,
	// the churn, and the calls abandoned at their deadline.
	if limit := 2*devices + 600; fig.MaxGoroutines > limit {
		t.Errorf("goroutines reached %d, want at most %d (2 × %d devices + 600)", fig.MaxGoroutines, limit, devices)
	}
	if limit := baseHeap + 256<<20; fig.MaxHeapInuse > limit {
		t.Errorf("heap in use reached %d MiB, want at most %d MiB (baseline + 256)", fig.MaxHeapInuse>>20, limit>>20)
	}
	f.stop()
	n.Client.CloseIdleConnections()
	// With the devices gone, the open files go back below the baseline
	// (which counted two per device): nothing leaked during the faults.
	want := baseFDs - 2*devices + 20
	nodetest.Eventually(t, 10*time.Second, fmt.Sprintf("open files back to baseline (%d - 2 × %d devices + 20)", baseFDs, devices), func() bool {
		return openFiles() <= want
	})
}

// drive publishes to random devices and groups (10 per second from 4
// publishers) and probes /readyz every 200 ms for one phase, checking every
// answer's deadline and 503's Retry-After. It returns what was accepted.
func drive(t *testing.T, n *nodetest.Node, ph phase, devices, groups int, st *phaseStats) []published {
	var (
		mu  sync.Mutex
		acc []published
		wg  sync.WaitGroup
	)
	end := time.Now().Add(ph.dur)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				target := fmt.Sprintf("device:dev-%d", rand.IntN(devices))
				if i%5 == 0 {
					target = fmt.Sprintf("group:shop-%d", rand.IntN(groups))
				}
				a, id, err := n.TryPublish(target, map[string]any{"phase": ph.name, "i": i})
				mu.Lock()
				st.slowest = max(st.slowest, a.Took)
				switch {
				case err != nil:
					st.other++
					t.Errorf("phase %s: publish: %v", ph.name, err)
				case a.Status == http.StatusAccepted:
					st.accepted++
					acc = append(acc, published{id, target})
				case a.Status == http.StatusServiceUnavailable:
					st.unavailable++
					if a.Header.Get("Retry-After") == "" {
						t.Errorf("phase %s: 503 without Retry-After: %s", ph.name, a.Body)
					}
				default:
					st.other++
					t.Errorf("phase %s: publish answered %d %s", ph.name, a.Status, a.Body)
				}
				if err == nil && a.Took > storeTimeout+answerMargin {
					t.Errorf("phase %s: publish answered %d after %v, want within StoreTimeout %v + %v", ph.name, a.Status, a.Took, storeTimeout, answerMargin)
				}
				mu.Unlock()
				time.Sleep(400 * time.Millisecond)
			}
		}()
	}
	nextTick := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(end) {
		a, err := n.Do(context.Background(), "GET", "/readyz", nil)
		mu.Lock()
		if err == nil {
			st.readyCodes[a.Status]++
		}
		mu.Unlock()
		if err == nil && a.Took > 2*time.Second+answerMargin {
			t.Errorf("phase %s: /readyz answered after %v", ph.name, a.Took)
		}
		if ph.tick != nil && time.Now().After(nextTick) {
			ph.tick()
			nextTick = time.Now().Add(500 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	return acc
}

// waitAcked polls the message API until every delivery of every accepted
// message is acked.
func waitAcked(t *testing.T, n *nodetest.Node, accepted []published, timeout time.Duration) {
	t.Helper()
	pending := append([]published(nil), accepted...)
	deadline := time.Now().Add(timeout)
	for len(pending) > 0 {
		var still []published
		var last string
		for _, p := range pending {
			a, err := n.Do(context.Background(), "GET", "/v1/messages/"+p.id, nil)
			var ms struct {
				Deliveries []struct {
					Device string `json:"device"`
					State  string `json:"state"`
				} `json:"deliveries"`
			}
			if err == nil && a.Status == http.StatusOK {
				_ = json.Unmarshal(a.Body, &ms)
			}
			ok := err == nil && a.Status == http.StatusOK && len(ms.Deliveries) > 0
			for _, d := range ms.Deliveries {
				if d.State != "acked" {
					ok = false
				}
			}
			if !ok {
				still = append(still, p)
				last = fmt.Sprintf("%s to %s: %d %s %v", p.id, p.target, a.Status, a.Body, err)
			}
		}
		pending = still
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ids := make([]string, 0, len(pending))
			for _, p := range pending {
				ids = append(ids, p.id)
			}
			sort.Strings(ids)
			t.Fatalf("%d of %d accepted messages not acked by all their devices within %v; e.g. %s", len(pending), len(accepted), timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
