package hub

import (
	"context"
	"sync"
	"time"
)

// runQueue is the FIFO of sessions that have work. A session is in it at
// most once (see Session.wake), so its length is bounded by the number of
// sessions and pushing never blocks.
type runQueue struct {
	mu     sync.Mutex // guards following
	items  []queued
	head   int
	busy   int // sessions being worked on
	closed bool
	wake   chan struct{}
}

// queued is a session on the run queue and when it was put there.
type queued struct {
	s  *Session
	at int64 // Unix ns
}

func (q *runQueue) init() { q.wake = make(chan struct{}, 1) }

func (q *runQueue) push(s *Session) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, queued{s, time.Now().UnixNano()})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop waits for a session; nil once the queue is closed or ctx is done.
func (q *runQueue) pop(ctx context.Context) *Session {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil
		}
		if q.head < len(q.items) {
			s := q.items[q.head].s
			q.items[q.head] = queued{}
			q.head++
			if q.head == len(q.items) || q.head > 1024 && q.head > len(q.items)/2 {
				n := copy(q.items, q.items[q.head:])
				q.items, q.head = q.items[:n], 0
			}
			q.busy++
			more := q.head < len(q.items)
			q.mu.Unlock()
			if more { // pass the wake-up on to another worker
				select {
				case q.wake <- struct{}{}:
				default:
				}
			}
			return s
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		}
	}
}

func (q *runQueue) done() {
	q.mu.Lock()
	q.busy--
	q.mu.Unlock()
}

// idle reports whether no session waits or is being worked on.
func (q *runQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.head == len(q.items) && q.busy == 0
}

// oldestAge returns how long the session at the head has waited.
func (q *runQueue) oldestAge(now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return 0
	}
	return now.Sub(time.Unix(0, q.items[q.head].at))
}

func (q *runQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.items, q.head = nil, 0
	q.mu.Unlock()
}

// worker runs session work until the hub closes.
func (h *Hub) worker(ctx context.Context) {
	for {
		s := h.queue.pop(ctx)
		if s == nil {
			return
		}
		s.run()
		h.queue.done()
	}
}

// fifo is a queue of items each in it at most once (the caller keeps the
// "queued" flag), with the time each was put in: the store loops' queues.
type fifo[T any] struct {
	items []T
	at    []int64 // Unix ns, parallel to items
}

func (f *fifo[T]) push(v T, now time.Time) {
	f.items = append(f.items, v)
	f.at = append(f.at, now.UnixNano())
}

// take removes and returns up to n items, oldest first.
func (f *fifo[T]) take(n int) []T {
	n = min(n, len(f.items))
	out := make([]T, n)
	copy(out, f.items)
	rest := copy(f.items, f.items[n:])
	clear(f.items[rest:])
	f.items = f.items[:rest]
	copy(f.at, f.at[n:])
	f.at = f.at[:rest]
	return out
}

// oldest returns the time the oldest item was put in; zero when empty.
func (f *fifo[T]) oldest() time.Time {
	if len(f.at) == 0 {
		return time.Time{}
	}
	return time.Unix(0, f.at[0])
}

func (f *fifo[T]) len() int { return len(f.items) }
