package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPerConn(t *testing.T) {
	before := Sample{RSSBytes: 10 << 20, HeapInuse: 2 << 20, Goroutines: 30, HeapIdle: 1 << 20, HeapReleased: 1 << 20}
	after := Sample{RSSBytes: 10<<20 + 15000*2048, HeapInuse: 2<<20 + 15000*512, Goroutines: 30 + 15000,
		HeapIdle: 1<<20 + 15000*1024, HeapReleased: 1 << 20} // 1 KiB each of free heap not yet returned
	p := perConn(before, after, 15000)
	if !near(p.RSSKiB, 2) || !near(p.RSSInUseKiB, 1) || !near(p.HeapKiB, 0.5) || !near(p.Goroutines, 1) {
		t.Errorf("perConn = %+v, want 2 KiB RSS of which 1 in use, 0.5 KiB heap, 1 goroutine", p)
	}
	// Memory can shrink (GC): the difference is reported as it is.
	if p := perConn(after, before, 15000); !near(p.RSSKiB, -2) {
		t.Errorf("shrinking RSS: %+v", p)
	}
	if p := perConn(before, after, 0); p != nil {
		t.Errorf("no connections: %+v, want nil", p)
	}
}

func TestFlowAndRates(t *testing.T) {
	f := flow(Sample{Published: 10, Deliveries: 100, Acks: 90, Redeliveries: 1}, Sample{Published: 1010, Deliveries: 100100, Acks: 100090, Redeliveries: 3})
	if *f != (NodeFlow{Published: 1000, Deliveries: 100000, Acks: 100000, Redeliveries: 2}) {
		t.Errorf("flow = %+v", f)
	}
	if got := perSecond(3000, 30*time.Second); got != 100 {
		t.Errorf("perSecond = %v, want 100", got)
	}
	if got := perSecond(5, 0); got != 0 {
		t.Errorf("perSecond over nothing = %v, want 0", got)
	}
}

func TestPercentiles(t *testing.T) {
	h := newHist()
	for ms := int64(1); ms <= 1000; ms++ { // 1 … 1000 ms, uniform
		_ = h.RecordValue(ms * 1000)
	}
	p := percentiles(h)
	check := func(name string, got, want float64) {
		if math.Abs(got-want) > want*0.002+0.001 { // 3 significant digits
			t.Errorf("%s = %v ms, want %v", name, got, want)
		}
	}
	if p.Count != 1000 {
		t.Errorf("count %d", p.Count)
	}
	check("p50", p.P50, 500)
	check("p90", p.P90, 900)
	check("p99", p.P99, 990)
	check("p99.9", p.P999, 999)
	check("max", p.Max, 1000)
	check("mean", p.Mean, 500.5)
	if (percentiles(newHist()) != Percentiles{}) || (percentiles(nil) != Percentiles{}) {
		t.Error("empty histogram: want zero percentiles")
	}
	// A histogram survives the trip through a worker report.
	back, err := decodeHist(encodeHist(h))
	if err != nil || percentiles(back) != p {
		t.Errorf("decoded %+v, %v; want %+v", percentiles(back), err, p)
	}
}

