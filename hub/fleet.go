package hub

import (
	"context"
	"sync"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/wire"
)

// fleet runs the hub's side of a tether.Fleet: liveness, batched presence
// writes, and the node's event subscription with its deafness probe.
type fleet struct {
	f    tether.Fleet
	hub  *Hub
	node string

	mu   sync.Mutex // guards following
	gone []tether.Online
	seq  uint64 // last probe sent
	got  uint64 // last probe heard
}

// goFleet marks the node alive, then starts the fleet goroutines, when the
// hub has a Fleet.
func (h *Hub) goFleet() {
	if h.fleet == nil {
		return
	}
	fl := h.fleet
	if err := h.fleetDo(h.ctx, "alive", func(ctx context.Context) error {
		return fl.f.Alive(ctx, fl.node, 3*h.cfg.Heartbeat)
	}); err != nil {
		h.log.Warn("presence: cannot mark the node alive yet; retrying every heartbeat", "err", err)
	}
	h.goLabeled("fleet-presence", h.fleet.presence)
	h.goLabeled("fleet-listen", h.fleet.listen)
}

// presence refreshes the node's liveness every heartbeat and writes the
// disconnections of the last tick in one batch.
func (fl *fleet) presence(ctx context.Context) {
	hb := fl.hub.cfg.Heartbeat
	t := time.NewTicker(min(hb, time.Second))
	defer t.Stop()
	lastAlive := time.Now() // goFleet has just written it
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastAlive) >= hb {
			if err := fl.hub.fleetDo(ctx, "alive", func(ctx context.Context) error {
				return fl.f.Alive(ctx, fl.node, 3*hb)
			}); err == nil {
				lastAlive = time.Now()
			}
		}
		fl.mu.Lock()
		gone := fl.gone
		fl.gone = nil
		fl.mu.Unlock()
		if len(gone) > 0 {
			if err := fl.hub.fleetDo(ctx, "disconnected", func(ctx context.Context) error {
				return fl.f.Disconnected(ctx, gone)
			}); err != nil {
				fl.hub.log.Warn("presence: recording disconnections failed", "sessions", len(gone), "err", err)
			}
		}
	}
}

// left queues a closed session's presence for removal.
func (fl *fleet) left(o tether.Online) {
	fl.mu.Lock()
	fl.gone = append(fl.gone, o)
	fl.mu.Unlock()
}

// listen keeps the node's subscription up. Each time it is (re)established
// every local session fetches again, so what was published while the node
// could not hear is delivered from the store.
func (fl *fleet) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // the prober: owned here, joined below
			defer close(done)
			fl.probe(lctx, cancel)
		}()
		start := time.Now()
		err := fl.f.Listen(lctx, fl.node, fl.hub.wakeAll, fl.event)
		cancel()
		<-done
		if ctx.Err() != nil {
			return
		}
		fl.hub.log.Warn("fleet subscription lost; subscribing again", "err", err)
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// probe sends the node an event every heartbeat and cancels the
// subscription when the previous one was not heard: a lost or deaf
// subscription is detected within two heartbeats.
func (fl *fleet) probe(ctx context.Context, deaf context.CancelFunc) {
	hb := fl.hub.cfg.Heartbeat
	t := time.NewTicker(hb)
	defer t.Stop()
	fl.mu.Lock()
	fl.got = fl.seq // a new subscription owes nothing
	fl.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fl.mu.Lock()
		missed := fl.seq > fl.got
		fl.seq++
		seq := fl.seq
		fl.mu.Unlock()
		if missed {
			fl.hub.log.Warn("fleet subscription is deaf: a probe was not heard within a heartbeat")
			deaf()
			return
		}
		ev := tether.Event{Node: fl.node, Kind: tether.EventProbe, Session: itoa64(seq)}
		_ = fl.hub.fleetDo(ctx, "send", func(ctx context.Context) error { return fl.f.Send(ctx, []tether.Event{ev}) })
	}
}

// event handles one event for this node.
func (fl *fleet) event(ev tether.Event) {
	h := fl.hub
	switch ev.Kind {
	case tether.EventProbe:
		fl.mu.Lock()
		if n := parseUint(ev.Session); n > fl.got {
			fl.got = n
		}
		fl.mu.Unlock()
	case tether.EventWake:
		if s := h.session(ev.Device); s != nil {
			s.announce()
		}
	case tether.EventLog, tether.EventReread:
		switch f := h.feed(ev.Group); {
		case f == nil:
		case ev.Kind == tether.EventReread:
			f.readToEnd()
		default:
			f.announce(ev.Seq)
		}
	case tether.EventMembership:
		if s := h.session(ev.Device); s != nil {
			s.reload()
		}
	case tether.EventTakeover:
		if s := h.session(ev.Device); s != nil && s.id != ev.Session {
			s.Close(wire.CloseReplaced)
		}
	}
}

// feed returns the feed of group here, or nil.
func (h *Hub) feed(group string) *feed {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.feeds[group]
}

// eachLocal calls fn with the session here of each of devices and returns
// the devices that have none here.
func (h *Hub) eachLocal(devices []string, fn func(*Session)) (remote []string) {
	for _, d := range devices {
		if s := h.session(d); s != nil {
			fn(s)
		} else {
			remote = append(remote, d)
		}
	}
	return remote
}

// session returns device's session here, or nil.
func (h *Hub) session(device string) *Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[device]
}

// wakeAll makes every local session read its logs again and every feed
// read its group's log: what was published while the node could not hear
// the fleet is delivered from the store.
func (h *Hub) wakeAll() {
	h.mu.Lock()
	list := h.sessionsLocked()
	feeds := make([]*feed, 0, len(h.feeds))
	for _, f := range h.feeds {
		feeds = append(feeds, f)
	}
	h.mu.Unlock()
	for _, s := range list {
		s.announce()
	}
	for _, f := range feeds {
		f.readToEnd()
	}
}

// wakeRemote sends kind to the nodes holding devices that are not
// connected here.
func (h *Hub) wakeRemote(ctx context.Context, devices []string, kind tether.EventKind) {
	if h.fleet == nil || len(devices) == 0 {
		return
	}
	var remote []tether.Online
	err := h.fleetDo(ctx, "lookup", func(ctx context.Context) (err error) {
		remote, err = h.fleet.f.Lookup(ctx, devices)
		return err
	})
	var evs []tether.Event
	for _, o := range remote {
		if o.Node != "" && o.Node != h.cfg.Node {
			evs = append(evs, tether.Event{Node: o.Node, Kind: kind, Device: o.Device})
		}
	}
	if err == nil && len(evs) > 0 {
		err = h.fleetDo(ctx, "send", func(ctx context.Context) error { return h.fleet.f.Send(ctx, evs) })
	}
	if err != nil {
		// The messages are stored; the devices get them on their next
		// wake-up or reconnect. Counted in tether_store_errors_total.
		h.log.Warn("waking remote devices failed", "devices", len(devices), "err", err)
	}
}

// fleetDo runs a fleet call with the hub's store deadline and metrics.
func (h *Hub) fleetDo(ctx context.Context, op string, fn func(context.Context) error) error {
	return h.store.do(ctx, "fleet_"+op, fn)
}

func itoa64(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func parseUint(s string) uint64 {
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n
}
