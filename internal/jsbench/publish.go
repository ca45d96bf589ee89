package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go/jetstream"
)

var logOut = os.Stderr

const maxBatch = 1000 // as tether's POST /v1/messages/batch

// publisher publishes at c.rate, message k falling due k/rate seconds
// after the start, to stream k % streams, round robin.
type publisher struct {
	c         config
	js        jetstream.JetStream
	published atomic.Int64
	errors    atomic.Int64
	perGroup  []atomic.Int64 // accepted messages of each group

	mu  sync.Mutex
	lat *hdrhistogram.Histogram // request durations, µs
}

func (p *publisher) streams() int {
	if p.c.direct {
		return p.c.conns
	}
	return p.c.groups
}

func (p *publisher) subject(k int) string {
	if p.c.direct {
		return fmt.Sprintf("dev.bench-d%d", k%p.c.conns)
	}
	return fmt.Sprintf("grp.bench-g%d", k%p.c.groups)
}

// run publishes for c.duration and waits for the requests under way.
func (p *publisher) run(start time.Time) {
	p.perGroup = make([]atomic.Int64, p.streams())
	total := int(float64(p.c.rate) * p.c.duration.Seconds())
	due := func() int { return min(total, int(float64(p.c.rate)*time.Since(start).Seconds())+1) }
	end := start.Add(p.c.duration)
	sem := make(chan struct{}, p.c.publishers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for issued := 0; issued < total && time.Now().Before(end); {
		want := issued + 1
		if p.c.batch > 0 {
			want = min(total, issued+p.c.batch)
		}
		if due() < want {
			time.Sleep(time.Until(start.Add(time.Duration(float64(want-1) / float64(p.c.rate) * float64(time.Second)))))
			continue
		}
		sem <- struct{}{}
		if !time.Now().Before(end) {
			<-sem
			return
		}
		n := min(due()-issued, maxBatch)
		if p.c.batch > 0 {
			n = min(n, p.c.batch)
		}
		first := issued
		issued += n
		wg.Go(func() {
			defer func() { <-sem }()
			p.request(first, n)
		})
	}
}

// request publishes messages first … first+n-1 and waits for their acks.
func (p *publisher) request(first, n int) {
	t0 := time.Now()
	type pending struct {
		f jetstream.PubAckFuture
		k int
	}
	futures := make([]pending, 0, n)
	for k := first; k < first+n; k++ {
		data := make([]byte, max(p.c.size, 16))
		binary.BigEndian.PutUint64(data, uint64(k))
		binary.BigEndian.PutUint64(data[8:], uint64(time.Now().UnixNano()))
		f, err := p.js.PublishAsync(p.subject(k), data)
		if err != nil {
			p.errors.Add(1)
			continue
		}
		futures = append(futures, pending{f, k})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, f := range futures {
		select {
		case <-f.f.Ok():
			p.published.Add(1)
			p.perGroup[f.k%p.streams()].Add(1)
		case <-f.f.Err():
			p.errors.Add(1)
		case <-ctx.Done():
			p.errors.Add(1)
		}
	}
	p.mu.Lock()
	p.lat.RecordValue(max(time.Since(t0).Microseconds(), 1))
	p.mu.Unlock()
}

// recipients returns the deliveries the accepted group messages owe: each
// goes to every member of its group.
func (p *publisher) recipients(c config) int64 {
	var n int64
	for g := range p.perGroup {
		members := int64(c.conns / c.groups)
		if g < c.conns%c.groups {
			members++
		}
		n += p.perGroup[g].Load() * members
	}
	return n
}
