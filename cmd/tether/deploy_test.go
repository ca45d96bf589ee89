package main

// The operator's files in deploy/ checked against the real thing: promtool
// on the alerting rules and their unit tests, the CLOSE_WAIT alert on the
// series a real socket leak produced, every metric a rule or a dashboard
// panel names exported by a live node, and the systemd unit.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/internal/redistest"
)

const (
	deployDir = "../../deploy"
	rulesFile = deployDir + "/prometheus/tether-rules.yml"
	dashFile  = deployDir + "/grafana/tether.json"
	unitFile  = deployDir + "/systemd/tether.service"
)

// lookTool finds an operator tool on PATH or skips the test saying how to
// install it; with CI set in the environment the test fails instead.
func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	msg := fmt.Sprintf("%s not found on PATH; install it (Debian/Ubuntu: apt-get install %s)", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// promtool runs promtool with args in dir and fails the test on any error.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(lookTool(t, "promtool", "prometheus"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeployRules checks the rules and runs their unit tests: every alert
// fires on the synthetic series of its incident and stays quiet on a
// healthy node, with its annotations rendered.
func TestDeployRules(t *testing.T) {
	dir := deployDir + "/prometheus"
	promtool(t, dir, "check", "rules", "tether-rules.yml")
	out := promtool(t, dir, "test", "rules", "tether-rules.test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	// Every alert has a unit test.
	rules, _ := os.ReadFile(rulesFile)
	tests, _ := os.ReadFile(dir + "/tether-rules.test.yml")
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\w+)`).FindAllSubmatch(rules, -1) {
		if !bytes.Contains(tests, []byte("alertname: "+string(m[1]))) {
			t.Errorf("alert %s has no test in tether-rules.test.yml", m[1])
		}
	}
}

// TestDeployCloseWaitAlert makes sockets pile up in CLOSE_WAIT the way the
// seed's service did (a server that never closes what its peers closed),
// reads them with the collector a node exports tether_tcp_sockets with, and
// feeds those series to the alert under promtool: it fires. The same load
// on a server that closes leaves the alert quiet.
func TestDeployCloseWaitAlert(t *testing.T) {
	lookTool(t, "promtool", "prometheus")
	for _, leak := range []bool{true, false} {
		t.Run(fmt.Sprintf("leak=%v", leak), func(t *testing.T) {
			series := closeWaitSeries(t, leak, 5, 20)
			var in strings.Builder
			for _, s := range series {
				fmt.Fprintf(&in, "      - series: '%s'\n        values: '%vx8'\n", s.name, s.value)
			}
			want := "        exp_samples: []\n"
			if leak {
				want = "        exp_samples:\n          - labels: 'ALERTS{alertname=\"TetherCloseWaitSockets\",alertstate=\"firing\"," +
					"job=\"tether\",instance=\"fixture\",state=\"CLOSE_WAIT\",severity=\"critical\"}'\n            value: 1\n"
			}
			rules, err := filepath.Abs(rulesFile)
			if err != nil {
				t.Fatal(err)
			}
			test := "rule_files: ['" + rules + "']\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n" + in.String() +
				"    promql_expr_test:\n      - expr: ALERTS{alertname=\"TetherCloseWaitSockets\"}\n        eval_time: 90s\n" + want
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "closewait.test.yml"), []byte(test), 0o600); err != nil {
				t.Fatal(err)
			}
			promtool(t, dir, "test", "rules", "closewait.test.yml")
		})
	}
}

type sample struct {
	name  string
	value float64
}

// closeWaitSeries serves a loopback port whose server closes what its
// peers closed only when leak is false, holds open of its connections
// and opens and closes gone more, and returns the tether_tcp_sockets series
// the node's collector reads for that port once they have settled, with
// job and instance labels as a scrape adds them.
func closeWaitSeries(t *testing.T, leak bool, open, gone int) []sample {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() { // accepts; reads each connection to its end, closing it then unless leaking
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b [64]byte
				for {
					if _, err := c.Read(b[:]); err != nil {
						break
					}
				}
				if !leak {
					c.Close()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close() // ends the readers still waiting (leak=true closes nothing before)
		}
		mu.Unlock()
		wg.Wait()
	})
	port := ln.Addr().(*net.TCPAddr).Port
	for i := 0; i < open+gone; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if i < open {
			t.Cleanup(func() { c.Close() })
		} else {
			c.Close()
		}
	}
	wantCW := 0
	if leak {
		wantCW = gone
	}
	var got []sample
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = socketSeries(t, port)
		if value(got, "CLOSE_WAIT") == float64(wantCW) && value(got, "ESTABLISHED") == float64(open) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets did not settle: %v (want %d CLOSE_WAIT, %d ESTABLISHED)", got, wantCW, open)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// socketSeries reads port's sockets with a fresh collector (it caches for
// seconds) as the node's /metrics would export them.
func socketSeries(t *testing.T, port int) []sample {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tetherhttp.NewSocketCollector(func() int { return port }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := []string{`job="tether"`, `instance="fixture"`}
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			out = append(out, sample{mf.GetName() + "{" + strings.Join(labels, ",") + "}", m.GetGauge().GetValue()})
		}
	}
	return out
}

func value(ss []sample, state string) float64 {
	for _, s := range ss {
		if strings.Contains(s.name, `state="`+state+`"`) {
			return s.value
		}
	}
	return 0
}

// deployMetricNames returns the metric names the rules and the dashboard
// read, and the recording rules' names, from deploy/.
func deployMetricNames(t *testing.T) (used map[string][]string, recorded map[string]bool) {
	t.Helper()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, err := os.ReadFile(dashFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashFile, err)
	}
	used, recorded = map[string][]string{}, map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+- record: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		recorded[m[1]] = true
	}
	name := regexp.MustCompile(`\b(?:tether[_:]|go_|process_)[a-zA-Z0-9_:]+`)
	add := func(where, expr string) {
		for _, n := range name.FindAllString(expr, -1) {
			used[n] = append(used[n], where)
		}
	}
	add("rules", string(rules)) // names in annotations must exist too
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			add("dashboard panel "+p.Title, tg.Expr)
		}
	}
	if len(used) < 10 {
		t.Fatalf("found only %d metric names in deploy/: %v", len(used), used)
	}
	return used, recorded
}

// TestDeployMetricsExported starts a node process on Redis and puts it
// through what makes each series appear (a delivery acked, a takeover,
// Redis frozen for a moment), then checks that its /metrics exports every
// metric a rule or a dashboard panel names: renaming a metric breaks this
// test, not the operator's pager.
func TestDeployMetricsExported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and a node process")
	}
	used, recorded := deployMetricNames(t)
	rs := redistest.Start(t)
	admin := freeAddr(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer hook.Close()
	c := startChild(t, t.TempDir(), "--store", "redis", "--redis-url", rs.URL(), "--admin-listen", admin,
		"--webhook-url", hook.URL+"/hook", "--webhook-secret", "deploy-test")
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome
	id := c.publish(t, "device:pos-1", map[string]int{"n": 1})
	if typ, got, _, _ := d.next(5 * time.Second); typ != "message" || got != id {
		t.Fatalf("got %s %s, want message %s", typ, got, id)
	}
	d.ack(id)
	waitFor(t, 5*time.Second, "the ack stored", func() bool { return c.state(t, id) == "acked" })
	dialDevice(t, c.addr, "pos-1") // takes the device over: the first session ends with 4409
	if _, _, _, code := d.next(5 * time.Second); code != 4409 {
		t.Fatalf("first session closed with %d, want 4409", code)
	}
	rs.Pause() // store errors, tether_store_up 0
	waitFor(t, 10*time.Second, "/readyz 503 with Redis frozen", func() bool { return status(t, "http://"+c.addr+"/readyz") == 503 })
	rs.Resume()
	waitFor(t, 10*time.Second, "/readyz 200 again", func() bool { return status(t, "http://"+c.addr+"/readyz") == 200 })

	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	exported := func(n string) bool {
		if _, ok := fams[n]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := fams[strings.TrimSuffix(n, suffix)]; ok && strings.HasSuffix(n, suffix) && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}
	for n, where := range used {
		switch {
		case strings.Contains(n, ":"):
			if !recorded[n] {
				t.Errorf("%s (used by %s) is no recording rule of %s", n, strings.Join(where, ", "), rulesFile)
			}
		case !exported(n):
			t.Errorf("%s (used by %s) is not exported by a live node", n, strings.Join(where, ", "))
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func status(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDeploySystemdUnit checks the unit's promises (a dedicated user, the
// hardening, the data dir the only writable path, the file limit for the
// connection target, a stop timeout above --shutdown-timeout) and, where
// systemd-analyze exists, that systemd reads it without a warning.
func TestDeploySystemdUnit(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			unit[k] = v
		}
	}
	for k, want := range map[string]string{"User": "tether", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "KillSignal": "SIGTERM"} {
		if got, ok := unit[k]; !ok || got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	fields := strings.Fields(unit["ExecStart"])
	if len(fields) < 4 || fields[1] != "serve" || fields[2] != "--data-dir" || unit["ReadWritePaths"] != fields[3] {
		t.Errorf("ExecStart=%q, ReadWritePaths=%q: the data dir must be the writable path", unit["ExecStart"], unit["ReadWritePaths"])
	}
	if n, err := strconv.Atoi(unit["LimitNOFILE"]); err != nil || n < 1_000_000 {
		t.Errorf("LimitNOFILE=%q, want at least 1,000,000 (docs/operations.md sizing)", unit["LimitNOFILE"])
	}
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if def := MustParseServe(t, nil).ShutdownTimeout; err != nil || stop <= def {
		t.Errorf("TimeoutStopSec=%q, want more than --shutdown-timeout's default %v", unit["TimeoutStopSec"], def)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: the unit's syntax is not verified")
	}
	exe, err := os.Executable() // verify needs ExecStart to exist
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tether.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(b, []byte(fields[0]), []byte(exe)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("tether.service")) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
