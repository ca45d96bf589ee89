// Package storetest is the conformance suite every tether.Store backend
// runs: the embedded store on every go test, Redis against a real server.
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) tether.Store { return mustOpen(t) })
//	}
//
// Each subtest opens a fresh, empty store and closes it when it ends. The
// suite makes message ids with a zero-padded counter: a store may assume no
// format except that string order is publish order.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// callTimeout bounds every store call of the suite: a call that hangs fails
// its subtest instead of the whole run.
const callTimeout = 20 * time.Second

// Run runs the conformance suite, one subtest per behaviour. open returns a
// fresh, empty store; the suite closes it at the end of the subtest (Close
// is idempotent, so open may also register its own cleanup).
func Run(t *testing.T, open func(t *testing.T) tether.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Ping", testPing},
		{"PublishDevice", testPublishDevice},
		{"PublishGroupFanOut", testPublishGroupFanOut},
		{"PublishEmptyGroup", testPublishEmptyGroup},
		{"PublishBatch", testPublishBatch},
		{"PendingOrder", testPendingOrder},
		{"PendingCursor", testPendingCursor},
		{"PendingHidesExpired", testPendingHidesExpired},
		{"Sent", testSent},
		{"Ack", testAck},
		{"Kill", testKill},
		{"Expire", testExpire},
		{"ExpireLimit", testExpireLimit},
		{"IdempotentPublish", testIdempotentPublish},
		{"IdempotentAfterExpiry", testIdempotentAfterExpiry},
		{"MessageStatus", testMessageStatus},
		{"MessageNotFound", testMessageNotFound},
		{"Device", testDevice},
		{"Group", testGroup},
		{"Leave", testLeave},
		{"InvalidArguments", testInvalidArguments},
		{"ExpiredContext", testExpiredContext},
		{"Closed", testClosed},
		{"CloseWhileBusy", testCloseWhileBusy},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, newEnv(t, s))
		})
	}
}

// t0 is the suite's clock origin: millisecond precision, as on the wire.
var t0 = time.Date(2026, 11, 24, 10, 0, 0, 123_000_000, time.UTC)

// env is one subtest's store with helpers that fail the test on error.
type env struct {
	t   *testing.T
	s   tether.Store
	ctx context.Context
	ids *idGen
}

func newEnv(t *testing.T, s tether.Store) *env {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return &env{t: t, s: s, ctx: ctx, ids: &idGen{prefix: "01JT"}}
}

// idGen yields sortable message ids: prefix and a zero-padded counter.
// Safe for concurrent use.
type idGen struct {
	prefix string
	n      atomic.Int64
}

func (g *idGen) next() string {
	return fmt.Sprintf("%s%010d", g.prefix, g.n.Add(1))
}

// msg returns a new message for target with the next id, published at t0
// and expiring an hour later.
func (e *env) msg(target tether.Target) *tether.Message {
	id := e.ids.next()
	return &tether.Message{
		ID:          id,
		Target:      target,
		Data:        json.RawMessage(fmt.Sprintf(`{"id":%q}`, id)),
		PublishedAt: t0,
		ExpiresAt:   t0.Add(time.Hour),
	}
}

func dev(id string) tether.Target   { return tether.DeviceTarget(id) }
func group(id string) tether.Target { return tether.GroupTarget(id) }

func (e *env) publish(msgs ...*tether.Message) []tether.PublishResult {
	e.t.Helper()
	res, err := e.s.Publish(e.ctx, msgs)
	if err != nil {
		e.t.Fatalf("Publish(%d messages): %v", len(msgs), err)
	}
	if len(res) != len(msgs) {
		e.t.Fatalf("Publish(%d messages) returned %d results, want one per message", len(msgs), len(res))
	}
	return res
}

// publishOne publishes m and checks that it is new and addressed to
// devices.
func (e *env) publishOne(m *tether.Message, devices ...string) {
	e.t.Helper()
	r := e.publish(m)[0]
	checkResult(e.t, m.ID, r, tether.PublishResult{ID: m.ID, Recipients: len(devices), Devices: devices})
}

