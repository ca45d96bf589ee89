package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// checkServer is a WebSocket server on a loopback :0 port that answers
// pings and close frames. With keepAfterFIN it never closes its side after
// the client's FIN: the CLOSE_WAIT incident.
type checkServer struct {
	ln           net.Listener
	keepAfterFIN bool
	quit         chan struct{}
	wg           sync.WaitGroup

	mu    sync.Mutex // guards following
	conns map[net.Conn]bool
	auth  []string
}

func startCheckServer(t *testing.T, keepAfterFIN bool) *checkServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &checkServer{ln: ln, keepAfterFIN: keepAfterFIN, quit: make(chan struct{}), conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[nc] = true
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(nc) })
		}
	})
	t.Cleanup(func() {
		close(s.quit)
		ln.Close()
		s.mu.Lock()
		for nc := range s.conns {
			nc.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *checkServer) url() string { return "ws://" + s.ln.Addr().String() + "/ws" }

func (s *checkServer) serve(nc net.Conn) {
	defer nc.Close()
	u := ws.Upgrader{OnHeader: func(key, value []byte) error {
		if string(key) == "Authorization" {
			s.mu.Lock()
			s.auth = append(s.auth, string(value))
			s.mu.Unlock()
		}
		return nil
	}}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Upgrade(nc); err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	for {
		f, err := ws.ReadFrame(nc)
		if errors.Is(err, io.EOF) && s.keepAfterFIN {
			<-s.quit
			return
		}
		if err != nil {
			return
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = ws.WriteFrame(nc, ws.NewPongFrame(f.Payload))
		case ws.OpClose:
			_ = ws.WriteFrame(nc, ws.NewCloseFrame(f.Payload))
			return
		}
	}
}

func TestCheckBrokenServerFails(t *testing.T) {
	t.Parallel()
	s := startCheckServer(t, true)
	r := runTether(t, nil, "", "check", "--conns", "4", "--hold", "1s", s.url())
	if r.code != 1 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q; want 1 and nothing\n%s", r.code, r.stderr, r.stdout)
	}
	for _, want := range []string{"PASS  connect", "PASS  pings", "PASS  close handshake", "FAIL  half-close/FIN   2/2 left half-open 2s after the client's FIN",
		"result: FAIL, 1 of 5 checks failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	t.Logf("\n%s", r.stdout)
}

func TestCheckCorrectServerJSON(t *testing.T) {
	t.Parallel()
	s := startCheckServer(t, false)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# one per line\nt1\n\nBearer t2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TETHER_CONNS": "4", "TETHER_HEADER": "X-A: 1, 2\nX-B: 3"}
	r := runTether(t, env, "", "check", s.url(), "--hold", "500ms", "--json", "--tokens", tokens)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q; want 0 and nothing\n%s", r.code, r.stderr, r.stdout)
	}
	var rep struct {
		Conns  int  `json:"conns"`
		HoldMS int  `json:"hold_ms"`
		Pass   bool `json:"pass"`
		Checks map[string]struct {
			Status  string `json:"status"`
			Summary string `json:"summary"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if rep.Conns != 4 || rep.HoldMS != 500 || !rep.Pass || len(rep.Checks) != 6 {
		t.Errorf("report %+v, want 4 conns, 500 ms hold, pass and 6 checks", rep)
	}
	for name, c := range rep.Checks {
		if (c.Status != "pass" && c.Status != "info") || c.Summary == "" {
			t.Errorf("check %s = %+v, want pass (or info) with a summary", name, c)
		}
	}
	s.mu.Lock()
	auth := strings.Join(s.auth, ",")
	s.mu.Unlock()
	if strings.Count(auth, "Bearer t1") != 2 || strings.Count(auth, "Bearer t2") != 2 {
		t.Errorf("Authorization headers %q, want t1 and t2 twice each", auth)
	}
}

func TestCheckUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tokens, good := filepath.Join(dir, "empty"), filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("\n# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("t1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "missing WS_URL"},
		{[]string{"check", "http://127.0.0.1:1/"}, "want ws://"},
		{[]string{"check", "ws://a/", "ws://b/"}, `unexpected argument "ws://b/"`},
		{[]string{"check", "--header", "no colon", "ws://a/"}, "want 'Name: value'"},
		{[]string{"check", "--header", "Bad Name: x", "ws://a/"}, "want 'Name: value'"},
		{[]string{"check", "--header", "Upgrade: x", "ws://a/"}, "set by the WebSocket handshake"},
		{[]string{"check", "--conns", "0", "ws://a/"}, "must be positive"},
		{[]string{"check", "--hold", "soon", "ws://a/"}, "not a duration"},
		{[]string{"check", "--tokens", tokens, "ws://a/"}, "no token"},
		{[]string{"check", "--tokens", tokens + ".missing", "ws://a/"}, "no such file"},
		{[]string{"check", "--tokens", good, "--header", "Authorization: x", "ws://a/"}, "exclude each other"},
		{[]string{"check", "--bogus", "ws://a/"}, "bogus"},
	} {
		r := runTether(t, nil, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

func TestCheckHelp(t *testing.T) {
	r := runTether(t, nil, "", "check", "--help")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Usage: tether check [flags] WS_URL", "--header", "$TETHER_CONNS", "(default 30s)", "half-close/FIN", `"checks"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q:\n%s", want, r.stdout)
		}
	}
	if h := runTether(t, nil, "", "help", "check"); h.stdout != r.stdout {
		t.Error("help check differs from check --help")
	}
}

func TestCheckUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := runTether(t, nil, "", "check", "--conns", "2", "--hold", "1s", "ws://"+addr+"/")
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL  connect          0/2 upgraded; refused ×2") {
		t.Errorf("code %d, stdout %q, stderr %q; want 1 and the refusals", r.code, r.stdout, r.stderr)
	}
}
