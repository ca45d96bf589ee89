// Package bench is the load generator behind `tether bench` (SPEC section
// 9). It drives a running node through its public interfaces only: device
// WebSocket connections (protocol v1, package wire), the publish API and the
// admin listener's /metrics.
//
// A coordinator (Run) spreads the devices over worker processes, each
// holding at most MaxPerWorker sockets (the open-file cap of a process). It
// reads the node's memory before and after connecting, publishes to the
// groups at a fixed rate, and merges what the workers saw into one Report:
// connect rate and errors, published, delivered, acked, duplicate and lost
// messages, delivery latency percentiles and the node's memory and
// goroutines per connection. Workers (Work) speak to the coordinator with
// JSON lines over their stdin and stdout.
//
// Every device acks what it receives, in batches like the Go SDK. A message
// carries its group and sequence number in its data, so each device can
// tell a duplicate from a first delivery and, at the end, which published
// ids never arrived. Everything is bounded in time: a run stops by itself
// after its connect, publish and grace phases, and a worker whose
// coordinator disappears closes its connections and exits.
//
// The package imports wire and token of this module and nothing else of it.
package bench

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Defaults of Config fields; a zero field means its default.
const (
	DefaultURL      = "http://127.0.0.1:8080"
	DefaultAdminURL = "http://127.0.0.1:8081"
	DefaultConns    = 1000
	DefaultGroups   = 10
	DefaultRate     = 100 // messages per second
	DefaultSize     = 256 // bytes of message data
	DefaultDuration = 30 * time.Second
	DefaultRamp     = 2000 // connects per second
	DefaultGrace    = 10 * time.Second
	// DefaultPublishers is how many publish requests may be under way.
	DefaultPublishers = 8
)

// Limits of Config fields.
const (
	// MaxPerWorker is the most connections one worker process holds: these
	// machines cap open files at 20,000 per process.
	MaxPerWorker  = 15000
	MaxConns      = 1_000_000
	MaxWorkers    = 128
	MaxRate       = 200_000
	MinSize       = 64
	MaxSize       = 1 << 20
	MaxDuration   = 24 * time.Hour
	MaxGrace      = 10 * time.Minute
	MaxRamp       = 100_000
	MaxPublishers = 256
)

// Ack batching mirrors the Go SDK's defaults (client.DefaultAckBatch and
// DefaultAckMax): an id waits at most AckDelay for others to share its
// frame, and AckMax queued ids go at once.
const (
	AckDelay = 50 * time.Millisecond
	AckMax   = 100
)

// Config configures a run. Zero fields mean the documented default.
type Config struct {
	URL      string // base URL of the node's HTTP API; default DefaultURL
	AdminURL string // base URL of the node's admin listener; default DefaultAdminURL
	// PublishURL is the base URL of the HTTP API messages are published
	// through; default URL. Another node of the same fleet makes every
	// message cross nodes: published on that node, delivered by the node
	// of URL, which the devices connect to.
	PublishURL string

	APIKey      string // API key of the node; needed unless Idle
	TokenSecret []byte // token secret of the node, to sign device tokens

	Conns  int // devices connected at once; default DefaultConns
	Groups int // devices are spread over groups bench-g0 … ; default DefaultGroups
	Rate   int // messages published per second, over the groups round robin; default DefaultRate
	// Direct publishes to the devices themselves (device:bench-dN, round
	// robin over every device) instead of to the groups: each device is its
	// own stream. Device tokens then name no group.
	Direct bool
	// Batch is the number of messages of every publish request; 0 means
	// whatever fell due, up to 1000.
	Batch int
	// Publishers is how many publish requests may be under way at once;
	// default DefaultPublishers.
	Publishers int
	Size       int // bytes of message data; default DefaultSize
	// Duration is how long messages are published (or, with Idle, how long
	// the connections are held); default DefaultDuration.
	Duration time.Duration
	Ramp     int           // connects per second, over all workers; default DefaultRamp
	Grace    time.Duration // wait for late deliveries after publishing; default DefaultGrace
	// Idle holds the connections for Duration and publishes nothing: the
	// idle-memory mode.
	Idle bool
	// Workers is the number of worker processes; default (0) the fewest
	// that keep each at MaxPerWorker connections or fewer.
	Workers int
	// PerAddress is how many connections share a source address; default
	// DefaultPerAddress.
	PerAddress int

	// Launch starts a worker; required. ExecLauncher runs the program
	// again; InProcess runs workers as goroutines (tests).
	Launch Launcher
	// Progress receives what the run shows while it runs; nil: nothing.
	Progress Progress
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.AdminURL == "" {
		c.AdminURL = DefaultAdminURL
	}
	if c.PublishURL == "" {
		c.PublishURL = c.URL
	}
	def(&c.Conns, DefaultConns)
	def(&c.Groups, DefaultGroups)
	def(&c.Rate, DefaultRate)
	def(&c.Size, DefaultSize)
	def(&c.Ramp, DefaultRamp)
	def(&c.PerAddress, DefaultPerAddress)
	def(&c.Publishers, DefaultPublishers)
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.Workers == 0 {
		c.Workers = (c.Conns + MaxPerWorker - 1) / MaxPerWorker
	}
	return c
}

