package client_test

// The SDK against a real tether node, started in-process on the embedded
// store and a loopback port, as http/main_test.go does for the gateway's own
// end-to-end tests.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/client"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
	"github.com/tetherpush/tether/wire"
)

const (
	gwSecret     = "gateway-test-token-secret"
	gwAPIKey     = "gateway-test-api-key"
	gwNode       = "gw-1"
	gwHeartbeat  = time.Second
	gwAckTimeout = 300 * time.Millisecond
)

// gateway is one in-process tether node: bolt store, hub, HTTP server.
type gateway struct {
	dir   string
	addr  string // host:port of the API and WebSocket listener
	wsURL string
	reg   *prometheus.Registry
	hub   *hub.Hub
	srv   *tetherhttp.Server
	store *bolt.Store
	api   *http.Client

	closeOnce sync.Once
}

// mustOpenGateway starts a node on the store in dir, listening on listen
// ("127.0.0.1:0" for any port); edit, if not nil, adjusts the hub's
// config. The node is closed when the test ends.
func mustOpenGateway(tb testing.TB, dir, listen string, edit func(*hub.Config)) *gateway {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	reg := prometheus.NewRegistry()
	hc := hub.Config{Node: gwNode, Heartbeat: gwHeartbeat, AckTimeout: gwAckTimeout, Metrics: hub.NewMetrics(reg), Workers: 4}
	if edit != nil {
		edit(&hc)
	}
	h := hub.New(st, hc)
	if err := h.Open(); err != nil {
		st.Close()
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{
		Listen: listen, AdminListen: "-", TokenSecret: []byte(gwSecret), APIKey: gwAPIKey,
	})
	if err := srv.Open(); err != nil {
		h.Close()
		st.Close()
		tb.Fatalf("open server on %s: %v", listen, err)
	}
	g := &gateway{
		dir: dir, addr: srv.Addr(), wsURL: "ws://" + srv.Addr(), reg: reg, hub: h, srv: srv, store: st,
		api: &http.Client{Transport: &http.Transport{}, Timeout: waitTimeout},
	}
	tb.Cleanup(g.close)
	return g
}

// close stops the node at once, as a crash of the process would, except
// that the store file is closed cleanly. Idempotent.
func (g *gateway) close() {
	g.closeOnce.Do(func() {
		g.hub.Close()
		g.srv.Close()
		g.store.Close()
		g.api.CloseIdleConnections()
	})
}

// call calls the HTTP API and decodes a 2xx answer into out.
func (g *gateway) call(tb testing.TB, method, path string, body, out any) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+g.addr+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gwAPIKey)
	resp, err := g.api.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
}

// publish publishes data to target and returns the message id.
func (g *gateway) publish(tb testing.TB, target string, data any) string {
	tb.Helper()
	var out struct {
		ID string `json:"id"`
	}
	g.call(tb, "POST", "/v1/messages", map[string]any{"target": target, "data": data}, &out)
	if out.ID == "" {
		tb.Fatalf("publish to %s: no id in the answer", target)
	}
	return out.ID
}

// delivery is one device's delivery in GET /v1/messages/{id}.
type delivery struct {
	Device   string     `json:"device"`
	State    string     `json:"state"`
	Attempts int        `json:"attempts"`
	AckedAt  *time.Time `json:"acked_at"`
}

// delivery returns the delivery of message id to device.
func (g *gateway) delivery(tb testing.TB, id, device string) delivery {
	tb.Helper()
	var out struct {
		Deliveries []delivery `json:"deliveries"`
	}
	g.call(tb, "GET", "/v1/messages/"+id, nil, &out)
	for _, d := range out.Deliveries {
		if d.Device == device {
			return d
		}
	}
	tb.Fatalf("message %s has no delivery to %s: %+v", id, device, out.Deliveries)
	return delivery{}
}

// waitAcked waits until the delivery of message id to device is acked, and
// returns it.
func (g *gateway) waitAcked(tb testing.TB, id, device string) delivery {
	tb.Helper()
	var d delivery
	eventually(tb, "message "+id+" acked by "+device, func() bool {
		d = g.delivery(tb, id, device)
		return d.State == "acked"
	})
	if d.AckedAt == nil {
		tb.Errorf("message %s acked by %s without acked_at", id, device)
	}
	return d
}

// counter returns the value of the counter name in the node's registry.
func (g *gateway) counter(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("no counter %s in the node's registry", name)
	return 0
}

