package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// slowStore makes every Publish take delay: a store that falls behind.
type slowStore struct {
	tether.Store
	delay time.Duration
}

func (s *slowStore) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Publish(ctx, msgs)
}

// TestOverloadRefusesFast: once publishes wait on the store longer than a
// quarter of --max-delivery-lag, the node refuses new ones at once with
// 503 overloaded and Retry-After (SPEC section 3 "Overload"), stays ready,
// and accepts again once it has caught up; nothing it accepted is lost.
func TestOverloadRefusesFast(t *testing.T) {
	n := nodetest.MustOpen(t, nodetest.Options{IO: *ioMode,
		Wrap: func(st tether.Store) tether.Store { return &slowStore{Store: st, delay: 400 * time.Millisecond} },
		Edit: func(h *hub.Config, c *tetherhttp.Config) {
			h.Heartbeat, h.AckTimeout = 0, 0 // the defaults
			h.MaxDeliveryLag = time.Second
			c.AdminListen = "-"
		}})
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")

	accepted := []string{n.Publish(t, "device:pos-1", 1)} // 400 ms: past a quarter of the bound
	var refusal nodetest.Answer
	nodetest.Eventually(t, 3*time.Second, "a publish refused as overloaded", func() bool {
		start := time.Now()
		a, body := post(t, n, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 2})
		took := time.Since(start)
		if a.Status == http.StatusAccepted {
			accepted = append(accepted, body["id"].(string))
			return false
		}
		if a.Status != http.StatusServiceUnavailable || errCode(body) != "overloaded" {
			t.Fatalf("publish: status %d body %v, want 202 or 503 overloaded", a.Status, body)
		}
		if took > 100*time.Millisecond {
			t.Errorf("refused after %v, want at once", took)
		}
		refusal = a
		return true
	})
	if ra := refusal.Header.Get("Retry-After"); ra == "" {
		t.Error("503 overloaded without Retry-After")
	}
	if resp, err := http.Get(n.URL + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("readyz while overloaded: %v %v, want 200 (the store answers; connects are welcome)", resp, err)
	} else {
		resp.Body.Close()
	}
	nodetest.Eventually(t, 5*time.Second, "publishes accepted again", func() bool {
		a, body := post(t, n, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 3})
		if a.Status == http.StatusAccepted {
			accepted = append(accepted, body["id"].(string))
			return true
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	got := map[string]bool{}
	for len(got) < len(accepted) {
		f := d.MustNext("message")
		got[f.ID] = true
		d.Ack(f.ID)
	}
	for _, id := range accepted {
		if !got[id] {
			t.Errorf("accepted message %s never arrived", id)
		}
	}
}

// post calls POST path with the API key and returns the answer and its
// body decoded.
func post(t *testing.T, n *nodetest.Node, path string, body any) (nodetest.Answer, map[string]any) {
	t.Helper()
	a, err := n.Do(context.Background(), http.MethodPost, path, body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	var out map[string]any
	_ = json.Unmarshal(a.Body, &out)
	return a, out
}

// errCode returns the error code of an error answer.
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
