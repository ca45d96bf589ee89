package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/tetherpush/tether"
)

// publishRequest is one message of POST /v1/messages or of a batch.
type publishRequest struct {
	Target string          `json:"target"`
	Data   json.RawMessage `json:"data"`
	TTLS   *float64        `json:"ttl_s"`
	ID     string          `json:"id"`
}

type publishAnswer struct {
	ID         string     `json:"id,omitempty"`
	Recipients *int       `json:"recipients,omitempty"`
	Duplicate  bool       `json:"duplicate,omitempty"`
	Error      *errorBody `json:"error,omitempty"`
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	if err := s.hub.AdmitPublish(); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var req publishRequest
	if err := s.decodeBody(w, r, int64(s.cfg.MaxMessageBytes)+16<<10, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	msg, err := s.newMessage(req)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	res, err := s.hub.Publish(r.Context(), []*tether.Message{msg})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	status := http.StatusAccepted
	if res[0].Duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, answerOf(res[0]))
}

func answerOf(r tether.PublishResult) publishAnswer {
	n := r.Recipients
	return publishAnswer{ID: r.ID, Recipients: &n, Duplicate: r.Duplicate}
}

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	if err := s.hub.AdmitPublish(); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var req struct {
		Messages []publishRequest `json:"messages"`
	}
	limit := int64(tether.MaxBatch) * (int64(s.cfg.MaxMessageBytes) + 1<<10)
	if err := s.decodeBody(w, r, min(limit, 64<<20), &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if len(req.Messages) == 0 || len(req.Messages) > tether.MaxBatch {
		writeError(w, r, s.log, tether.Errorf(tether.EInvalid, "a batch holds 1 to %d messages, got %d", tether.MaxBatch, len(req.Messages)))
		return
	}
	answers := make([]publishAnswer, len(req.Messages))
	var msgs []*tether.Message
	var index []int
	for i, m := range req.Messages {
		msg, err := s.newMessage(m)
		if err != nil {
			e := errorJSON(err)
			answers[i].Error = &e
			continue
		}
		msgs = append(msgs, msg)
		index = append(index, i)
	}
	if len(msgs) > 0 {
		res, err := s.hub.Publish(r.Context(), msgs)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		for j, i := range index {
			answers[i] = answerOf(res[j])
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": answers})
}

// newMessage validates a publish request and builds the message.
func (s *Server) newMessage(req publishRequest) (*tether.Message, error) {
	target, err := tether.ParseTarget(req.Target)
	if err != nil {
		return nil, err
	}
	if req.ID != "" {
		if err := tether.CheckID("message", req.ID); err != nil {
			return nil, err
		}
	}
	data, err := compactData(req.Data, s.cfg.MaxMessageBytes)
	if err != nil {
		return nil, err
	}
	ttl := tether.DefaultTTL
	if req.TTLS != nil {
		if !(*req.TTLS >= 0.001) { // also refuses NaN
			return nil, tether.Errorf(tether.EInvalid, "ttl_s must be at least 0.001 (one millisecond), got %v", *req.TTLS)
		}
		if f := *req.TTLS * float64(time.Second); f < float64(s.cfg.MaxTTL) {
			ttl = time.Duration(f)
		} else {
			ttl = s.cfg.MaxTTL
		}
	}
	ttl = min(ttl, s.cfg.MaxTTL)
	return s.hub.NewMessage(target, data, ttl, req.ID), nil
}

func compactData(raw json.RawMessage, max int) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, tether.Errorf(tether.EInvalid, "data is required: any JSON value")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, tether.Errorf(tether.EInvalid, "data is not valid JSON: %v", err)
	}
	if buf.Len() > max {
		return nil, tether.Errorf(tether.ETooLarge, "data is %d bytes, more than the %d allowed (--max-message-bytes)", buf.Len(), max)
	}
	return buf.Bytes(), nil
}

// decodeBody reads a JSON body of at most limit bytes into v.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if r.ContentLength > limit { // announced too large: refuse before reading
		w.Header().Set("Connection", "close")
		return tether.Errorf(tether.ETooLarge, "request body of %d bytes is larger than %d", r.ContentLength, limit)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tether.Errorf(tether.ETooLarge, "request body is larger than %d bytes", limit)
		}
		if errors.Is(err, io.EOF) {
			return tether.Errorf(tether.EInvalid, "request body is empty: want a JSON object")
		}
		return tether.Errorf(tether.EInvalid, "request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return tether.Errorf(tether.EInvalid, "request body holds more than one JSON value")
	}
	return nil
}

type deliveryJSON struct {
	Device   string     `json:"device"`
	State    string     `json:"state"`
	Attempts int        `json:"attempts"`
	AckedAt  *time.Time `json:"acked_at"`
}

func (s *Server) handleMessage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := s.hub.Message(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	ds := make([]deliveryJSON, len(st.Deliveries))
	for i, d := range st.Deliveries {
		ds[i] = deliveryJSON{Device: d.Device, State: string(d.State), Attempts: d.Attempts, AckedAt: timePtr(d.AckedAt)}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":           st.Message.ID,
		"target":       st.Message.Target.String(),
		"published_at": st.Message.PublishedAt.UTC(),
		"expires_at":   st.Message.ExpiresAt.UTC(),
		"deliveries":   ds,
	})
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
