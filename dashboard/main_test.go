package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/dashboard"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testSecret = "test-token-secret"
	testAPIKey = "test-api-key"
)

// Node is one in-process tether node with the dashboard on its admin
// listener, on a real embedded store and :0 ports.
type Node struct {
	Hub      *hub.Hub
	Server   *tetherhttp.Server
	Store    *bolt.Store
	Registry *prometheus.Registry
	URL      string // http://127.0.0.1:port, the API
	AdminURL string // http://127.0.0.1:port, the dashboard
	WSURL    string // ws://127.0.0.1:port/v1/connect
	client   *http.Client
}

// MustOpenNode starts a node; edit configures it. It is closed when the
// test ends.
func MustOpenNode(tb testing.TB, edit func(*hub.Config, *tetherhttp.Config, *dashboard.Config)) *Node {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(tb.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hc := hub.Config{Node: "n1", Heartbeat: 5 * time.Second, AckTimeout: 5 * time.Second, Metrics: hub.NewMetrics(reg), Workers: 4}
	sc := tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", TokenSecret: []byte(testSecret), APIKey: testAPIKey, Gatherer: reg}
	dc := dashboard.Config{Node: "n1", Gatherer: reg, TokenSecret: []byte(testSecret)}
	if edit != nil {
		edit(&hc, &sc, &dc)
	}
	h := hub.New(st, hc)
	if err := h.Open(); err != nil {
		tb.Fatalf("open hub: %v", err)
	}
	if dc.Online == nil {
		dc.Online = h.OnlineDevices
	}
	sc.Dashboard = func(apiAddr string) http.Handler {
		dc.PublicAddr = apiAddr
		return dashboard.New(dc)
	}
	srv := tetherhttp.NewServer(h, sc)
	if err := srv.Open(); err != nil {
		tb.Fatalf("open server: %v", err)
	}
	n := &Node{
		Hub: h, Server: srv, Store: st, Registry: reg,
		URL: "http://" + srv.Addr(), AdminURL: "http://" + srv.AdminAddr(), WSURL: "ws://" + srv.Addr() + "/v1/connect",
		client: &http.Client{Timeout: 10 * time.Second},
	}
	tb.Cleanup(n.Close)
	return n
}

// Close stops the node at once.
func (n *Node) Close() {
	n.Hub.Close()
	n.Server.Close()
	n.Store.Close()
	n.client.CloseIdleConnections()
}

// MustToken mints a device token.
func MustToken(tb testing.TB, device string, groups ...string) string {
	tb.Helper()
	tok, err := token.Sign([]byte(testSecret), token.Claims{Device: device, Groups: groups, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// Do sends a request with body (JSON-encoded unless a string) and header
// pairs, decodes a JSON answer into out, and returns the status.
func (n *Node) Do(tb testing.TB, method, url string, body any, out any, header ...string) int {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, _ := json.Marshal(b)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := n.client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

// API calls the HTTP API with the API key.
func (n *Node) API(tb testing.TB, method, path string, body any, out any) int {
	tb.Helper()
	return n.Do(tb, method, n.URL+path, body, out, "Authorization", "Bearer "+testAPIKey, "Content-Type", "application/json")
}

// Publish publishes data to target and returns the message id.
func (n *Node) Publish(tb testing.TB, target string, data any) string {
	tb.Helper()
	var out struct {
		ID string `json:"id"`
	}
	if code := n.API(tb, "POST", "/v1/messages", map[string]any{"target": target, "data": data}, &out); code != http.StatusAccepted {
		tb.Fatalf("publish to %s: status %d, want 202", target, code)
	}
	return out.ID
}

// MessageState returns the delivery state of message id for device.
func (n *Node) MessageState(tb testing.TB, id, device string) string {
	tb.Helper()
	var st struct {
		Deliveries []struct {
			Device string `json:"device"`
			State  string `json:"state"`
		} `json:"deliveries"`
	}
	if code := n.API(tb, "GET", "/v1/messages/"+id, nil, &st); code != http.StatusOK {
		tb.Fatalf("GET /v1/messages/%s: status %d", id, code)
	}
	for _, d := range st.Deliveries {
		if d.Device == device {
			return d.State
		}
	}
	return ""
}

// Stats reads the dashboard's /api/stats.
func (n *Node) Stats(tb testing.TB) dashboard.Stats {
	tb.Helper()
	var st dashboard.Stats
	if code := n.Do(tb, "GET", n.AdminURL+"/api/stats", nil, &st); code != http.StatusOK {
		tb.Fatalf("GET /api/stats: status %d", code)
	}
	return st
}

// Device is a raw WebSocket device speaking the literal protocol frames.
type Device struct {
	Conn net.Conn
	r    io.Reader
}

// Dial connects a device with a token for device and groups and reads its
// welcome frame.
func (n *Node) Dial(tb testing.TB, device string, groups ...string) *Device {
	tb.Helper()
	dialer := ws.Dialer{
		Header:    ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + MustToken(tb, device, groups...)}}),
		Protocols: []string{"tether.v1"},
		Timeout:   5 * time.Second,
	}
	c, br, _, err := dialer.Dial(context.Background(), n.WSURL)
	if err != nil {
		tb.Fatalf("dial %s: %v", device, err)
	}
	tb.Cleanup(func() { c.Close() })
	d := &Device{Conn: c, r: c}
	if br != nil {
		d.r = io.MultiReader(br, c)
	}
	if f := d.MustRead(tb, 5*time.Second); f["type"] != "welcome" {
		tb.Fatalf("%s: first frame %v, want welcome", device, f)
	}
	return d
}

// MustRead returns the next text frame, decoded, answering pings.
func (d *Device) MustRead(tb testing.TB, timeout time.Duration) map[string]any {
	tb.Helper()
	f, err := d.Read(timeout)
	if err != nil {
		tb.Fatalf("read frame: %v", err)
	}
	return f
}

// Read returns the next text frame, decoded, answering pings.
func (d *Device) Read(timeout time.Duration) (map[string]any, error) {
	_ = d.Conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		msgs, err := wsutil.ReadServerMessage(d.r, nil)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpPing:
				_ = wsutil.WriteClientMessage(d.Conn, ws.OpPong, m.Payload)
			case ws.OpText:
				var f map[string]any
				if err := json.Unmarshal(m.Payload, &f); err != nil {
					return nil, err
				}
				return f, nil
			case ws.OpClose:
				return nil, io.EOF
			}
		}
	}
}

// Ack acks ids.
func (d *Device) Ack(ids ...string) error {
	b, _ := json.Marshal(map[string]any{"type": "ack", "ids": ids})
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wsutil.WriteClientMessage(d.Conn, ws.OpText, b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
