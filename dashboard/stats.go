package dashboard

import (
	"cmp"
	"slices"
	"strconv"
	"time"
)

// Stats is the answer of GET /api/stats: the node's numbers now, rates over
// the interval since the previous sample, and recent history for charts.
type Stats struct {
	Node        string             `json:"node,omitempty"`
	Time        time.Time          `json:"time"`
	Seq         uint64             `json:"seq"`        // increases with every new sample
	IntervalS   float64            `json:"interval_s"` // between the two latest samples; 0 for the first
	UptimeS     float64            `json:"uptime_s,omitempty"`
	Connections float64            `json:"connections"`
	Rates       Flow               `json:"rates"`  // per second
	Totals      Flow               `json:"totals"` // since the process started
	Latency     Latency            `json:"latency"`
	Store       Store              `json:"store"`
	Sockets     map[string]float64 `json:"sockets"` // by TCP state; null when not exported
	Runtime     Runtime            `json:"runtime"`
	Closes      []Close            `json:"closes"`
	Series      Series             `json:"series"`
}

// Flow counts message traffic; in Stats.Rates per second, in Stats.Totals
// since start.
type Flow struct {
	Published   float64 `json:"published"`
	Delivered   float64 `json:"delivered"`
	Acked       float64 `json:"acked"`
	Redelivered float64 `json:"redelivered"`
	Expired     float64 `json:"expired"`
	Dead        float64 `json:"dead"`
}

// Latency is the delivery latency, publish to first write, from the
// tether_delivery_latency_seconds histogram: over the last WindowS seconds
// and since start. A quantile without observations is null.
type Latency struct {
	WindowS     float64  `json:"window_s"`
	Count       float64  `json:"count"` // deliveries in the window
	P50S        *float64 `json:"p50_s"`
	P99S        *float64 `json:"p99_s"`
	TotalCount  float64  `json:"total_count"`
	TotalP50S   *float64 `json:"total_p50_s"`
	TotalP99S   *float64 `json:"total_p99_s"`
	MaxBucketS  float64  `json:"max_bucket_s,omitempty"` // the highest finite bucket bound
	AboveMax    float64  `json:"above_max_bucket"`       // window deliveries slower than MaxBucketS
	Unavailable bool     `json:"unavailable,omitempty"`  // the histogram is not exported
}

// Store is the health of the store: calls and failures by operation.
type Store struct {
	// Servers are the servers the store uses now (Config.StoreServers).
	Servers     []string     `json:"servers,omitempty"`
	Ops         []StoreOp    `json:"ops"` // sorted by op
	ErrorsTotal float64      `json:"errors_total"`
	ErrorsRate  float64      `json:"errors_rate"` // per second
	Errors      []StoreError `json:"errors"`      // sorted by op and kind
	Other       []Metric     `json:"other"`       // other tether_store_* / tether_redis_* series
}

// StoreOp is one store operation over the latency window.
type StoreOp struct {
	Op     string   `json:"op"`
	Rate   float64  `json:"rate"` // calls per second over the window
	P50S   *float64 `json:"p50_s"`
	P99S   *float64 `json:"p99_s"`
	MeanS  *float64 `json:"mean_s"`
	Total  float64  `json:"total"`
	Errors float64  `json:"errors"` // since start, all kinds
}

// StoreError is one tether_store_errors_total series.
type StoreError struct {
	Op    string  `json:"op"`
	Kind  string  `json:"kind"`
	Total float64 `json:"total"`
	Rate  float64 `json:"rate"`
}

// Metric is a series shown as it is.
type Metric struct {
	Name  string   `json:"name"`
	Kind  string   `json:"kind"` // gauge or counter
	Value float64  `json:"value"`
	Rate  *float64 `json:"rate,omitempty"` // counters, per second
}

// Runtime is the process: goroutines, threads, memory, descriptors. A value
// the gatherer does not export is null.
type Runtime struct {
	Goroutines    *float64 `json:"goroutines"`
	Threads       *float64 `json:"threads"`
	ResidentBytes *float64 `json:"resident_bytes"`
	HeapBytes     *float64 `json:"heap_bytes"`
	OpenFDs       *float64 `json:"open_fds"`
	MaxFDs        *float64 `json:"max_fds"`
}

// Close counts sessions the server closed with one close code.
type Close struct {
	Code  string  `json:"code"`
	Total float64 `json:"total"`
	Rate  float64 `json:"rate"`
}

