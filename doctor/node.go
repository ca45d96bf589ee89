package doctor

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// NodeSchema names the JSON form of NodeReport.
const NodeSchema = "tether.doctor.node/v1"

// NodeReport is one report on a running tether node: what /debug/doctor on
// its admin listener answers and `tether doctor --admin URL` prints.
type NodeReport struct {
	Schema      string    `json:"schema"`
	Node        string    `json:"node"`
	Time        time.Time `json:"time"`
	Verdict     Verdict   `json:"verdict"`
	Findings    []Finding `json:"findings"` // most severe first
	Ready       string    `json:"ready"`    // "ok" or why not
	Connections int       `json:"connections"`
	// DeliveryLagSeconds is the age of the oldest work the node has not
	// done; past a quarter of MaxDeliveryLagSeconds it refuses publishes
	// (Overloaded) until the lag falls below an eighth.
	DeliveryLagSeconds    float64      `json:"delivery_lag_seconds"`
	MaxDeliveryLagSeconds float64      `json:"max_delivery_lag_seconds"`
	Overloaded            bool         `json:"overloaded"`
	Goroutines            int          `json:"goroutines"`
	RSSBytes              int64        `json:"rss_bytes"`
	Sockets               SocketReport `json:"sockets"` // of the listen port
	Store                 []StoreOp    `json:"store"`
	// StoreServers are the servers the store uses now, when it has any (the
	// Redis primary, found through Sentinel after a failover).
	StoreServers []string `json:"store_servers,omitempty"`
	Dump         *Report  `json:"dump"` // the node's own goroutines, analysed
}

// StoreOp sums one store operation since the node started.
type StoreOp struct {
	Op          string  `json:"op"`
	Calls       uint64  `json:"calls"`
	Errors      uint64  `json:"errors"`
	MeanSeconds float64 `json:"mean_seconds"`
}

// Judge sets the findings and verdict of r from its numbers and its
// goroutine analysis.
func (r *NodeReport) Judge() {
	r.Schema = NodeSchema
	var fs []Finding
	if r.Dump != nil {
		fs = append(fs, r.Dump.Findings...)
	}
	if r.Ready != "ok" {
		fs = append(fs, Finding{Kind: "not-ready", Severity: SeverityCritical, Title: "not ready",
			Summary: "the node does not accept work: " + r.Ready})
	}
	est := r.Sockets.State("ESTABLISHED").Local
	if cw := r.Sockets.State("CLOSE_WAIT").Local; cw > max(10, est/100) {
		fs = append(fs, Finding{Kind: "close-wait", Severity: SeverityCritical, Title: "sockets in CLOSE_WAIT",
			Summary: fmt.Sprintf("%d sockets of the listen port are in CLOSE_WAIT: peers closed and the node did not", cw)})
	}
	if r.Overloaded {
		fs = append(fs, Finding{Kind: "overloaded", Severity: SeverityWarning, Title: "overloaded",
			Summary: fmt.Sprintf("the node is %.2fs behind (refusing past %.2fs): publishes are answered 503 overloaded with Retry-After", r.DeliveryLagSeconds, r.MaxDeliveryLagSeconds/4)})
	}
	if bound := 2*r.Connections + 1000; r.Goroutines > bound {
		fs = append(fs, Finding{Kind: "goroutines", Severity: SeverityWarning, Title: "too many goroutines",
			Summary:    fmt.Sprintf("%d goroutines for %d connections, more than 2 per connection + 1000", r.Goroutines, r.Connections),
			Goroutines: r.Goroutines})
	}
	for _, op := range r.Store {
		if op.Errors > 0 {
			fs = append(fs, Finding{Kind: "store-errors", Severity: SeverityInfo, Title: "store errors",
				Summary: fmt.Sprintf("%d of %d %s calls failed since start", op.Errors, op.Calls, op.Op)})
		}
	}
	sortFindings(fs)
	r.Findings = fs
	r.Verdict = Verdict{Severity: SeverityOK, Title: "healthy", Finding: -1}
	if len(fs) > 0 && fs[0].Severity.rank() >= SeverityWarning.rank() {
		r.Verdict = Verdict{Severity: fs[0].Severity, Title: fs[0].Title, Finding: 0}
	}
}

func sortFindings(fs []Finding) {
	for i := 1; i < len(fs); i++ { // stable insertion sort: few findings
		for j := i; j > 0 && fs[j].Severity.rank() > fs[j-1].Severity.rank(); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// WriteText prints the report for a person.
func (r *NodeReport) WriteText(w io.Writer) error {
	t := &textWriter{w: w}
	t.printf("tether node %s at %s\n\n", r.Node, r.Time.Format(time.RFC3339))
	t.printf("Verdict: %s — %s\n\n", upper(string(r.Verdict.Severity)), r.Verdict.Title)
	for i, f := range r.Findings {
		t.printf("%d. [%s] %s\n", i+1, f.Severity, f.Summary)
	}
	if len(r.Findings) > 0 {
		t.printf("\n")
	}
	t.printf("ready: %s   connections: %d   goroutines: %d   resident: %.1f MiB\n",
		r.Ready, r.Connections, r.Goroutines, float64(r.RSSBytes)/(1<<20))
	state := "accepting publishes"
	if r.Overloaded {
		state = "OVERLOADED: refusing publishes"
	}
	t.printf("delivery lag: %.3fs   refuses publishes past: %.3fs   %s\n\n", r.DeliveryLagSeconds, r.MaxDeliveryLagSeconds/4, state)
	_ = r.Sockets.WriteText(w)
	if len(r.StoreServers) > 0 {
		t.printf("\nStore servers: %s\n", strings.Join(r.StoreServers, ", "))
	}
	t.printf("\nStore since start:\n  %-14s %10s %8s %12s\n", "OP", "CALLS", "ERRORS", "MEAN")
	for _, op := range r.Store {
		t.printf("  %-14s %10d %8d %10.2fms\n", op.Op, op.Calls, op.Errors, op.MeanSeconds*1000)
	}
	if r.Dump != nil && len(r.Dump.Places) > 0 {
		t.printf("\n")
		r.Dump.writePlaces(t, 8)
	}
	return t.err
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}
