package http_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
)

// ioMode runs the suite on either I/O layer: go test ./http -args -io=goroutine
var ioMode = flag.String("io", "epoll", "WebSocket I/O layer under test: epoll or goroutine")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's cluster client refreshes its slot map on a goroutine
		// that outlives Close by up to its refresh delay (see redis tests).
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

const (
	testSecret = "test-token-secret"
	testAPIKey = "test-api-key"
)

// Node is one in-process tether node on a real embedded store and :0 ports.
type Node struct {
	Metrics *hub.Metrics
	Hub     *hub.Hub
	Server  *tetherhttp.Server
	Store   *bolt.Store
	URL     string // http://127.0.0.1:port
	WSURL   string
	Dir     string
}

// MustOpenNode starts a node; edit configures it. The node is closed when
// the test ends.
func MustOpenNode(tb testing.TB, dir string, edit func(*hub.Config, *tetherhttp.Config)) *Node {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	st, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	reg := prometheus.NewRegistry()
	hc := hub.Config{Node: "n1", Heartbeat: 5 * time.Second, AckTimeout: 5 * time.Second, Metrics: hub.NewMetrics(reg), Workers: 4}
	sc := tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", TokenSecret: []byte(testSecret), APIKey: testAPIKey, Gatherer: reg, Registerer: reg, IO: *ioMode}
	if edit != nil {
		edit(&hc, &sc)
	}
	h := hub.New(st, hc)
	if err := h.Open(); err != nil {
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, sc)
	if err := srv.Open(); err != nil {
		tb.Fatalf("open server: %v", err)
	}
	n := &Node{Metrics: hc.Metrics, Hub: h, Server: srv, Store: st, URL: "http://" + srv.Addr(), WSURL: "ws://" + srv.Addr(), Dir: dir}
	tb.Cleanup(n.Close)
	return n
}

// Close stops the node at once.
func (n *Node) Close() {
	n.Hub.Close()
	n.Server.Close()
	n.Store.Close()
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

// API calls the HTTP API with the test API key and decodes the answer.
func (n *Node) API(tb testing.TB, method, path string, body any, out any) int {
	tb.Helper()
	return n.APIKey(tb, testAPIKey, method, path, body, out)
}

// APIKey calls the HTTP API with key ("" for none).
func (n *Node) APIKey(tb testing.TB, key, method, path string, body any, out any) int {
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
	req, _ := http.NewRequest(method, n.URL+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// Publish publishes data to target and returns the message id.
func (n *Node) Publish(tb testing.TB, target string, data any) string {
	tb.Helper()
	var out struct {
		ID string `json:"id"`
	}
	if code := n.API(tb, "POST", "/v1/messages", map[string]any{"target": target, "data": data}, &out); code != 202 {
		tb.Fatalf("publish to %s: status %d, want 202", target, code)
	}
	return out.ID
}

// Device is a raw test client speaking the literal protocol frames.
type Device struct {
	tb   testing.TB
	Conn net.Conn
	r    io.Reader // Conn behind what the handshake read ahead
	// Silent devices do not answer WebSocket pings while reading.
	Silent bool
}

// Frame is a decoded server frame.
type Frame struct {
	Type        string          `json:"type"`
	Device      string          `json:"device"`
	Groups      []string        `json:"groups"`
	Node        string          `json:"node"`
	HeartbeatMS int64           `json:"heartbeat_ms"`
	ID          string          `json:"id"`
	Target      string          `json:"target"`
	Data        json.RawMessage `json:"data"`
	PublishedAt string          `json:"published_at"`
	Attempt     int             `json:"attempt"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
}

// Dial connects with tok; it fails the test unless the upgrade succeeds.
func (n *Node) Dial(tb testing.TB, tok string) *Device {
	tb.Helper()
	d, status, err := n.TryDial(tok, nil)
	if err != nil {
		tb.Fatalf("dial: status %d: %v", status, err)
	}
	d.tb = tb
	tb.Cleanup(func() { d.Conn.Close() })
	return d
}

// TryDial connects and returns the HTTP status of a failed upgrade.
func (n *Node) TryDial(tok string, header http.Header) (*Device, int, error) {
	if header == nil {
		header = http.Header{}
	}
	if tok != "" {
		header.Set("Authorization", "Bearer "+tok)
	}
	return n.TryDialPath("/v1/connect", header)
}

// TryDialPath connects to path with header.
func (n *Node) TryDialPath(path string, header http.Header) (*Device, int, error) {
	status := 0
	dialer := ws.Dialer{
		Header:    ws.HandshakeHeaderHTTP(header),
		Protocols: []string{"tether.v1"},
		Timeout:   5 * time.Second,
		OnStatusError: func(st int, reason []byte, resp io.Reader) {
			status = st
		},
	}
	c, br, _, err := dialer.Dial(context.Background(), n.WSURL+path)
	if err != nil {
		return nil, status, err
	}
	var r io.Reader = c
	if br != nil { // the welcome may have arrived with the handshake
		r = io.MultiReader(br, c)
	}
	return &Device{Conn: c, r: r}, 101, nil
}

// Send writes one masked text frame.
func (d *Device) Send(s string) {
	d.tb.Helper()
	d.SendFrame(ws.NewTextFrame([]byte(s)))
}

// SendFrame writes f masked.
func (d *Device) SendFrame(f ws.Frame) {
	d.tb.Helper()
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteFrame(d.Conn, ws.MaskFrame(f)); err != nil {
		d.tb.Fatalf("send: %v", err)
	}
}

// Ack acks ids.
func (d *Device) Ack(ids ...string) {
	d.tb.Helper()
	b, _ := json.Marshal(map[string]any{"type": "ack", "ids": ids})
	d.Send(string(b))
}

// Next returns the next text frame within timeout, skipping pings.
func (d *Device) Next(timeout time.Duration) (Frame, error) {
	deadline := time.Now().Add(timeout)
	for {
		_ = d.Conn.SetReadDeadline(deadline)
		f, err := ws.ReadFrame(d.r)
		if err != nil {
			return Frame{}, err
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			if !d.Silent {
				_ = ws.WriteFrame(d.Conn, ws.MaskFrame(ws.NewPongFrame(f.Payload)))
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			return Frame{}, CloseError{Code: closeCode(f.Payload)}
		}
		var fr Frame
		if err := json.Unmarshal(f.Payload, &fr); err != nil {
			return Frame{}, fmt.Errorf("frame %q: %v", f.Payload, err)
		}
		return fr, nil
	}
}

// MustNext returns the next frame and checks its type.
func (d *Device) MustNext(typ string) Frame {
	d.tb.Helper()
	f, err := d.Next(5 * time.Second)
	if err != nil {
		d.tb.Fatalf("want %s frame: %v", typ, err)
	}
	if f.Type != typ {
		d.tb.Fatalf("got %s frame %+v, want %s", f.Type, f, typ)
	}
	return f
}

// MustClose waits for a close frame and checks its code.
func (d *Device) MustClose(code int, timeout time.Duration) {
	d.tb.Helper()
	for {
		_, err := d.Next(timeout)
		if err == nil {
			continue
		}
		ce, ok := err.(CloseError)
		if !ok {
			d.tb.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			d.tb.Fatalf("close code %d, want %d", ce.Code, code)
		}
		return
	}
}

// CloseError is a close frame received.
type CloseError struct{ Code int }

func (e CloseError) Error() string { return fmt.Sprintf("closed with %d", e.Code) }

func closeCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
