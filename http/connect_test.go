package http_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/token"
)

func TestWelcomeAndDelivery(t *testing.T) {
	n := mustOpenNode(t, nil)
	d := n.Dial(t, nodetest.MustToken(t, "pos-1", "shop-1"))
	w := d.MustNext("welcome")
	if w.Device != "pos-1" || len(w.Groups) != 1 || w.Groups[0] != "shop-1" || w.Node != "n1" || w.HeartbeatMS != 5000 {
		t.Fatalf("welcome = %+v", w)
	}
	id := n.Publish(t, "device:pos-1", map[string]any{"order": 42})
	m := d.MustNext("message")
	if m.ID != id || m.Target != "device:pos-1" || string(m.Data) != `{"order":42}` || m.Attempt != 1 {
		t.Fatalf("message = %+v, want id %s", m, id)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", m.PublishedAt); err != nil {
		t.Fatalf("published_at %q: %v", m.PublishedAt, err)
	}
	d.Ack(id)
	nodetest.Eventually(t, 5*time.Second, "delivery acked", func() bool {
		var st struct {
			Deliveries []struct{ Device, State string } `json:"deliveries"`
		}
		n.API(t, "GET", "/v1/messages/"+id, nil, &st)
		return len(st.Deliveries) == 1 && st.Deliveries[0].State == "acked"
	})
}

func TestRedeliveryAfterAckTimeout(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.AckTimeout = 200 * time.Millisecond })
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	id := n.Publish(t, "device:pos-1", "hello")
	if m := d.MustNext("message"); m.ID != id || m.Attempt != 1 {
		t.Fatalf("first = %+v", m)
	}
	m := d.MustNext("message")
	if m.ID != id || m.Attempt != 2 {
		t.Fatalf("redelivery = %+v, want %s attempt 2", m, id)
	}
	d.Ack(id)
	// Once acked it is never sent again: the backoff would have resent it
	// after 400 ms.
	if f, err := d.Next(700 * time.Millisecond); err == nil {
		t.Fatalf("got %+v after ack, want nothing", f)
	}
}

func TestOfflineThenReconnect(t *testing.T) {
	n := mustOpenNode(t, nil)
	tok := nodetest.MustToken(t, "pos-1")
	d := n.Dial(t, tok)
	d.MustNext("welcome")
	d.Conn.Close()
	nodetest.Eventually(t, 5*time.Second, "device offline", func() bool { return n.Hub.Connections() == 0 })
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, n.Publish(t, "device:pos-1", i))
	}
	d = n.Dial(t, tok)
	d.MustNext("welcome")
	for i, id := range ids {
		if m := d.MustNext("message"); m.ID != id {
			t.Fatalf("message %d = %s, want %s (publish order)", i, m.ID, id)
		}
	}
	// Unacked deliveries come again on the next connection, attempt 2.
	d.Conn.Close()
	d = n.Dial(t, tok)
	d.MustNext("welcome")
	if m := d.MustNext("message"); m.ID != ids[0] || m.Attempt != 2 {
		t.Fatalf("after reconnect = %+v, want %s attempt 2", m, ids[0])
	}
}

func TestTakeover(t *testing.T) {
	n := mustOpenNode(t, nil)
	tok := nodetest.MustToken(t, "pos-1")
	old := n.Dial(t, tok)
	old.MustNext("welcome")
	d := n.Dial(t, tok)
	d.MustNext("welcome")
	old.MustClose(4409, 5*time.Second)
	id := n.Publish(t, "device:pos-1", 1)
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("new session got %+v", m)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.Heartbeat = 200 * time.Millisecond })
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.Silent = true // never answers pings
	d.MustNext("welcome")
	start := time.Now()
	d.MustClose(4408, 3*time.Second)
	if el := time.Since(start); el < 300*time.Millisecond || el > 2*time.Second {
		t.Fatalf("closed after %v, want about 2 x heartbeat (400ms)", el)
	}
}

