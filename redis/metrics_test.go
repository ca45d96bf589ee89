package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

func TestCollectorCountsConnections(t *testing.T) {
	r := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: r.URL()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(s.Collector()); n < 1 || n > 4 {
		t.Fatalf("tether_redis_connections = %v, want the few multiplexed connections (1-4)", n)
	}
	s.Close()
	if n := testutil.ToFloat64(s.Collector()); n != 0 {
		t.Fatalf("after Close: %v connections", n)
	}
}
