package fault_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/redis"
	"github.com/tetherpush/tether/token"
)

// Scale of the suite. The defaults are the scaled-down CI run; -full (or
// TETHER_FAULT_FULL=1) is the full one, and each flag overrides it:
//
//	go test -race ./fault/                                   # scaled
//	go test -race -timeout 30m ./fault/ -args -full          # full
//	go test ./fault/ -args -devices 2000 -outage 20s         # by hand
var (
	fullFlag    = flag.Bool("full", os.Getenv("TETHER_FAULT_FULL") != "", "run at full scale (thousands of devices, 30 s faults)")
	devicesFlag = flag.Int("devices", 0, "devices held open through the Redis faults (default 300; full 3000)")
	outageFlag  = flag.Duration("outage", 0, "length of each Redis fault (default 5s; full 30s)")
	callersFlag = flag.Int("callers", 0, "pool size of the incident replay; callers are twice as many (default 50; full 300)")
)

func scaled(flagVal, small, full int) int {
	switch {
	case flagVal > 0:
		return flagVal
	case *fullFlag:
		return full
	}
	return small
}

func devicesN() int { return scaled(*devicesFlag, 300, 3000) }
func callersN() int { return scaled(*callersFlag, 50, 300) }
func outageD() time.Duration {
	return time.Duration(scaled(int(*outageFlag), int(5*time.Second), int(30*time.Second)))
}

func TestMain(m *testing.M) {
	if os.Getenv(redigoChildEnv) != "" {
		os.Exit(redigoChild(os.Getenv(redigoChildEnv)))
	}
	goleak.VerifyTestMain(m,
		// Same as http/main_test.go: rueidis refreshes and delays on
		// goroutines that outlive Close by up to their delay.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

const (
	testSecret = "fault-token-secret"
	testAPIKey = "fault-api-key"
)

// node is one in-process tether node on Redis (the fleet setup of
// http/fleet_test.go), on :0 ports.
type node struct {
	Hub     *hub.Hub
	Server  *tetherhttp.Server
	Redis   *redis.Store
	Metrics *hub.Metrics
	URL     string
	WSURL   string
	Port    int
	client  *http.Client
}

// mustOpenNode starts a node on the Redis at url; edit adjusts the hub
// configuration. The node is closed when the test ends.
func mustOpenNode(tb testing.TB, url string, edit func(*hub.Config, *redis.Options)) *node {
	tb.Helper()
	hc := hub.Config{Node: "fault-1", Heartbeat: 2 * time.Second, AckTimeout: 2 * time.Second,
		StoreTimeout: time.Second, Workers: 8, Logger: slog.New(slog.DiscardHandler)}
	ro := redis.Options{URL: url, Prefix: fmt.Sprintf("f%d", time.Now().UnixNano()), ConnTimeout: 2 * time.Second}
	if edit != nil {
		edit(&hc, &ro)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redis.Open(ctx, ro)
	if err != nil {
		tb.Fatalf("open redis store: %v", err)
	}
	reg := prometheus.NewRegistry()
	hc.Metrics = hub.NewMetrics(reg)
	hc.Fleet = st.Fleet()
	h := hub.New(st, hc)
	if err := h.Open(); err != nil {
		st.Close()
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "-",
		TokenSecret: []byte(testSecret), APIKey: testAPIKey, Gatherer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Open(); err != nil {
		h.Close()
		st.Close()
		tb.Fatalf("open server: %v", err)
	}
	_, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	n := &node{Hub: h, Server: srv, Redis: st, Metrics: hc.Metrics, URL: "http://" + srv.Addr(),
		WSURL: "ws://" + srv.Addr(), Port: p, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	tb.Cleanup(func() {
		tr.CloseIdleConnections()
		n.Hub.Close()
		n.Server.Close()
		n.Redis.Close()
	})
	return n
}

func mustToken(tb testing.TB, device string, groups ...string) string {
	tb.Helper()
	tok, err := token.Sign([]byte(testSecret), token.Claims{Device: device, Groups: groups, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// answer is one HTTP API answer.
type answer struct {
	Status     int
	RetryAfter string
	Body       []byte
	Took       time.Duration
}

// do calls the HTTP API with the API key; a transport error is returned.
func (n *node) do(method, path string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	start := time.Now()
	resp, err := n.client.Do(req)
	if err != nil {
		return answer{Took: time.Since(start)}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: raw, Took: time.Since(start)}, nil
}

// publish posts one message and returns the answer and the message id of
// a 202.
func (n *node) publish(target string, data any) (answer, string, error) {
	a, err := n.do("POST", "/v1/messages", map[string]any{"target": target, "data": data})
	var out struct {
		ID string `json:"id"`
	}
	if err == nil && a.Status == http.StatusAccepted {
		_ = json.Unmarshal(a.Body, &out)
	}
	return a, out.ID, err
}

// mustPublish publishes and fails the test unless the answer is 202.
func (n *node) mustPublish(tb testing.TB, target string, data any) string {
	tb.Helper()
	a, id, err := n.publish(target, data)
	if err != nil || a.Status != http.StatusAccepted {
		tb.Fatalf("publish to %s: %d %s, %v; want 202", target, a.Status, a.Body, err)
	}
	return id
}

// wsConn is a raw WebSocket client connection.
type wsConn struct {
	net.Conn
	r io.Reader
}

// dial upgrades a connection for tok within timeout.
func (n *node) dial(tok string, timeout time.Duration) (*wsConn, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	dialer := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h), Protocols: []string{"tether.v1"}, Timeout: timeout}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, br, _, err := dialer.Dial(ctx, n.WSURL+"/v1/connect")
	if err != nil {
		return nil, err
	}
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	return &wsConn{Conn: c, r: r}, nil
}

// frame is a decoded server text frame.
type frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data json.RawMessage
}

// closeError is a close frame received.
type closeError struct{ Code int }

func (e closeError) Error() string { return fmt.Sprintf("closed with %d", e.Code) }

// next returns the next text frame by deadline, answering pings unless
// silent.
func (c *wsConn) next(deadline time.Time, silent bool) (frame, error) {
	_ = c.SetReadDeadline(deadline)
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			return frame{}, err
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			if !silent {
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_ = ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewPongFrame(f.Payload)))
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code := 1005
			if len(f.Payload) >= 2 {
				code = int(binary.BigEndian.Uint16(f.Payload))
			}
			return frame{}, closeError{code}
		}
		var fr frame
		if err := json.Unmarshal(f.Payload, &fr); err != nil {
			return frame{}, fmt.Errorf("frame %q: %v", f.Payload, err)
		}
		return fr, nil
	}
}

// send writes one masked text frame.
func (c *wsConn) send(v any) error {
	b, _ := json.Marshal(v)
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewTextFrame(b)))
}

// eventually polls cond every 20 ms until it holds or timeout passes.
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
