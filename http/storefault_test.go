package http_test

// Store faults around a session's end, found by TestModelDelivery: the node
// runs on a bolt store behind a nodetest.Freezer.

import (
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// openFrozenNode starts a node whose store calls fail after storeTimeout
// (the hub's StoreTimeout) while the returned Freezer is frozen.
func openFrozenNode(t *testing.T, storeTimeout time.Duration) (*nodetest.Node, *nodetest.Freezer) {
	t.Helper()
	fz := &nodetest.Freezer{}
	n := nodetest.MustOpen(t, nodetest.Options{IO: *ioMode, Wrap: fz.Wrap, Edit: func(h *hub.Config, c *tetherhttp.Config) {
		h.StoreTimeout = storeTimeout
		c.AdminListen = "-"
	}})
	t.Cleanup(fz.Unfreeze) // runs first: the node closes on a thawed store
	return n, fz
}

// firstState returns the state of message id's first delivery.
func firstState(t *testing.T, n *nodetest.Node, id string) string {
	t.Helper()
	ms, err := n.Store.Message(context.Background(), id)
	if err != nil || len(ms.Deliveries) == 0 {
		t.Fatalf("message %s: %+v, %v", id, ms, err)
	}
	return string(ms.Deliveries[0].State)
}

// ackWhileFrozen connects device d0, publishes a message to it and acks it
// with the store frozen (stalled): the ack's flush will fail.
func ackWhileFrozen(t *testing.T) (*nodetest.Node, *nodetest.Freezer, *nodetest.Device, string) {
	n, fs := openFrozenNode(t, 300*time.Millisecond)
	d := n.Dial(t, nodetest.MustToken(t, "d0"))
	d.MustNext("welcome")
	id := n.Publish(t, "device:d0", 1)
	d.MustNext("message")
	fs.Freeze(false)
	d.Ack(id)
	return n, fs, d, id
}

// TestAcksOfSessionClosedInBackoff: a session that closes while it backs
// off after a failed ack flush stores those acks once the backoff ends.
func TestAcksOfSessionClosedInBackoff(t *testing.T) {
	n, fs, d, id := ackWhileFrozen(t)  // its flush fails after 300 ms: 1 s backoff
	time.Sleep(500 * time.Millisecond) // the flush has failed
	fs.Unfreeze()
	d.SendFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	d.MustClose(1000, 5*time.Second)
	nodetest.Eventually(t, 3*time.Second, "the ack stored after the backoff", func() bool { return firstState(t, n, id) == "acked" })
}

// TestShutdownWaitsForAckRetry: a graceful Shutdown that returns nil has
// stored the acks of sessions closed earlier, including those waiting to
// retry after a store error.
func TestShutdownWaitsForAckRetry(t *testing.T) {
	n, fs, d, id := ackWhileFrozen(t)
	d.SendFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	d.MustClose(1000, 5*time.Second)
	time.Sleep(500 * time.Millisecond) // the flush at close has failed: retry in 1 s
	fs.Unfreeze()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := n.Hub.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := firstState(t, n, id); got != "acked" {
		t.Fatalf("delivery %s acked before a close handshake: %q after a graceful shutdown that returned nil, want acked", id, got)
	}
}

// TestDuplicatePublishWakesRecipient: a publish whose answer was lost to a
// store timeout (503) may have been stored without waking anyone; its
// retry, answered 200 duplicate, wakes the online recipient.
func TestDuplicatePublishWakesRecipient(t *testing.T) {
	n, fs := openFrozenNode(t, 300*time.Millisecond)
	d := n.Dial(t, nodetest.MustToken(t, "d0"))
	d.MustNext("welcome")
	req := map[string]any{"target": "device:d0", "data": 1, "id": "k"}
	fs.Freeze(true) // answers lost: the store keeps the message
	if code := n.API(t, "POST", "/v1/messages", req, nil); code != 503 {
		t.Fatalf("publish while frozen: %d, want 503", code)
	}
	fs.Unfreeze()
	var out struct {
		ID        string
		Duplicate bool
	}
	if code := n.API(t, "POST", "/v1/messages", req, &out); code != 200 || !out.Duplicate {
		t.Fatalf("retry: %d %+v, want 200 duplicate", code, out)
	}
	f, err := d.Next(3 * time.Second)
	if err != nil || f.Type != "message" || f.ID != out.ID {
		t.Fatalf("online device d0 got %+v, %v within 3 s of the 200 for %s (store: %s), want the message", f, err, out.ID, firstState(t, n, out.ID))
	}
}

// TestStoredDespite503WakesRecipients: a publish answered 503 because the
// store's answer was lost (the store kept the message) and never retried
// reaches its online recipients once the store answers again, not only at
// their next wake-up (another message, a reconnect). A first message,
// delivered and acked, makes sure the session has loaded before the
// freeze; one to the group itself anchors the group's feed on the node.
func TestStoredDespite503WakesRecipients(t *testing.T) {
	for _, c := range []struct{ name, first, target string }{
		{"device", "device:d0", "device:d0"},
		{"group, feed not anchored", "device:d0", "group:g"},
		{"group, feed anchored", "group:g", "group:g"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, fs := openFrozenNode(t, 300*time.Millisecond)
			d := n.Dial(t, nodetest.MustToken(t, "d0", "g"))
			d.MustNext("welcome")
			id := n.Publish(t, c.first, 0)
			if m := d.MustNext("message"); m.ID != id {
				t.Fatalf("first message %s, want %s", m.ID, id)
			}
			d.Ack(id)
			fs.Freeze(true) // answers lost: the store keeps the message
			if code := n.API(t, "POST", "/v1/messages", map[string]any{"target": c.target, "data": 1}, nil); code != 503 {
				t.Fatalf("publish while frozen: %d, want 503", code)
			}
			fs.Unfreeze()
			f, err := d.Next(5 * time.Second)
			if err != nil || f.Type != "message" || f.Target != c.target {
				t.Fatalf("online device d0 got %+v, %v within 5 s of the store's thaw, want the message to %s stored despite its 503", f, err, c.target)
			}
		})
	}
}