// Series is the recent history, one entry per sample, oldest first.
type Series struct {
	T             []int64    `json:"t"` // unix milliseconds
	Connections   []float64  `json:"connections"`
	Published     []float64  `json:"published"`
	Delivered     []float64  `json:"delivered"`
	Acked         []float64  `json:"acked"`
	Redelivered   []float64  `json:"redelivered"`
	Expired       []float64  `json:"expired"`
	P50S          []*float64 `json:"p50_s"`
	P99S          []*float64 `json:"p99_s"`
	StoreErrors   []float64  `json:"store_errors"` // per second
	Goroutines    []*float64 `json:"goroutines"`
	ResidentBytes []*float64 `json:"resident_bytes"`
}

// point is one sample with what it adds to the series.
type point struct {
	s         *sample
	flow      Flow // rates since the previous point
	p50, p99  *float64
	storeErrs float64
}

// history is a ring of the latest points.
type history struct {
	points []point // oldest first
	limit  int
	seq    uint64
}

// add appends s and returns its point, computed against the previous one.
func (h *history) add(s *sample) point {
	p := point{s: s}
	if n := len(h.points); n > 0 {
		prev := h.points[n-1].s
		dt := s.at.Sub(prev.at).Seconds()
		p.flow = flowRates(s, prev, dt)
		d := s.latency.sub(prev.latency)
		p.p50, p.p99 = quantilePtr(d, 0.5), quantilePtr(d, 0.99)
		p.storeErrs = rate(sumErrs(s), sumErrs(prev), dt)
	}
	if len(h.points) == h.limit {
		h.points = slices.Delete(h.points, 0, 1)
	}
	h.points = append(h.points, p)
	h.seq++
	return p
}

// since returns the oldest point at least window older than the newest,
// or the oldest there is.
func (h *history) since(window time.Duration) point {
	newest := h.points[len(h.points)-1].s.at
	for i := len(h.points) - 1; i >= 0; i-- {
		if newest.Sub(h.points[i].s.at) >= window {
			return h.points[i]
		}
	}
	return h.points[0]
}

// stats computes the answer from the newest point; the history must not
// be empty.
func (h *history) stats(node string, window time.Duration) *Stats {
	last := h.points[len(h.points)-1]
	s := last.s
	st := &Stats{Node: node, Time: s.at, Seq: h.seq, Connections: s.scalars[mConnections], Rates: last.flow, Totals: totals(s)}
	if len(h.points) > 1 {
		st.IntervalS = s.at.Sub(h.points[len(h.points)-2].s.at).Seconds()
	}
	if start, ok := s.scalars[mStartTime]; ok && start > 0 {
		st.UptimeS = float64(s.at.UnixMilli())/1000 - start
	}
	old := h.since(window)
	span := s.at.Sub(old.s.at).Seconds()
	st.Latency = latency(s, old.s, span)
	st.Store = store(s, old.s, span, last)
	st.Sockets = s.sockets
	st.Runtime = runtimeOf(s)
	st.Closes = closes(s, old.s, span)
	st.Series = h.series()
	return st
}

func (h *history) series() Series {
	var sr Series
	for _, p := range h.points {
		sr.T = append(sr.T, p.s.at.UnixMilli())
		sr.Connections = append(sr.Connections, p.s.scalars[mConnections])
		sr.Published = append(sr.Published, p.flow.Published)
		sr.Delivered = append(sr.Delivered, p.flow.Delivered)
		sr.Acked = append(sr.Acked, p.flow.Acked)
		sr.Redelivered = append(sr.Redelivered, p.flow.Redelivered)
		sr.Expired = append(sr.Expired, p.flow.Expired)
		sr.P50S = append(sr.P50S, p.p50)
		sr.P99S = append(sr.P99S, p.p99)
		sr.StoreErrors = append(sr.StoreErrors, p.storeErrs)
		sr.Goroutines = append(sr.Goroutines, lookup(p.s, mGoroutines))
		sr.ResidentBytes = append(sr.ResidentBytes, lookup(p.s, mResident))
	}
	return sr
}

func totals(s *sample) Flow {
	return Flow{
		Published:   s.scalars[mPublished],
		Delivered:   s.scalars[mDeliveries],
		Acked:       s.scalars[mAcks],
		Redelivered: s.scalars[mRedeliveries],
		Expired:     s.scalars[mExpired],
		Dead:        s.scalars[mDead],
	}
}

