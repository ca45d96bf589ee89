package doctor

import (
	"bytes"
	"strings"
	"testing"
)

func TestNodeReportJudge(t *testing.T) {
	healthy := func() *NodeReport {
		return &NodeReport{Node: "n1", Ready: "ok", Connections: 100, Goroutines: 40,
			Sockets: SocketReport{Port: 8080, States: []SocketState{{State: "ESTABLISHED", Count: 100, Local: 100}}}}
	}
	cases := []struct {
		name string
		edit func(*NodeReport)
		want Severity
		kind string
	}{
		{"healthy", func(*NodeReport) {}, SeverityOK, ""},
		{"close wait pile", func(r *NodeReport) {
			r.Sockets.States = append(r.Sockets.States, SocketState{State: "CLOSE_WAIT", Count: 50, Local: 50})
		}, SeverityCritical, "close-wait"},
		{"a few close wait in passing", func(r *NodeReport) {
			r.Sockets.States = append(r.Sockets.States, SocketState{State: "CLOSE_WAIT", Count: 3, Local: 3})
		}, SeverityOK, ""},
		{"store down", func(r *NodeReport) { r.Ready = "store does not answer: timeout" }, SeverityCritical, "not-ready"},
		{"goroutines grow", func(r *NodeReport) { r.Goroutines = 5000 }, SeverityWarning, "goroutines"},
		{"overloaded", func(r *NodeReport) { r.Overloaded, r.DeliveryLagSeconds, r.MaxDeliveryLagSeconds = true, 1.4, 5 }, SeverityWarning, "overloaded"},
		{"behind but not refusing", func(r *NodeReport) { r.DeliveryLagSeconds, r.MaxDeliveryLagSeconds = 0.9, 5 }, SeverityOK, ""},
		{"old store errors are information", func(r *NodeReport) { r.Store = []StoreOp{{Op: "ack", Calls: 10, Errors: 1}} }, SeverityOK, ""},
	}
	for _, c := range cases {
		r := healthy()
		c.edit(r)
		r.Judge()
		if r.Verdict.Severity != c.want {
			t.Errorf("%s: verdict %s, want %s (%+v)", c.name, r.Verdict.Severity, c.want, r.Findings)
		}
		if c.kind != "" && (len(r.Findings) == 0 || r.Findings[0].Kind != c.kind) {
			t.Errorf("%s: findings %+v, want %s first", c.name, r.Findings, c.kind)
		}
		var buf bytes.Buffer
		if err := r.WriteText(&buf); err != nil || !strings.Contains(buf.String(), "Verdict: ") {
			t.Errorf("%s: text %q, %v", c.name, buf.String(), err)
		}
	}
}
