//go:build linux

package doctor

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The live tests run testdata/dumper, take its dumps in every form and
// check the verdicts. Each takes a few seconds.

// fetchDump gets /debug/pprof/goroutine?debug=N from a dumper.
func fetchDump(tb testing.TB, addr string, debug int) *Dump {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/goroutine?debug=%d", addr, debug)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %s", url, resp.Status)
	}
	d, err := ParseGoroutines(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return d
}

// liveDumps returns every form of dump of a settled dumper: the files it
// wrote, what its pprof endpoint serves, and what it prints on SIGQUIT,
// which ends it.
func liveDumps(tb testing.TB, d *dumper) map[string]*Dump {
	tb.Helper()
	return map[string]*Dump{
		"file debug=1": mustParse(tb, d.file(tb, "debug1.txt")),
		"file debug=2": mustParse(tb, d.file(tb, "debug2.txt")),
		"url debug=1":  fetchDump(tb, d.addr, 1),
		"url debug=2":  fetchDump(tb, d.addr, 2),
		"SIGQUIT":      mustParse(tb, []byte(d.signal(tb, syscall.SIGQUIT))),
	}
}

// TestLiveRedigoDeadlock reproduces the incident with redigo and a real
// redis-server: Pool{MaxActive: 8, Wait: true}, 12 goroutines that each
// hold a connection while getting a second one.
func TestLiveRedigoDeadlock(t *testing.T) {
	t.Parallel()
	redis := mustStartRedis(t)
	bin := mustBuildDumper(t)
	const workers, maxActive = 12, 8
	d := mustStartDumper(t, bin, nil, "-scenario", "deadlock", "-redis", redis,
		"-workers", strconv.Itoa(workers), "-max-active", strconv.Itoa(maxActive))
	for form, dump := range liveDumps(t, d) {
		t.Run(form, func(t *testing.T) {
			r := Analyze(dump)
			checkDeadlock(t, r, workers+1, maxActive)
			if strings.Contains(form, "debug=1") != (r.Format == FormatCounted) {
				t.Errorf("format %q", r.Format)
			}
		})
	}
}

// TestLiveRedigoBusy runs the same pool busy but healthy: 12 goroutines
// that each get one connection and block in BLPOP on it.
func TestLiveRedigoBusy(t *testing.T) {
	t.Parallel()
	redis := mustStartRedis(t)
	bin := mustBuildDumper(t)
	const workers, maxActive = 12, 8
	d := mustStartDumper(t, bin, nil, "-scenario", "busy", "-redis", redis,
		"-workers", strconv.Itoa(workers), "-max-active", strconv.Itoa(maxActive))
	for form, dump := range liveDumps(t, d) {
		t.Run(form, func(t *testing.T) {
			r := Analyze(dump)
			// The dump catches the workers at some moment: the pool is full,
			// most of the others wait, and none holds two.
			for _, kind := range []string{"pool-deadlock", "pool-nested", "pool-stalled"} {
				if f := finding(r, kind); f != nil {
					t.Errorf("a busy pool reported as %s: %s", kind, f.Summary)
				}
			}
			if f := finding(r, "pool-busy"); f == nil || f.InUse == 0 || f.Goroutines == 0 || f.Goroutines+f.InUse > workers {
				t.Errorf("busy finding %+v, want waiters and users, at most %d in all", f, workers)
			}
		})
	}
}

// TestLiveRedigoDeadlockNoSpareWaiter is the deadlock with exactly as
// many workers as connections: no goroutine waits at the outer Get, so
// the dump lacks the evidence that refreshDevice got a connection. The
// heuristic must not claim the nested acquisition then; it reports the
// pool as stalled, which is still the right alarm.
func TestLiveRedigoDeadlockNoSpareWaiter(t *testing.T) {
	t.Parallel()
	redis := mustStartRedis(t)
	bin := mustBuildDumper(t)
	const maxActive = 8
	d := mustStartDumper(t, bin, nil, "-scenario", "deadlock", "-redis", redis,
		"-workers", strconv.Itoa(maxActive), "-max-active", strconv.Itoa(maxActive))
	r := Analyze(mustParse(t, d.file(t, "debug2.txt")))
	f := finding(r, "pool-stalled")
	if f == nil || r.Verdict.Severity != SeverityWarning {
		t.Fatalf("verdict %+v, findings %+v; want a stalled pool", r.Verdict, r.Findings)
	}
	if f.InUse != 0 || f.Goroutines < maxActive {
		t.Errorf("stalled: %d waiting, %d in use; want at least %d and 0", f.Goroutines, f.InUse, maxActive)
	}
}

// TestLiveMutex needs no redis-server: goroutines pile up on a mutex whose
// holder sleeps.
func TestLiveMutex(t *testing.T) {
	t.Parallel()
	bin := mustBuildDumper(t)
	const workers = 12
	d := mustStartDumper(t, bin, nil, "-scenario", "mutex", "-workers", strconv.Itoa(workers))
	for form, dump := range liveDumps(t, d) {
		t.Run(form, func(t *testing.T) {
			checkPileup(t, Analyze(dump), workers)
		})
	}
}
