package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/secret"
)

// Defaults of the serve flags that the root package does not define
// (SPEC section 4).
const (
	defaultListen      = ":8080"
	defaultAdminListen = "127.0.0.1:8081"
	defaultDataDir     = "./tether-data"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultLogLevel    = "info"
	defaultLogFormat   = "text"

	storeEmbedded = "embedded"
	storeRedis    = "redis"
)

// Bounds of the numeric serve flags.
const (
	maxInflightLimit     = 65536
	maxMessageBytesLimit = 64 << 20
)

// serveConfig is the configuration of `tether serve`: one field per flag,
// already validated by parseServe.
type serveConfig struct {
	Listen      string // API and WebSocket address
	AdminListen string // metrics, pprof, dashboard; "" disables the admin listener
	Store       string // storeEmbedded or storeRedis
	DataDir     string // embedded store files and generated secrets
	RedisURL    string // redis:// or rediss:// (or unix://); used with storeRedis
	// RedisCluster says --redis-url names a seed node of a Redis Cluster.
	RedisCluster bool
	// RedisSentinel are Sentinel addresses, host:port: --redis-url then
	// names the master set (redis://MASTERNAME/0), found through them.
	RedisSentinel []string
	// RedisMinReplicas and RedisReplicaTimeout: writes that answer a
	// publish or record acks wait for that many replicas (WAIT).
	RedisMinReplicas    int
	RedisReplicaTimeout time.Duration
	// MaxConnectRate bounds new sessions per second; 0 = unlimited.
	MaxConnectRate int
	NodeID         string // valid id; default host name + ":" + port of Listen

	// TokenSecret and APIKey are "" when not given by flag or environment:
	// serve then reads or generates them in DataDir (see loadSecrets).
	TokenSecret string
	APIKey      string

	// AllowedOrigins holds normalised origins, scheme://host[:port] with
	// lower-case scheme and host and no default port. Empty: any origin.
	AllowedOrigins []string

	TLSCert string // both or neither
	TLSKey  string

	Heartbeat       time.Duration
	AckTimeout      time.Duration
	MaxInflight     int
	MaxMessageBytes int
	MaxTTL          time.Duration
	MaxAttempts     int // 0 = unlimited
	MaxConnections  int // 0 = unlimited
	ShutdownTimeout time.Duration
	MaxDeliveryLag  time.Duration

	// WebhookURL receives the event log in signed batches (SPEC section
	// 11); "" sends none. WebhookSecret keys the signature.
	WebhookURL     string
	WebhookSecret  string
	EventRetention time.Duration

	LogLevel  string // debug, info, warn or error
	LogFormat string // text or json
}

const serveAbout = `Run a gateway node: the WebSocket endpoint and HTTP API on --listen, metrics,
pprof and the dashboard on --admin-listen. When --token-secret or --api-key is
absent, it is read from --data-dir, or generated there once.`

