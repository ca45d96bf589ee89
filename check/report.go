package check

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/tetherpush/tether/wire"
)

// Report is the outcome of one Run. Its JSON form is stable: fields are
// added, never renamed or removed. Durations are milliseconds (float, _ms);
// a *Latency is null when nothing was measured.
type Report struct {
	URL            string    `json:"url"`
	Conns          int       `json:"conns"` // connections tried
	HoldMS         float64   `json:"hold_ms"`
	PingIntervalMS float64   `json:"ping_interval_ms"`
	TimeoutMS      float64   `json:"timeout_ms"`
	FINWaitMS      float64   `json:"fin_wait_ms"`
	StartedAt      time.Time `json:"started_at"`
	DurationMS     float64   `json:"duration_ms"`
	// Pass is true when no check failed.
	Pass   bool   `json:"pass"`
	Checks Checks `json:"checks"`
}

// Checks holds one result per check, in the order they are printed.
type Checks struct {
	Connect        ConnectResult    `json:"connect"`
	IdleHold       IdleResult       `json:"idle_hold"`
	Pings          PingResult       `json:"pings"`
	CloseHandshake CloseResult      `json:"close_handshake"`
	HalfClose      HalfCloseResult  `json:"half_close"`
	ServerPings    ServerPingResult `json:"server_pings"`
}

// Status is the verdict of one check.
type Status string

const (
	// Pass means the server behaved as the check expects.
	Pass Status = "pass"
	// Fail means it did not; any Fail makes Report.Pass false.
	Fail Status = "fail"
	// Skip means there was nothing to measure (no connection survived to
	// the check).
	Skip Status = "skip"
	// Info means measured, not judged.
	Info Status = "info"
)

// Result is what every check has: its verdict and its line of text.
type Result struct {
	Status  Status `json:"status"`
	Summary string `json:"summary"`
}

// Latency summarises durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// ConnectResult passes when every connection upgraded.
type ConnectResult struct {
	Result
	Tried       int          `json:"tried"`
	Upgraded    int          `json:"upgraded"`
	Handshake   *Latency     `json:"handshake"` // dial, TLS and upgrade of the upgraded ones
	Subprotocol string       `json:"subprotocol"`
	Errors      []ErrorCount `json:"errors"` // by kind, most frequent first
}

