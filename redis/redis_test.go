package redis_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
	"github.com/tetherpush/tether/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Two goroutines of rueidis's cluster client that end by
		// themselves: it closes the connections of nodes that left the
		// topology 5s after a refresh, and a closed connection schedules a
		// topology refresh after a random delay of up to a second (a closed
		// store's refresh fails at once: it dials nothing).
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// prefixes makes each store of a test binary a fresh, empty one on a
// shared server: its keys start with a prefix of its own.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// dirPrefix returns the prefix standing for dir in RunDurable: the same
// directory reopens the same keys.
func dirPrefix(dir string) string {
	h := fnv.New64a()
	h.Write([]byte(dir))
	return fmt.Sprintf("d%x", h.Sum64())
}

// MustOpen opens a store with opts and closes it when the test ends.
func MustOpen(tb testing.TB, opts redis.Options) *redis.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := redis.Open(ctx, opts)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) tether.Store {
		return MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	})
}

func TestStoreDurable(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunDurable(t, func(t *testing.T, dir string) tether.Store {
		return MustOpen(t, redis.Options{URL: srv.URL(), Prefix: dirPrefix(dir)})
	})
}

// TestStoreDurableRestart: with appendfsync always, what Publish, Sent,
// Ack, Kill and Expire answered survives a crash of redis-server between
// Close and the reopen.
func TestStoreDurableRestart(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	var mu sync.Mutex
	opened := map[string]bool{}
	storetest.RunDurable(t, func(t *testing.T, dir string) tether.Store {
		mu.Lock()
		again := opened[dir]
		opened[dir] = true
		mu.Unlock()
		if again {
			srv.Kill()
			srv.Restart()
		}
		return MustOpen(t, redis.Options{URL: srv.URL(), Prefix: dirPrefix(dir)})
	})
}

func TestStoreCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	storetest.Run(t, func(t *testing.T) tether.Store {
		return MustOpen(t, redis.Options{Addrs: c.Addrs(), Prefix: newPrefix()})
	})
	storetest.RunEvents(t, func(t *testing.T) tether.EventStore {
		return MustOpen(t, redis.Options{Addrs: c.Addrs(), Prefix: newPrefix()})
	})
	storetest.RunDurable(t, func(t *testing.T, dir string) tether.Store {
		return MustOpen(t, redis.Options{Addrs: c.Addrs(), Prefix: dirPrefix(dir)})
	})
	// A URL names the seed node of a cluster as well as Addrs do.
	s := MustOpen(t, redis.Options{URL: "redis://" + c.Nodes[0].Addr, Cluster: true, Prefix: newPrefix()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Join(ctx, "pos-1", []string{"a", "b", "c", "d"}); err != nil {
		t.Errorf("Join through a store opened with a cluster URL: %v", err)
	}
	// The suite's keys are spread over the three shards.
	for _, n := range c.Nodes {
		if size := n.MustDo("DBSIZE"); size == "0" {
			t.Errorf("node %s holds no keys after the suite", n.Addr)
		}
	}
}
