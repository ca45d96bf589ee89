// Package client is the Go device SDK for tether (SPEC section 10).
//
// A device dials the gateway with its token and hands each message to a
// handler, one at a time in arrival order. A message whose handler returns
// nil is acked, in batches; one whose handler fails is not, and the server
// redelivers it after its ack timeout. Message ids handled successfully are
// remembered, so a redelivery after a reconnect is acked again without
// calling the handler. The connection is kept alive with heartbeats and
// re-established with jittered exponential backoff, except after the session
// was replaced by a newer connection of the same device (close code 4409) or
// the token was refused (HTTP 401 or 403).
//
// The package speaks protocol v1 through package wire and imports nothing
// else from this module.
package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/tetherpush/tether/wire"
)

// Defaults for zero Config fields.
const (
	DefaultAckBatch         = 50 * time.Millisecond
	DefaultAckMax           = 100
	DefaultMinBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff       = 30 * time.Second
	DefaultDedupSize        = 10000
	DefaultQueueSize        = 256 // the server's default max_inflight
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultMaxFrameBytes    = 1 << 20

	// DefaultHeartbeat is assumed when a welcome frame has no heartbeat_ms.
	DefaultHeartbeat = 25 * time.Second
)

// Config configures a Client. A zero field means the DefaultX constant named
// in its comment.
type Config struct {
	// URL of the gateway, ws://host:port or wss://host:port; wire.Path
	// ("/v1/connect") is used when the URL has no path.
	URL string
	// Token is the device token, sent as "Authorization: Bearer <token>".
	// Empty sends no Authorization header (e.g. a token in the URL query).
	Token string
	// Handler is called for every message, sequentially in arrival order, on
	// one goroutine owned by the client. nil → the id is acked; an error →
	// it is not, and the server redelivers it after its ack timeout. ctx is
	// cancelled by Close. Required.
	Handler func(ctx context.Context, m Message) error
	// OnState, if set, is called on every state change, on the client's own
	// goroutine: it must return quickly and must not call Close. err is the
	// cause for StateDisconnected and StateClosed (as Err reports it).
	OnState func(s State, err error)

	// AckBatch is how long a handled id may wait for others to share its
	// ack frame. Default DefaultAckBatch.
	AckBatch time.Duration
	// AckMax is the number of queued ids that sends an ack frame at once.
	// Default DefaultAckMax; at most wire.MaxAckIDs.
	AckMax int
	// MinBackoff and MaxBackoff bound the reconnect delay: the n-th attempt
	// in a row waits a random time in [0, min(MaxBackoff, MinBackoff·2ⁿ)).
	// The count restarts after a session that stayed connected at least
	// MaxBackoff. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// DedupSize is how many handled message ids are remembered to skip
	// redeliveries. Default DefaultDedupSize; negative remembers none.
	DedupSize int
	// QueueSize bounds the messages received but not yet handled; when it is
	// full the client stops reading. Default DefaultQueueSize.
	QueueSize int
	// HandshakeTimeout bounds connect, TLS, upgrade and the welcome frame.
	// Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// WriteTimeout is the deadline of every frame written.
	// Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxFrameBytes is the largest server message accepted; larger ones close
	// the connection with 1009. Default DefaultMaxFrameBytes.
	MaxFrameBytes int64

	// TLSConfig is used for wss:// URLs; nil means the system's roots.
	TLSConfig *tls.Config
	// Logger receives the client's logs. Default: none.
	Logger *slog.Logger
	// Header holds extra handshake headers.
	Header http.Header
}

// Message is one delivery of a message.
type Message struct {
	ID          string
	Target      string // "device:<id>" or "group:<id>"
	Data        json.RawMessage
	PublishedAt time.Time
	Attempt     int // 1 for the first delivery
}

// State is the connection state reported to Config.OnState.
type State int

// States, in the order a session goes through them.
const (
	StateConnecting   State = iota + 1 // dialing; also before every reconnect
	StateConnected                     // welcome received; see Client.Welcome
	StateDisconnected                  // the session ended; err says why
	StateClosed                        // the client ended; err says why, as Err does
)

// String returns the state in lower case, as in "connected".
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Client is a device connection to tether that reconnects until it is
// closed or the server refuses it for good. Its methods are safe for
// concurrent use.
type Client struct {
	cfg    Config
	url    string
	header http.Header
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	inbox  chan Message // reader → handler goroutine
	acks   *ackQueue    // handler goroutine → session writer
	seen   *dedup       // handler goroutine only

	mu      sync.Mutex // guards following
	welcome wire.Welcome
	err     error
}

