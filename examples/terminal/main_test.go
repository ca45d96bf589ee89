package main

// A smoke test of the whole program: the test binary runs itself as the
// terminal (see TestMain) against an in-process tether node, so main's
// flags and signal handling run as they do for a person.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether/internal/nodetest"
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

// waitTimeout bounds each wait of the tests.
const waitTimeout = 5 * time.Second

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
	n := nodetest.MustOpen(t, nodetest.Options{})
	term := startTerminal(t, nil, "--url", n.WSURL, "--token", nodetest.MustToken(t, "till-3", "shop-1"))
	waitLine(t, "stderr", term.stderr, "tether connected")

	var pub struct {
		ID string `json:"id"`
	}
	if code := n.API(t, "POST", "/v1/messages", map[string]any{"target": "group:shop-1", "data": map[string]any{"order": "A-42", "items": []string{"espresso", "croissant"}}}, &pub); code != 202 {
		t.Fatalf("publish: status %d, want 202", code)
	}
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
		if code := n.API(t, "GET", "/v1/messages/"+pub.ID, nil, &st); code != 200 {
			t.Fatalf("GET /v1/messages/%s: status %d", pub.ID, code)
		}
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
	n := nodetest.MustOpen(t, nodetest.Options{})
	term := startTerminal(t, []string{"TETHER_TOKEN=not-a-token"}, "--url", n.WSURL)
	if code := term.wait(t, waitTimeout); code != 1 {
		t.Errorf("exit code %d for a refused token, want 1", code)
	}
	waitLine(t, "stderr", term.stderr, "terminal stopped", "401")
}
