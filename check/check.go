// Package check answers "does this WebSocket service hold long connections
// well?" (SPEC section 8) against any WebSocket server, tether or not.
//
// Run opens Config.Conns connections, holds them for Config.Hold sending
// nothing but WebSocket pings (and the answers the protocol requires: pongs
// to the server's pings, the echo of its close frame), then probes the
// survivors: every other connection sends a close frame, the rest close
// their side of TCP with a FIN and no close frame. The Report has one
// Result per check, each pass, fail, skip or info, with its numbers:
//
//   - connect: every connection upgraded; handshake latency; errors by kind.
//   - idle_hold: the server closed none of the connections during the hold.
//   - pings: at least 99% of the client's pings were answered within
//     Config.Timeout.
//   - close_handshake: after the client's close frame the server sent its
//     own and closed TCP, both within Config.Timeout.
//   - half_close: after the client's FIN the server closed its side within
//     Config.FINWait. A client socket still open then, in FIN_WAIT2 by
//     /proc/net/tcp, means the server's socket sits in CLOSE_WAIT: the
//     incident of SPEC section 2.
//   - server_pings (info): whether and how often the server pings.
//
// Everything is bounded: each handshake, write, pong wait and close wait by
// Config.Timeout, the FIN probe by Config.FINWait, the hold by Config.Hold.
// Every goroutine Run starts (a reader and a writer per connection, the
// dialers) has ended when it returns.
//
// The package speaks WebSocket through gobwas/ws and imports only wire from
// this module, to recognise a tether node's welcome frame and close codes.
package check

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultConns        = 100
	DefaultHold         = 30 * time.Second
	DefaultPingInterval = 5 * time.Second
	DefaultTimeout      = 5 * time.Second
	DefaultFINWait      = 2 * time.Second
	DefaultParallel     = 64
)

// Limits of Config.
const (
	MaxConns    = 100000
	MaxHold     = 24 * time.Hour
	MaxTimeout  = 5 * time.Minute
	MinInterval = 50 * time.Millisecond // shortest ping interval

	// PingPassRatio is the share of pings that must be answered within
	// Config.Timeout for the pings check to pass.
	PingPassRatio = 0.99
)

// Config configures one Run. A zero field means the DefaultX constant named
// in its comment.
type Config struct {
	// URL is the WebSocket endpoint, ws://… or wss://….
	URL string
	// Header is sent with every handshake (authentication, cookies). Host
	// replaces the host of the URL in the request.
	Header http.Header
	// Tokens, when set, gives each connection its own credentials:
	// connection i sends "Authorization: Bearer Tokens[i % len(Tokens)]".
	// Servers that keep one connection per identity (tether: close code
	// 4409) need as many tokens as connections.
	Tokens []string
	// Subprotocols are offered in Sec-WebSocket-Protocol, in order.
	Subprotocols []string
	// TLS configures wss:// connections; nil: the system's roots.
	TLS *tls.Config
	// Conns is how many connections to open; default DefaultConns, at most
	// MaxConns.
	Conns int
	// Hold is how long the connections are held before the probes; default
	// DefaultHold.
	Hold time.Duration
	// PingInterval is how often each connection pings during the hold;
	// default the shorter of DefaultPingInterval and Hold/4, at least
	// MinInterval.
	PingInterval time.Duration
	// Timeout bounds each handshake, each write, the wait for each pong and
	// the close handshake; default DefaultTimeout.
	Timeout time.Duration
	// FINWait is how long the server has to close its side after the
	// client's FIN; default DefaultFINWait.
	FINWait time.Duration
	// Parallel is how many handshakes run at once; default DefaultParallel.
	Parallel int
}

// reservedHeaders are set by the WebSocket handshake itself.
var reservedHeaders = []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version",
	"Sec-Websocket-Extensions", "Sec-Websocket-Protocol"}

