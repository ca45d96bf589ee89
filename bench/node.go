package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits of the bench's HTTP calls to the node.
const (
	apiTimeout     = 10 * time.Second
	maxAnswer      = 16 << 20 // bytes read of an answer
	settle         = time.Second
	cleanupWorkers = 16
)

// Metric names read from the admin listener (SPEC section 7).
const (
	metricRSS         = "process_resident_memory_bytes"
	metricHeapInuse   = "go_memstats_heap_inuse_bytes"
	metricHeapIdle    = "go_memstats_heap_idle_bytes"
	metricHeapRelease = "go_memstats_heap_released_bytes"
	metricGoroutines  = "go_goroutines"
	metricConnections = "tether_connections"
	metricPublished   = "tether_messages_published_total"
	metricDeliveries  = "tether_deliveries_total"
	metricAcks        = "tether_acks_total"
	metricRedelivered = "tether_redeliveries_total"
)

// Sample is the node's state read from its /metrics.
type Sample struct {
	At          time.Time `json:"at"`
	RSSBytes    float64   `json:"rss_bytes"`
	HeapInuse   float64   `json:"heap_inuse_bytes"`
	Goroutines  float64   `json:"goroutines"`
	Connections float64   `json:"connections"`
	// HeapIdle − HeapReleased is heap memory the runtime keeps mapped
	// though nothing uses it: RSS that debug.FreeOSMemory would return.
	HeapIdle     float64 `json:"heap_idle_bytes"`
	HeapReleased float64 `json:"heap_released_bytes"`
	// Counters of the node, for the deltas of a publish phase.
	Published    float64 `json:"published_total"`
	Deliveries   float64 `json:"deliveries_total"`
	Acks         float64 `json:"acks_total"`
	Redeliveries float64 `json:"redeliveries_total"`
}

// node talks to the node's API and admin listener.
type node struct {
	http  *http.Client
	api   string // base URL of the API of the devices' node
	pub   string // base URL of the API messages are published through; often api
	admin string // base URL of the admin listener
	key   string // API key
}

func newNode(cfg Config, client *http.Client) *node {
	pub := cfg.PublishURL
	if pub == "" {
		pub = cfg.URL
	}
	return &node{http: client, api: strings.TrimRight(cfg.URL, "/"), pub: strings.TrimRight(pub, "/"),
		admin: strings.TrimRight(cfg.AdminURL, "/"), key: cfg.APIKey}
}

// newHTTPClient returns a client for loopback calls that never follows a
// redirect (it would resend the API key elsewhere).
func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = conns
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends a request and returns the answer when the status is want.
func (n *node) do(ctx context.Context, method, u string, body []byte, want int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if n.key != "" && (strings.HasPrefix(u, n.api+"/v1/") || strings.HasPrefix(u, n.pub+"/v1/")) {
		req.Header.Set("Authorization", "Bearer "+n.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, unwrapURL(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode != want {
		return b, &statusError{Method: method, URL: u, Status: resp.StatusCode, Body: clip(string(bytes.TrimSpace(b)), 300),
			RetryAfter: resp.Header.Get("Retry-After")}
	}
	return b, nil
}

// statusError is an answer with an unexpected status.
type statusError struct {
	Method, URL string
	Status      int
	Body        string
	RetryAfter  string
}

// Error names the request, the status and the body of the answer.
func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: the node answered %d: %s", e.Method, e.URL, e.Status, e.Body)
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// healthy checks that the node's API answers, and the API messages are
// published through when that is another.
func (n *node) healthy(ctx context.Context) error {
	if _, err := n.do(ctx, http.MethodGet, n.api+"/healthz", nil, http.StatusOK); err != nil {
		return err
	}
	if n.pub != n.api {
		if _, err := n.do(ctx, http.MethodGet, n.pub+"/healthz", nil, http.StatusOK); err != nil {
			return fmt.Errorf("--publish-url: %w", err)
		}
	}
	return nil
}

// sample asks the node to collect garbage (GET /debug/pprof/heap?gc=1 runs
// runtime.GC before it answers), lets it settle, and reads its metrics.
func (n *node) sample(ctx context.Context) (Sample, error) {
	if _, err := n.do(ctx, http.MethodGet, n.admin+"/debug/pprof/heap?gc=1", nil, http.StatusOK); err != nil {
		return Sample{}, err
	}
	if !sleepUntil(ctx, time.Now().Add(settle)) {
		return Sample{}, ctx.Err()
	}
	return n.metrics(ctx)
}

// metrics reads the node's /metrics.
func (n *node) metrics(ctx context.Context) (Sample, error) {
	b, err := n.do(ctx, http.MethodGet, n.admin+"/metrics", nil, http.StatusOK)
	if err != nil {
		return Sample{}, err
	}
	m, err := parseMetrics(bytes.NewReader(b))
	if err != nil {
		return Sample{}, fmt.Errorf("%s/metrics: %w", n.admin, err)
	}
	s := Sample{At: time.Now(), RSSBytes: m[metricRSS], HeapInuse: m[metricHeapInuse], Goroutines: m[metricGoroutines],
		Connections: m[metricConnections], Published: m[metricPublished], Deliveries: m[metricDeliveries],
		Acks: m[metricAcks], Redeliveries: m[metricRedelivered], HeapIdle: m[metricHeapIdle], HeapReleased: m[metricHeapRelease]}
	for _, name := range []string{metricRSS, metricHeapInuse, metricGoroutines, metricConnections} {
		if _, ok := m[name]; !ok {
			return s, fmt.Errorf("%s/metrics has no %s", n.admin, name)
		}
	}
	return s, nil
}

// parseMetrics reads the Prometheus text format and returns the value of
// every series without labels, by metric name. Labelled series are
// skipped.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok || strings.ContainsRune(name, '{') {
			continue
		}
		value, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // a timestamp may follow
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: value %q: %v", name, value, err)
		}
		m[name] = v
	}
	return m, sc.Err()
}

