package bench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is what a run measured. `tether bench --json` prints it as one
// JSON object.
type Report struct {
	Run      string    `json:"run"` // id of the run, in every message's data
	Started  time.Time `json:"started"`
	Mode     string    `json:"mode"` // "publish" or "idle"
	Settings Settings  `json:"settings"`

	Connect     ConnectReport     `json:"connect"`
	Connections ConnectionsReport `json:"connections"`
	Messages    *MessagesReport   `json:"messages,omitempty"` // nil in idle mode
	Node        NodeReport        `json:"node"`
	Phases      []Phase           `json:"phases,omitempty"`
	Timeline    []Point           `json:"timeline,omitempty"`
	// Problems lists what went wrong, for a person; empty when nothing did.
	Problems []string `json:"problems"`
}

// Phase is a phase of the run, in seconds since the timeline's start.
type Phase struct {
	Name string  `json:"name"` // "connect", "publish" or "hold"
	From float64 `json:"from_s"`
	To   float64 `json:"to_s"`
}

// Settings are the run's settings after defaults.
type Settings struct {
	URL        string  `json:"url"`
	AdminURL   string  `json:"admin_url"`
	PublishURL string  `json:"publish_url"` // messages are published here; devices connect to URL
	Conns      int     `json:"conns"`
	Groups     int     `json:"groups"`
	Direct     bool    `json:"direct"` // messages to the devices, not the groups
	Batch      int     `json:"batch"`  // messages per publish request; 0: whatever fell due
	Publishers int     `json:"publishers"`
	Rate       int     `json:"rate"`
	Size       int     `json:"size"`
	Duration   float64 `json:"duration_s"`
	Ramp       int     `json:"ramp"`
	Grace      float64 `json:"grace_s"`
	Idle       bool    `json:"idle"`
	Workers    int     `json:"workers"`
	PerAddress int     `json:"per_address"`
	Sources    int     `json:"source_addresses"`
}

// ConnectReport is the connect phase.
type ConnectReport struct {
	Attempted  int64            `json:"attempted"`
	Connected  int64            `json:"connected"`
	Errors     int64            `json:"errors"`
	Seconds    float64          `json:"seconds"`
	PerSecond  float64          `json:"per_second"` // connected ÷ seconds
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Latency    Percentiles      `json:"latency_ms"` // dial to welcome
}

// ConnectionsReport is what happened to the connections after they were up.
type ConnectionsReport struct {
	OpenAtEnd   int64            `json:"open_at_end"`
	Disconnects int64            `json:"disconnects"` // ended by the node or the network
	Reconnects  int64            `json:"reconnects"`
	CloseCodes  map[string]int64 `json:"close_codes,omitempty"`
	ErrorKinds  map[string]int64 `json:"error_kinds,omitempty"` // reconnect failures, error frames
	Errors      []string         `json:"errors,omitempty"`      // first few, verbatim
}

