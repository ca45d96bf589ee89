package dashboard_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/dashboard"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/token"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// get serves one request and returns the recorder.
func get(h http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func mustStats(t *testing.T, h http.Handler) dashboard.Stats {
	t.Helper()
	rec := get(h, "GET", "/api/stats", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/stats: status %d: %s", rec.Code, rec.Body)
	}
	var st dashboard.Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestStatsRatesFromSuccessiveSamples(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := hub.NewMetrics(reg)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := dashboard.New(dashboard.Config{Node: "n7", Gatherer: reg})
	dashboard.SetNow(h, clk.now)

	m.Connections.Set(3)
	m.Published.Add(10)
	st := mustStats(t, h)
	if st.Node != "n7" || st.Connections != 3 || st.Totals.Published != 10 || st.Rates.Published != 0 || st.IntervalS != 0 {
		t.Fatalf("first sample: %+v", st)
	}
	if st.Sockets != nil {
		t.Errorf("sockets = %v without tether_tcp_sockets, want null", st.Sockets)
	}
	if st.Latency.Unavailable || st.Latency.Count != 0 || st.Latency.P50S != nil {
		t.Errorf("latency without deliveries: %+v", st.Latency)
	}

	m.Connections.Set(5)
	m.Published.Add(20)
	m.Deliveries.Add(40)
	m.Acks.Add(30)
	m.Redeliveries.Add(4)
	m.Expired.Add(2)
	m.Dead.Add(1)
	for range 99 {
		m.DeliveryLatency.Observe(0.003) // bucket (0.002, 0.004]
	}
	m.DeliveryLatency.Observe(0.2)
	m.StoreOp.WithLabelValues("fetch").Observe(0.001)
	m.StoreErrors.WithLabelValues("fetch", "timeout").Add(2)
	m.Closes.WithLabelValues("4409").Inc()
	clk.advance(2 * time.Second)
	st = mustStats(t, h)

	if st.Seq != 2 || st.IntervalS != 2 || st.Connections != 5 {
		t.Errorf("seq %d interval %v connections %v, want 2, 2, 5", st.Seq, st.IntervalS, st.Connections)
	}
	want := dashboard.Flow{Published: 10, Delivered: 20, Acked: 15, Redelivered: 2, Expired: 1, Dead: 0.5}
	if st.Rates != want {
		t.Errorf("rates = %+v, want %+v", st.Rates, want)
	}
	if st.Totals.Published != 30 || st.Totals.Acked != 30 {
		t.Errorf("totals = %+v", st.Totals)
	}
	l := st.Latency
	if l.Count != 100 || l.P50S == nil || l.P99S == nil {
		t.Fatalf("latency = %+v, want 100 deliveries with quantiles", l)
	}
	if *l.P50S <= 0.002 || *l.P50S > 0.004 {
		t.Errorf("p50 = %v, want in (0.002, 0.004]", *l.P50S)
	}
	if *l.P99S <= 0.002 || *l.P99S > 0.004 {
		t.Errorf("p99 = %v, want in (0.002, 0.004] (99 of 100 are there)", *l.P99S)
	}
	if len(st.Store.Ops) != 1 || st.Store.Ops[0].Op != "fetch" || st.Store.Ops[0].Errors != 2 || !near(st.Store.Ops[0].Rate, 0.5) {
		t.Errorf("store ops = %+v", st.Store.Ops)
	}
	if st.Store.ErrorsTotal != 2 || st.Store.ErrorsRate != 1 || len(st.Store.Errors) != 1 || st.Store.Errors[0].Kind != "timeout" {
		t.Errorf("store errors: total %v rate %v %+v", st.Store.ErrorsTotal, st.Store.ErrorsRate, st.Store.Errors)
	}
	if len(st.Closes) != 1 || st.Closes[0].Code != "4409" || st.Closes[0].Total != 1 {
		t.Errorf("closes = %+v", st.Closes)
	}
	if n := len(st.Series.T); n != 2 || len(st.Series.Published) != 2 || st.Series.Published[1] != 10 || st.Series.Connections[1] != 5 {
		t.Errorf("series = %+v", st.Series)
	}
}

func TestStatsSampledAtMostOncePerInterval(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := hub.NewMetrics(reg)
	clk := &clock{t: time.Unix(1000, 0)}
	h := dashboard.New(dashboard.Config{Gatherer: reg, History: 3})
	dashboard.SetNow(h, clk.now)

	first := mustStats(t, h)
	m.Published.Add(5)
	clk.advance(dashboard.MinInterval / 2)
	again := mustStats(t, h)
	if again.Seq != first.Seq || again.Totals.Published != 0 {
		t.Errorf("a request within MinInterval sampled again: seq %d → %d", first.Seq, again.Seq)
	}
	for range 5 {
		clk.advance(time.Second)
		mustStats(t, h)
	}
	st := mustStats(t, h)
	if st.Seq != 6 || len(st.Series.T) != 3 {
		t.Errorf("seq %d with %d points, want 6 with the History of 3", st.Seq, len(st.Series.T))
	}
}

func TestStatsShowsWhatIsExported(t *testing.T) {
	reg := prometheus.NewRegistry()
	sockets := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tether_tcp_sockets", Help: "h"}, []string{"state"})
	pool := prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_store_pool_timeouts_total", Help: "h"})
	reg.MustRegister(sockets, pool)
	sockets.WithLabelValues("ESTABLISHED").Set(7)
	sockets.WithLabelValues("CLOSE_WAIT").Set(2)
	pool.Add(3)
	h := dashboard.New(dashboard.Config{Gatherer: reg})

	st := mustStats(t, h)
	if st.Sockets["ESTABLISHED"] != 7 || st.Sockets["CLOSE_WAIT"] != 2 {
		t.Errorf("sockets = %v", st.Sockets)
	}
	if len(st.Store.Other) != 1 || st.Store.Other[0].Name != "tether_store_pool_timeouts_total" || st.Store.Other[0].Value != 3 {
		t.Errorf("other store metrics = %+v", st.Store.Other)
	}
	if !st.Latency.Unavailable || st.Runtime.Goroutines != nil {
		t.Errorf("absent metrics: latency %+v goroutines %v", st.Latency, st.Runtime.Goroutines)
	}

	if rec := get(dashboard.New(dashboard.Config{}), "GET", "/api/stats", ""); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("without a gatherer: status %d, want 503", rec.Code)
	}
}

// TestStatsNamesStoreServers: the page names the servers the store uses
// now, read at every sample (after a Sentinel failover, the new primary).
func TestStatsNamesStoreServers(t *testing.T) {
	primary := "127.0.0.1:7001"
	clk := &clock{t: time.Unix(1000, 0)}
	h := dashboard.New(dashboard.Config{Gatherer: prometheus.NewRegistry(), StoreServers: func() []string { return []string{primary} }})
	dashboard.SetNow(h, clk.now)
	if st := mustStats(t, h); !slices.Equal(st.Store.Servers, []string{"127.0.0.1:7001"}) {
		t.Errorf("store servers %v, want the primary", st.Store.Servers)
	}
	primary = "127.0.0.1:7002"
	clk.advance(time.Second)
	if st := mustStats(t, h); !slices.Equal(st.Store.Servers, []string{"127.0.0.1:7002"}) {
		t.Errorf("after a failover store servers %v, want the new primary", st.Store.Servers)
	}
	if st := mustStats(t, dashboard.New(dashboard.Config{Gatherer: prometheus.NewRegistry()})); st.Store.Servers != nil {
		t.Errorf("without StoreServers the page names %v", st.Store.Servers)
	}
}

func TestDevices(t *testing.T) {
	var gotPrefix string
	var gotLimit int
	online := func(prefix string, limit int) ([]tether.DeviceInfo, int) {
		gotPrefix, gotLimit = prefix, limit
		return []tether.DeviceInfo{{ID: "pos-1", Groups: []string{"shop-1"}}, {ID: "pos-2"}}, 9
	}
	h := dashboard.New(dashboard.Config{Online: online})

	rec := get(h, "GET", "/api/devices?prefix=pos-&limit=2", "")
	var d dashboard.Devices
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("status %d, %v: %s", rec.Code, err, rec.Body)
	}
	if gotPrefix != "pos-" || gotLimit != 2 || d.Total != 9 || len(d.Devices) != 2 || d.Devices[0].ID != "pos-1" || d.Devices[1].Groups == nil {
		t.Errorf("asked (%q, %d), answered %+v", gotPrefix, gotLimit, d)
	}
	get(h, "GET", "/api/devices", "")
	if gotLimit != dashboard.DefaultDeviceLimit {
		t.Errorf("default limit %d, want %d", gotLimit, dashboard.DefaultDeviceLimit)
	}
	for _, q := range []string{"prefix=a%20b", "limit=-1", "limit=x", "limit=100000"} {
		if rec := get(h, "GET", "/api/devices?"+q, ""); rec.Code != http.StatusBadRequest {
			t.Errorf("?%s: status %d, want 400", q, rec.Code)
		}
	}
	rec = get(dashboard.New(dashboard.Config{}), "GET", "/api/devices", "")
	if !strings.Contains(rec.Body.String(), `"unavailable":true`) {
		t.Errorf("without Online: %s", rec.Body)
	}
}

