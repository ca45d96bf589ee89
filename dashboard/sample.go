package dashboard

import (
	"math"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Metric names the dashboard reads (SPEC section 7 and the standard Go and
// process collectors). A metric that is not gathered shows as absent.
const (
	mConnections   = "tether_connections"
	mPublished     = "tether_messages_published_total"
	mDeliveries    = "tether_deliveries_total"
	mAcks          = "tether_acks_total"
	mRedeliveries  = "tether_redeliveries_total"
	mExpired       = "tether_expired_total"
	mDead          = "tether_dead_total"
	mLatency       = "tether_delivery_latency_seconds"
	mStoreOp       = "tether_store_op_seconds"
	mStoreErrors   = "tether_store_errors_total"
	mSockets       = "tether_tcp_sockets"
	mCloses        = "tether_session_closes_total"
	mGoroutines    = "go_goroutines"
	mThreads       = "go_threads"
	mHeap          = "go_memstats_heap_inuse_bytes"
	mResident      = "process_resident_memory_bytes"
	mOpenFDs       = "process_open_fds"
	mMaxFDs        = "process_max_fds"
	mStartTime     = "process_start_time_seconds"
	storePrefix    = "tether_store_"
	redisPrefix    = "tether_redis_"
	tetherPrefix   = "tether_"
	labelOp        = "op"
	labelKind      = "kind"
	labelState     = "state"
	labelCloseCode = "code"
)

// runtimeNames are the non-tether scalars a sample keeps.
var runtimeNames = []string{mGoroutines, mThreads, mHeap, mResident, mOpenFDs, mMaxFDs, mStartTime}

// hist is one cumulative histogram: counts[i] observations were at most
// bounds[i]; count is the total, the +Inf bucket included.
type hist struct {
	bounds []float64
	counts []float64
	count  float64
	sum    float64
}

// sub returns h minus an earlier reading of the same histogram. A reading
// with other buckets, or a reset (fewer observations), counts as empty.
func (h hist) sub(prev hist) hist {
	if !slices.Equal(h.bounds, prev.bounds) || prev.count > h.count {
		return h
	}
	d := hist{bounds: h.bounds, counts: make([]float64, len(h.counts)), count: h.count - prev.count, sum: h.sum - prev.sum}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - prev.counts[i]
	}
	return d
}

// quantile estimates the q-quantile like Prometheus's histogram_quantile:
// linear interpolation inside the bucket that holds the rank; a rank in the
// +Inf bucket gives the highest finite bound. ok is false without
// observations.
func (h hist) quantile(q float64) (v float64, ok bool) {
	if h.count <= 0 || len(h.bounds) == 0 {
		return 0, false
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, bound := range h.bounds {
		if h.counts[i] >= rank && h.counts[i] > below {
			return lower + (bound-lower)*(rank-below)/(h.counts[i]-below), true
		}
		lower, below = bound, h.counts[i]
	}
	return h.bounds[len(h.bounds)-1], true
}

// metric is an extra store metric shown as it is: a gauge's value or a
// counter's total (and rate).
type metric struct {
	name   string // with its labels, name{k="v"}
	kind   string // "gauge" or "counter"
	value  float64
	family string
}

// sample is one reading of the metrics the dashboard shows.
type sample struct {
	at      time.Time
	scalars map[string]float64 // family name → sum over its series
	latency hist
	ops     map[string]hist    // op → tether_store_op_seconds
	errs    map[opKind]float64 // tether_store_errors_total
	sockets map[string]float64 // state → count; nil when not exported
	closes  map[string]float64 // close code → sessions closed
	extra   []metric           // other tether_store_* and tether_redis_* series
}

type opKind struct{ op, kind string }

// newSample reads the families a Gatherer returned.
func newSample(at time.Time, families []*dto.MetricFamily) *sample {
	s := &sample{
		at:      at,
		scalars: make(map[string]float64),
		ops:     make(map[string]hist),
		errs:    make(map[opKind]float64),
		closes:  make(map[string]float64),
	}
	for _, f := range families {
		s.add(f)
	}
	return s
}

func (s *sample) add(f *dto.MetricFamily) {
	name := f.GetName()
	if !strings.HasPrefix(name, tetherPrefix) && !slices.Contains(runtimeNames, name) {
		return
	}
	for _, m := range f.GetMetric() {
		switch name {
		case mLatency:
			s.latency = readHist(m)
		case mStoreOp:
			s.ops[label(m, labelOp)] = readHist(m)
		case mStoreErrors:
			s.errs[opKind{label(m, labelOp), label(m, labelKind)}] += scalar(m)
		case mSockets:
			if s.sockets == nil {
				s.sockets = make(map[string]float64)
			}
			s.sockets[label(m, labelState)] += scalar(m)
		case mCloses:
			s.closes[label(m, labelCloseCode)] += scalar(m)
		default:
			s.addOther(f, m)
		}
	}
}

// addOther keeps a scalar family's sum, and the series of store metrics
// the dashboard has no special view for (pool waits, timeouts, sizes).
func (s *sample) addOther(f *dto.MetricFamily, m *dto.Metric) {
	name := f.GetName()
	v := scalar(m)
	if m.Histogram != nil {
		v = float64(m.Histogram.GetSampleCount())
	}
	if m.Summary != nil {
		v = float64(m.Summary.GetSampleCount())
	}
	s.scalars[name] += v
	if !strings.HasPrefix(name, storePrefix) && !strings.HasPrefix(name, redisPrefix) {
		return
	}
	kind := "gauge"
	if t := f.GetType(); t == dto.MetricType_COUNTER || t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY {
		kind = "counter"
	}
	s.extra = append(s.extra, metric{name: seriesName(name, m), kind: kind, value: v, family: name})
}

func readHist(m *dto.Metric) hist {
	h := m.GetHistogram()
	out := hist{count: float64(h.GetSampleCount()), sum: h.GetSampleSum()}
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount()))
	}
	return out
}

func scalar(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// seriesName is name{k="v",…}, or name alone without labels.
func seriesName(name string, m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	for i, l := range m.GetLabel() {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

// rate is the per-second increase of counter from prev to cur. A counter
// that went down was reset: its current value is the increase.
func rate(cur, prev, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	d := cur - prev
	if d < 0 {
		d = cur
	}
	return d / seconds
}
