package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
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
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(&slowStore{Store: st, delay: 400 * time.Millisecond}, hub.Config{Node: "n1", MaxDeliveryLag: time.Second, Workers: 4})
	if err := h.Open(); err != nil {
		t.Fatal(err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "-", TokenSecret: []byte(testSecret), APIKey: testAPIKey, IO: *ioMode})
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	n := &Node{Hub: h, Server: srv, Store: st, URL: "http://" + srv.Addr(), WSURL: "ws://" + srv.Addr(), Dir: dir}
	t.Cleanup(n.Close)
	d := n.Dial(t, MustToken(t, "pos-1"))
	d.MustNext("welcome")

	accepted := []string{n.Publish(t, "device:pos-1", 1)} // 400 ms: past a quarter of the bound
	var refusal *http.Response
	eventually(t, 3*time.Second, "a publish refused as overloaded", func() bool {
		start := time.Now()
		resp, body := n.post(t, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 2})
		took := time.Since(start)
		if resp.StatusCode == http.StatusAccepted {
			accepted = append(accepted, body["id"].(string))
			return false
		}
		if resp.StatusCode != http.StatusServiceUnavailable || errCode(body) != "overloaded" {
			t.Fatalf("publish: status %d body %v, want 202 or 503 overloaded", resp.StatusCode, body)
		}
		if took > 100*time.Millisecond {
			t.Errorf("refused after %v, want at once", took)
		}
		refusal = resp
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
	eventually(t, 5*time.Second, "publishes accepted again", func() bool {
		resp, body := n.post(t, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 3})
		if resp.StatusCode == http.StatusAccepted {
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

// post calls POST path with the test API key and returns the answer, its
// body decoded.
func (n *Node) post(t *testing.T, path string, body any) (*http.Response, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, n.URL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

// errCode returns the error code of an error answer.
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
