package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// The incident of SPEC section 2: far more callers than connections,
// callers that start a store call while their previous one's results are
// still in hand, and a Redis that stops answering. These tests check that
// no call outlives its deadline by more than margin and that nothing
// piles up.

// margin is how much later than its deadline a call may return: the
// scheduling delay of a loaded two-core machine under -race, not a wait of
// the store. A full CI run (every package testing at once) once saw ten
// Commits of TestManyCallersFewConnections return 251-329 ms late, with
// 500 callers woken by their deadlines together; a call stuck on the store
// would be late by seconds.
const margin = 500 * time.Millisecond

// timedCall runs fn with a deadline of d and fails t when it returns later
// than d + margin. It returns fn's error.
func timedCall(t *testing.T, name string, d time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	if late := time.Since(start) - d; late > margin {
		t.Errorf("%s returned %v after its %v deadline (error %v)", name, late.Round(time.Millisecond), d, err)
	}
	return err
}

// newMessage returns a message to target expiring in an hour.
func newMessage(id string, target tether.Target) *tether.Message {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &tether.Message{ID: id, Target: target, Data: json.RawMessage(`{"n":1}`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}
}

// TestManyCallersFewConnections: 500 callers, each publishing to its
// device or its shop and then, with what its logs hold in hand, sending
// and acking, all on a handful of connections and under a short deadline.
// No call returns later than its deadline plus margin, work gets done, the
// connections stay few and the goroutines go back to what they were.
func TestManyCallersFewConnections(t *testing.T) {
	const (
		callers  = 500
		devices  = 50
		deadline = 300 * time.Millisecond
		run      = 1500 * time.Millisecond
	)
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	for d := 0; d < devices; d++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Join(ctx, fmt.Sprintf("pos-%d", d), []string{fmt.Sprintf("shop-%d", d%5)})
		cancel()
		if err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	base := runtime.NumGoroutine()
	var (
		wg         sync.WaitGroup
		next       atomic.Int64
		ok, failed atomic.Int64
		maxConns   atomic.Int64
	)
	stop := time.Now().Add(run)
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			device := fmt.Sprintf("pos-%d", c%devices)
			for time.Now().Before(stop) {
				if err := cycle(t, s, device, c, &next, deadline); err != nil {
					if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, tether.ErrUnavailable) {
						t.Errorf("caller %d: %v, want success or a deadline error wrapping ErrUnavailable", c, err)
						return
					}
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for time.Now().Before(stop) {
		maxConns.Store(max(maxConns.Load(), int64(clientConns(t, srv))))
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d cycles done, %d ended at their deadline, at most %d connections", ok.Load(), failed.Load(), maxConns.Load())
	if ok.Load() < callers {
		t.Errorf("%d cycles done by %d callers in %v, want at least one each on average", ok.Load(), callers, run)
	}
	if n := maxConns.Load(); n > 16 {
		t.Errorf("the store used %d connections for %d callers, want a handful", n, callers)
	}
	waitGoroutines(t, base, 5*time.Second)
}

// cycle is one caller's round: publish to the device (to its shop one
// time in ten), then its cursors and its logs after them, and with those
// entries in hand a commit of their sends and a commit of their acks, each
// call with its own deadline.
func cycle(t *testing.T, s *redis.Store, device string, c int, next *atomic.Int64, d time.Duration) error {
	n := next.Add(1)
	target := tether.DeviceTarget(device)
	if n%10 == 0 {
		target = tether.GroupTarget(fmt.Sprintf("shop-%d", c%5))
	}
	m := newMessage(fmt.Sprintf("01JT%012d", n), target)
	if err := timedCall(t, "Publish", d, func(ctx context.Context) error {
		_, err := s.Publish(ctx, []*tether.Message{m})
		return err
	}); err != nil {
		return err
	}
	var cs [][]tether.Cursor
	if err := timedCall(t, "Cursors", d, func(ctx context.Context) (err error) {
		cs, err = s.Cursors(ctx, []string{device})
		return err
	}); err != nil {
		return err
	}
	reqs := make([]tether.ReadRequest, len(cs[0]))
	for i, c := range cs[0] {
		reqs[i] = tether.ReadRequest{Source: c.Source, After: c.Floor, Limit: 10}
	}
	var es [][]tether.Entry
	if err := timedCall(t, "Read", d, func(ctx context.Context) (err error) {
		es, err = s.Read(ctx, reqs)
		return err
	}); err != nil {
		return err
	}
	var sent, acked []tether.Mark
	for i, c := range cs[0] {
		for _, e := range es[i] {
			if c.Addressed(e.Seq) && !c.IsSettled(e.Seq) {
				sent = append(sent, tether.Mark{Source: c.Source, Seq: e.Seq, State: tether.StateInflight, Attempts: 1})
				acked = append(acked, tether.Mark{Source: c.Source, Seq: e.Seq, State: tether.StateAcked, Attempts: 1})
			}
		}
	}
	for _, marks := range [][]tether.Mark{sent, acked} {
		if err := timedCall(t, "Commit", d, func(ctx context.Context) error {
			_, err := s.Commit(ctx, []tether.Change{{Device: device, At: time.Now(), Marks: marks}})
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// storeCalls returns one call of every method but Close, about device
// pos-1 of shop-1 and message id.
func storeCalls(s *redis.Store, id string) map[string]func(context.Context) error {
	var n atomic.Int64
	return map[string]func(context.Context) error{
		"Publish": func(ctx context.Context) error {
			_, err := s.Publish(ctx, []*tether.Message{newMessage(fmt.Sprintf("01JTP%08d", n.Add(1)), tether.GroupTarget("shop-1"))})
			return err
		},
		"Join":    func(ctx context.Context) error { return s.Join(ctx, "pos-1", []string{"shop-1"}) },
		"Leave":   func(ctx context.Context) error { return s.Leave(ctx, "shop-2", "pos-1") },
		"Cursors": func(ctx context.Context) error { _, err := s.Cursors(ctx, []string{"pos-1"}); return err },
		"Read": func(ctx context.Context) error {
			_, err := s.Read(ctx, []tether.ReadRequest{{Source: tether.GroupTarget("shop-1"), Limit: 10}})
			return err
		},
		"Commit": func(ctx context.Context) error {
			_, err := s.Commit(ctx, []tether.Change{{Device: "pos-1", At: time.Now(), AckIDs: []string{"01JT-none", id}}})
			return err
		},
		"Expire": func(ctx context.Context) error {
			_, _, err := s.Expire(ctx, time.Now(), time.Now().Add(-time.Hour), 100)
			return err
		},
		"Message": func(ctx context.Context) error { _, err := s.Message(ctx, id); return err },
		"Device":  func(ctx context.Context) error { _, err := s.Device(ctx, "pos-1"); return err },
		"Group":   func(ctx context.Context) error { _, err := s.Group(ctx, "shop-1"); return err },
		"Ping":    func(ctx context.Context) error { return s.Ping(ctx) },
	}
}

// TestServerPaused: while redis-server is stopped (SIGSTOP: connections
// stay open, nothing answers), 240 callers of every method get a deadline
// error within their deadline, Open gives up within its own, and once the
// server resumes everything works again and the goroutines left by the
// abandoned calls are gone.
func TestServerPaused(t *testing.T) {
	const deadline = 200 * time.Millisecond
	srv := redistest.Start(t)
	prefix := newPrefix()
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: prefix})
	id := mustSetUp(t, s)
	base := runtime.NumGoroutine()

	srv.Pause()
	var wg sync.WaitGroup
	for round := 0; round < 20; round++ {
		for name, fn := range storeCalls(s, id) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := timedCall(t, name, deadline, fn)
				if !errors.Is(err, tether.ErrUnavailable) || tether.ErrorCode(err) != tether.EUnavailable {
					t.Errorf("%s against a paused server: %v, want an error wrapping ErrUnavailable", name, err)
				}
			}()
		}
	}
	wg.Wait()
	err := timedCall(t, "Open", deadline, func(ctx context.Context) error {
		s2, err := redis.Open(ctx, redis.Options{URL: srv.URL(), Prefix: prefix})
		if err == nil {
			s2.Close()
		}
		return err
	})
	if err == nil {
		t.Error("Open against a paused server succeeded")
	}

	srv.Resume()
	for name, fn := range storeCalls(s, id) {
		if err := timedCall(t, name+" after resume", 5*time.Second, fn); err != nil {
			t.Errorf("%s after the server resumed: %v", name, err)
		}
	}
	waitGoroutines(t, base, 5*time.Second)
}

// TestServerHangsLongerThanConnTimeout: the goroutines of calls abandoned
// at their deadline end once the connection has gone ConnTimeout without a
// reply, even while the server still hangs.
func TestServerHangsLongerThanConnTimeout(t *testing.T) {
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix(), ConnTimeout: 500 * time.Millisecond})
	id := mustSetUp(t, s)
	base := runtime.NumGoroutine()
	srv.Pause()
	defer srv.Resume()
	wave := func() {
		var wg sync.WaitGroup
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				timedCall(t, "Read", 100*time.Millisecond, storeCalls(s, id)["Read"])
			}()
		}
		wg.Wait()
	}
	wave()
	waitGoroutines(t, base, 3*time.Second)
	// The connection is gone: these callers find it to be redialled while
	// the server still hangs.
	for i := 0; i < 3; i++ {
		wave()
	}
	waitGoroutines(t, base, 3*time.Second)
}

