package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// outageClients are the configurations whose behaviour during an outage
// is checked: each library as tether would configure it, and with its
// defaults. go-redis's defaults are the incident's trap: a socket read
// waits ReadTimeout, whatever the ctx says. rueidis's defaults send a lone
// command synchronously, and its timeout closes the connection, which the
// next callers must redial.
var outageClients = []clientSpec{
	clients[0],
	{"go-redis v9, default timeouts", func(addr, name string) (client, error) {
		return newGoRedis(&goredis.Options{Addr: addr, ClientName: name, PoolSize: poolSize, MaxActiveConns: poolSize, PipelinePoolSize: -1}), nil
	}},
	clients[1],
	{"rueidis, defaults", func(addr, name string) (client, error) {
		return newRueidis(rueidis.ClientOption{InitAddress: []string{addr}, ClientName: name, DisableCache: true})
	}},
}

const (
	outageWaves    = 4
	outageCallers  = 256
	outageDeadline = 100 * time.Millisecond
)

// outcome is what one caller saw during an outage.
type outcome struct {
	elapsed time.Duration
	err     error
}

// paused stops the server (SIGSTOP) while outageWaves waves of
// outageCallers callers, with poolSize connections for go-redis, each run
// the script with a deadline of outageDeadline; it reports, worst of the
// runs (tails matter here), how late the last caller returned, what they
// got, how many goroutines the client kept afterwards and how long it took
// to work again once the server resumed.
func paused(srv *server, runs int, verbose bool) {
	fmt.Printf("\n### Server paused (SIGSTOP): %d waves of %d callers, deadline %v each; worst of %d runs\n\n",
		outageWaves, outageCallers, outageDeadline, runs)
	fmt.Printf("| client | last caller returned after | callers late by > 20ms | errors | extra goroutines after | first success after SIGCONT |\n")
	fmt.Printf("|---|---:|---:|---|---:|---:|\n")
	for _, spec := range outageClients {
		var worst, recovery []time.Duration
		var late, extra []int
		var kinds string
		for r := 0; r < runs; r++ {
			res := pausedRun(srv, spec)
			if verbose {
				fmt.Printf("run %d %-30s worst %v late %d extra goroutines %d recovery %v errors %s\n",
					r, spec.name, res.worst, res.late, res.extra, res.recovery, res.kinds)
			}
			worst, late, extra, recovery = append(worst, res.worst), append(late, res.late), append(extra, res.extra), append(recovery, res.recovery)
			kinds = res.kinds
		}
		fmt.Printf("| %s | %v | %d | %s | %d | %v |\n", spec.name, slices.Max(worst).Round(time.Millisecond),
			slices.Max(late), kinds, slices.Max(extra), slices.Max(recovery).Round(time.Millisecond))
	}
}

type pausedResult struct {
	worst, recovery time.Duration
	late, extra     int
	kinds           string
}

func pausedRun(srv *server, spec clientSpec) pausedResult {
	c, err := spec.open(srv.addr, "paused")
	if err != nil {
		log.Fatalf("%s: %v", spec.name, err)
	}
	defer c.close()
	warm(c)
	runtime.GC()
	base := runtime.NumGoroutine()

	srv.pause()
	// Several waves: the first one's timeouts may cost connections, which
	// the later waves find broken and must redial while the server hangs.
	var out []outcome
	for wave := 0; wave < outageWaves; wave++ {
		out = append(out, callAll(c, outageCallers, outageDeadline, func(ctx context.Context, c client, g int) error {
			return c.script(ctx, "dev-"+fmt.Sprint(g%64), g)
		})...)
	}
	var res pausedResult
	for _, o := range out {
		res.worst = max(res.worst, o.elapsed)
		if o.elapsed > outageDeadline+20*time.Millisecond {
			res.late++
		}
	}
	res.kinds = errorKinds(out)
	res.extra = runtime.NumGoroutine() - base
	srv.resume()
	t := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.script(ctx, "dev-0", 0)
		cancel()
		if err == nil || time.Since(t) > 30*time.Second {
			break
		}
	}
	res.recovery = time.Since(t)
	return res
}