// serveFlags defines the serve flags on c.
func serveFlags(c *serveConfig, getenv func(string) string, help io.Writer) *flagSet {
	f := newFlagSet("serve", "serve [flags]", serveAbout, getenv, help)
	f.String(&c.Listen, "listen", defaultListen, "`address` of the WebSocket endpoint and HTTP API")
	f.String(&c.AdminListen, "admin-listen", defaultAdminListen, "`address` of metrics, pprof and the dashboard; empty disables it")
	f.String(&c.Store, "store", storeEmbedded, "`backend`: embedded or redis")
	f.String(&c.DataDir, "data-dir", defaultDataDir, "`directory` of the embedded store and of generated secrets")
	f.String(&c.RedisURL, "redis-url", defaultRedisURL, "Redis `URL` (with --store redis)")
	f.Bool(&c.RedisCluster, "redis-cluster", false, "--redis-url is a seed node of a Redis Cluster")
	f.Int(&c.RedisMinReplicas, "redis-min-replicas", 0, "replicas that must have a write before a publish is answered or an ack recorded (WAIT); 0 = none")
	f.Duration(&c.RedisReplicaTimeout, "redis-replica-timeout", time.Second, "longest wait for --redis-min-replicas; past it the publish is answered 503")
	f.Strings(&c.RedisSentinel, "redis-sentinel", nil, "Sentinel `addresses` host:port, comma-separated: --redis-url names the master set (redis://MASTERNAME/0) and the node follows its failovers")
	f.String(&c.NodeID, "node-id", "", "`id` of this node (default: host name and port of --listen)")
	f.String(&c.TokenSecret, "token-secret", "", "`secret` that signs device tokens (default: kept in --data-dir)")
	f.String(&c.APIKey, "api-key", "", "`key` of the HTTP API (default: kept in --data-dir)")
	f.Strings(&c.AllowedOrigins, "allowed-origins", nil, "browser `origins` allowed to connect, scheme://host[:port] (default: any)")
	f.String(&c.TLSCert, "tls-cert", "", "TLS certificate `file` (with --tls-key)")
	f.String(&c.TLSKey, "tls-key", "", "TLS key `file` (with --tls-cert)")
	f.Duration(&c.Heartbeat, "heartbeat", tether.DefaultHeartbeat, "interval of WebSocket pings; silence for twice as long closes")
	f.Duration(&c.AckTimeout, "ack-timeout", tether.DefaultAckTimeout, "redeliver what is not acked within this `duration`")
	f.Int(&c.MaxInflight, "max-inflight", tether.DefaultMaxInflight, "unacked deliveries per connection")
	f.Int(&c.MaxMessageBytes, "max-message-bytes", tether.DefaultMaxMessageBytes, "largest message data and client frame, in `bytes`")
	f.Duration(&c.MaxTTL, "max-ttl", tether.DefaultMaxTTL, "longest time to live of a message")
	f.Int(&c.MaxAttempts, "max-attempts", 0, "sends without an ack before a delivery is dead; 0 = unlimited")
	f.Int(&c.MaxConnections, "max-connections", 0, "WebSocket connections of this node; 0 = unlimited")
	f.Int(&c.MaxConnectRate, "max-connect-rate", 0, "new WebSocket sessions per second, over it 503 (a reconnect storm is shed); 0 = unlimited")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", tether.DefaultShutdownTimeout, "longest drain after SIGTERM")
	f.Duration(&c.MaxDeliveryLag, "max-delivery-lag", hub.DefaultMaxDeliveryLag, "publishes are refused with 503 overloaded while the node is a quarter of this `duration` behind")
	f.String(&c.WebhookURL, "webhook-url", "", "`URL` that receives the event log (receipts, presence) in signed batches")
	f.String(&c.WebhookSecret, "webhook-secret", "", "`secret` that signs webhook batches (Tether-Signature); required with --webhook-url")
	f.Duration(&c.EventRetention, "event-retention", hub.DefaultEventRetention, "how long the event log keeps events")
	f.String(&c.LogLevel, "log-level", defaultLogLevel, "`level`: debug, info, warn or error")
	f.String(&c.LogFormat, "log-format", defaultLogFormat, "`format`: text or json")
	return f
}

// parseServe parses and validates the serve flags, reading TETHER_* from
// getenv for flags not given. On --help it prints the usage to stderr and
// returns flag.ErrHelp; other errors are returned unprinted, one line per
// problem (errors.Join), each saying what to change. Report them with
// usageError(stderr, "serve", err).
func parseServe(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	var c serveConfig
	f := serveFlags(&c, getenv, stderr)
	if err := f.parse(args); err != nil {
		return serveConfig{}, err
	}
	if err := f.noArgs(); err != nil {
		return serveConfig{}, err
	}
	if err := c.validate(os.Hostname); err != nil {
		return serveConfig{}, err
	}
	return c, nil
}