func checkResult(t *testing.T, what string, got, want tether.PublishResult) {
	t.Helper()
	if got.ID != want.ID || got.Recipients != want.Recipients || got.Duplicate != want.Duplicate ||
		!slices.Equal(got.Devices, want.Devices) {
		t.Errorf("publish %s: result %+v, want %+v", what, got, want)
	}
}

func (e *env) join(device string, groups ...string) {
	e.t.Helper()
	if err := e.s.Join(e.ctx, device, groups); err != nil {
		e.t.Fatalf("Join(%s, %v): %v", device, groups, err)
	}
}

func (e *env) leave(group, device string) {
	e.t.Helper()
	if err := e.s.Leave(e.ctx, group, device); err != nil {
		e.t.Fatalf("Leave(%s, %s): %v", group, device, err)
	}
}

func (e *env) pending(device, after string, limit int, now time.Time) []tether.Delivery {
	e.t.Helper()
	ds, err := e.s.Pending(e.ctx, device, after, limit, now)
	if err != nil {
		e.t.Fatalf("Pending(%s, after %q, limit %d): %v", device, after, limit, err)
	}
	return ds
}

// checkPending checks that device's pending ids at t0 are want, in order.
func (e *env) checkPending(device string, want ...string) []tether.Delivery {
	e.t.Helper()
	ds := e.pending(device, "", 1000, t0)
	if got := ids(ds); !slices.Equal(got, want) {
		e.t.Errorf("Pending(%s) = %q, want %q", device, got, want)
	}
	return ds
}

func (e *env) sent(device string, ids ...string) []int {
	e.t.Helper()
	n, err := e.s.Sent(e.ctx, device, ids)
	if err != nil {
		e.t.Fatalf("Sent(%s, %q): %v", device, ids, err)
	}
	if len(n) != len(ids) {
		e.t.Fatalf("Sent(%s, %q) = %v: want one attempt count per id", device, ids, n)
	}
	return n
}

func (e *env) checkSent(device string, ids []string, want ...int) {
	e.t.Helper()
	if got := e.sent(device, ids...); !slices.Equal(got, want) {
		e.t.Errorf("Sent(%s, %q) = %v, want %v", device, ids, got, want)
	}
}

func (e *env) checkAck(device string, ids []string, now time.Time, want int) {
	e.t.Helper()
	n, err := e.s.Ack(e.ctx, device, ids, now)
	if err != nil {
		e.t.Fatalf("Ack(%s, %q): %v", device, ids, err)
	}
	if n != want {
		e.t.Errorf("Ack(%s, %q) = %d, want %d", device, ids, n, want)
	}
}

func (e *env) checkKill(device string, ids []string, want int) {
	e.t.Helper()
	n, err := e.s.Kill(e.ctx, device, ids)
	if err != nil {
		e.t.Fatalf("Kill(%s, %q): %v", device, ids, err)
	}
	if n != want {
		e.t.Errorf("Kill(%s, %q) = %d, want %d", device, ids, n, want)
	}
}

func (e *env) expire(now, purgeBefore time.Time, limit int) (int, bool) {
	e.t.Helper()
	n, more, err := e.s.Expire(e.ctx, now, purgeBefore, limit)
	if err != nil {
		e.t.Fatalf("Expire(now %v, purge before %v, limit %d): %v", now, purgeBefore, limit, err)
	}
	return n, more
}

func (e *env) checkExpire(now, purgeBefore time.Time, limit, wantN int, wantMore bool) {
	e.t.Helper()
	n, more := e.expire(now, purgeBefore, limit)
	if n != wantN || more != wantMore {
		e.t.Errorf("Expire(now t0+%v, purge before t0+%v, limit %d) = %d, %v; want %d, %v",
			now.Sub(t0), purgeBefore.Sub(t0), limit, n, more, wantN, wantMore)
	}
}

func (e *env) message(id string) tether.MessageStatus {
	e.t.Helper()
	st, err := e.s.Message(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Message(%s): %v", id, err)
	}
	return st
}

