package doctor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// mustAnalyzeFixture parses and analyses a dump of testdata.
func mustAnalyzeFixture(tb testing.TB, name string) *Report {
	tb.Helper()
	return Analyze(mustParse(tb, mustReadFixture(tb, name)))
}

// finding returns the first finding of kind, or nil.
func finding(r *Report, kind string) *Finding {
	for i := range r.Findings {
		if r.Findings[i].Kind == kind {
			return &r.Findings[i]
		}
	}
	return nil
}

// placeOf returns the place whose function is fn.
func placeOf(tb testing.TB, r *Report, fn string) Place {
	tb.Helper()
	for _, p := range r.Places {
		if p.Function == fn {
			return p
		}
	}
	tb.Fatalf("no place in %s; places: %+v", fn, r.Places)
	return Place{}
}

// checkDeadlock asserts the verdict on a dump of the incident: waiters
// goroutines wait for the pool, holding of them hold a connection.
func checkDeadlock(tb testing.TB, r *Report, waiters, holding int) {
	tb.Helper()
	f := finding(r, "pool-deadlock")
	if f == nil {
		tb.Fatalf("no pool-deadlock finding; findings %+v", r.Findings)
	}
	if r.Verdict.Severity != SeverityCritical || r.Verdict.Finding != 0 || r.Findings[0].Kind != "pool-deadlock" {
		tb.Errorf("verdict %+v, want critical from the pool deadlock", r.Verdict)
	}
	if f.Pool != "redigo" || f.Goroutines != waiters || f.Holding != holding || f.InUse != 0 {
		tb.Errorf("finding: pool %q, %d waiting, %d holding, %d in use; want redigo, %d, %d, 0",
			f.Pool, f.Goroutines, f.Holding, f.InUse, waiters, holding)
	}
	want := "wait for a connection from a redigo pool whose connections are all held by goroutines that are themselves waiting — a nested-acquisition deadlock"
	if !strings.Contains(f.Summary, want) {
		tb.Errorf("summary %q lacks %q", f.Summary, want)
	}
	if len(f.Details) == 0 || !strings.Contains(f.Details[0], "main.(*store).refreshDevice") || !strings.Contains(f.Details[0], "main.(*store).markOnline") {
		tb.Errorf("details %q, want the holder refreshDevice and the waiter markOnline", f.Details)
	}
	if p := placeOf(tb, r, "main.(*store).markOnline"); p.Count != holding || p.Wait != WaitPool || p.Pool != "redigo" {
		tb.Errorf("markOnline: %d goroutines, wait %q, pool %q; want %d, pool, redigo", p.Count, p.Wait, p.Pool, holding)
	}
	if p := placeOf(tb, r, "main.(*store).refreshDevice"); p.Count != waiters-holding-1 || p.Wait != WaitPool {
		tb.Errorf("refreshDevice: %d goroutines, wait %q; want %d, pool", p.Count, p.Wait, waiters-holding-1)
	}
	if finding(r, "pool-busy") != nil || finding(r, "pool-stalled") != nil {
		tb.Errorf("findings %+v: a deadlock is neither busy nor merely stalled", r.Findings)
	}
}

func TestAnalyzeDeadlock(t *testing.T) {
	for _, name := range []string{"redigo-deadlock.debug1.txt", "redigo-deadlock.debug2.txt", "redigo-deadlock.sigquit.txt"} {
		t.Run(name, func(t *testing.T) {
			r := mustAnalyzeFixture(t, name)
			// The workers and the resend loop wait.
			checkDeadlock(t, r, fixtureWorkers+1, fixtureMaxActive)
			if r.Format != FormatCounted && r.Findings[0].LongestWaitMinutes < 1 {
				t.Errorf("longest wait %d minutes, want at least 1", r.Findings[0].LongestWaitMinutes)
			}
		})
	}
}

