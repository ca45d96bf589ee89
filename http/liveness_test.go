package http_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/internal/nodetest"
)

// TestLivenessWhileStoreHangs: with the store hanging, pongs (application
// and WebSocket) still answer at once, acks are taken without waiting, a
// client's close is answered within a second, and publishes are refused
// with 503 at once once the node knows the store is down (issue 9: nothing
// on the liveness path waits behind a store call). Once the store answers
// again, the acks taken meanwhile are stored and nothing is redelivered.
func TestLivenessWhileStoreHangs(t *testing.T) {
	// The store's calls wait for the whole store timeout while frozen: a
	// store that hangs rather than fails.
	n, fs := openFrozenNode(t, 10*time.Second)
	d := n.Dial(t, nodetest.MustToken(t, "d0"))
	d.MustNext("welcome")
	other := n.Dial(t, nodetest.MustToken(t, "d1"))
	other.MustNext("welcome")
	ids := []string{n.Publish(t, "device:d0", 1), n.Publish(t, "device:d0", 2)}
	d.MustNext("message")
	d.MustNext("message")

	fs.Freeze(false)
	d.Ack(ids...) // the commit of these acks hangs
	for i := 0; i < 5; i++ {
		start := time.Now()
		d.Send(`{"type":"ping"}`)
		d.MustNext("pong")
		d.SendFrame(ws.NewPingFrame([]byte("p")))
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("round %d: pongs took %v while the store hangs, want well under a second", i, took)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nodetest.Eventually(t, 3*time.Second, "readyz 503", func() bool {
		resp, err := http.Get(n.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	start := time.Now()
	var out map[string]any
	if code := n.API(t, "POST", "/v1/messages", map[string]any{"target": "device:d0", "data": 3}, &out); code != http.StatusServiceUnavailable {
		t.Errorf("publish with the store known down: status %d, want 503", code)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("publish refused after %v, want within 100 ms once the node knows the store is down", took)
	}
	start = time.Now()
	other.SendFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
	other.MustClose(1000, 2*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("close answered after %v while the store hangs, want within 1 s", took)
	}

	fs.Unfreeze()
	for _, id := range ids {
		nodetest.Eventually(t, 5*time.Second, "the acks taken during the hang stored", func() bool { return firstState(t, n, id) == "acked" })
	}
	d.Send(`{"type":"ping"}`)
	if f := d.MustNext("pong"); f.Type != "pong" {
		t.Errorf("after the hang: %+v, want only the pong (nothing redelivered)", f)
	}
}
