package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherpush/tether/internal/eventtest"
	"github.com/tetherpush/tether/webhook"
)

// checkGoroutinesBounded runs more until the sender made `more` further
// POSTs and fails if the process's goroutines grew by more than a few.
func checkGoroutinesBounded(t *testing.T, rc *receiver, more int) {
	t.Helper()
	base := runtime.NumGoroutine()
	n := rc.count()
	peak := base
	waitFor(t, "more attempts", func() bool {
		peak = max(peak, runtime.NumGoroutine())
		return rc.count() >= n+more
	})
	if peak > base+6 {
		t.Errorf("goroutines grew from %d to %d over %d attempts", base, peak, more)
	}
}

// checkClosesPromptly closes s and fails if that takes longer than 500 ms.
func checkClosesPromptly(t *testing.T, s *webhook.Sender) {
	t.Helper()
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Close took %v", d)
	}
}

func TestHangingReceiver(t *testing.T) {
	rc := newReceiver(t)
	rc.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) bool {
		select { // never answers
		case <-r.Context().Done():
		case <-rc.release:
		}
		return false
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	h.cfg.Timeout = 100 * time.Millisecond
	appendEvents(t, h.st, 10, time.Now())
	s := h.open(t)
	waitFor(t, "timeouts", func() bool { return h.batches(webhook.OutcomeTimeout) >= 2 })
	checkGoroutinesBounded(t, rc, 5)
	if got := h.batches(webhook.OutcomeOK) + h.batches(webhook.OutcomeError); got != 0 {
		t.Errorf("%d batches ok or error from a receiver that never answers", got)
	}
	checkClosesPromptly(t, s)
}

func TestCloseWhilePostHangs(t *testing.T) {
	rc := newReceiver(t)
	hanging := make(chan struct{}, 1)
	rc.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) bool {
		hanging <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-rc.release:
		}
		return false
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	h.cfg.Timeout, h.cfg.Heartbeat = 10*time.Second, 10*time.Second
	appendEvents(t, h.st, 10, time.Now())
	s := h.open(t)
	select {
	case <-hanging:
	case <-time.After(waitTimeout):
		t.Fatal("no POST")
	}
	checkClosesPromptly(t, s)
	// The lease is handed over: another node takes it at its next try.
	waitFor(t, "n2 takes the lease", func() bool {
		held, _, err := h.st.Lease(context.Background(), "n2", time.Minute)
		return held && err == nil
	})
	if _, sent := h.st.Progress(); sent != "" {
		t.Errorf("progress %q recorded for a batch never answered", sent)
	}
}

func TestSlowReceiver(t *testing.T) {
	rc := newReceiver(t)
	rc.setAnswer(func(_ int, w http.ResponseWriter, r *http.Request) bool {
		time.Sleep(30 * time.Millisecond)
		return true
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	h.cfg.BatchSize = 5
	st := h.st
	appendEvents(t, st, 500, time.Now())
	s := h.open(t)
	waitFor(t, "first batches", func() bool { return rc.count() >= 3 })
	checkGoroutinesBounded(t, rc, 10)
	checkClosesPromptly(t, s)
	got, dups := firsts(rc.received())
	if dups != 0 || len(got) == 0 || len(got) == 500 {
		t.Errorf("%d events (%d duplicates) received before Close, want some of 500 once", len(got), dups)
	}
	if h.batches(webhook.OutcomeTimeout)+h.batches(webhook.OutcomeError) != 0 {
		t.Error("a slow receiver within the timeout counted failures")
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	rc := newReceiver(t)
	rc.setAnswer(func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n%2 == 0 {
			http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect) // to itself: a loop if followed
		} else {
			http.Redirect(w, r, "/elsewhere", http.StatusPermanentRedirect) // the receiver refuses it
		}
		return false
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	appendEvents(t, h.st, 10, time.Now())
	h.open(t)
	waitFor(t, "failed attempts", func() bool { return h.batches(webhook.OutcomeError) >= 3 })
	if n, failed := rc.count(), h.batches(webhook.OutcomeError); n > failed+1 {
		t.Errorf("%d requests for %d failed attempts: a redirect was followed", n, failed)
	}
	rc.checkNoRefusal(t) // no request to /elsewhere
	if lines := h.logs.lines("redirects are not followed"); len(lines) == 0 {
		t.Error("no log line says redirects are not followed")
	}
}

func TestHugeAnswer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  int
		outcome string
	}{
		{"accepted", http.StatusOK, webhook.OutcomeOK},
		{"refused", http.StatusInternalServerError, webhook.OutcomeError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			var written atomic.Int64
			cut := make(chan time.Duration, 100)
			rc.setAnswer(func(_ int, w http.ResponseWriter, r *http.Request) bool {
				w.WriteHeader(tt.status)
				chunk := []byte(strings.Repeat("x", 64<<10))
				start := time.Now()
				for time.Since(start) < waitTimeout { // endless, until the sender hangs up
					if _, err := w.Write(chunk); err != nil {
						cut <- time.Since(start)
						break
					}
					written.Add(int64(len(chunk)))
					w.(http.Flusher).Flush()
				}
				return false
			})
			h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
			h.cfg.Timeout = 2 * time.Second
			appendEvents(t, h.st, 250, time.Now())
			h.open(t)
			waitFor(t, "3 answers", func() bool { return h.batches(tt.outcome) >= 3 })
			for i := 0; i < 3; i++ {
				select {
				case d := <-cut:
					if d > time.Second {
						t.Errorf("an endless answer was cut after %v", d)
					}
				case <-time.After(waitTimeout):
					t.Fatal("the sender did not hang up on an endless answer")
				}
			}
			if got := h.batches(webhook.OutcomeTimeout); got != 0 {
				t.Errorf("%d timeouts: the sender waited for the end of the answer", got)
			}
			if tt.outcome == webhook.OutcomeOK {
				waitFor(t, "progress", func() bool { _, sent := h.st.Progress(); return sent != "" })
			}
		})
	}
}

