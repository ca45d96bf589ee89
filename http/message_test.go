package http_test

import (
	"strings"
	"testing"
	"time"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
)

func TestGroupMembershipFromTokenAndAPI(t *testing.T) {
	n := mustOpenNode(t, nil)
	a := n.Dial(t, nodetest.MustToken(t, "pos-a", "shop-1"))
	a.MustNext("welcome")
	if code := n.API(t, "PUT", "/v1/groups/shop-1/devices/pos-b", nil, nil); code != 204 {
		t.Fatalf("PUT member: %d", code)
	}
	var pub struct {
		ID         string `json:"id"`
		Recipients int    `json:"recipients"`
	}
	if code := n.API(t, "POST", "/v1/messages", map[string]any{"target": "group:shop-1", "data": map[string]int{"order": 7}}, &pub); code != 202 || pub.Recipients != 2 {
		t.Fatalf("publish: %d %+v, want 202 with 2 recipients", code, pub)
	}
	if m := a.MustNext("message"); m.ID != pub.ID || m.Target != "group:shop-1" {
		t.Fatalf("pos-a got %+v", m)
	}
	b := n.Dial(t, nodetest.MustToken(t, "pos-b"))
	b.MustNext("welcome")
	if m := b.MustNext("message"); m.ID != pub.ID {
		t.Fatalf("pos-b (offline at publish) got %+v", m)
	}
	var g struct {
		ID      string `json:"id"`
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	n.API(t, "GET", "/v1/groups/shop-1", nil, &g)
	if len(g.Devices) != 2 || g.Devices[0].ID != "pos-a" || !g.Devices[0].Online || g.Devices[1].ID != "pos-b" {
		t.Fatalf("group = %+v", g)
	}
	if code := n.API(t, "DELETE", "/v1/groups/shop-1/devices/pos-b", nil, nil); code != 204 {
		t.Fatalf("DELETE member: %d", code)
	}
	n.API(t, "POST", "/v1/messages", map[string]any{"target": "group:shop-1", "data": 1}, &pub)
	if pub.Recipients != 1 {
		t.Fatalf("after DELETE: %d recipients, want 1", pub.Recipients)
	}
	var dev struct {
		ID      string   `json:"id"`
		Groups  []string `json:"groups"`
		Online  bool     `json:"online"`
		Node    string   `json:"node"`
		Pending int      `json:"pending"`
	}
	n.API(t, "GET", "/v1/devices/pos-a", nil, &dev)
	if dev.ID != "pos-a" || !dev.Online || dev.Node != "n1" || len(dev.Groups) != 1 || dev.Pending != 2 {
		t.Fatalf("device = %+v, want online on n1 in shop-1 with 2 pending", dev)
	}
}

func TestIdempotentPublishAndBatch(t *testing.T) {
	n := mustOpenNode(t, nil)
	body := map[string]any{"target": "device:pos-1", "data": "x", "id": "order-1"}
	var first, again struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	if code := n.API(t, "POST", "/v1/messages", body, &first); code != 202 || first.Duplicate {
		t.Fatalf("first: %d %+v", code, first)
	}
	if code := n.API(t, "POST", "/v1/messages", body, &again); code != 200 || !again.Duplicate || again.ID != first.ID {
		t.Fatalf("repeat: %d %+v, want 200 duplicate of %s", code, again, first.ID)
	}
	var batch struct {
		Results []struct {
			ID         string `json:"id"`
			Recipients int    `json:"recipients"`
			Duplicate  bool   `json:"duplicate"`
			Error      *struct{ Code, Message string }
		} `json:"results"`
	}
	code := n.API(t, "POST", "/v1/messages/batch", map[string]any{"messages": []any{
		map[string]any{"target": "device:pos-1", "data": 1},
		map[string]any{"target": "nowhere", "data": 2},
		map[string]any{"target": "device:pos-1", "data": 3, "id": "order-1"},
	}}, &batch)
	if code != 200 || len(batch.Results) != 3 {
		t.Fatalf("batch: %d %+v", code, batch)
	}
	if r := batch.Results[0]; r.ID == "" || r.Recipients != 1 || r.Error != nil {
		t.Errorf("result 0 = %+v", r)
	}
	if r := batch.Results[1]; r.Error == nil || r.Error.Code != "invalid" || !strings.Contains(r.Error.Message, "nowhere") {
		t.Errorf("result 1 = %+v, want invalid target", r)
	}
	if r := batch.Results[2]; !r.Duplicate || r.ID != first.ID {
		t.Errorf("result 2 = %+v, want duplicate of %s", r, first.ID)
	}
}

func TestAPIErrors(t *testing.T) {
	n := mustOpenNode(t, func(_ *hub.Config, c *tetherhttp.Config) { c.MaxMessageBytes = 100 })
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if code := n.APIWithKey(t, "", "POST", "/v1/messages", map[string]any{"target": "device:a", "data": 1}, &e); code != 401 || e.Error.Code != "unauthorized" {
		t.Fatalf("no key: %d %+v", code, e)
	}
	if code := n.APIWithKey(t, "wrong", "GET", "/v1/devices/a", nil, &e); code != 401 {
		t.Fatalf("wrong key: %d", code)
	}
	cases := []struct {
		body any
		code int
	}{
		{`{"target":`, 400},
		{map[string]any{"target": "device:bad id", "data": 1}, 400},
		{map[string]any{"target": "device:a"}, 400},
		{map[string]any{"target": "device:a", "data": 1, "ttl_s": -1}, 400},
		{map[string]any{"target": "device:a", "data": strings.Repeat("x", 200)}, 413},
		{`{"target":"device:a","data":"` + strings.Repeat("x", 100<<10) + `"}`, 413},
	}
	for i, c := range cases {
		e.Error.Code = ""
		if code := n.API(t, "POST", "/v1/messages", c.body, &e); code != c.code || e.Error.Message == "" {
			t.Errorf("case %d: %d %+v, want %d with a message", i, code, e, c.code)
		}
	}
	if code := n.API(t, "GET", "/v1/messages/nope", nil, &e); code != 404 {
		t.Errorf("unknown message: %d", code)
	}
	if code := n.API(t, "GET", "/v1/devices/never-seen", nil, &e); code != 404 {
		t.Errorf("unknown device: %d", code)
	}
	if code := n.API(t, "GET", "/healthz", nil, nil); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	if code := n.API(t, "GET", "/readyz", nil, nil); code != 200 {
		t.Errorf("readyz: %d", code)
	}
}

func TestExpiryAndDeadDeliveries(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) {
		h.AckTimeout = 100 * time.Millisecond
		h.MaxAttempts = 2
		h.SweepInterval = 50 * time.Millisecond
	})
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	id := n.Publish(t, "device:pos-1", "never acked")
	d.MustNext("message")
	if m := d.MustNext("message"); m.Attempt != 2 {
		t.Fatalf("attempt = %d", m.Attempt)
	}
	if f, err := d.Next(500 * time.Millisecond); err == nil {
		t.Fatalf("sent again after --max-attempts: %+v", f)
	}
	state := func(id string) string {
		var st struct {
			Deliveries []struct{ State string } `json:"deliveries"`
		}
		n.API(t, "GET", "/v1/messages/"+id, nil, &st)
		if len(st.Deliveries) != 1 {
			return ""
		}
		return st.Deliveries[0].State
	}
	nodetest.Eventually(t, 2*time.Second, "dead", func() bool { return state(id) == "dead" })

	var out struct{ ID string }
	n.API(t, "POST", "/v1/messages", map[string]any{"target": "device:offline", "data": 1, "ttl_s": 0.2}, &out)
	nodetest.Eventually(t, 3*time.Second, "expired", func() bool { return state(out.ID) == "expired" })
	o := n.Dial(t, nodetest.MustToken(t, "offline"))
	o.MustNext("welcome")
	if f, err := o.Next(300 * time.Millisecond); err == nil {
		t.Fatalf("expired message delivered: %+v", f)
	}
}

