package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tetherpush/tether/doctor"
)

// defaultDoctorTimeout bounds the fetch of a goroutine dump from a URL.
const defaultDoctorTimeout = 30 * time.Second

const doctorUsage = `Usage:
  tether doctor goroutines FILE_OR_URL [--json] [--top N] [--timeout D]
  tether doctor sockets --port P [--json]
  tether doctor --admin URL [--json] [--timeout D]

goroutines  analyse a goroutine dump of any Go program: where its goroutines
            wait, grouped by stack, and whether they wait for each other (a
            pool deadlock). FILE_OR_URL is a file, - for stdin, or a URL such
            as http://127.0.0.1:8081/debug/pprof/goroutine?debug=2. Reads the
            debug=1 and debug=2 forms and what a panic or SIGQUIT prints.
--admin     one report on a running tether node, read from its admin
            listener (URL like http://127.0.0.1:8081): verdict, goroutines
            and where they wait, sockets of the listen port by state, store
            calls and errors. Exits 1 when the verdict is critical.
sockets     count the local TCP sockets whose local or remote port is P by
            state, with their receive- and send-queue bytes, like ss -tan.
            A pile of CLOSE_WAIT means the program on P does not close the
            connections its peers closed.

Run 'tether doctor goroutines --help' or 'tether doctor sockets --help' for
their flags.
`

// doctorMain runs `tether doctor`.
func doctorMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "tether doctor: which check? goroutines or sockets\n\n%s", doctorUsage)
		return exitUsage
	}
	switch sub := args[0]; {
	case sub == "goroutines":
		return doctorGoroutinesMain(ctx, args[1:], stdin, stdout, stderr, getenv)
	case sub == "sockets":
		return doctorSocketsMain(args[1:], stdout, stderr, getenv)
	case sub == "--admin" || sub == "-admin" || strings.HasPrefix(sub, "--admin=") || strings.HasPrefix(sub, "-admin="):
		return doctorAdminMain(ctx, args, stdout, stderr)
	case sub == "--help" || sub == "-help" || sub == "-h" || sub == "help":
		fmt.Fprint(stdout, doctorUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "tether doctor: unknown check %q\n\n%s", sub, doctorUsage)
		return exitUsage
	}
}

// doctorGoroutinesConfig holds the flags of `tether doctor goroutines`.
type doctorGoroutinesConfig struct {
	Source  string
	JSON    bool
	Top     int
	Timeout time.Duration
}

const doctorGoroutinesAbout = `Analyse a goroutine dump of any Go program. FILE_OR_URL is a file, - for
stdin, or an http(s) URL; a URL ending in /debug/pprof/goroutine gets
?debug=2 added. The report names pool deadlocks, stalled pools and lock
pile-ups, then ranks where goroutines wait and the largest groups of
identical stacks. --json prints the report as JSON (schema
` + doctor.ReportSchema + `, see docs/notes/doctor.md).`

func parseDoctorGoroutines(args []string, getenv func(string) string, help io.Writer) (doctorGoroutinesConfig, error) {
	var c doctorGoroutinesConfig
	f := newFlagSet("doctor goroutines", "doctor goroutines FILE_OR_URL [--json] [--top N] [--timeout D]", doctorGoroutinesAbout, getenv, help)
	f.Bool(&c.JSON, "json", false, "print the report as JSON")
	f.Int(&c.Top, "top", doctor.DefaultTextPlaces, "places to list in the text report (groups: half as many)")
	f.Duration(&c.Timeout, "timeout", defaultDoctorTimeout, "give up on a URL that has not sent the whole dump within this `duration`")
	pos, err := f.parseInterspersed(args)
	if err != nil {
		return c, err
	}
	switch {
	case len(pos) == 0:
		return c, errors.New("missing FILE_OR_URL: a dump file, - for stdin, or a URL")
	case len(pos) > 1:
		return c, fmt.Errorf("unexpected argument %q: give one FILE_OR_URL", pos[1])
	case c.Top <= 0:
		return c, fmt.Errorf("--top %d: must be positive", c.Top)
	case c.Timeout <= 0:
		return c, fmt.Errorf("--timeout %v: must be positive", c.Timeout)
	}
	c.Source = pos[0]
	return c, nil
}

func doctorGoroutinesMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	const cmd = "doctor goroutines"
	c, err := parseDoctorGoroutines(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, cmd, err)
	}
	if isURL(c.Source) {
		if _, err := dumpURL(c.Source); err != nil {
			return usageError(stderr, cmd, err)
		}
	}
	d, readErr := readDump(ctx, c, stdin)
	if d == nil {
		return failure(stderr, cmd, readErr)
	}
	r := doctor.Analyze(d)
	err = writeReport(stdout, c.JSON, r, func(w io.Writer) error {
		return r.WriteText(w, doctor.TextOptions{Places: c.Top, Groups: max(1, c.Top/2)})
	})
	if err != nil {
		return failure(stderr, cmd, err)
	}
	if readErr != nil {
		// The report covers what was read; say what was not.
		return failure(stderr, cmd, fmt.Errorf("%v; the report covers only what was read", readErr))
	}
	return exitOK
}