// TestAnalyzeBusy checks that a pool that is exhausted but moving is not
// called a deadlock.
func TestAnalyzeBusy(t *testing.T) {
	for _, name := range []string{"redigo-busy.debug1.txt", "redigo-busy.debug2.txt"} {
		t.Run(name, func(t *testing.T) {
			r := mustAnalyzeFixture(t, name)
			checkBusy(t, r, fixtureWorkers-fixtureMaxActive, fixtureMaxActive)
		})
	}
}

func checkBusy(tb testing.TB, r *Report, waiting, inUse int) {
	tb.Helper()
	for _, kind := range []string{"pool-deadlock", "pool-nested", "pool-stalled"} {
		if f := finding(r, kind); f != nil {
			tb.Errorf("a busy pool reported as %s: %s", kind, f.Summary)
		}
	}
	f := finding(r, "pool-busy")
	if f == nil {
		tb.Fatalf("no pool-busy finding; findings %+v", r.Findings)
	}
	if f.Goroutines != waiting || f.InUse != inUse || f.Holding != 0 {
		tb.Errorf("busy: %d waiting, %d in use, %d holding; want %d, %d, 0", f.Goroutines, f.InUse, f.Holding, waiting, inUse)
	}
	if r.Verdict.Severity != SeverityInfo {
		tb.Errorf("verdict %+v, want info", r.Verdict)
	}
}

func TestAnalyzeMutex(t *testing.T) {
	for _, name := range []string{"mutex.debug1.txt", "mutex.debug2.txt"} {
		t.Run(name, func(t *testing.T) {
			r := mustAnalyzeFixture(t, name)
			checkPileup(t, r, fixtureWorkers)
			if p := placeOf(t, r, "main.(*registry).lookup"); p.Count != 5 || p.Wait != WaitRLock {
				t.Errorf("lookup: %d goroutines, wait %q; want 5, %q", p.Count, p.Wait, WaitRLock)
			}
		})
	}
}

func checkPileup(tb testing.TB, r *Report, waiters int) {
	tb.Helper()
	f := finding(r, "lock-pileup")
	if f == nil {
		tb.Fatalf("no lock-pileup finding; findings %+v", r.Findings)
	}
	if f.Goroutines != waiters || !strings.Contains(f.Summary, "wait to lock a sync.Mutex in main.(*cache).get") {
		tb.Errorf("pile-up: %d goroutines, %q; want %d in main.(*cache).get", f.Goroutines, f.Summary, waiters)
	}
	if len(f.Details) == 0 || !strings.Contains(f.Details[0], "main.(*cache).refresh") {
		tb.Errorf("details %q, want the holder main.(*cache).refresh", f.Details)
	}
	if p := placeOf(tb, r, "main.(*cache).get"); p.Wait != WaitMutex || p.Count != waiters {
		tb.Errorf("get: %d goroutines, wait %q", p.Count, p.Wait)
	}
	if r.Verdict.Severity != SeverityWarning || finding(r, "pool-deadlock") != nil {
		tb.Errorf("verdict %+v, want a warning and no deadlock", r.Verdict)
	}
}