// validate checks c, normalises AllowedOrigins, LogLevel and LogFormat,
// and sets the default NodeID from hostname.
func (c *serveConfig) validate(hostname func() (string, error)) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := checkAddr(c.Listen); err != nil {
		bad("--listen %q: %v", c.Listen, err)
	}
	if c.AdminListen != "" {
		if err := checkAddr(c.AdminListen); err != nil {
			bad("--admin-listen %q: %v", c.AdminListen, err)
		} else if c.AdminListen == c.Listen {
			bad("--admin-listen %q: must differ from --listen", c.AdminListen)
		}
	}
	switch c.Store {
	case storeEmbedded, storeRedis:
	default:
		bad("--store %q: want embedded or redis", c.Store)
	}
	if c.DataDir == "" {
		bad("--data-dir: must not be empty")
	}
	if c.Store == storeRedis {
		if err := checkRedisURL(c.RedisURL); err != nil {
			bad("--redis-url: %v", err)
		}
		if c.RedisMinReplicas < 0 {
			bad("--redis-min-replicas %d: must be 0 or more", c.RedisMinReplicas)
		}
		if c.RedisReplicaTimeout <= 0 {
			bad("--redis-replica-timeout %v: must be positive", c.RedisReplicaTimeout)
		}
		if len(c.RedisSentinel) > 0 && c.RedisCluster {
			bad("--redis-sentinel and --redis-cluster: give one or the other")
		}
		for _, a := range c.RedisSentinel {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad("--redis-sentinel %q: want host:port", a)
			}
		}
	}
	errs = append(errs, c.validateNodeID(hostname)...)
	errs = append(errs, c.validateOrigins()...)
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("--tls-cert and --tls-key: give both or neither")
	}
	errs = append(errs, c.validateLimits()...)
	errs = append(errs, c.validateWebhook()...)
	errs = append(errs, c.validateLog()...)
	return errors.Join(errs...)
}

// validateWebhook checks --webhook-url and --webhook-secret.
func (c *serveConfig) validateWebhook() []error {
	if c.WebhookURL == "" {
		if c.WebhookSecret != "" {
			return []error{errors.New("--webhook-secret without --webhook-url: give the URL that receives the events")}
		}
		return nil
	}
	var errs []error
	if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--webhook-url %q: want an http:// or https:// URL", c.WebhookURL))
	}
	if c.WebhookSecret == "" {
		errs = append(errs, errors.New("--webhook-url needs --webhook-secret: receivers check each batch's Tether-Signature with it"))
	}
	return errs
}

// validateNodeID sets the default node id and checks it.
func (c *serveConfig) validateNodeID(hostname func() (string, error)) []error {
	if c.NodeID != "" {
		if !tether.ValidID(c.NodeID) {
			return []error{fmt.Errorf("--node-id %q: must be 1-128 characters from [A-Za-z0-9._:-]", c.NodeID)}
		}
		return nil
	}
	id, err := defaultNodeID(hostname, c.Listen)
	if err != nil {
		return []error{err}
	}
	c.NodeID = id
	return nil
}

// defaultNodeID returns host name + ":" + port of listen.
func defaultNodeID(hostname func() (string, error), listen string) (string, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", nil // reported for --listen
	}
	host, err := hostname()
	if err != nil {
		return "", fmt.Errorf("--node-id: cannot read the host name (%v); pass --node-id", err)
	}
	id := host + ":" + port
	if !tether.ValidID(id) {
		return "", fmt.Errorf("--node-id: the default %q (host name and port) is not a valid id; pass --node-id with 1-128 characters from [A-Za-z0-9._:-]", id)
	}
	return id, nil
}

// validateOrigins normalises and checks AllowedOrigins.
func (c *serveConfig) validateOrigins() []error {
	var errs []error
	seen := make(map[string]bool)
	origins := c.AllowedOrigins[:0:0]
	for _, o := range c.AllowedOrigins {
		n, err := normalizeOrigin(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("--allowed-origins %q: %v", o, err))
			continue
		}
		if !seen[n] {
			seen[n] = true
			origins = append(origins, n)
		}
	}
	c.AllowedOrigins = origins
	return errs
}

