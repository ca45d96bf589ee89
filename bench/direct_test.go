package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherpush/tether/bench"
)

// proxy is a reverse proxy in front of a node that records the publish
// requests and may refuse some with 503.
type proxy struct {
	*httptest.Server
	mu      sync.Mutex
	batches []int    // messages per publish request
	targets []string // every message's target
	refuse  func(n int) (status int, body string, retryAfter bool)
}

func newProxy(t *testing.T, n *node) *proxy {
	target, _ := url.Parse(n.URL)
	tr := &http.Transport{Proxy: nil}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	p := &proxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/messages") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				Target   string `json:"target"`
				Messages []struct {
					Target string `json:"target"`
				} `json:"messages"`
			}
			_ = json.Unmarshal(body, &req)
			p.mu.Lock()
			k := len(p.batches)
			if req.Messages == nil {
				p.batches, p.targets = append(p.batches, 1), append(p.targets, req.Target)
			} else {
				p.batches = append(p.batches, len(req.Messages))
				for _, m := range req.Messages {
					p.targets = append(p.targets, m.Target)
				}
			}
			refuse := p.refuse
			p.mu.Unlock()
			if refuse != nil {
				if status, answer, retryAfter := refuse(k); status != 0 {
					if retryAfter {
						w.Header().Set("Retry-After", "2")
					}
					w.WriteHeader(status)
					_, _ = io.WriteString(w, answer)
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { p.Close(); tr.CloseIdleConnections() })
	return p
}

// TestRunDirect publishes to the devices themselves in fixed batches: every
// request carries the batch size (the last may carry fewer), every device
// gets every message of its own exactly once, and no group is involved.
func TestRunDirect(t *testing.T) {
	n := mustOpenNode(t)
	p := newProxy(t, n)
	cfg := n.config()
	cfg.PublishURL = p.URL
	cfg.Conns, cfg.Workers, cfg.Direct = 12, 2, true
	cfg.Rate, cfg.Duration, cfg.Batch, cfg.Publishers = 60, time.Second, 7, 2
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Messages
	if m == nil || m.Published != 60 || m.Recipients != 60 || m.Expected != 60 || m.Delivered != 60 ||
		m.Lost != 0 || m.Duplicates != 0 || m.Mismatch != 0 || m.Foreign != 0 {
		t.Fatalf("messages %+v, want 60 published to one device each, each delivered once", m)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if want := []int{7, 7, 7, 7, 7, 7, 7, 7, 4}; !slices.Equal(p.batches, want) {
		t.Errorf("requests carried %v messages, want %v", p.batches, want)
	}
	perDevice := map[string]int{}
	for _, target := range p.targets {
		if !strings.HasPrefix(target, "device:bench-d") {
			t.Fatalf("a message to %q; want device targets only", target)
		}
		perDevice[target]++
	}
	if len(perDevice) != 12 {
		t.Errorf("messages went to %d devices, want all 12 round robin: %v", len(perDevice), perDevice)
	}
	if !rep.Settings.Direct || rep.Settings.Batch != 7 || rep.Settings.Publishers != 2 {
		t.Errorf("settings %+v", rep.Settings)
	}
}

// TestRunRefusals: publishes answered 503 are counted as refused by error
// code, apart from failures, are not expected at the devices, and a 503
// without Retry-After is a problem of the report.
func TestRunRefusals(t *testing.T) {
	n := mustOpenNode(t)
	p := newProxy(t, n)
	p.refuse = func(k int) (int, string, bool) {
		switch k % 4 {
		case 1:
			return http.StatusServiceUnavailable, `{"error":{"code":"overloaded","message":"behind"}}`, true
		case 2:
			return http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"down"}}`, false
		}
		return 0, "", false
	}
	cfg := n.config()
	cfg.PublishURL = p.URL
	cfg.Conns, cfg.Groups, cfg.Workers = 4, 1, 1
	cfg.Rate, cfg.Duration, cfg.Batch, cfg.Publishers = 40, time.Second, 5, 1
	rep, err := bench.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Messages
	if m == nil {
		t.Fatal("no message figures")
	}
	// 8 requests of 5: numbers 1 and 5 overloaded, 2 and 6 unavailable.
	if m.PublishRefused != 20 || m.PublishRefusedKinds["overloaded"] != 10 || m.PublishRefusedKinds["unavailable"] != 10 ||
		m.RefusedNoRetryAfter != 2 || m.PublishErrors != 0 || m.Published != 20 {
		t.Errorf("refused %d %v (%d without Retry-After), failed %d, published %d; want 20 (10 each, 2), 0, 20",
			m.PublishRefused, m.PublishRefusedKinds, m.RefusedNoRetryAfter, m.PublishErrors, m.Published)
	}
	if m.Expected != 80 || m.Delivered != 80 || m.Lost != 0 {
		t.Errorf("expected %d, delivered %d, lost %d; want the 20 accepted at 4 devices each", m.Expected, m.Delivered, m.Lost)
	}
	found := false
	for _, pr := range rep.Problems {
		found = found || strings.Contains(pr, "without Retry-After")
	}
	if !found {
		t.Errorf("problems %q: want one about 503 without Retry-After", rep.Problems)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "refused") {
		t.Errorf("text report (%v) does not show the refusals:\n%s", err, text.String())
	}
}
