package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/tetherpush/tether/check"
)

// maxTokensFile bounds what --tokens reads.
const maxTokensFile = 64 << 20

const checkAbout = `Does a WebSocket service hold long connections well? Against any WebSocket
server: opens --conns connections, holds them for --hold sending nothing but
WebSocket pings, then closes half of the survivors with a close frame and the
other half with a bare TCP FIN. One line per check, with its numbers:

  connect          pass when every connection upgraded; handshake p50/p99;
                   errors by kind (http <status>, refused, timeout, reset, dns, tls, …)
  idle hold        pass when the server closed none during the hold; else when
                   and with which close code
  pings            pass when at least 99% of the pings were answered within --timeout
  close handshake  pass when, after the client's close frame, the server sent its
                   own and closed TCP within --timeout
  half-close/FIN   pass when, after the client's FIN (no close frame), the server
                   closed its side within --fin-wait; a client socket still in
                   FIN_WAIT2 (/proc/net/tcp) means the server sits in CLOSE_WAIT
  server pings     info: does the server ping, how often; a tether node's heartbeat

Exit status: 0 when every check passed, 1 when one failed, 2 for usage errors.

--json prints one object: {"url","conns","hold_ms","ping_interval_ms",
"timeout_ms","fin_wait_ms","started_at","duration_ms","pass","checks":{
"connect","idle_hold","pings","close_handshake","half_close","server_pings"}};
every check has "status" (pass, fail, skip, info) and "summary" (the line of
text) besides its numbers; durations are milliseconds (_ms); see package check.

Servers that keep one connection per identity (tether closes the older one
with 4409) need one credential per connection: --tokens FILE.`

// checkConfig holds the flags of `tether check`.
type checkConfig struct {
	check.Config
	JSON     bool
	Insecure bool
}

// headerList is the repeatable --header flag. Unlike a list flag it does
// not split on commas, which header values contain; the environment
// variable holds one header per line.
type headerList struct{ h http.Header }

// String returns the headers one per line, as the environment variable
// holds them.
func (v *headerList) String() string {
	if v == nil || len(v.h) == 0 {
		return ""
	}
	var b strings.Builder
	_ = v.h.Write(&b)
	return strings.TrimSpace(b.String())
}

// Set adds each non-blank "Name: value" line of s to the headers.
func (v *headerList) Set(s string) error {
	for line := range strings.Lines(s) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		name, value, err := parseHeader(line)
		if err != nil {
			return err
		}
		v.h.Add(name, value)
	}
	return nil
}

// parseHeader parses "Name: value".
func parseHeader(s string) (name, value string, err error) {
	name, value, ok := strings.Cut(s, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || !validHeaderName(name) {
		return "", "", fmt.Errorf("%q: want 'Name: value'", s)
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return "", "", fmt.Errorf("header %s: value contains a line break or NUL", name)
	}
	return name, value, nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 section 5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func parseCheck(args []string, getenv func(string) string, help io.Writer) (checkConfig, error) {
	c := checkConfig{Config: check.Config{Header: http.Header{}}}
	var tokensFile string
	f := newFlagSet("check", "check [flags] WS_URL", checkAbout, getenv, help)
	f.fs.Var(&headerList{h: c.Header}, "header", "header `'Name: value'` for every handshake, e.g. 'Authorization: Bearer …'; repeatable (the environment: one a line)")
	f.String(&tokensFile, "tokens", "", "`file` of bearer tokens, one per line: connection i sends 'Authorization: Bearer <line i mod n>'")
	f.Strings(&c.Subprotocols, "subprotocol", nil, "`name` offered in Sec-WebSocket-Protocol, e.g. tether.v1")
	f.Int(&c.Conns, "conns", check.DefaultConns, "connections to open and hold")
	f.Duration(&c.Hold, "hold", check.DefaultHold, "how long to hold the connections before the probes")
	f.Duration(&c.PingInterval, "ping-interval", 0, "ping each connection this often during the hold; 0 = the shorter of 5s and hold/4")
	f.Duration(&c.Timeout, "timeout", check.DefaultTimeout, "bound of each handshake, write, pong wait and close handshake")
	f.Duration(&c.FINWait, "fin-wait", check.DefaultFINWait, "how long the server has to close its side after the client's FIN")
	f.Int(&c.Parallel, "parallel", check.DefaultParallel, "handshakes at once")
	f.Bool(&c.Insecure, "insecure", false, "wss: do not verify the server's certificate")
	f.Bool(&c.JSON, "json", false, "print the report as one JSON object")
	urls, err := f.parseInterspersed(args)
	if err != nil {
		return c, err
	}
	switch len(urls) {
	case 0:
		return c, errors.New("missing WS_URL, e.g. ws://127.0.0.1:8080/v1/connect")
	case 1:
		c.URL = urls[0]
	default:
		return c, fmt.Errorf("unexpected argument %q: one WS_URL only", urls[1])
	}
	if tokensFile != "" {
		if c.Tokens, err = readTokens(tokensFile); err != nil {
			return c, err
		}
	}
	if c.Conns <= 0 || c.Hold <= 0 || c.Timeout <= 0 || c.FINWait <= 0 || c.Parallel <= 0 {
		return c, errors.New("--conns, --hold, --timeout, --fin-wait and --parallel must be positive")
	}
	if c.Insecure {
		c.TLS = &tls.Config{InsecureSkipVerify: true}
	}
	return c, c.Validate()
}

// readTokens reads a --tokens file: one token a line; blank lines and lines
// starting with # are skipped.
func readTokens(path string) ([]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--tokens: %w", err)
	}
	defer fh.Close()
	var toks []string
	sc := bufio.NewScanner(io.LimitReader(fh, maxTokensFile))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		toks = append(toks, strings.TrimPrefix(line, "Bearer "))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--tokens %s: %w", path, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("--tokens %s: no token in the file", path)
	}
	return toks, nil
}

// checkMain runs `tether check`.
func checkMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parseCheck(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, "check", err)
	}
	rep, err := check.Run(ctx, c.Config)
	if err != nil {
		if ctx.Err() != nil {
			return failure(stderr, "check", errors.New("interrupted"))
		}
		return failure(stderr, "check", err)
	}
	err = writeReport(stdout, c.JSON, rep, rep.WriteText)
	if err != nil {
		return failure(stderr, "check", err)
	}
	if !rep.Pass {
		return exitFailure
	}
	return exitOK
}
