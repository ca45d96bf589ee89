package hub

import (
	"context"
	"time"

	"github.com/tetherpush/tether"
)

// Admit prepares a session of device before the upgrade: it records the
// token's groups as memberships and, in a fleet, the new presence, sending a
// takeover to the node that held the device. It returns the session id for
// Attach; when the session does not start, call Forget.
func (h *Hub) Admit(ctx context.Context, device string, groups []string) (string, error) {
	if err := h.health.ready(); err != nil {
		return "", err
	}
	if err := h.store.Join(ctx, device, groups); err != nil {
		return "", err
	}
	if h.fleet == nil {
		return "", nil // a session id tells takeovers apart across nodes only
	}
	now := time.Now()
	id := h.ids.next(now)
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
		ConnectedAt: time.Unix(0, s.connectedAt),
		LastSeen:    time.Unix(0, s.lastSeen.Load()),
	}
}

// Ready reports whether the node accepts work: not draining, and the store
// answered its last health check. It never waits for the store.
func (h *Hub) Ready(ctx context.Context) error {
	if h.Draining() {
		return ErrDraining
	}
	return h.health.ready()
}
