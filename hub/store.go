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

func (st *store) Publish(ctx context.Context, msgs []*tether.Message) (res []tether.PublishResult, err error) {
	err = st.do(ctx, "publish", func(ctx context.Context) error {
		res, err = st.s.Publish(ctx, msgs)
		return err
	})
	return res, err
}

func (st *store) Join(ctx context.Context, device string, groups []string) error {
	return st.do(ctx, "join", func(ctx context.Context) error { return st.s.Join(ctx, device, groups) })
}

func (st *store) Leave(ctx context.Context, group, device string) error {
	return st.do(ctx, "leave", func(ctx context.Context) error { return st.s.Leave(ctx, group, device) })
}

func (st *store) Pending(ctx context.Context, device, after string, limit int, now time.Time) (ds []tether.Delivery, err error) {
	err = st.do(ctx, "pending", func(ctx context.Context) error {
		ds, err = st.s.Pending(ctx, device, after, limit, now)
		return err
	})
	return ds, err
}

func (st *store) Sent(ctx context.Context, device string, ids []string) (attempts []int, err error) {
	err = st.do(ctx, "sent", func(ctx context.Context) error {
		attempts, err = st.s.Sent(ctx, device, ids)
		return err
	})
	return attempts, err
}

func (st *store) Ack(ctx context.Context, device string, ids []string, now time.Time) (n int, err error) {
	err = st.do(ctx, "ack", func(ctx context.Context) error {
		n, err = st.s.Ack(ctx, device, ids, now)
		return err
	})
	return n, err
}

func (st *store) Kill(ctx context.Context, device string, ids []string) (n int, err error) {
	err = st.do(ctx, "kill", func(ctx context.Context) error {
		n, err = st.s.Kill(ctx, device, ids)
		return err
	})
	return n, err
}

func (st *store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (n int, more bool, err error) {
	err = st.do(ctx, "expire", func(ctx context.Context) error {
		n, more, err = st.s.Expire(ctx, now, purgeBefore, limit)
		return err
	})
	return n, more, err
}

func (st *store) Message(ctx context.Context, id string) (ms tether.MessageStatus, err error) {
	err = st.do(ctx, "message", func(ctx context.Context) error {
		ms, err = st.s.Message(ctx, id)
		return err
	})
	return ms, err
}

func (st *store) Device(ctx context.Context, id string) (info tether.DeviceInfo, err error) {
	err = st.do(ctx, "device", func(ctx context.Context) error {
		info, err = st.s.Device(ctx, id)
		return err
	})
	return info, err
}

func (st *store) Group(ctx context.Context, id string) (info tether.GroupInfo, err error) {
	err = st.do(ctx, "group", func(ctx context.Context) error {
		info, err = st.s.Group(ctx, id)
		return err
	})
	return info, err
}

func (st *store) Ping(ctx context.Context) error {
	return st.do(ctx, "ping", st.s.Ping)
}
