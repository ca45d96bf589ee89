package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether/client"
	"github.com/tetherpush/tether/wire"
)

const hookBatch = `{"events":[` +
	`{"id":"0001","type":"delivery.acked","at":"2026-11-24T10:00:00.123Z","message":"01JT1","target":"group:shop-1","device":"pos-1","attempts":2},` +
	`{"id":"0002","type":"device.offline","at":"2026-11-24T10:00:01.000Z","device":"pos-1","node":"n1","code":4408,"future":"ignored"}]}`

// hookRequest is a POST of body signed with secret at t.
func hookRequest(secret []byte, t time.Time, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	r.Header.Set(wire.SignatureHeader, wire.SignWebhook(secret, t, []byte(body)))
	return r
}

func TestWebhookHandler(t *testing.T) {
	secret, old := []byte("new-secret"), []byte("old-secret")
	var got []client.Event
	h := &client.WebhookHandler{
		Secrets: [][]byte{secret, old},
		Handle: func(_ context.Context, events []client.Event) error {
			got = append(got, events...)
			return nil
		},
	}
	for _, s := range [][]byte{secret, old} {
		got = nil
		w := httptest.NewRecorder()
		h.ServeHTTP(w, hookRequest(s, time.Now(), hookBatch))
		if w.Code != http.StatusNoContent {
			t.Fatalf("signed with %q: HTTP %d %s, want 204", s, w.Code, w.Body)
		}
		want := []client.Event{
			{ID: "0001", Type: client.EventAcked, At: time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC), Message: "01JT1", Target: "group:shop-1", Device: "pos-1", Attempts: 2},
			{ID: "0002", Type: client.EventOffline, At: time.Date(2026, 11, 24, 10, 0, 1, 0, time.UTC), Device: "pos-1", Node: "n1", Code: 4408},
		}
		if len(got) != len(want) {
			t.Fatalf("Handle got %d events %+v, want %+v", len(got), got, want)
		}
		for i := range want {
			if !got[i].At.Equal(want[i].At) {
				t.Errorf("event %d at %v, want %v", i, got[i].At, want[i].At)
			}
			got[i].At = want[i].At
			if got[i] != want[i] {
				t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	}
}

func TestWebhookHandlerRefuses(t *testing.T) {
	secret := []byte("s3cret")
	handleErr := errors.New("database down")
	tests := []struct {
		name   string
		req    func() *http.Request
		handle error
		max    int64
		want   int
	}{
		{"wrong secret", func() *http.Request { return hookRequest([]byte("other"), time.Now(), hookBatch) }, nil, 0, http.StatusUnauthorized},
		{"no signature", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(hookBatch))
		}, nil, 0, http.StatusUnauthorized},
		{"replayed", func() *http.Request { return hookRequest(secret, time.Now().Add(-time.Hour), hookBatch) }, nil, 0, http.StatusUnauthorized},
		{"body changed", func() *http.Request {
			r := hookRequest(secret, time.Now(), hookBatch)
			r.Body = io.NopCloser(strings.NewReader(strings.Replace(hookBatch, "pos-1", "pos-2", 1)))
			return r
		}, nil, 0, http.StatusUnauthorized},
		{"GET", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/hook", nil) }, nil, 0, http.StatusMethodNotAllowed},
		{"too large", func() *http.Request { return hookRequest(secret, time.Now(), hookBatch) }, nil, 100, http.StatusRequestEntityTooLarge},
		{"not a batch", func() *http.Request { return hookRequest(secret, time.Now(), `{"events":{}}`) }, nil, 0, http.StatusBadRequest},
		{"not JSON", func() *http.Request { return hookRequest(secret, time.Now(), `events`) }, nil, 0, http.StatusBadRequest},
		{"handle fails", func() *http.Request { return hookRequest(secret, time.Now(), hookBatch) }, handleErr, 0, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			h := &client.WebhookHandler{
				Secrets:      [][]byte{secret},
				MaxBodyBytes: tt.max,
				Handle: func(context.Context, []client.Event) error {
					called = true
					return tt.handle
				},
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req())
			if w.Code != tt.want {
				t.Errorf("HTTP %d %q, want %d", w.Code, w.Body, tt.want)
			}
			if called != (tt.handle != nil) {
				t.Errorf("Handle called: %v, want %v", called, tt.handle != nil)
			}
		})
	}
}

func TestWebhookHandlerNoSecret(t *testing.T) {
	h := &client.WebhookHandler{Handle: func(context.Context, []client.Event) error { return nil }}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hookRequest(nil, time.Now(), hookBatch))
	if w.Code != http.StatusUnauthorized {
		t.Errorf("no secrets configured: HTTP %d, want 401", w.Code)
	}
}

func TestVerifyWebhook(t *testing.T) {
	secret, body := []byte("s3cret"), []byte(hookBatch)
	if err := client.VerifyWebhook(secret, wire.SignWebhook(secret, time.Now(), body), body); err != nil {
		t.Errorf("VerifyWebhook of a fresh signature: %v", err)
	}
	err := client.VerifyWebhook(secret, wire.SignWebhook(secret, time.Now().Add(-10*time.Minute), body), body)
	if !errors.Is(err, wire.ErrSignatureExpired) {
		t.Errorf("VerifyWebhook of a 10-minute-old signature = %v, want ErrSignatureExpired", err)
	}
}