// waitConnections polls the node until it reports at least want sessions
// or timeout passes, and returns the last count read.
func (n *node) waitConnections(ctx context.Context, want float64, timeout time.Duration) (float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := n.metrics(ctx)
		if err != nil {
			return 0, err
		}
		if s.Connections >= want || !time.Now().Before(deadline) {
			return s.Connections, nil
		}
		if !sleepUntil(ctx, time.Now().Add(200*time.Millisecond)) {
			return s.Connections, ctx.Err()
		}
	}
}

// cleanGroups removes from groups bench-g0 … every member that is not one
// of this run's devices (left by an earlier run with other flags), so
// that a group message is addressed to this run's devices only. It
// returns how many memberships it removed.
func (n *node) cleanGroups(ctx context.Context, conns, groups int) (int, error) {
	var stale [][2]string // group, device
	for g := range groups {
		b, err := n.do(ctx, http.MethodGet, n.api+"/v1/groups/"+GroupID(g), nil, http.StatusOK)
		var se *statusError
		if errors.As(err, &se) && se.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			return 0, err
		}
		var answer struct {
			Devices []struct {
				ID string `json:"id"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(b, &answer); err != nil {
			return 0, fmt.Errorf("GET /v1/groups/%s: %w", GroupID(g), err)
		}
		for _, d := range answer.Devices {
			if !memberOf(d.ID, g, conns, groups) {
				stale = append(stale, [2]string{GroupID(g), d.ID})
			}
		}
	}
	return len(stale), n.removeMembers(ctx, stale)
}

// memberOf reports whether device id belongs in group g of a run of conns
// devices over groups.
func memberOf(id string, g, conns, groups int) bool {
	s, ok := strings.CutPrefix(id, "bench-d")
	if !ok {
		return false
	}
	i, err := strconv.Atoi(s)
	return err == nil && DeviceID(i) == id && i < conns && GroupOf(i, groups) == g
}

// removeMembers deletes memberships, cleanupWorkers at a time.
func (n *node) removeMembers(ctx context.Context, members [][2]string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	todo := make(chan [2]string)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards first
	var first error
	for range min(cleanupWorkers, len(members)) {
		wg.Go(func() {
			for m := range todo {
				u := n.api + "/v1/groups/" + url.PathEscape(m[0]) + "/devices/" + url.PathEscape(m[1])
				if _, err := n.do(ctx, http.MethodDelete, u, nil, http.StatusNoContent); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for _, m := range members {
		select {
		case todo <- m:
		case <-ctx.Done():
			break feed
		}
	}
	close(todo)
	wg.Wait()
	return first
}
