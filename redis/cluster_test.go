package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
)

// These tests stop one node of a real three-master cluster for less than
// its node timeout (2s) and check what the store promises while a shard
// does not answer.

var clusterPrefixes = struct {
	mu sync.Mutex
	n  int
}{}

func openCluster(t *testing.T, c *redistest.Cluster) *Store {
	t.Helper()
	clusterPrefixes.mu.Lock()
	clusterPrefixes.n++
	prefix := fmt.Sprintf("c%d", clusterPrefixes.n)
	clusterPrefixes.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addrs: c.Addrs(), Prefix: prefix})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// owner returns the index of the node serving key.
func owner(t *testing.T, c *redistest.Cluster, key string) int {
	t.Helper()
	for i, n := range c.Nodes {
		if _, err := n.Do("EXISTS", key); err == nil {
			return i
		} else if !strings.HasPrefix(err.Error(), "MOVED ") {
			t.Fatalf("EXISTS %s on %s: %v", key, n.Addr, err)
		}
	}
	t.Fatalf("no node serves %s", key)
	return -1
}

// layout is a group of two devices on different nodes, the node to stop
// (the second device's, which serves neither the group nor the first
// device) and message ids whose expiry bucket is not on that node.
type layout struct {
	group, a, b string
	paused      int
	ids         []string
}

func findLayout(t *testing.T, c *redistest.Cluster, s *Store) layout {
	t.Helper()
	l := layout{group: "shop"}
	g := owner(t, c, s.k.members(l.group))
	for i := 0; l.b == "" && i < 1000; i++ {
		d := fmt.Sprintf("pos-%d", i)
		switch n := owner(t, c, s.k.device(d).open); {
		case n == g && l.a == "":
			l.a = d
		case n != g && l.a != "" && l.b == "":
			l.b, l.paused = d, n
		}
	}
	for i := 0; len(l.ids) < 4 && i < 1000; i++ {
		id := fmt.Sprintf("01JTC%08d", i)
		if owner(t, c, s.k.bucket(bucketOf(id)).due) != l.paused {
			l.ids = append(l.ids, id)
		}
	}
	if l.a == "" || l.b == "" || len(l.ids) < 4 {
		t.Fatalf("no suitable layout: %+v", l)
	}
	return l
}

func must[T any](t *testing.T, what string, fn func(ctx context.Context) (T, error)) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := fn(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func groupMessage(id, group, clientID string, at time.Time) *tether.Message {
	return &tether.Message{ID: id, Target: tether.GroupTarget(group), Data: json.RawMessage(`{}`),
		ClientID: clientID, PublishedAt: at, ExpiresAt: at.Add(time.Hour)}
}

func pendingIDs(t *testing.T, s *Store, device string, now time.Time) []string {
	t.Helper()
	ds := must(t, "pending "+device, func(ctx context.Context) ([]tether.Delivery, error) {
		return s.Pending(ctx, device, "", 100, now)
	})
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.Message.ID)
	}
	return ids
}

