package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// result is what one in-process run of the command line produced.
type result struct {
	code           int
	stdout, stderr string
}

// runTether runs the command line in-process with env as its environment
// and stdin as its standard input.
func runTether(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr, getenv)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		r := runTether(t, nil, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: code %d, stderr %q; want 0 and nothing", args, r.code, r.stderr)
		}
		for _, cmd := range []string{"serve", "token --device ID", "publish --target T --data JSON", "doctor goroutines FILE_OR_URL",
			"doctor sockets --port P", "doctor --admin URL", "check WS_URL", "bench", "version", "TETHER_REDIS_URL"} {
			if !strings.Contains(r.stdout, cmd) {
				t.Errorf("%v: usage lacks %q:\n%s", args, cmd, r.stdout)
			}
		}
	}
}

func TestRunUnknownCommand(t *testing.T) {
	r := runTether(t, nil, "", "serv")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "serv"`) || !strings.Contains(r.stderr, "Commands:") {
		t.Fatalf("code %d, stderr %q; want 2, the unknown command and the usage", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	if r := runTether(t, nil, ""); r.code != 2 || !strings.Contains(r.stderr, "Usage: tether <command>") {
		t.Fatalf("no command: code %d, stderr %q; want 2 and the usage", r.code, r.stderr)
	}
}

// TestRunHelpEveryCommand checks that --help works on every command and
// that `tether help CMD` is the same.
func TestRunHelpEveryCommand(t *testing.T) {
	for _, cmd := range []string{"token", "publish", "version"} {
		r := runTether(t, nil, "", cmd, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: tether "+cmd) {
			t.Errorf("%s --help: code %d, stdout %q, stderr %q", cmd, r.code, r.stdout, r.stderr)
		}
		if h := runTether(t, nil, "", "help", cmd); h.stdout != r.stdout || h.code != 0 {
			t.Errorf("help %s differs from %s --help", cmd, cmd)
		}
	}
	r := runTether(t, nil, "", "serve", "--help")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "$TETHER_MAX_INFLIGHT") {
		t.Errorf("serve --help: code %d, output %q", r.code, r.stdout+r.stderr)
	}
}

func TestVersion(t *testing.T) {
	r := runTether(t, nil, "", "version")
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"tether dev", "go:       go1.", "platform: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("version output lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := runTether(t, nil, "", "version", "extra"); r.code != 2 {
		t.Errorf("version extra: code %d, want 2", r.code)
	}
}
