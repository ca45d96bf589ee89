package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/dashboard"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/secret"
	"github.com/tetherpush/tether/redis"
	"github.com/tetherpush/tether/webhook"
)

// serveMain runs `tether serve` until ctx ends (SIGINT/SIGTERM), then
// drains.
func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cfg, err := parseServe(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tether serve: %v\n", err)
		return 2
	}
	log := cfg.newLogger(stderr)
	n, err := openNode(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	<-ctx.Done()
	if err := n.shutdown(cfg.ShutdownTimeout); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// node is one running gateway: store, hub and HTTP server.
type node struct {
	log   *slog.Logger
	store tether.Store
	hub   *hub.Hub
	srv   *tetherhttp.Server
	// webhook sends the event log to --webhook-url; nil without it.
	webhook *webhook.Sender
}

// openStore opens the configured store and, for Redis, its fleet.
func openStore(cfg serveConfig, log *slog.Logger) (tether.Store, tether.Fleet, error) {
	if cfg.Store == "redis" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := redis.Open(ctx, redis.Options{URL: cfg.RedisURL, Cluster: cfg.RedisCluster, Sentinels: cfg.RedisSentinel,
			MinReplicas: cfg.RedisMinReplicas, ReplicaTimeout: cfg.RedisReplicaTimeout})
		if err != nil {
			return nil, nil, fmt.Errorf("open redis store: %w", err)
		}
		if cfg.TokenSecret == "" || cfg.APIKey == "" {
			log.Warn("with --store redis every node needs the same --token-secret and --api-key; " +
				"secrets generated in this node's data dir are its own")
		}
		return st, st.Fleet(), nil // its Collector is registered by openNode
	}
	dbPath := filepath.Join(cfg.DataDir, "tether.db")
	st, err := bolt.Open(dbPath, bolt.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("open embedded store %s: %w", dbPath, err)
	}
	return st, nil, nil
}

func openNode(cfg serveConfig, log *slog.Logger) (*node, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	sec, err := secret.Ensure(cfg.TokenSecret, cfg.APIKey, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	st, fleet, err := openStore(cfg, log)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c, ok := st.(interface{ Collector() prometheus.Collector }); ok {
		reg.MustRegister(c.Collector())
	}
	var snd *webhook.Sender // nil without --webhook-url
	notify := func() {}
	if cfg.WebhookURL != "" {
		// The lease lasts 3 × its heartbeat: at most --heartbeat, so that
		// another node takes over within 3 × --heartbeat of a crash.
		snd = webhook.New(st, webhook.Config{URL: cfg.WebhookURL, Secret: []byte(cfg.WebhookSecret), Holder: cfg.NodeID,
			Heartbeat: min(webhook.DefaultHeartbeat, cfg.Heartbeat),
			Logger:    log.With("component", "webhook"), Metrics: webhook.NewMetrics(reg)})
		notify = snd.Notify
	}
	h := hub.New(st, hub.Config{
		EventRetention: cfg.EventRetention,
		OnEvents:       notify,
		Node:           cfg.NodeID,
		Heartbeat:      cfg.Heartbeat,
		AckTimeout:     cfg.AckTimeout,
		MaxInflight:    cfg.MaxInflight,
		MaxAttempts:    cfg.MaxAttempts,
		MaxDeliveryLag: cfg.MaxDeliveryLag,
		Logger:         log.With("component", "hub"),
		Metrics:        hub.NewMetrics(reg),
		Fleet:          fleet,
	})
	if err := h.Open(); err != nil {
		st.Close()
		return nil, err
	}
	if snd != nil {
		if err := snd.Open(); err != nil {
			h.Close()
			st.Close()
			return nil, fmt.Errorf("webhook: %w", err)
		}
	}
	admin := cfg.AdminListen
	if admin == "" {
		admin = "-" // an empty --admin-listen turns the admin listener off
	}
	var servers func() []string
	if sv, ok := st.(interface{ Servers() []string }); ok {
		servers = sv.Servers
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{
		StoreServers:    servers,
		Listen:          cfg.Listen,
		AdminListen:     admin,
		TLSCert:         cfg.TLSCert,
		TLSKey:          cfg.TLSKey,
		AllowedOrigins:  cfg.AllowedOrigins,
		MaxConnections:  cfg.MaxConnections,
		MaxConnectRate:  float64(cfg.MaxConnectRate),
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxTTL:          cfg.MaxTTL,
		TokenSecret:     []byte(sec.TokenSecret),
		APIKey:          sec.APIKey,
		Logger:          log.With("component", "http"),
		Gatherer:        reg,
		Registerer:      reg,
		Dashboard: func(apiAddr string) http.Handler {
			return dashboard.New(dashboard.Config{Node: cfg.NodeID, Gatherer: reg, Online: h.OnlineDevices,
				StoreServers: servers, TokenSecret: []byte(sec.TokenSecret), PublicAddr: apiAddr, PublicTLS: cfg.TLSCert != ""})
		},
	})
	if err := srv.Open(); err != nil {
		h.Close()
		if snd != nil {
			snd.Close()
		}
		st.Close()
		return nil, err
	}
	n := &node{log: log, store: st, hub: h, srv: srv, webhook: snd}
	n.announce(cfg, sec)
	return n, nil
}

// announce logs where the node listens and how to use it.
func (n *node) announce(cfg serveConfig, sec secret.Secrets) {
	n.log.Info("tether serving", "listen", n.srv.Addr(), "admin", n.srv.AdminAddr(),
		"store", cfg.Store, "data_dir", cfg.DataDir, "node", cfg.NodeID)
	if sec.TokenSecretPath != "" {
		verb := "using"
		if sec.Generated {
			verb = "generated"
		}
		n.log.Info(verb+" token secret and API key", "token_secret_file", sec.TokenSecretPath, "api_key_file", sec.APIKeyPath)
		n.log.Info("mint a device token with: tether token --data-dir " + cfg.DataDir + " --device pos-1 --group shop-1")
		n.log.Info("publish with: tether publish --data-dir " + cfg.DataDir + " --url http://" + dialable(n.srv.Addr()) + ` --target group:shop-1 --data '{"order":1}'`)
	}
}

// dialable turns a listen address into one a local client can dial: an
// unspecified host ("[::]", "0.0.0.0") becomes 127.0.0.1.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// shutdown drains within timeout: new sessions refused and /readyz 503,
// sessions closed with 1001 over half the timeout, acks flushed, then the
// listeners and the store closed.
func (n *node) shutdown(timeout time.Duration) error {
	n.log.Info("draining", "timeout", timeout.String(), "sessions", n.hub.Connections())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := n.hub.Shutdown(ctx)
	n.log.Info("sessions closed", "took", time.Since(start).Round(time.Millisecond).String(), "err", err)
	if e := n.srv.Shutdown(ctx); err == nil {
		err = e
	}
	n.log.Info("listeners closed", "took", time.Since(start).Round(time.Millisecond).String(), "err", err)
	n.hub.Close()
	n.srv.Close()
	if n.webhook != nil {
		n.webhook.Close() // hands the lease over to another node at once
	}
	if e := n.store.Close(); err == nil {
		err = e
	}
	if err == nil {
		n.log.Info("stopped")
	}
	return err
}
