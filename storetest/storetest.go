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
//
// What a device is owed is read the way the hub reads it: its cursors
// (Store.Cursors), then each cursor's log after its floor (Store.Read),
// keeping the positions addressed to it and not settled.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
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
		{"PublishGroupOnce", testPublishGroupOnce},
		{"PublishEmptyGroup", testPublishEmptyGroup},
		{"PublishBatch", testPublishBatch},
		{"LogOrder", testLogOrder},
		{"Read", testRead},
		{"RetriedID", testRetriedID},
		{"MembersAtPublishTime", testMembersAtPublishTime},
		{"LeaveStillOwed", testLeaveStillOwed},
		{"Rejoin", testRejoin},
		{"Cursors", testCursors},
		{"Ack", testAck},
		{"AckOutOfOrder", testAckOutOfOrder},
		{"AckIDs", testAckIDs},
		{"Sent", testSent},
		{"Dead", testDead},
		{"History", testHistory},
		{"Expire", testExpire},
		{"ExpireGroup", testExpireGroup},
		{"ExpireLimit", testExpireLimit},
		{"PurgeKeepsStatus", testPurgeKeepsStatus},
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
		{"DeliveryEvents", testDeliveryEvents},
		{"AckIDEvents", testAckIDEvents},
		{"ExpireEvents", testExpireEvents},
		{"Cancel", testCancel},
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

	mu  sync.Mutex          // guards following
	pos map[string]position // message id → where the store put it
}

// position is where a published message lives.
type position struct {
	source tether.Target
	seq    uint64
}

func newEnv(t *testing.T, s tether.Store) *env {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return &env{t: t, s: s, ctx: ctx, ids: &idGen{prefix: "01JT"}, pos: map[string]position{}}
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

// publish publishes msgs in one call and remembers where each new one went.
func (e *env) publish(msgs ...*tether.Message) []tether.PublishResult {
	e.t.Helper()
	res, err := e.s.Publish(e.ctx, msgs)
	if err != nil {
		e.t.Fatalf("Publish(%d messages): %v", len(msgs), err)
	}
	if len(res) != len(msgs) {
		e.t.Fatalf("Publish(%d messages) returned %d results, want one per message", len(msgs), len(res))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range res {
		if !r.Duplicate {
			e.pos[r.ID] = position{msgs[i].Target, r.Seq}
		}
	}
	return res
}

// where returns the log and position of published message id.
func (e *env) where(id string) position {
	e.t.Helper()
	e.mu.Lock()
	p, ok := e.pos[id]
	e.mu.Unlock()
	if !ok {
		e.t.Fatalf("message %s was not published by this test", id)
	}
	return p
}

// publishOne publishes m and checks that it is new, at position seq of its
// log, for recipients devices.
func (e *env) publishOne(m *tether.Message, seq uint64, recipients int) {
	e.t.Helper()
	r := e.publish(m)[0]
	checkResult(e.t, m.ID, r, tether.PublishResult{ID: m.ID, Seq: seq, Recipients: recipients})
}

// publishTo publishes n messages to target, one call each, and returns
// their ids.
func (e *env) publishTo(target tether.Target, n int) []string {
	e.t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		m := e.msg(target)
		e.publish(m)
		out = append(out, m.ID)
	}
	return out
}

func checkResult(t *testing.T, what string, got, want tether.PublishResult) {
	t.Helper()
	if got != want {
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

// cursors returns device's cursors.
func (e *env) cursors(device string) []tether.Cursor {
	e.t.Helper()
	cs, err := e.s.Cursors(e.ctx, []string{device})
	if err != nil {
		e.t.Fatalf("Cursors(%s): %v", device, err)
	}
	if len(cs) != 1 {
		e.t.Fatalf("Cursors(%s) answered %d lists, want 1", device, len(cs))
	}
	if len(cs[0]) == 0 || cs[0][0].Source != dev(device) {
		e.t.Fatalf("Cursors(%s) = %+v: want the device's own log first", device, cs[0])
	}
	return cs[0]
}

// read returns the entries of source after after.
func (e *env) read(source tether.Target, after uint64, limit int) []tether.Entry {
	e.t.Helper()
	res, err := e.s.Read(e.ctx, []tether.ReadRequest{{Source: source, After: after, Limit: limit}})
	if err != nil {
		e.t.Fatalf("Read(%s after %d, limit %d): %v", source, after, limit, err)
	}
	if len(res) != 1 {
		e.t.Fatalf("Read answered %d lists for 1 request", len(res))
	}
	return res[0]
}

// owed returns what device is owed at now, as the hub would find it: for
// each cursor, the entries after its floor addressed to the device, not
// settled and not expired. Ids are sorted (publish order).
func (e *env) owed(device string, now time.Time) []*tether.Message {
	e.t.Helper()
	var out []*tether.Message
	for _, c := range e.cursors(device) {
		for _, en := range e.read(c.Source, c.Floor, 100_000) {
			if c.Addressed(en.Seq) && !c.IsSettled(en.Seq) && en.Message.ExpiresAt.After(now) {
				out = append(out, en.Message)
			}
		}
	}
	slices.SortFunc(out, func(a, b *tether.Message) int { return cmpString(a.ID, b.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkOwed checks that device is owed exactly the messages ids at t0.
func (e *env) checkOwed(device string, ids ...string) []*tether.Message {
	e.t.Helper()
	ms := e.owed(device, t0)
	got := make([]string, len(ms))
	for i, m := range ms {
		got[i] = m.ID
	}
	if ids == nil {
		ids = []string{}
	}
	if !slices.Equal(got, ids) {
		e.t.Errorf("%s is owed %q, want %q", device, got, ids)
	}
	return ms
}

// commit commits changes and checks one answer per change.
func (e *env) commit(changes ...tether.Change) []tether.Committed {
	e.t.Helper()
	out, err := e.s.Commit(e.ctx, changes)
	if err != nil {
		e.t.Fatalf("Commit(%d changes): %v", len(changes), err)
	}
	if len(out) != len(changes) {
		e.t.Fatalf("Commit(%d changes) answered %d", len(changes), len(out))
	}
	return out
}

// marks returns marks of state with attempts for the published ids.
func (e *env) marks(state tether.DeliveryState, attempts int, ids ...string) []tether.Mark {
	e.t.Helper()
	out := make([]tether.Mark, len(ids))
	for i, id := range ids {
		p := e.where(id)
		out[i] = tether.Mark{Source: p.source, Seq: p.seq, State: state, Attempts: attempts}
	}
	return out
}

// settle commits device's marks of state (after one attempt) at at and
// returns the outcome.
func (e *env) settle(device string, state tether.DeliveryState, at time.Time, ids ...string) tether.Outcome {
	e.t.Helper()
	return e.commit(tether.Change{Device: device, At: at, Marks: e.marks(state, 1, ids...)})[0].Outcome
}

// sent records a send of each id after attempts.
func (e *env) sent(device string, attempts int, ids ...string) {
	e.t.Helper()
	e.commit(tether.Change{Device: device, At: t0, Marks: e.marks(tether.StateInflight, attempts, ids...)})
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
	if string(got.Data) != string(want.Data) {
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
