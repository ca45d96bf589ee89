package client

import "sync"

// maxPendingAcks bounds the ids waiting for a connection. Dropping the oldest
// is safe: the server redelivers them, and the de-duplication set acks them
// again without calling the handler.
const maxPendingAcks = 10 * 1000

// ackQueue holds the ids of handled messages until the session writer sends
// them. The handler goroutine pushes without ever waiting on the network.
type ackQueue struct {
	notify chan struct{} // capacity 1: "ids were queued"

	mu      sync.Mutex // guards following
	ids     []string
	dropped int
}

func newAckQueue() *ackQueue {
	return &ackQueue{notify: make(chan struct{}, 1)}
}

// push queues id and wakes the writer.
func (q *ackQueue) push(id string) {
	q.mu.Lock()
	if len(q.ids) >= maxPendingAcks {
		q.ids = q.ids[1:]
		q.dropped++
	}
	q.ids = append(q.ids, id)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// len returns how many ids are queued.
func (q *ackQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids)
}

// take removes and returns up to n of the oldest ids.
func (q *ackQueue) take(n int) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.ids))
	if n == 0 {
		return nil
	}
	ids := make([]string, n)
	copy(ids, q.ids)
	q.ids = q.ids[n:]
	if len(q.ids) == 0 {
		q.ids = nil // let the backing array go
	}
	return ids
}

// takeDropped returns and resets the count of ids dropped for the bound.
func (q *ackQueue) takeDropped() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.dropped
	q.dropped = 0
	return n
}

// dedup remembers the last size message ids handled successfully, oldest
// forgotten first. It belongs to the handler goroutine: no lock.
type dedup struct {
	ring []string
	next int
	set  map[string]struct{}
}

// newDedup returns a set of size ids; size ≤ 0 remembers nothing.
func newDedup(size int) *dedup {
	size = max(size, 0)
	return &dedup{ring: make([]string, 0, size), set: make(map[string]struct{}, size)}
}

func (d *dedup) has(id string) bool {
	_, ok := d.set[id]
	return ok
}

func (d *dedup) add(id string) {
	if cap(d.ring) == 0 || d.has(id) {
		return
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, id)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = id
	}
	d.next = (d.next + 1) % cap(d.ring)
	d.set[id] = struct{}{}
}