// checkNotFound checks that message id is unknown.
func (e *env) checkNotFound(id string) {
	e.t.Helper()
	if _, err := e.s.Message(e.ctx, id); !errors.Is(err, tether.ErrNotFound) {
		e.t.Errorf("Message(%s) error = %v, want ErrNotFound", id, err)
	}
}

// want is one expected delivery of a MessageStatus.
type want struct {
	device   string
	state    tether.DeliveryState
	attempts int
	ackedAt  time.Time
}

// checkDeliveries checks the deliveries of message id, in order.
func (e *env) checkDeliveries(id string, wants ...want) {
	e.t.Helper()
	st := e.message(id)
	if len(st.Deliveries) != len(wants) {
		e.t.Errorf("Message(%s) has %d deliveries %+v, want %d", id, len(st.Deliveries), st.Deliveries, len(wants))
		return
	}
	for i, w := range wants {
		d := st.Deliveries[i]
		if d.Device != w.device || d.State != w.state || d.Attempts != w.attempts || !d.AckedAt.Equal(w.ackedAt) {
			e.t.Errorf("Message(%s) delivery %d = {%s %s attempts %d acked %v}, want {%s %s attempts %d acked %v}",
				id, i, d.Device, d.State, d.Attempts, d.AckedAt, w.device, w.state, w.attempts, w.ackedAt)
		}
		if d.Message != nil {
			e.t.Errorf("Message(%s) delivery %d carries a Message; want nil in MessageStatus", id, i)
		}
	}
}

func (e *env) device(id string) tether.DeviceInfo {
	e.t.Helper()
	info, err := e.s.Device(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Device(%s): %v", id, err)
	}
	if info.ID != id {
		e.t.Errorf("Device(%s).ID = %q", id, info.ID)
	}
	return info
}

func (e *env) checkDevice(id string, pending int, groups ...string) {
	e.t.Helper()
	info := e.device(id)
	if !slices.Equal(info.Groups, groups) {
		e.t.Errorf("Device(%s).Groups = %q, want %q", id, info.Groups, groups)
	}
	if info.Pending != pending {
		e.t.Errorf("Device(%s).Pending = %d, want %d", id, info.Pending, pending)
	}
	if info.Presence != (tether.Presence{}) {
		e.t.Errorf("Device(%s).Presence = %+v, want zero (the store does not know presence)", id, info.Presence)
	}
}

func (e *env) checkGroup(id string, members ...string) {
	e.t.Helper()
	info, err := e.s.Group(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Group(%s): %v", id, err)
	}
	if info.ID != id {
		e.t.Errorf("Group(%s).ID = %q", id, info.ID)
	}
	var got []string
	for _, m := range info.Devices {
		got = append(got, m.ID)
		if m.Online {
			e.t.Errorf("Group(%s) member %s Online = true, want false (the store does not know presence)", id, m.ID)
		}
	}
	if !slices.Equal(got, members) {
		e.t.Errorf("Group(%s) members = %q, want %q", id, got, members)
	}
}

// ids returns the message ids of ds.
func ids(ds []tether.Delivery) []string {
	out := []string{}
	for _, d := range ds {
		if d.Message == nil {
			out = append(out, "<nil Message>")
			continue
		}
		out = append(out, d.Message.ID)
	}
	return out
}

// checkMessage checks that a stored message equals the published one.
func checkMessage(t *testing.T, got *tether.Message, want *tether.Message) {
	t.Helper()
	if got == nil {
		t.Errorf("message %s: got nil Message", want.ID)
		return
	}
	if got.ID != want.ID || got.Target != want.Target || got.ClientID != want.ClientID {
		t.Errorf("message: got id %q target %v client id %q, want %q %v %q",
			got.ID, got.Target, got.ClientID, want.ID, want.Target, want.ClientID)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("message %s: data %q, want %q", want.ID, got.Data, want.Data)
	}
	if !got.PublishedAt.Equal(want.PublishedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("message %s: published %v expires %v, want %v %v",
			want.ID, got.PublishedAt, got.ExpiresAt, want.PublishedAt, want.ExpiresAt)
	}
}

// within runs call and fails t if it does not return within d.
func within(t *testing.T, d time.Duration, name string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", name, d)
		return nil
	}
}
