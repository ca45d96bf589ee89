package hub

import (
	"context"
	"errors"
	"time"

	"github.com/tetherpush/tether"
)

// store wraps the tether.Store: every call gets the hub's deadline and is
// timed and counted in tether_store_op_seconds / tether_store_errors_total.
type store struct {
	s       tether.Store
	timeout time.Duration
	m       *Metrics
}

func (st *store) do(ctx context.Context, op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	start := time.Now()
	st.m.StoreInflight.Inc()
	err := fn(ctx)
	st.m.StoreInflight.Dec()
	st.m.StoreOp.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, tether.ErrNotFound) {
		st.m.StoreErrors.WithLabelValues(op, errorKind(err)).Inc()
	}
	return err
}

// errorKind is a bounded label value for a store error.
func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, tether.ErrUnavailable):
		return "unavailable"
	}
	if tether.ErrorCode(err) == tether.EInvalid {
		return "invalid"
	}
	return "internal"
}

// Publish is tether.Store.Publish under the hub's timeout, timed and counted as
// op "publish".
func (st *store) Publish(ctx context.Context, msgs []*tether.Message) (res []tether.PublishResult, err error) {
	err = st.do(ctx, "publish", func(ctx context.Context) error {
		res, err = st.s.Publish(ctx, msgs)
		return err
	})
	return res, err
}

// Join is tether.Store.Join under the hub's timeout, timed and counted as
// op "join".
func (st *store) Join(ctx context.Context, device string, groups []string) error {
	return st.do(ctx, "join", func(ctx context.Context) error { return st.s.Join(ctx, device, groups) })
}

// Leave is tether.Store.Leave under the hub's timeout, timed and counted as
// op "leave".
func (st *store) Leave(ctx context.Context, group, device string) error {
	return st.do(ctx, "leave", func(ctx context.Context) error { return st.s.Leave(ctx, group, device) })
}

// Cursors is tether.Store.Cursors under the hub's timeout, timed and counted as
// op "cursors".
func (st *store) Cursors(ctx context.Context, devices []string) (cs [][]tether.Cursor, err error) {
	err = st.do(ctx, "cursors", func(ctx context.Context) error {
		cs, err = st.s.Cursors(ctx, devices)
		return err
	})
	return cs, err
}

// Read is tether.Store.Read under the hub's timeout, timed and counted as
// op "read".
func (st *store) Read(ctx context.Context, reqs []tether.ReadRequest) (es [][]tether.Entry, err error) {
	err = st.do(ctx, "read", func(ctx context.Context) error {
		es, err = st.s.Read(ctx, reqs)
		return err
	})
	return es, err
}

// Commit is tether.Store.Commit under the hub's timeout, timed and counted as
// op "commit".
func (st *store) Commit(ctx context.Context, changes []tether.Change) (res []tether.Committed, err error) {
	err = st.do(ctx, "commit", func(ctx context.Context) error {
		res, err = st.s.Commit(ctx, changes)
		return err
	})
	return res, err
}

// Expire is tether.Store.Expire under the hub's timeout, timed and counted as
// op "expire".
func (st *store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (n int, more bool, err error) {
	err = st.do(ctx, "expire", func(ctx context.Context) error {
		n, more, err = st.s.Expire(ctx, now, purgeBefore, limit)
		return err
	})
	return n, more, err
}

// Message is tether.Store.Message under the hub's timeout, timed and counted as
// op "message".
func (st *store) Message(ctx context.Context, id string) (ms tether.MessageStatus, err error) {
	err = st.do(ctx, "message", func(ctx context.Context) error {
		ms, err = st.s.Message(ctx, id)
		return err
	})
	return ms, err
}

// Device is tether.Store.Device under the hub's timeout, timed and counted as
// op "device".
func (st *store) Device(ctx context.Context, id string) (info tether.DeviceInfo, err error) {
	err = st.do(ctx, "device", func(ctx context.Context) error {
		info, err = st.s.Device(ctx, id)
		return err
	})
	return info, err
}

// Group is tether.Store.Group under the hub's timeout, timed and counted as
// op "group".
func (st *store) Group(ctx context.Context, id string) (info tether.GroupInfo, err error) {
	err = st.do(ctx, "group", func(ctx context.Context) error {
		info, err = st.s.Group(ctx, id)
		return err
	})
	return info, err
}

// Ping is tether.Store.Ping under the hub's timeout, timed and counted as
// op "ping".
func (st *store) Ping(ctx context.Context) error {
	return st.do(ctx, "ping", st.s.Ping)
}
