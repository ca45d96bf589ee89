package main

import (
	"compress/gzip"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
)

// deadlockDump is a real dump of the incident, written by
// doctor/testdata/dumper (see doctor/dumper_test.go).
var deadlockDump = filepath.Join("..", "..", "doctor", "testdata", "redigo-deadlock.debug2.txt")

func mustReadDump(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(deadlockDump)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkDeadlockText asserts the text report of the incident's dump.
func checkDeadlockText(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}
	for _, want := range []string{"Verdict: DEADLOCK", "a nested-acquisition deadlock", "main.(*store).markOnline"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestDoctorGoroutinesFile(t *testing.T) {
	checkDeadlockText(t, runTether(t, nil, "", "doctor", "goroutines", deadlockDump))
	checkDeadlockText(t, runTether(t, nil, "", "doctor", "goroutines", "--top", "3", deadlockDump))
	checkDeadlockText(t, runTether(t, nil, string(mustReadDump(t)), "doctor", "goroutines", "-"))
}

func TestDoctorGoroutinesJSON(t *testing.T) {
	for _, args := range [][]string{
		{"doctor", "goroutines", deadlockDump, "--json"},
		{"doctor", "goroutines", "--json", deadlockDump},
	} {
		r := runTether(t, nil, "", args...)
		if r.code != 0 {
			t.Fatalf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
		var v struct {
			Schema   string
			Verdict  struct{ Severity string }
			Findings []struct {
				Kind string
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.stdout)
		}
		if v.Schema != "tether.doctor.goroutines/v1" || v.Verdict.Severity != "critical" || len(v.Findings) == 0 || v.Findings[0].Kind != "pool-deadlock" {
			t.Errorf("%v: %+v", args, v)
		}
	}
}

func TestDoctorGoroutinesURL(t *testing.T) {
	dump := mustReadDump(t)
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/debug/pprof/goroutine":
			query = r.URL.RawQuery
			w.Write(dump)
		case "/slow":
			// Half the dump, then nothing until the client gives up.
			w.Write(dump[:len(dump)/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/gzip":
			zw := gzip.NewWriter(w)
			zw.Write(dump)
			zw.Close()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)

	checkDeadlockText(t, runTether(t, nil, "", "doctor", "goroutines", srv.URL+"/debug/pprof/goroutine"))
	if query != "debug=2" {
		t.Errorf("query %q, want debug=2 added", query)
	}
	checkDeadlockText(t, runTether(t, nil, "", "doctor", "goroutines", srv.URL+"/debug/pprof/goroutine?debug=2"))

	for _, c := range []struct {
		path, want string
		args       []string
	}{
		{"/missing", "the server answered 404", nil},
		{"/gzip", "binary (gzip) pprof profile", nil},
		{"/slow", "did not arrive within 200ms (--timeout)", []string{"--timeout", "200ms"}},
	} {
		r := runTether(t, nil, "", append([]string{"doctor", "goroutines", srv.URL + c.path}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: code %d, stderr %q; want 1 and %q", c.path, r.code, r.stderr, c.want)
		}
	}
	// What arrived before the timeout is still reported.
	r := runTether(t, nil, "", "doctor", "goroutines", srv.URL+"/slow", "--timeout", "200ms")
	if !strings.Contains(r.stdout, "truncated") {
		t.Errorf("partial dump: stdout %q, want a report marked truncated", r.stdout)
	}
}

func TestDoctorGoroutinesFailures(t *testing.T) {
	notDump := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notDump, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"doctor", "goroutines", filepath.Join(t.TempDir(), "missing.txt")}, 1, "no such file"},
		{[]string{"doctor", "goroutines", notDump}, 1, "no goroutine found"},
		{[]string{"doctor", "goroutines"}, 2, "missing FILE_OR_URL"},
		{[]string{"doctor", "goroutines", "a", "b"}, 2, `unexpected argument "b"`},
		{[]string{"doctor", "goroutines", deadlockDump, "--top", "0"}, 2, "--top 0"},
		{[]string{"doctor", "goroutines", "http://[::1"}, 2, "is not a URL"},
		{[]string{"doctor", "goroutines", deadlockDump, "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"doctor"}, 2, "which check?"},
		{[]string{"doctor", "leaks"}, 2, `unknown check "leaks"`},
		{[]string{"doctor", "--admin"}, 2, "flag needs an argument"},
		{[]string{"doctor", "--admin", "http://127.0.0.1:1", "extra"}, 2, "want one URL"},
		{[]string{"doctor", "--admin=http://127.0.0.1:1"}, 1, "connection refused"},
		{[]string{"doctor", "sockets"}, 2, "--port is required"},
		{[]string{"doctor", "sockets", "--port", "70000"}, 2, "--port 70000"},
		{[]string{"doctor", "sockets", "--port", "80", "extra"}, 2, `unexpected argument "extra"`},
	} {
		r := runTether(t, nil, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
}

func TestDoctorHelp(t *testing.T) {
	for _, args := range [][]string{{"doctor", "--help"}, {"help", "doctor"}} {
		r := runTether(t, nil, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "tether doctor goroutines FILE_OR_URL") || !strings.Contains(r.stdout, "tether doctor sockets --port P") {
			t.Errorf("%v: code %d, stdout %q", args, r.code, r.stdout)
		}
	}
	for _, sub := range []string{"goroutines", "sockets"} {
		r := runTether(t, nil, "", "doctor", sub, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: tether doctor "+sub) || !strings.Contains(r.stdout, "$TETHER_JSON") {
			t.Errorf("doctor %s --help: code %d, stdout %q", sub, r.code, r.stdout)
		}
	}
}

func TestDoctorSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	r := runTether(t, nil, "", "doctor", "sockets", "--port", port)
	if r.code != 0 || !strings.Contains(r.stdout, "LISTEN") {
		t.Fatalf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runTether(t, map[string]string{"TETHER_PORT": port}, "", "doctor", "sockets", "--json")
	var v struct {
		Port   int
		States []struct {
			State string
			Local int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 {
		t.Fatalf("code %d, %v:\n%s", r.code, err, r.stdout)
	}
	listen := 0
	for _, s := range v.States {
		if s.State == "LISTEN" {
			listen = s.Local
		}
	}
	if strconv.Itoa(v.Port) != port || listen != 1 {
		t.Errorf("port %d, %d listening; want %s and 1", v.Port, listen, port)
	}
}

// TestDoctorDumpOfItself analyses dumps of this test binary, served the
// way /debug/pprof/goroutine serves them.
func TestDoctorDumpOfItself(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
		pprof.Lookup("goroutine").WriteTo(w, debug)
	}))
	t.Cleanup(srv.Close)
	for _, debug := range []string{"1", "2"} {
		r := runTether(t, nil, "", "doctor", "goroutines", srv.URL+"/debug/pprof/goroutine?debug="+debug)
		if r.code != 0 || !strings.Contains(r.stdout, "Goroutine dump (debug="+debug+")") || !strings.Contains(r.stdout, "Verdict: ") {
			t.Errorf("debug=%s: code %d, stderr %q, stdout:\n%s", debug, r.code, r.stderr, r.stdout)
		}
	}
}
