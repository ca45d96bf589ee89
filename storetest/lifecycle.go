package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// call is one store method with valid arguments.
type call struct {
	name string
	fn   func(ctx context.Context) error
}

// everyMethod returns one call of each method but Close, about device d,
// group g and message id.
func everyMethod(e *env, id string) []call {
	s := e.s
	return []call{
		{"Publish", func(ctx context.Context) error {
			_, err := s.Publish(ctx, []*tether.Message{e.msg(dev("d"))})
			return err
		}},
		{"Join", func(ctx context.Context) error { return s.Join(ctx, "d", []string{"g"}) }},
		{"Leave", func(ctx context.Context) error { return s.Leave(ctx, "g", "d") }},
		{"Cursors", func(ctx context.Context) error { _, err := s.Cursors(ctx, []string{"d"}); return err }},
		{"Read", func(ctx context.Context) error {
			_, err := s.Read(ctx, []tether.ReadRequest{{Source: dev("d"), Limit: 10}})
			return err
		}},
		{"Commit", func(ctx context.Context) error {
			_, err := s.Commit(ctx, []tether.Change{{Device: "d", At: t0, AckIDs: []string{id}}})
			return err
		}},
		{"Expire", func(ctx context.Context) error { _, _, err := s.Expire(ctx, t0.Add(2*time.Hour), t0, 10); return err }},
		{"Message", func(ctx context.Context) error { _, err := s.Message(ctx, id); return err }},
		{"Device", func(ctx context.Context) error { _, err := s.Device(ctx, "d"); return err }},
		{"Group", func(ctx context.Context) error { _, err := s.Group(ctx, "g"); return err }},
		{"Ping", func(ctx context.Context) error { return s.Ping(ctx) }},
	}
}

// testExpiredContext: every method returns the deadline error at once for
// a context whose deadline has passed.
func testExpiredContext(t *testing.T, e *env) {
	e.join("d", "g")
	id := e.publishTo(dev("d"), 1)[0]
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Minute))
	defer cancel()
	for _, c := range everyMethod(e, id) {
		err := within(t, 5*time.Second, c.name, func() error { return c.fn(ctx) })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with an expired context: error %v, want one wrapping context.DeadlineExceeded", c.name, err)
		}
	}
}

// testClosed: Close is idempotent and every method afterwards returns an
// error wrapping ErrClosed.
func testClosed(t *testing.T, e *env) {
	e.join("d", "g")
	id := e.publishTo(dev("d"), 1)[0]
	if err := within(t, 10*time.Second, "Close", e.s.Close); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := within(t, 10*time.Second, "second Close", e.s.Close); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	for _, c := range everyMethod(e, id) {
		err := within(t, 5*time.Second, c.name, func() error { return c.fn(e.ctx) })
		if !errors.Is(err, tether.ErrClosed) {
			t.Errorf("%s after Close: error %v, want one wrapping ErrClosed", c.name, err)
		}
	}
}

// testCloseWhileBusy: calls racing with Close either succeed or fail with
// ErrClosed; none hangs, and every caller meets the closed store.
func testCloseWhileBusy(t *testing.T, e *env) {
	e.join("d", "g")
	id := e.publishTo(dev("d"), 1)[0]
	calls := everyMethod(e, id)
	var (
		wg   sync.WaitGroup
		done atomic.Int64
	)
	errs := make(chan error, 64)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i++ {
				c := calls[i%len(calls)]
				err := c.fn(e.ctx)
				if errors.Is(err, tether.ErrClosed) {
					return
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("%s while closing: %w", c.name, err):
					default:
					}
					return
				}
				done.Add(1)
			}
		}(w)
	}
	for deadline := time.Now().Add(10 * time.Second); done.Load() < 16; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("callers made %d calls in 10s", done.Load())
		}
	}
	if err := within(t, 10*time.Second, "Close", e.s.Close); err != nil {
		t.Errorf("Close while busy: %v", err)
	}
	within(t, 10*time.Second, "callers after Close", func() error { wg.Wait(); return nil })
	close(errs)
	for err := range errs {
		t.Errorf("want nil or ErrClosed: %v", err)
	}
}

