package hub

import (
	"context"
	"time"

	"github.com/tetherpush/tether"
)

// AdmitPublish returns the error a publish request must be refused with now (503
// overloaded or unavailable), or nil; the HTTP API asks before it reads a
// request's body, so that refusing costs next to nothing.
func (h *Hub) AdmitPublish() error {
	err := h.health.admit()
	if err != nil {
		h.m.Refused.WithLabelValues(tether.ErrorCode(err)).Inc()
	}
	return err
}

// Publish stores msgs and hands each to the sessions here that read its
// log; in a fleet, the nodes of devices not connected here are told. A
// node that is overloaded or whose store is known to be down refuses at
// once, before the store is asked (SPEC section 3 "Overload").
func (h *Hub) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	if err := h.AdmitPublish(); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := h.store.Publish(ctx, msgs)
	h.health.published(time.Since(start))
	if err != nil {
		h.maybeStored(msgs, err)
		return nil, err
	}
	var remote []string
	var groups []tether.Event
	for i, r := range res {
		m := msgs[i]
		if r.Duplicate {
			// The first attempt may have been stored without anyone being
			// told (its answer lost to a timeout): tell them now.
			m = nil
		} else {
			h.m.Published.Inc()
		}
		t := msgs[i].Target
		switch {
		case t.Kind == tether.KindGroup:
			h.offerGroup(t.ID, r.Seq, m)
			groups = append(groups, tether.Event{Kind: tether.EventLog, Group: t.ID, Seq: r.Seq})
		case !h.offerDevice(t.ID, r.Seq, m):
			remote = append(remote, t.ID)
		}
	}
	if h.fleet != nil {
		h.wakeRemote(ctx, remote, tether.EventWake)
		h.sendAll(ctx, groups)
	}
	return res, nil
}

// offerGroup hands entry seq of group's log to its feed, if a session here
// reads it.
func (h *Hub) offerGroup(group string, seq uint64, m *tether.Message) {
	if f := h.feed(group); f != nil {
		f.offer(seq, m)
	}
}

// offerDevice hands entry seq of device's log to its session here, and
// reports whether it has one.
func (h *Hub) offerDevice(device string, seq uint64, m *tether.Message) bool {
	h.mu.Lock()
	s := h.sessions[device]
	h.mu.Unlock()
	if s == nil {
		return false
	}
	s.offer(seq, m)
	return true
}

// sendAll sends events to every node of the fleet, one per group and the
// newest position: the nodes whose sessions read those logs read them.
func (h *Hub) sendAll(ctx context.Context, events []tether.Event) {
	if len(events) == 0 {
		return
	}
	newest := map[string]int{}
	out := events[:0]
	for _, e := range events {
		if i, ok := newest[e.Group]; ok {
			out[i].Seq = max(out[i].Seq, e.Seq)
			continue
		}
		newest[e.Group] = len(out)
		out = append(out, e)
	}
	if err := h.fleetDo(ctx, "send", func(ctx context.Context) error { return h.fleet.f.Send(ctx, out) }); err != nil {
		// The messages are stored; the other nodes' sessions get them
		// with the next announcement of their groups or when they
		// reconnect. Counted in tether_store_errors_total.
		h.log.Warn("announcing group messages to the fleet failed", "groups", len(out), "err", err)
	}
}