// TestLeaveWhileConnected: a device that left a group while connected gets
// nothing published to the group afterwards, also when it was owed nothing
// more (the store then drops its cursor of the group), on both stores.
// Found by TestModelDelivery: the session kept reading the group's log.
func TestLeaveWhileConnected(t *testing.T) {
	r := redistest.Start(t)
	for name, open := range map[string]func(t *testing.T) *nodetest.Node{
		"bolt":  func(t *testing.T) *nodetest.Node { return mustOpenNode(t, nil) },
		"redis": func(t *testing.T) *nodetest.Node { return mustOpenFleetNode(t, r.URL(), false, "n1", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			n := open(t)
			for _, via := range []string{"api", "token"} {
				dev := "pos-" + name + "-" + via
				if via == "api" {
					n.API(t, "PUT", "/v1/groups/shop-1/devices/"+dev, nil, nil)
				} else {
					d := n.Connect(t, dev, "shop-1") // the token's group becomes a membership
					d.Conn.Close()
				}
				d := n.Connect(t, dev, "shop-2") // member of shop-1 and shop-2, owed nothing
				if code := n.API(t, "DELETE", "/v1/groups/shop-1/devices/"+dev, nil, nil); code != 204 {
					t.Fatalf("DELETE member: %d", code)
				}
				after := n.Publish(t, "group:shop-1", "after the leave")
				mark := n.Publish(t, "device:"+dev, "mark")
				for {
					f := d.MustNext("message")
					if f.ID == after {
						t.Fatalf("%s (left through the %s) got %s, published to shop-1 after it left", dev, via, after)
					}
					if f.ID == mark {
						break
					}
				}
			}
		})
	}
}