// testConcurrent: many goroutines publish to their own device and to a
// shared group while others pull, send and ack; nothing is lost or acked
// twice.
func testConcurrent(t *testing.T, e *env) {
	const (
		devices   = 8
		perDevice = 15 // device messages each publisher sends
		perGroup  = 4  // group messages each publisher sends
		perInbox  = perDevice + devices*perGroup
	)
	for d := 0; d < devices; d++ {
		e.join(fmt.Sprintf("dev-%d", d), "all")
	}
	var next atomic.Int64
	newMsg := func(target tether.Target) *tether.Message {
		id := fmt.Sprintf("01JT%010d", next.Add(1))
		return &tether.Message{ID: id, Target: target, Data: []byte(`{}`), PublishedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	}
	var pubs, drains sync.WaitGroup
	errs := make(chan error, 2*devices)
	published := make(chan struct{}) // closed when every publisher is done
	var acked atomic.Int64
	for d := 0; d < devices; d++ {
		device := fmt.Sprintf("dev-%d", d)
		pubs.Add(1)
		drains.Add(1)
		go func() {
			defer pubs.Done()
			errs <- publishAll(e, device, perDevice, perGroup, devices, newMsg)
		}()
		go func() {
			defer drains.Done()
			n, err := drain(e, device, published)
			acked.Add(int64(n))
			errs <- err
		}()
	}
	pubs.Wait()
	close(published)
	drains.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got, want := acked.Load(), int64(devices*perInbox); got != want {
		t.Errorf("acks counted %d deliveries in all, want %d", got, want)
	}
	for d := 0; d < devices; d++ {
		e.checkOwed(fmt.Sprintf("dev-%d", d))
	}
}

// publishAll publishes perDevice messages to device and perGroup to group
// all (of members devices), one call each, and checks every result.
func publishAll(e *env, device string, perDevice, perGroup, members int, newMsg func(tether.Target) *tether.Message) error {
	for i := 0; i < perDevice+perGroup; i++ {
		m, want := newMsg(dev(device)), 1
		if i%2 == 1 && i < 2*perGroup {
			m, want = newMsg(group("all")), members
		}
		res, err := e.s.Publish(e.ctx, []*tether.Message{m})
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.ID, err)
		}
		if len(res) != 1 || res[0].ID != m.ID || res[0].Recipients != want || res[0].Duplicate {
			return fmt.Errorf("publish %s: result %+v, want id %s, %d recipients", m.ID, res, m.ID, want)
		}
	}
	return nil
}

// drain reads device's logs after its floors, records the sends and acks
// them, until the publishers are done and nothing is owed; it returns the
// acks counted.
func drain(e *env, device string, published <-chan struct{}) (int, error) {
	total := 0
	seen := map[string]bool{}
	for {
		done := false
		select {
		case <-published:
			done = true // what the logs hold from now on is all there is
		default:
		}
		marks, err := owedMarks(e, device, seen)
		if err != nil {
			return total, err
		}
		if len(marks) == 0 {
			if done {
				return total, nil
			}
			time.Sleep(time.Millisecond)
			continue
		}
		sent := make([]tether.Mark, len(marks))
		for i, m := range marks {
			sent[i] = m
			sent[i].State, sent[i].Attempts = tether.StateInflight, 1
		}
		if _, err := e.s.Commit(e.ctx, []tether.Change{{Device: device, At: t0, Marks: sent}}); err != nil {
			return total, fmt.Errorf("commit sends of %s: %w", device, err)
		}
		res, err := e.s.Commit(e.ctx, []tether.Change{{Device: device, At: t0, Marks: marks}})
		if err != nil {
			return total, fmt.Errorf("commit acks of %s: %w", device, err)
		}
		if n := res[0].Acked; n != len(marks) {
			return total, fmt.Errorf("ack %s of %d owed messages counted %d", device, len(marks), n)
		}
		total += len(marks)
	}
}

// owedMarks returns acked marks for up to 50 messages device is owed, and
// fails when one of them was acked before (in seen).
func owedMarks(e *env, device string, seen map[string]bool) ([]tether.Mark, error) {
	cs, err := e.s.Cursors(e.ctx, []string{device})
	if err != nil {
		return nil, fmt.Errorf("cursors of %s: %w", device, err)
	}
	var marks []tether.Mark
	for _, c := range cs[0] {
		res, err := e.s.Read(e.ctx, []tether.ReadRequest{{Source: c.Source, After: c.Floor, Limit: 50}})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", c.Source, err)
		}
		for _, en := range res[0] {
			if !c.Addressed(en.Seq) || c.IsSettled(en.Seq) {
				continue
			}
			if seen[en.Message.ID] {
				return nil, fmt.Errorf("%s: %s owed again after its ack", device, en.Message.ID)
			}
			seen[en.Message.ID] = true
			marks = append(marks, tether.Mark{Source: c.Source, Seq: en.Seq, State: tether.StateAcked, Attempts: 1})
		}
	}
	return marks, nil
}