// Validate reports the first field of c (after defaults) that is out of
// range, naming it as its command-line flag.
func (c Config) Validate() error {
	c = c.withDefaults()
	for _, u := range []struct{ flag, v string }{{"url", c.URL}, {"admin-url", c.AdminURL}, {"publish-url", c.PublishURL}} {
		if err := checkLoopbackURL(u.v); err != nil {
			return fmt.Errorf("--%s %q: %v", u.flag, u.v, err)
		}
	}
	switch {
	case len(c.TokenSecret) == 0:
		return errors.New("no token secret to sign device tokens with")
	case !c.Idle && c.APIKey == "":
		return errors.New("no API key to publish with")
	case c.Conns < 1 || c.Conns > MaxConns:
		return fmt.Errorf("--conns %d: want 1 to %d", c.Conns, MaxConns)
	case c.Groups < 1 || c.Groups > c.Conns:
		return fmt.Errorf("--groups %d: want 1 to --conns (%d)", c.Groups, c.Conns)
	case c.Batch < 0 || c.Batch > maxBatch:
		return fmt.Errorf("--batch %d: want 0 (whatever fell due) to %d", c.Batch, maxBatch)
	case c.Publishers < 1 || c.Publishers > MaxPublishers:
		return fmt.Errorf("--publishers %d: want 1 to %d", c.Publishers, MaxPublishers)
	case c.Rate < 1 || c.Rate > MaxRate:
		return fmt.Errorf("--rate %d: want 1 to %d messages per second", c.Rate, MaxRate)
	case c.Size < MinSize || c.Size > MaxSize:
		return fmt.Errorf("--size %d: want %d to %d bytes", c.Size, MinSize, MaxSize)
	case c.Duration < time.Second || c.Duration > MaxDuration:
		return fmt.Errorf("--duration %v: want 1s to %v", c.Duration, MaxDuration)
	case c.Grace < 0 || c.Grace > MaxGrace:
		return fmt.Errorf("--grace %v: want 0 to %v", c.Grace, MaxGrace)
	case c.Ramp < 1 || c.Ramp > MaxRamp:
		return fmt.Errorf("--ramp %d: want 1 to %d connects per second", c.Ramp, MaxRamp)
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return fmt.Errorf("--workers %d: want 1 to %d", c.Workers, MaxWorkers)
	case c.Workers > c.Conns:
		return fmt.Errorf("--workers %d: more workers than --conns (%d)", c.Workers, c.Conns)
	case (c.Conns+c.Workers-1)/c.Workers > MaxPerWorker:
		return fmt.Errorf("--workers %d: %d connections need at least %d workers of at most %d connections each (open-file cap)",
			c.Workers, c.Conns, (c.Conns+MaxPerWorker-1)/MaxPerWorker, MaxPerWorker)
	case c.PerAddress < 1:
		return fmt.Errorf("per-address %d: must be positive", c.PerAddress)
	case SourceCount(c.Conns, c.PerAddress) > MaxSources:
		return fmt.Errorf("--conns %d: more than 127.0.0.0/8 holds at %d per address", c.Conns, c.PerAddress)
	case c.Launch == nil:
		return errors.New("no worker launcher")
	}
	return nil
}

// checkLoopbackURL accepts http URLs of loopback hosts only: a bench is load,
// and load goes to this machine alone.
func checkLoopbackURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return errors.New("want http://host:port")
	}
	if !isLoopbackHost(u.Hostname()) {
		return errors.New("bench sends load to loopback addresses only (127.0.0.0/8, ::1, localhost)")
	}
	return nil
}

// streams returns the number of streams messages go to: the groups, or
// with Direct the devices.
func (c Config) streams() int {
	if c.Direct {
		return c.Conns
	}
	return c.Groups
}

// target returns the target of stream g.
func (c Config) target(g int) string {
	if c.Direct {
		return "device:" + DeviceID(g)
	}
	return "group:" + GroupID(g)
}

// DeviceID returns the id of device i.
func DeviceID(i int) string { return fmt.Sprintf("bench-d%d", i) }

// GroupID returns the id of group g.
func GroupID(g int) string { return fmt.Sprintf("bench-g%d", g) }

// GroupOf returns the group of device i among groups.
func GroupOf(i, groups int) int { return i % groups }

// wsURL turns the node's http base URL into the WebSocket endpoint.
func wsURL(base, path string) string {
	return "ws" + strings.TrimPrefix(strings.TrimRight(base, "/"), "http") + path
}
