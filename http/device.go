package http

import (
	"net/http"

	"github.com/tetherpush/tether"
)

func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := tether.CheckID("device", id); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	info, err := s.hub.Device(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	groups := info.Groups
	if groups == nil {
		groups = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":           info.ID,
		"groups":       groups,
		"online":       info.Online,
		"node":         info.Node,
		"connected_at": timePtr(info.ConnectedAt),
		"last_seen":    timePtr(info.LastSeen),
		"pending":      info.Pending,
	})
}

func (s *Server) handleGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := tether.CheckID("group", id); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	info, err := s.hub.Group(r.Context(), id)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	type member struct {
		ID     string `json:"id"`
		Online bool   `json:"online"`
	}
	ms := make([]member, len(info.Devices))
	for i, d := range info.Devices {
		ms[i] = member{ID: d.ID, Online: d.Online}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "devices": ms})
}

func (s *Server) handleMember(w http.ResponseWriter, r *http.Request) {
	group, device := r.PathValue("g"), r.PathValue("d")
	if err := tether.CheckID("group", group); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := tether.CheckID("device", device); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var err error
	if r.Method == http.MethodPut {
		err = s.hub.AddMember(r.Context(), group, device)
	} else {
		err = s.hub.RemoveMember(r.Context(), group, device)
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
