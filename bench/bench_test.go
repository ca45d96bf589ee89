package bench

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSourceAddr(t *testing.T) {
	for _, tc := range []struct {
		i, per int
		want   string
	}{
		{0, 1000, "127.0.0.2"},
		{999, 1000, "127.0.0.2"},
		{1000, 1000, "127.0.0.3"},
		{253999, 1000, "127.0.0.255"},
		{254000, 1000, "127.0.1.0"},
		{5, 1, "127.0.0.7"},
		{MaxSources - 1, 1, "127.255.255.254"},
	} {
		got, err := SourceAddr(tc.i, tc.per)
		if err != nil || got.String() != tc.want {
			t.Errorf("SourceAddr(%d, %d) = %v, %v; want %s", tc.i, tc.per, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ i, per int }{{-1, 1000}, {0, 0}, {MaxSources, 1}, {MaxSources * 2, 2}} {
		if got, err := SourceAddr(tc.i, tc.per); err == nil {
			t.Errorf("SourceAddr(%d, %d) = %v, want an error", tc.i, tc.per, got)
		}
	}
}

// TestSourceAddrSpread checks the property that matters: connections of a
// large run spread over loopback addresses other than the node's, no
// address carrying more than its share, so that more than 64k fit.
func TestSourceAddrSpread(t *testing.T) {
	const conns, per = 150_000, DefaultPerAddress
	count := make(map[netip.Addr]int)
	node := netip.MustParseAddr("127.0.0.1")
	for i := range conns {
		a, err := SourceAddr(i, per)
		if err != nil {
			t.Fatal(err)
		}
		if !a.IsLoopback() || a == node {
			t.Fatalf("connection %d from %v: want a loopback address other than the node's", i, a)
		}
		count[a]++
	}
	if len(count) != SourceCount(conns, per) || len(count) != 150 {
		t.Errorf("%d addresses, SourceCount says %d, want 150", len(count), SourceCount(conns, per))
	}
	for a, n := range count {
		if n > per {
			t.Errorf("%v carries %d connections, more than %d", a, n, per)
		}
	}
	if got := SourceCount(1001, 1000); got != 2 {
		t.Errorf("SourceCount(1001, 1000) = %d, want 2", got)
	}
	if got := SourceCount(0, 1000); got != 0 {
		t.Errorf("SourceCount(0, 1000) = %d, want 0", got)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.9.8.7": true, "::1": true, "localhost": true, "LocalHost": true,
		"10.0.0.1": false, "192.168.1.1": false, "example.com": false, "": false, "0.0.0.0": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func validConfig() Config {
	return Config{TokenSecret: []byte("s"), APIKey: "k", Launch: InProcess()}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig().withDefaults()
	if c.URL != DefaultURL || c.AdminURL != DefaultAdminURL || c.Conns != DefaultConns || c.Groups != DefaultGroups ||
		c.Rate != DefaultRate || c.Size != DefaultSize || c.Duration != DefaultDuration || c.Ramp != DefaultRamp ||
		c.Grace != DefaultGrace || c.PerAddress != DefaultPerAddress || c.Workers != 1 {
		t.Errorf("defaults: %+v", c)
	}
	for conns, want := range map[int]int{1: 1, 15000: 1, 15001: 2, 45000: 3, 100000: 7} {
		c := validConfig()
		c.Conns = conns
		if got := c.withDefaults().Workers; got != want {
			t.Errorf("%d conns: %d workers, want %d", conns, got, want)
		}
	}
	if err := validConfig().Validate(); err != nil {
		t.Errorf("Validate of the defaults: %v", err)
	}
	c = validConfig()
	c.URL = "http://127.0.0.1:18080"
	if got := c.withDefaults().PublishURL; got != c.URL {
		t.Errorf("PublishURL defaults to %q, want --url %q", got, c.URL)
	}
	c.PublishURL = "http://127.0.0.1:19080"
	if got := c.withDefaults().PublishURL; got != "http://127.0.0.1:19080" {
		t.Errorf("PublishURL %q, want it kept", got)
	}
}

// TestNodePublishURL checks where the bench sends each call when messages
// are published through another node: publishes (with the API key) there,
// everything else to the devices' node.
func TestNodePublishURL(t *testing.T) {
	c := validConfig()
	c.URL, c.PublishURL = "http://127.0.0.1:18080/", "http://127.0.0.1:19080/"
	n := newNode(c.withDefaults(), nil)
	if n.api != "http://127.0.0.1:18080" || n.pub != "http://127.0.0.1:19080" {
		t.Errorf("api %q, publish %q", n.api, n.pub)
	}
	n = newNode(Config{URL: "http://127.0.0.1:18080/"}, nil) // not through withDefaults
	if n.pub != n.api {
		t.Errorf("publish %q, want the API %q", n.pub, n.api)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.URL = "http://10.1.2.3:8080" }, "--url"},
		{func(c *Config) { c.AdminURL = "ftp://127.0.0.1" }, "--admin-url"},
		{func(c *Config) { c.PublishURL = "http://192.0.2.1:8080" }, "--publish-url"},
		{func(c *Config) { c.TokenSecret = nil }, "token secret"},
		{func(c *Config) { c.APIKey = "" }, "API key"},
		{func(c *Config) { c.Conns = -1 }, "--conns"},
		{func(c *Config) { c.Conns, c.Groups = 5, 6 }, "--groups"},
		{func(c *Config) { c.Rate = MaxRate + 1 }, "--rate"},
		{func(c *Config) { c.Size = 10 }, "--size"},
		{func(c *Config) { c.Duration = time.Millisecond }, "--duration"},
		{func(c *Config) { c.Grace = -time.Second }, "--grace"},
		{func(c *Config) { c.Ramp = -5 }, "--ramp"},
		{func(c *Config) { c.Conns, c.Workers = 40000, 2 }, "at least 3 workers"},
		{func(c *Config) { c.Conns, c.Groups, c.Workers = 2, 1, 3 }, "more workers"},
		{func(c *Config) { c.Launch = nil }, "launcher"},
	} {
		c := validConfig()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %q", c, err, tc.want)
		}
	}
	c := validConfig()
	c.APIKey, c.Idle = "", true
	if err := c.Validate(); err != nil {
		t.Errorf("idle without an API key: %v, want nil", err)
	}
}

func TestIDs(t *testing.T) {
	if DeviceID(42) != "bench-d42" || GroupID(3) != "bench-g3" || GroupOf(42, 10) != 2 {
		t.Errorf("ids: %s %s %d", DeviceID(42), GroupID(3), GroupOf(42, 10))
	}
	if got := wsURL("http://127.0.0.1:8080/", "/v1/connect"); got != "ws://127.0.0.1:8080/v1/connect" {
		t.Errorf("wsURL = %q", got)
	}
	for _, tc := range []struct {
		id               string
		g, conns, groups int
		want             bool
	}{
		{"bench-d12", 2, 100, 10, true},
		{"bench-d12", 3, 100, 10, false},  // another group
		{"bench-d120", 0, 100, 10, false}, // beyond --conns
		{"bench-d012", 2, 100, 10, false}, // not how the bench names it
		{"pos-1", 0, 100, 10, false},
	} {
		if got := memberOf(tc.id, tc.g, tc.conns, tc.groups); got != tc.want {
			t.Errorf("memberOf(%q, %d, %d, %d) = %v, want %v", tc.id, tc.g, tc.conns, tc.groups, got, tc.want)
		}
	}
}
