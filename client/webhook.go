package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tetherpush/tether/wire"
)

// This file is the backend side of tether's webhook (SPEC section 11):
// verifying a request's Tether-Signature and decoding its events. A
// backend that receives delivery receipts and presence by webhook needs
// only this, not a device connection.

// Event types a webhook delivers (SPEC section 11).
const (
	EventAcked     = "delivery.acked"
	EventDead      = "delivery.dead"
	EventExpired   = "delivery.expired"
	EventCancelled = "delivery.cancelled"
	EventOnline    = "device.online"
	EventOffline   = "device.offline"
)

// Event is one entry of tether's event log, as a webhook delivers it.
// Delivery is at least once: de-duplicate by ID.
type Event struct {
	// ID is unique; events of one webhook arrive in log order, the same
	// order as their IDs.
	ID   string    `json:"id"`
	Type string    `json:"type"` // one of the Event* constants
	At   time.Time `json:"at"`
	// Delivery events (delivery.*): the message, its target, the device and
	// how many times the message was sent to it.
	Message  string `json:"message,omitempty"`
	Target   string `json:"target,omitempty"`
	Device   string `json:"device"`
	Attempts int    `json:"attempts,omitempty"`
	// Presence events (device.*): the node of the session and, for
	// device.offline, the close code (0 when the connection just went
	// away).
	Node string `json:"node,omitempty"`
	Code int    `json:"code,omitempty"`
}

// DefaultWebhookMaxBody caps the body WebhookHandler reads. A batch holds
// at most 100 events of a few hundred bytes each.
const DefaultWebhookMaxBody = 1 << 20

// VerifyWebhook checks the Tether-Signature header of a webhook request
// against secret (the gateway's --webhook-secret) at the current time, with
// wire.DefaultWebhookTolerance. body must be the request body exactly as
// received. It returns nil or an error wrapping one of wire's
// ErrSignature* errors (or wire.ErrNoSecret).
func VerifyWebhook(secret []byte, header string, body []byte) error {
	return wire.VerifyWebhook(secret, header, body, time.Now(), wire.DefaultWebhookTolerance)
}

// WebhookHandler is an http.Handler for the URL given to the gateway as
// --webhook-url. It reads the body (at most MaxBodyBytes), verifies its
// signature, decodes {"events":[…]} and calls Handle with the events. It
// answers 204 when Handle returns nil, and an error status otherwise, so
// that the gateway sends the batch again later (at least once, in log
// order): 405 for a method other than POST, 413 for a body too large, 401
// for a signature that does not verify, 400 for a body that is not a
// batch, 500 when Handle fails.
//
//	http.Handle("/hook", &client.WebhookHandler{
//		Secrets: [][]byte{[]byte(os.Getenv("TETHER_WEBHOOK_SECRET"))},
//		Handle:  func(ctx context.Context, events []client.Event) error { … },
//	})
type WebhookHandler struct {
	// Secrets are the webhook secrets accepted: a request verifies if its
	// signature matches any one of them. While the gateway's secret is
	// rotated, list the old and the new one.
	Secrets [][]byte
	// Handle is called with the events of one verified request, in log
	// order, on the request's goroutine; ctx is the request's context.
	// Return nil once they are stored or processed: the gateway does not
	// send them again. It must not retain events after it returns.
	Handle func(ctx context.Context, events []Event) error
	// Tolerance is how far the signature's timestamp may be from now;
	// zero means wire.DefaultWebhookTolerance.
	Tolerance time.Duration
	// MaxBodyBytes caps the request body; zero means
	// DefaultWebhookMaxBody.
	MaxBodyBytes int64
	// Logger receives one line per refused request or failed Handle; nil
	// logs nothing.
	Logger *slog.Logger
}

// ServeHTTP verifies and decodes one webhook request and passes its events
// to Handle.
func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, r, http.StatusMethodNotAllowed, "method not allowed", nil)
		return
	}
	limit := h.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultWebhookMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, r, http.StatusRequestEntityTooLarge, "body too large", err)
			return
		}
		h.refuse(w, r, http.StatusBadRequest, "reading the body failed", err)
		return
	}
	if err := h.verify(r.Header.Get(wire.SignatureHeader), body); err != nil {
		h.refuse(w, r, http.StatusUnauthorized, "signature refused", err)
		return
	}
	var batch struct {
		Events []Event `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		h.refuse(w, r, http.StatusBadRequest, "body is not {\"events\":[…]}", err)
		return
	}
	if h.Handle == nil {
		h.refuse(w, r, http.StatusInternalServerError, "no Handle function", nil)
		return
	}
	if len(batch.Events) > 0 {
		if err := h.Handle(r.Context(), batch.Events); err != nil {
			h.refuse(w, r, http.StatusInternalServerError, "handling the events failed", err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// verify checks header against each secret in turn.
func (h *WebhookHandler) verify(header string, body []byte) error {
	if len(h.Secrets) == 0 {
		return wire.ErrNoSecret
	}
	var first error
	for _, secret := range h.Secrets {
		err := wire.VerifyWebhook(secret, header, body, time.Now(), h.Tolerance)
		if err == nil {
			return nil
		}
		// A mismatch with one secret says little when another matched
		// but was out of tolerance: report the most telling error.
		if first == nil || errors.Is(first, wire.ErrSignatureMismatch) {
			first = err
		}
	}
	return first
}

// refuse answers status with a one-line text body and logs why.
func (h *WebhookHandler) refuse(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	if h.Logger != nil {
		args := []any{"status", status, "remote", r.RemoteAddr}
		if err != nil {
			args = append(args, "err", err)
		}
		h.Logger.Warn("webhook request refused: "+msg, args...)
	}
	http.Error(w, msg, status)
}