func TestDrain(t *testing.T) {
	n := mustOpenNode(t, nil)
	var ds []*nodetest.Device
	for _, dev := range []string{"a", "b", "c"} {
		d := n.Dial(t, nodetest.MustToken(t, dev))
		d.MustNext("welcome")
		ds = append(ds, d)
	}
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Hub.Shutdown(ctx) }()
	nodetest.Eventually(t, time.Second, "readyz 503", func() bool { return n.API(t, "GET", "/readyz", nil, nil) == 503 })
	if _, code, _ := n.TryDial(nodetest.MustToken(t, "late"), nil); code != 503 {
		t.Fatalf("connect while draining: status %d, want 503", code)
	}
	for _, d := range ds {
		d.MustClose(1001, 3*time.Second)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestDrainSpreadsCloses: a drain closes its sessions with 1001 one by one
// over half of the shutdown deadline, not all at once, so that the devices
// do not reconnect elsewhere in one wave.
func TestDrainSpreadsCloses(t *testing.T) {
	const devices = 20
	n := mustOpenNode(t, nil)
	type closed struct {
		at  time.Time
		err error
	}
	got := make(chan closed, devices)
	for i := range devices {
		d := n.Dial(t, nodetest.MustToken(t, fmt.Sprintf("spread-%d", i)))
		d.MustNext("welcome")
		go func() {
			for {
				if _, err := d.Next(10 * time.Second); err != nil {
					got <- closed{time.Now(), err}
					return
				}
			}
		}()
	}
	const deadline = 4 * time.Second // a window of about 2 s
	ctx, cancel := contextWithTimeout(deadline)
	defer cancel()
	start := time.Now()
	if err := n.Hub.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var first, last time.Time
	for range devices {
		c := <-got
		if ce, ok := c.err.(nodetest.CloseError); !ok || ce.Code != 1001 {
			t.Fatalf("a device ended with %v, want close 1001", c.err)
		}
		if first.IsZero() || c.at.Before(first) {
			first = c.at
		}
		if c.at.After(last) {
			last = c.at
		}
	}
	// 20 closes a window/20 apart span 19/20 of the window (1.9 s); an
	// unspread drain spans a few milliseconds.
	if spread := last.Sub(first); spread < time.Second || last.Sub(start) > deadline {
		t.Fatalf("closes spread over %v, the last %v after the drain began; want at least 1s, within %v", spread, last.Sub(start), deadline)
	}
	t.Logf("%d closes spread over %v", devices, last.Sub(first))
}

func TestBadTokens(t *testing.T) {
	n := mustOpenNode(t, nil)
	expired, _ := token.Sign([]byte(nodetest.TokenSecret), token.Claims{Device: "pos-1", ExpiresAt: time.Now().Add(-time.Minute)})
	wrong, _ := token.Sign([]byte("other-secret"), token.Claims{Device: "pos-1", ExpiresAt: time.Now().Add(time.Hour)})
	for name, tok := range map[string]string{"none": "", "garbage": "abc.def.ghi", "expired": expired, "wrong secret": wrong} {
		if _, code, _ := n.TryDial(tok, nil); code != 401 {
			t.Errorf("%s: status %d, want 401", name, code)
		}
	}
	// The query parameter works for browsers, which cannot set headers.
	d, code, err := n.TryDialPath("/v1/connect?token="+nodetest.MustToken(t, "pos-1"), nil)
	if err != nil {
		t.Fatalf("token in query: status %d: %v", code, err)
	}
	d.Conn.Close()
}

func TestUnknownFrameKeepsConnection(t *testing.T) {
	n := mustOpenNode(t, nil)
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	d.Send(`{"type":"subscribe","channel":"x"}`)
	e := d.MustNext("error")
	if e.Code != "unknown_type" || !strings.Contains(e.Message, "subscribe") {
		t.Fatalf("error frame = %+v", e)
	}
	d.Send(`{"type":"ping"}`)
	d.MustNext("pong")
	id := n.Publish(t, "device:pos-1", true)
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("after unknown type: %+v", m)
	}
}

func TestBadFramesClose(t *testing.T) {
	n := mustOpenNode(t, func(_ *hub.Config, c *tetherhttp.Config) { c.MaxMessageBytes = 1024 })
	cases := []struct {
		name  string
		frame ws.Frame
		code  int
	}{
		{"binary", ws.NewBinaryFrame([]byte{1, 2}), 1003},
		{"not json", ws.NewTextFrame([]byte("hello")), 1007},
		{"json array", ws.NewTextFrame([]byte(`[1,2]`)), 1007},
		{"too big", ws.NewTextFrame([]byte(`{"type":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)), 1009},
		{"ack not array", ws.NewTextFrame([]byte(`{"type":"ack","ids":"x"}`)), 1008},
	}
	other := n.Dial(t, nodetest.MustToken(t, "bystander"))
	other.MustNext("welcome")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
			d.MustNext("welcome")
			d.SendFrame(c.frame)
			d.MustClose(c.code, 3*time.Second)
		})
	}
	other.Send(`{"type":"ping"}`)
	other.MustNext("pong")
}

func TestOriginAndLimits(t *testing.T) {
	n := mustOpenNode(t, func(_ *hub.Config, c *tetherhttp.Config) {
		c.AllowedOrigins = []string{"https://shop.example"}
		c.MaxConnections = 1
	})
	tok := nodetest.MustToken(t, "pos-1")
	for _, o := range []string{"https://evil.example", "null", "http://shop.example", "https://shop.example:444", "https://a.shop.example"} {
		if _, code, _ := n.TryDial(tok, http.Header{"Origin": {o}}); code != 403 {
			t.Errorf("origin %s: status %d, want 403", o, code)
		}
	}
	d, code, err := n.TryDial(tok, http.Header{"Origin": {"https://shop.example"}})
	if err != nil {
		t.Fatalf("allowed origin: %d %v", code, err)
	}
	defer d.Conn.Close()
	if _, code, _ := n.TryDial(nodetest.MustToken(t, "pos-2"), nil); code != 503 {
		t.Fatalf("over --max-connections: status %d, want 503", code)
	}
}

func TestFrameFloodClosed4429(t *testing.T) {
	n := mustOpenNode(t, nil)
	other := n.Dial(t, nodetest.MustToken(t, "bystander"))
	other.MustNext("welcome")
	d := n.Dial(t, nodetest.MustToken(t, "flooder"))
	d.MustNext("welcome")
	for i := 0; i < 2*hub.DefaultMaxFrameRate+50; i++ {
		if err := ws.WriteFrame(d.Conn, ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"ack","ids":["unknown"]}`)))); err != nil {
			break // the server may already have closed
		}
	}
	d.MustClose(4429, 3*time.Second)
	other.Send(`{"type":"ping"}`)
	other.MustNext("pong")
}
