package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// gauge returns the value of the gauge name of c with label set=set (""
// for none); it fails the test when c does not export it.
func gauge(t *testing.T, c prometheus.Collector, name, set string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "set" {
					got = l.GetValue()
				}
			}
			if got == set {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("%s{set=%q} not exported", name, set)
	return 0
}

func TestCollectorCountsConnections(t *testing.T) {
	r := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: r.URL()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := gauge(t, s.Collector(), "tether_redis_connections", ""); n < 1 || n > 4 {
		t.Fatalf("tether_redis_connections = %v, want the few multiplexed connections (1-4)", n)
	}
	// A single instance has no outboxes: the relay's gauges are there, at 0.
	if n := gauge(t, s.Collector(), "tether_event_relay_pending_seconds", ""); n != 0 {
		t.Errorf("tether_event_relay_pending_seconds = %v on a single instance", n)
	}
	s.Close()
	if n := gauge(t, s.Collector(), "tether_redis_connections", ""); n != 0 {
		t.Fatalf("after Close: %v connections", n)
	}
}