func TestHugeAnswerHeader(t *testing.T) {
	rc := newReceiver(t)
	rc.setAnswer(func(_ int, w http.ResponseWriter, r *http.Request) bool {
		for i := 0; i < 100; i++ {
			w.Header().Add("X-Padding", strings.Repeat("y", 1000))
		}
		return true
	})
	h := newHarness(t, eventtest.NewMemory(), rc.url(), "n1")
	appendEvents(t, h.st, 5, time.Now())
	h.open(t)
	waitFor(t, "failed attempts", func() bool { return h.batches(webhook.OutcomeError) >= 2 })
	if _, sent := h.st.Progress(); sent != "" {
		t.Errorf("progress recorded past %s after answers with 100 KB of headers", sent)
	}
}

func TestTwoSenders(t *testing.T) {
	st := eventtest.NewMemory()
	rc1, rc2 := newReceiver(t), newReceiver(t)
	h1 := newHarness(t, st, rc1.url(), "n1")
	h2 := newHarness(t, st, rc2.url(), "n2")
	s1 := h1.open(t)
	waitFor(t, "n1 holds the lease", func() bool { return testutil.ToFloat64(h1.m.LeaseHeld) == 1 })
	h2.open(t)

	var want []string
	for i := 0; i < 10; i++ {
		want = append(want, appendEvents(t, st, 30, time.Now())...)
		time.Sleep(10 * time.Millisecond)
	}
	if dups := waitReceived(t, rc1, want); dups != 0 {
		t.Errorf("%d duplicates at n1's receiver", dups)
	}
	time.Sleep(3 * h2.cfg.Heartbeat)
	if n := rc2.count(); n != 0 {
		t.Fatalf("n2 posted %d batches while n1 held the lease", n)
	}
	if got := testutil.ToFloat64(h2.m.LeaseHeld); got != 0 {
		t.Errorf("n2 lease_held = %v", got)
	}

	closed := time.Now()
	s1.Close()
	more := appendEvents(t, st, 50, time.Now())
	if dups := waitReceived(t, rc2, more); dups != 0 {
		t.Errorf("%d duplicates at n2's receiver", dups)
	}
	if d := time.Since(closed); d > 3*h2.cfg.Heartbeat {
		t.Errorf("n2 delivered %v after n1 closed, want within 3 × heartbeat (%v)", d, 3*h2.cfg.Heartbeat)
	}
	if got := rc1.received(); len(got) != len(want) {
		t.Errorf("n1 delivered %d events after it closed", len(got)-len(want))
	}
}

func TestCrashedHolderReplaced(t *testing.T) {
	st := eventtest.NewMemory()
	rc := newReceiver(t)
	// n1 took the lease and stopped renewing it without handing it over.
	if held, _, _ := st.Lease(context.Background(), "n1", 300*time.Millisecond); !held {
		t.Fatal("n1 has no lease")
	}
	taken := time.Now()
	h := newHarness(t, st, rc.url(), "n2")
	want := appendEvents(t, st, 10, time.Now())
	h.open(t)
	waitReceived(t, rc, want)
	if d := time.Since(taken); d < 300*time.Millisecond || d > 300*time.Millisecond+2*h.cfg.Heartbeat {
		t.Errorf("n2 sent %v after n1's 300 ms lease began", d)
	}
}

