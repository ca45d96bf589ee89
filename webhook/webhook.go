// Package webhook sends the event log to a backend's URL (SPEC section 11,
// --webhook-url): batches of at most 100 events POSTed as {"events":[…]}
// with a Tether-Signature header, in log order, at least once, retried
// with exponential backoff until the receiver answers 2xx or the events
// leave the retention window.
//
// Exactly one node of a fleet sends: each node runs a Sender, and only the
// holder of the event store's lease (tether.EventStore.Lease) reads and
// POSTs. The holder renews the lease every heartbeat for three heartbeats
// and records its progress with Sent, which fails once another node has
// taken the lease; the others only try to take it, once a heartbeat. A
// node that takes over starts after the last batch the previous holder
// recorded, so a batch that was POSTed but not recorded is sent again:
// receivers de-duplicate by event id.
//
// Wiring, in the one place that wires things (cmd/tether serve):
//
//	snd := webhook.New(store, webhook.Config{
//		URL: cfg.WebhookURL, Secret: []byte(cfg.WebhookSecret), Holder: cfg.NodeID,
//		Logger: log.With("component", "webhook"), Metrics: webhook.NewMetrics(reg),
//	})
//	if err := snd.Open(); err != nil { … }
//	defer snd.Close()
//
// and call snd.Notify() after appending events, so that they leave
// without waiting for the next poll.
package webhook

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// Defaults for zero Config fields.
const (
	DefaultHeartbeat    = 5 * time.Second
	DefaultPoll         = 100 * time.Millisecond
	DefaultTimeout      = 10 * time.Second
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultStoreTimeout = 5 * time.Second
)

// MaxBatch is the most events one POST carries (SPEC section 11).
const MaxBatch = 100

// Config configures a Sender. A zero field means the DefaultX constant
// named in its comment.
type Config struct {
	// URL receives the POSTs (--webhook-url): http or https.
	URL string
	// Secret keys the HMAC of the Tether-Signature header
	// (--webhook-secret). Required.
	Secret []byte
	// Holder names this node in the lease; it must differ between the
	// nodes of a fleet and should stay the same across restarts (the node
	// id), so that a restarted holder goes on at once. Empty: the host
	// name and a random suffix.
	Holder string
	// Heartbeat is how often the holder renews its lease and the others
	// try to take it. The lease lasts 3 × Heartbeat, so a holder that
	// crashes is replaced within about four heartbeats; one that closes
	// hands the lease over at once. DefaultHeartbeat.
	Heartbeat time.Duration
	// Poll is how often the holder reads the log while it has sent
	// everything; Notify wakes it sooner. DefaultPoll.
	Poll time.Duration
	// Timeout bounds each POST, from dialing to the end of the answer's
	// headers; a POST also ends when the lease would expire. DefaultTimeout.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a failed batch is
	// sent again: MinBackoff, doubling after each failure up to
	// MaxBackoff. DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// StoreTimeout bounds every event store call. DefaultStoreTimeout.
	StoreTimeout time.Duration
	// BatchSize is the most events per POST; zero or more than MaxBatch
	// means MaxBatch.
	BatchSize int
	// Logger receives the lease changes, each failed batch (with its
	// backoff), the recovery and skipped events. Nil: discarded.
	Logger *slog.Logger
	// Metrics are updated as the sender works. Nil: unregistered metrics.
	Metrics *Metrics
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, DefaultHeartbeat)
	def(&c.Poll, DefaultPoll)
	def(&c.Timeout, DefaultTimeout)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.StoreTimeout, DefaultStoreTimeout)
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.BatchSize <= 0 || c.BatchSize > MaxBatch {
		c.BatchSize = MaxBatch
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = host + "-" + rand.Text()[:8]
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Sender sends the event log of one store to one URL while its node holds
// the lease. It runs one goroutine, plus the two the HTTP transport keeps
// per connection (at most two connections); memory is bounded by one
// batch and a few KiB of answer whatever the receiver does.
type Sender struct {
	cfg       Config
	store     tether.EventStore
	log       *slog.Logger
	m         *Metrics
	transport *http.Transport
	client    *http.Client
	wake      chan struct{} // Notify; capacity 1

	mu     sync.Mutex // guards following
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine returns
	closed bool
}

// New returns a sender of st's event log; call Open to start it.
func New(st tether.EventStore, cfg Config) *Sender {
	cfg.setDefaults()
	t := newTransport(cfg.Timeout)
	return &Sender{
		cfg:       cfg,
		store:     st,
		log:       cfg.Logger.With("url", redact(cfg.URL)),
		m:         cfg.Metrics,
		transport: t,
		client:    &http.Client{Transport: t, CheckRedirect: noRedirect},
		wake:      make(chan struct{}, 1),
	}
}

// Config returns the configuration with its defaults filled in.
func (s *Sender) Config() Config { return s.cfg }

// Open checks the configuration and starts the sender's goroutine. It
// fails on a URL that is not absolute http or https, an empty secret, a
// nil store, or a sender already opened or closed.
func (s *Sender) Open() error {
	u, err := url.Parse(s.cfg.URL)
	switch {
	case err != nil:
		return fmt.Errorf("open webhook sender: url: %w", err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("open webhook sender: url %q is not http://host/… or https://host/…", redact(s.cfg.URL))
	case len(s.cfg.Secret) == 0:
		return errors.New("open webhook sender: the webhook secret is empty")
	case s.store == nil:
		return errors.New("open webhook sender: no event store")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.done != nil {
		return errors.New("open webhook sender: already opened or closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		pprof.Do(ctx, pprof.Labels("role", "webhook-sender"), func(ctx context.Context) {
			l := &loop{Sender: s}
			l.run(ctx)
		})
	}()
	return nil
}

// Close stops the sender at once, a POST in flight included, hands the
// lease over (a store call of at most a second) and waits for its
// goroutine. A batch cut short is sent again by the next holder.
// Idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	s.transport.CloseIdleConnections()
	return nil
}

// Notify tells the sender that events were appended: a holder waiting for
// its next poll reads the log at once. It never blocks; a sender backing
// off after a failure keeps its backoff.
func (s *Sender) Notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sleep waits d, or until ctx is done, or, when wakeable, until Notify.
func (s *Sender) sleep(ctx context.Context, d time.Duration, wakeable bool) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var wake chan struct{}
	if wakeable {
		wake = s.wake
	}
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}

// redact hides a password in raw, for logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Redacted()
}

// storeCtx bounds one store call.
func (s *Sender) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.StoreTimeout)
}
