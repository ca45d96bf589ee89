package http

import (
	"net/http"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/hub"
)

// maxEventsPage is the most events one GET /v1/events answers (SPEC
// section 11).
const maxEventsPage = 1000

// handleEvents answers GET /v1/events?after=CURSOR&wait=30s: the events
// after the cursor, oldest first, waiting up to wait (a Go duration, at
// most hub.MaxEventsWait) while there are none; next is the cursor to
// pass as the next after.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after := q.Get("after")
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, r, s.log, tether.Errorf(tether.EInvalid, "wait %q: want a duration such as 30s (at most %v)", v, hub.MaxEventsWait))
			return
		}
		wait = d
	}
	// The server's write timeout would cut a long wait short.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(min(wait, hub.MaxEventsWait) + 10*time.Second))
	evs, err := s.hub.Events(r.Context(), after, maxEventsPage, wait)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	next := after
	if n := len(evs); n > 0 {
		next = evs[n-1].ID
	}
	if evs == nil {
		evs = []tether.LogEvent{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs, "next": next})
}

// handleCancel answers DELETE /v1/messages/{id}: the deliveries not yet
// acked become cancelled (SPEC section 3, Cancel).
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, err := s.hub.Cancel(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "cancelled": n})
}