func TestDemoToken(t *testing.T) {
	clk := &clock{t: time.Now()}
	h := dashboard.New(dashboard.Config{TokenSecret: []byte(nodetest.TokenSecret), PublicAddr: "[::]:8080", DemoTokenTTL: time.Minute})
	dashboard.SetNow(h, clk.now)
	const body = `{"device":"demo-1","groups":["shop-1","shop-2"]}`

	rec := get(h, "POST", "http://10.1.2.3:8081/demo/token", body, "Content-Type", "application/json", "Origin", "http://10.1.2.3:8081")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var tr dashboard.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		t.Fatal(err)
	}
	if tr.URL != "ws://10.1.2.3:8080/v1/connect" {
		t.Errorf("url = %q, want the admin host with the gateway port", tr.URL)
	}
	c, err := token.Verify([]byte(nodetest.TokenSecret), tr.Token, clk.now())
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if c.Device != "demo-1" || !slices.Equal(c.Groups, []string{"shop-1", "shop-2"}) || c.ExpiresAt.Sub(clk.now()) > time.Minute {
		t.Errorf("claims = %+v", c)
	}

	for _, tc := range []struct {
		name, body string
		header     []string
		want       int
	}{
		{"not JSON", body, []string{"Content-Type", "text/plain"}, http.StatusUnsupportedMediaType},
		{"other origin", body, []string{"Content-Type", "application/json", "Origin", "http://evil.example"}, http.StatusForbidden},
		{"bad device", `{"device":"a b"}`, []string{"Content-Type", "application/json"}, http.StatusBadRequest},
		{"bad group", `{"device":"d","groups":["x/y"]}`, []string{"Content-Type", "application/json"}, http.StatusBadRequest},
		{"bad body", `{`, []string{"Content-Type", "application/json"}, http.StatusBadRequest},
	} {
		if rec := get(h, "POST", "http://10.1.2.3:8081/demo/token", tc.body, tc.header...); rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, rec.Code, tc.want, rec.Body)
		}
	}
	if rec := get(h, "GET", "/demo/token", ""); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /demo/token: status %d, want 405", rec.Code)
	}
	off := dashboard.New(dashboard.Config{})
	if rec := get(off, "POST", "/demo/token", body, "Content-Type", "application/json"); rec.Code != http.StatusNotFound {
		t.Errorf("without a secret: status %d, want 404", rec.Code)
	}

	tls := dashboard.New(dashboard.Config{TokenSecret: []byte(nodetest.TokenSecret), PublicAddr: "192.0.2.1:443", PublicTLS: true})
	rec = get(tls, "POST", "http://127.0.0.1:8081/demo/token", body, "Content-Type", "application/json")
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil || tr.URL != "wss://192.0.2.1:443/v1/connect" {
		t.Errorf("with TLS: url %q, %v", tr.URL, err)
	}
}

