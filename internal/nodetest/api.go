package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Answer is one answer of the HTTP API.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
	// Took is the time from sending the request to reading the whole body.
	Took time.Duration
}

// Do calls the HTTP API at path with the API key and reads the answer.
// A body is sent as it is if a string, else encoded as JSON; nil sends
// none. Do returns a transport error rather than failing a test, so any
// goroutine may call it.
func (n *Node) Do(ctx context.Context, method, path string, body any) (Answer, error) {
	return n.do(ctx, APIKey, method, path, body)
}

// do is Do with key ("" for no Authorization header).
func (n *Node) do(ctx context.Context, key, method, path string, body any) (Answer, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return Answer{}, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, rd)
	if err != nil {
		return Answer{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := n.Client.Do(req)
	if err != nil {
		return Answer{Took: time.Since(start)}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: raw, Took: time.Since(start)}, err
}

// API calls the HTTP API with the API key, decodes a JSON answer into out
// (unless out is nil or the answer empty) and returns the status. A body
// is sent as Do sends it. A transport or decoding error fails the test.
func (n *Node) API(tb testing.TB, method, path string, body, out any) int {
	tb.Helper()
	return n.APIWithKey(tb, APIKey, method, path, body, out)
}

// APIWithKey is API with key as the API key; "" sends no Authorization
// header.
func (n *Node) APIWithKey(tb testing.TB, key, method, path string, body, out any) int {
	tb.Helper()
	a, err := n.do(context.Background(), key, method, path, body)
	n.Contract.Report(tb)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil && len(a.Body) > 0 {
		if err := json.Unmarshal(a.Body, out); err != nil {
			tb.Fatalf("%s %s: status %d, decode %q: %v", method, path, a.Status, a.Body, err)
		}
	}
	return a.Status
}

// TryPublish publishes data to target (device:ID or group:ID) and returns
// the answer, with the message id of a 202. Like Do it fails no test.
func (n *Node) TryPublish(target string, data any) (Answer, string, error) {
	a, err := n.Do(context.Background(), http.MethodPost, "/v1/messages", map[string]any{"target": target, "data": data})
	var out struct {
		ID string `json:"id"`
	}
	if err == nil && a.Status == http.StatusAccepted {
		_ = json.Unmarshal(a.Body, &out)
	}
	return a, out.ID, err
}

// Publish publishes data to target and returns the message id; it fails
// the test unless the node answers 202.
func (n *Node) Publish(tb testing.TB, target string, data any) string {
	tb.Helper()
	a, id, err := n.TryPublish(target, data)
	n.Contract.Report(tb)
	if err != nil || a.Status != http.StatusAccepted {
		tb.Fatalf("publish to %s: status %d %s, %v; want 202", target, a.Status, a.Body, err)
	}
	return id
}

// DeliveryState returns the state of message id's delivery to device, or
// of its first delivery when device is "", as GET /v1/messages/{id} tells
// it (a tether.DeliveryState: "pending", "inflight", "acked", ...); ""
// when there is none or the node answers other than 200.
func (n *Node) DeliveryState(tb testing.TB, id, device string) string {
	tb.Helper()
	var st struct {
		Deliveries []struct {
			Device string `json:"device"`
			State  string `json:"state"`
		} `json:"deliveries"`
	}
	if n.API(tb, http.MethodGet, "/v1/messages/"+id, nil, &st) != http.StatusOK {
		return ""
	}
	for _, d := range st.Deliveries {
		if device == "" || d.Device == device {
			return d.State
		}
	}
	return ""
}
