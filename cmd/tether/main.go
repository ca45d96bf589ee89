// Command tether is the tether push gateway and its operator tools: one
// binary, one command per file (SPEC section 4). Every flag also reads
// TETHER_<FLAG> from the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// signalContext returns a context that ends at the first SIGINT or
// SIGTERM. The signal handling is then restored to the default, so that a
// second signal ends the process at once instead of waiting for the drain.
// stop releases the signal handling.
func signalContext() (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad command line or configuration
)

// run runs the command named by args[0] and returns the process exit code.
// It is the whole program minus the process: tests call it in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serveMain(ctx, rest, stdout, stderr, getenv)
	case "token":
		return tokenMain(ctx, rest, stdout, stderr, getenv)
	case "publish":
		return publishMain(ctx, rest, stdin, stdout, stderr, getenv)
	case "version", "--version", "-version":
		return versionMain(rest, stdout, stderr, getenv)
	case "bench":
		return benchMain(ctx, rest, stdin, stdout, stderr, getenv)
	case "check":
		return checkMain(ctx, rest, stdout, stderr, getenv)
	case "doctor":
		return doctorMain(ctx, rest, stdin, stdout, stderr, getenv)
	case "help", "--help", "-help", "-h":
		if len(rest) > 0 && rest[0] != "help" && isCommand(rest[0]) {
			return run(ctx, []string{rest[0], "--help"}, stdin, stdout, stderr, getenv)
		}
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "tether: unknown command %q\n\n", cmd)
	usage(stderr)
	return exitUsage
}

// commands lists every command with its synopsis, in the order of SPEC
// section 4.
var commands = []struct{ name, synopsis, about string }{
	{"serve", "serve [flags]", "run a gateway node"},
	{"token", "token --device ID [--group G]... [--ttl 24h]", "print a device token signed with the node's token secret"},
	{"publish", "publish --target T --data JSON [--ttl D] [--id K]", "publish through a node's HTTP API"},
	{"doctor", "doctor goroutines FILE_OR_URL", "analyse a goroutine dump of any Go program (debug=1 and debug=2)"},
	{"doctor", "doctor sockets --port P", "count local TCP sockets on port P by state, with receive-queue bytes"},
	{"doctor", "doctor --admin URL", "one report on a running tether node: goroutines, sockets, store pool, verdict"},
	{"check", "check WS_URL", "does a WebSocket service hold long connections well?"},
	{"bench", "bench [flags]", "load generator and report"},
	{"version", "version", "version and build info"},
	{"help", "help [command]", "this text, or the flags of a command"},
}

func isCommand(name string) bool {
	for _, c := range commands {
		if c.name == name {
			return true
		}
	}
	return false
}

// usage prints the list of commands.
func usage(w io.Writer) {
	fmt.Fprint(w, "tether is a long-connection push gateway.\n\nUsage: tether <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-52s %s\n", c.synopsis, c.about)
	}
	fmt.Fprint(w, "\nEvery flag also reads TETHER_<FLAG> from the environment (--redis-url reads\n"+
		"TETHER_REDIS_URL); a flag on the command line wins over the environment.\n"+
		"Run 'tether <command> --help' for the flags of a command.\n")
}

// usageError reports a command-line or configuration error of cmd on
// stderr and returns the exit code: exitOK for flag.ErrHelp (the usage was
// printed already), exitUsage otherwise.
func usageError(stderr io.Writer, cmd string, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "tether %s: %v\nRun 'tether %s --help' for usage.\n", cmd, err, cmd)
	return exitUsage
}

// failure reports that cmd failed and returns exitFailure.
func failure(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "tether %s: %v\n", cmd, err)
	return exitFailure
}