// mustGatewayToken mints a device token the node accepts.
func mustGatewayToken(tb testing.TB, device string, groups ...string) string {
	tb.Helper()
	tok, err := token.Sign([]byte(gwSecret), token.Claims{Device: device, Groups: groups, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// dialGateway starts a client of url with tok and short timings, recording
// into r; it is closed when the test ends. edit, if not nil, adjusts the
// config first.
func dialGateway(tb testing.TB, url, tok string, r *recorder, edit func(*client.Config)) *client.Client {
	tb.Helper()
	cfg := client.Config{
		URL:        url,
		Token:      tok,
		Handler:    r.handler,
		OnState:    r.onState,
		AckBatch:   20 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond every 10 ms until it holds, failing after
// waitTimeout.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHandled waits until the handler has accepted exactly n messages and
// returns their ids in order.
func (r *recorder) waitHandled(tb testing.TB, n int) []string {
	tb.Helper()
	var ids []string
	eventually(tb, fmt.Sprintf("%d messages handled", n), func() bool {
		ids = r.handledIDs()
		return len(ids) >= n
	})
	if len(ids) != n {
		tb.Fatalf("handled %q, want %d messages", ids, n)
	}
	return ids
}

// message returns the i-th message the handler accepted.
func (r *recorder) message(i int) client.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled[i]
}

func TestGatewayDeliverAndAck(t *testing.T) {
	g := mustOpenGateway(t, t.TempDir(), "127.0.0.1:0", nil)
	r := newRecorder()
	c := dialGateway(t, g.wsURL, mustGatewayToken(t, "pos-1", "shop-1"), r, nil)
	r.waitState(t, client.StateConnected)

	w, ok := c.Welcome()
	want := wire.Welcome{Type: wire.TypeWelcome, Device: "pos-1", Groups: []string{"shop-1"}, Node: gwNode,
		HeartbeatMS: gwHeartbeat.Milliseconds(), AckTimeoutMS: gwAckTimeout.Milliseconds(), MaxInflight: 256}
	if !ok || w.Type != want.Type || w.Device != want.Device || !slices.Equal(w.Groups, want.Groups) || w.Node != want.Node ||
		w.HeartbeatMS != want.HeartbeatMS || w.AckTimeoutMS != want.AckTimeoutMS || w.MaxInflight != want.MaxInflight {
		t.Errorf("Welcome() = %+v, %v; want %+v", w, ok, want)
	}

	before := time.Now()
	id := g.publish(t, "group:shop-1", map[string]any{"order": "A-17", "total": 12.5})
	if got := r.waitHandled(t, 1); got[0] != id {
		t.Fatalf("handled %q, want %s", got, id)
	}
	m := r.message(0)
	if m.Target != "group:shop-1" || m.Attempt != 1 || !jsonEqual(m.Data, `{"order":"A-17","total":12.5}`) {
		t.Errorf("message = %s, want the order to group:shop-1, attempt 1", mustJSON(t, m))
	}
	if m.PublishedAt.Before(before.Add(-time.Second)) || m.PublishedAt.After(time.Now()) {
		t.Errorf("PublishedAt = %v, want between %v and now", m.PublishedAt, before)
	}
	if d := g.waitAcked(t, id, "pos-1"); d.Attempts != 1 {
		t.Errorf("delivery %+v, want acked after 1 attempt", d)
	}
}

// jsonEqual reports whether raw holds the same JSON value as want.
func jsonEqual(raw json.RawMessage, want string) bool {
	var a, b any
	return json.Unmarshal(raw, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && reflect.DeepEqual(a, b)
}

func TestGatewayHandlerErrorRedelivered(t *testing.T) {
	g := mustOpenGateway(t, t.TempDir(), "127.0.0.1:0", nil)
	type call struct {
		m  client.Message
		at time.Time
	}
	var mu sync.Mutex
	var calls []call
	r := newRecorder()
	dialGateway(t, g.wsURL, mustGatewayToken(t, "pos-1"), r, func(cfg *client.Config) {
		cfg.Handler = func(_ context.Context, m client.Message) error {
			mu.Lock()
			calls = append(calls, call{m, time.Now()})
			mu.Unlock()
			if m.Attempt == 1 {
				return errors.New("printer out of paper")
			}
			return nil
		}
	})
	r.waitState(t, client.StateConnected)

	id := g.publish(t, "device:pos-1", map[string]string{"order": "A-18"})
	d := g.waitAcked(t, id, "pos-1")
	if d.Attempts != 2 {
		t.Errorf("delivery %+v, want acked at attempt 2", d)
	}
	time.Sleep(2 * gwAckTimeout) // an acked message is never sent again

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("handler called %d times, want 2 (fail, then succeed)", len(calls))
	}
	for i, c := range calls {
		if c.m.ID != id || c.m.Attempt != i+1 {
			t.Errorf("call %d: message %s attempt %d, want %s attempt %d", i, c.m.ID, c.m.Attempt, id, i+1)
		}
	}
	if gap := calls[1].at.Sub(calls[0].at); gap < gwAckTimeout*2/3 {
		t.Errorf("redelivered after %v, want about the ack timeout %v", gap, gwAckTimeout)
	}
}

func TestGatewayRestartReconnects(t *testing.T) {
	dir := t.TempDir()
	// The ack timeout outlasts the client's ack batching: every redelivery
	// the test sees is one of a restart.
	slowAck := func(hc *hub.Config) { hc.AckTimeout = 10 * time.Second }
	g1 := mustOpenGateway(t, dir, "127.0.0.1:0", slowAck)
	r := newRecorder()
	c := dialGateway(t, g1.wsURL, mustGatewayToken(t, "pos-1", "shop-1"), r, func(cfg *client.Config) {
		cfg.AckBatch = time.Second // m1's ack is still queued when the node dies
		cfg.MinBackoff = 50 * time.Millisecond
		cfg.MaxBackoff = 400 * time.Millisecond
	})
	r.waitState(t, client.StateConnected)

	m1 := g1.publish(t, "group:shop-1", map[string]string{"order": "before"})
	r.waitHandled(t, 1)
	g1.close()

	// The client sees the node go, then fails to dial while it is down.
	ev := r.waitState(t, client.StateDisconnected)
	var ce *client.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != wire.CloseGoingAway {
		t.Errorf("disconnected with %v, want close code %d", ev.err, wire.CloseGoingAway)
	}
	for { // a redial racing the close may still reach the draining node
		ev = r.waitState(t, client.StateDisconnected)
		if errors.Is(ev.err, syscall.ECONNREFUSED) {
			break
		}
	}
	time.Sleep(300 * time.Millisecond) // a few more backoff rounds

	g2 := mustOpenGateway(t, dir, g1.addr, slowAck)
	m2 := g2.publish(t, "group:shop-1", map[string]string{"order": "meanwhile"})
	r.waitState(t, client.StateConnected)
	if got := r.waitHandled(t, 2); !slices.Equal(got, []string{m1, m2}) {
		t.Fatalf("handled %q, want [%s %s]: m1 once, then what was published meanwhile", got, m1, m2)
	}
	// m1's ack died with the first node: the second sent it again, and the
	// client acked it from its de-duplication set. The first node stopped
	// at once, before it committed its send (first sends are committed
	// lazily), so the attempt count may have started again.
	if d := g2.waitAcked(t, m1, "pos-1"); d.Attempts < 1 || d.Attempts > 2 {
		t.Errorf("m1 delivery %+v, want acked after 1 or 2 attempts (its first ack was lost)", d)
	}
	if d := g2.waitAcked(t, m2, "pos-1"); d.Attempts != 1 {
		t.Errorf("m2 delivery %+v, want acked after 1 attempt", d)
	}
	if got := r.handledIDs(); len(got) != 2 {
		t.Errorf("handled %q, want m1 and m2 once each", got)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err() = %v, want nil while it runs", err)
	}
}

func TestGatewayTakeover(t *testing.T) {
	g := mustOpenGateway(t, t.TempDir(), "127.0.0.1:0", nil)
	tok := mustGatewayToken(t, "pos-1", "shop-1")
	r1, r2 := newRecorder(), newRecorder()
	c1 := dialGateway(t, g.wsURL, tok, r1, nil)
	r1.waitState(t, client.StateConnected)
	c2 := dialGateway(t, g.wsURL, tok, r2, nil)
	r2.waitState(t, client.StateConnected)

	ev := r1.waitState(t, client.StateClosed)
	var ce *client.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != wire.CloseReplaced {
		t.Fatalf("first client closed with %v, want close code %d", ev.err, wire.CloseReplaced)
	}
	select {
	case <-c1.Done():
	case <-time.After(waitTimeout):
		t.Fatal("first client still running after 4409")
	}
	if !errors.As(c1.Err(), &ce) || ce.Code != wire.CloseReplaced {
		t.Errorf("first client Err() = %v, want close code %d", c1.Err(), wire.CloseReplaced)
	}

	// The first client stays away: the second keeps its session and gets
	// the next message.
	time.Sleep(500 * time.Millisecond) // 2.5 × MaxBackoff
	id := g.publish(t, "group:shop-1", map[string]string{"order": "A-19"})
	if got := r2.waitHandled(t, 1); got[0] != id {
		t.Fatalf("second client handled %q, want %s", got, id)
	}
	g.waitAcked(t, id, "pos-1")
	for drained := false; !drained; {
		select {
		case ev := <-r2.states:
			t.Errorf("second client went %v (%v), want it connected throughout", ev.state, ev.err)
		default:
			drained = true
		}
	}
	if got := r1.handledIDs(); len(got) != 0 {
		t.Errorf("first client handled %q after it was replaced", got)
	}
	if err := c2.Err(); err != nil {
		t.Errorf("second client Err() = %v, want nil", err)
	}
}

func TestGatewayBurstOrderedAndBatchedAcks(t *testing.T) {
	const n = 100
	g := mustOpenGateway(t, t.TempDir(), "127.0.0.1:0", func(hc *hub.Config) {
		hc.AckTimeout = 10 * time.Second // no redelivery muddles the ack count
	})
	p := mustProxy(t, g.addr)
	r := newRecorder()
	dialGateway(t, "ws://"+p.addr(), mustGatewayToken(t, "pos-1"), r, func(cfg *client.Config) {
		cfg.AckBatch = 0 // DefaultAckBatch, DefaultAckMax
	})
	r.waitState(t, client.StateConnected)

	msgs := make([]map[string]any, n)
	for i := range msgs {
		msgs[i] = map[string]any{"target": "device:pos-1", "data": map[string]int{"n": i}}
	}
	var out struct {
		Results []struct {
			ID string `json:"id"`
		} `json:"results"`
	}
	g.call(t, "POST", "/v1/messages/batch", map[string]any{"messages": msgs}, &out)
	if len(out.Results) != n {
		t.Fatalf("batch published %d messages, want %d", len(out.Results), n)
	}
	published := make([]string, n)
	for i, res := range out.Results {
		published[i] = res.ID
	}
	if !sort.StringsAreSorted(published) {
		t.Errorf("batch ids %q do not sort in publish order", published)
	}

	if got := r.waitHandled(t, n); !slices.Equal(got, published) {
		t.Fatalf("handled\n%q\nwant publish order\n%q", got, published)
	}
	for i := range n {
		if m := r.message(i); m.Attempt != 1 || !jsonEqual(m.Data, fmt.Sprintf(`{"n":%d}`, i)) {
			t.Errorf("message %d = %s, want data {\"n\":%d}, attempt 1", i, mustJSON(t, m), i)
		}
	}
	eventually(t, "all acks in the store", func() bool { return g.counter(t, "tether_acks_total") == n })

	frames := p.ackFrames()
	var acked []string
	for _, ids := range frames {
		acked = append(acked, ids...)
	}
	if !slices.Equal(acked, published) {
		t.Errorf("acked ids %q, want each message once in order", acked)
	}
	if len(frames) >= n/2 {
		t.Errorf("%d ack frames for %d messages, want them batched", len(frames), n)
	}
	t.Logf("%d messages acked in %d frames", n, len(frames))
}

// proxy forwards TCP connections to a node and records the ack frames the
// clients send, forwarding every byte unchanged.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex // guards following
	closed bool
	conns  []net.Conn
	acks   [][]string
}

// mustProxy starts a proxy to target; it stops when the test ends.
func mustProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.acceptLoop)
	tb.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// ackFrames returns the ids of every ack frame seen, frame by frame.
func (p *proxy) ackFrames() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acks)
}

func (p *proxy) acceptLoop() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, waitTimeout)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			down.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Go(func() {
			io.Copy(down, up)
			down.Close()
			up.Close()
		})
		p.wg.Go(func() {
			p.forward(up, down)
			down.Close()
			up.Close()
		})
	}
}

// forward copies the client's handshake request, then its frames one by
// one, recording ack frames.
func (p *proxy) forward(up net.Conn, down net.Conn) {
	br := bufio.NewReader(down)
	for { // request line and headers
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := up.Write(line); err != nil {
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	for {
		f, err := ws.ReadFrame(br)
		if err != nil {
			return
		}
		if f.Header.OpCode == ws.OpText {
			p.record(f)
		}
		if err := ws.WriteFrame(up, f); err != nil {
			return
		}
	}
}

// record notes f if it is an ack frame. Client frames are masked.
func (p *proxy) record(f ws.Frame) {
	payload := bytes.Clone(f.Payload)
	if f.Header.Masked {
		ws.Cipher(payload, f.Header.Mask, 0)
	}
	cf, err := wire.DecodeClient(payload)
	if err != nil || cf.Type != wire.TypeAck {
		return
	}
	p.mu.Lock()
	p.acks = append(p.acks, cf.IDs)
	p.mu.Unlock()
}
