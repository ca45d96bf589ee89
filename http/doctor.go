package http

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/doctor"
)

// handleDoctor answers /debug/doctor: the `tether doctor --admin` report on
// this node, as JSON.
func (s *Server) handleDoctor(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, s.nodeReport(ctx))
}

func (s *Server) nodeReport(ctx context.Context) *doctor.NodeReport {
	rep := &doctor.NodeReport{
		Node:        s.hub.Config().Node,
		Time:        time.Now().UTC(),
		Ready:       "ok",
		Connections: s.hub.Connections(),
		Goroutines:  runtime.NumGoroutine(),
		RSSBytes:    residentBytes(),
	}
	if err := s.hub.Ready(ctx); err != nil {
		rep.Ready = err.Error()
	}
	lag, over := s.hub.Lag()
	rep.DeliveryLagSeconds, rep.Overloaded = lag.Seconds(), over
	rep.MaxDeliveryLagSeconds = s.hub.Config().MaxDeliveryLag.Seconds()
	if s.cfg.StoreServers != nil {
		rep.StoreServers = s.cfg.StoreServers()
	}
	rep.Sockets, _ = doctor.Sockets(s.listenPort())
	rep.Store = storeOps(s.cfg.Gatherer)
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err == nil {
		if d, err := doctor.ParseGoroutines(&buf); err == nil {
			rep.Dump = doctor.Analyze(d)
		}
	}
	rep.Judge()
	return rep
}

func (s *Server) listenPort() int {
	if tcp, ok := s.ln.Addr().(*net.TCPAddr); ok {
		return tcp.Port
	}
	return 0
}

// residentBytes reads VmRSS of this process; 0 when it cannot.
func residentBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// storeOps sums tether_store_op_seconds and tether_store_errors_total.
func storeOps(g prometheus.Gatherer) []doctor.StoreOp {
	if g == nil {
		return nil
	}
	mfs, err := g.Gather()
	if err != nil {
		return nil
	}
	ops := map[string]*doctor.StoreOp{}
	get := func(op string) *doctor.StoreOp {
		if ops[op] == nil {
			ops[op] = &doctor.StoreOp{Op: op}
		}
		return ops[op]
	}
	var order []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			op := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					op = l.GetValue()
				}
			}
			switch mf.GetName() {
			case "tether_store_op_seconds":
				h := m.GetHistogram()
				o := get(op)
				o.Calls = h.GetSampleCount()
				if o.Calls > 0 {
					o.MeanSeconds = h.GetSampleSum() / float64(o.Calls)
				}
				order = append(order, op)
			case "tether_store_errors_total":
				get(op).Errors += uint64(m.GetCounter().GetValue())
			}
		}
	}
	out := make([]doctor.StoreOp, 0, len(ops))
	for _, op := range order {
		out = append(out, *ops[op])
	}
	return out
}

// socketCollector exports tether_tcp_sockets{state}: the sockets of the
// listen port (server side) by TCP state, read from /proc/net/tcp{,6} at
// most every few seconds.
type socketCollector struct {
	port func() int
	desc *prometheus.Desc

	mu   sync.Mutex // guards following
	at   time.Time
	last doctor.SocketReport
}

// NewSocketCollector returns the collector of tether_tcp_sockets{state}
// that a node registers for its listen port: the server-side sockets of
// port (asked at each read) by TCP state, read from /proc/net/tcp{,6} at
// most every five seconds. A state with no socket is left out.
func NewSocketCollector(port func() int) prometheus.Collector {
	return newSocketCollector(port)
}

func newSocketCollector(port func() int) *socketCollector {
	return &socketCollector{port: port, desc: prometheus.NewDesc("tether_tcp_sockets",
		"Sockets of the listen port (server side) by TCP state.", []string{"state"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *socketCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *socketCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.at) > 5*time.Second {
		if r, err := doctor.Sockets(c.port()); err == nil {
			c.last, c.at = r, time.Now()
		}
	}
	r := c.last
	c.mu.Unlock()
	for _, st := range r.States {
		if st.Local > 0 {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Local), st.State)
		}
	}
}
