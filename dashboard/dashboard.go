// Package dashboard serves the admin listener's pages for a person (SPEC
// section 7): a live dashboard of one node at "/", fed by GET /api/stats and
// GET /api/devices, and a demo device page at "/demo" that connects to the
// gateway with the small JavaScript client static/tether.js (SPEC section
// 10). Every file it serves is embedded: the pages load nothing but what this
// handler serves, and the demo page dials nothing but the gateway.
//
// The numbers come from a prometheus.Gatherer, read when a page asks and at
// most once per MinInterval, so that rates are computed from successive
// samples and several open pages cost no more than one. The handler starts
// no goroutine.
package dashboard

import (
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether"
)

// Defaults of Config fields, and bounds.
const (
	DefaultHistory       = 120 // samples: two minutes at one per second
	DefaultLatencyWindow = 10 * time.Second
	DefaultDemoTokenTTL  = time.Hour
	DefaultDeviceLimit   = 100
	MaxDeviceLimit       = 1000
	// MinInterval is the least time between two samples; a request that
	// comes sooner gets the latest answer again.
	MinInterval = 900 * time.Millisecond
)

// Config configures a Handler. Zero fields mean the documented default.
type Config struct {
	// Node is the node id shown in the page header.
	Node string
	// Gatherer provides the numbers; nil: /api/stats answers 503.
	Gatherer prometheus.Gatherer
	// Online lists the devices connected to this node: the first limit
	// whose ids start with prefix, in id order, and how many match in all
	// (hub.Hub.OnlineDevices). nil: no device list.
	Online func(prefix string, limit int) ([]tether.DeviceInfo, int)
	// StoreServers names the servers the store uses now (the Redis
	// primary found through Sentinel, after a failover another one); nil
	// or an empty answer: the page names none (the embedded store).
	StoreServers func() []string
	// TokenSecret signs the demo page's device tokens (POST /demo/token);
	// empty turns that endpoint off.
	TokenSecret []byte
	// PublicAddr is the host:port the gateway's listener is bound to; the
	// demo page dials ws://PublicAddr/v1/connect. An unspecified host
	// (":8080", "0.0.0.0:8080", "[::]:8080") is replaced by the host the
	// browser used to reach the admin page.
	PublicAddr string
	// PublicTLS makes the demo page dial wss:// instead of ws://.
	PublicTLS bool
	// DemoTokenTTL is the life of a demo token. Default DefaultDemoTokenTTL.
	DemoTokenTTL time.Duration
	// History is the number of samples kept for charts. Default
	// DefaultHistory.
	History int
	// LatencyWindow is the span of the latency quantiles and store call
	// rates. Default DefaultLatencyWindow.
	LatencyWindow time.Duration
	// Logger receives failures to gather metrics. Default: none.
	Logger *slog.Logger
}

//go:embed static
var static embed.FS

// Handler serves the dashboard, its API and the demo page.
type Handler struct {
	cfg  Config
	mux  *http.ServeMux
	now  func() time.Time
	site fs.FS

	mu   sync.Mutex // guards following
	hist history
	last []byte // the latest /api/stats answer
}

// New returns the handler, to be mounted at the root of the admin mux.
func New(cfg Config) *Handler {
	if cfg.DemoTokenTTL <= 0 {
		cfg.DemoTokenTTL = DefaultDemoTokenTTL
	}
	if cfg.History <= 1 {
		cfg.History = DefaultHistory
	}
	if cfg.LatencyWindow <= 0 {
		cfg.LatencyWindow = DefaultLatencyWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	site, _ := fs.Sub(static, "static") // cannot fail: the directory is embedded
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), now: time.Now, site: site}
	h.hist.limit = cfg.History
	h.mux.HandleFunc("GET /{$}", h.page("index.html"))
	h.mux.HandleFunc("GET /demo", h.page("demo.html"))
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(site)))
	h.mux.HandleFunc("GET /api/stats", h.handleStats)
	h.mux.HandleFunc("GET /api/devices", h.handleDevices)
	h.mux.HandleFunc("POST /demo/token", h.handleToken)
	return h
}

// contentPolicy lets the pages load only what this handler serves and
// connect only to it and to WebSocket endpoints (the gateway).
const contentPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP serves the pages, their files and the JSON API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, h.site, name)
	}
}

func (h *Handler) handleStats(w http.ResponseWriter, r *http.Request) {
	body, err := h.Stats()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, tether.EUnavailable, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// Stats returns the JSON of /api/stats. It samples the gatherer unless the
// latest sample is younger than MinInterval.
func (h *Handler) Stats() ([]byte, error) {
	if h.cfg.Gatherer == nil {
		return nil, errors.New("this node exports no metrics")
	}
	h.mu.Lock()
	fresh := h.freshLocked()
	h.mu.Unlock()
	if fresh != nil {
		return fresh, nil
	}
	families, err := h.cfg.Gatherer.Gather() // outside the lock: it reads /proc
	if err != nil {
		h.cfg.Logger.Debug("gather metrics", "err", err)
		if len(families) == 0 {
			return nil, errors.New("gathering metrics failed")
		}
	}
	s := newSample(h.now(), families)
	h.mu.Lock()
	defer h.mu.Unlock()
	if fresh := h.freshLocked(); fresh != nil { // another request sampled meanwhile
		return fresh, nil
	}
	h.hist.add(s)
	st := h.hist.stats(h.cfg.Node, h.cfg.LatencyWindow)
	if h.cfg.StoreServers != nil {
		st.Store.Servers = h.cfg.StoreServers()
	}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	h.last = body
	return body, nil
}

// freshLocked returns the latest answer if it is younger than MinInterval.
func (h *Handler) freshLocked() []byte {
	if n := len(h.hist.points); n > 0 && h.now().Sub(h.hist.points[n-1].s.at) < MinInterval {
		return h.last
	}
	return nil
}

// Device is one online device in the answer of /api/devices.
type Device struct {
	ID          string    `json:"id"`
	Groups      []string  `json:"groups"`
	ConnectedAt time.Time `json:"connected_at"`
	LastSeen    time.Time `json:"last_seen"`
}

// Devices is the answer of GET /api/devices?prefix=P&limit=N.
type Devices struct {
	Total       int      `json:"total"` // devices matching the prefix
	Limit       int      `json:"limit"`
	Prefix      string   `json:"prefix"`
	Devices     []Device `json:"devices"` // the first Limit, in id order
	Unavailable bool     `json:"unavailable,omitempty"`
}

func (h *Handler) handleDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	if prefix != "" && !tether.ValidID(prefix) {
		writeError(w, http.StatusBadRequest, tether.EInvalid, "prefix: want 1–128 characters from [A-Za-z0-9._:-]")
		return
	}
	limit := DefaultDeviceLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > MaxDeviceLimit {
			writeError(w, http.StatusBadRequest, tether.EInvalid, "limit: want 0 to "+strconv.Itoa(MaxDeviceLimit))
			return
		}
		limit = n
	}
	out := Devices{Limit: limit, Prefix: prefix, Devices: []Device{}}
	if h.cfg.Online == nil {
		out.Unavailable = true
	} else {
		list, total := h.cfg.Online(prefix, limit)
		out.Total = total
		for _, d := range list {
			groups := d.Groups
			if groups == nil {
				groups = []string{}
			}
			out.Devices = append(out.Devices, Device{ID: d.ID, Groups: groups, ConnectedAt: d.ConnectedAt, LastSeen: d.LastSeen})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// errorBody is the JSON form of an error, as the HTTP API writes it.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
