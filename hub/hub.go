// Package hub is tether's delivery engine: it keeps the sessions of the
// devices connected to this node, feeds each one the messages of its logs
// (its own, its groups') within the in-flight window, redelivers what is
// not acked, handles takeover, drains on shutdown and refuses publishes it
// could not deliver in time.
//
// A session is an event-driven state machine. The I/O layer feeds it events
// (a text message arrived, the connection ended) and gives it a Conn to
// write to; timers and store answers are further events. Socket writes run
// on a fixed pool of workers, and no worker ever calls the store: store
// work of all sessions is gathered by two loops, one that reads (cursors,
// logs) and one that commits (sends and acks), each making one store call
// for many sessions at a time. So a connection's reader, its pings and its
// close never wait for the store (SPEC section 2, rule 3), nothing spawns a
// goroutine per frame or message (rule 4), and the store sees one
// transaction or pipeline per batch instead of one per session.
package hub

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// Defaults of Config fields; a zero field means its default.
const (
	DefaultStoreTimeout   = 5 * time.Second
	DefaultWriteTimeout   = 5 * time.Second
	DefaultSweepInterval  = time.Second
	DefaultRetention      = time.Hour
	DefaultMaxFrameRate   = 100 // client frames per second, sustained
	DefaultMaxBackoff     = 32  // redelivery backoff cap, in ack timeouts
	DefaultMaxDeliveryLag = 5 * time.Second
	DefaultEventRetention = 24 * time.Hour
)

// Config configures a Hub. Zero fields mean the documented default.
type Config struct {
	Node        string
	Heartbeat   time.Duration // default tether.DefaultHeartbeat
	AckTimeout  time.Duration // default tether.DefaultAckTimeout
	MaxInflight int           // default tether.DefaultMaxInflight
	MaxAttempts int           // 0: unlimited
	// StoreTimeout bounds every store call; default DefaultStoreTimeout.
	StoreTimeout time.Duration
	// WriteTimeout bounds every socket write; a write that passes it closes
	// the session with 4503. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Workers is the size of the pool that runs session work; default
	// 8 × GOMAXPROCS.
	Workers int
	// SweepInterval is how often expired deliveries are swept.
	SweepInterval time.Duration
	// Retention is how long expired messages stay queryable.
	Retention time.Duration
	// MaxFrameRate is the sustained client frames per second before 4429.
	MaxFrameRate int
	// MaxDeliveryLag is how far behind the node may fall before it refuses
	// publishes with 503 overloaded (SPEC section 3); default
	// DefaultMaxDeliveryLag.
	MaxDeliveryLag time.Duration
	// EventRetention is how long the event log keeps events (SPEC section
	// 11); default DefaultEventRetention.
	EventRetention time.Duration
	// OnEvents, when set, is called after this node appended events (the
	// webhook sender's Notify). It must not block.
	OnEvents func()
	Logger   *slog.Logger
	Metrics  *Metrics // default: unregistered metrics
	// Fleet shares presence and events with the other nodes; nil for a
	// single node.
	Fleet tether.Fleet
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, tether.DefaultHeartbeat)
	def(&c.AckTimeout, tether.DefaultAckTimeout)
	def(&c.StoreTimeout, DefaultStoreTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.SweepInterval, DefaultSweepInterval)
	def(&c.Retention, DefaultRetention)
	def(&c.MaxDeliveryLag, DefaultMaxDeliveryLag)
	def(&c.EventRetention, DefaultEventRetention)
	if c.MaxInflight <= 0 {
		c.MaxInflight = tether.DefaultMaxInflight
	}
	if c.Workers <= 0 {
		c.Workers = 8 * runtime.GOMAXPROCS(0)
	}
	if c.MaxFrameRate <= 0 {
		c.MaxFrameRate = DefaultMaxFrameRate
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// ErrDraining is returned by Attach while the hub shuts down.
var ErrDraining = &tether.Error{Code: tether.EUnavailable, Message: "node is shutting down; reconnect to another node"}

// Hub owns the sessions of one node.
type Hub struct {
	cfg    Config
	store  *store
	log    *slog.Logger
	m      *Metrics
	queue  runQueue
	sched  scheduler
	reads  readLoop
	commit commitLoop
	health health
	unsure unsure // publishes that may have been stored despite an error
	events events
	fleet  *fleet // nil for a single node
	ids    ids

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards following
	sessions map[string]*Session
	ending   map[*Session]struct{} // closed, marks not yet committed
	feeds    map[string]*feed      // group id → the log's feed, while a local session reads it
	draining bool
}

// New returns a hub over st. Call Open to start it.
func New(st tether.Store, cfg Config) *Hub {
	cfg.setDefaults()
	h := &Hub{
		cfg:      cfg,
		log:      cfg.Logger,
		m:        cfg.Metrics,
		sessions: make(map[string]*Session),
		ending:   make(map[*Session]struct{}),
		feeds:    make(map[string]*feed),
	}
	h.store = &store{s: st, timeout: cfg.StoreTimeout, m: cfg.Metrics}
	h.m.MaxDeliveryLag.Set(cfg.MaxDeliveryLag.Seconds())
	if cfg.Fleet != nil {
		h.fleet = &fleet{f: cfg.Fleet, hub: h, node: cfg.Node}
	}
	h.queue.init()
	h.sched.init()
	h.reads.init(h)
	h.commit.init(h)
	h.health.init(h)
	h.events.init(h)
	return h
}

// Open starts the workers, the store loops, the timer and the expiry
// sweeper.
func (h *Hub) Open() error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for i := 0; i < h.cfg.Workers; i++ {
		h.goLabeled("hub-worker", h.worker)
	}
	h.goLabeled("hub-timer", h.sched.run)
	h.goLabeled("hub-reader", h.reads.run)
	h.goLabeled("hub-committer", h.commit.run)
	h.goLabeled("hub-health", h.health.run)
	h.goLabeled("hub-sweeper", h.sweeper)
	h.goLabeled("hub-events", h.events.run)
	h.goFleet()
	return nil
}

