package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// RunEvents runs the conformance suite of tether.EventStore (SPEC section
// 11), one subtest per behaviour: the event log and the webhook sender's
// lease. open returns a fresh, empty event log; it registers its own
// cleanup. Subtests run one after another; lease subtests use leases of a
// few hundred milliseconds and take up to a second each.
//
//	func TestEvents(t *testing.T) {
//		storetest.RunEvents(t, func(t *testing.T) tether.EventStore { return mustOpen(t) })
//	}
//
// Event IDs must sort as the log does in plain string order (backends
// compare them; zero-pad counters, and note that Redis stream IDs as
// written by XADD do not: "5-10" < "5-9"), and are never reused, trimmed
// or not. The suite passes back only IDs the store made, or "". Trim is
// tested with events appended at their At, so that a store may compare
// either.
func RunEvents(t *testing.T, open func(t *testing.T) tether.EventStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *eventEnv)
	}{
		{"Empty", testEventsEmpty},
		{"AppendIDs", testAppendIDs},
		{"AppendConcurrent", testAppendConcurrent},
		{"Fields", testEventFields},
		{"Cursor", testEventsCursor},
		{"CursorLargeAppend", testEventsCursorLargeAppend},
		{"Trim", testTrim},
		{"TrimAll", testTrimAll},
		{"LeaseTake", testLeaseTake},
		{"LeaseRenew", testLeaseRenew},
		{"LeaseExpire", testLeaseExpire},
		{"LeaseShorten", testLeaseShorten},
		{"SentFencing", testSentFencing},
		{"SentProgress", testSentProgress},
		{"CanceledContext", testEventsCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			t.Cleanup(cancel)
			tt.fn(t, &eventEnv{t: t, s: open(t), ctx: ctx})
		})
	}
}

// eventEnv is one subtest's event log with helpers that fail the test on
// error.
type eventEnv struct {
	t   *testing.T
	s   tether.EventStore
	ctx context.Context
}

// presence returns n device.online events of devices pos-<from>…, at at.
func presence(from, n int, at time.Time) []tether.LogEvent {
	out := make([]tether.LogEvent, n)
	for i := range out {
		out[i] = tether.LogEvent{Type: tether.EventOnline, At: at, Device: fmt.Sprintf("pos-%d", from+i), Node: "n1"}
	}
	return out
}

// appendNow appends n presence events at the current time (millisecond
// precision) and returns them with their IDs.
func (e *eventEnv) appendNow(from, n int) []tether.LogEvent {
	e.t.Helper()
	evs := presence(from, n, time.Now().Truncate(time.Millisecond))
	e.append(evs)
	return evs
}

func (e *eventEnv) append(evs []tether.LogEvent) {
	e.t.Helper()
	if err := e.s.Append(e.ctx, evs); err != nil {
		e.t.Fatalf("Append(%d events): %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.ID == "" {
			e.t.Fatalf("Append left event %d without an ID", i)
		}
	}
}

func (e *eventEnv) events(after string, limit int) []tether.LogEvent {
	e.t.Helper()
	evs, err := e.s.Events(e.ctx, after, limit)
	if err != nil {
		e.t.Fatalf("Events(%q, %d): %v", after, limit, err)
	}
	if len(evs) > limit {
		e.t.Fatalf("Events(%q, %d) returned %d events", after, limit, len(evs))
	}
	if len(evs) > 0 && evs[0].ID <= after {
		e.t.Fatalf("Events(%q, %d) returned event %q, not after the cursor", after, limit, evs[0].ID)
	}
	checkOrdered(e.t, fmt.Sprintf("Events(%q, %d)", after, limit), evs)
	return evs
}

// checkEvents checks that Events(after, limit) returns want, compared by
// ID and content.
func (e *eventEnv) checkEvents(after string, limit int, want []tether.LogEvent) {
	e.t.Helper()
	got := e.events(after, limit)
	if len(got) != len(want) {
		e.t.Fatalf("Events(%q, %d) = %d events %v, want %d %v", after, limit, len(got), ids(got), len(want), ids(want))
	}
	for i := range want {
		checkEvent(e.t, got[i], want[i])
	}
}

