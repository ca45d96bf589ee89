// Package eventtest is an in-memory tether.EventStore for tests of what
// builds on the event log (the webhook sender, the events API), with
// faults a test can inject: every call failing, the lease expiring early.
package eventtest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// Memory is a tether.EventStore kept in memory. IDs are a zero-padded
// counter, so string order is log order. Trim drops events by their At.
// The zero value is not usable: call NewMemory. Safe for concurrent use;
// no method waits for anything but its mutex.
type Memory struct {
	mu      sync.Mutex // guards following
	events  []tether.LogEvent
	seq     uint64
	holder  string    // "" when no one holds the lease
	expires time.Time // the lease's end
	sent    string    // the last event the holders sent
	err     error     // returned by every call while non-nil
	calls   map[string]int
}

var _ tether.EventStore = (*Memory)(nil)

// NewMemory returns an empty event log.
func NewMemory() *Memory {
	return &Memory{calls: make(map[string]int)}
}

// begin locks m, counts the call and returns the injected error or ctx's.
// The caller unlocks.
func (m *Memory) begin(ctx context.Context, op string) error {
	m.mu.Lock()
	m.calls[op]++
	if m.err != nil {
		return m.err
	}
	return ctx.Err()
}

// Append sets each event's ID and adds the events at the end of the log.
func (m *Memory) Append(ctx context.Context, events []tether.LogEvent) error {
	defer m.mu.Unlock()
	if err := m.begin(ctx, "Append"); err != nil {
		return err
	}
	for i := range events {
		m.seq++
		events[i].ID = fmt.Sprintf("%020d", m.seq)
		m.events = append(m.events, events[i])
	}
	return nil
}

// Events returns up to limit events with an ID after after, oldest first.
func (m *Memory) Events(ctx context.Context, after string, limit int) ([]tether.LogEvent, error) {
	defer m.mu.Unlock()
	if err := m.begin(ctx, "Events"); err != nil {
		return nil, err
	}
	i := sort.Search(len(m.events), func(i int) bool { return m.events[i].ID > after })
	n := min(len(m.events)-i, max(limit, 0))
	out := make([]tether.LogEvent, n)
	copy(out, m.events[i:i+n])
	return out, nil
}

// Trim drops the events whose At is before before.
func (m *Memory) Trim(ctx context.Context, before time.Time) error {
	defer m.mu.Unlock()
	if err := m.begin(ctx, "Trim"); err != nil {
		return err
	}
	kept := m.events[:0]
	for _, e := range m.events {
		if !e.At.Before(before) {
			kept = append(kept, e)
		}
	}
	clear(m.events[len(kept):])
	m.events = kept
	return nil
}

// Lease gives the lease to holder for ttl from now when it is free,
// expired or holder's already, and reports whether holder has it and the
// last event sent.
func (m *Memory) Lease(ctx context.Context, holder string, ttl time.Duration) (bool, string, error) {
	defer m.mu.Unlock()
	if err := m.begin(ctx, "Lease"); err != nil {
		return false, "", err
	}
	now := time.Now()
	if m.holder != "" && m.holder != holder && now.Before(m.expires) {
		return false, "", nil
	}
	m.holder, m.expires = holder, now.Add(ttl)
	return true, m.sent, nil
}

// Sent records id as the last event sent when holder has an unexpired
// lease, and returns tether.ErrLeaseLost otherwise.
func (m *Memory) Sent(ctx context.Context, holder, id string) error {
	defer m.mu.Unlock()
	if err := m.begin(ctx, "Sent"); err != nil {
		return err
	}
	if m.holder != holder || !time.Now().Before(m.expires) {
		return fmt.Errorf("record progress of %s: %w", holder, tether.ErrLeaseLost)
	}
	if id > m.sent {
		m.sent = id
	}
	return nil
}

// SetErr makes every call return err until SetErr(nil): a store that is
// down.
func (m *Memory) SetErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// ExpireLease ends the current lease now, as if its holder had stopped
// renewing it ttl ago.
func (m *Memory) ExpireLease() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expires = time.Time{}
}

// Progress returns the last lease holder (whether or not its lease has
// expired) and the last event recorded as sent.
func (m *Memory) Progress() (holder, sent string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holder, m.sent
}

// Calls returns how many times op ("Append", "Events", "Trim", "Lease",
// "Sent") was called, failed calls included.
func (m *Memory) Calls(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// Len returns how many events the log holds.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}
