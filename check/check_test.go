package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether/check"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// MustRun runs a check with small numbers unless cfg sets them and fails
// the test when Run errs.
func MustRun(tb testing.TB, cfg check.Config) *check.Report {
	tb.Helper()
	if cfg.Conns == 0 {
		cfg.Conns = 5
	}
	if cfg.Hold == 0 {
		cfg.Hold = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.FINWait == 0 {
		cfg.FINWait = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := check.Run(ctx, cfg)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("\n%s", text.String())
	return rep
}

// wantStatus checks the status of every check, in print order: connect,
// idle hold, pings, close handshake, half-close, server pings.
func wantStatus(tb testing.TB, rep *check.Report, want ...check.Status) {
	tb.Helper()
	c := rep.Checks
	got := []check.Status{c.Connect.Status, c.IdleHold.Status, c.Pings.Status, c.CloseHandshake.Status,
		c.HalfClose.Status, c.ServerPings.Status}
	if !slices.Equal(got, want) {
		tb.Errorf("statuses %v, want %v", got, want)
	}
	pass := !slices.Contains(want, check.Fail)
	if rep.Pass != pass {
		tb.Errorf("Pass = %v, want %v", rep.Pass, pass)
	}
}

func TestCorrectServerPasses(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{pingEvery: 300 * time.Millisecond, protocol: "chat"})
	rep := MustRun(t, check.Config{URL: s.url(), Subprotocols: []string{"chat"}})
	wantStatus(t, rep, check.Pass, check.Pass, check.Pass, check.Pass, check.Pass, check.Info)
	c := rep.Checks
	if c.Connect.Upgraded != 5 || c.Connect.Handshake == nil || c.Connect.Handshake.Count != 5 || c.Connect.Subprotocol != "chat" {
		t.Errorf("connect %+v, want 5 upgraded with their latency and subprotocol chat", c.Connect)
	}
	if c.IdleHold.Held != 5 || c.IdleHold.Closed != 0 {
		t.Errorf("idle hold %+v, want 5 held", c.IdleHold)
	}
	if c.Pings.Sent < 10 || c.Pings.Answered != c.Pings.Sent || c.Pings.Ratio != 1 || c.Pings.RTT == nil {
		t.Errorf("pings %+v, want at least 10 sent, all answered", c.Pings)
	}
	if c.CloseHandshake.Probed != 2 || c.CloseHandshake.CloseFrames != 2 || c.CloseHandshake.TCPClosed != 2 ||
		len(c.CloseHandshake.Codes) != 1 || c.CloseHandshake.Codes[0].Code != 1000 {
		t.Errorf("close handshake %+v, want 2 probed, 2 close frames with code 1000, 2 TCP closes", c.CloseHandshake)
	}
	if c.HalfClose.Probed != 3 || c.HalfClose.Closed != 3 || c.HalfClose.HalfOpen != 0 || c.HalfClose.ClosedAfter.Max > 500 {
		t.Errorf("half-close %+v, want 3 probed, 3 closed at once", c.HalfClose)
	}
	sp := c.ServerPings
	if sp.Conns != 5 || sp.Interval == nil || sp.Interval.P50 < 250 || sp.Interval.P50 > 450 {
		t.Errorf("server pings %+v interval %+v, want 5 connections pinged about every 300ms", sp, sp.Interval)
	}
}

func TestServerLeavingSocketsInCloseWaitFails(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{keepAfterFIN: true})
	rep := MustRun(t, check.Config{URL: s.url(), Hold: time.Second})
	wantStatus(t, rep, check.Pass, check.Pass, check.Pass, check.Pass, check.Fail, check.Info)
	hc := rep.Checks.HalfClose
	if hc.Probed != 3 || hc.HalfOpen != 3 || hc.Closed != 0 {
		t.Errorf("half-close %+v, want 3 probed, 3 half-open", hc)
	}
	if runtime.GOOS == "linux" && hc.ClientStates["FIN_WAIT2"] != 3 {
		t.Errorf("client states %v, want FIN_WAIT2 ×3", hc.ClientStates)
	}
	if !strings.Contains(hc.Summary, "3/3 left half-open") || !strings.Contains(hc.Summary, "CLOSE_WAIT") {
		t.Errorf("summary %q, want the half-open count and CLOSE_WAIT", hc.Summary)
	}
}

func TestServerDroppingIdleConnections(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{idle: time.Second})
	rep := MustRun(t, check.Config{URL: s.url()})
	c := rep.Checks
	if c.Connect.Status != check.Pass || c.IdleHold.Status != check.Fail || rep.Pass {
		t.Errorf("connect %s, idle hold %s, pass %v; want pass, fail, false", c.Connect.Status, c.IdleHold.Status, rep.Pass)
	}
	ih := c.IdleHold
	if ih.Closed != 5 || ih.Held != 0 || ih.ClosedAfter == nil || ih.ClosedAfter.Min < 900 || ih.ClosedAfter.Max > 1600 {
		t.Fatalf("idle hold %+v after %+v, want 5 closed after about 1s", ih, ih.ClosedAfter)
	}
	if len(ih.Codes) != 1 || ih.Codes[0] != (check.CloseCount{Kind: "close_frame", Code: 4000, Reason: "idle timeout", Count: 5}) {
		t.Errorf("codes %+v, want 4000 idle timeout ×5", ih.Codes)
	}
	if !strings.Contains(ih.Summary, "5/5 closed by the server") || !strings.Contains(ih.Summary, `4000 "idle timeout"`) {
		t.Errorf("summary %q", ih.Summary)
	}
	if c.CloseHandshake.Status != check.Skip || c.HalfClose.Status != check.Skip {
		t.Errorf("close %s, half-close %s; want both skipped: nothing left to probe", c.CloseHandshake.Status, c.HalfClose.Status)
	}
}