// validateLimits checks durations and numeric limits.
func (c *serveConfig) validateLimits() []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat", c.Heartbeat},
		{"ack-timeout", c.AckTimeout},
		{"max-ttl", c.MaxTTL},
		{"shutdown-timeout", c.ShutdownTimeout},
		{"max-delivery-lag", c.MaxDeliveryLag},
		{"event-retention", c.EventRetention},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %v: must be positive", d.name, d.v))
		}
	}
	if c.MaxInflight < 1 || c.MaxInflight > maxInflightLimit {
		errs = append(errs, fmt.Errorf("--max-inflight %d: must be between 1 and %d", c.MaxInflight, maxInflightLimit))
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > maxMessageBytesLimit {
		errs = append(errs, fmt.Errorf("--max-message-bytes %d: must be between 1 and %d", c.MaxMessageBytes, maxMessageBytesLimit))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("--max-attempts %d: must be 0 (unlimited) or more", c.MaxAttempts))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("--max-connections %d: must be 0 (unlimited) or more", c.MaxConnections))
	}
	if c.MaxConnectRate < 0 {
		errs = append(errs, fmt.Errorf("--max-connect-rate %d: must be 0 (unlimited) or more", c.MaxConnectRate))
	}
	return errs
}

// validateLog normalises and checks LogLevel and LogFormat.
func (c *serveConfig) validateLog() []error {
	var errs []error
	c.LogLevel = strings.ToLower(c.LogLevel)
	if c.LogLevel == "warning" {
		c.LogLevel = "warn" // the spelling slog.Level.UnmarshalText takes
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	return errs
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// checkAddr checks a listen address: host:port, where host may be empty.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, such as :8080 or 127.0.0.1:8081")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	return nil
}

// checkRedisURL checks the form of a Redis URL. It does not echo the URL,
// which may hold a password.
func checkRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL; want redis://[user:password@]host:port/db")
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return errors.New("no host; want redis://[user:password@]host:port/db")
		}
	case "unix":
		if u.Path == "" {
			return errors.New("no socket path; want unix:///path/to/redis.sock")
		}
	default:
		return fmt.Errorf("scheme %q: want redis, rediss or unix", u.Scheme)
	}
	return nil
}

// normalizeOrigin checks that o is an origin, scheme://host[:port], and
// returns it the way browsers send it in the Origin header: lower-case
// scheme and host, no default port, no trailing slash.
func normalizeOrigin(o string) (string, error) {
	const want = "want scheme://host[:port], such as https://shop.example.com"
	if o == "*" || o == "null" {
		return "", fmt.Errorf("list the allowed origins one by one; %s", want)
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "", errors.New(want)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", fmt.Errorf("an origin has no user, path, query or fragment; %s", want)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q must be a number from 1 to 65535", port)
		}
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// slogLevel returns the parsed LogLevel.
func (c *serveConfig) slogLevel() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}

// newLogger returns the logger serve logs with, writing to w in LogFormat
// at LogLevel.
func (c *serveConfig) newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.slogLevel()}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// loadSecrets returns the token secret and API key serve runs with: the
// given ones, else those kept in DataDir, generated there when missing.
// When Generated is set, serve logs TokenSecretPath and APIKeyPath.
func (c *serveConfig) loadSecrets() (secret.Secrets, error) {
	return secret.Ensure(c.TokenSecret, c.APIKey, c.DataDir)
}

// LogValue lets a serveConfig be logged without its secrets.
func (c serveConfig) LogValue() slog.Value {
	given := func(s string) string {
		if s == "" {
			return "data-dir"
		}
		return "given"
	}
	return slog.GroupValue(
		slog.String("listen", c.Listen), slog.String("admin_listen", c.AdminListen),
		slog.String("store", c.Store), slog.String("data_dir", c.DataDir),
		slog.String("node_id", c.NodeID),
		slog.String("token_secret", given(c.TokenSecret)), slog.String("api_key", given(c.APIKey)),
		slog.Any("allowed_origins", c.AllowedOrigins), slog.Bool("tls", c.TLSCert != ""),
		slog.Duration("heartbeat", c.Heartbeat), slog.Duration("ack_timeout", c.AckTimeout),
		slog.Int("max_inflight", c.MaxInflight), slog.Int("max_message_bytes", c.MaxMessageBytes),
		slog.Duration("max_ttl", c.MaxTTL), slog.Int("max_attempts", c.MaxAttempts),
		slog.Int("max_connections", c.MaxConnections), slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.Duration("max_delivery_lag", c.MaxDeliveryLag),
		slog.String("webhook_url", c.WebhookURL), slog.String("webhook_secret", given(c.WebhookSecret)),
		slog.Duration("event_retention", c.EventRetention),
	)
}
