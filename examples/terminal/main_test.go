package main

// A smoke test of the whole program: the test binary runs itself as the
// terminal (see TestMain) against an in-process tether node, so main's
// flags and signal handling run as they do for a person.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
)

// runMainEnv makes the test binary run main instead of the tests.
const runMainEnv = "TETHER_TERMINAL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const (
	testSecret  = "terminal-test-token-secret"
	testAPIKey  = "terminal-test-api-key"
	waitTimeout = 5 * time.Second
)

// node is an in-process tether node on the embedded store and a :0 port.
type node struct {
	addr string
	api  *http.Client
}

func mustOpenNode(tb testing.TB) *node {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(tb.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	h := hub.New(st, hub.Config{Node: "n1", Heartbeat: 5 * time.Second, AckTimeout: 5 * time.Second, Workers: 2})
	if err := h.Open(); err != nil {
		st.Close()
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{
		Listen: "127.0.0.1:0", AdminListen: "-", TokenSecret: []byte(testSecret), APIKey: testAPIKey,
	})
	if err := srv.Open(); err != nil {
		h.Close()
		st.Close()
		tb.Fatalf("open server: %v", err)
	}
	n := &node{addr: srv.Addr(), api: &http.Client{Transport: &http.Transport{}, Timeout: waitTimeout}}
	tb.Cleanup(func() {
		h.Close()
		srv.Close()
		st.Close()
		n.api.CloseIdleConnections()
	})
	return n
}

// call calls the HTTP API and decodes a 2xx answer into out.
func (n *node) call(tb testing.TB, method, path string, body, out any) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := n.api.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		tb.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
	}
}

// terminal is the program running as a child process.
type terminal struct {
	cmd    *exec.Cmd
	stdout chan string // lines
	stderr chan string // lines
	exited chan struct{}
	err    error // cmd.Wait's result, once exited is closed
}

// startTerminal runs the program with args and env added to the test's.
func startTerminal(tb testing.TB, env []string, args ...string) *terminal {
	tb.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1", "TETHER_TOKEN="), env...)
	term := &terminal{cmd: cmd, stdout: make(chan string, 256), stderr: make(chan string, 256), exited: make(chan struct{})}
	cmd.Stdout = &lineWriter{ch: term.stdout}
	cmd.Stderr = &lineWriter{ch: term.stderr}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { // owned: the cleanup waits for it
		term.err = cmd.Wait()
		close(term.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-term.exited:
		default:
			cmd.Process.Kill()
			<-term.exited
		}
	})
	return term
}

// lineWriter sends each line written to it to ch, dropping lines when ch
// is full. cmd.Wait returns once the child's output is all written.
type lineWriter struct {
	ch chan string

	mu  sync.Mutex // guards following
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.ch <- string(w.buf[:i]):
		default:
		}
		w.buf = w.buf[i+1:]
	}
}

// waitLine returns the first line of ch containing all of want.
func waitLine(tb testing.TB, name string, ch chan string, want ...string) string {
	tb.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case line := <-ch:
			tb.Logf("%s: %s", name, line)
			if containsAll(line, want) {
				return line
			}
		case <-timeout:
			tb.Fatalf("no %s line containing %q within %v", name, want, waitTimeout)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// wait returns the program's exit code, failing if it runs past timeout.
func (term *terminal) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-term.exited:
		var exit *exec.ExitError
		if term.err != nil && !errors.As(term.err, &exit) {
			tb.Fatalf("wait: %v", term.err)
		}
		return term.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		tb.Fatalf("still running %v later", timeout)
		return -1
	}
}

func TestPrintsOrderAcksAndStopsOnInterrupt(t *testing.T) {
	n := mustOpenNode(t)
	tok, err := token.Sign([]byte(testSecret), token.Claims{Device: "till-3", Groups: []string{"shop-1"}, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	term := startTerminal(t, nil, "--url", "ws://"+n.addr, "--token", tok)
	waitLine(t, "stderr", term.stderr, "tether connected")

	var pub struct {
		ID string `json:"id"`
	}
	n.call(t, "POST", "/v1/messages", map[string]any{"target": "group:shop-1", "data": map[string]any{"order": "A-42", "items": []string{"espresso", "croissant"}}}, &pub)
	line := waitLine(t, "stdout", term.stdout, pub.ID)
	for _, want := range []string{"order " + pub.ID + " for group:shop-1", "(attempt 1)", `"order":"A-42"`, `"items":["espresso","croissant"]`} {
		if !strings.Contains(line, want) {
			t.Errorf("printed %q, want it to contain %q", line, want)
		}
	}

	deadline := time.Now().Add(waitTimeout)
	for {
		var st struct {
			Deliveries []struct {
				Device string `json:"device"`
				State  string `json:"state"`
			} `json:"deliveries"`
		}
		n.call(t, "GET", "/v1/messages/"+pub.ID, nil, &st)
		if len(st.Deliveries) == 1 && st.Deliveries[0].Device == "till-3" && st.Deliveries[0].State == "acked" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not acked within %v: %+v", pub.ID, waitTimeout, st.Deliveries)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := term.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := term.wait(t, waitTimeout); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
	waitLine(t, "stderr", term.stderr, "tether closed", "client closed")
}

func TestNoToken(t *testing.T) {
	term := startTerminal(t, nil, "--url", "ws://127.0.0.1:1")
	if code := term.wait(t, waitTimeout); code != 2 {
		t.Errorf("exit code %d without a token, want 2", code)
	}
	waitLine(t, "stderr", term.stderr, "token is required")
}

func TestTokenRefused(t *testing.T) {
	n := mustOpenNode(t)
	term := startTerminal(t, []string{"TETHER_TOKEN=not-a-token"}, "--url", "ws://"+n.addr)
	if code := term.wait(t, waitTimeout); code != 1 {
		t.Errorf("exit code %d for a refused token, want 1", code)
	}
	waitLine(t, "stderr", term.stderr, "terminal stopped", "401")
}
