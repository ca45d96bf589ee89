package hub

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// commitBatch is the most sessions one Commit carries. Commits are made
// one after another and a transaction costs far less per session when it
// is large, so the cap is high: at 1,024, the acks of 10,000 busy devices
// queued behind each other until the commit queue's age alone made the
// node refuse publishes.
const commitBatch = 16384

// commitLoop commits the marks (sends, acks, dead) of many sessions in one
// store call: while one Commit is under way, the marks made meanwhile
// gather for the next, so the store sees one transaction or pipeline per
// batch, whatever the number of sessions. A failed Commit gives the marks
// back to their sessions, and the loop tries again after a backoff; closed
// sessions stay in the hub's ending set until theirs are stored.
type commitLoop struct {
	h      *Hub
	signal chan struct{}

	mu sync.Mutex // guards following
	q  fifo[*Session]
}

func (c *commitLoop) init(h *Hub) {
	c.h = h
	c.signal = make(chan struct{}, 1)
}

// queue puts s on the queue; the caller has set s's commitQueued.
func (c *commitLoop) queue(s *Session) {
	c.mu.Lock()
	c.q.push(s, time.Now())
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// oldestAge returns how long the oldest queued session has waited.
func (c *commitLoop) oldestAge(now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.q.oldest(); !t.IsZero() {
		return now.Sub(t)
	}
	return 0
}

func (c *commitLoop) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.signal:
		}
		for {
			c.mu.Lock()
			batch := c.q.take(commitBatch)
			more := c.q.len() > 0
			c.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if c.commit(ctx, batch) {
				backoff = 0
			} else {
				backoff = min(max(2*backoff, 100*time.Millisecond), time.Second)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
			}
			if !more {
				break
			}
		}
	}
}

// commit stores the marks of batch and reports whether the store took them.
func (c *commitLoop) commit(ctx context.Context, batch []*Session) bool {
	h := c.h
	now := time.Now()
	sessions := batch[:0]
	var changes []tether.Change
	waiting := c.waiting(batch)
	for _, s := range batch {
		if waiting[s] {
			continue
		}
		if ch, ok := s.takeMarks(now); ok {
			sessions = append(sessions, s)
			changes = append(changes, ch)
		} else if _, finished := s.committed(tether.Change{}, nil, nil); finished {
			h.finished(s)
		}
	}
	if len(waiting) > 0 {
		time.AfterFunc(10*time.Millisecond, func() {
			for s := range waiting {
				c.queue(s)
			}
		})
	}
	if len(changes) == 0 {
		return true
	}
	res, err := h.store.Commit(ctx, changes)
	if err != nil && !errors.Is(err, context.Canceled) {
		h.log.Warn("committing acks failed; they are kept and committed again", "sessions", len(changes), "err", err)
	}
	settled := false
	for i, s := range sessions {
		var got []tether.Cursor
		if err == nil {
			settled = settled || len(res[i].Settled) > 0
			h.m.Acks.Add(float64(res[i].Acked))
			h.m.Dead.Add(float64(res[i].Dead))
			got = res[i].Cursors
		}
		requeue, finished := s.committed(changes[i], got, err)
		if requeue {
			c.queue(s)
		}
		if finished {
			h.finished(s)
		}
	}
	if settled {
		h.events.appended()
	}
	return err == nil
}

// waiting returns the sessions of batch that must wait for an earlier,
// closed session of the same device whose marks are not in batch: a
// device's marks are committed in the order its sessions made them (an ack
// on a new session must not overtake the sends of the old one that a
// failed commit gave back).
func (c *commitLoop) waiting(batch []*Session) map[*Session]bool {
	h := c.h
	in := make(map[*Session]bool, len(batch))
	for _, s := range batch {
		in[s] = true
	}
	var out map[*Session]bool
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ending) == 0 {
		return nil
	}
	earlier := map[string]bool{}
	for e := range h.ending {
		if !in[e] {
			earlier[e.device] = true
		}
	}
	for _, s := range batch {
		if _, ended := h.ending[s]; !ended && earlier[s.device] {
			if out == nil {
				out = make(map[*Session]bool)
			}
			out[s] = true
		}
	}
	return out
}

// queueCommit queues s's marks for the commit loop; a session closed
// meanwhile joins the ending set, which Shutdown waits for.
func (h *Hub) queueCommit(s *Session, closed bool) {
	if closed {
		h.mu.Lock()
		h.ending[s] = struct{}{}
		h.mu.Unlock()
	}
	h.commit.queue(s)
}

// finished forgets a closed session whose marks are all committed.
func (h *Hub) finished(s *Session) {
	h.mu.Lock()
	delete(h.ending, s)
	h.mu.Unlock()
}