// TestPublishStoppedHalfWay: a group publish that fails because one
// member's shard does not answer leaves no idempotency entry (the retry
// with the same client id is stored, not answered as a duplicate), leaves
// what it wrote findable by Expire, and a retry of the same message id
// completes it.
func TestPublishStoppedHalfWay(t *testing.T) {
	c := redistest.StartCluster(t)
	s := openCluster(t, c)
	l := findLayout(t, c, s)
	for _, d := range []string{l.a, l.b} {
		must(t, "join", func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Join(ctx, d, []string{l.group}) })
	}
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	m1 := groupMessage(l.ids[0], l.group, "order-1", t0)
	m3 := groupMessage(l.ids[2], l.group, "", t0)

	c.Nodes[l.paused].Pause()
	for _, m := range []*tether.Message{m1, m3} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := s.Publish(ctx, []*tether.Message{m})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("publish %s with %s's shard stopped: %v, want a deadline error", m.ID, l.b, err)
		}
	}
	c.Nodes[l.paused].Resume()

	// The first member got m1 and m3; the second may have too, when its
	// shard ran the commands sent before the deadline once it resumed (a
	// timeout does not say that nothing was done).
	if got := pendingIDs(t, s, l.a, t0); !slices.Equal(got, []string{m1.ID, m3.ID}) {
		t.Errorf("pending of %s after the failed publishes = %q, want %q", l.a, got, []string{m1.ID, m3.ID})
	}
	st := must(t, "message", func(ctx context.Context) (tether.MessageStatus, error) { return s.Message(ctx, m1.ID) })
	if len(st.Deliveries) == 0 || st.Deliveries[0].Device != l.a {
		t.Errorf("deliveries of the half-written %s = %+v, want %s's at least", m1.ID, st.Deliveries, l.a)
	}

	// No idempotency entry was written: the publisher's retry is stored.
	m2 := groupMessage(l.ids[1], l.group, "order-1", t0.Add(time.Second))
	res := must(t, "retry", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{m2})
	})
	if r := res[0]; r.Duplicate || r.ID != m2.ID || r.Recipients != 2 {
		t.Errorf("retry with the same client id = %+v, want %s stored for 2 recipients", r, m2.ID)
	}
	// A retry of the same message id completes it and answers a duplicate
	// of itself.
	res = must(t, "same id", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{m3})
	})
	if r := res[0]; !r.Duplicate || r.ID != m3.ID || r.Recipients != 2 {
		t.Errorf("publish of %s again = %+v, want a duplicate of itself for 2 recipients", m3.ID, r)
	}
	got := pendingIDs(t, s, l.b, t0)
	if !slices.Contains(got, m2.ID) || !slices.Contains(got, m3.ID) {
		t.Errorf("pending of %s = %q, want %s and %s among them", l.b, got, m2.ID, m3.ID)
	}

	// Expire finds every delivery that was written, and purging leaves
	// nothing behind.
	open := 0
	for _, d := range []string{l.a, l.b} {
		open += must(t, "device", func(ctx context.Context) (tether.DeviceInfo, error) { return s.Device(ctx, d) }).Pending
	}
	later := t0.Add(2 * time.Hour)
	n := must(t, "expire", func(ctx context.Context) (int, error) {
		n, _, err := s.Expire(ctx, later, later, 100)
		return n, err
	})
	if n != open {
		t.Errorf("Expire expired %d deliveries, want the %d open ones", n, open)
	}
	for _, d := range []string{l.a, l.b} {
		info := must(t, "device", func(ctx context.Context) (tether.DeviceInfo, error) { return s.Device(ctx, d) })
		if info.Pending != 0 {
			t.Errorf("device %s has %d pending after the purge, want 0", d, info.Pending)
		}
	}
	for _, node := range c.Nodes {
		keys := node.MustDo("KEYS", s.k.prefix+":*")
		for _, k := range strings.Split(keys, "\n") {
			if k != "" && !strings.HasSuffix(k, ":members") && !strings.HasSuffix(k, ":groups") &&
				!strings.HasSuffix(k, ":joined") && !strings.HasSuffix(k, ":layout") {
				t.Errorf("key %s left on %s after everything was purged", k, node.Addr)
			}
		}
	}
}

// TestClusterNodePaused: with one shard stopped, calls about devices of
// the other shards still succeed, and calls that need the stopped one end
// at their deadline.
func TestClusterNodePaused(t *testing.T) {
	const deadline = 300 * time.Millisecond
	c := redistest.StartCluster(t)
	s := openCluster(t, c)
	l := findLayout(t, c, s)
	c.Nodes[l.paused].Pause()
	defer c.Nodes[l.paused].Resume()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range []string{l.a, l.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			errs[i] = s.Join(ctx, d, nil)
			if late := time.Since(start) - deadline; late > 250*time.Millisecond {
				t.Errorf("Join(%s) returned %v after its deadline", d, late)
			}
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		t.Errorf("Join(%s) on a healthy shard: %v", l.a, errs[0])
	}
	if !errors.Is(errs[1], tether.ErrUnavailable) {
		t.Errorf("Join(%s) on the stopped shard: %v, want an error wrapping ErrUnavailable", l.b, errs[1])
	}
}
