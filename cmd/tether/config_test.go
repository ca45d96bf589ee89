package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// MustParseServe parses args with env or fails the test.
func MustParseServe(tb testing.TB, env map[string]string, args ...string) serveConfig {
	tb.Helper()
	c, err := parseServe(args, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		tb.Fatalf("parseServe(%q): %v", args, err)
	}
	return c
}

func TestParseServeDefaults(t *testing.T) {
	c := MustParseServe(t, nil)
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	want := serveConfig{
		Listen: ":8080", AdminListen: "127.0.0.1:8081", Store: "embedded", DataDir: "./tether-data",
		RedisURL: "redis://127.0.0.1:6379/0", RedisReplicaTimeout: time.Second, NodeID: host + ":8080",
		Heartbeat: 25 * time.Second, AckTimeout: 30 * time.Second, MaxInflight: 256, MaxMessageBytes: 65536,
		MaxTTL: 168 * time.Hour, MaxAttempts: 0, MaxConnections: 0, ShutdownTimeout: 30 * time.Second,
		MaxDeliveryLag: 5 * time.Second, EventRetention: 24 * time.Hour, LogLevel: "info", LogFormat: "text",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseServePrecedence(t *testing.T) {
	env := map[string]string{
		"TETHER_LISTEN":          ":9000",
		"TETHER_STORE":           "redis",
		"TETHER_REDIS_URL":       "redis://env:6379/1",
		"TETHER_HEARTBEAT":       "10s",
		"TETHER_MAX_INFLIGHT":    "32",
		"TETHER_ALLOWED_ORIGINS": "https://env.example,https://b.example",
		"TETHER_TOKEN_SECRET":    "env-secret",
		"TETHER_NODE_ID":         "env-node",
		"TETHER_LOG_FORMAT":      "json",
	}
	c := MustParseServe(t, env, "--listen", ":9001", "--max-inflight=64", "--allowed-origins", "https://flag.example")
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"flag beats env: listen", c.Listen, ":9001"},
		{"flag beats env: max-inflight", c.MaxInflight, 64},
		{"flag beats env: allowed-origins", strings.Join(c.AllowedOrigins, " "), "https://flag.example"},
		{"env beats default: store", c.Store, "redis"},
		{"env beats default: redis-url", c.RedisURL, "redis://env:6379/1"},
		{"env beats default: heartbeat", c.Heartbeat, 10 * time.Second},
		{"env beats default: token-secret", c.TokenSecret, "env-secret"},
		{"env beats default: node-id", c.NodeID, "env-node"},
		{"env beats default: log-format", c.LogFormat, "json"},
		{"default: ack-timeout", c.AckTimeout, 30 * time.Second},
		{"default: admin-listen", c.AdminListen, "127.0.0.1:8081"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	c = MustParseServe(t, env)
	if !slices.Equal(c.AllowedOrigins, []string{"https://env.example", "https://b.example"}) {
		t.Errorf("origins from env = %q", c.AllowedOrigins)
	}
}

func TestParseServeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"store", nil, []string{"--store", "mysql"}, `--store "mysql": want embedded or redis`},
		{"listen", nil, []string{"--listen", "8080"}, `--listen "8080": want host:port`},
		{"listen port", nil, []string{"--listen", ":99999"}, `port "99999"`},
		{"admin equals listen", nil, []string{"--listen", ":9000", "--admin-listen", ":9000"}, "must differ from --listen"},
		{"heartbeat zero", nil, []string{"--heartbeat", "0s"}, "--heartbeat 0s: must be positive"},
		{"ack-timeout negative", nil, []string{"--ack-timeout", "-1s"}, "--ack-timeout -1s: must be positive"},
		{"max-ttl zero", nil, []string{"--max-ttl", "0s"}, "--max-ttl"},
		{"shutdown-timeout zero", nil, []string{"--shutdown-timeout", "0s"}, "--shutdown-timeout"},
		{"heartbeat no unit", nil, []string{"--heartbeat", "25"}, `"25" is not a duration`},
		{"heartbeat env", map[string]string{"TETHER_HEARTBEAT": "soon"}, nil, "TETHER_HEARTBEAT"},
		{"max-inflight", nil, []string{"--max-inflight", "0"}, "--max-inflight 0: must be between 1 and"},
		{"max-message-bytes", nil, []string{"--max-message-bytes", "-5"}, "--max-message-bytes -5"},
		{"max-attempts", nil, []string{"--max-attempts", "-1"}, "--max-attempts -1"},
		{"max-connections", map[string]string{"TETHER_MAX_CONNECTIONS": "-1"}, nil, "--max-connections -1"},
		{"tls cert alone", nil, []string{"--tls-cert", "c.pem"}, "give both or neither"},
		{"tls key alone", nil, []string{"--tls-key", "k.pem"}, "give both or neither"},
		{"origin with path", nil, []string{"--allowed-origins", "https://a.example/app"}, "no user, path, query or fragment"},
		{"origin without scheme", nil, []string{"--allowed-origins", "a.example"}, "want scheme://host[:port]"},
		{"origin star", nil, []string{"--allowed-origins", "*"}, "one by one"},
		{"redis url", nil, []string{"--store", "redis", "--redis-url", "http://x"}, `scheme "http": want redis, rediss or unix`},
		{"redis no host", nil, []string{"--store", "redis", "--redis-url", "redis:///0"}, "no host"},
		{"sentinel address", nil, []string{"--store", "redis", "--redis-url", "redis://mymaster/0", "--redis-sentinel", "10.0.0.1"}, `--redis-sentinel "10.0.0.1": want host:port`},
		{"min replicas", nil, []string{"--store", "redis", "--redis-min-replicas", "-1"}, "--redis-min-replicas -1: must be 0 or more"},
		{"replica timeout", nil, []string{"--store", "redis", "--redis-replica-timeout", "0s"}, "--redis-replica-timeout 0s: must be positive"},
		{"sentinel and cluster", nil, []string{"--store", "redis", "--redis-url", "redis://mymaster/0", "--redis-sentinel", "10.0.0.1:26379", "--redis-cluster"}, "give one or the other"},
		{"webhook url", nil, []string{"--webhook-url", "ftp://x/hook", "--webhook-secret", "s"}, `--webhook-url "ftp://x/hook": want an http:// or https:// URL`},
		{"webhook without secret", nil, []string{"--webhook-url", "http://127.0.0.1:9000/hook"}, "--webhook-url needs --webhook-secret"},
		{"webhook secret alone", map[string]string{"TETHER_WEBHOOK_SECRET": "s"}, nil, "--webhook-secret without --webhook-url"},
		{"event retention", nil, []string{"--event-retention", "0s"}, "--event-retention 0s: must be positive"},
		{"node id", nil, []string{"--node-id", "node 1"}, `--node-id "node 1"`},
		{"data dir", nil, []string{"--data-dir", ""}, "--data-dir: must not be empty"},
		{"log level", nil, []string{"--log-level", "loud"}, `--log-level "loud"`},
		{"log format", nil, []string{"--log-format", "xml"}, `--log-format "xml"`},
		{"stray argument", nil, []string{"now"}, `unexpected argument "now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseServe(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseServe(%q) error = %v, want it to contain %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestParseServeMinReplicasOnCluster: --redis-min-replicas works on a
// Redis Cluster too (per shard, redis/wait.go).
func TestParseServeMinReplicasOnCluster(t *testing.T) {
	c := MustParseServe(t, nil, "--store", "redis", "--redis-url", "redis://10.0.0.1:7000", "--redis-cluster",
		"--redis-min-replicas", "1", "--redis-replica-timeout", "500ms")
	if !c.RedisCluster || c.RedisMinReplicas != 1 || c.RedisReplicaTimeout != 500*time.Millisecond {
		t.Errorf("cluster %v, min replicas %d, replica timeout %v; want true, 1, 500ms", c.RedisCluster, c.RedisMinReplicas, c.RedisReplicaTimeout)
	}
}

func TestParseServeReportsAllProblems(t *testing.T) {
	_, err := parseServe([]string{"--store", "x", "--heartbeat", "-1s", "--max-inflight", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	if err == nil {
		t.Fatal("nil error")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("error has %d lines, want 3 (one per problem):\n%v", n, err)
	}
}

func TestParseServeHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseServe([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("error = %v, want flag.ErrHelp", err)
	}
	for _, name := range []string{"listen", "admin-listen", "store", "data-dir", "redis-url", "node-id", "token-secret", "api-key",
		"allowed-origins", "tls-cert", "tls-key", "heartbeat", "ack-timeout", "max-inflight", "max-message-bytes",
		"max-ttl", "max-attempts", "max-connections", "shutdown-timeout", "max-delivery-lag", "log-level", "log-format"} {
		if !strings.Contains(out.String(), "--"+name+" ") || !strings.Contains(out.String(), "$"+envName(name)) {
			t.Errorf("usage lacks --%s or $%s", name, envName(name))
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://shop.example.com":       "https://shop.example.com",
		"HTTPS://Shop.Example.COM/":      "https://shop.example.com",
		"https://shop.example.com:443":   "https://shop.example.com",
		"http://localhost:80":            "http://localhost",
		"http://localhost:3000":          "http://localhost:3000",
		"https://[::1]:8443":             "https://[::1]:8443",
		"capacitor://localhost":          "capacitor://localhost",
		"https://shop.example.com:8443/": "https://shop.example.com:8443",
	} {
		got, err := normalizeOrigin(in)
		if err != nil || got != want {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "*", "null", "shop.example.com", "https://", "https://u:p@a.example", "https://a.example?x=1",
		"https://a.example#f", "https://a.example:0", "https://a.example:http", "mailto:a@b"} {
		if got, err := normalizeOrigin(in); err == nil {
			t.Errorf("normalizeOrigin(%q) = %q, nil; want an error", in, got)
		}
	}
}

func TestParseServeOriginsDeduplicated(t *testing.T) {
	c := MustParseServe(t, nil, "--allowed-origins", "https://a.example,https://A.example:443", "--allowed-origins", "http://b.example:8080")
	if want := []string{"https://a.example", "http://b.example:8080"}; !slices.Equal(c.AllowedOrigins, want) {
		t.Errorf("AllowedOrigins = %q, want %q", c.AllowedOrigins, want)
	}
}

func TestDefaultNodeID(t *testing.T) {
	host := func(name string, err error) func() (string, error) {
		return func() (string, error) { return name, err }
	}
	if id, err := defaultNodeID(host("gw-1.example", nil), ":8080"); id != "gw-1.example:8080" || err != nil {
		t.Errorf("defaultNodeID = %q, %v; want gw-1.example:8080", id, err)
	}
	if id, err := defaultNodeID(host("gw-1", nil), "10.0.0.1:9000"); id != "gw-1:9000" || err != nil {
		t.Errorf("defaultNodeID = %q, %v; want gw-1:9000", id, err)
	}
	if _, err := defaultNodeID(host("bad host", nil), ":8080"); err == nil || !strings.Contains(err.Error(), "pass --node-id") {
		t.Errorf("defaultNodeID with an invalid host name: %v, want advice to pass --node-id", err)
	}
	if _, err := defaultNodeID(host("", errors.New("boom")), ":8080"); err == nil || !strings.Contains(err.Error(), "pass --node-id") {
		t.Errorf("defaultNodeID without a host name: %v", err)
	}
}

func TestServeConfigLogValueHidesSecrets(t *testing.T) {
	c := MustParseServe(t, nil, "--token-secret", "top-secret-1", "--api-key", "top-secret-2")
	var buf bytes.Buffer
	c.newLogger(&buf).Info("config", "config", c)
	if strings.Contains(buf.String(), "top-secret") {
		t.Errorf("log shows a secret: %s", buf.String())
	}
	if !strings.Contains(buf.String(), "config.token_secret=given") {
		t.Errorf("log lacks token_secret=given: %s", buf.String())
	}
}

func TestParseServeNormalisesLog(t *testing.T) {
	c := MustParseServe(t, map[string]string{"TETHER_LOG_LEVEL": "WARNING", "TETHER_LOG_FORMAT": "JSON"})
	if c.LogLevel != "warn" || c.LogFormat != "json" {
		t.Errorf("LogLevel %q, LogFormat %q; want warn, json", c.LogLevel, c.LogFormat)
	}
}
