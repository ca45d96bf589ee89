package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/eventtest"
	"github.com/tetherpush/tether/webhook"
	"github.com/tetherpush/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testSecret = []byte("webhook-test-secret")

// waitTimeout bounds every wait of the tests.
const waitTimeout = 5 * time.Second

// receiver is a webhook receiver on a loopback port. It verifies each
// request's signature and records the events of the batches it accepts.
type receiver struct {
	srv     *httptest.Server
	release chan struct{} // closed when the test ends: hanging handlers return

	mu       sync.Mutex // guards following
	requests int
	times    []time.Time // of each request
	batches  [][]string  // event ids of each accepted batch
	refused  []string    // why a request was refused by the checks
	// answer, when set, is called for request n (from 1) after the checks;
	// it returns false when it wrote the answer itself.
	answer func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{release: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	t.Cleanup(func() { close(rc.release) }) // runs first
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.requests++
	n, answer := rc.requests, rc.answer
	rc.times = append(rc.times, time.Now())
	rc.mu.Unlock()
	body, err := io.ReadAll(r.Body)
	why := ""
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	switch {
	case err != nil:
		why = "reading the body: " + err.Error()
	case r.Method != http.MethodPost || r.URL.Path != "/hook":
		why = "request " + r.Method + " " + r.URL.Path
	case r.Header.Get("Content-Type") != "application/json":
		why = "content type " + r.Header.Get("Content-Type")
	case wire.VerifyWebhook(testSecret, r.Header.Get(wire.SignatureHeader), body, time.Now(), time.Minute) != nil:
		why = "signature: " + wire.VerifyWebhook(testSecret, r.Header.Get(wire.SignatureHeader), body, time.Now(), time.Minute).Error()
	case json.Unmarshal(body, &batch) != nil || len(batch.Events) == 0 || len(batch.Events) > webhook.MaxBatch:
		why = fmt.Sprintf("batch %.100s", body)
	}
	if why != "" {
		rc.mu.Lock()
		rc.refused = append(rc.refused, why)
		rc.mu.Unlock()
		http.Error(w, why, http.StatusBadRequest)
		return
	}
	if answer != nil && !answer(n, w, r) {
		return
	}
	var ids []string
	for _, raw := range batch.Events {
		var ev tether.LogEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ids = append(ids, ev.ID)
	}
	rc.mu.Lock()
	rc.batches = append(rc.batches, ids)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) setAnswer(f func(n int, w http.ResponseWriter, r *http.Request) bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answer = f
}

// received returns the ids of the accepted batches in arrival order,
// duplicates included.
func (rc *receiver) received() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, b := range rc.batches {
		out = append(out, b...)
	}
	return out
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

func (rc *receiver) checkNoRefusal(t *testing.T) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, why := range rc.refused {
		t.Errorf("receiver refused a request: %s", why)
	}
}

// firsts returns ids without repeats, each at its first place.
func firsts(ids []string) (out []string, dups int) {
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out, dups
}

// waitFor polls cond until it holds, failing after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitReceived waits until rc accepted every id of want, then checks they
// first arrived in order.
func waitReceived(t *testing.T, rc *receiver, want []string) (dups int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d events received", len(want)), func() bool {
		got, _ := firsts(rc.received())
		return len(got) >= len(want)
	})
	got, dups := firsts(rc.received())
	if !slices.Equal(got, want) {
		t.Fatalf("received %d events %v, want %d in log order %v", len(got), got, len(want), want)
	}
	return dups
}

