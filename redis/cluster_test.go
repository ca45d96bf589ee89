package redis

import (
	"cmp"
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

// layout is a group whose shard is the node to stop, two member devices
// on other shards, and message ids whose expiry bucket is not on that
// node.
type layout struct {
	group, a, b string
	paused      int
	ids         []string
}

func findLayout(t *testing.T, c *redistest.Cluster, s *Store) layout {
	t.Helper()
	l := layout{group: "shop"}
	l.paused = owner(t, c, s.k.log(tether.GroupTarget(l.group)).seq)
	for i := 0; l.b == "" && i < 1000; i++ {
		d := fmt.Sprintf("pos-%d", i)
		if owner(t, c, s.k.cursors(d)) == l.paused {
			continue
		}
		if l.a == "" {
			l.a = d
		} else {
			l.b = d
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

// owedIDs returns the ids of the messages device is owed at now.
func owedIDs(t *testing.T, s *Store, device string, now time.Time) []string {
	t.Helper()
	cs := must(t, "cursors "+device, func(ctx context.Context) ([][]tether.Cursor, error) {
		return s.Cursors(ctx, []string{device})
	})[0]
	var ids []string
	for _, c := range cs {
		es := must(t, "read", func(ctx context.Context) ([][]tether.Entry, error) {
			return s.Read(ctx, []tether.ReadRequest{{Source: c.Source, After: c.Floor, Limit: 100}})
		})[0]
		for _, e := range es {
			if c.Addressed(e.Seq) && !c.IsSettled(e.Seq) && e.Message.ExpiresAt.After(now) {
				ids = append(ids, e.Message.ID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// TestPublishStoppedHalfWay: a group publish that fails because the
// group's shard does not answer leaves the message stored once or not at
// all: a retry with the same message id or the same client id is answered
// consistently (a duplicate once it is stored), and Expire finds and
// purges whatever was written, leaving no key behind but the group's
// membership, the logs' counters, the devices' cursors and the event
// log (with its outboxes).
func TestPublishStoppedHalfWay(t *testing.T) {
	c := redistest.StartCluster(t)
	s := openCluster(t, c)
	l := findLayout(t, c, s)
	for _, d := range []string{l.a, l.b} {
		must(t, "join", func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Join(ctx, d, []string{l.group}) })
	}
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	m1 := groupMessage(l.ids[0], l.group, "order-1", t0)

	c.Nodes[l.paused].Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := s.Publish(ctx, []*tether.Message{m1})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("publish %s with the group's shard stopped: %v, want a deadline error", m1.ID, err)
	}
	c.Nodes[l.paused].Resume()

	// The shard may have run the append once it resumed (a timeout does
	// not say that nothing was done). Either way a retry settles it: the
	// same message again is stored now or answered as a duplicate of
	// itself, and another message with the same client id is a duplicate.
	res := must(t, "same id", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{m1})
	})
	if r := res[0]; r.ID != m1.ID || r.Recipients != 2 {
		t.Errorf("publish of %s again = %+v, want it (stored now or a duplicate) for 2 recipients", m1.ID, r)
	}
	m2 := groupMessage(l.ids[1], l.group, "order-1", t0.Add(time.Second))
	res = must(t, "same client id", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{m2})
	})
	if r := res[0]; !r.Duplicate || r.ID != m1.ID {
		t.Errorf("retry with the same client id = %+v, want a duplicate of %s", r, m1.ID)
	}
	for _, d := range []string{l.a, l.b} {
		if got := owedIDs(t, s, d, t0); !slices.Equal(got, []string{m1.ID}) {
			t.Errorf("%s is owed %q, want %s once", d, got, m1.ID)
		}
	}

	// Expire finds what was written and purging leaves nothing behind.
	later := t0.Add(2 * time.Hour)
	n := must(t, "expire", func(ctx context.Context) (int, error) {
		n, _, err := s.Expire(ctx, later, later, 100)
		return n, err
	})
	if n != 2 {
		t.Errorf("Expire expired %d deliveries, want 2", n)
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
			kept := k == s.k.eventLog().log // the receipts of the expired deliveries, in outboxes or moved
			for _, suffix := range []string{":members", ":mem", ":seq", ":trim", ":c", ":done", ":layout", ":out", ":moved"} {
				kept = kept || strings.HasSuffix(k, suffix)
			}
			if k != "" && !kept {
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
	// A device on node 0's shard, to be stopped, and one on another.
	var healthy, stopped string
	for i := 0; (healthy == "" || stopped == "") && i < 1000; i++ {
		d := fmt.Sprintf("pos-%d", i)
		if owner(t, c, s.k.cursors(d)) == 0 {
			stopped = cmp.Or(stopped, d)
		} else {
			healthy = cmp.Or(healthy, d)
		}
	}
	c.Nodes[0].Pause()
	defer c.Nodes[0].Resume()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range []string{healthy, stopped} {
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
		t.Errorf("Join(%s) on a healthy shard: %v", healthy, errs[0])
	}
	if !errors.Is(errs[1], tether.ErrUnavailable) {
		t.Errorf("Join(%s) on the stopped shard: %v, want an error wrapping ErrUnavailable", stopped, errs[1])
	}
}