// Validate reports the first problem of c, before defaults apply.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("URL %q: want ws://host[:port]/path or wss://host[:port]/path", c.URL)
	}
	for name := range c.Header {
		for _, r := range reservedHeaders {
			if textproto.CanonicalMIMEHeaderKey(name) == r {
				if r == "Sec-Websocket-Protocol" {
					return fmt.Errorf("header %s: use the subprotocol option", name)
				}
				return fmt.Errorf("header %s: set by the WebSocket handshake itself", name)
			}
		}
	}
	if len(c.Tokens) > 0 && c.Header.Get("Authorization") != "" {
		return errors.New("tokens and an Authorization header exclude each other")
	}
	for i, t := range c.Tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return fmt.Errorf("token %d: empty or contains white space", i+1)
		}
	}
	switch {
	case c.Conns < 0 || c.Conns > MaxConns:
		return fmt.Errorf("conns %d: want 1 to %d", c.Conns, MaxConns)
	case c.Hold < 0 || c.Hold > MaxHold:
		return fmt.Errorf("hold %v: want a positive duration up to %v", c.Hold, MaxHold)
	case c.PingInterval < 0 || (c.PingInterval > 0 && c.PingInterval < MinInterval):
		return fmt.Errorf("ping interval %v: want at least %v", c.PingInterval, MinInterval)
	case c.Timeout < 0 || c.Timeout > MaxTimeout:
		return fmt.Errorf("timeout %v: want a positive duration up to %v", c.Timeout, MaxTimeout)
	case c.FINWait < 0 || c.FINWait > MaxTimeout:
		return fmt.Errorf("FIN wait %v: want a positive duration up to %v", c.FINWait, MaxTimeout)
	case c.Parallel < 0:
		return fmt.Errorf("parallel %d: want a positive number", c.Parallel)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Hold == 0 {
		c.Hold = DefaultHold
	}
	if c.PingInterval == 0 {
		c.PingInterval = max(min(DefaultPingInterval, c.Hold/4), MinInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.FINWait == 0 {
		c.FINWait = DefaultFINWait
	}
	if c.Parallel == 0 {
		c.Parallel = DefaultParallel
	}
}

// Run checks the server at cfg.URL and returns the report. It fails only
// for an invalid cfg or when ctx ends first; what the server does wrong is
// in the report. Every connection is closed and every goroutine has ended
// when Run returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	start := time.Now()
	conns, dials := connectAll(ctx, &cfg)
	defer closeAll(conns)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := exercise(ctx, &cfg, conns)
	if err != nil {
		return nil, err
	}
	rep := buildReport(&cfg, dials, conns, p)
	rep.StartedAt = start.UTC()
	rep.DurationMS = ms(time.Since(start))
	return rep, nil
}

// phases are the moments Run moved from one phase to the next.
type phases struct {
	holdEnd time.Time // pings stop
	probeAt time.Time // the probes started; a close before it was during the hold
}

// exercise holds conns, waits for the last pongs, probes the survivors and
// waits for the outcome of the probes.
func exercise(ctx context.Context, cfg *Config, conns []*conn) (phases, error) {
	p := phases{holdEnd: time.Now().Add(cfg.Hold)}
	if len(conns) == 0 {
		p.probeAt = time.Now()
		return p, nil
	}
	for _, c := range conns {
		c.startHold(p.holdEnd, cfg.PingInterval)
	}
	if err := sleepUntil(ctx, p.holdEnd); err != nil {
		return p, err
	}
	if err := awaitPongs(ctx, conns, p.holdEnd.Add(cfg.Timeout)); err != nil {
		return p, err
	}
	p.probeAt = time.Now()
	var fins, closes []*conn
	for _, c := range conns {
		if c.closedBefore(p.probeAt) {
			continue
		}
		// The FIN probe goes first: with one survivor, it is the one the
		// incident needs.
		if len(fins) <= len(closes) {
			fins = append(fins, c)
			c.startProbe(probeFIN)
		} else {
			closes = append(closes, c)
			c.startProbe(probeClose)
		}
	}
	if err := awaitEnd(ctx, fins, p.probeAt.Add(cfg.FINWait)); err != nil {
		return p, err
	}
	ports := make(map[uint16]bool, len(fins))
	for _, c := range fins {
		ports[c.key.local.Port()] = true
	}
	states := socketStates(ports)
	for _, c := range fins {
		c.noteSocketState(states)
	}
	return p, awaitEnd(ctx, closes, p.probeAt.Add(cfg.Timeout))
}

// sleepUntil waits until t or the end of ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// pollEvery is how often awaitPongs looks at the connections.
const pollEvery = 10 * time.Millisecond

// awaitPongs waits until no open connection has a ping unanswered, or
// until deadline.
func awaitPongs(ctx context.Context, conns []*conn, deadline time.Time) error {
	for time.Now().Before(deadline) {
		waiting := false
		for _, c := range conns {
			if c.awaitingPong() {
				waiting = true
				break
			}
		}
		if !waiting {
			return nil
		}
		if err := sleepUntil(ctx, time.Now().Add(pollEvery)); err != nil {
			return err
		}
	}
	return nil
}

// awaitEnd waits until the reader of every connection of conns has ended
// (the server closed TCP), or until deadline.
func awaitEnd(ctx context.Context, conns []*conn, deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for _, c := range conns {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return nil
		case <-c.readerDone:
		}
	}
	return nil
}

// closeAll closes every connection, then waits for their goroutines.
func closeAll(conns []*conn) {
	for _, c := range conns {
		c.stop()
	}
	for _, c := range conns {
		c.wait()
	}
}
