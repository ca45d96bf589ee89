// Package http is tether's HTTP adapter: API v1, the /v1/connect WebSocket
// endpoint with the reader of each connection, health checks and the
// loopback admin listener (metrics, pprof).
package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/hub"
)

// Defaults of Config fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
)

// Config configures a Server. Zero fields mean the documented default.
type Config struct {
	Listen         string // default ":8080"
	AdminListen    string // default "127.0.0.1:8081"; "-" disables it
	TLSCert        string
	TLSKey         string
	AllowedOrigins []string // scheme://host[:port]; empty: any origin
	MaxConnections int      // 0: unlimited
	// MaxConnectRate bounds new WebSocket sessions per second (burst: one
	// second's worth); over it: 503 with Retry-After. 0: unlimited.
	MaxConnectRate float64
	// MaxMessageBytes bounds message data and client frames.
	MaxMessageBytes int           // default tether.DefaultMaxMessageBytes
	MaxTTL          time.Duration // default tether.DefaultMaxTTL
	TokenSecret     []byte
	APIKey          string
	// ReadHeaderTimeout bounds the handshake of every request.
	ReadHeaderTimeout time.Duration
	Logger            *slog.Logger
	// Gatherer serves /metrics on the admin listener; nil: no /metrics.
	Gatherer prometheus.Gatherer
	// StoreServers, when set, names the servers the store uses now (the
	// Redis primary found through Sentinel); /debug/doctor reports them.
	StoreServers func() []string
	// Registerer, when set, gets the server's own collectors
	// (tether_tcp_sockets{state}).
	Registerer prometheus.Registerer
	// Dashboard builds the admin listener's "/" handler (package dashboard)
	// once the API listener is bound at apiAddr; nil: a plain index page.
	Dashboard func(apiAddr string) http.Handler
	// IO selects the WebSocket I/O layer: "epoll" (the default on Linux: no
	// goroutine per idle connection) or "goroutine" (one reader goroutine
	// per connection; always used for TLS and on other systems).
	IO string
}

// Server serves one tether node's HTTP and WebSocket traffic.
type Server struct {
	cfg    Config
	hub    *hub.Hub
	log    *slog.Logger
	apiKey [32]byte

	poll        *poller // nil: a reader goroutine per connection
	api, admin  *http.Server
	ln, adminLn net.Listener
	serving     sync.WaitGroup // the two Serve loops
	conns       sync.WaitGroup // WebSocket readers
	active      atomic.Int64   // WebSocket connections, upgrading included
	connects    *rate.Limiter  // nil: unlimited
	closeOnce   sync.Once
}

// NewServer returns a server for h. Call Open to bind.
func NewServer(h *hub.Hub, cfg Config) *Server {
	if cfg.Listen == "" {
		cfg.Listen = ":8080"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:8081"
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = tether.DefaultMaxMessageBytes
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = tether.DefaultMaxTTL
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, hub: h, log: cfg.Logger, apiKey: sha256.Sum256([]byte(cfg.APIKey))}
	if cfg.MaxConnectRate > 0 {
		s.connects = rate.NewLimiter(rate.Limit(cfg.MaxConnectRate), max(1, int(cfg.MaxConnectRate)))
	}
	return s
}

// Open binds the listeners (so ":0" works in tests) and starts serving.
func (s *Server) Open() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	s.ln = ln
	if s.cfg.Registerer != nil {
		if err := s.cfg.Registerer.Register(newSocketCollector(s.listenPort)); err != nil {
			ln.Close()
			return err
		}
	}
	if s.cfg.IO != "goroutine" && s.cfg.TLSCert == "" {
		if s.poll, err = openPoller(max(2, runtime.GOMAXPROCS(0))); err != nil {
			s.log.Warn("epoll unavailable; using a reader goroutine per connection", "err", err)
			s.poll = nil
		} else {
			s.poll.start()
		}
	}
	s.api = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.serve(s.api, ln)
	if s.cfg.AdminListen != "-" {
		aln, err := net.Listen("tcp", s.cfg.AdminListen)
		if err != nil {
			s.Close()
			return err
		}
		s.adminLn = aln
		s.admin = &http.Server{Handler: s.adminRoutes(), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout}
		s.serve(s.admin, aln)
	}
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// Addr is the bound API address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AdminAddr is the bound admin address, or "" when disabled.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/connect", s.handleConnect)
	mux.Handle("POST /v1/messages", s.auth(s.handlePublish))
	mux.Handle("POST /v1/messages/batch", s.auth(s.handleBatch))
	mux.Handle("GET /v1/messages/{id}", s.auth(s.handleMessage))
	mux.Handle("DELETE /v1/messages/{id}", s.auth(s.handleCancel))
	mux.Handle("GET /v1/events", s.auth(s.handleEvents))
	mux.Handle("GET /v1/devices/{id}", s.auth(s.handleDevice))
	mux.Handle("GET /v1/groups/{id}", s.auth(s.handleGroup))
	mux.Handle("PUT /v1/groups/{g}/devices/{d}", s.auth(s.handleMember))
	mux.Handle("DELETE /v1/groups/{g}/devices/{d}", s.auth(s.handleMember))
	mux.Handle("/v1/", s.auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.log, tether.Errorf(tether.ENotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.HandleFunc("GET /v1/openapi.json", handleOpenAPI)
	return mux
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.hub.Ready(ctx); err != nil {
		w.Header().Set("Retry-After", retryAfter)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// auth requires the API key as a bearer token, compared in constant time.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r)
		sum := sha256.Sum256([]byte(key))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.apiKey[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			writeError(w, r, s.log, tether.Errorf(tether.EUnauthorized, "missing or wrong API key: send Authorization: Bearer <api-key>"))
			return
		}
		next(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}

// Shutdown stops the listeners and waits for requests and WebSocket readers
// to end; sessions are drained by hub.Shutdown, which the caller runs first.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	if s.api != nil {
		err = s.api.Shutdown(ctx)
	}
	if s.admin != nil {
		if e := s.admin.Shutdown(ctx); err == nil {
			err = e
		}
	}
	done := make(chan struct{})
	go func() { s.conns.Wait(); s.serving.Wait(); close(done) }()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops everything at once and waits for the server's goroutines.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.api != nil {
			s.api.Close()
		}
		if s.admin != nil {
			s.admin.Close()
		}
	})
	if s.poll != nil {
		s.poll.close()
	}
	s.conns.Wait()
	s.serving.Wait()
	return nil
}