// down kills the server (its port refuses connections) and has 16 callers
// run GET (read-only: a client may retry it) and the script (a write) with
// a deadline of 300ms each, with each library as tether configures it and
// rueidis with its defaults (which retry read-only commands).
func down(srv *server, verbose bool) {
	const deadline = 300 * time.Millisecond
	fmt.Printf("\n### Server down (killed, port closed): 16 callers, deadline %v each\n\n", deadline)
	fmt.Printf("| client | GET returns after (median / max) | GET error | script returns after (median / max) | script error |\n")
	fmt.Printf("|---|---:|---|---:|---|\n")
	for _, spec := range []clientSpec{clients[0], clients[1], outageClients[3]} {
		c, err := spec.open(srv.addr, "down")
		if err != nil {
			log.Fatalf("%s: %v", spec.name, err)
		}
		warm(c)
		srv.kill()
		get := callAll(c, 16, deadline, func(ctx context.Context, c client, _ int) error { return c.get(ctx) })
		scr := callAll(c, 16, deadline, func(ctx context.Context, c client, g int) error { return c.script(ctx, "dev-0", g) })
		c.close()
		if err := srv.restart(); err != nil {
			log.Fatal(err)
		}
		srv.do("SET", "bench:get", string(make([]byte, 100)))
		fmt.Printf("| %s | %s | %s | %s | %s |\n", spec.name, spread(get), errorKinds(get), spread(scr), errorKinds(scr))
		if verbose {
			fmt.Printf("  %s GET: %v\n  script: %v\n", spec.name, get[0].err, scr[0].err)
		}
	}
}

// nested has outageCallers callers each hold a connection and, holding
// it, ask for another (the incident), with a deadline of outageDeadline,
// against a healthy server.
func nested(srv *server) {
	const guard = time.Second
	fmt.Printf("\n### Nested acquisition: %d callers each hold a connection and ask for another; %d connections; deadline %v\n\n",
		outageCallers, poolSize, outageDeadline)
	fmt.Printf("| client | returned | still blocked after %v | last return after | errors |\n|---|---:|---:|---:|---|\n", guard)
	for _, spec := range clients {
		c, err := spec.open(srv.addr, "nested")
		if err != nil {
			log.Fatalf("%s: %v", spec.name, err)
		}
		warm(c)
		out, blocked := callGuarded(c, outageCallers, outageDeadline, guard, func(ctx context.Context, c client, _ int) error {
			return c.nested(ctx)
		})
		var returned []outcome
		var last time.Duration
		for i, o := range out {
			if !blocked[i] {
				returned = append(returned, o)
				last = max(last, o.elapsed)
			}
		}
		fmt.Printf("| %s | %d | %d | %v | %s |\n", spec.name, len(returned), len(out)-len(returned), last.Round(time.Millisecond), errorKinds(returned))
		c.close() // releases callers still blocked, if any
	}
}

// warm makes a few calls one after the other, as a quiet service does.
func warm(c client) {
	for i := 0; i < 10; i++ {
		callAll(c, 1, 2*time.Second, func(ctx context.Context, c client, g int) error { return c.script(ctx, "dev-0", g) })
	}
}

// callAll runs op in n callers at once, each with its own deadline d, and
// returns what each saw. It gives up (and says so) when callers are still
// running 20s after their deadline.
func callAll(c client, n int, d time.Duration, op func(context.Context, client, int) error) []outcome {
	out := make([]outcome, n)
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			err := op(ctx, c, g)
			out[g] = outcome{time.Since(t), err}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d + 20*time.Second):
		log.Fatalf("callers still blocked 20s after their %v deadline", d)
	}
	return out
}

// callGuarded is callAll that gives up waiting after guard and reports
// which callers were still blocked then.
func callGuarded(c client, n int, d, guard time.Duration, op func(context.Context, client, int) error) ([]outcome, []bool) {
	var mu sync.Mutex // guards out and finished
	out := make([]outcome, n)
	finished := make([]bool, n)
	for g := 0; g < n; g++ {
		go func() {
			t := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			err := op(ctx, c, g)
			mu.Lock()
			out[g], finished[g] = outcome{time.Since(t), err}, true
			mu.Unlock()
		}()
	}
	time.Sleep(guard)
	mu.Lock()
	defer mu.Unlock()
	blocked := make([]bool, n)
	for i := range finished {
		blocked[i] = !finished[i]
	}
	return slices.Clone(out), blocked
}

// errorKinds summarises the errors of out: "deadline 250, pool timeout 6".
func errorKinds(out []outcome) string {
	counts := map[string]int{}
	for _, o := range out {
		counts[errorKind(o.err)]++
	}
	var parts []string
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func errorKind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.DeadlineExceeded):
		return "ctx deadline"
	case errors.Is(err, goredis.ErrPoolTimeout):
		return "pool timeout"
	case strings.Contains(err.Error(), "i/o timeout"):
		return "i/o timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case isRedisErr(err):
		return "redis error"
	}
	return err.Error()
}

func spread(out []outcome) string {
	d := make([]time.Duration, len(out))
	for i, o := range out {
		d[i] = o.elapsed
	}
	slices.Sort(d)
	return fmt.Sprintf("%v / %v", d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}

func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}
