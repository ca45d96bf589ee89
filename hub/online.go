package hub

import (
	"container/heap"
	"slices"
	"strings"
	"time"

	"github.com/tetherpush/tether"
)

// OnlineDevices returns the devices with a session on this node whose ids
// start with prefix: the first limit of them in id order, and how many match
// in all. Groups are those the session's token named. It walks the sessions
// once under the hub's lock, keeping only limit of them, and does no I/O.
func (h *Hub) OnlineDevices(prefix string, limit int) ([]tether.DeviceInfo, int) {
	if limit <= 0 {
		return nil, h.countOnline(prefix)
	}
	first := make(byDevice, 0, limit)
	total := 0
	h.mu.Lock()
	for id, s := range h.sessions {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		total++
		switch {
		case len(first) < limit:
			heap.Push(&first, s)
		case id < first[0].device:
			first[0] = s
			heap.Fix(&first, 0)
		}
	}
	h.mu.Unlock()
	slices.SortFunc(first, func(a, b *Session) int { return strings.Compare(a.device, b.device) })
	out := make([]tether.DeviceInfo, len(first))
	for i, s := range first {
		groups := s.memberOf()
		out[i] = tether.DeviceInfo{ID: s.device, Groups: groups, Presence: tether.Presence{
			Online:      true,
			Node:        h.cfg.Node,
			ConnectedAt: time.Unix(0, s.connectedAt),
			LastSeen:    time.Unix(0, s.lastSeen.Load()),
		}}
	}
	return out, total
}

func (h *Hub) countOnline(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if prefix == "" {
		return len(h.sessions)
	}
	n := 0
	for id := range h.sessions {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}

// byDevice is a max-heap of sessions by device id: its root is the largest
// of the smallest ids kept so far.
type byDevice []*Session

// Len implements heap.Interface.
func (b byDevice) Len() int { return len(b) }

// Less implements heap.Interface: the larger device id is nearer the root.
func (b byDevice) Less(i, j int) bool { return b[i].device > b[j].device }

// Swap implements heap.Interface.
func (b byDevice) Swap(i, j int) { b[i], b[j] = b[j], b[i] }

// Push implements heap.Interface; x is a *Session.
func (b *byDevice) Push(x any) { *b = append(*b, x.(*Session)) }

// Pop implements heap.Interface.
func (b *byDevice) Pop() any {
	old := *b
	s := old[len(old)-1]
	*b = old[:len(old)-1]
	return s
}
