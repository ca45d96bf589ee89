package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tetherpush/tether/bench"
	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
)

func TestBenchFlags(t *testing.T) {
	c, err := parseBench(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := benchConfig{URL: bench.DefaultURL, AdminURL: bench.DefaultAdminURL, DataDir: defaultDataDir,
		Conns: 1000, Groups: 10, Rate: 100, Size: 256, Duration: 30 * time.Second, Ramp: 2000, Grace: 10 * time.Second,
		Publishers: bench.DefaultPublishers}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	env := map[string]string{"TETHER_CONNS": "15000", "TETHER_IDLE": "true", "TETHER_RATE": "7",
		"TETHER_WORKERS": "2", "TETHER_URL": "http://127.0.0.1:18080", "TETHER_PUBLISH_URL": "http://127.0.0.1:19080", "TETHER_PLOT": "p.html", "TETHER_DURATION": "1m",
		"TETHER_DIRECT": "true", "TETHER_BATCH": "100", "TETHER_PUBLISHERS": "32"}
	c, err = parseBench([]string{"--rate", "9", "--json"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 15000 || !c.Idle || c.Rate != 9 || c.Workers != 2 || c.URL != "http://127.0.0.1:18080" ||
		c.PublishURL != "http://127.0.0.1:19080" || c.Plot != "p.html" || c.Duration != time.Minute || !c.JSON ||
		!c.Direct || c.Batch != 100 || c.Publishers != 32 {
		t.Errorf("with environment: %+v (the command line wins over it)", c)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	secrets := []string{"--token-secret", "s", "--api-key", "k"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--conns", "many"}, "not a whole number"},
		{[]string{"extra"}, "unexpected argument"},
		{append([]string{"--url", "http://192.0.2.1:8080"}, secrets...), "loopback"},
		{append([]string{"--publish-url", "http://192.0.2.1:8080"}, secrets...), "--publish-url"},
		{append([]string{"--conns", "40000", "--workers", "2"}, secrets...), "at least 3 workers"},
		{append([]string{"--size", "1"}, secrets...), "--size"},
	} {
		r := runTether(t, nil, "", append([]string{"bench"}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("bench %v: code %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, exitUsage, tc.want)
		}
	}
	r := runTether(t, nil, "", "bench", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "Usage: tether bench") || !strings.Contains(r.stdout, "$TETHER_CONNS") {
		t.Errorf("bench --help: code %d, stdout %q", r.code, r.stdout)
	}
}

func TestBenchSecrets(t *testing.T) {
	dir := t.TempDir()
	r := runTether(t, nil, "", "bench", "--data-dir", dir)
	if r.code != exitFailure || !strings.Contains(r.stderr, "no token secret") {
		t.Errorf("no secret: code %d, stderr %q", r.code, r.stderr)
	}
	// With --idle the API key is not needed: the run gets as far as the
	// node, which is not there.
	os.WriteFile(filepath.Join(dir, "token-secret"), []byte("s\n"), 0o600)
	r = runTether(t, nil, "", "bench", "--data-dir", dir, "--idle", "--url", "http://127.0.0.1:1")
	if r.code != exitFailure || !strings.Contains(r.stderr, "does not answer") {
		t.Errorf("idle without a node: code %d, stderr %q", r.code, r.stderr)
	}
	r = runTether(t, nil, "", "bench", "--data-dir", dir)
	if r.code != exitFailure || !strings.Contains(r.stderr, "no API key") {
		t.Errorf("no API key: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestBenchWorkerBadJob(t *testing.T) {
	r := runTether(t, nil, "not json", "bench", "worker")
	if r.code != exitFailure || !strings.Contains(r.stderr, "read job") {
		t.Errorf("code %d, stderr %q", r.code, r.stderr)
	}
}

// TestBenchEndToEnd runs the command as a person does, worker processes
// included: they are this test binary re-executed (childEnv) into
// `tether bench worker`. The node runs in-process on the goroutine I/O
// layer.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := hub.New(st, hub.Config{Node: "n1", Metrics: hub.NewMetrics(reg), Workers: 4})
	if err := h.Open(); err != nil {
		t.Fatal(err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		TokenSecret: []byte(childSecret), APIKey: childKey, Gatherer: reg, IO: "goroutine"})
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); srv.Close(); st.Close() })

	t.Setenv(childEnv, "1") // the workers this test starts run the command line
	plot := filepath.Join(t.TempDir(), "plot.html")
	env := map[string]string{"TETHER_TOKEN_SECRET": childSecret, "TETHER_API_KEY": childKey}
	r := runTether(t, env, "", "bench", "--url", "http://"+srv.Addr(), "--admin-url", "http://"+srv.AdminAddr(),
		"--conns", "20", "--groups", "2", "--workers", "2", "--rate", "20", "--duration", "1s", "--json", "--plot", plot)
	if r.code != exitOK {
		t.Fatalf("code %d, stderr:\n%s\nstdout:\n%s", r.code, r.stderr, r.stdout)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not one JSON report: %v\n%s", err, r.stdout)
	}
	if rep.Settings.Workers != 2 || rep.Connect.Connected != 20 || rep.Messages == nil ||
		rep.Messages.Published != 20 || rep.Messages.Delivered != 200 || rep.Messages.Lost != 0 {
		t.Errorf("report %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "publishing") {
		t.Errorf("no progress on stderr: %q", r.stderr)
	}
	if b, err := os.ReadFile(plot); err != nil || !strings.Contains(string(b), "<svg") {
		t.Errorf("plot: %v, %.100q", err, b)
	}
}
