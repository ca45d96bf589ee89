// Command clientbench chooses tether's Redis client by measurement: it
// runs the same workload with go-redis v9 and rueidis against a
// redis-server it starts itself on a free loopback port, and checks how
// each behaves when the server stops answering or goes away — the
// incident of SPEC section 2.
//
// It is a separate module so that the client that loses never enters
// tether's main module. Run it from this directory:
//
//	go run . [-dur 400ms] [-runs 3] [-v]        # about 90s
//
// Throughput figures are the median of -runs runs made in this invocation,
// the runs interleaved across clients so that a slow moment of the shared
// machine hits both alike. docs/notes/redis.md records the figures and the
// choice.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// workload is one kind of operation; g is the caller's index, i its
// operation count.
type workload struct {
	name string
	op   func(ctx context.Context, c client, g, i int) error
}

var workloads = []workload{
	{"EVALSHA publish-shaped script (3 keys)", func(ctx context.Context, c client, g, i int) error {
		return c.script(ctx, "dev-"+strconv.Itoa(g%64), i%512)
	}},
	{"pipeline of 10 commands", func(ctx context.Context, c client, g, i int) error {
		return c.pipeline(ctx, "dev-"+strconv.Itoa(g%64), i%512)
	}},
	{"GET", func(ctx context.Context, c client, _, _ int) error { return c.get(ctx) }},
}

var concurrencies = []int{1, 16, 64, 256}

// cell is one run of one workload at one concurrency with one client.
type cell struct {
	ops, errs int
	opsPerSec float64
	p50, p99  time.Duration
	maxConns  int
	firstErr  error
}

// opTimeout is every operation's deadline in the throughput runs: tether
// gives every store call one.
const opTimeout = 5 * time.Second

func main() {
	dur := flag.Duration("dur", 400*time.Millisecond, "duration of one throughput cell")
	runs := flag.Int("runs", 3, "runs per cell; figures are medians")
	verbose := flag.Bool("v", false, "print every run")
	flag.Parse()
	log.SetFlags(0)
	goredis.SetLogger(quiet{}) // its dial failures while the server is down

	srv, err := startServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.close()
	if _, err := srv.do("SET", "bench:get", string(make([]byte, 100))); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	fmt.Printf("clientbench: %s, GOMAXPROCS %d, redis-server on %s; go-redis PoolSize %d\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), srv.addr, poolSize)

	throughput(srv, *dur, *runs, *verbose)
	paused(srv, *runs, *verbose)
	nested(srv)
	down(srv, *verbose)
	fmt.Printf("\ntotal %v\n", time.Since(start).Round(time.Second))
}

// throughput runs every workload at every concurrency with every client,
// runs times, and prints the medians.
func throughput(srv *server, dur time.Duration, runs int, verbose bool) {
	cs := make([]client, len(clients))
	for i, spec := range clients {
		c, err := spec.open(srv.addr, connName(i))
		if err != nil {
			log.Fatalf("%s: %v", spec.name, err)
		}
		defer c.close()
		cs[i] = c
	}
	type key struct{ client, workload, conc int }
	results := map[key][]cell{}
	for r := 0; r < runs; r++ {
		for w := range workloads {
			for _, conc := range concurrencies {
				for j := range cs {
					ci := j
					if r%2 == 1 {
						ci = len(cs) - 1 - j
					}
					res := runCell(srv, cs[ci], connName(ci), workloads[w], conc, dur)
					if verbose {
						fmt.Printf("run %d %-8s %-40s conc %3d: %s\n", r, clients[ci].name, workloads[w].name, conc, res)
					}
					k := key{ci, w, conc}
					results[k] = append(results[k], res)
				}
			}
		}
	}
	for w, wl := range workloads {
		fmt.Printf("\n### %s: ops/s (p50 / p99), median of %d\n\n", wl.name, runs)
		fmt.Printf("| client |")
		for _, conc := range concurrencies {
			fmt.Printf(" %d callers |", conc)
		}
		fmt.Printf(" conns (max seen) | errors |\n|---|")
		for range concurrencies {
			fmt.Printf("---:|")
		}
		fmt.Printf("---:|---:|\n")
		for ci, spec := range clients {
			fmt.Printf("| %s |", spec.name)
			conns, errs := 0, 0
			for _, conc := range concurrencies {
				m := median(results[key{ci, w, conc}])
				fmt.Printf(" %s (%s / %s) |", thousands(m.opsPerSec), m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond))
				for _, c := range results[key{ci, w, conc}] {
					conns = max(conns, c.maxConns)
					errs += c.errs
				}
			}
			fmt.Printf(" %d | %d |\n", conns, errs)
		}
	}
}

// runCell runs conc callers doing w's operation for dur.
func runCell(srv *server, c client, name string, w workload, conc int, dur time.Duration) cell {
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		errs     atomic.Int64
		firstErr atomic.Value
	)
	lat := make([][]time.Duration, conc)
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			for i := 0; !stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				t := time.Now()
				err := w.op(ctx, c, g, i)
				l = append(l, time.Since(t))
				cancel()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
			lat[g] = l
		}()
	}
	maxConns := 0
	t0 := time.Now()
	for time.Since(t0) < dur {
		time.Sleep(50 * time.Millisecond)
		maxConns = max(maxConns, srv.clientsNamed(name))
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res := cell{ops: len(all), errs: int(errs.Load()), maxConns: maxConns}
	res.opsPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.p50, res.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	if e, ok := firstErr.Load().(error); ok {
		res.firstErr = e
	}
	return res
}

// String formats the cell as one row of the results table.
func (c cell) String() string {
	s := fmt.Sprintf("%9.0f ops/s p50 %-9v p99 %-9v conns %d", c.opsPerSec, c.p50.Round(time.Microsecond), c.p99.Round(time.Microsecond), c.maxConns)
	if c.errs > 0 {
		s += fmt.Sprintf(" errors %d (%v)", c.errs, c.firstErr)
	}
	return s
}

// quiet discards go-redis's log lines.
type quiet struct{}

// Printf discards the line.
func (quiet) Printf(context.Context, string, ...any) {}

// connName is the connection name of client i, to count its connections.
func connName(i int) string { return "clientbench-" + strconv.Itoa(i) }

// median returns a cell whose figures are the medians of cs, each taken
// on its own.
func median(cs []cell) cell {
	pick := func(f func(cell) float64) float64 {
		v := make([]float64, len(cs))
		for i, c := range cs {
			v[i] = f(c)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return cell{
		opsPerSec: pick(func(c cell) float64 { return c.opsPerSec }),
		p50:       time.Duration(pick(func(c cell) float64 { return float64(c.p50) })),
		p99:       time.Duration(pick(func(c cell) float64 { return float64(c.p99) })),
	}
}

// thousands formats n with a thin space between thousands, as the notes do.
func thousands(n float64) string {
	s := strconv.FormatInt(int64(n+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}
