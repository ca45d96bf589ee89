package hub

import (
	"context"
	"sync"
)

// runQueue is the FIFO of sessions that have work. A session is in it at
// most once (see Session.wake), so its length is bounded by the number of
// sessions and pushing never blocks.
type runQueue struct {
	mu     sync.Mutex // guards following
	items  []*Session
	busy   int // sessions being worked on
	closed bool
	wake   chan struct{}
}

func (q *runQueue) init() { q.wake = make(chan struct{}, 1) }

func (q *runQueue) push(s *Session) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, s)
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
		if len(q.items) > 0 {
			s := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.busy++
			more := len(q.items) > 0
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
	return len(q.items) == 0 && q.busy == 0
}

func (q *runQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.items = nil
	q.mu.Unlock()
}

// worker runs session work until the hub closes.
func (h *Hub) worker(ctx context.Context) {
	for {
		s := h.queue.pop(ctx)
		if s == nil {
			return
		}
		s.run(ctx)
		h.queue.done()
	}
}
