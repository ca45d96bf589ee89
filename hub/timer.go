package hub

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler is the hub's one timer: a min-heap of sessions by the time their
// next timer (redelivery, heartbeat ping, token expiry) is due. When one is
// due the session is put on the run queue. One goroutine serves every
// session, so an idle session costs a heap slot, not a runtime timer.
type scheduler struct {
	mu     sync.Mutex // guards following
	h      timerHeap
	closed bool
	kick   chan struct{}
}

func (sc *scheduler) init() {
	sc.kick = make(chan struct{}, 1)
}

// set schedules s at t, replacing its earlier entry; a zero t removes it.
func (sc *scheduler) set(s *Session, t time.Time) {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	first := false
	switch {
	case t.IsZero() && s.heapIdx >= 0:
		heap.Remove(&sc.h, int(s.heapIdx))
	case t.IsZero():
	case s.heapIdx >= 0:
		s.timerAt = t.UnixNano()
		heap.Fix(&sc.h, int(s.heapIdx))
		first = s.heapIdx == 0
	default:
		s.timerAt = t.UnixNano()
		heap.Push(&sc.h, s)
		first = s.heapIdx == 0
	}
	sc.mu.Unlock()
	if first {
		select {
		case sc.kick <- struct{}{}:
		default:
		}
	}
}

func (sc *scheduler) close() {
	sc.mu.Lock()
	sc.closed = true
	sc.mu.Unlock()
}

// run fires due sessions until ctx is done.
func (sc *scheduler) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var due []*Session
		wait := time.Hour
		now := time.Now()
		sc.mu.Lock()
		for len(sc.h) > 0 {
			s := sc.h[0]
			if d := time.Duration(s.timerAt - now.UnixNano()); d > 0 {
				wait = d
				break
			}
			heap.Pop(&sc.h)
			due = append(due, s)
		}
		sc.mu.Unlock()
		for _, s := range due {
			s.timerFired()
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-sc.kick:
		case <-t.C:
		}
	}
}

// timerHeap implements heap.Interface over sessions; guarded by
// scheduler.mu.
type timerHeap []*Session

// Len implements heap.Interface.
func (h timerHeap) Len() int { return len(h) }

// Less implements heap.Interface: the earliest timer is at the root.
func (h timerHeap) Less(i, j int) bool { return h[i].timerAt < h[j].timerAt }

// Swap implements heap.Interface and keeps each session's heapIdx.
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}

// Push implements heap.Interface; x is a *Session, which learns its index.
func (h *timerHeap) Push(x any) {
	s := x.(*Session)
	s.heapIdx = int32(len(*h))
	*h = append(*h, s)
}

// Pop implements heap.Interface; the session's heapIdx becomes -1.
func (h *timerHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.heapIdx = -1
	*h = old[:len(old)-1]
	return s
}