// TestRedialBoundedByDialTimeout: once the connection to a hung server
// has been closed, the caller that redials waits at most DialTimeout for
// the dial and its probe, and callers with shorter deadlines waiting for
// that redial return within DialTimeout too.
func TestRedialBoundedByDialTimeout(t *testing.T) {
	const dialTimeout = 300 * time.Millisecond
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix(), ConnTimeout: 300 * time.Millisecond, DialTimeout: dialTimeout})
	id := mustSetUp(t, s)
	pending := storeCalls(s, id)["Read"]
	srv.Pause()
	defer srv.Resume()
	timedCall(t, "Read", 100*time.Millisecond, pending)
	time.Sleep(time.Second) // the connection goes ConnTimeout without a reply and is closed

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		timedCall(t, "Read (long deadline)", 1500*time.Millisecond, pending)
	}()
	time.Sleep(20 * time.Millisecond) // the long one is dialling
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			pending(ctx)
			if d := time.Since(start); d > dialTimeout+margin {
				t.Errorf("a caller with a 50ms deadline waited %v for a redial, want at most DialTimeout %v", d, dialTimeout)
			}
		}()
	}
	wg.Wait()
}

// TestServerDown: with redis-server gone (its port refuses connections)
// every call fails with ErrUnavailable within its deadline; once it is
// back, the store reconnects by itself.
func TestServerDown(t *testing.T) {
	const deadline = 300 * time.Millisecond
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	id := mustSetUp(t, s)
	srv.Kill()
	for name, fn := range storeCalls(s, id) {
		err := timedCall(t, name, deadline, fn)
		if !errors.Is(err, tether.ErrUnavailable) {
			t.Errorf("%s with the server down: %v, want an error wrapping ErrUnavailable", name, err)
		}
	}
	srv.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s.Ping(ctx) != nil && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if err := timedCall(t, "Join after restart", 5*time.Second, storeCalls(s, id)["Join"]); err != nil {
		t.Errorf("Join once the server is back: %v", err)
	}
}

