package dashboard

import (
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/token"
)

// MaxDemoGroups is the most groups a demo token may name.
const MaxDemoGroups = 16

// TokenRequest is the body of POST /demo/token.
type TokenRequest struct {
	Device string   `json:"device"`
	Groups []string `json:"groups"`
}

// TokenResponse answers POST /demo/token: a device token signed with the
// node's token secret and the gateway URL to dial with it.
type TokenResponse struct {
	Token     string    `json:"token"`
	URL       string    `json:"url"` // ws[s]://host:port/v1/connect; "" when unknown
	Device    string    `json:"device"`
	Groups    []string  `json:"groups"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleToken mints a device token for the demo page. The admin listener
// is loopback by default; on top of that the request must be JSON (which a
// page of another origin cannot send without a CORS preflight that this
// handler never grants) and, from a browser, come from the admin origin.
func (h *Handler) handleToken(w http.ResponseWriter, r *http.Request) {
	if len(h.cfg.TokenSecret) == 0 {
		writeError(w, http.StatusNotFound, tether.ENotFound, "demo tokens are off: this node has no token secret")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, tether.EInvalid, "send Content-Type: application/json")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !strings.EqualFold(origin, adminOrigin(r)) {
		writeError(w, http.StatusForbidden, tether.EUnauthorized, "demo tokens are minted for the admin origin only")
		return
	}
	var req TokenRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, tether.EInvalid, "body: want {\"device\":\"demo-1\",\"groups\":[\"shop-1\"]}")
		return
	}
	if len(req.Groups) > MaxDemoGroups {
		writeError(w, http.StatusBadRequest, tether.EInvalid, "too many groups for a demo token")
		return
	}
	if req.Groups == nil {
		req.Groups = []string{}
	}
	exp := h.now().Add(h.cfg.DemoTokenTTL).Truncate(time.Second)
	tok, err := token.Sign(h.cfg.TokenSecret, token.Claims{Device: req.Device, Groups: req.Groups, ExpiresAt: exp})
	if err != nil {
		writeError(w, http.StatusBadRequest, tether.ErrorCode(err), tether.ErrorMessage(err))
		return
	}
	writeJSON(w, http.StatusOK, TokenResponse{Token: tok, URL: h.gatewayURL(r), Device: req.Device, Groups: req.Groups, ExpiresAt: exp})
}

// adminOrigin is the origin of a page served by this request's listener.
func adminOrigin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// gatewayURL is the WebSocket URL of the gateway as seen from the browser
// that sent r.
func (h *Handler) gatewayURL(r *http.Request) string {
	host, port, err := net.SplitHostPort(h.cfg.PublicAddr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = r.Host
		if hh, _, err := net.SplitHostPort(r.Host); err == nil {
			host = hh
		}
		host = strings.Trim(host, "[]")
	}
	scheme := "ws"
	if h.cfg.PublicTLS {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/v1/connect"
}