// MessagesReport is the publish → deliver → ack flow.
type MessagesReport struct {
	TargetRate    int   `json:"target_rate"`
	Published     int64 `json:"published"`      // accepted by the node
	PublishErrors int64 `json:"publish_errors"` // failures other than refusals
	// PublishRefused counts messages the node refused with 503 (overloaded
	// or unavailable, SPEC section 3): not accepted, so not expected.
	PublishRefused      int64            `json:"publish_refused"`
	PublishRefusedKinds map[string]int64 `json:"publish_refused_kinds,omitempty"`
	RefusedNoRetryAfter int64            `json:"publish_refused_no_retry_after"` // 503 answers without Retry-After
	PublishErrorKinds   map[string]int64 `json:"publish_error_kinds,omitempty"`
	PublishErrorSample  []string         `json:"publish_error_sample,omitempty"`
	PublishSeconds      float64          `json:"publish_seconds"`
	PublishedPerSecond  float64          `json:"published_per_second"`
	PublishLatency      Percentiles      `json:"publish_latency_ms"` // one publish request
	Recipients          int64            `json:"recipients"`         // summed over the node's answers
	Addressed           int64            `json:"addressed_devices"`  // online when publishing began
	Expected            int64            `json:"expected"`           // deliveries due to addressed devices
	Delivered           int64            `json:"delivered"`          // first receipts
	Received            int64            `json:"received"`           // message frames, duplicates included
	Duplicates          int64            `json:"duplicates"`
	Redelivered         int64            `json:"redelivered"` // frames with attempt > 1
	Acked               int64            `json:"acked"`       // ids sent in ack frames
	AckFrames           int64            `json:"ack_frames"`
	Lost                int64            `json:"lost"` // expected, never received
	LostSample          []string         `json:"lost_sample,omitempty"`
	Unconfirmed         int64            `json:"unconfirmed"` // deliveries of publishes that failed
	Mismatch            int64            `json:"mismatch"`    // delivered under another id than published
	Stale               int64            `json:"stale"`       // messages of earlier runs
	Foreign             int64            `json:"foreign"`     // messages that are not the bench's
	DeliverySeconds     float64          `json:"delivery_seconds"`
	DeliveredPerSecond  float64          `json:"delivered_per_second"`
	Latency             Percentiles      `json:"latency_ms"` // published_at to receipt
	// DeviceWorst summarises, over the addressed devices, each device's
	// highest latency: a wide spread means some devices were served far
	// later than others.
	DeviceWorst Percentiles `json:"device_worst_latency_ms"`
}

// NodeReport is the node's memory and goroutines, from its /metrics.
type NodeReport struct {
	Before *Sample  `json:"before,omitempty"` // before connecting
	After  *Sample  `json:"after,omitempty"`  // once every connection was up
	End    *Sample  `json:"end,omitempty"`    // after the last phase
	Conns  float64  `json:"conns"`            // tether_connections after − before
	Per    *PerConn `json:"per_conn,omitempty"`
	// PerHeld (--idle) is the cost per connection after holding them idle
	// for --duration (End, read after a GC): the connect storm's garbage
	// that the node has given back by then is left out.
	PerHeld *PerConn  `json:"per_conn_held,omitempty"`
	Flow    *NodeFlow `json:"flow,omitempty"` // counter deltas over the publish phase
	Error   string    `json:"error,omitempty"`
}

// PerConn is the node's cost of one connection: the difference between
// two samples divided by the connections added.
type PerConn struct {
	RSSKiB float64 `json:"rss_kib"`
	// RSSInUseKiB leaves out heap memory that is free but still mapped
	// (HeapIdle − HeapReleased): what RSS would be after
	// debug.FreeOSMemory, the method of docs/notes/wsmem.md.
	RSSInUseKiB float64 `json:"rss_in_use_kib"`
	HeapKiB     float64 `json:"heap_kib"`
	Goroutines  float64 `json:"goroutines"`
}

// NodeFlow is what the node counted over the publish phase and the grace
// period.
type NodeFlow struct {
	Published    float64 `json:"published"`
	Deliveries   float64 `json:"deliveries"`
	Acks         float64 `json:"acks"`
	Redeliveries float64 `json:"redeliveries"`
}