func TestProblems(t *testing.T) {
	r := &Report{Connect: ConnectReport{Attempted: 10, Errors: 2}, Messages: &MessagesReport{
		TargetRate: 100, PublishedPerSecond: 99, Lost: 3, Duplicates: 4, Redelivered: 1,
	}}
	got := strings.Join(r.problems(), "\n")
	for _, want := range []string{"2 of 10 devices could not connect", "3 deliveries lost", "3 duplicates arrived as first attempts"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "below the target") {
		t.Errorf("99 of 100 msgs/s is not below the target:\n%s", got)
	}
	if !r.Failed() {
		t.Error("lost messages: Failed() = false")
	}
	r.Messages.Lost, r.Messages.PublishedPerSecond = 0, 50
	if r.Failed() || !strings.Contains(strings.Join(r.problems(), "\n"), "below the target of 100") {
		t.Errorf("Failed %v, problems %q", r.Failed(), r.problems())
	}
	if (&Report{Mode: "idle"}).Failed() {
		t.Error("idle run: Failed() = true")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
process_resident_memory_bytes 1.3103104e+07
go_memstats_heap_inuse_bytes 2.932736e+06 1700000000000
tether_connections 15000
tether_store_op_seconds_count{op="ack"} 7
tether_delivery_latency_seconds_bucket{le="+Inf"} 9
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"go_goroutines": 42, "process_resident_memory_bytes": 13103104,
		"go_memstats_heap_inuse_bytes": 2932736, "tether_connections": 15000}
	if len(m) != len(want) {
		t.Errorf("parsed %v, want %v (labelled series skipped)", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines many\n")); err == nil {
		t.Error("a value that is not a number: no error")
	}
}

func TestTimeline(t *testing.T) {
	start := time.Unix(1000, 0)
	tl := timeline{start: start}
	h := newHist()
	_ = h.RecordValue(2000) // 2 ms
	tl.progress(start.Add(300*time.Millisecond), 5, 10, h)
	tl.progress(start.Add(700*time.Millisecond), 7, 12, nil)
	tl.published(start.Add(900*time.Millisecond), 3)
	tl.published(start.Add(2500*time.Millisecond), 4)
	tl.published(start.Add(-time.Second), 99) // before the start: dropped
	p := tl.points()
	if len(p) != 3 {
		t.Fatalf("%d points, want 3: %+v", len(p), p)
	}
	if p[0].Delivered != 12 || p[0].Open != 12 || p[0].Published != 3 || p[0].P50 != 2 {
		t.Errorf("second 0: %+v", p[0])
	}
	if p[1].Open != 12 || p[1].Delivered != 0 || p[1].P50 != 0 {
		t.Errorf("second 1 keeps the open count and nothing else: %+v", p[1])
	}
	if p[2].Published != 4 || p[2].T != 2 {
		t.Errorf("second 2: %+v", p[2])
	}
}

func TestMergeResults(t *testing.T) {
	a := &workerResult{Counters: Counters{Connected: 10, Delivered: 100, Open: 10}, Addressed: 10, Expected: 100,
		Lost: 1, LastDelivery: 5, ErrorKinds: map[string]int64{"connect: timeout": 1}, Errors: []string{"e1", "e2"}}
	b := &workerResult{Counters: Counters{Connected: 5, Delivered: 50, Open: 4, Disconnects: 1}, Addressed: 5, Expected: 50,
		LastDelivery: 9, ErrorKinds: map[string]int64{"connect: timeout": 2, "connection: http 503": 1},
		CloseCodes: map[string]int64{"4503": 1}, Errors: []string{"e2", "e3"}}
	var all workerResult
	all.merge(a)
	all.merge(b)
	if all.Counters.Connected != 15 || all.Counters.Delivered != 150 || all.Counters.Open != 14 || all.Counters.Disconnects != 1 {
		t.Errorf("counters %+v", all.Counters)
	}
	if all.Addressed != 15 || all.Expected != 150 || all.Lost != 1 || all.LastDelivery != 9 {
		t.Errorf("result %+v", all)
	}
	if all.ErrorKinds["connect: timeout"] != 3 || all.CloseCodes["4503"] != 1 || strings.Join(all.Errors, ",") != "e1,e2,e3" {
		t.Errorf("kinds %v, codes %v, errors %v", all.ErrorKinds, all.CloseCodes, all.Errors)
	}
	if k := kindsOf(all.ErrorKinds, "connect: "); len(k) != 1 || k["timeout"] != 3 {
		t.Errorf("kindsOf = %v", k)
	}
}

func TestAckQueue(t *testing.T) {
	var q ackQueue
	d1, d2 := &device{}, &device{}
	q.push(d1)
	mid := time.Now()
	time.Sleep(time.Millisecond)
	q.push(d2)
	if got := q.due(mid.Add(-time.Hour)); len(got) != 0 {
		t.Errorf("nothing due yet, got %d", len(got))
	}
	if got := q.due(mid); len(got) != 1 || got[0] != d1 {
		t.Errorf("due(mid) = %v, want d1", got)
	}
	if got := q.due(time.Now()); len(got) != 1 || got[0] != d2 {
		t.Errorf("due(now) = %v, want d2", got)
	}
}

func sampleReport() *Report {
	r := &Report{Run: "abcd1234", Started: time.Unix(0, 0), Mode: "publish",
		Settings: Settings{Conns: 100, Groups: 10, Rate: 100, Size: 256, Duration: 10, Workers: 1, Sources: 1},
		Connect:  ConnectReport{Attempted: 100, Connected: 100, Seconds: 0.5, PerSecond: 200},
		Messages: &MessagesReport{TargetRate: 100, Published: 1000, PublishedPerSecond: 100, Expected: 10000, Delivered: 10000,
			Latency: Percentiles{Count: 10000, P50: 1.5, P90: 2, P99: 12.5, P999: 150, Max: 200}},
		Node: NodeReport{Before: &Sample{RSSBytes: 1 << 20}, After: &Sample{RSSBytes: 2 << 20}, Conns: 100,
			Per: &PerConn{RSSKiB: 10.24, HeapKiB: 5, Goroutines: 0}},
		Timeline: []Point{{T: 0, Open: 100, Published: 100, Delivered: 1000, P50: 1, P99: 2, Max: 3}, {T: 1, Open: 100}},
	}
	r.Problems = r.problems()
	return r
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"100 of 100 connected", "p50 1.50  p90 2.00  p99 12.5  p99.9 150  max 200 ms",
		"10.24 KiB RSS", "lost", "10000 of 10000 expected"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	// The JSON form carries the same figures.
	j, err := json.Marshal(sampleReport())
	if err != nil || !strings.Contains(string(j), `"p99_9":150`) || !strings.Contains(string(j), `"rss_kib":10.24`) {
		t.Errorf("JSON %s, %v", j, err)
	}
}

func TestWritePlot(t *testing.T) {
	var b bytes.Buffer
	r := sampleReport()
	r.Run = "<x>"
	if err := r.WritePlot(&b); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if strings.Count(s, "<svg") != 4 || !strings.Contains(s, "<polyline") || strings.Contains(s, "<x>") || strings.Contains(s, "NaN") {
		t.Errorf("plot:\n%s", s)
	}
	r.Timeline = nil
	b.Reset()
	if err := r.WritePlot(&b); err != nil || !strings.Contains(b.String(), "no data") {
		t.Errorf("empty timeline: %v\n%s", err, b.String())
	}
}
