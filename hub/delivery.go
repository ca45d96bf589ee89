package hub

import (
	"context"
	"sort"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/wire"
)

// topUp fills the in-flight window from the store. It asks for the oldest
// unacked deliveries of the device, up to the window size, and adds those
// not already in the window: so a delivery committed late by a concurrent
// publish is never skipped by a cursor. It returns false when the session
// closed.
func (s *Session) topUp(ctx context.Context, now time.Time) bool {
	max := s.hub.cfg.MaxInflight
	s.mu.Lock()
	room := max - len(s.inflight)
	if !s.fetch || room <= 0 {
		s.mu.Unlock()
		return true
	}
	s.fetch = false
	limit := len(s.inflight) + len(s.unflushed) + room
	s.mu.Unlock()

	ds, err := s.hub.store.Pending(ctx, s.device, "", limit, now)
	if err != nil {
		s.mu.Lock()
		s.fetch = true
		s.mu.Unlock()
		s.storeFailed("pending", err)
		return true
	}
	kill := s.admit(ds, now, limit)
	if len(kill) > 0 {
		s.kill(ctx, kill)
	}
	return true
}

// admit adds fetched deliveries to the window and returns those that
// already reached --max-attempts.
func (s *Session) admit(ds []tether.Delivery, now time.Time, limit int) (kill []string) {
	maxAttempts := s.hub.cfg.MaxAttempts
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight == nil {
		s.inflight = make(map[string]*flight, len(ds))
	}
	for _, d := range ds {
		id := d.Message.ID
		if _, ok := s.inflight[id]; ok {
			continue
		}
		if _, ok := s.unflushed[id]; ok {
			continue
		}
		if len(s.inflight) >= s.hub.cfg.MaxInflight {
			s.fetch = true // more wait in the store
			break
		}
		if maxAttempts > 0 && d.Attempts >= maxAttempts {
			kill = append(kill, id)
			continue
		}
		s.inflight[id] = &flight{msg: d.Message, attempt: d.Attempts, due: now}
	}
	if len(kill) > 0 || (len(ds) == limit && len(s.inflight) < s.hub.cfg.MaxInflight) {
		s.fetch = true
	}
	return kill
}

func (s *Session) kill(ctx context.Context, ids []string) {
	n, err := s.hub.store.Kill(ctx, s.device, ids)
	if err != nil {
		s.storeFailed("kill", err)
		return
	}
	s.hub.m.Dead.Add(float64(n))
}

// sendDue (re)sends every delivery of the window whose time has come, in
// message id order, after recording the attempt in the store.
func (s *Session) sendDue(ctx context.Context, now time.Time) bool {
	ids, kill := s.collectDue(now)
	if len(kill) > 0 {
		s.kill(ctx, kill)
	}
	if len(ids) == 0 {
		return true
	}
	attempts, err := s.hub.store.Sent(ctx, s.device, ids)
	if err != nil {
		s.mu.Lock()
		for _, id := range ids {
			if f := s.inflight[id]; f != nil {
				f.due = now
			}
		}
		s.mu.Unlock()
		s.storeFailed("sent", err)
		return true
	}
	frames, first := s.frames(ids, attempts, now)
	if len(frames) == 0 {
		return true
	}
	if !s.write(frames) {
		return false
	}
	m := s.hub.m
	m.Deliveries.Add(float64(len(frames)))
	m.Redeliveries.Add(float64(len(frames) - len(first)))
	for _, pub := range first {
		m.DeliveryLatency.Observe(now.Sub(pub).Seconds())
	}
	return true
}

// collectDue returns the ids due for sending, sorted, and those to kill.
// Expired deliveries leave the window (the sweeper counts them).
func (s *Session) collectDue(now time.Time) (ids, kill []string) {
	maxAttempts := s.hub.cfg.MaxAttempts
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, f := range s.inflight {
		if f.due.After(now) {
			continue
		}
		switch {
		case !f.msg.ExpiresAt.After(now):
			delete(s.inflight, id)
			s.fetch = true
		case maxAttempts > 0 && f.attempt >= maxAttempts:
			delete(s.inflight, id)
			kill = append(kill, id)
			s.fetch = true
		default:
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, kill
}

// frames builds the message frames for ids with the attempts the store
// recorded, and returns the publish times of first attempts.
func (s *Session) frames(ids []string, attempts []int, now time.Time) (frames [][]byte, first []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range ids {
		f := s.inflight[id]
		if f == nil {
			continue // acked while the store answered
		}
		if attempts[i] == 0 { // acked, expired or dead in the store
			delete(s.inflight, id)
			s.fetch = true
			continue
		}
		f.attempt = attempts[i]
		f.due = now.Add(s.backoff(f.attempt))
		m := f.msg
		frames = append(frames, wire.AppendMessage(nil, m.ID, m.Target.String(), m.Data, m.PublishedAt, f.attempt))
		if f.attempt == 1 {
			first = append(first, m.PublishedAt)
		}
	}
	return frames, first
}

// backoff is how long to wait for an ack of attempt n before sending again:
// the ack timeout doubled per attempt, capped at DefaultMaxBackoff of them.
func (s *Session) backoff(n int) time.Duration {
	mult := DefaultMaxBackoff
	if n >= 1 && n <= 6 {
		mult = 1 << (n - 1)
	}
	return time.Duration(mult) * s.hub.cfg.AckTimeout
}
