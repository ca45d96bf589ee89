package redis

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the client's connection count as
// tether_redis_connections: rueidis multiplexes every call over these few
// connections, so there is no pool to wait for; the callers in flight are
// tether_store_inflight, exported by the hub.
func (s *Store) Collector() prometheus.Collector { return connCollector{s} }

var connDesc = prometheus.NewDesc("tether_redis_connections",
	"Open connections of the Redis client (multiplexed: calls never hold one).", nil, nil)

// connCollector is the prometheus.Collector that Collector returns.
type connCollector struct{ s *Store }

// Describe sends the description of tether_redis_connections.
func (c connCollector) Describe(ch chan<- *prometheus.Desc) { ch <- connDesc }

// Collect sends the number of open connections, counted now.
func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(connDesc, prometheus.GaugeValue, float64(c.s.conns.count()))
}

// count returns the open connections.
func (s *connSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
