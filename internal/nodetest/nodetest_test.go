package nodetest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNode: a device connects, receives a published message and acks it;
// the API, the admin listener's /metrics and the edit hook all work.
func TestNode(t *testing.T) {
	n := nodetest.MustOpen(t, nodetest.Options{IO: "goroutine", Edit: func(h *hub.Config, _ *tetherhttp.Config) { h.Node = "edited" }})
	d := n.Connect(t, "pos-1", "shop-1")
	id := n.Publish(t, "group:shop-1", map[string]int{"order": 1})
	if f := d.MustNext("message"); f.ID != id || string(f.Data) != `{"order":1}` {
		t.Fatalf("got %+v, want message %s", f, id)
	}
	d.Ack(id)
	nodetest.Eventually(t, 5*time.Second, "the ack stored", func() bool { return n.DeliveryState(t, id, "pos-1") == "acked" })
	var dev struct {
		Online bool   `json:"online"`
		Node   string `json:"node"`
	}
	if code := n.API(t, http.MethodGet, "/v1/devices/pos-1", nil, &dev); code != http.StatusOK || !dev.Online || dev.Node != "edited" {
		t.Errorf("GET /v1/devices/pos-1: %d %+v, want 200 online on node edited", code, dev)
	}
	if code := n.APIWithKey(t, "wrong", http.MethodGet, "/v1/devices/pos-1", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("wrong API key: %d, want 401", code)
	}
	resp, err := http.Get(n.AdminURL + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp, err)
	}
	resp.Body.Close()
	if n.Port == 0 || n.Dir == "" {
		t.Errorf("port %d, dir %q", n.Port, n.Dir)
	}
	d.SendFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	d.MustClose(1000, 5*time.Second)
	n.Close()
	n.Close() // idempotent
}

// TestDialRefused: a refused upgrade reports its status and headers.
func TestDialRefused(t *testing.T) {
	n := nodetest.MustOpen(t, nodetest.Options{})
	if _, code, err := n.TryDial("not a token", nil); code != http.StatusUnauthorized || err == nil {
		t.Fatalf("bad token: status %d, %v; want 401", code, err)
	}
	_, err := nodetest.Dial(n.WSURL+"/v1/connect", "", nil, time.Second)
	var de *nodetest.DialError
	if !errors.As(err, &de) || de.Status != http.StatusUnauthorized || de.Header.Get("Content-Type") == "" {
		t.Fatalf("no token: %v, want a DialError 401 with its header", err)
	}
}

// TestFreezer: while frozen, store calls fail by the hub's store timeout
// and the node refuses publishes with 503; after the thaw it accepts
// them again.
func TestFreezer(t *testing.T) {
	fz := &nodetest.Freezer{}
	n := nodetest.MustOpen(t, nodetest.Options{Wrap: fz.Wrap, Edit: func(h *hub.Config, _ *tetherhttp.Config) {
		h.StoreTimeout = 200 * time.Millisecond
	}})
	t.Cleanup(fz.Unfreeze)
	fz.Freeze(false)
	a, _, err := n.TryPublish("device:pos-1", 1)
	if err != nil || a.Status != http.StatusServiceUnavailable || a.Header.Get("Retry-After") == "" {
		t.Fatalf("publish while frozen: %d %s %v, want 503 with Retry-After", a.Status, a.Body, err)
	}
	if fz.Held() == 0 || fz.Failures() == 0 || fz.Unplanned() != 0 || time.Since(fz.LastFailure()) > time.Minute {
		t.Errorf("held %d, failures %d, unplanned %d, last %v", fz.Held(), fz.Failures(), fz.Unplanned(), fz.LastFailure())
	}
	// The store underneath answers past the freeze.
	if err := n.Store.Ping(context.Background()); err != nil {
		t.Errorf("ping past the freeze: %v", err)
	}
	fz.Unfreeze()
	nodetest.Eventually(t, 5*time.Second, "publishes accepted after the thaw", func() bool {
		a, _, err := n.TryPublish("device:pos-1", 2)
		return err == nil && a.Status == http.StatusAccepted
	})
}

// TestOpenTemporary: Open without a directory makes one and Close removes
// it; a node opened again on a directory finds what the last one stored.
func TestOpenTemporary(t *testing.T) {
	n, err := nodetest.Open(nodetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := n.Dir
	n.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s after Close: %v", dir, err)
	}

	dir = t.TempDir()
	first := nodetest.MustOpen(t, nodetest.Options{Dir: dir})
	id := first.Publish(t, "device:pos-1", 1)
	first.Close()
	again := nodetest.MustOpen(t, nodetest.Options{Dir: dir})
	if st := again.DeliveryState(t, id, ""); st != "pending" {
		t.Errorf("message %s on the reopened store: %q, want pending", id, st)
	}
}