func checkEvent(t *testing.T, got, want tether.LogEvent) {
	t.Helper()
	if !got.At.Equal(want.At) {
		t.Errorf("event %s at %v, want %v", want.ID, got.At, want.At)
	}
	got.At = want.At
	if got != want {
		t.Errorf("event = %+v, want %+v", got, want)
	}
}

func ids(evs []tether.LogEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// checkOrdered fails unless the IDs of evs are strictly increasing.
func checkOrdered(t *testing.T, what string, evs []tether.LogEvent) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i-1].ID >= evs[i].ID {
			t.Fatalf("%s: ID %q at %d is not after %q", what, evs[i].ID, i, evs[i-1].ID)
		}
	}
}

func (e *eventEnv) lease(holder string, ttl time.Duration) (bool, string) {
	e.t.Helper()
	held, sent, err := e.s.Lease(e.ctx, holder, ttl)
	if err != nil {
		e.t.Fatalf("Lease(%s, %v): %v", holder, ttl, err)
	}
	return held, sent
}

// checkLease checks that Lease(holder, ttl) answers held and, when held,
// sent.
func (e *eventEnv) checkLease(holder string, ttl time.Duration, wantHeld bool, wantSent string) {
	e.t.Helper()
	held, sent := e.lease(holder, ttl)
	if held != wantHeld || (held && sent != wantSent) {
		e.t.Fatalf("Lease(%s, %v) = %v, %q; want %v, %q", holder, ttl, held, sent, wantHeld, wantSent)
	}
}