// Percentiles summarise a latency histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// percentiles summarises h, which holds microseconds.
func percentiles(h *hdrhistogram.Histogram) Percentiles {
	if h == nil || h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// perConn returns the node's cost per connection between before and after
// for conns connections; nil when conns is not positive.
func perConn(before, after Sample, conns float64) *PerConn {
	if conns <= 0 {
		return nil
	}
	return &PerConn{
		RSSKiB:      (after.RSSBytes - before.RSSBytes) / 1024 / conns,
		RSSInUseKiB: (after.rssInUse() - before.rssInUse()) / 1024 / conns,
		HeapKiB:     (after.HeapInuse - before.HeapInuse) / 1024 / conns,
		Goroutines:  (after.Goroutines - before.Goroutines) / conns,
	}
}

// rssInUse is RSS less the heap memory that is free but still mapped.
func (s Sample) rssInUse() float64 { return s.RSSBytes - (s.HeapIdle - s.HeapReleased) }

// flow returns the node's counter deltas between two samples.
func flow(before, after Sample) *NodeFlow {
	return &NodeFlow{
		Published:    after.Published - before.Published,
		Deliveries:   after.Deliveries - before.Deliveries,
		Acks:         after.Acks - before.Acks,
		Redeliveries: after.Redeliveries - before.Redeliveries,
	}
}

// perSecond returns n ÷ d in seconds; 0 for an empty interval.
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// problems lists what a person must know went wrong in r.
func (r *Report) problems() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if r.Connect.Errors > 0 {
		add("%d of %d devices could not connect", r.Connect.Errors, r.Connect.Attempted)
	}
	if r.Connections.Disconnects > 0 {
		add("the node ended %d connections during the run", r.Connections.Disconnects)
	}
	if m := r.Messages; m != nil {
		if m.Lost > 0 {
			add("%d deliveries lost: published, addressed to a connected device, never received", m.Lost)
		}
		if m.Mismatch > 0 {
			add("%d messages arrived under another id than the publish returned", m.Mismatch)
		}
		if m.PublishErrors > 0 {
			add("%d publishes failed", m.PublishErrors)
		}
		if m.RefusedNoRetryAfter > 0 {
			add("%d publish requests were answered 503 without Retry-After", m.RefusedNoRetryAfter)
		}
		if m.Duplicates > m.Redelivered {
			add("%d duplicates arrived as first attempts (attempt 1 twice)", m.Duplicates-m.Redelivered)
		}
		if m.TargetRate > 0 && m.PublishRefused == 0 && m.PublishedPerSecond < 0.95*float64(m.TargetRate) {
			add("published %.0f msgs/s, below the target of %d: the node (or this machine) did not keep up", m.PublishedPerSecond, m.TargetRate)
		}
	}
	if r.Node.Error != "" {
		add("node figures incomplete: %s", r.Node.Error)
	}
	return p
}

