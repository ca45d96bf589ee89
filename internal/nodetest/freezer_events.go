package nodetest

import (
	"context"
	"time"

	"github.com/tetherpush/tether"
)

// Cancel is tether.Store.Cancel, held while f is frozen.
func (f *Freezer) Cancel(ctx context.Context, id string, at time.Time, sent map[string]int) ([]string, error) {
	return hold(f, ctx, "cancel", func(s tether.Store) ([]string, error) { return s.Cancel(ctx, id, at, sent) })
}

// Append is tether.EventStore.Append, held while f is frozen.
func (f *Freezer) Append(ctx context.Context, events []tether.LogEvent) error {
	_, err := hold(f, ctx, "append", func(s tether.Store) (any, error) { return nil, s.Append(ctx, events) })
	return err
}

// Events is tether.EventStore.Events, held while f is frozen.
func (f *Freezer) Events(ctx context.Context, after string, limit int) ([]tether.LogEvent, error) {
	return hold(f, ctx, "events", func(s tether.Store) ([]tether.LogEvent, error) { return s.Events(ctx, after, limit) })
}

// Trim is tether.EventStore.Trim, held while f is frozen.
func (f *Freezer) Trim(ctx context.Context, before time.Time) error {
	_, err := hold(f, ctx, "trim", func(s tether.Store) (any, error) { return nil, s.Trim(ctx, before) })
	return err
}

// Lease is tether.EventStore.Lease, held while f is frozen.
func (f *Freezer) Lease(ctx context.Context, holder string, ttl time.Duration) (bool, string, error) {
	type result struct {
		held bool
		sent string
	}
	r, err := hold(f, ctx, "lease", func(s tether.Store) (result, error) {
		held, sent, err := s.Lease(ctx, holder, ttl)
		return result{held, sent}, err
	})
	return r.held, r.sent, err
}

// Sent is tether.EventStore.Sent, held while f is frozen.
func (f *Freezer) Sent(ctx context.Context, holder, id string) error {
	_, err := hold(f, ctx, "sent", func(s tether.Store) (any, error) { return nil, s.Sent(ctx, holder, id) })
	return err
}
