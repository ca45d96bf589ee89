package main

// Tests of the handler against signed requests, and a smoke test of the
// whole program: the test binary runs itself as receipts (see TestMain),
// so main's flags and signal handling run as they do for a person.

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether/client"
	"github.com/tetherpush/tether/wire"
)

// runMainEnv makes the test binary run main instead of the tests.
const runMainEnv = "TETHER_RECEIPTS_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const (
	testSecret  = "receipts-test-secret"
	waitTimeout = 5 * time.Second
	batch       = `{"events":[` +
		`{"id":"0001","type":"delivery.acked","at":"2026-11-24T10:00:00.123Z","message":"01JTA","target":"group:shop-1","device":"till-3","attempts":1},` +
		`{"id":"0002","type":"device.offline","at":"2026-11-24T10:00:01.5Z","device":"till-3","node":"n1","code":4408}]}`
)

// post sends body to url signed with secret and returns the status.
func post(tb testing.TB, url, secret, body string) int {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.SignatureHeader, wire.SignWebhook([]byte(secret), time.Now(), []byte(body)))
	c := &http.Client{Timeout: waitTimeout}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// syncBuffer is a bytes.Buffer safe for the handler and the test.
type syncBuffer struct {
	mu  sync.Mutex // guards following
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestHandlerPrintsEachEventOnce(t *testing.T) {
	var out syncBuffer
	srv := httptest.NewServer(newHandler([][]byte{[]byte("old-secret"), []byte(testSecret)}, &out, slog.New(slog.DiscardHandler)))
	defer srv.Close()

	if got := post(t, srv.URL, testSecret, batch); got != http.StatusNoContent {
		t.Fatalf("signed batch: HTTP %d, want 204", got)
	}
	want := "2026-11-24T10:00:00.123Z delivery.acked message=01JTA target=group:shop-1 device=till-3 attempts=1 id=0001\n" +
		"2026-11-24T10:00:01.500Z device.offline device=till-3 node=n1 code=4408 id=0002\n"
	if got := out.String(); got != want {
		t.Fatalf("printed\n%s\nwant\n%s", got, want)
	}
	// The same batch again (the gateway retries when it missed the 2xx),
	// signed with the secret being rotated out: accepted, printed once.
	if got := post(t, srv.URL, "old-secret", batch); got != http.StatusNoContent {
		t.Fatalf("batch again: HTTP %d, want 204", got)
	}
	for _, tt := range []struct {
		name, secret, body string
		want               int
	}{
		{"wrong secret", "guess", batch, http.StatusUnauthorized},
		{"not a batch", testSecret, `[]`, http.StatusBadRequest},
	} {
		if got := post(t, srv.URL, tt.secret, tt.body); got != tt.want {
			t.Errorf("%s: HTTP %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := out.String(); got != want {
		t.Errorf("printed\n%s\nwant only\n%s", got, want)
	}
}

func TestForgetsOldestIDs(t *testing.T) {
	var out syncBuffer
	p := &printer{out: &out, seen: make(map[string]bool)}
	for i := 0; i < seenSize+10; i++ {
		p.print(t.Context(), []client.Event{{ID: strconv.Itoa(i), Type: client.EventOnline}})
	}
	if len(p.seen) != seenSize {
		t.Fatalf("remembers %d ids, want %d", len(p.seen), seenSize)
	}
	if got := strings.Count(out.String(), "\n"); got != seenSize+10 {
		t.Fatalf("printed %d lines, want %d", got, seenSize+10)
	}
	// The oldest ids were forgotten, the newest are not printed again.
	p.print(t.Context(), []client.Event{{ID: "0", Type: client.EventOnline}, {ID: strconv.Itoa(seenSize + 9), Type: client.EventOnline}})
	if got := strings.Count(out.String(), "\n"); got != seenSize+11 {
		t.Fatalf("printed %d lines, want %d", got, seenSize+11)
	}
}

// program is receipts running as a child process.
type program struct {
	cmd    *exec.Cmd
	stdout *bufio.Scanner
	stderr *bufio.Scanner
}

func start(tb testing.TB, env []string, args ...string) *program {
	tb.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1", "TETHER_WEBHOOK_SECRET="), env...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &program{cmd: cmd, stdout: bufio.NewScanner(stdout), stderr: bufio.NewScanner(stderr)}
}

// waitLine returns the next line of s containing want, within waitTimeout.
func waitLine(tb testing.TB, s *bufio.Scanner, want string) string {
	tb.Helper()
	found := make(chan string, 1)
	go func() { // ends at the line or when the process exits
		for s.Scan() {
			if strings.Contains(s.Text(), want) {
				found <- s.Text()
				return
			}
		}
		close(found)
	}()
	select {
	case line, ok := <-found:
		if !ok {
			tb.Fatalf("output ended without a line containing %q", want)
		}
		return line
	case <-time.After(waitTimeout):
		tb.Fatalf("no line containing %q within %v", want, waitTimeout)
		return ""
	}
}

func (p *program) exitCode(tb testing.TB) int {
	tb.Helper()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitTimeout):
		tb.Fatalf("still running %v later", waitTimeout)
		return -1
	}
}

func TestProgram(t *testing.T) {
	p := start(t, []string{"TETHER_WEBHOOK_SECRET=" + testSecret}, "--listen", "127.0.0.1:0")
	line := waitLine(t, p.stderr, "receipts listening")
	_, url, ok := strings.Cut(line, "url=")
	if !ok || !strings.HasSuffix(url, "/hook") {
		t.Fatalf("no URL in %q", line)
	}
	if got := post(t, url, testSecret, batch); got != http.StatusNoContent {
		t.Fatalf("HTTP %d, want 204", got)
	}
	waitLine(t, p.stdout, "delivery.acked message=01JTA")
	waitLine(t, p.stdout, "device.offline device=till-3")
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitLine(t, p.stderr, "receipts closed")
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
}

func TestNoSecret(t *testing.T) {
	p := start(t, nil, "--listen", "127.0.0.1:0")
	waitLine(t, p.stderr, "secret is required")
	if code := p.exitCode(t); code != 2 {
		t.Errorf("exit code %d without a secret, want 2", code)
	}
}