// goLabeled starts a goroutine the hub owns and joins on Close.
func (h *Hub) goLabeled(role string, fn func(context.Context)) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		pprof.Do(h.ctx, pprof.Labels("role", role), fn)
	}()
}

// Config returns the effective configuration.
func (h *Hub) Config() Config { return h.cfg }

// Draining reports whether Shutdown has begun.
func (h *Hub) Draining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// Connections returns the number of sessions on this node.
func (h *Hub) Connections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Shutdown drains the node: it refuses new sessions, closes the existing
// ones with 1001 spread over half of what remains of ctx's deadline (so that
// clients do not reconnect all at once), commits their acks and stops the
// hub. It returns ctx.Err() if the deadline passes first; Close then stops
// whatever is left.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.draining = true
	list := h.sessionsLocked()
	h.mu.Unlock()

	window := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		window = time.Until(dl) / 2
	}
	if err := h.closeSpread(ctx, list, window); err != nil {
		return err
	}
	// Wait until every closed session has committed its marks, including
	// those that wait out a store error's backoff.
	for !h.queue.idle() || h.endingCount() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return h.Close()
}

// sessionsLocked returns the sessions; h.mu is held.
func (h *Hub) sessionsLocked() []*Session {
	list := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
	return list
}

// endingCount returns how many closed sessions have marks to commit.
func (h *Hub) endingCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ending)
}

// closeSpread closes sessions with 1001, spread evenly over window.
func (h *Hub) closeSpread(ctx context.Context, list []*Session, window time.Duration) error {
	if len(list) == 0 {
		return nil
	}
	step := window / time.Duration(len(list))
	t := time.NewTimer(0)
	defer t.Stop()
	for _, s := range list {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		s.Close(1001)
		t.Reset(step)
	}
	return nil
}

// Close stops the hub at once: it closes every session and waits for the
// hub's goroutines. It does not close the store. Idempotent.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.draining = true
	list := h.sessionsLocked()
	h.mu.Unlock()
	for _, s := range list {
		s.Close(1001)
	}
	if h.cancel != nil {
		h.cancel()
	}
	h.queue.close()
	h.sched.close()
	h.wg.Wait()
	return nil
}

// AddMember adds device to group (PUT /v1/groups/{g}/devices/{d}); a
// session of the device reads the group's log from then on.
func (h *Hub) AddMember(ctx context.Context, group, device string) error {
	if err := h.store.Join(ctx, device, []string{group}); err != nil {
		return err
	}
	h.membershipChanged(ctx, device)
	return nil
}

// RemoveMember removes device from group; its session stops reading the
// group's log once it has what was addressed to it.
func (h *Hub) RemoveMember(ctx context.Context, group, device string) error {
	if err := h.store.Leave(ctx, group, device); err != nil {
		return err
	}
	h.membershipChanged(ctx, device)
	return nil
}

// membershipChanged makes device's session, here or on another node,
// reload its cursors.
func (h *Hub) membershipChanged(ctx context.Context, device string) {
	h.mu.Lock()
	s := h.sessions[device]
	h.mu.Unlock()
	if s != nil {
		s.reload()
		return
	}
	h.wakeRemote(ctx, []string{device}, tether.EventMembership)
}

// Message answers GET /v1/messages/{id}: the store's answer, with the
// sends of sessions here that the store does not know yet (first sends are
// committed lazily).
func (h *Hub) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	st, err := h.store.Message(ctx, id)
	if err != nil {
		return st, err
	}
	for i := range st.Deliveries {
		d := &st.Deliveries[i]
		if d.State != tether.StatePending && d.State != tether.StateInflight {
			continue
		}
		if s := h.session(d.Device); s != nil {
			if n := s.attempts(id); n > d.Attempts {
				d.State, d.Attempts = tether.StateInflight, n
			}
		}
	}
	return st, nil
}

// sweeper marks expired deliveries and purges old messages.
func (h *Hub) sweeper(ctx context.Context) {
	t := time.NewTicker(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i := 0; i < 100; i++ { // bounded work per tick
			now := time.Now()
			n, more, err := h.store.Expire(ctx, now, now.Add(-h.cfg.Retention), 1000)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					h.log.Warn("expiry sweep failed", "err", err)
				}
				break
			}
			h.m.Expired.Add(float64(n))
			if n > 0 {
				h.events.appended()
			}
			if !more {
				break
			}
		}
	}
}