// Dial checks cfg and starts a client that connects in the background and
// reconnects as needed; watch Config.OnState or Done. ctx bounds the
// client's life: when it is done the client closes as by Close. Dial does
// not wait for the network; it fails only on a bad Config.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, u, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	header := cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if cfg.Token != "" {
		header.Set("Authorization", "Bearer "+cfg.Token)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Client{
		cfg:    cfg,
		url:    u,
		header: header,
		log:    log.With("url", u),
		cancel: cancel,
		done:   make(chan struct{}),
		inbox:  make(chan Message, cfg.QueueSize),
		acks:   newAckQueue(),
		seen:   newDedup(cfg.DedupSize),
	}
	go pprof.Do(ctx, pprof.Labels("tether", "client-run"), c.run) // owned: Close waits on done
	return c, nil
}

// withDefaults returns cfg with zero fields set to their defaults, and the
// URL to dial.
func (cfg Config) withDefaults() (Config, string, error) {
	if cfg.Handler == nil {
		return cfg, "", errors.New("client config: Handler is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, "", fmt.Errorf("client config: url: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" || u.Host == "" {
		return cfg, "", fmt.Errorf("client config: url %q: want ws://host:port or wss://host:port", cfg.URL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = wire.Path
	}
	if cfg.AckMax > wire.MaxAckIDs {
		return cfg, "", fmt.Errorf("client config: AckMax %d: at most %d", cfg.AckMax, wire.MaxAckIDs)
	}
	setDefault(&cfg.AckBatch, DefaultAckBatch)
	setDefault(&cfg.AckMax, DefaultAckMax)
	setDefault(&cfg.MinBackoff, DefaultMinBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	setDefault(&cfg.DedupSize, DefaultDedupSize)
	setDefault(&cfg.QueueSize, DefaultQueueSize)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.MaxFrameBytes, DefaultMaxFrameBytes)
	if cfg.MinBackoff > cfg.MaxBackoff {
		return cfg, "", fmt.Errorf("client config: MinBackoff %v above MaxBackoff %v", cfg.MinBackoff, cfg.MaxBackoff)
	}
	return cfg, u.String(), nil
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Close stops the client: it cancels the handler's context, sends the acks
// already queued and a close frame, closes the connection, and returns once
// every goroutine the client started has ended. It may be called many
// times, and after the client ended by itself.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Done is closed when the client has ended: after Close, or by itself
// (replaced by a newer connection, token refused); Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client ended, or nil while it runs: ErrClosed after
// Close, a *CloseError for a close code after which it does not reconnect
// (4409 replaced), a *StatusError for HTTP 401 or 403 at the handshake.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Welcome returns the welcome frame of the latest session, and false before
// the first one.
func (c *Client) Welcome() (wire.Welcome, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome, c.welcome.Type != ""
}

func (c *Client) setWelcome(w wire.Welcome) {
	c.mu.Lock()
	c.welcome = w
	c.mu.Unlock()
}

func (c *Client) state(s State, err error) {
	c.log.Debug("tether "+s.String(), "err", err)
	if c.cfg.OnState != nil {
		c.cfg.OnState(s, err)
	}
}

// run owns the handler goroutine and the connection loop; it closes done
// when both have ended.
func (c *Client) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { pprof.Do(ctx, pprof.Labels("tether", "client-handler"), c.handleLoop) })
	err := c.connectLoop(ctx)
	c.cancel()
	wg.Wait()
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.state(StateClosed, err)
	close(c.done)
}

// connectLoop runs sessions until ctx is done or one ends in a way that
// forbids reconnecting, and returns why.
func (c *Client) connectLoop(ctx context.Context) error {
	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	for {
		c.state(StateConnecting, nil)
		lasted, err := c.runSession(ctx)
		if ctx.Err() != nil {
			return ErrClosed
		}
		c.state(StateDisconnected, err)
		if !retryable(err) {
			return err
		}
		if lasted >= c.cfg.MaxBackoff {
			bo.reset()
		}
		delay := bo.next()
		var se *StatusError
		if errors.As(err, &se) && se.RetryAfter > delay {
			delay = min(se.RetryAfter, c.cfg.MaxBackoff)
		}
		c.log.Debug("tether reconnect", "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
	}
}

// handleLoop calls the handler for each message in arrival order.
func (c *Client) handleLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-c.inbox:
			c.handle(ctx, m)
		}
	}
}

func (c *Client) handle(ctx context.Context, m Message) {
	if c.seen.has(m.ID) {
		c.log.Debug("tether duplicate acked again", "id", m.ID, "attempt", m.Attempt)
		c.acks.push(m.ID)
		return
	}
	if err := c.cfg.Handler(ctx, m); err != nil {
		c.log.Warn("tether handler failed, message not acked", "id", m.ID, "attempt", m.Attempt, "err", err)
		return
	}
	c.seen.add(m.ID)
	c.acks.push(m.ID)
}
