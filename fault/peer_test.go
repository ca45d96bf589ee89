package fault_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherpush/tether/doctor"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
)

// latencies publishes rounds messages to each device of f in turn, one at
// a time, and returns the publish-to-receive latencies, sorted.
func latencies(t *testing.T, n *nodetest.Node, f *fleet, rounds int) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for r := 0; r < rounds; r++ {
		for _, d := range f.devices {
			start := time.Now()
			id := n.Publish(t, "device:"+d.id, map[string]int{"round": r})
			var at time.Time
			nodetest.Eventually(t, 5*time.Second, "healthy device receives "+id, func() bool {
				var ok bool
				at, ok = d.received(id)
				return ok
			})
			lat = append(lat, at.Sub(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

func p99(lat []time.Duration) time.Duration { return lat[len(lat)*99/100] }

// TestSlowConsumerIsolated: a device that stops reading while 24 MB are
// published to it is closed with 4503 once a write passes the write
// deadline; its messages wait in the store; and the delivery latency of
// healthy devices during its stall stays near what it is without it.
func TestSlowConsumerIsolated(t *testing.T) {
	srv := redistest.Start(t)
	n := mustOpenNode(t, redisOptions(srv.URL()), func(h *hub.Config, _ *tetherhttp.Config) {
		h.WriteTimeout = 200 * time.Millisecond
		h.MaxInflight = 1000
		h.Heartbeat = time.Minute // the slow device does not answer pings
		h.StoreTimeout = 5 * time.Second
	})
	healthy := startFleet(t, n, 20, 1)
	calm := latencies(t, n, healthy, 15)

	slow := n.Dial(t, nodetest.MustToken(t, "slow"))
	slow.Silent = true
	if f, err := slow.Next(5 * time.Second); err != nil || f.Type != "welcome" {
		t.Fatalf("slow device: %+v, %v; want welcome", f, err)
	}
	const msgs = 400
	big := strings.Repeat("x", 60<<10)
	var wg sync.WaitGroup
	wg.Add(1)
	pubErr := make(chan error, 1)
	go func() { // 24 MB: more than loopback socket buffers hold
		defer wg.Done()
		for i := 0; i < msgs; i++ {
			if a, _, err := n.TryPublish("device:slow", big); err != nil || a.Status != http.StatusAccepted {
				pubErr <- fmt.Errorf("publish %d to the slow device: %d %s %v", i, a.Status, a.Body, err)
				return
			}
		}
	}()
	stalled := latencies(t, n, healthy, 15)
	wg.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	closes := n.Metrics.Closes.WithLabelValues("4503")
	nodetest.Eventually(t, 10*time.Second, "the slow device closed with 4503", func() bool { return testutil.ToFloat64(closes) == 1 })

	t.Logf("healthy devices' delivery latency (%d samples each): p50 %v p99 %v without a slow device; p50 %v p99 %v while one stalls on %d × 60 KiB",
		len(calm), calm[len(calm)/2].Round(time.Microsecond), p99(calm).Round(time.Microsecond),
		stalled[len(stalled)/2].Round(time.Microsecond), p99(stalled).Round(time.Microsecond), msgs)
	if bound := 3*p99(calm) + 100*time.Millisecond; p99(stalled) > bound {
		t.Errorf("healthy p99 %v while a device stalls, want at most %v (3 × %v + 100ms)", p99(stalled), bound, p99(calm))
	}
	var dev struct {
		Online  bool `json:"online"`
		Pending int  `json:"pending"`
	}
	nodetest.Eventually(t, 5*time.Second, "the slow device offline with its messages pending", func() bool {
		a, err := n.Do(context.Background(), "GET", "/v1/devices/slow", nil)
		if err != nil || a.Status != http.StatusOK || json.Unmarshal(a.Body, &dev) != nil {
			return false
		}
		return !dev.Online && dev.Pending == msgs
	})
}

// TestVanishedPeer: a device that goes silent (it reads nothing and never
// answers a ping, as when its packets are dropped) is closed with 4408
// within 2 × heartbeat, and the server's socket with it.
func TestVanishedPeer(t *testing.T) {
	const hb = 500 * time.Millisecond
	srv := redistest.Start(t)
	n := mustOpenNode(t, redisOptions(srv.URL()), func(h *hub.Config, _ *tetherhttp.Config) { h.Heartbeat = hb })
	c := n.Dial(t, nodetest.MustToken(t, "gone"))
	c.Silent = true
	if f, err := c.Next(5 * time.Second); err != nil || f.Type != "welcome" {
		t.Fatalf("%+v, %v; want welcome", f, err)
	}
	start := time.Now()
	closes := n.Metrics.Closes.WithLabelValues("4408")
	nodetest.Eventually(t, 10*hb, "4408", func() bool { return testutil.ToFloat64(closes) == 1 })
	took := time.Since(start)
	// The server waits up to its close grace (1 s) for the peer's close
	// frame, then closes: 5 s leaves room for a loaded machine, and a
	// socket that never leaves ESTABLISHED still fails.
	nodetest.Eventually(t, 5*time.Second, "the server's socket leaves ESTABLISHED", func() bool {
		rep, err := doctor.Sockets(n.Port)
		return err == nil && rep.State("ESTABLISHED").Local == 0
	})
	t.Logf("silent device closed with 4408 %v after its welcome (heartbeat %v)", took.Round(time.Millisecond), hb)
	if limit := 2*hb + 300*time.Millisecond; took > limit {
		t.Errorf("closed after %v, want within 2 × heartbeat + 300ms = %v", took, limit)
	}
	// What the device would have read: pings, then the close frame.
	for {
		_, err := c.Next(2 * time.Second)
		var ce nodetest.CloseError
		if errors.As(err, &ce) {
			if ce.Code != 4408 {
				t.Fatalf("close code %d, want 4408", ce.Code)
			}
			return
		}
		if err != nil {
			t.Fatalf("want a 4408 close frame, got %v", err)
		}
	}
}
