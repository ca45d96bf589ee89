package main

import (
	"context"
	"net"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

// cache is guarded by a mutex that its refresh holds while it sleeps.
type cache struct {
	mu   sync.Mutex
	data map[string]string
}

func (c *cache) get(k string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data[k]
}

func (c *cache) refresh(held chan<- struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	held <- struct{}{}
	time.Sleep(time.Hour) // a slow load with the lock held
}

// registry is guarded by a RWMutex that a writer holds while it sleeps.
type registry struct {
	mu    sync.RWMutex
	names []string
}

func (r *registry) lookup() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.names)
}

func (r *registry) replace(held chan<- struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	held <- struct{}{}
	time.Sleep(time.Hour)
}

func mutexes(ctx context.Context, c config) error {
	cc := &cache{data: map[string]string{}}
	reg := &registry{}
	held := make(chan struct{})
	go cc.refresh(held)
	go reg.replace(held)
	<-held
	<-held
	for range c.workers {
		go func() {
			for {
				cc.get("k")
			}
		}()
	}
	for range 5 {
		go func() {
			for {
				reg.lookup()
			}
		}()
	}
	return settled(ctx, func() bool {
		// 2 holders, the waiters, and this goroutine plus the runtime's
		// few: wait until the waiters exist.
		return runtime.NumGoroutine() >= c.workers+5+3
	})
}

// waits starts goroutines in each common kind of wait.
func waits(ctx context.Context, c config) error {
	jobs := make(chan int)
	for range 10 {
		go worker(jobs) // idle workers: channel receive
	}
	results := make(chan int)
	for i := range 5 {
		go produce(results, i) // nobody reads results: channel send
	}
	quit := make(chan struct{})
	tick := make(chan int)
	for range 3 {
		go loop(tick, quit) // select
	}
	go waitNil() // receive from a nil channel

	var wg sync.WaitGroup
	wg.Add(1)
	go waitAll(&wg) // never done: WaitGroup

	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	for range 3 {
		go waitCond(cond, &mu) // never signalled: sync.Cond
	}
	for range 2 {
		go nap() // time.Sleep
	}
	go pinned(quit)    // locked to its thread
	go deep(150, quit) // more frames than a traceback shows
	if err := netWaits(); err != nil {
		return err
	}
	return settled(ctx, func() bool { return runtime.NumGoroutine() >= 10+5+3+1+1+3+2+1+1+1+4 })
}

// pinned waits on a channel while locked to its OS thread.
func pinned(quit <-chan struct{}) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	<-quit
}

// deep recurses n times, then waits.
func deep(n int, quit <-chan struct{}) {
	if n == 0 {
		<-quit
		return
	}
	deep(n-1, quit)
}

func worker(jobs <-chan int) {
	for j := range jobs {
		_ = j
	}
}

func produce(results chan<- int, i int) { results <- i }

func loop(tick <-chan int, quit <-chan struct{}) {
	for {
		select {
		case <-tick:
		case <-quit:
			return
		}
	}
}

func waitNil() {
	var ch chan int
	<-ch
}

func waitAll(wg *sync.WaitGroup) { wg.Wait() }

func waitCond(cond *sync.Cond, mu *sync.Mutex) {
	mu.Lock()
	defer mu.Unlock()
	for {
		cond.Wait()
	}
}

func nap() { time.Sleep(time.Hour) }

// netWaits starts an accept loop and two connections whose readers wait
// for bytes that never come.
func netWaits() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go acceptLoop(ln)
	for range 2 {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		go readAll(conn)
	}
	return nil
}

func acceptLoop(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		// The server side's readers carry pprof labels, as tether's do.
		go pprof.Do(context.Background(), pprof.Labels("role", "reader", "conn", conn.RemoteAddr().Network()), func(context.Context) {
			readAll(conn)
		})
	}
}

func readAll(conn net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}
