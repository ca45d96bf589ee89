package redis

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the client's connection count as
// tether_redis_connections: rueidis multiplexes every call over these few
// connections, so there is no pool to wait for; the callers in flight are
// tether_store_inflight, exported by the hub. And the relay's backlog
// (relay.go): tether_event_relay_pending_seconds, the age of the oldest
// outbox this node wrote events to and has not moved to the event log
// yet, and tether_event_relay_outboxes{set} (dirty: to move; retry: their
// shard failed), both 0 but on a Redis Cluster.
func (s *Store) Collector() prometheus.Collector { return storeCollector{s} }

var (
	connDesc = prometheus.NewDesc("tether_redis_connections",
		"Open connections of the Redis client (multiplexed: calls never hold one).", nil, nil)
	relayAgeDesc = prometheus.NewDesc("tether_event_relay_pending_seconds",
		"Age of the oldest slot outbox this node wrote delivery events to and has not moved to the event log (Redis Cluster; 0 otherwise).", nil, nil)
	relayOutboxesDesc = prometheus.NewDesc("tether_event_relay_outboxes",
		"Slot outboxes waiting for this node's relay: set dirty (to move), retry (their shard failed).", []string{"set"}, nil)
)

// storeCollector is the prometheus.Collector that Collector returns.
type storeCollector struct{ s *Store }

// Describe sends the descriptions of the store's metrics.
func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connDesc
	ch <- relayAgeDesc
	ch <- relayOutboxesDesc
}

// Collect sends the number of open connections and the relay's backlog,
// read now.
func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(connDesc, prometheus.GaugeValue, float64(c.s.conns.count()))
	var age time.Duration
	var dirty, retry int
	if c.s.relay != nil {
		age, dirty, retry = c.s.relay.pending(time.Now())
	}
	ch <- prometheus.MustNewConstMetric(relayAgeDesc, prometheus.GaugeValue, age.Seconds())
	ch <- prometheus.MustNewConstMetric(relayOutboxesDesc, prometheus.GaugeValue, float64(dirty), "dirty")
	ch <- prometheus.MustNewConstMetric(relayOutboxesDesc, prometheus.GaugeValue, float64(retry), "retry")
}

// count returns the open connections.
func (s *connSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