func TestServerNotAnsweringPingsFails(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{noPongs: true})
	rep := MustRun(t, check.Config{URL: s.url(), Hold: time.Second, PingInterval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond})
	wantStatus(t, rep, check.Pass, check.Pass, check.Fail, check.Pass, check.Pass, check.Info)
	p := rep.Checks.Pings
	if p.Sent < 10 || p.Answered != 0 || p.Ratio != 0 || p.RTT != nil {
		t.Errorf("pings %+v, want at least 10 sent, none answered", p)
	}
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no token", http.StatusUnauthorized)
	}))
	defer denied.Close()

	for _, tc := range []struct {
		url, kind string
	}{
		{"ws://" + refused + "/", "refused"},
		{"ws://" + silent.Addr().String() + "/", "timeout"},
		{"ws" + strings.TrimPrefix(denied.URL, "http") + "/", "http 401"},
	} {
		rep := MustRun(t, check.Config{URL: tc.url, Conns: 3, Timeout: 300 * time.Millisecond})
		wantStatus(t, rep, check.Fail, check.Skip, check.Skip, check.Skip, check.Skip, check.Skip)
		c := rep.Checks.Connect
		if c.Tried != 3 || c.Upgraded != 0 || len(c.Errors) != 1 || c.Errors[0].Kind != tc.kind || c.Errors[0].Count != 3 {
			t.Errorf("%s: connect %+v, want 3 errors of kind %s", tc.url, c, tc.kind)
		}
	}
}

func TestHeadersAndTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{})
	rep := MustRun(t, check.Config{URL: s.url(), Conns: 4, Hold: 200 * time.Millisecond, Tokens: []string{"a", "b"}})
	if !rep.Pass {
		t.Errorf("pass = false")
	}
	got := s.authHeaders()
	slices.Sort(got)
	if want := []string{"Bearer a", "Bearer a", "Bearer b", "Bearer b"}; !slices.Equal(got, want) {
		t.Errorf("Authorization headers %q, want %q", got, want)
	}

	s2 := startServer(t, behavior{})
	MustRun(t, check.Config{URL: s2.url(), Conns: 2, Hold: 200 * time.Millisecond, Header: http.Header{"Authorization": {"Basic x"}}})
	if got := s2.authHeaders(); !slices.Equal(got, []string{"Basic x", "Basic x"}) {
		t.Errorf("Authorization headers %q, want Basic x twice", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  check.Config
		want string
	}{
		{"no URL", check.Config{}, "want ws://"},
		{"http URL", check.Config{URL: "http://x/"}, "want ws://"},
		{"no host", check.Config{URL: "ws:///x"}, "want ws://"},
		{"upgrade header", check.Config{URL: "ws://x/", Header: http.Header{"Upgrade": {"x"}}}, "set by the WebSocket handshake"},
		{"protocol header", check.Config{URL: "ws://x/", Header: http.Header{"Sec-Websocket-Protocol": {"x"}}}, "subprotocol"},
		{"tokens and authorization", check.Config{URL: "ws://x/", Tokens: []string{"a"}, Header: http.Header{"Authorization": {"x"}}}, "exclude"},
		{"empty token", check.Config{URL: "ws://x/", Tokens: []string{"a", ""}}, "token 2"},
		{"too many conns", check.Config{URL: "ws://x/", Conns: check.MaxConns + 1}, "conns"},
		{"negative hold", check.Config{URL: "ws://x/", Hold: -1}, "hold"},
		{"ping interval too short", check.Config{URL: "ws://x/", PingInterval: time.Millisecond}, "ping interval"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", tc.name, err, tc.want)
		}
		if _, err := check.Run(context.Background(), tc.cfg); err == nil {
			t.Errorf("%s: Run accepted the config", tc.name)
		}
	}
	ok := check.Config{URL: "wss://example.com:8443/v1/connect?x=1", Header: http.Header{"Authorization": {"Bearer t"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := check.Run(ctx, check.Config{URL: s.url(), Conns: 3, Hold: time.Minute})
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("Run = %v after %v, want the context's error at once", err, time.Since(start))
	}
}

func TestReportJSON(t *testing.T) {
	t.Parallel()
	s := startServer(t, behavior{keepAfterFIN: true})
	rep := MustRun(t, check.Config{URL: s.url(), Conns: 2, Hold: 300 * time.Millisecond})
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"url", "conns", "hold_ms", "ping_interval_ms", "timeout_ms", "fin_wait_ms", "started_at", "duration_ms", "pass", "checks"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q: %s", k, b)
		}
	}
	checks, _ := m["checks"].(map[string]any)
	for _, k := range []string{"connect", "idle_hold", "pings", "close_handshake", "half_close", "server_pings"} {
		c, ok := checks[k].(map[string]any)
		if !ok || c["status"] == nil || c["summary"] == nil {
			t.Errorf("checks.%s = %v, want an object with status and summary", k, checks[k])
		}
	}
	hc := checks["half_close"].(map[string]any)
	if hc["status"] != "fail" || hc["half_open"] != 1.0 {
		t.Errorf("half_close = %v, want fail with half_open 1", hc)
	}
}
