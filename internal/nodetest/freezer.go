package nodetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherpush/tether"
)

// Freezer is a tether.Store that delegates every call to the store behind
// it, except while frozen. Then each call (Close aside) waits until the
// thaw or until its ctx ends, and then answers ctx's error wrapped in tether.ErrUnavailable, as
// the Store contract wants of a backend that does not answer in time. A
// freeze comes in two kinds:
//   - a stall holds the call before it reaches the store (a Redis pool
//     wait, a bbolt lock): a call that failed did nothing;
//   - a lost answer lets the store do the work and holds its answer (a
//     Redis reply that comes after the deadline, a bbolt commit the caller
//     stopped waiting for): a call that failed may have taken effect.
//
// The zero Freezer is ready for Use or Wrap, which must come before any
// call.
type Freezer struct {
	held      atomic.Int64 // calls a freeze held
	failures  atomic.Int64 // calls that answered unavailable, frozen or not
	unplanned atomic.Int64 // of which not held by a freeze (a slow disk)
	lastFail  atomic.Int64 // unix nanoseconds of the last of them

	mu   sync.Mutex // guards following
	s    tether.Store
	thaw chan struct{} // closed by Unfreeze; nil while not frozen
	lose bool
}

var _ tether.Store = (*Freezer)(nil)

// Use puts st behind f (a node restarted on a new store).
func (f *Freezer) Use(st tether.Store) {
	f.mu.Lock()
	f.s = st
	f.mu.Unlock()
}

// Freeze stops the store; lose says whether the calls it holds do their
// work first. Freezing a frozen store changes only lose.
func (f *Freezer) Freeze(lose bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thaw == nil {
		f.thaw = make(chan struct{})
	}
	f.lose = lose
}

// Unfreeze releases the calls held and lets new ones through. Idempotent.
func (f *Freezer) Unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thaw != nil {
		close(f.thaw)
		f.thaw = nil
	}
}

// Wrap puts st behind f and returns f: Options.Wrap for a node whose store
// a test freezes, again on every restart.
func (f *Freezer) Wrap(st tether.Store) tether.Store {
	f.Use(st)
	return f
}

// Held returns how many calls a freeze held.
func (f *Freezer) Held() int64 { return f.held.Load() }

// Failures returns how many calls failed for want of an answer (a
// deadline passed, or the store answered unavailable), frozen or not, and
// how many answered only after their deadline (the hub's health check
// takes such an answer for a store that is down); calls cancelled (the
// hub closing, a client gone) are not counted.
func (f *Freezer) Failures() int64 { return f.failures.Load() }

// Unplanned returns how many of the Failures no freeze held: the store
// itself was too slow (a slow disk).
func (f *Freezer) Unplanned() int64 { return f.unplanned.Load() }

// LastFailure returns when the last of the Failures happened; the Unix
// epoch before the first.
func (f *Freezer) LastFailure() time.Time { return time.Unix(0, f.lastFail.Load()) }

// hold runs call on f's store, holding it while f is frozen, and counts
// the calls that fail for want of an answer or answer late (not those
// cancelled: the hub closing, a client gone).
func hold[T any](f *Freezer, ctx context.Context, op string, call func(tether.Store) (T, error)) (T, error) {
	v, held, err := f.run(ctx, op, func(s tether.Store) (any, error) { return call(s) })
	late := err == nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
	failed := err != nil && !errors.Is(err, context.Canceled) &&
		(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, tether.ErrUnavailable))
	if late || failed {
		f.lastFail.Store(time.Now().UnixNano())
		f.failures.Add(1)
		if !held {
			f.unplanned.Add(1)
		}
	}
	t, _ := v.(T)
	return t, err
}

// run runs call, first holding it while f is frozen; held says whether it
// was.
func (f *Freezer) run(ctx context.Context, op string, call func(tether.Store) (any, error)) (v any, held bool, err error) {
	f.mu.Lock()
	s, thaw, lose := f.s, f.thaw, f.lose
	f.mu.Unlock()
	if thaw == nil {
		v, err = call(s)
		return v, false, err
	}
	f.held.Add(1)
	if lose {
		v, err = call(s)
	}
	select {
	case <-thaw:
	case <-ctx.Done():
		return nil, true, fmt.Errorf("frozen store %s: %w: %w", op, tether.ErrUnavailable, ctx.Err())
	}
	if !lose {
		v, err = call(s)
	}
	return v, true, err
}

// Publish is tether.Store.Publish, held while f is frozen.
func (f *Freezer) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	return hold(f, ctx, "publish", func(s tether.Store) ([]tether.PublishResult, error) { return s.Publish(ctx, msgs) })
}

// Join is tether.Store.Join, held while f is frozen.
func (f *Freezer) Join(ctx context.Context, device string, groups []string) error {
	_, err := hold(f, ctx, "join", func(s tether.Store) (any, error) { return nil, s.Join(ctx, device, groups) })
	return err
}

// Leave is tether.Store.Leave, held while f is frozen.
func (f *Freezer) Leave(ctx context.Context, group, device string) error {
	_, err := hold(f, ctx, "leave", func(s tether.Store) (any, error) { return nil, s.Leave(ctx, group, device) })
	return err
}

// Cursors is tether.Store.Cursors, held while f is frozen.
func (f *Freezer) Cursors(ctx context.Context, devices []string) ([][]tether.Cursor, error) {
	return hold(f, ctx, "cursors", func(s tether.Store) ([][]tether.Cursor, error) { return s.Cursors(ctx, devices) })
}

// Read is tether.Store.Read, held while f is frozen.
func (f *Freezer) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	return hold(f, ctx, "read", func(s tether.Store) ([][]tether.Entry, error) { return s.Read(ctx, reqs) })
}

// Commit is tether.Store.Commit, held while f is frozen.
func (f *Freezer) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	return hold(f, ctx, "commit", func(s tether.Store) ([]tether.Committed, error) { return s.Commit(ctx, changes) })
}

// Expire is tether.Store.Expire, held while f is frozen.
func (f *Freezer) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (int, bool, error) {
	type result struct {
		n    int
		more bool
	}
	r, err := hold(f, ctx, "expire", func(s tether.Store) (result, error) {
		n, more, err := s.Expire(ctx, now, purgeBefore, limit)
		return result{n, more}, err
	})
	return r.n, r.more, err
}

// Message is tether.Store.Message, held while f is frozen.
func (f *Freezer) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	return hold(f, ctx, "message", func(s tether.Store) (tether.MessageStatus, error) { return s.Message(ctx, id) })
}

// Device is tether.Store.Device, held while f is frozen.
func (f *Freezer) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	return hold(f, ctx, "device", func(s tether.Store) (tether.DeviceInfo, error) { return s.Device(ctx, id) })
}

// Group is tether.Store.Group, held while f is frozen.
func (f *Freezer) Group(ctx context.Context, id string) (tether.GroupInfo, error) {
	return hold(f, ctx, "group", func(s tether.Store) (tether.GroupInfo, error) { return s.Group(ctx, id) })
}

// Ping is tether.Store.Ping, held while f is frozen.
func (f *Freezer) Ping(ctx context.Context) error {
	_, err := hold(f, ctx, "ping", func(s tether.Store) (any, error) { return nil, s.Ping(ctx) })
	return err
}

// Close closes the store behind f at once, frozen or not.
func (f *Freezer) Close() error {
	f.mu.Lock()
	s := f.s
	f.mu.Unlock()
	return s.Close()
}