// waitLease calls Lease(holder, ttl) until holder has the lease, for at
// most within; it returns what Lease answered as sent.
func (e *eventEnv) waitLease(holder string, ttl, within time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if held, sent := e.lease(holder, ttl); held {
			return sent
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s did not get the lease within %v", holder, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *eventEnv) sent(holder, id string) {
	e.t.Helper()
	if err := e.s.Sent(e.ctx, holder, id); err != nil {
		e.t.Fatalf("Sent(%s, %s): %v", holder, id, err)
	}
}

func (e *eventEnv) checkSentLost(holder, id string) {
	e.t.Helper()
	if err := e.s.Sent(e.ctx, holder, id); !errors.Is(err, tether.ErrLeaseLost) {
		e.t.Fatalf("Sent(%s, %s) = %v, want ErrLeaseLost", holder, id, err)
	}
}

func testEventsEmpty(t *testing.T, e *eventEnv) {
	e.checkEvents("", 10, nil)
	e.checkLease("a", time.Minute, true, "")
}

func testAppendIDs(t *testing.T, e *eventEnv) {
	first := e.appendNow(0, 3)
	second := e.appendNow(3, 2)
	all := append(append([]tether.LogEvent{}, first...), second...)
	checkOrdered(t, "two Append calls", all)
	e.checkEvents("", 100, all)
	e.append(nil) // nothing to add: not an error
	e.checkEvents("", 100, all)
}

func testAppendConcurrent(t *testing.T, e *eventEnv) {
	const writers, calls = 8, 10
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		appended = map[string]tether.LogEvent{}
		errs     = make(chan error, writers)
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := 0; c < calls; c++ {
				evs := presence(1000*w+2*c, 2, t0)
				if err := e.s.Append(e.ctx, evs); err != nil {
					errs <- err
					return
				}
				for i := 1; i < len(evs); i++ {
					if evs[i-1].ID >= evs[i].ID {
						errs <- fmt.Errorf("IDs %q then %q in one call", evs[i-1].ID, evs[i].ID)
						return
					}
				}
				mu.Lock()
				for _, ev := range evs {
					appended[ev.ID] = ev
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Append: %v", err)
	}
	if len(appended) != writers*calls*2 {
		t.Fatalf("%d distinct IDs for %d appended events", len(appended), writers*calls*2)
	}
	var all []tether.LogEvent
	for after := ""; ; {
		page := e.events(after, 7)
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
	checkOrdered(t, "Events", all)
	if len(all) != len(appended) {
		t.Fatalf("Events read %d events, want %d", len(all), len(appended))
	}
	for _, got := range all {
		checkEvent(t, got, appended[got.ID])
	}
}

func testEventFields(t *testing.T, e *eventEnv) {
	evs := []tether.LogEvent{
		{Type: tether.EventAcked, At: t0, Message: "01JT0000000001", Target: "group:shop-1", Device: "pos-1", Attempts: 2},
		{Type: tether.EventDead, At: t0, Message: "01JT0000000002", Target: "device:pos-2", Device: "pos-2", Attempts: 5},
		{Type: tether.EventExpired, At: t0.Add(time.Millisecond), Message: "01JT0000000003", Target: "device:pos-3", Device: "pos-3"},
		{Type: tether.EventCancelled, At: t0, Message: "01JT0000000004", Target: "group:shop-2", Device: "pos-4", Attempts: 1},
		{Type: tether.EventOnline, At: t0, Device: "pos-5", Node: "n1"},
		{Type: tether.EventOffline, At: t0.Add(time.Hour), Device: "pos-5", Node: "n1", Code: 4408},
		{Type: tether.EventOffline, At: t0, Device: "pos-6", Node: "n2"},
	}
	e.append(evs)
	e.checkEvents("", 100, evs)
}

func testEventsCursor(t *testing.T, e *eventEnv) {
	evs := e.appendNow(0, 10)
	e.checkEvents("", 3, evs[:3])
	e.checkEvents(evs[2].ID, 3, evs[3:6])
	e.checkEvents(evs[2].ID, 100, evs[3:])
	e.checkEvents(evs[8].ID, 100, evs[9:])
	e.checkEvents(evs[9].ID, 100, nil)
	more := e.appendNow(10, 2)
	e.checkEvents(evs[9].ID, 100, more)
}

// testEventsCursorLargeAppend: the events of one large call (a commit of
// many acks) keep their order and read back whole through the cursor,
// page after page, whatever records the store splits them into.
func testEventsCursorLargeAppend(t *testing.T, e *eventEnv) {
	evs := e.appendNow(0, 1000)
	checkOrdered(t, "one Append of 1000", evs)
	after, n := "", 0
	for n < len(evs) {
		got := e.events(after, 37)
		if len(got) == 0 {
			t.Fatalf("Events(%q, 37) empty after %d of %d events", after, n, len(evs))
		}
		for _, g := range got {
			checkEvent(t, g, evs[n])
			n++
		}
		after = got[len(got)-1].ID
	}
	e.checkEvents(evs[499].ID, 3, evs[500:503])
	e.checkEvents(evs[len(evs)-1].ID, 100, nil)
}

func testTrim(t *testing.T, e *eventEnv) {
	old := e.appendNow(0, 5)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	kept := e.appendNow(5, 3)
	if err := e.s.Trim(e.ctx, mid); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	e.checkEvents("", 100, kept)
	// A cursor of a trimmed event is older than the oldest retained:
	// reading after it starts at the oldest.
	e.checkEvents(old[4].ID, 100, kept)
	e.checkEvents(old[0].ID, 2, kept[:2])
	e.checkEvents(kept[0].ID, 100, kept[1:])
	if err := e.s.Trim(e.ctx, mid); err != nil {
		t.Fatalf("Trim again: %v", err)
	}
	e.checkEvents("", 100, kept)
}

func testTrimAll(t *testing.T, e *eventEnv) {
	old := e.appendNow(0, 3)
	time.Sleep(20 * time.Millisecond)
	if err := e.s.Trim(e.ctx, time.Now()); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	e.checkEvents("", 100, nil)
	e.checkEvents(old[2].ID, 100, nil)
	// IDs are never reused: the next event sorts after every trimmed one.
	next := e.appendNow(3, 1)
	checkOrdered(t, "appended after trimming all", append(old, next...))
	e.checkEvents(old[2].ID, 100, next)
}

func testLeaseTake(t *testing.T, e *eventEnv) {
	e.checkLease("a", time.Minute, true, "")
	e.checkLease("b", time.Minute, false, "")
	e.checkLease("a", time.Minute, true, "")
	e.checkLease("b", time.Minute, false, "")
}

func testLeaseRenew(t *testing.T, e *eventEnv) {
	const ttl = 300 * time.Millisecond
	e.checkLease("a", ttl, true, "")
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); {
		time.Sleep(ttl / 6)
		e.checkLease("b", ttl, false, "")
		e.checkLease("a", ttl, true, "")
	}
}

func testLeaseExpire(t *testing.T, e *eventEnv) {
	const ttl = 200 * time.Millisecond
	evs := e.appendNow(0, 1)
	start := time.Now()
	e.checkLease("a", ttl, true, "")
	e.checkLease("b", time.Minute, false, "")
	e.waitLease("b", time.Minute, ttl+2*time.Second)
	if d := time.Since(start); d < ttl {
		t.Fatalf("b took the lease %v after a took it for %v", d, ttl)
	}
	e.checkLease("a", time.Minute, false, "")
	e.checkSentLost("a", evs[0].ID)
}

// testLeaseShorten renews a lease with a short ttl, as a sender does on
// its way out so that the next one need not wait for the long one.
func testLeaseShorten(t *testing.T, e *eventEnv) {
	e.checkLease("a", time.Minute, true, "")
	e.checkLease("a", time.Millisecond, true, "")
	e.waitLease("b", time.Minute, 2*time.Second)
	e.checkLease("a", time.Minute, false, "")
}

func testSentFencing(t *testing.T, e *eventEnv) {
	evs := e.appendNow(0, 3)
	e.checkSentLost("a", evs[0].ID) // no one holds the lease
	e.checkLease("a", 200*time.Millisecond, true, "")
	e.checkSentLost("b", evs[0].ID)
	e.sent("a", evs[0].ID)
	// An expired lease fences its holder even while no one else took it.
	time.Sleep(300 * time.Millisecond)
	e.checkSentLost("a", evs[1].ID)
	e.checkLease("b", time.Minute, true, evs[0].ID)
	e.checkSentLost("a", evs[1].ID)
}

func testSentProgress(t *testing.T, e *eventEnv) {
	evs := e.appendNow(0, 6)
	e.checkLease("a", 200*time.Millisecond, true, "")
	e.sent("a", evs[1].ID)
	e.checkLease("a", 200*time.Millisecond, true, evs[1].ID)
	e.sent("a", evs[3].ID)
	e.sent("a", evs[3].ID) // idempotent
	e.checkLease("a", 200*time.Millisecond, true, evs[3].ID)
	// The progress is the fleet's, not the holder's: whoever takes the
	// lease next goes on from it.
	sent := e.waitLease("b", time.Minute, 2*time.Second)
	if sent != evs[3].ID {
		t.Fatalf("b took the lease with sent %q, want %q", sent, evs[3].ID)
	}
	e.checkEvents(sent, 100, evs[4:])
	e.sent("b", evs[5].ID)
	e.checkLease("b", time.Minute, true, evs[5].ID)
}

func testEventsCanceled(t *testing.T, e *eventEnv) {
	e.appendNow(0, 1)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	calls := map[string]func() error{
		"Append": func() error { return e.s.Append(ctx, presence(1, 1, t0)) },
		"Events": func() error { _, err := e.s.Events(ctx, "", 10); return err },
		"Trim":   func() error { return e.s.Trim(ctx, t0) },
		"Lease":  func() error { _, _, err := e.s.Lease(ctx, "a", time.Minute); return err },
		"Sent":   func() error { return e.s.Sent(ctx, "a", "") },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s with a canceled context succeeded", name)
		}
	}
}