func TestAnalyzeWaits(t *testing.T) {
	// What each function of the waits scenario waits for, as a traceback
	// tells it and as a counted dump can tell it (no channel waits).
	want := []struct {
		fn              string
		count           int
		traceback, cntd Wait
	}{
		{"main.worker", 10, WaitReceive, WaitUnknown},
		{"main.produce", 5, WaitSend, WaitUnknown},
		{"main.loop", 3, WaitSelect, WaitUnknown},
		{"main.waitNil", 1, WaitForever, WaitUnknown},
		{"main.waitAll", 1, WaitWaitGroup, WaitWaitGroup},
		{"main.waitCond", 3, WaitCond, WaitCond},
		{"main.nap", 2, WaitSleep, WaitSleep},
		{"main.pinned", 1, WaitReceive, WaitUnknown},
		{"main.readAll", 4, WaitNetwork, WaitNetwork},
		{"main.acceptLoop", 1, WaitNetwork, WaitNetwork},
	}
	for _, name := range []string{"waits.debug1.txt", "waits.debug2.txt", "waits.panic.txt"} {
		t.Run(name, func(t *testing.T) {
			r := mustAnalyzeFixture(t, name)
			for _, w := range want {
				p := placeOf(t, r, w.fn)
				wait := w.traceback
				if r.Format == FormatCounted {
					wait = w.cntd
				}
				if p.Wait != wait || p.Count != w.count {
					t.Errorf("%s: %d goroutines, wait %q; want %d, %q", w.fn, p.Count, p.Wait, w.count, wait)
				}
			}
			if p := placeOf(t, r, "main.readAll"); p.Detail != "read" {
				t.Errorf("readAll: detail %q, want read", p.Detail)
			}
			if p := placeOf(t, r, "main.acceptLoop"); p.Detail != "accept" {
				t.Errorf("acceptLoop: detail %q, want accept", p.Detail)
			}
			if r.Verdict.Severity != SeverityOK || len(r.Findings) != 0 {
				t.Errorf("verdict %+v, findings %+v; want ok and none", r.Verdict, r.Findings)
			}
		})
	}
}

// TestAnalyzeGroups checks that goroutines are grouped by the functions
// of their stacks, whatever their arguments.
func TestAnalyzeGroups(t *testing.T) {
	r := mustAnalyzeFixture(t, "redigo-deadlock.debug2.txt")
	g := r.Groups[0]
	if g.Count != fixtureWorkers-fixtureMaxActive || g.Wait != WaitPool || len(g.IDs) != maxGroupIDs {
		t.Fatalf("largest group: %d goroutines, wait %q, %d ids", g.Count, g.Wait, len(g.IDs))
	}
	if g.Frames[g.Place].Function != "main.(*store).refreshDevice" {
		t.Errorf("place %+v, want refreshDevice", g.Frames[g.Place])
	}
	if len(g.CreatedBy) != 1 || g.CreatedBy[0].Function != "main.deadlock" || g.CreatedBy[0].Count != g.Count {
		t.Errorf("created by %+v, want main.deadlock for all", g.CreatedBy)
	}
	total := 0
	for _, g := range r.Groups {
		total += g.Count
	}
	if total != r.Goroutines {
		t.Errorf("groups hold %d goroutines, the dump %d", total, r.Goroutines)
	}
}

// TestReportText checks the text a person reads for the incident's dump.
func TestReportText(t *testing.T) {
	r := mustAnalyzeFixture(t, "redigo-deadlock.debug2.txt")
	var b bytes.Buffer
	if err := r.WriteText(&b, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		"Verdict: DEADLOCK — nested-acquisition deadlock on a redigo pool.",
		"41 goroutines wait for a connection from a redigo pool whose connections are all held by goroutines that are themselves waiting",
		"8 goroutines hold a connection got in main.(*store).refreshDevice (dumper/redis.go:",
		"pool get (redigo)",
		"> main.(*store).markOnline",
		"created by main.deadlock (32)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

// TestReportJSON checks the stable field names of the JSON form.
func TestReportJSON(t *testing.T) {
	r := mustAnalyzeFixture(t, "redigo-deadlock.debug2.txt")
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Schema   string `json:"schema"`
		Verdict  struct{ Severity, Title string }
		Findings []struct {
			Kind       string
			Goroutines int
			Holding    int
		}
		Places []struct {
			Function string
			Wait     string
			Count    int
			Line     int
		}
		Groups []struct {
			Count  int
			Frames []struct{ Function string }
		}
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Schema != ReportSchema || v.Verdict.Severity != "critical" || v.Findings[0].Kind != "pool-deadlock" ||
		v.Findings[0].Holding != fixtureMaxActive || v.Places[0].Wait != "pool" || v.Places[0].Line == 0 ||
		len(v.Groups[0].Frames) == 0 {
		t.Errorf("JSON does not hold the report:\n%s", b)
	}
}