func flowRates(cur, prev *sample, dt float64) Flow {
	c, p := totals(cur), totals(prev)
	return Flow{
		Published:   rate(c.Published, p.Published, dt),
		Delivered:   rate(c.Delivered, p.Delivered, dt),
		Acked:       rate(c.Acked, p.Acked, dt),
		Redelivered: rate(c.Redelivered, p.Redelivered, dt),
		Expired:     rate(c.Expired, p.Expired, dt),
		Dead:        rate(c.Dead, p.Dead, dt),
	}
}

func latency(s, old *sample, span float64) Latency {
	l := Latency{WindowS: span, TotalCount: s.latency.count}
	if len(s.latency.bounds) == 0 {
		l.Unavailable = true
		return l
	}
	l.MaxBucketS = s.latency.bounds[len(s.latency.bounds)-1]
	d := s.latency
	if old != s {
		d = s.latency.sub(old.latency)
	}
	l.Count = d.count
	l.AboveMax = d.count - d.counts[len(d.counts)-1]
	l.P50S, l.P99S = quantilePtr(d, 0.5), quantilePtr(d, 0.99)
	l.TotalP50S, l.TotalP99S = quantilePtr(s.latency, 0.5), quantilePtr(s.latency, 0.99)
	return l
}

func store(s, old *sample, span float64, last point) Store {
	st := Store{ErrorsTotal: sumErrs(s), ErrorsRate: last.storeErrs, Ops: []StoreOp{}, Errors: []StoreError{}, Other: []Metric{}}
	errsByOp := make(map[string]float64)
	for k, v := range s.errs {
		errsByOp[k.op] += v
		st.Errors = append(st.Errors, StoreError{Op: k.op, Kind: k.kind, Total: v, Rate: rate(v, old.errs[k], span)})
	}
	slices.SortFunc(st.Errors, func(a, b StoreError) int {
		return cmp.Or(cmp.Compare(a.Op, b.Op), cmp.Compare(a.Kind, b.Kind))
	})
	for op, h := range s.ops {
		d := h
		if old != s {
			d = h.sub(old.ops[op])
		}
		o := StoreOp{Op: op, Total: h.count, Errors: errsByOp[op], P50S: quantilePtr(d, 0.5), P99S: quantilePtr(d, 0.99)}
		if span > 0 {
			o.Rate = d.count / span
		}
		if d.count > 0 {
			mean := d.sum / d.count
			o.MeanS = &mean
		}
		st.Ops = append(st.Ops, o)
	}
	slices.SortFunc(st.Ops, func(a, b StoreOp) int { return cmp.Compare(a.Op, b.Op) })
	prev := make(map[string]float64, len(old.extra))
	for _, m := range old.extra {
		prev[m.name] = m.value
	}
	for _, m := range s.extra {
		out := Metric{Name: m.name, Kind: m.kind, Value: m.value}
		if m.kind == "counter" {
			r := rate(m.value, prev[m.name], span)
			out.Rate = &r
		}
		st.Other = append(st.Other, out)
	}
	slices.SortFunc(st.Other, func(a, b Metric) int { return cmp.Compare(a.Name, b.Name) })
	return st
}

func sumErrs(s *sample) float64 {
	var n float64
	for _, v := range s.errs {
		n += v
	}
	return n
}

func runtimeOf(s *sample) Runtime {
	return Runtime{
		Goroutines:    lookup(s, mGoroutines),
		Threads:       lookup(s, mThreads),
		ResidentBytes: lookup(s, mResident),
		HeapBytes:     lookup(s, mHeap),
		OpenFDs:       lookup(s, mOpenFDs),
		MaxFDs:        lookup(s, mMaxFDs),
	}
}

func closes(s, old *sample, span float64) []Close {
	out := []Close{}
	for code, v := range s.closes {
		out = append(out, Close{Code: code, Total: v, Rate: rate(v, old.closes[code], span)})
	}
	slices.SortFunc(out, func(a, b Close) int {
		x, _ := strconv.Atoi(a.Code)
		y, _ := strconv.Atoi(b.Code)
		return cmp.Or(cmp.Compare(x, y), cmp.Compare(a.Code, b.Code))
	})
	return out
}

func lookup(s *sample, name string) *float64 {
	v, ok := s.scalars[name]
	if !ok {
		return nil
	}
	return &v
}

func quantilePtr(h hist, q float64) *float64 {
	v, ok := h.quantile(q)
	if !ok {
		return nil
	}
	return &v
}
