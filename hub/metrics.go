package hub

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the hub's Prometheus collectors (SPEC section 7). They are
// registered on the registerer given to NewMetrics, never globally.
type Metrics struct {
	Connections     prometheus.Gauge
	Published       prometheus.Counter
	Deliveries      prometheus.Counter
	Acks            prometheus.Counter
	Redeliveries    prometheus.Counter
	Expired         prometheus.Counter
	Dead            prometheus.Counter
	DeliveryLatency prometheus.Histogram
	StoreOp         *prometheus.HistogramVec
	StoreInflight   prometheus.Gauge
	StoreErrors     *prometheus.CounterVec
	Closes          *prometheus.CounterVec
	DeliveryLag     prometheus.Gauge
	Refused         *prometheus.CounterVec
	StoreUp         prometheus.Gauge
	Overloaded      prometheus.Gauge
	MaxDeliveryLag  prometheus.Gauge
}

// NewMetrics builds the hub's metrics and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_connections", Help: "Device sessions open on this node."}),
		Published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_messages_published_total", Help: "Messages accepted by the publish API (duplicates excluded)."}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_deliveries_total", Help: "Message frames written to devices, redeliveries included."}),
		Acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_acks_total", Help: "Deliveries that became acked."}),
		Redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_redeliveries_total", Help: "Deliveries sent again (attempt > 1)."}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_expired_total", Help: "Deliveries dropped unacked at their message's expiry."}),
		Dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_dead_total", Help: "Deliveries that reached --max-attempts without an ack."}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_delivery_latency_seconds", Help: "Time from publish to the first write of a delivery.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}),
		StoreOp: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tether_store_op_seconds", Help: "Store call duration by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"op"}),
		StoreInflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_store_inflight", Help: "Store calls in progress, waiting for the store or for a connection to it."}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_store_errors_total", Help: "Failed store calls by operation and kind."}, []string{"op", "kind"}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_session_closes_total", Help: "Sessions closed by the server, by close code."}, []string{"code"}),
		DeliveryLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_delivery_lag_seconds", Help: "Age of the oldest work the node has not done (a session waiting for a worker, a store read or commit, a publish's store write); publishes are refused past a quarter of --max-delivery-lag."}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_publishes_refused_total", Help: "Publish requests refused at once with 503, before their body is read, by reason: overloaded, unavailable (the store is down)."}, []string{"reason"}),
		StoreUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_store_up", Help: "1 while the store answers the node's health check (every 250 ms), 0 while it does not: publishes and connects are then refused with 503 unavailable and /readyz answers 503."}),
		Overloaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_overloaded", Help: "1 while publishes are refused with 503 overloaded (the delivery lag passed a quarter of --max-delivery-lag and has not yet fallen below an eighth), else 0."}),
		MaxDeliveryLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_max_delivery_lag_seconds", Help: "The node's --max-delivery-lag: the bound tether_delivery_lag_seconds is held under by refusing publishes."}),
	}
	// Series a rule or a dashboard reads from the start, so that rate()
	// sees their first increase.
	for _, r := range []string{"overloaded", "unavailable"} {
		m.Refused.WithLabelValues(r)
	}
	m.StoreUp.Set(1)
	if reg != nil {
		reg.MustRegister(m.Connections, m.Published, m.Deliveries, m.Acks, m.Redeliveries,
			m.Expired, m.Dead, m.DeliveryLatency, m.StoreOp, m.StoreInflight, m.StoreErrors, m.Closes,
			m.DeliveryLag, m.Refused, m.StoreUp, m.Overloaded, m.MaxDeliveryLag)
	}
	return m
}
