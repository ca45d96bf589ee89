package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

type config struct {
	designs         []string
	conns, runs     int
	perClient       int
	settle, timeout time.Duration
}

// sample is one reading of a server: its own report plus VmRSS from /proc.
type sample struct {
	sessions         int
	goroutines       int
	heap, stack, rss int64 // bytes: HeapInuse, StackInuse, VmRSS
}

// result is the growth between two samples, per connection.
type result struct {
	rss, heap, stack float64 // bytes per connection
	goroutines       float64 // per connection
}

func orchestrate(c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()

	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Printf("wsmem: %d conns x %d runs; %d CPUs, fd limit %d/process, %s, session struct %d B\n",
		c.conns, c.runs, runtime.NumCPU(), lim.Cur, runtime.Version(), unsafe.Sizeof(session{}))

	results := map[string][]result{}
	failures := map[string][]string{}
	seq := 0
	for _, d := range c.designs {
		for r := 1; r <= c.runs; r++ {
			seq++
			res, err := measure(ctx, self, d, seq, c)
			if err != nil {
				fmt.Fprintf(os.Stderr, "  %-8s run %d: FAILED: %v\n", d, r, err)
				failures[d] = append(failures[d], err.Error())
				continue
			}
			fmt.Fprintf(os.Stderr, "  %-8s run %d: rss %.2f KiB/conn, heap %.2f, stack %.2f, goroutines %.2f/conn\n",
				d, r, res.rss/1024, res.heap/1024, res.stack/1024, res.goroutines)
			results[d] = append(results[d], res)
		}
	}
	printTable(c, results, failures)
	if ctx.Err() != nil {
		return fmt.Errorf("stopped by -timeout %v", c.timeout)
	}
	return nil
}

// measure runs one design once: server up, baseline, clients connect, loaded
// sample, everything stopped (clients first, then the server).
func measure(ctx context.Context, self, design string, seq int, c config) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	srv, err := start(ctx, self, "-role=server", "-design="+design, "-settle="+c.settle.String())
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	addr, err := srv.expect("ready")
	if err != nil {
		return result{}, err
	}
	before, err := srv.sample()
	if err != nil {
		return result{}, err
	}

	var clients []*child
	defer func() {
		for _, cl := range clients {
			cl.stop()
		}
	}()
	for first := 0; first < c.conns; first += c.perClient {
		n := min(c.perClient, c.conns-first)
		cl, err := start(ctx, self, "-role=client", "-addr="+addr,
			"-first="+strconv.Itoa(first), "-n="+strconv.Itoa(n),
			"-net="+strconv.Itoa(seq%250+1), "-timeout=5m")
		if err != nil {
			return result{}, err
		}
		clients = append(clients, cl)
	}
	for _, cl := range clients {
		if _, err := cl.expect("connected"); err != nil {
			return result{}, fmt.Errorf("client: %w", err)
		}
	}

	after, err := srv.sample()
	if err != nil {
		return result{}, err
	}
	n := after.sessions - before.sessions
	if n != c.conns {
		return result{}, fmt.Errorf("server holds %d sessions, want %d", n, c.conns)
	}
	per := func(a, b int64) float64 { return float64(a-b) / float64(n) }
	return result{
		rss:        per(after.rss, before.rss),
		heap:       per(after.heap, before.heap),
		stack:      per(after.stack, before.stack),
		goroutines: per(int64(after.goroutines), int64(before.goroutines)),
	}, nil
}

func printTable(c config, results map[string][]result, failures map[string][]string) {
	fmt.Printf("\nmedian of %d runs, %d idle connections, KiB per connection (growth / conns)\n\n", c.runs, c.conns)
	fmt.Println("| design  | RSS KiB/conn | heap KiB/conn | stack KiB/conn | goroutines/conn | <= 2 KiB RSS | RSS of each run |")
	fmt.Println("|---------|-------------:|--------------:|---------------:|----------------:|:------------:|-----------------|")
	for _, d := range c.designs {
		rs := results[d]
		if len(rs) == 0 {
			fmt.Printf("| %-7s | failed: %s |\n", d, strings.Join(failures[d], "; "))
			continue
		}
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		rss := med(func(r result) float64 { return r.rss / 1024 })
		var each []string
		for _, r := range rs {
			each = append(each, fmt.Sprintf("%.2f", r.rss/1024))
		}
		ok := "no"
		if rss <= 2 {
			ok = "yes"
		}
		fmt.Printf("| %-7s | %12.2f | %13.2f | %14.2f | %15.2f | %-12s | %s |\n", d, rss,
			med(func(r result) float64 { return r.heap / 1024 }),
			med(func(r result) float64 { return r.stack / 1024 }),
			med(func(r result) float64 { return r.goroutines }),
			ok, strings.Join(each, " "))
	}
}

// child is a server or client process speaking line-oriented stdin/stdout.
type child struct {
	ctx   context.Context
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func start(ctx context.Context, self string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if we die
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{ctx: ctx, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() { // ends when the child's stdout closes or ctx is done
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return c, nil
}

// expect returns the rest of the first line starting with word; other lines
// (library logs) are passed to stderr.
func (c *child) expect(word string) (string, error) {
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s exited before %q", c.cmd.Args[1], word)
			}
			if rest, found := strings.CutPrefix(line, word); found {
				return strings.TrimSpace(rest), nil
			}
			fmt.Fprintln(os.Stderr, line)
		case <-c.ctx.Done():
			return "", fmt.Errorf("waiting for %q: %w", word, c.ctx.Err())
		}
	}
}

// sample asks the server for GC + FreeOSMemory + settle + its own numbers,
// then reads its VmRSS.
func (c *child) sample() (sample, error) {
	var s sample
	if _, err := io.WriteString(c.stdin, "stats\n"); err != nil {
		return s, err
	}
	line, err := c.expect("stats")
	if err != nil {
		return s, err
	}
	if _, err := fmt.Sscanf(line, "sessions=%d goroutines=%d heap=%d stack=%d",
		&s.sessions, &s.goroutines, &s.heap, &s.stack); err != nil {
		return s, fmt.Errorf("parse %q: %w", line, err)
	}
	s.rss, err = vmRSS(c.cmd.Process.Pid)
	return s, err
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// stop closes the child's stdin (its signal to exit) and waits; a child that
// does not exit within 10 s is killed.
func (c *child) stop() {
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}
