package hub

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherpush/tether"
)

// unsureAgain is how long after telling the recipients of unsure publishes
// they are told once more: the store may apply a write whose caller stopped
// waiting a little after it answers again (a bbolt transaction under way, a
// pipeline held in a paused Redis server's socket). It is also the least
// time between two tellings, however often publishes fail.
const unsureAgain = time.Second

// maxUnsure bounds the targets remembered; past it every session and feed
// of this node reads its logs instead.
const maxUnsure = 10_000

// unsure remembers the targets of publishes that failed without knowing
// whether the store kept their messages (its answer did not come in time).
// A message stored despite its 503, which its publisher does not retry,
// would otherwise reach its online recipients only at their next wake-up
// (another message, a reconnect). Once the store answers again, the health
// loop has the recipients read their logs: at the first answer, and again
// unsureAgain later.
type unsure struct {
	mu      sync.Mutex // guards following
	devices map[string]struct{}
	groups  map[string]struct{}
	all     bool      // more than maxUnsure targets
	rounds  int       // tellings since the last target was added
	last    time.Time // the last telling

	sending atomic.Bool // the fleet is being told
}

// add remembers targets.
func (u *unsure) add(targets ...tether.Target) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rounds = 0
	for _, t := range targets {
		if u.all || len(u.devices)+len(u.groups) >= maxUnsure {
			u.all, u.devices, u.groups = true, nil, nil
			return
		}
		set := &u.devices
		if t.Kind == tether.KindGroup {
			set = &u.groups
		}
		if *set == nil {
			*set = make(map[string]struct{})
		}
		(*set)[t.ID] = struct{}{}
	}
}

// due returns the targets to tell at now, when the store has just
// answered, and forgets them once told twice; ok is false when there is
// nothing to tell yet.
func (u *unsure) due(now time.Time) (devices, groups []string, all, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.all && len(u.devices)+len(u.groups) == 0 || now.Sub(u.last) < unsureAgain {
		return nil, nil, false, false
	}
	devices, groups, all = slices.Collect(maps.Keys(u.devices)), slices.Collect(maps.Keys(u.groups)), u.all
	u.last, u.rounds = now, u.rounds+1
	if u.rounds == 2 {
		u.devices, u.groups, u.all, u.rounds = nil, nil, false, 0
	}
	return devices, groups, all, true
}

// maybeStored remembers the targets of a publish that failed with err,
// unless err says the store did nothing (a bad request).
func (h *Hub) maybeStored(msgs []*tether.Message, err error) {
	switch tether.ErrorCode(err) {
	case tether.EUnavailable, tether.EInternal:
		targets := make([]tether.Target, len(msgs))
		for i, m := range msgs {
			targets[i] = m.Target
		}
		h.unsure.add(targets...)
	}
}

// tellUnsure has the recipients of unsure publishes read their logs, once
// the store answers again: the local sessions and feeds and, in a fleet,
// the nodes of the devices and every node reading the groups.
func (h *Hub) tellUnsure() {
	devices, groups, all, ok := h.unsure.due(time.Now())
	switch {
	case !ok:
		return
	case all: // other nodes' sessions read at their next wake-up
		h.wakeAll()
		return
	}
	remote := h.eachLocal(devices, (*Session).announce)
	events := make([]tether.Event, 0, len(groups))
	for _, g := range groups {
		if f := h.feed(g); f != nil {
			f.readToEnd()
		}
		events = append(events, tether.Event{Kind: tether.EventReread, Group: g})
	}
	if h.fleet != nil && len(remote)+len(events) > 0 {
		h.tellFleet(remote, events)
	}
}

// tellFleet tells the nodes of devices and every node reading the groups
// of events, on a goroutine of its own: fleet calls wait up to the store
// deadline, and the health loop that calls this must not. While an earlier
// telling is under way, the targets wait for a later one.
func (h *Hub) tellFleet(devices []string, events []tether.Event) {
	if !h.unsure.sending.CompareAndSwap(false, true) {
		targets := make([]tether.Target, 0, len(devices)+len(events))
		for _, d := range devices {
			targets = append(targets, tether.DeviceTarget(d))
		}
		for _, e := range events {
			targets = append(targets, tether.GroupTarget(e.Group))
		}
		h.unsure.add(targets...)
		return
	}
	h.goLabeled("hub-unsure", func(ctx context.Context) {
		defer h.unsure.sending.Store(false)
		h.wakeRemote(ctx, devices, tether.EventWake)
		if len(events) > 0 {
			if err := h.fleetDo(ctx, "send", func(ctx context.Context) error { return h.fleet.f.Send(ctx, events) }); err != nil {
				h.log.Warn("asking the fleet to read group logs again failed", "groups", len(events), "err", err)
			}
		}
	})
}
