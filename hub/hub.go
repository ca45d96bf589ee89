// Package hub is tether's delivery engine: it keeps the sessions of the
// devices connected to this node, feeds each one its deliveries from the
// store within the in-flight window, redelivers what is not acked, handles
// takeover and drains on shutdown.
//
// A session is an event-driven state machine. The I/O layer feeds it events
// (a text message arrived, the connection ended) and gives it a Conn to
// write to; timers and store answers are further events. Work that touches
// the store or writes to the socket runs on a fixed pool of workers, never on
// the goroutine that reads the socket, so a connection's reader always sees
// its peer close at once, whatever the store is doing (SPEC section 2, rule
// 3), and nothing spawns a goroutine per frame or per message (rule 4).
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// Defaults of Config fields; a zero field means its default.
const (
	DefaultStoreTimeout  = 5 * time.Second
	DefaultWriteTimeout  = 5 * time.Second
	DefaultSweepInterval = time.Second
	DefaultRetention     = time.Hour
	DefaultMaxFrameRate  = 100 // client frames per second, sustained
	DefaultMaxBackoff    = 32  // redelivery backoff cap, in ack timeouts
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
	Logger       *slog.Logger
	Metrics      *Metrics // default: unregistered metrics
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
	cfg   Config
	store *store
	log   *slog.Logger
	m     *Metrics
	queue runQueue
	sched scheduler
	fleet *fleet // nil for a single node
	ids   ids

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards following
	sessions map[string]*Session
	ending   map[*Session]struct{} // closed, acks not yet stored
	draining bool
	nextID   uint64
	ready    readyCache
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
	}
	h.store = &store{s: st, timeout: cfg.StoreTimeout, m: cfg.Metrics}
	if cfg.Fleet != nil {
		h.fleet = &fleet{f: cfg.Fleet, hub: h, node: cfg.Node}
	}
	h.queue.init()
	h.sched.init()
	return h
}

// Open starts the workers, the timer and the expiry sweeper.
func (h *Hub) Open() error {
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for i := 0; i < h.cfg.Workers; i++ {
		h.goLabeled("hub-worker", h.worker)
	}
	h.goLabeled("hub-timer", h.sched.run)
	h.goLabeled("hub-sweeper", h.sweeper)
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
// clients do not reconnect all at once), flushes their acks to the store and
// stops the hub. It returns ctx.Err() if the deadline passes first; Close
// then stops whatever is left.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.draining = true
	list := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
	h.mu.Unlock()

	window := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		window = time.Until(dl) / 2
	}
	if err := h.closeSpread(ctx, list, window); err != nil {
		return err
	}
	// Wait until every closed session has stored its acks, including
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

// endingCount returns how many closed sessions have acks to store.
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
	list := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		list = append(list, s)
	}
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

// Publish stores msgs and wakes the local sessions of their recipients.
func (h *Hub) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	res, err := h.store.Publish(ctx, msgs)
	if err != nil {
		return nil, err
	}
	var remote []string
	for _, r := range res {
		devices := r.Devices
		if r.Duplicate {
			devices = h.waiting(ctx, r.ID)
		} else {
			h.m.Published.Inc()
		}
		remote = append(remote, h.notify(devices)...)
	}
	h.wakeRemote(ctx, remote)
	return res, nil
}

// waiting returns the devices for which message id is still to be sent or
// acked. A retried publish answered as a duplicate uses it to wake them:
// the first attempt may have been stored without waking anyone (its
// answer lost to a store timeout). Best effort: nil when the store fails.
func (h *Hub) waiting(ctx context.Context, id string) []string {
	ms, err := h.store.Message(ctx, id)
	if err != nil {
		return nil
	}
	var devices []string
	for _, d := range ms.Deliveries {
		if d.State == tether.StatePending || d.State == tether.StateInflight {
			devices = append(devices, d.Device)
		}
	}
	return devices
}

// notify wakes the sessions of devices connected here and returns the
// devices that are not.
func (h *Hub) notify(devices []string) (elsewhere []string) {
	h.mu.Lock()
	wake := make([]*Session, 0, len(devices))
	for _, d := range devices {
		if s := h.sessions[d]; s != nil {
			wake = append(wake, s)
		} else if h.fleet != nil {
			elsewhere = append(elsewhere, d)
		}
	}
	h.mu.Unlock()
	for _, s := range wake {
		s.notify()
	}
	return elsewhere
}

