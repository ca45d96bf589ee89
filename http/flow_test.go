package http_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/token"
)

func TestInflightWindow(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.MaxInflight = 3 })
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	if w := d.MustNext("welcome"); w.Node != "n1" {
		t.Fatalf("welcome %+v", w)
	}
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, n.Publish(t, "device:pos-1", i))
	}
	for i := 0; i < 3; i++ {
		if m := d.MustNext("message"); m.ID != ids[i] {
			t.Fatalf("message %d = %s, want %s", i, m.ID, ids[i])
		}
	}
	if f, err := d.Next(300 * time.Millisecond); err == nil {
		t.Fatalf("a 4th delivery with 3 unacked and --max-inflight 3: %+v", f)
	}
	d.Ack(ids[0])
	if m := d.MustNext("message"); m.ID != ids[3] {
		t.Fatalf("after one ack got %s, want %s", m.ID, ids[3])
	}
}

func TestTokenExpiresDuringSession(t *testing.T) {
	n := mustOpenNode(t, nil)
	tok, err := token.Sign([]byte(nodetest.TokenSecret), token.Claims{Device: "pos-1", ExpiresAt: time.Now().Add(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	d := n.Dial(t, tok)
	d.MustNext("welcome")
	e := d.MustNext("error")
	if e.Code != "token_expired" {
		t.Fatalf("error frame %+v", e)
	}
	d.MustClose(4401, 3*time.Second)
}

// TestSlowConsumer: a device that stops reading is closed with 4503 once a
// write passes its deadline; its messages wait in the store; the other
// devices are not held up.
func TestSlowConsumer(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) {
		h.WriteTimeout = 200 * time.Millisecond
		h.MaxInflight = 1000
		h.Heartbeat = time.Minute // the raw test clients do not answer pings
	})
	slow := n.Dial(t, nodetest.MustToken(t, "slow", "shop"))
	slow.MustNext("welcome")
	fast := n.Dial(t, nodetest.MustToken(t, "fast", "shop"))
	fast.MustNext("welcome")
	big := strings.Repeat("x", 60<<10)
	const msgs = 400
	for i := 0; i < msgs; i++ { // 24 MB: more than loopback socket buffers hold
		var out struct{ ID string }
		if code := n.API(t, "POST", "/v1/messages", map[string]any{"target": "device:slow", "data": big}, &out); code != 202 {
			t.Fatalf("publish %d: %d", i, code)
		}
	}
	nodetest.Eventually(t, 10*time.Second, "4503 close", func() bool {
		return testutil.ToFloat64(n.Metrics.Closes.WithLabelValues("4503")) == 1
	})
	id := n.Publish(t, "group:shop", "still flowing")
	if m := fast.MustNext("message"); m.ID != id {
		t.Fatalf("fast device got %+v", m)
	}
	var dev struct {
		Online  bool `json:"online"`
		Pending int  `json:"pending"`
	}
	n.API(t, "GET", "/v1/devices/slow", nil, &dev)
	if dev.Online || dev.Pending != msgs+1 { // + the group message
		t.Fatalf("slow device = %+v, want offline with %d pending", dev, msgs+1)
	}
}