func TestPagesAreSelfContained(t *testing.T) {
	h := dashboard.New(dashboard.Config{})
	for path, typ := range map[string]string{
		"/":                     "text/html",
		"/demo":                 "text/html",
		"/static/tether.js":     "text/javascript",
		"/static/dashboard.js":  "text/javascript",
		"/static/demo.js":       "text/javascript",
		"/static/dashboard.css": "text/css",
		"/static/favicon.svg":   "image/svg+xml",
	} {
		rec := get(h, "GET", path, "")
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), typ) {
			t.Errorf("GET %s: status %d, type %q; want 200 %s", path, rec.Code, rec.Header().Get("Content-Type"), typ)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
	if rec := get(h, "GET", "/nope", ""); rec.Code != http.StatusNotFound {
		t.Errorf("GET /nope: status %d, want 404", rec.Code)
	}

	// Nothing refers to another host: every URL is a path of this handler
	// (or the SVG namespace, which is a name, not a fetch).
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	local := regexp.MustCompile(`(?:src|href)="(/static/[^"]*)"`)
	site := dashboard.Static()
	err := fs.WalkDir(site, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := site.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		for _, m := range external.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", path, m)
			}
		}
		for _, m := range local.FindAllStringSubmatch(string(b), -1) {
			if rec := get(h, "GET", m[1], ""); rec.Code != http.StatusOK {
				t.Errorf("%s refers to %s: status %d", path, m[1], rec.Code)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
