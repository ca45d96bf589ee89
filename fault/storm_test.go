package fault_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether/client"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// stormN is how many devices lose their node at once: 1,000 by default,
// 8,000 with -full (client and server sockets share this process, and the
// machine caps a process at 20,000 open files).
func stormN() int { return scaled(*devicesFlag, 1000, 8000) }

// openStormNode starts node id on addr ("127.0.0.1:0" or a fixed port),
// with the hub's default ack and store timeouts.
func openStormNode(tb testing.TB, redisURL, prefix, id, addr string, connectRate float64) *nodetest.Node {
	tb.Helper()
	return mustOpenNode(tb, redis.Options{URL: redisURL, Prefix: prefix}, func(h *hub.Config, c *tetherhttp.Config) {
		h.Node, h.Heartbeat, h.AckTimeout, h.StoreTimeout = id, 5*time.Second, 0, 0
		c.Listen, c.MaxConnectRate = addr, connectRate
	})
}

// TestReconnectStorm: every device loses its node at once and reconnects,
// with the SDK's jittered backoff, to the node that takes its place; that
// node sheds the storm explicitly with 503 + Retry-After (--max-connect-rate)
// instead of falling over, and every device is back within a bound.
func TestReconnectStorm(t *testing.T) {
	n := stormN()
	r := redistest.Start(t)
	prefix := fmt.Sprintf("storm%d", time.Now().UnixNano())
	a := openStormNode(t, r.URL(), prefix, "storm-a", "127.0.0.1:0", 0)
	addr := a.Server.Addr()

	var connected, shed atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := client.Dial(ctx, client.Config{
			URL: "ws://" + addr, Token: nodetest.MustToken(t, fmt.Sprintf("storm-%d", i)),
			Handler:    func(context.Context, client.Message) error { return nil },
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second,
			OnState: func(s client.State, err error) {
				var se *client.StatusError
				switch {
				case s == client.StateConnected:
					connected.Add(1)
				case errors.As(err, &se) && se.Status == 503:
					shed.Add(1)
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	defer func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
		wg.Wait()
	}()
	nodetest.Eventually(t, 60*time.Second, "all devices connected to node A", func() bool { return a.Hub.Connections() == n })

	// Node A is lost; node B takes its address with a connect rate well
	// below the storm.
	connected.Store(0)
	a.Close()
	rate := float64(n) / 4 // the storm must take at least about 4 s
	b := openStormNode(t, r.URL(), prefix, "storm-b", addr, rate)
	defer b.Close()
	start := time.Now()
	peak := runtime.NumGoroutine()
	nodetest.Eventually(t, 60*time.Second, "every device back on node B", func() bool {
		peak = max(peak, runtime.NumGoroutine())
		return b.Hub.Connections() == n
	})
	took := time.Since(start)
	t.Logf("%d devices back on node B in %v; %d handshakes shed with 503 (--max-connect-rate %.0f/s); peak goroutines %d",
		n, took.Round(time.Millisecond), shed.Load(), rate, peak)
	if shed.Load() == 0 {
		t.Fatalf("node B shed nothing: the storm was not limited")
	}
	if took < 2*time.Second {
		t.Fatalf("all back in %v: faster than --max-connect-rate allows", took)
	}
}
