package fault_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/client"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// stormN is how many devices lose their node at once: 1,000 by default,
// 8,000 with -full (client and server sockets share this process, and the
// machine caps a process at 20,000 open files).
func stormN() int { return scaled(*devicesFlag, 1000, 8000) }

// openStormNode starts node id on addr ("127.0.0.1:0" or a fixed port).
func openStormNode(tb testing.TB, redisURL, prefix, id, addr string, connectRate float64) (*hub.Hub, *tetherhttp.Server, *redis.Store) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redis.Open(ctx, redis.Options{URL: redisURL, Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	h := hub.New(st, hub.Config{Node: id, Heartbeat: 5 * time.Second, Workers: 8,
		Metrics: hub.NewMetrics(prometheus.NewRegistry()), Fleet: st.Fleet(), Logger: slog.New(slog.DiscardHandler)})
	if err := h.Open(); err != nil {
		tb.Fatal(err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: addr, AdminListen: "-", TokenSecret: []byte(testSecret),
		APIKey: testAPIKey, MaxConnectRate: connectRate, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Open(); err != nil {
		tb.Fatal(err)
	}
	return h, srv, st
}

// TestReconnectStorm: every device loses its node at once and reconnects,
// with the SDK's jittered backoff, to the node that takes its place; that
// node sheds the storm explicitly with 503 + Retry-After (--max-connect-rate)
// instead of falling over, and every device is back within a bound.
func TestReconnectStorm(t *testing.T) {
	n := stormN()
	r := redistest.Start(t)
	prefix := fmt.Sprintf("storm%d", time.Now().UnixNano())
	ha, sa, sta := openStormNode(t, r.URL(), prefix, "storm-a", "127.0.0.1:0", 0)
	addr := sa.Addr()

	var connected, shed atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := client.Dial(ctx, client.Config{
			URL: "ws://" + addr, Token: mustToken(t, fmt.Sprintf("storm-%d", i)),
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
	eventually(t, 60*time.Second, "all devices connected to node A", func() bool { return ha.Connections() == n })

	// Node A is lost; node B takes its address with a connect rate well
	// below the storm.
	connected.Store(0)
	ha.Close()
	sa.Close()
	sta.Close()
	rate := float64(n) / 4 // the storm must take at least about 4 s
	hb, sb, stb := openStormNode(t, r.URL(), prefix, "storm-b", addr, rate)
	defer func() { hb.Close(); sb.Close(); stb.Close() }()
	start := time.Now()
	peak := runtime.NumGoroutine()
	eventually(t, 60*time.Second, "every device back on node B", func() bool {
		peak = max(peak, runtime.NumGoroutine())
		return hb.Connections() == n
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