// Admit prepares a session of device before the upgrade: it records the
// token's groups as memberships and, in a fleet, the new presence, sending a
// takeover to the node that held the device. It returns the session id for
// Attach; when the session does not start, call Forget.
func (h *Hub) Admit(ctx context.Context, device string, groups []string) (string, error) {
	if err := h.store.Join(ctx, device, groups); err != nil {
		return "", err
	}
	now := time.Now()
	id := h.ids.next(now)
	if h.fleet == nil {
		return id, nil
	}
	o := tether.Online{Device: device, Node: h.cfg.Node, Session: id, ConnectedAt: now, LastSeen: now}
	var prev []tether.Online
	err := h.fleetDo(ctx, "connected", func(ctx context.Context) (err error) {
		prev, err = h.fleet.f.Connected(ctx, []tether.Online{o})
		return err
	})
	if err != nil {
		return "", err
	}
	if p := prev[0]; p.Node != "" && p.Node != h.cfg.Node {
		ev := tether.Event{Node: p.Node, Kind: tether.EventTakeover, Device: device, Session: id}
		if err := h.fleetDo(ctx, "send", func(ctx context.Context) error { return h.fleet.f.Send(ctx, []tether.Event{ev}) }); err != nil {
			h.log.Warn("takeover event not sent; the old session ends at its next heartbeat check", "device", device, "node", p.Node, "err", err)
		}
	}
	return id, nil
}

// Forget undoes Admit for a session that did not start.
func (h *Hub) Forget(device, id string) {
	if h.fleet != nil {
		h.fleet.left(tether.Online{Device: device, Node: h.cfg.Node, Session: id, LastSeen: time.Now()})
	}
}

// AddMember adds device to group (PUT /v1/groups/{g}/devices/{d}).
func (h *Hub) AddMember(ctx context.Context, group, device string) error {
	return h.store.Join(ctx, device, []string{group})
}

// RemoveMember removes device from group.
func (h *Hub) RemoveMember(ctx context.Context, group, device string) error {
	return h.store.Leave(ctx, group, device)
}

// Message answers GET /v1/messages/{id}.
func (h *Hub) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	return h.store.Message(ctx, id)
}

// Device answers GET /v1/devices/{id}: the store's view plus presence.
func (h *Hub) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	info, err := h.store.Device(ctx, id)
	if err != nil {
		return info, err
	}
	info.Presence = h.presence(id)
	if h.fleet != nil && !info.Online {
		var os []tether.Online
		if err := h.fleetDo(ctx, "lookup", func(ctx context.Context) (err error) {
			os, err = h.fleet.f.Lookup(ctx, []string{id})
			return err
		}); err != nil {
			return info, err
		}
		o := os[0]
		info.Presence = tether.Presence{Online: o.Node != "", Node: o.Node, ConnectedAt: o.ConnectedAt, LastSeen: o.LastSeen}
	}
	return info, nil
}

// Group answers GET /v1/groups/{id} with each member's presence.
func (h *Hub) Group(ctx context.Context, id string) (tether.GroupInfo, error) {
	info, err := h.store.Group(ctx, id)
	if err != nil {
		return info, err
	}
	if h.fleet != nil && len(info.Devices) > 0 {
		ids := make([]string, len(info.Devices))
		for i, d := range info.Devices {
			ids[i] = d.ID
		}
		var os []tether.Online
		if err := h.fleetDo(ctx, "lookup", func(ctx context.Context) (err error) {
			os, err = h.fleet.f.Lookup(ctx, ids)
			return err
		}); err != nil {
			return info, err
		}
		for i := range info.Devices {
			info.Devices[i].Online = os[i].Node != ""
		}
		return info, nil
	}
	h.mu.Lock()
	for i := range info.Devices {
		info.Devices[i].Online = h.sessions[info.Devices[i].ID] != nil
	}
	h.mu.Unlock()
	return info, nil
}

func (h *Hub) presence(device string) tether.Presence {
	h.mu.Lock()
	s := h.sessions[device]
	h.mu.Unlock()
	if s == nil {
		return tether.Presence{}
	}
	return tether.Presence{
		Online:      true,
		Node:        h.cfg.Node,
		ConnectedAt: s.connectedAt,
		LastSeen:    time.Unix(0, s.lastSeen.Load()),
	}
}

// Ready reports whether the node accepts work: not draining, store answers.
// The store's answer is cached for a second.
func (h *Hub) Ready(ctx context.Context) error {
	if h.Draining() {
		return ErrDraining
	}
	return h.ready.check(ctx, h.store.Ping)
}

// readyCache remembers the last store ping for a second.
type readyCache struct {
	mu  sync.Mutex // guards following
	at  time.Time
	err error
}

func (c *readyCache) check(ctx context.Context, ping func(context.Context) error) error {
	c.mu.Lock()
	if time.Since(c.at) < time.Second {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	err := ping(ctx)
	if err != nil {
		err = fmt.Errorf("store does not answer: %w", err)
	}
	c.mu.Lock()
	c.at, c.err = time.Now(), err
	c.mu.Unlock()
	return err
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
			if !more {
				break
			}
		}
	}
}
