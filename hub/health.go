package hub

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherpush/tether"
)

// healthInterval is how often the store is pinged and the node's lag
// measured.
const healthInterval = 250 * time.Millisecond

// health knows, without asking the store, whether the store answers and
// whether the node keeps up, so that a publish can be refused at once
// (SPEC section 3 "Overload"): 503 unavailable while the store is down,
// 503 overloaded while the node's lag is past its bound.
//
// The lag is the age of the oldest work the node has not done: a session
// waiting for a worker, a read or a commit waiting for the store, and the
// duration of recent publishes (their wait for the store's writer). It
// leaves out what waits on a device itself (a full in-flight window), so a
// slow device never makes the node refuse work. The node is overloaded
// once the lag passes a quarter of MaxDeliveryLag and until it falls below
// an eighth: accepted messages then wait far less than MaxDeliveryLag.
type health struct {
	h *Hub

	storeErr   atomic.Pointer[error] // nil while the store answers
	overloaded atomic.Bool
	lagNanos   atomic.Int64

	mu          sync.Mutex // guards following
	publishMax  time.Duration
	publishPrev time.Duration // the previous interval's, so a sample lives one to two intervals

	tidy memoryTidy // owned by run
}

func (hl *health) init(h *Hub) { hl.h = h }

// ready returns nil while the store answers, or why it does not.
func (hl *health) ready() error {
	if p := hl.storeErr.Load(); p != nil {
		return &tether.Error{Code: tether.EUnavailable, Message: "the store does not answer; retry later", Err: *p}
	}
	return nil
}

// admit returns the error a publish must be refused with now, or nil.
func (hl *health) admit() error {
	if err := hl.ready(); err != nil {
		return err
	}
	if hl.overloaded.Load() {
		lag := time.Duration(hl.lagNanos.Load()).Round(time.Millisecond)
		return tether.Errorf(tether.EOverloaded, "the node is %v behind (bound %v); retry later", lag, hl.h.cfg.MaxDeliveryLag)
	}
	return nil
}

// published records how long a publish waited for the store.
func (hl *health) published(d time.Duration) {
	hl.mu.Lock()
	hl.publishMax = max(hl.publishMax, d)
	hl.mu.Unlock()
}

// run pings the store and measures the lag every healthInterval.
func (hl *health) run(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if hl.ping(ctx) {
			hl.h.tellUnsure()
		}
		now := time.Now()
		hl.measure(now)
		hl.tidy.check(now, hl.h.Connections())
	}
}

// ping checks the store within at most a second and reports whether it
// answered.
func (hl *health) ping(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, min(time.Second, hl.h.cfg.StoreTimeout))
	defer cancel()
	err := hl.h.store.Ping(ctx)
	if ctx.Err() != nil && err == nil {
		err = ctx.Err()
	}
	switch {
	case err == nil:
		hl.h.m.StoreUp.Set(1)
		if hl.storeErr.Swap(nil) != nil {
			hl.h.log.Info("the store answers again")
		}
		return true
	case hl.h.ctx.Err() != nil:
	default:
		err = fmt.Errorf("store does not answer: %w", err)
		hl.h.m.StoreUp.Set(0)
		if hl.storeErr.Swap(&err) == nil {
			hl.h.log.Warn("the store does not answer: publishes and connects are refused with 503 until it does", "err", err)
		}
	}
	return false
}

// measure computes the lag at now and updates the overloaded state.
func (hl *health) measure(now time.Time) {
	h := hl.h
	hl.mu.Lock()
	pub := max(hl.publishMax, hl.publishPrev)
	hl.publishPrev, hl.publishMax = hl.publishMax, 0
	hl.mu.Unlock()
	lag := max(pub, h.queue.oldestAge(now), h.reads.oldestAge(now), h.commit.oldestAge(now))
	hl.lagNanos.Store(int64(lag))
	h.m.DeliveryLag.Set(lag.Seconds())
	bound := h.cfg.MaxDeliveryLag
	switch over := hl.overloaded.Load(); {
	case !over && lag > bound/4:
		hl.overloaded.Store(true)
		h.m.Overloaded.Set(1)
		h.log.Warn("overloaded: publishes are refused with 503 until the node catches up", "lag", lag, "max_delivery_lag", bound)
	case over && lag < bound/8:
		hl.overloaded.Store(false)
		h.m.Overloaded.Set(0)
		h.log.Info("caught up: publishes are accepted again", "lag", lag)
	}
}

// memoryTidy gives the memory a storm of connects or disconnects left
// unused back to the operating system once the number of sessions settles.
// Go's heap keeps freed memory up to its next collection goal (about twice
// the live heap) and returns the rest slowly; after 100,000 handshakes
// that is hundreds of megabytes of RSS for nothing. It never runs while
// the number of sessions is steady.
type memoryTidy struct {
	at       int       // sessions at the last tidy
	seen     int       // sessions at the last check
	stableAt time.Time // since when seen has held within 1%
}

// Thresholds of memoryTidy.
const (
	tidyMinChange = 1000            // sessions, and a tenth of them
	tidySettle    = 3 * time.Second // how long the count must hold
)

func (t *memoryTidy) check(now time.Time, n int) {
	if diff(n, t.seen) > max(t.seen/100, 10) {
		t.seen, t.stableAt = n, now
		return
	}
	change := diff(n, t.at)
	if change < tidyMinChange || change < t.at/10 || now.Sub(t.stableAt) < tidySettle {
		return
	}
	t.at = n
	debug.FreeOSMemory()
}

func diff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}

// Lag returns the node's delivery lag at its last measurement (every
// 250 ms) and whether publishes are being refused as overloaded.
func (h *Hub) Lag() (lag time.Duration, overloaded bool) {
	return time.Duration(h.health.lagNanos.Load()), h.health.overloaded.Load()
}
