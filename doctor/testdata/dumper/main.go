// Command dumper puts itself into a known state and dumps its goroutines,
// so that the tests of package doctor parse real dumps of a real program
// instead of hand-written text.
//
// Scenarios (-scenario):
//
//	deadlock  the incident of SPEC section 2 with redigo: a pool of
//	          -max-active connections that waits with no deadline, and
//	          -workers goroutines that each hold a connection while
//	          getting a second one (nested Get). Needs -redis.
//	busy      the same pool, busy but healthy: -workers goroutines that
//	          each get one connection and run a blocking command on it.
//	          Needs -redis.
//	mutex     goroutines piled up on a sync.Mutex and a sync.RWMutex
//	          whose holders sleep.
//	waits     one or more goroutines in every common kind of wait:
//	          channel receive and send, select, nil channel, WaitGroup,
//	          sync.Cond, time.Sleep, network read and accept.
//
// Once the scenario has settled, dumper runs a GC (so that the runtime
// records how long goroutines have waited), waits -hold, writes
// pprof.Lookup("goroutine") with debug=1 and debug=2 to DIR/debug1.txt and
// DIR/debug2.txt when -dir is set, prints "ready <pprof address>" on
// stdout and then lingers for -linger (or panics, with -panic), serving net/http/pprof on a
// loopback port, so that a test can fetch /debug/pprof/goroutine or send
// SIGQUIT to get the dump the runtime prints on its way out. It exits 0
// after -linger, and 3 when the scenario does not settle within -settle.
//
// The tests of package doctor build and run it; see doctor/testdata.go
// for the command that regenerates the dumps in doctor/testdata.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	rpprof "runtime/pprof"
	"time"
)

type config struct {
	scenario  string
	redis     string
	workers   int
	maxActive int
	dir       string
	hold      time.Duration
	linger    time.Duration
	settle    time.Duration
	panic     bool
}

func main() {
	var c config
	flag.StringVar(&c.scenario, "scenario", "", "deadlock, busy, mutex or waits")
	flag.StringVar(&c.redis, "redis", "", "address of a redis-server (deadlock and busy)")
	flag.IntVar(&c.workers, "workers", 40, "number of worker goroutines")
	flag.IntVar(&c.maxActive, "max-active", 8, "redis.Pool MaxActive")
	flag.StringVar(&c.dir, "dir", "", "write debug1.txt and debug2.txt into this directory")
	flag.DurationVar(&c.hold, "hold", 0, "wait this long after settling before dumping (over 1m shows wait minutes)")
	flag.DurationVar(&c.linger, "linger", 0, "stay alive this long after dumping (for SIGQUIT or a fetch)")
	flag.DurationVar(&c.settle, "settle", 10*time.Second, "give up when the scenario has not settled within this long")
	flag.BoolVar(&c.panic, "panic", false, "panic after dumping instead of lingering (run with GOTRACEBACK=all)")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "dumper:", err)
		os.Exit(3)
	}
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.settle)
	defer cancel()
	var err error
	switch c.scenario {
	case "deadlock":
		err = deadlock(ctx, c)
	case "busy":
		err = busy(ctx, c)
	case "mutex":
		err = mutexes(ctx, c)
	case "waits":
		err = waits(ctx, c)
	default:
		return fmt.Errorf("unknown -scenario %q", c.scenario)
	}
	if err != nil {
		return fmt.Errorf("scenario %s did not settle: %w", c.scenario, err)
	}
	addr, err := servePprof()
	if err != nil {
		return err
	}
	// The runtime stamps a parked goroutine's wait at each GC, with the
	// time the GC before it ended: two GCs make the wait minutes of the
	// dumps count from now.
	runtime.GC()
	runtime.GC()
	time.Sleep(c.hold)
	if c.dir != "" {
		for _, debug := range []int{1, 2} {
			if err := writeDump(filepath.Join(c.dir, fmt.Sprintf("debug%d.txt", debug)), debug); err != nil {
				return err
			}
		}
	}
	fmt.Printf("ready %s\n", addr)
	if c.panic {
		panic("dumper: asked to panic (-panic)")
	}
	time.Sleep(c.linger)
	return nil
}

// servePprof serves net/http/pprof on a loopback port and returns its
// address. The server lives as long as the process.
func servePprof() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), nil
}

func writeDump(path string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rpprof.Lookup("goroutine").WriteTo(f, debug); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// settled polls cond every 20 ms until it has held for 300 ms in a row,
// or ctx ends.
func settled(ctx context.Context, cond func() bool) error {
	var since time.Time
	for {
		if cond() {
			if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) >= 300*time.Millisecond {
				return nil
			}
		} else {
			since = time.Time{}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
