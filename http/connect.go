package http

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
	"github.com/tetherpush/tether/wire"
)

// handleConnect authenticates a device, records its token groups, upgrades
// to WebSocket and then runs the connection's reader on this goroutine.
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	if s.hub.Draining() {
		writeError(w, r, s.log, tether.Errorf(tether.EUnavailable, "node is shutting down; reconnect to another node"))
		return
	}
	if !s.originAllowed(r) {
		writeJSON(w, http.StatusForbidden, map[string]errorBody{"error": {Code: "forbidden",
			Message: "origin " + strconv.Quote(r.Header.Get("Origin")) + " is not in --allowed-origins"}})
		return
	}
	if s.connects != nil && !s.connects.Allow() {
		writeError(w, r, s.log, tether.Errorf(tether.EUnavailable, "node is over --max-connect-rate (%g new sessions/s); retry later", s.cfg.MaxConnectRate))
		return
	}
	claims, err := s.verifyToken(r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if n := s.active.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		writeError(w, r, s.log, tether.Errorf(tether.EUnavailable, "node is at --max-connections (%d); retry later or connect to another node", s.cfg.MaxConnections))
		return
	}
	upgraded := false
	defer func() {
		if !upgraded { // once upgraded, the connection's finish releases it
			s.active.Add(-1)
		}
	}()
	// The token's groups are members before the welcome (SPEC section 5).
	// r.Context() ends if the client goes away while the store answers.
	sid, err := s.hub.Admit(r.Context(), claims.Device, claims.Groups)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	up := ws.HTTPUpgrader{
		Protocol: func(p string) bool { return p == wire.Subprotocol },
	}
	conn, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		s.hub.Forget(claims.Device, sid)
		return // the upgrader has answered 400 with the reason
	}
	upgraded = true
	s.conns.Add(1)
	if s.poll != nil {
		if fc, err := detach(conn); err == nil {
			conn = fc // the poller's: no netpoller state per idle socket
		}
	}
	c := newConn(conn, s.cfg.MaxMessageBytes)
	c.srv = s
	early := buffered(rw.Reader)
	sess, err := s.hub.Attach(sid, claims.Device, claims.Groups, claims.ExpiresAt, c)
	if err != nil {
		if errors.Is(err, hub.ErrDraining) {
			c.Close(wire.CloseGoingAway)
		}
		c.finish()
		return
	}
	if s.poll != nil && s.poll.add(c, sess, early) == nil {
		return // the poller owns the connection now; this goroutine ends
	}
	if len(early) > 0 {
		c.r = io.MultiReader(bytes.NewReader(early), conn)
	}
	c.readLoop(sess, 2*s.hub.Config().Heartbeat)
}

// connFinished releases what an upgraded connection held.
func (s *Server) connFinished() {
	s.active.Add(-1)
	s.conns.Done()
}

// verifyToken reads the device token from the Authorization header or the
// token query parameter.
func (s *Server) verifyToken(r *http.Request) (token.Claims, error) {
	tok, ok := bearer(r)
	if !ok {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		return token.Claims{}, tether.Errorf(tether.EUnauthorized, "missing device token: send Authorization: Bearer <token> or ?token=<token>")
	}
	return token.Verify(s.cfg.TokenSecret, tok, time.Now())
}

// originAllowed applies --allowed-origins: a request without Origin is not a
// browser and is judged by its token alone.
func (s *Server) originAllowed(r *http.Request) bool {
	if len(s.cfg.AllowedOrigins) == 0 {
		return true
	}
	origin, ok := r.Header["Origin"]
	if !ok {
		return true
	}
	if len(origin) != 1 {
		return false
	}
	for _, a := range s.cfg.AllowedOrigins {
		if strings.EqualFold(origin[0], a) {
			return true
		}
	}
	return false
}
