//go:build linux

package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The dumps in testdata are written by the program in testdata/dumper,
// run against a real redis-server. To write them again:
//
//	go test ./doctor -run TestUpdateFixtures -update -timeout 5m
//
// It takes about 70 s: each scenario holds its state for -update-hold
// (65 s) before dumping, so that the dumps show wait minutes.
var (
	update     = flag.Bool("update", false, "rewrite the dumps in testdata from the programs in testdata/dumper")
	updateHold = flag.Duration("update-hold", 65*time.Second, "with -update: how long each scenario waits before dumping")
)

// Shape of the fixture scenarios, which the tests of the fixtures assert.
const (
	fixtureWorkers   = 40
	fixtureMaxActive = 8
)

// mustBuildDumper builds testdata/dumper, its own module, with -trimpath
// so that its dumps name files by import path, and returns the binary.
func mustBuildDumper(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "dumper")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = filepath.Join("testdata", "dumper")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build testdata/dumper: %v\n%s", err, out)
	}
	return bin
}

// mustStartRedis starts a redis-server on a free loopback port, stopped
// when the test ends, and returns its address. Without redis-server the
// test is skipped, or fails when $CI is set.
func mustStartRedis(tb testing.TB) string {
	tb.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		const msg = "redis-server not found: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
		if os.Getenv("CI") != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	for attempt := 0; ; attempt++ {
		addr, err := tryRedis(tb, server)
		if err == nil {
			return addr
		}
		if attempt == 2 {
			tb.Fatalf("start redis-server: %v", err)
		}
	}
}

// tryRedis starts redis-server on a port that was free a moment ago and
// waits until it answers PING.
func tryRedis(tb testing.TB, server string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	var out bytes.Buffer
	cmd := exec.Command(server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", tb.TempDir(), "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return "", fmt.Errorf("redis-server exited: %v\n%s", err, out.String())
		default:
		}
		if redisPing(addr) == nil {
			tb.Cleanup(stop)
			return addr, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", errors.New("redis-server did not answer PING within 10 s")
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// dumper is a running testdata/dumper.
type dumper struct {
	cmd    *exec.Cmd
	dir    string // where it wrote debug1.txt and debug2.txt
	addr   string // its net/http/pprof listener
	stderr syncBuffer
	exited chan error
}

// syncBuffer is a bytes.Buffer that a process may write while a test
// reads it.
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

// mustStartDumper runs the dumper with args (plus -dir and -linger) and
// waits until it has settled and dumped. It is killed when the test ends.
func mustStartDumper(tb testing.TB, bin string, env []string, args ...string) *dumper {
	tb.Helper()
	d := &dumper{dir: tb.TempDir(), exited: make(chan error, 1)}
	args = append([]string{"-dir", d.dir, "-linger", "2m"}, args...)
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = &d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- addr
			}
		}
		d.exited <- d.cmd.Wait()
	}()
	tb.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
	})
	timeout := 30*time.Second + *updateHold*time.Duration(boolInt(*update))
	select {
	case d.addr = <-ready:
		return d
	case err := <-d.exited:
		d.exited <- err
		tb.Fatalf("dumper %v exited before it was ready: %v\n%s", args, err, d.stderr.String())
	case <-time.After(timeout):
		tb.Fatalf("dumper %v not ready within %v\n%s", args, timeout, d.stderr.String())
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// signal sends sig and returns what the dumper printed on stderr until it
// exited: the crash form of the dump for SIGQUIT.
func (d *dumper) signal(tb testing.TB, sig os.Signal) string {
	tb.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		tb.Fatal(err)
	}
	select {
	case err := <-d.exited:
		d.exited <- err
	case <-time.After(10 * time.Second):
		tb.Fatalf("dumper did not exit within 10 s of %v", sig)
	}
	return d.stderr.String()
}

// waitExit waits for a dumper that ends by itself (-panic) and returns its
// stderr.
func (d *dumper) waitExit(tb testing.TB) string {
	tb.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err
	case <-time.After(10 * time.Second):
		tb.Fatal("dumper did not exit within 10 s")
	}
	return d.stderr.String()
}

func (d *dumper) file(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestUpdateFixtures rewrites the dumps in testdata and the fuzz seeds
// cut from them. It runs only with -update.
func TestUpdateFixtures(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata from testdata/dumper")
	}
	bin := mustBuildDumper(t)
	redis := mustStartRedis(t)
	hold := "-hold=" + updateHold.String()
	shape := []string{"-workers", strconv.Itoa(fixtureWorkers), "-max-active", strconv.Itoa(fixtureMaxActive)}
	t.Run("redigo-deadlock", func(t *testing.T) {
		t.Parallel()
		d := mustStartDumper(t, bin, nil, append([]string{"-scenario", "deadlock", "-redis", redis, hold}, shape...)...)
		writeFixtures(t, "redigo-deadlock", d, d.signal(t, syscall.SIGQUIT), "sigquit")
	})
	t.Run("redigo-busy", func(t *testing.T) {
		t.Parallel()
		d := mustStartDumper(t, bin, nil, append([]string{"-scenario", "busy", "-redis", redis, hold}, shape...)...)
		writeFixtures(t, "redigo-busy", d, "", "")
	})
	t.Run("mutex", func(t *testing.T) {
		t.Parallel()
		d := mustStartDumper(t, bin, nil, "-scenario", "mutex", "-workers", strconv.Itoa(fixtureWorkers), hold)
		writeFixtures(t, "mutex", d, "", "")
	})
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		env := []string{"GOTRACEBACK=all", "GODEBUG=tracebacklabels=1"}
		d := mustStartDumper(t, bin, env, "-scenario", "waits", "-panic", hold)
		writeFixtures(t, "waits", d, d.waitExit(t), "panic")
	})
}

// writeFixtures copies a dumper's debug=1 and debug=2 dumps, and its
// crash dump when there is one, into testdata, and cuts fuzz seeds from
// them.
func writeFixtures(t *testing.T, name string, d *dumper, crash, crashForm string) {
	files := map[string][]byte{
		name + ".debug1.txt": d.file(t, "debug1.txt"),
		name + ".debug2.txt": d.file(t, "debug2.txt"),
	}
	if crash != "" {
		files[name+"."+crashForm+".txt"] = []byte(crash)
	}
	for file, b := range files {
		if err := os.WriteFile(filepath.Join("testdata", file), b, 0o644); err != nil {
			t.Fatal(err)
		}
		writeFuzzSeed(t, "FuzzParseGoroutines", strings.TrimSuffix(file, ".txt"), b[:min(len(b), 3000)])
	}
}

// writeFuzzSeed writes one seed of a fuzz target's corpus.
func writeFuzzSeed(t *testing.T, target, name string, b []byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seed := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
}
