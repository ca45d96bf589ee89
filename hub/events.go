package hub

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// Event log (SPEC section 11). Delivery events are appended by the store
// itself, in the transaction that settles the delivery; this file adds the
// presence events, trims the log to Config.EventRetention, cancels
// messages, and answers GET /v1/events with a long poll.

// maxPresenceQueue bounds the presence events waiting to be appended
// while the store does not answer; past it the oldest are dropped and
// counted.
const maxPresenceQueue = 100_000

// eventPoll is how often a waiting GET /v1/events looks at the log for
// events appended by other nodes (those of this node wake it at once).
const eventPoll = 25 * time.Millisecond

// MaxEventsWait bounds the wait of GET /v1/events.
const MaxEventsWait = 60 * time.Second

// events is the hub's part of the event log.
type events struct {
	h      *Hub
	signal chan struct{} // a presence event was queued

	mu      sync.Mutex // guards following
	queue   []tether.LogEvent
	dropped int
	changed chan struct{} // closed when events were appended here
}

func (e *events) init(h *Hub) {
	e.h = h
	e.signal = make(chan struct{}, 1)
	e.changed = make(chan struct{})
}

// presence queues a device.online or device.offline event.
func (e *events) presence(typ tether.EventType, device string, code int) {
	ev := tether.LogEvent{Type: typ, At: time.Now(), Device: device, Node: e.h.cfg.Node, Code: code}
	e.mu.Lock()
	if len(e.queue) >= maxPresenceQueue {
		e.queue = e.queue[1:]
		e.dropped++
	}
	e.queue = append(e.queue, ev)
	e.mu.Unlock()
	select {
	case e.signal <- struct{}{}:
	default:
	}
}

// appended wakes the waiting GET /v1/events and the webhook sender.
func (e *events) appended() {
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	if fn := e.h.cfg.OnEvents; fn != nil {
		fn()
	}
}

// wait returns a channel closed at the next local append.
func (e *events) wait() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// run appends the queued presence events in batches, retrying with a
// backoff while the store fails, and trims the log once a minute.
func (e *events) run(ctx context.Context) {
	trim := time.NewTicker(time.Minute)
	defer trim.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			e.flush(context.Background()) // sessions closed by the drain
			return
		case <-e.signal:
		case <-trim.C:
			e.trim(ctx)
			continue
		}
		if e.flush(ctx) {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			select {
			case e.signal <- struct{}{}:
			default:
			}
		}
	}
}

// flush appends the queued events and reports whether the store took
// them; on failure they stay queued.
func (e *events) flush(ctx context.Context) bool {
	e.mu.Lock()
	batch, dropped := e.queue, e.dropped
	e.queue, e.dropped = nil, 0
	e.mu.Unlock()
	if dropped > 0 {
		e.h.log.Warn("presence events dropped: the store did not take them in time", "dropped", dropped)
	}
	if len(batch) == 0 {
		return true
	}
	err := e.h.store.do(ctx, "append_events", func(ctx context.Context) error { return e.h.store.s.Append(ctx, batch) })
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			e.h.log.Warn("appending presence events failed; they are kept and appended again", "events", len(batch), "err", err)
		}
		e.mu.Lock()
		e.queue = append(batch, e.queue...)
		if n := len(e.queue) - maxPresenceQueue; n > 0 {
			e.queue, e.dropped = e.queue[n:], e.dropped+n
		}
		e.mu.Unlock()
		return false
	}
	e.appended()
	return true
}

// trim drops the events older than the retention.
func (e *events) trim(ctx context.Context) {
	before := time.Now().Add(-e.h.cfg.EventRetention)
	err := e.h.store.do(ctx, "trim_events", func(ctx context.Context) error { return e.h.store.s.Trim(ctx, before) })
	if err != nil && !errors.Is(err, context.Canceled) {
		e.h.log.Warn("trimming the event log failed", "err", err)
	}
}

// Events answers GET /v1/events: up to limit events after the cursor
// after, waiting up to wait (at most MaxEventsWait) while there are none.
func (h *Hub) Events(ctx context.Context, after string, limit int, wait time.Duration) ([]tether.LogEvent, error) {
	deadline := time.Now().Add(min(wait, MaxEventsWait))
	tick := time.NewTicker(eventPoll)
	defer tick.Stop()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		changed := h.events.wait()
		var evs []tether.LogEvent
		err := h.store.do(ctx, "events", func(ctx context.Context) (err error) {
			evs, err = h.store.s.Events(ctx, after, limit)
			return err
		})
		if err != nil || len(evs) > 0 || !time.Now().Before(deadline) {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return nil, nil // the client went away
		case <-changed:
		case <-tick.C:
		case <-timeout.C: // one more look, then the empty answer
		}
	}
}

// sentHere returns, by device, how many times the sessions of this node
// sent message id: first sends reach the store lazily, so its count may
// be lower. One pass over the sessions: cancels are rare.
func (h *Hub) sentHere(id string) map[string]int {
	h.mu.Lock()
	list := h.sessionsLocked()
	h.mu.Unlock()
	var out map[string]int
	for _, s := range list {
		if n := s.attempts(id); n > 0 {
			if out == nil {
				out = map[string]int{}
			}
			out[s.device] = n
		}
	}
	return out
}

// Cancel cancels message id (DELETE /v1/messages/{id}): its deliveries
// not settled become cancelled, and the sessions of their devices, here
// or on other nodes, load their cursors again and drop it from their
// windows. It returns how many deliveries were cancelled.
func (h *Hub) Cancel(ctx context.Context, id string) (int, error) {
	sent := h.sentHere(id)
	var devices []string
	err := h.store.do(ctx, "cancel", func(ctx context.Context) (err error) {
		devices, err = h.store.s.Cancel(ctx, id, time.Now(), sent)
		return err
	})
	if err != nil {
		return 0, err
	}
	remote := h.eachLocal(devices, (*Session).reload)
	h.wakeRemote(ctx, remote, tether.EventMembership)
	if len(devices) > 0 {
		h.events.appended()
	}
	return len(devices), nil
}