func TestLeaseLostMidBatch(t *testing.T) {
	st := eventtest.NewMemory()
	rc := newReceiver(t)
	rc.setAnswer(func(n int, _ http.ResponseWriter, _ *http.Request) bool {
		if n == 1 { // another node takes over while the batch is on its way
			st.ExpireLease()
			if held, _, err := st.Lease(context.Background(), "n2", time.Hour); !held || err != nil {
				panic("n2 could not take the lease")
			}
		}
		return true
	})
	h := newHarness(t, st, rc.url(), "n1")
	appendEvents(t, st, 250, time.Now())
	h.open(t)
	waitFor(t, "lease lost", func() bool { return len(h.logs.lines("webhook lease lost")) == 1 })
	time.Sleep(5 * h.cfg.Heartbeat)
	if n := rc.count(); n != 1 {
		t.Errorf("%d POSTs, want 1: the sender goes on after losing the lease", n)
	}
	if holder, sent := st.Progress(); holder != "n2" || sent != "" {
		t.Errorf("progress %s %q, want n2 and none recorded by n1", holder, sent)
	}
	if got := testutil.ToFloat64(h.m.LeaseHeld); got != 0 {
		t.Errorf("lease_held = %v after losing it", got)
	}
}

func TestTrimmedWhileFailing(t *testing.T) {
	st := eventtest.NewMemory()
	rc := newReceiver(t)
	var accept atomic.Bool
	rc.setAnswer(func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		if !accept.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return false
		}
		return true
	})
	h := newHarness(t, st, rc.url(), "n1")
	now := time.Now()
	appendEvents(t, st, 5, now.Add(-2*time.Hour))
	kept := appendEvents(t, st, 5, now)
	h.open(t)
	waitFor(t, "failed attempts", func() bool { return h.batches(webhook.OutcomeError) >= 2 })
	if err := st.Trim(context.Background(), now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	accept.Store(true)
	waitReceived(t, rc, kept)
	if got := testutil.ToFloat64(h.m.Trimmed); got != 5 {
		t.Errorf("trimmed_total = %v, want 5", got)
	}
	lines := h.logs.lines("left the retention window")
	if len(lines) != 1 || !strings.Contains(lines[0], "skipped_at_least=5") {
		t.Errorf("log lines about the trimmed events:\n%s", strings.Join(lines, "\n"))
	}
}

func TestStoreDown(t *testing.T) {
	st := eventtest.NewMemory()
	rc := newReceiver(t)
	want := appendEvents(t, st, 5, time.Now())
	st.SetErr(errors.New("store down"))
	h := newHarness(t, st, rc.url(), "n1")
	h.open(t)
	waitFor(t, "lease tries", func() bool { return st.Calls("Lease") >= 3 })
	if lines := h.logs.lines("webhook lease: the store did not answer"); len(lines) != 1 {
		t.Errorf("%d log lines for an outage, want 1", len(lines))
	}
	st.SetErr(nil)
	waitReceived(t, rc, want)

	// The store goes down under the holder: it stops once its lease runs
	// out, and says so.
	st.SetErr(errors.New("store down"))
	waitFor(t, "lease run out", func() bool { return testutil.ToFloat64(h.m.LeaseHeld) == 0 })
	if lines := h.logs.lines("ran out"); len(lines) != 1 {
		t.Errorf("log lines about the lease running out:\n%s", strings.Join(lines, "\n"))
	}
	n := rc.count()
	time.Sleep(2 * h.cfg.Heartbeat)
	if rc.count() != n {
		t.Error("POSTs without a lease")
	}
	st.SetErr(nil)
	more := appendEvents(t, st, 5, time.Now())
	waitReceived(t, rc, append(want, more...))
}

func TestBatchOrderAcrossRetries(t *testing.T) {
	// A batch that fails is sent again from its first event, with the
	// events appended meanwhile after it: the first arrival of every
	// event is in log order.
	st := eventtest.NewMemory()
	rc := newReceiver(t)
	rc.setAnswer(func(n int, w http.ResponseWriter, _ *http.Request) bool {
		if n%3 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return false
		}
		return true
	})
	h := newHarness(t, st, rc.url(), "n1")
	h.cfg.BatchSize = 7
	h.open(t)
	var want []string
	for i := 0; i < 20; i++ {
		want = append(want, appendEvents(t, st, 5, time.Now())...)
		time.Sleep(3 * time.Millisecond)
	}
	waitReceived(t, rc, want)
	// Each batch, retries included, is a run of the log.
	pos := map[string]int{}
	for i, id := range want {
		pos[id] = i
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.batches {
		for i := 1; i < len(b); i++ {
			if pos[b[i]] != pos[b[i-1]]+1 {
				t.Errorf("batch %v is not a run of the log", b)
				break
			}
		}
	}
}