// ErrorCount counts the failed handshakes of one kind: "http 401",
// "refused", "timeout", "reset", "dns", "tls", "handshake", "local", "other".
type ErrorCount struct {
	Kind    string `json:"kind"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

// IdleResult passes when the server closed no connection during the hold.
type IdleResult struct {
	Result
	Held        int          `json:"held"`         // connections open at the end of the hold
	Closed      int          `json:"closed"`       // closed by the server during the hold
	ClosedAfter *Latency     `json:"closed_after"` // from the upgrade to the server's close
	Codes       []CloseCount `json:"codes"`        // of those closes
}

// CloseCount counts connections that ended one way. Code is the close
// frame's status code (0 when it had none); Kind is "close_frame", "eof"
// (TCP closed without a close frame), "reset" or "error".
type CloseCount struct {
	Kind   string `json:"kind"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// PingResult passes when at least PingPassRatio of the pings were answered
// within the timeout. Pings still unanswered when the server closed their
// connection, or sent less than probeGrace before the check's own close
// or FIN of it (whose answer that close may rightly cut), are CutOff and
// left out of the ratio.
type PingResult struct {
	Result
	Sent     int      `json:"sent"`
	Answered int      `json:"answered"` // within the timeout
	Late     int      `json:"late"`     // answered after the timeout
	CutOff   int      `json:"cut_off"`
	Ratio    float64  `json:"ratio"` // Answered / (Sent − CutOff)
	RTT      *Latency `json:"rtt"`
}

// CloseResult passes when, after the client's close frame, the server sent
// its close frame and closed TCP within the timeout on every probed
// connection.
type CloseResult struct {
	Result
	Probed          int          `json:"probed"`
	CloseFrames     int          `json:"close_frames"` // server close frames within the timeout
	TCPClosed       int          `json:"tcp_closed"`   // server closed TCP within the timeout
	CloseFrameAfter *Latency     `json:"close_frame_after"`
	TCPCloseAfter   *Latency     `json:"tcp_close_after"`
	Codes           []CloseCount `json:"codes"` // of the server's close frames
}

// HalfCloseResult passes when, after the client's FIN (no close frame), the
// server closed its side within the FIN wait on every probed connection.
// ClientStates counts the TCP states of the client sockets left open, from
// /proc/net/tcp ("unknown" elsewhere): FIN_WAIT2 means the server's socket
// is in CLOSE_WAIT.
type HalfCloseResult struct {
	Result
	Probed       int            `json:"probed"`
	Closed       int            `json:"closed"`
	HalfOpen     int            `json:"half_open"`
	LateClosed   int            `json:"late_closed"` // half-open ones the server closed later, during the close probe
	ClosedAfter  *Latency       `json:"closed_after"`
	CloseFrames  int            `json:"close_frames"` // server close frames sent after the FIN
	ClientStates map[string]int `json:"client_states"`
}

// ServerPingResult (info) tells whether and how often the server pings.
type ServerPingResult struct {
	Result
	Conns      int         `json:"conns"` // connections that received a ping
	Pings      int         `json:"pings"`
	FirstAfter *Latency    `json:"first_after"` // from the upgrade to the first ping
	Interval   *Latency    `json:"interval"`    // between pings on one connection
	StrayPongs int         `json:"stray_pongs"` // unsolicited pongs (another kind of heartbeat)
	DataFrames int         `json:"data_frames"`
	Tether     *TetherNode `json:"tether"` // the welcome of a tether node, when one was seen
}

// TetherNode is what a tether node's welcome frame announced.
type TetherNode struct {
	Node        string `json:"node"`
	HeartbeatMS int64  `json:"heartbeat_ms"`
}

// buildReport judges what the connections saw.
func buildReport(cfg *Config, dials []dialResult, conns []*conn, p phases) *Report {
	states := make([]connState, len(conns))
	for i, c := range conns {
		states[i] = c.state()
	}
	r := &Report{
		URL:            cfg.URL,
		Conns:          cfg.Conns,
		HoldMS:         ms(cfg.Hold),
		PingIntervalMS: ms(cfg.PingInterval),
		TimeoutMS:      ms(cfg.Timeout),
		FINWaitMS:      ms(cfg.FINWait),
	}
	r.Checks.Connect = judgeConnect(cfg, dials, conns)
	r.Checks.IdleHold = judgeIdle(cfg, conns, states, p)
	r.Checks.Pings = judgePings(cfg, states, p)
	r.Checks.CloseHandshake = judgeClose(cfg, states)
	r.Checks.HalfClose = judgeHalfClose(cfg, states)
	r.Checks.ServerPings = judgeServerPings(cfg, states)
	r.Pass = true
	for _, res := range r.results() {
		if res.Status == Fail {
			r.Pass = false
		}
	}
	return r
}

// results returns the results in print order, with their names.
func (r *Report) results() []namedResult {
	c := &r.Checks
	return []namedResult{
		{"connect", c.Connect.Result},
		{"idle hold", c.IdleHold.Result},
		{"pings", c.Pings.Result},
		{"close handshake", c.CloseHandshake.Result},
		{"half-close/FIN", c.HalfClose.Result},
		{"server pings", c.ServerPings.Result},
	}
}

type namedResult struct {
	name string
	Result
}

// WriteText writes the report for people: a title, one line per check, a
// verdict.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "tether check %s: %s, hold %s, ping every %s\n",
		r.URL, plural(r.Conns, "connection"), fmtDur(msDur(r.HoldMS)), fmtDur(msDur(r.PingIntervalMS)))
	failed, judged := 0, 0
	for _, res := range r.results() {
		fmt.Fprintf(&b, "%-4s  %-15s  %s\n", strings.ToUpper(string(res.Status)), res.name, res.Summary)
		if res.Status == Fail {
			failed++
		}
		if res.Status != Info {
			judged++
		}
	}
	if failed == 0 {
		fmt.Fprintf(&b, "result: pass (%s)\n", fmtDur(msDur(r.DurationMS)))
	} else {
		fmt.Fprintf(&b, "result: FAIL, %d of %d checks failed (%s)\n", failed, judged, fmtDur(msDur(r.DurationMS)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func judgeConnect(cfg *Config, dials []dialResult, conns []*conn) ConnectResult {
	res := ConnectResult{Tried: len(dials), Upgraded: len(conns), Errors: []ErrorCount{}}
	var lat []time.Duration
	kinds := map[string]*ErrorCount{}
	for _, d := range dials {
		if d.err == nil {
			lat = append(lat, d.latency)
			continue
		}
		k := errorKind(d.err)
		if kinds[k] == nil {
			kinds[k] = &ErrorCount{Kind: k, Example: d.err.Error()}
		}
		kinds[k].Count++
	}
	for _, e := range kinds {
		res.Errors = append(res.Errors, *e)
	}
	slices.SortFunc(res.Errors, func(a, b ErrorCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Kind, b.Kind))
	})
	res.Handshake = summarize(lat)
	for _, c := range conns {
		if c.protocol != "" {
			res.Subprotocol = c.protocol
			break
		}
	}
	res.Status = Pass
	if res.Upgraded < cfg.Conns {
		res.Status = Fail
	}
	s := fmt.Sprintf("%d/%d upgraded", res.Upgraded, cfg.Conns)
	if res.Handshake != nil {
		s += ", handshake " + fmtLatency(res.Handshake)
	}
	if res.Subprotocol != "" {
		s += ", subprotocol " + res.Subprotocol
	}
	for _, e := range res.Errors {
		s += fmt.Sprintf("; %s ×%d (%s)", e.Kind, e.Count, shorten(e.Example, 80))
		if e.Kind == "http 401" || e.Kind == "http 403" {
			s += " — credentials: --header 'Authorization: Bearer …' or --tokens"
		}
	}
	res.Summary = s
	return res
}

// countCloses groups ends by kind, code and reason, most frequent first.
func countCloses(cs []CloseCount) []CloseCount {
	type key struct {
		kind   string
		code   int
		reason string
	}
	n := map[key]int{}
	for _, c := range cs {
		n[key{c.Kind, c.Code, c.Reason}]++
	}
	out := []CloseCount{}
	for k, v := range n {
		out = append(out, CloseCount{Kind: k.kind, Code: k.code, Reason: k.reason, Count: v})
	}
	slices.SortFunc(out, func(a, b CloseCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// fmtCloses prints counted ends: 4000 "idle" ×5, no close frame (EOF) ×1.
func fmtCloses(cs []CloseCount) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		var s string
		switch c.Kind {
		case "close_frame":
			s = "close " + closeText(c.Code, c.Reason)
		case "eof":
			s = "TCP closed, no close frame"
		case "reset":
			s = "TCP reset, no close frame"
		default:
			s = "error " + c.Reason
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", s, c.Count))
	}
	return strings.Join(parts, ", ")
}

func judgeIdle(cfg *Config, conns []*conn, states []connState, p phases) IdleResult {
	res := IdleResult{Codes: []CloseCount{}}
	var after []time.Duration
	var ends []CloseCount
	replaced := false
	for i := range states {
		st := &states[i]
		if !closedBefore(st, p.probeAt) {
			res.Held++
			continue
		}
		res.Closed++
		at := st.endAt
		if !st.closeAt.IsZero() && (at.IsZero() || st.closeAt.Before(at)) {
			at = st.closeAt
		}
		after = append(after, at.Sub(conns[i].upAt))
		ends = append(ends, closeKind(st))
		replaced = replaced || (!st.closeAt.IsZero() && st.closeCode == wire.CloseReplaced)
	}
	res.ClosedAfter = summarize(after)
	res.Codes = countCloses(ends)
	switch {
	case len(states) == 0:
		res.Status, res.Summary = Skip, "no connection to hold"
		return res
	case res.Closed == 0:
		res.Status = Pass
		res.Summary = fmt.Sprintf("%d/%d open after %s with nothing sent but pings", res.Held, len(states), fmtDur(cfg.Hold))
		return res
	}
	res.Status = Fail
	res.Summary = fmt.Sprintf("%d/%d closed by the server during the %s hold, after %s; %s",
		res.Closed, len(states), fmtDur(cfg.Hold), fmtSpread(res.ClosedAfter), fmtCloses(res.Codes))
	if replaced {
		res.Summary += " — tether keeps one connection per device: give each connection its own device token (--tokens)"
	}
	return res
}

func closedBefore(st *connState, t time.Time) bool {
	return (!st.closeAt.IsZero() && st.closeAt.Before(t)) || (!st.endAt.IsZero() && st.endAt.Before(t))
}

func judgePings(cfg *Config, states []connState, p phases) PingResult {
	var res PingResult
	var rtts []time.Duration
	for i := range states {
		st := &states[i]
		res.Sent += st.sent
		res.Answered += st.answered
		res.Late += st.late
		if closedBefore(st, p.probeAt) {
			res.CutOff += st.unanswered
		} else {
			res.CutOff += st.cutByProbe
		}
		rtts = append(rtts, st.rtts.d...)
	}
	res.RTT = summarize(rtts)
	asked := res.Sent - res.CutOff
	if asked == 0 {
		res.Status, res.Summary = Skip, "no ping sent on a connection the server kept open"
		return res
	}
	res.Ratio = float64(res.Answered) / float64(asked)
	res.Status = Pass
	if res.Ratio < PingPassRatio {
		res.Status = Fail
	}
	s := fmt.Sprintf("%d/%d answered within %s", res.Answered, asked, fmtDur(cfg.Timeout))
	if res.RTT != nil {
		s += ", pong " + fmtLatency(res.RTT)
	}
	if res.Late > 0 {
		s += fmt.Sprintf("; %d late", res.Late)
	}
	if res.CutOff > 0 {
		s += fmt.Sprintf("; %d cut off by closes", res.CutOff)
	}
	res.Summary = s
	return res
}

func judgeClose(cfg *Config, states []connState) CloseResult {
	res := CloseResult{Codes: []CloseCount{}}
	var frameAfter, tcpAfter []time.Duration
	var codes []CloseCount
	probed := 0 // by either probe
	for i := range states {
		st := &states[i]
		if st.probe != probeNone {
			probed++
		}
		if st.probe != probeClose {
			continue
		}
		res.Probed++
		if !st.closeAt.IsZero() && st.closeAt.Sub(st.probeAt) <= cfg.Timeout {
			res.CloseFrames++
			frameAfter = append(frameAfter, st.closeAt.Sub(st.probeAt))
			codes = append(codes, CloseCount{Kind: "close_frame", Code: st.closeCode, Reason: st.closeReason})
		}
		if serverEnded(st) && st.endAt.Sub(st.probeAt) <= cfg.Timeout {
			res.TCPClosed++
			tcpAfter = append(tcpAfter, st.endAt.Sub(st.probeAt))
		}
	}
	res.CloseFrameAfter, res.TCPCloseAfter = summarize(frameAfter), summarize(tcpAfter)
	res.Codes = countCloses(codes)
	switch {
	case probed == 0:
		res.Status, res.Summary = Skip, "no connection open at the end of the hold"
		return res
	case res.Probed == 0:
		res.Status, res.Summary = Skip, "needs a second connection open at the end of the hold (the first probed the FIN)"
		return res
	}
	res.Status = Pass
	if res.CloseFrames < res.Probed || res.TCPClosed < res.Probed {
		res.Status = Fail
	}
	s := fmt.Sprintf("%d/%d close frames back", res.CloseFrames, res.Probed)
	if res.CloseFrameAfter != nil {
		s += " after " + fmtLatency(res.CloseFrameAfter)
	}
	if len(res.Codes) > 0 {
		s += " (" + fmtCloses(res.Codes) + ")"
	}
	s += fmt.Sprintf("; %d/%d TCP closed by the server", res.TCPClosed, res.Probed)
	if res.TCPCloseAfter != nil {
		s += " after " + fmtLatency(res.TCPCloseAfter)
	}
	if res.Status == Fail {
		s += fmt.Sprintf("; bound %s", fmtDur(cfg.Timeout))
	}
	res.Summary = s
	return res
}

// serverEnded reports whether the reader ended because the server closed
// or reset TCP, not because the check closed the connection.
func serverEnded(st *connState) bool {
	return !st.endAt.IsZero() && !errors.Is(st.endErr, net.ErrClosed)
}

func judgeHalfClose(cfg *Config, states []connState) HalfCloseResult {
	res := HalfCloseResult{ClientStates: map[string]int{}}
	var after []time.Duration
	for i := range states {
		st := &states[i]
		if st.probe != probeFIN {
			continue
		}
		res.Probed++
		if !st.closeAt.IsZero() && !st.closeAt.Before(st.probeAt) {
			res.CloseFrames++
		}
		if serverEnded(st) && st.endAt.Sub(st.probeAt) <= cfg.FINWait {
			res.Closed++
			after = append(after, st.endAt.Sub(st.probeAt))
			continue
		}
		res.HalfOpen++
		res.ClientStates[cmp.Or(st.sockState, "unknown")]++
		if serverEnded(st) {
			res.LateClosed++
		}
	}
	res.ClosedAfter = summarize(after)
	if res.Probed == 0 {
		res.Status, res.Summary = Skip, "no connection open at the end of the hold"
		return res
	}
	if res.HalfOpen == 0 {
		res.Status = Pass
		res.Summary = fmt.Sprintf("%d/%d closed by the server after the client's FIN, %s", res.Closed, res.Probed, fmtLatency(res.ClosedAfter))
		return res
	}
	res.Status = Fail
	s := fmt.Sprintf("%d/%d left half-open %s after the client's FIN", res.HalfOpen, res.Probed, fmtDur(cfg.FINWait))
	var st []string
	for _, k := range slices.Sorted(maps.Keys(res.ClientStates)) {
		st = append(st, fmt.Sprintf("%s ×%d", k, res.ClientStates[k]))
	}
	s += "; client sockets " + strings.Join(st, ", ")
	if res.ClientStates["FIN_WAIT2"] > 0 {
		s += ": the server's sockets sit in CLOSE_WAIT"
	}
	if res.Closed > 0 {
		s += fmt.Sprintf("; %d closed in time, %s", res.Closed, fmtLatency(res.ClosedAfter))
	}
	if res.LateClosed > 0 {
		s += fmt.Sprintf("; %d closed later", res.LateClosed)
	}
	res.Summary = s
	return res
}

func judgeServerPings(cfg *Config, states []connState) ServerPingResult {
	res := ServerPingResult{Result: Result{Status: Info}}
	var first, gaps []time.Duration
	for i := range states {
		st := &states[i]
		if st.srvPings > 0 {
			res.Conns++
			first = append(first, st.firstSrvPing)
		}
		res.Pings += st.srvPings
		res.StrayPongs += st.strayPongs
		res.DataFrames += st.dataFrames
		gaps = append(gaps, st.srvPingGaps.d...)
		if st.welcome != nil && res.Tether == nil {
			res.Tether = &TetherNode{Node: st.welcome.Node, HeartbeatMS: st.welcome.HeartbeatMS}
		}
	}
	res.FirstAfter, res.Interval = summarize(first), summarize(gaps)
	var s string
	switch {
	case len(states) == 0:
		res.Status, res.Summary = Skip, "no connection"
		return res
	case res.Pings == 0:
		s = fmt.Sprintf("none in %s", fmtDur(cfg.Hold))
	default:
		s = fmt.Sprintf("%d/%d connections pinged, %d pings, first after %s", res.Conns, len(states), res.Pings, fmtSpread(res.FirstAfter))
		if res.Interval != nil {
			s += ", interval " + fmtLatency(res.Interval)
		}
	}
	if res.StrayPongs > 0 {
		s += fmt.Sprintf("; %d unsolicited pongs", res.StrayPongs)
	}
	s += "; " + plural(res.DataFrames, "data frame")
	if t := res.Tether; t != nil {
		hb := time.Duration(t.HeartbeatMS) * time.Millisecond
		s += fmt.Sprintf("; tether node %q announces a ping every %s", t.Node, fmtDur(hb))
		if res.Pings == 0 && hb >= cfg.Hold {
			s += ", longer than the hold"
		}
	}
	res.Summary = s
	return res
}

// summarize returns the spread of d, or nil for none. It sorts d.
func summarize(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	return &Latency{Count: len(d), Min: ms(d[0]), P50: ms(quantile(d, 0.50)), P99: ms(quantile(d, 0.99)), Max: ms(d[len(d)-1])}
}

// quantile returns the q-quantile of sorted d by the nearest-rank method.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func fmtLatency(l *Latency) string {
	return fmt.Sprintf("p50 %s p99 %s", fmtDur(msDur(l.P50)), fmtDur(msDur(l.P99)))
}

// fmtSpread prints when something happened: one time, or first…last and
// the median.
func fmtSpread(l *Latency) string {
	lo, hi := fmtDur(msDur(l.Min)), fmtDur(msDur(l.Max))
	if lo == hi {
		return lo
	}
	return fmt.Sprintf("%s–%s (p50 %s)", lo, hi, fmtDur(msDur(l.P50)))
}

// fmtDur prints a duration with three significant digits at most.
func fmtDur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	case d < 10*time.Second:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", d.Seconds()), "0"), ".") + "s"
	case d < time.Minute:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", d.Seconds()), "0"), ".") + "s"
	}
	return d.Round(time.Second).String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// plural prints n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shorten cuts s to n bytes at most.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