// TestCloseWhileServerHangs: Close is immediate while the server hangs,
// and the calls it interrupts fail with ErrClosed long before their own
// deadline (10 s). Usually they fail at once; on a loaded machine (CI runs
// packages in parallel) they have been seen to end about 1 s after Close,
// the wait rueidis allows for a PING when it closes a connection. The
// cause is not pinned down yet, so the bound is that second plus margin.
func TestCloseWhileServerHangs(t *testing.T) {
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	id := mustSetUp(t, s)
	srv.Pause()
	defer srv.Resume()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := s.Read(ctx, []tether.ReadRequest{{Source: tether.DeviceTarget("pos-1"), Limit: 10}})
			if !errors.Is(err, tether.ErrClosed) || time.Since(start) > 100*time.Millisecond+time.Second+margin {
				t.Errorf("Read interrupted by Close: %v after %v, want ErrClosed within 1 s of Close", err, time.Since(start))
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // the calls wait for their replies
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > margin {
		t.Errorf("Close took %v while the server hung", d)
	}
	wg.Wait()
	_ = id
}

// TestNoDedicatedConnections: the package never takes a connection for
// itself (rueidis Dedicated and Dedicate wait for one without a deadline;
// nested, they deadlock, as the incident did).
func TestNoDedicatedConnections(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), ".Dedicate") {
			t.Errorf("%s uses rueidis Dedicated/Dedicate: a connection held without a deadline", f)
		}
	}
}

// mustSetUp joins pos-1 to shop-1 and publishes one message to it, and
// returns the message id.
func mustSetUp(t *testing.T, s *redis.Store) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Join(ctx, "pos-1", []string{"shop-1"}); err != nil {
		t.Fatalf("join: %v", err)
	}
	m := newMessage("01JT-setup", tether.DeviceTarget("pos-1"))
	if _, err := s.Publish(ctx, []*tether.Message{m}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return m.ID
}

// clientConns counts the connections the store opened (named tether).
func clientConns(t *testing.T, srv *redistest.Server) int {
	list, err := srv.Do("CLIENT", "LIST")
	if err != nil {
		t.Errorf("CLIENT LIST: %v", err)
		return 0
	}
	return strings.Count(list, " name=tether ")
}

// waitGoroutines waits up to d for the number of goroutines to come back
// to base (a few more are allowed: timers and the runtime's own).
func waitGoroutines(t *testing.T, base int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for runtime.NumGoroutine() > base+5 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines %v after the calls ended, %d before; dump:\n%s", runtime.NumGoroutine(), d, base, buf)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