// logBuffer collects a sender's log lines.
type logBuffer struct {
	mu  sync.Mutex // guards following
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines containing s.
func (b *logBuffer) lines(s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// harness is a store, a sender's configuration, its log and metrics.
type harness struct {
	st   *eventtest.Memory
	cfg  webhook.Config
	logs *logBuffer
	m    *webhook.Metrics
}

// newHarness returns fast settings for a sender posting to url: 100 ms
// heartbeat, 10 ms poll, 250 ms timeout, backoff 10 ms to 80 ms.
func newHarness(t *testing.T, st *eventtest.Memory, url, holder string) *harness {
	h := &harness{st: st, logs: &logBuffer{}, m: webhook.NewMetrics(prometheus.NewRegistry())}
	h.cfg = webhook.Config{
		URL: url, Secret: testSecret, Holder: holder,
		Heartbeat: 100 * time.Millisecond, Poll: 10 * time.Millisecond, Timeout: 250 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, StoreTimeout: time.Second,
		Logger:  slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: h.m,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", holder, h.logs.buf.String())
		}
	})
	return h
}

func (h *harness) open(t *testing.T) *webhook.Sender {
	t.Helper()
	s := webhook.New(h.st, h.cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (h *harness) batches(outcome string) int {
	return int(testutil.ToFloat64(h.m.Batches.WithLabelValues(outcome)))
}

// appendEvents appends n presence events at at and returns their ids.
func appendEvents(t *testing.T, st tether.EventStore, n int, at time.Time) []string {
	t.Helper()
	evs := make([]tether.LogEvent, n)
	for i := range evs {
		evs[i] = tether.LogEvent{Type: tether.EventOnline, At: at, Device: fmt.Sprintf("pos-%d", i), Node: "n1"}
	}
	if err := st.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	return ids
}

func TestDeliversEveryEventOnceInOrder(t *testing.T) {
	rc := newReceiver(t)
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	want := appendEvents(t, h.st, 130, time.Now())
	s := h.open(t)
	for i := 0; i < 3; i++ {
		want = append(want, appendEvents(t, h.st, 40, time.Now())...)
		s.Notify()
		time.Sleep(5 * time.Millisecond)
	}
	if dups := waitReceived(t, rc, want); dups != 0 {
		t.Errorf("%d events received twice from a receiver that accepts everything", dups)
	}
	rc.checkNoRefusal(t)
	rc.mu.Lock()
	for i, b := range rc.batches {
		if len(b) > webhook.MaxBatch {
			t.Errorf("batch %d has %d events", i, len(b))
		}
	}
	requests := rc.requests
	rc.mu.Unlock()
	waitFor(t, "progress recorded", func() bool { _, sent := h.st.Progress(); return sent == want[len(want)-1] })
	if got := h.batches(webhook.OutcomeOK); got != requests {
		t.Errorf("batches ok = %d, want %d (one per request)", got, requests)
	}
	if got := testutil.ToFloat64(h.m.Events); got != float64(len(want)) {
		t.Errorf("events_total = %v, want %d", got, len(want))
	}
	waitFor(t, "lag 0", func() bool { return testutil.ToFloat64(h.m.Lag) == 0 })
	if got := testutil.ToFloat64(h.m.LeaseHeld); got != 1 {
		t.Errorf("lease_held = %v, want 1", got)
	}
}

func TestNotifyWakesIdleSender(t *testing.T) {
	rc := newReceiver(t)
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	h.cfg.Poll, h.cfg.Heartbeat = time.Hour, time.Hour
	s := h.open(t)
	waitFor(t, "lease taken", func() bool { return testutil.ToFloat64(h.m.LeaseHeld) == 1 })
	time.Sleep(20 * time.Millisecond) // idle now
	want := appendEvents(t, h.st, 3, time.Now())
	start := time.Now()
	s.Notify()
	waitReceived(t, rc, want)
	if d := time.Since(start); d > time.Second {
		t.Errorf("delivered %v after Notify", d)
	}
}

func TestRetriesUntilAccepted(t *testing.T) {
	rc := newReceiver(t)
	const refusals = 5
	rc.setAnswer(func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n <= refusals {
			http.Error(w, "try later", http.StatusInternalServerError)
			return false
		}
		return true
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	want := appendEvents(t, h.st, 150, time.Now())
	h.open(t)
	dups := waitReceived(t, rc, want)
	t.Logf("%d duplicates", dups)
	if got := h.batches(webhook.OutcomeError); got != refusals {
		t.Errorf("batches error = %d, want %d", got, refusals)
	}
	if lines := h.logs.lines("webhook batch failed"); len(lines) != refusals {
		t.Errorf("%d log lines of failed batches, want one per failure (%d):\n%s", len(lines), refusals, strings.Join(lines, "\n"))
	} else if !strings.Contains(lines[0], "status=500") || !strings.Contains(lines[0], "retry_in=10ms") || !strings.Contains(lines[4], "retry_in=80ms") {
		t.Errorf("failure lines lack the status or the backoff:\n%s", strings.Join(lines, "\n"))
	}
	if len(h.logs.lines("webhook delivers again")) != 1 {
		t.Error("no log line for the recovery")
	}
	rc.mu.Lock()
	span := rc.times[refusals].Sub(rc.times[0])
	rc.mu.Unlock()
	if min := (10 + 20 + 40 + 80 + 80) * time.Millisecond; span < min {
		t.Errorf("%d refusals and a retry took %v, want at least the backoff %v", refusals, span, min)
	}
}

func TestReceiverDownThenBack(t *testing.T) {
	rc := newReceiver(t)
	addr := rc.srv.Listener.Addr().String()
	rc.srv.Close() // no listener: connections are refused
	h := newHarness(t, eventtest.NewMemory(), "http://"+addr+"/hook", "n1")
	want := appendEvents(t, h.st, 20, time.Now())
	h.open(t)
	waitFor(t, "failed attempts", func() bool { return h.batches(webhook.OutcomeError) >= 3 })
	if got := testutil.ToFloat64(h.m.Lag); got <= 0 {
		t.Errorf("lag = %v while the receiver is down, want > 0", got)
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	back := &receiver{release: make(chan struct{})}
	back.srv = httptest.NewUnstartedServer(http.HandlerFunc(back.serve))
	back.srv.Listener.Close()
	back.srv.Listener = l
	back.srv.Start()
	t.Cleanup(back.srv.Close)
	waitReceived(t, back, want)
	back.checkNoRefusal(t)
	waitFor(t, "lag 0", func() bool { return testutil.ToFloat64(h.m.Lag) == 0 })
}

func TestLagIsAgeOfOldestUnsent(t *testing.T) {
	rc := newReceiver(t)
	rc.setAnswer(func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return false
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	h.cfg.MinBackoff, h.cfg.MaxBackoff = time.Hour, time.Hour
	appendEvents(t, h.st, 1, time.Now().Add(-time.Minute))
	h.open(t)
	waitFor(t, "a refused batch", func() bool { return h.batches(webhook.OutcomeError) == 1 })
	if got := testutil.ToFloat64(h.m.Lag); got < 60 || got > 70 {
		t.Errorf("lag = %v with an event a minute old unsent, want about 60", got)
	}
}

func TestOpen(t *testing.T) {
	st := eventtest.NewMemory()
	for _, cfg := range []webhook.Config{
		{URL: "", Secret: testSecret},
		{URL: "ftp://example.com/hook", Secret: testSecret},
		{URL: "/hook", Secret: testSecret},
		{URL: "http://127.0.0.1:1/hook"},
	} {
		s := webhook.New(st, cfg)
		if err := s.Open(); err == nil {
			s.Close()
			t.Errorf("Open with %+v succeeded", cfg)
		}
		s.Close()
	}
	s := webhook.New(st, webhook.Config{URL: "http://127.0.0.1:1/hook", Secret: testSecret})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err == nil {
		t.Error("second Open succeeded")
	}
	s.Close()
	s.Close()
	if err := s.Open(); err == nil {
		t.Error("Open after Close succeeded")
	}
	if c := s.Config(); c.Heartbeat != webhook.DefaultHeartbeat || c.Timeout != webhook.DefaultTimeout ||
		c.MinBackoff != time.Second || c.MaxBackoff != 5*time.Minute || c.BatchSize != 100 || c.Holder == "" {
		t.Errorf("defaults %+v", c)
	}
}