// readDump reads and parses the dump named by c.Source. A dump that could
// be read only in part comes back with an error.
func readDump(ctx context.Context, c doctorGoroutinesConfig, stdin io.Reader) (*doctor.Dump, error) {
	var r io.Reader
	switch {
	case c.Source == "-":
		r = stdin
	case isURL(c.Source):
		ctx, cancel := context.WithTimeout(ctx, c.Timeout)
		defer cancel()
		body, err := fetchDump(ctx, c)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		d, err := parseDump(body, c.Source)
		if ctx.Err() != nil && err != nil {
			err = fmt.Errorf("%s: the whole dump did not arrive within %v (--timeout)", c.Source, c.Timeout)
		}
		return d, err
	default:
		f, err := os.Open(c.Source)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return parseDump(r, c.Source)
}

// parseDump parses a dump and explains the usual mistakes.
func parseDump(r io.Reader, name string) (*doctor.Dump, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return nil, fmt.Errorf("%s: a binary (gzip) pprof profile, not a text dump: ask for ?debug=2 (or ?debug=1)", name)
	}
	d, err := doctor.ParseGoroutines(br)
	if errors.Is(err, doctor.ErrNoGoroutines) {
		return nil, fmt.Errorf("%s: %w (expected the output of /debug/pprof/goroutine?debug=1 or ?debug=2, runtime.Stack, or a panic or SIGQUIT)", name, err)
	}
	if err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// dumpURL checks a URL and adds ?debug=2 to a goroutine profile
// endpoint that asks for no form.
func dumpURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a URL: want http://host:port/path", raw)
	}
	if strings.HasSuffix(u.Path, "/debug/pprof/goroutine") && !u.Query().Has("debug") {
		q := u.Query()
		q.Set("debug", "2")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// fetchDump starts a GET of the dump and returns its body once the
// status is 200.
func fetchDump(ctx context.Context, c doctorGoroutinesConfig) (io.ReadCloser, error) {
	u, err := dumpURL(c.Source)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "tether/"+version)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		tr.CloseIdleConnections()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("GET %s: no answer within %v (--timeout)", u, c.Timeout)
		}
		return nil, fmt.Errorf("GET %s: %v", u, unwrapURLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("GET %s: the server answered %s: %s", u, resp.Status, clipText(strings.TrimSpace(string(msg)), 200))
	}
	return closer{resp.Body, tr.CloseIdleConnections}, nil
}

// closer closes a body, then runs done.
type closer struct {
	io.ReadCloser
	done func()
}

// Close closes the body, runs done and returns the body's close error.
func (c closer) Close() error {
	err := c.ReadCloser.Close()
	c.done()
	return err
}

const doctorSocketsAbout = `Count the local TCP sockets whose local or remote port is P, by TCP state,
with the bytes in their receive and send queues, like 'ss -tan'. Reads
/proc/net/tcp and /proc/net/tcp6 (Linux; the sockets of this network
namespace, every process's). LOCAL counts sockets whose own port is P (the
server side, when P is a listening port), REMOTE those whose peer's is.`

// doctorSocketsConfig holds the flags of `tether doctor sockets`.
type doctorSocketsConfig struct {
	Port int
	JSON bool
}

func parseDoctorSockets(args []string, getenv func(string) string, help io.Writer) (doctorSocketsConfig, error) {
	var c doctorSocketsConfig
	f := newFlagSet("doctor sockets", "doctor sockets --port P [--json]", doctorSocketsAbout, getenv, help)
	f.Int(&c.Port, "port", 0, "TCP `port` to count the sockets of")
	f.Bool(&c.JSON, "json", false, "print the counts as JSON")
	pos, err := f.parseInterspersed(args)
	if err != nil {
		return c, err
	}
	switch {
	case len(pos) > 0:
		return c, fmt.Errorf("unexpected argument %q (flags start with --)", pos[0])
	case c.Port == 0:
		return c, errors.New("--port is required")
	case c.Port < 1 || c.Port > 65535:
		return c, fmt.Errorf("--port %d: want 1-65535", c.Port)
	}
	return c, nil
}

func doctorSocketsMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	const cmd = "doctor sockets"
	c, err := parseDoctorSockets(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, cmd, err)
	}
	r, err := doctor.Sockets(c.Port)
	if err != nil {
		return failure(stderr, cmd, err)
	}
	err = writeReport(stdout, c.JSON, r, r.WriteText)
	if err != nil {
		return failure(stderr, cmd, err)
	}
	return exitOK
}
