package webhook

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Batch outcomes, the values of the outcome label of
// tether_webhook_batches_total.
const (
	OutcomeOK      = "ok"      // answered 2xx
	OutcomeError   = "error"   // another status (a redirect included), or the connection failed
	OutcomeTimeout = "timeout" // no answer within Config.Timeout
)

// Metrics are the sender's Prometheus collectors (SPEC section 11). They
// are registered on the registerer given to NewMetrics, never globally.
type Metrics struct {
	// Batches counts POST attempts by outcome: ok, error, timeout.
	Batches *prometheus.CounterVec
	// Events counts the events of batches answered 2xx (a batch sent
	// again counts again).
	Events prometheus.Counter
	// Lag is the age of the oldest event not yet sent, 0 when none is
	// waiting or this node does not hold the lease.
	Lag prometheus.GaugeFunc
	// LeaseHeld is 1 on the node that holds the lease and sends, else 0.
	LeaseHeld prometheus.Gauge
	// Trimmed counts events that left the retention window before they
	// were sent, as far as the sender saw them.
	Trimmed prometheus.Counter

	oldest atomic.Int64 // unix nanoseconds of the oldest unsent event; 0: none
}

// NewMetrics builds the sender's metrics and registers them on reg (nil:
// not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_webhook_batches_total", Help: "Webhook POSTs by outcome: ok (2xx), error (another status, a redirect, a failed connection), timeout (no answer in time)."}, []string{"outcome"}),
		Events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_webhook_events_total", Help: "Events in webhook batches answered 2xx (resent batches count again)."}),
		LeaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_webhook_lease_held", Help: "1 on the node that holds the webhook lease and sends the event log, else 0."}),
		Trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_webhook_trimmed_total", Help: "Events that left --event-retention before the webhook receiver accepted them, skipped."}),
	}
	m.Lag = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_webhook_lag_seconds", Help: "Age of the oldest event the webhook has not delivered yet; 0 when none waits or on nodes that do not hold the lease."},
		m.lag)
	// Series an alert reads from the start, so that rate() sees their
	// first increase.
	for _, o := range []string{OutcomeOK, OutcomeError, OutcomeTimeout} {
		m.Batches.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.Batches, m.Events, m.Lag, m.LeaseHeld, m.Trimmed)
	}
	return m
}

// lag is the value of tether_webhook_lag_seconds now.
func (m *Metrics) lag() float64 {
	at := m.oldest.Load()
	if at == 0 {
		return 0
	}
	return max(time.Since(time.Unix(0, at)).Seconds(), 0)
}

// setOldest records the time of the oldest unsent event; the zero time
// means none.
func (m *Metrics) setOldest(at time.Time) {
	if at.IsZero() {
		m.oldest.Store(0)
		return
	}
	m.oldest.Store(at.UnixNano())
}
