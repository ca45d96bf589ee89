package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// mustOpen opens a store in a temporary directory, closed at the end of
// the test.
func mustOpen(tb testing.TB, opts Options) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "tether.db"), opts)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// blockCommitter queues a write that holds the committer until the
// returned function is called, and waits until the committer holds it.
func blockCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	held, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.update(context.Background(), "block", func(*bolt.Tx) error {
			close(held)
			<-unblock
			return nil
		})
	}()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the committer did not take the blocking write")
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(unblock)
			if err := <-done; err != nil {
				t.Errorf("blocking write: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

func testMessage(i int, device string) *tether.Message {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	return &tether.Message{
		ID: fmt.Sprintf("m%08d", i), Target: tether.DeviceTarget(device), Data: []byte(`{}`),
		PublishedAt: t0, ExpiresAt: t0.Add(time.Hour),
	}
}

// TestWriteHonoursDeadline: a write stuck behind a slow commit returns its
// ctx error at its deadline, and the store carries on afterwards.
func TestWriteHonoursDeadline(t *testing.T) {
	s := mustOpen(t, Options{})
	release := blockCommitter(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Publish(ctx, []*tether.Message{testMessage(1, "d")})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, tether.ErrUnavailable) {
		t.Errorf("Publish behind a stuck commit: error %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("Publish returned after %v, want about its 50ms deadline", waited)
	}
	release()

	// The expired write was skipped, not applied late.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := s.Message(ctx2, "m00000001"); !errors.Is(err, tether.ErrNotFound) {
		t.Errorf("Message of the timed-out publish: %v, want ErrNotFound (skipped by the committer)", err)
	}
	if _, err := s.Publish(ctx2, []*tether.Message{testMessage(2, "d")}); err != nil {
		t.Errorf("Publish after the stall: %v", err)
	}
}

// TestQueueFullHonoursDeadline: with the queue full, a write waits for room
// no longer than its deadline.
func TestQueueFullHonoursDeadline(t *testing.T) {
	s := mustOpen(t, Options{QueueSize: 1})
	release := blockCommitter(t, s)
	s.queue <- &request{ctx: context.Background(), op: "filler", fn: func(*bolt.Tx) error { return nil }, done: make(chan error, 1)}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Join(ctx, "d", []string{"g"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Join with the queue full: error %v, want DeadlineExceeded", err)
	}
	release()
}

// TestGroupCommit: writes queued during one commit go out together in the
// next transaction.
func TestGroupCommit(t *testing.T) {
	s := mustOpen(t, Options{})
	release := blockCommitter(t, s)
	before := s.commits.Load()

	const writers = 64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.Publish(ctx, []*tether.Message{testMessage(i, fmt.Sprintf("d%d", i))})
			errs <- err
		}(i)
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.queue) < writers; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d writes queued", len(s.queue), writers)
		}
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Publish: %v", err)
		}
	}
	if got := s.commits.Load() - before; got != 1 {
		t.Errorf("%d queued writes took %d transactions, want 1", writers, got)
	}
}

// TestFailingWriteIsolated: a write that fails inside a shared transaction
// gets its error; the others of its batch are committed.
func TestFailingWriteIsolated(t *testing.T) {
	s := mustOpen(t, Options{})
	release := blockCommitter(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := testMessage(1, "a")
	clash := testMessage(1, "b") // same id, another target: EInvalid
	other := testMessage(2, "c")
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, m := range []*tether.Message{first, clash, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Publish(ctx, []*tether.Message{m})
		}()
		for deadline := time.Now().Add(5 * time.Second); len(s.queue) <= i; {
			if time.Now().After(deadline) {
				t.Fatal("write not queued")
			}
			time.Sleep(time.Millisecond)
		}
	}
	release()
	wg.Wait()
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("writes beside a failing one: %v, %v; want nil", errs[0], errs[2])
	}
	if tether.ErrorCode(errs[1]) != tether.EInvalid {
		t.Errorf("reused id for another target: %v, want EInvalid", errs[1])
	}
	for _, id := range []string{first.ID, other.ID} {
		if _, err := s.Message(ctx, id); err != nil {
			t.Errorf("Message(%s) after the batch: %v", id, err)
		}
	}
}