// Failed reports whether the run saw a correctness failure: lost messages
// or messages under the wrong id.
func (r *Report) Failed() bool {
	return r.Messages != nil && (r.Messages.Lost > 0 || r.Messages.Mismatch > 0)
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	s := r.Settings
	fmt.Fprintf(tw, "tether bench %s (%s), %s\n", r.Run, r.Mode, r.Started.Format(time.RFC3339))
	fmt.Fprintf(tw, "node\t%s, admin %s\n", s.URL, s.AdminURL)
	if s.PublishURL != "" && s.PublishURL != s.URL && r.Mode != "idle" {
		fmt.Fprintf(tw, "publish through\t%s; the devices connect to %s\n", s.PublishURL, s.URL)
	}
	if r.Mode == "idle" {
		fmt.Fprintf(tw, "load\t%d connections held %v, %d workers, %d source addresses\n", s.Conns, secs(s.Duration), s.Workers, s.Sources)
	} else {
		fmt.Fprintf(tw, "load\t%d connections in %d groups, %d msgs/s of %d bytes for %v, %d workers, %d source addresses\n",
			s.Conns, s.Groups, s.Rate, s.Size, secs(s.Duration), s.Workers, s.Sources)
	}
	c := r.Connect
	fmt.Fprintf(tw, "\nconnect\t%d of %d connected in %.1f s (%.0f/s), %d errors%s\n", c.Connected, c.Attempted, c.Seconds, c.PerSecond, c.Errors, kinds(c.ErrorKinds))
	fmt.Fprintf(tw, "connect latency\t%s\n", c.Latency.text())
	cs := r.Connections
	fmt.Fprintf(tw, "connections\t%d open at the end, %d ended by the node%s, %d reconnects\n", cs.OpenAtEnd, cs.Disconnects, kinds(cs.CloseCodes), cs.Reconnects)
	if m := r.Messages; m != nil {
		fmt.Fprintf(tw, "\npublished\t%d (%.0f/s of %d/s target), %d failed%s; %d recipients\n", m.Published, m.PublishedPerSecond, m.TargetRate, m.PublishErrors, kinds(m.PublishErrorKinds), m.Recipients)
		if m.PublishRefused > 0 {
			fmt.Fprintf(tw, "refused\t%d with 503%s (not accepted, not expected); %d answers without Retry-After\n",
				m.PublishRefused, kinds(m.PublishRefusedKinds), m.RefusedNoRetryAfter)
		}
		fmt.Fprintf(tw, "publish request\t%s\n", m.PublishLatency.text())
		fmt.Fprintf(tw, "delivered\t%d of %d expected to %d devices (%.0f/s), %d frames received\n", m.Delivered, m.Expected, m.Addressed, m.DeliveredPerSecond, m.Received)
		fmt.Fprintf(tw, "acked\t%d ids in %d frames\n", m.Acked, m.AckFrames)
		fmt.Fprintf(tw, "duplicates\t%d (%d frames were redeliveries)\n", m.Duplicates, m.Redelivered)
		fmt.Fprintf(tw, "lost\t%d\n", m.Lost)
		if m.Unconfirmed+m.Mismatch+m.Stale+m.Foreign > 0 {
			fmt.Fprintf(tw, "other\t%d unconfirmed, %d mismatched ids, %d stale, %d foreign\n", m.Unconfirmed, m.Mismatch, m.Stale, m.Foreign)
		}
		fmt.Fprintf(tw, "latency\t%s\n", m.Latency.text())
		fmt.Fprintf(tw, "worst per device\t%s\n", m.DeviceWorst.text())
	}
	n := r.Node
	fmt.Fprintf(tw, "\nnode before\t%s\n", n.Before.text())
	fmt.Fprintf(tw, "node after connect\t%s\n", n.After.text())
	if p := n.Per; p != nil {
		fmt.Fprintf(tw, "per connection\t%.2f KiB RSS (%.2f KiB without free heap still mapped), %.2f KiB heap, %.2f goroutines (over %.0f connections)\n",
			p.RSSKiB, p.RSSInUseKiB, p.HeapKiB, p.Goroutines, n.Conns)
	}
	if p := n.PerHeld; p != nil {
		fmt.Fprintf(tw, "node after holding\t%s\n", n.End.text())
		fmt.Fprintf(tw, "per held connection\t%.2f KiB RSS (%.2f KiB without free heap still mapped), %.2f KiB heap, %.2f goroutines\n",
			p.RSSKiB, p.RSSInUseKiB, p.HeapKiB, p.Goroutines)
	}
	if f := n.Flow; f != nil {
		fmt.Fprintf(tw, "node counted\t%.0f published, %.0f deliveries, %.0f acks, %.0f redeliveries\n", f.Published, f.Deliveries, f.Acks, f.Redeliveries)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(tw, "\nproblems\t%s\n", strings.Join(r.Problems, "\n\t"))
	}
	if len(cs.Errors) > 0 {
		fmt.Fprintf(tw, "first errors\t%s\n", strings.Join(cs.Errors, "\n\t"))
	}
	if m := r.Messages; m != nil && len(m.LostSample) > 0 {
		fmt.Fprintf(tw, "lost (device id)\t%s\n", strings.Join(m.LostSample, "\n\t"))
	}
	return tw.Flush()
}

func (p Percentiles) text() string {
	if p.Count == 0 {
		return "none recorded"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms  (%d samples)",
		num(p.P50), num(p.P90), num(p.P99), num(p.P999), num(p.Max), p.Count)
}

func (s *Sample) text() string {
	if s == nil {
		return "not read"
	}
	return fmt.Sprintf("%.1f MiB RSS, %.1f MiB heap in use, %.0f goroutines, %.0f connections",
		s.RSSBytes/(1<<20), s.HeapInuse/(1<<20), s.Goroutines, s.Connections)
}

// num formats milliseconds with three significant digits at most.
func num(ms float64) string {
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f", ms)
	}
	return fmt.Sprintf("%.2f", ms)
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// kinds formats counts by kind as " (kind n, …)", most frequent first.
func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
