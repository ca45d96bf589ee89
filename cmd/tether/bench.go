package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/tetherpush/tether/bench"
	"github.com/tetherpush/tether/internal/secret"
)

// benchWorkerArg runs `tether bench` as one of the worker processes the
// bench starts itself; not for people.
const benchWorkerArg = "worker"

const benchAbout = `Load a running node and report (SPEC section 9): --conns devices connect over
many loopback source addresses, spread over --groups groups bench-g0, bench-g1, …;
--rate messages per second of --size bytes are published to the groups round
robin for --duration (with --direct to the devices themselves, round robin);
--batch fixes the messages per publish request and --publishers the requests
under way; every device acks what it gets. Publishes the node refuses with 503
(overloaded, unavailable) are counted apart and not retried. The report gives connect
rate and errors, published / delivered / acked / duplicate / lost messages,
delivery latency percentiles (published_at to receipt) and the node's memory
and goroutines per connection, read from its admin /metrics before and after
connecting. --idle holds the connections and publishes nothing. Devices are
spread over worker processes of at most 15,000 connections each (this program,
re-executed). --publish-url publishes through another node of the fleet while
the devices connect to --url, so that every message crosses nodes. Loopback
targets only. Exit status 1 when a message was lost.
The token secret and API key are found as for 'tether token' and 'tether publish'.`

// benchConfig holds the flags of `tether bench`.
type benchConfig struct {
	URL         string
	AdminURL    string
	PublishURL  string
	APIKey      string
	TokenSecret string
	DataDir     string
	Conns       int
	Groups      int
	Rate        int
	Direct      bool
	Batch       int
	Publishers  int
	Size        int
	Duration    time.Duration
	Ramp        int
	Grace       time.Duration
	Idle        bool
	Workers     int
	JSON        bool
	Plot        string
}

func parseBench(args []string, getenv func(string) string, help io.Writer) (benchConfig, error) {
	var c benchConfig
	f := newFlagSet("bench", "bench [--conns N] [--groups N | --direct] [--rate N] [--batch N] [--publishers N] [--size B] [--duration D] [--idle] [--json] [--plot FILE]", benchAbout, getenv, help)
	f.String(&c.URL, "url", bench.DefaultURL, "base `URL` of the node's HTTP API")
	f.String(&c.PublishURL, "publish-url", "", "base `URL` of the HTTP API to publish through, e.g. another node of the fleet (default: --url)")
	f.String(&c.AdminURL, "admin-url", bench.DefaultAdminURL, "base `URL` of the node's admin listener (/metrics)")
	f.String(&c.APIKey, "api-key", "", "API `key` of the node (not needed with --idle)")
	f.String(&c.TokenSecret, "token-secret", "", "token `secret` of the node, to sign device tokens")
	f.String(&c.DataDir, "data-dir", defaultDataDir, "data `directory` of the node, to read its token-secret and api-key files")
	f.Int(&c.Conns, "conns", bench.DefaultConns, "devices connected at once")
	f.Int(&c.Groups, "groups", bench.DefaultGroups, "groups the devices are spread over")
	f.Int(&c.Rate, "rate", bench.DefaultRate, "messages published per second, to the groups round robin")
	f.Bool(&c.Direct, "direct", false, "publish to the devices (device:bench-dN, round robin over all of them) instead of the groups; tokens then name no group and --groups is unused")
	f.Int(&c.Batch, "batch", 0, "messages per publish request; 0: whatever fell due, up to 1000")
	f.Int(&c.Publishers, "publishers", bench.DefaultPublishers, "publish requests under way at once")
	f.Int(&c.Size, "size", bench.DefaultSize, "bytes of data of each message")
	f.Duration(&c.Duration, "duration", bench.DefaultDuration, "how long to publish (or, with --idle, to hold the connections)")
	f.Int(&c.Ramp, "ramp", bench.DefaultRamp, "connects per second")
	f.Duration(&c.Grace, "grace", bench.DefaultGrace, "after publishing, how long to wait for what has not arrived before counting it lost")
	f.Bool(&c.Idle, "idle", false, "connect, hold for --duration and publish nothing: the idle-memory mode")
	f.Int(&c.Workers, "workers", 0, "worker processes holding the connections; 0: one per 15,000 connections")
	f.Bool(&c.JSON, "json", false, "print the report as one JSON object")
	f.String(&c.Plot, "plot", "", "write latency and throughput over time to `FILE`, an HTML page")
	if err := f.parse(args); err != nil {
		return c, err
	}
	return c, f.noArgs()
}

// benchMain runs `tether bench`, or one of its workers.
func benchMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 1 && args[0] == benchWorkerArg {
		if err := bench.Work(ctx, stdin, stdout); err != nil {
			return failure(stderr, "bench", err)
		}
		return exitOK
	}
	c, err := parseBench(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, "bench", err)
	}
	cfg, err := c.benchConfig(getenv)
	if err != nil {
		return failure(stderr, "bench", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return failure(stderr, "bench", fmt.Errorf("find this program to start workers: %w", err))
	}
	cfg.Launch = bench.ExecLauncher(exe, "bench", benchWorkerArg)
	if err := cfg.Validate(); err != nil {
		return usageError(stderr, "bench", err)
	}
	cfg.Progress = progressFor(stderr)
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return failure(stderr, "bench", err)
	}
	if c.Plot != "" {
		if err := writePlot(c.Plot, rep); err != nil {
			return failure(stderr, "bench", err)
		}
	}
	err = writeReport(stdout, c.JSON, rep, rep.WriteText)
	if err != nil {
		return failure(stderr, "bench", err)
	}
	if rep.Failed() {
		return exitFailure
	}
	return exitOK
}

// benchConfig turns the flags into a bench.Config, finding the secrets.
func (c benchConfig) benchConfig(getenv func(string) string) (bench.Config, error) {
	tokenSecret, err := secret.Resolve(secret.TokenSecretFile, c.TokenSecret, getenv(secret.EnvTokenSecret), c.DataDir)
	if err != nil {
		return bench.Config{}, err
	}
	var apiKey string
	if !c.Idle {
		if apiKey, err = secret.Resolve(secret.APIKeyFile, c.APIKey, getenv(secret.EnvAPIKey), c.DataDir); err != nil {
			return bench.Config{}, err
		}
	}
	return bench.Config{
		URL: c.URL, AdminURL: c.AdminURL, PublishURL: c.PublishURL, APIKey: apiKey, TokenSecret: []byte(tokenSecret),
		Conns: c.Conns, Groups: c.Groups, Rate: c.Rate, Size: c.Size, Duration: c.Duration,
		Direct: c.Direct, Batch: c.Batch, Publishers: c.Publishers,
		Ramp: c.Ramp, Grace: c.Grace, Idle: c.Idle, Workers: c.Workers,
	}, nil
}

// progressFor draws a bar when w is a terminal and writes a line every few
// seconds otherwise.
func progressFor(w io.Writer) bench.Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return bench.NewBar(w)
	}
	return bench.NewLines(w, 5*time.Second)
}

func writePlot(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := rep.WritePlot(f); err != nil {
		f.Close()
		return fmt.Errorf("--plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--plot %s: %w", path, err)
	}
	return nil
}
