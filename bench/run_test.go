package bench_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether/bench"
	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testSecret = "bench-test-secret"
	testAPIKey = "bench-test-key"
)

// node is an in-process tether node on the embedded store with :0 ports.
type node struct {
	URL, AdminURL string
}

// mustOpenNode starts a node that is closed when the test ends. It uses
// the goroutine I/O layer: these tests are about the bench, and that layer
// is the one every platform has.
func mustOpenNode(tb testing.TB) *node {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(tb.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := hub.New(st, hub.Config{Node: "n1", Metrics: hub.NewMetrics(reg), Workers: 4})
	if err := h.Open(); err != nil {
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		TokenSecret: []byte(testSecret), APIKey: testAPIKey, Gatherer: reg, IO: "goroutine"})
	if err := srv.Open(); err != nil {
		tb.Fatalf("open server: %v", err)
	}
	tb.Cleanup(func() {
		h.Close()
		srv.Close()
		st.Close()
	})
	return &node{URL: "http://" + srv.Addr(), AdminURL: "http://" + srv.AdminAddr()}
}

// put calls PUT path on the node's API.
func (n *node) put(tb testing.TB, path string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPut, n.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		tb.Fatalf("PUT %s: %s", path, resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()
}

func (n *node) config() bench.Config {
	return bench.Config{URL: n.URL, AdminURL: n.AdminURL, APIKey: testAPIKey, TokenSecret: []byte(testSecret),
		Launch: bench.InProcess(), Ramp: 500, Grace: 10 * time.Second}
}

// TestRunPublish makes a small real run: two in-process workers, three
// groups, 2 s of publishing. Every message must reach every device of its
// group exactly once, and the node's own counters must agree.
func TestRunPublish(t *testing.T) {
	n := mustOpenNode(t)
	// A member left by an earlier run with more devices: the bench removes
	// it, so that messages are addressed to this run's devices only.
	n.put(t, "/v1/groups/bench-g0/devices/bench-d99")
	n.put(t, "/v1/groups/bench-g0/devices/pos-1")

	cfg := n.config()
	cfg.Conns, cfg.Groups, cfg.Workers = 30, 3, 2
	cfg.Rate, cfg.Size, cfg.Duration = 50, 128, 2*time.Second
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Connect; c.Attempted != 30 || c.Connected != 30 || c.Errors != 0 || c.PerSecond <= 0 || c.Latency.Count != 30 {
		t.Errorf("connect %+v", c)
	}
	m := rep.Messages
	if m == nil {
		t.Fatal("no message figures")
	}
	const published, perGroup = 100, 10 // 50/s for 2 s; 30 devices over 3 groups
	if m.Published != published || m.PublishErrors != 0 || m.Recipients != published*perGroup {
		t.Errorf("published %d (%d failed) to %d recipients, want %d to %d", m.Published, m.PublishErrors, m.Recipients, published, published*perGroup)
	}
	if m.Addressed != 30 || m.Expected != published*perGroup || m.Delivered != m.Expected || m.Received != m.Expected {
		t.Errorf("addressed %d, expected %d, delivered %d, received %d; want 30, %d, all, all", m.Addressed, m.Expected, m.Delivered, m.Received, published*perGroup)
	}
	if m.Lost != 0 || m.Duplicates != 0 || m.Mismatch != 0 || m.Unconfirmed != 0 || m.Stale != 0 || m.Foreign != 0 {
		t.Errorf("lost %d, duplicates %d, mismatch %d, unconfirmed %d, stale %d, foreign %d; want none",
			m.Lost, m.Duplicates, m.Mismatch, m.Unconfirmed, m.Stale, m.Foreign)
	}
	if m.Acked != m.Delivered || m.AckFrames == 0 || m.AckFrames > m.Acked {
		t.Errorf("acked %d ids in %d frames, want %d ids", m.Acked, m.AckFrames, m.Delivered)
	}
	if m.Latency.Count != m.Delivered || m.Latency.P50 <= 0 || m.Latency.Max < m.Latency.P99 || m.DeliveredPerSecond <= 0 {
		t.Errorf("latency %+v, %v delivered/s", m.Latency, m.DeliveredPerSecond)
	}
	if w := m.DeviceWorst; w.Count != 30 || w.Max != m.Latency.Max {
		t.Errorf("worst latency per device %+v: want 30 devices, the highest being %v", w, m.Latency.Max)
	}
	nr := rep.Node
	if nr.Before == nil || nr.After == nil || nr.Conns != 30 || nr.Per == nil || nr.Error != "" {
		t.Fatalf("node figures %+v", nr)
	}
	if nr.Per.Goroutines < 0.5 { // the goroutine I/O layer: one reader each
		t.Errorf("%.2f goroutines per connection, want about 1", nr.Per.Goroutines)
	}
	if f := nr.Flow; f == nil || f.Published != published || f.Deliveries < float64(m.Expected) || f.Acks != float64(m.Expected) {
		t.Errorf("node flow %+v, want %d published, %d deliveries and acks", f, published, m.Expected)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %q", rep.Problems)
	}
	var sum int64
	for _, p := range rep.Timeline {
		sum += p.Published
	}
	if sum != published {
		t.Errorf("timeline holds %d published, want %d", sum, published)
	}
}

// TestRunPublishURL publishes through PublishURL, here a proxy in front of
// the node (one node stands in for two nodes of a fleet), while the
// devices connect to URL. Every accepted message must have gone through
// the proxy, with the API key, and reached every device of its group.
func TestRunPublishURL(t *testing.T) {
	n := mustOpenNode(t)
	target, _ := url.Parse(n.URL)
	tr := &http.Transport{Proxy: nil}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	var mu sync.Mutex
	paths := make(map[string]int)
	var noKey int
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.Method+" "+r.URL.Path]++
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") != "Bearer "+testAPIKey {
			noKey++
		}
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { proxy.Close(); tr.CloseIdleConnections() })

	cfg := n.config()
	cfg.PublishURL = proxy.URL
	cfg.Conns, cfg.Groups, cfg.Workers = 10, 2, 1
	cfg.Rate, cfg.Duration = 20, time.Second
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Messages
	if m == nil || m.Published != 20 || m.PublishErrors != 0 || m.Delivered != 100 || m.Lost != 0 || m.Duplicates != 0 {
		t.Fatalf("messages %+v", m)
	}
	if rep.Settings.PublishURL != proxy.URL || rep.Settings.URL != n.URL {
		t.Errorf("settings %+v", rep.Settings)
	}
	mu.Lock()
	defer mu.Unlock()
	posts := paths["POST /v1/messages"] + paths["POST /v1/messages/batch"]
	if posts == 0 || noKey != 0 || paths["GET /healthz"] != 1 {
		t.Errorf("the publish URL saw %v, %d without the API key; want the publishes and one health check", paths, noKey)
	}
	for p := range paths {
		if p != "POST /v1/messages" && p != "POST /v1/messages/batch" && p != "GET /healthz" {
			t.Errorf("the publish URL saw %s: want publishes only", p)
		}
	}
	if f := rep.Node.Flow; f == nil || f.Published != 20 {
		t.Errorf("node flow %+v, want 20 published", f)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "publish through") || !strings.Contains(text.String(), proxy.URL) {
		t.Errorf("text report (%v) does not name the publish URL:\n%s", err, text.String())
	}
}

// TestRunIdle holds connections and publishes nothing.
func TestRunIdle(t *testing.T) {
	n := mustOpenNode(t)
	cfg := n.config()
	cfg.APIKey, cfg.Idle = "", true
	cfg.Conns, cfg.Duration = 20, time.Second
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "idle" || rep.Messages != nil || rep.Connect.Connected != 20 || rep.Connections.OpenAtEnd != 20 {
		t.Errorf("mode %s, messages %v, connect %+v, connections %+v", rep.Mode, rep.Messages, rep.Connect, rep.Connections)
	}
	if rep.Node.Per == nil || rep.Node.Conns != 20 || rep.Failed() {
		t.Errorf("node %+v, failed %v", rep.Node, rep.Failed())
	}
}

// TestRunNodeDown fails fast and leaves nothing behind when no node
// answers.
func TestRunNodeDown(t *testing.T) {
	cfg := bench.Config{URL: "http://127.0.0.1:1", AdminURL: "http://127.0.0.1:1", APIKey: "k",
		TokenSecret: []byte("s"), Launch: bench.InProcess(), Conns: 5, Groups: 1}
	_, err := bench.Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Run = %v, want the node does not answer", err)
	}
}
