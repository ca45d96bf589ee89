package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// devices are the consumers and what they received.
type devices struct {
	conns  []*nats.Conn
	ctxs   []jetstream.ConsumeContext
	start  atomic.Int64 // UnixNano of the first publish
	unique atomic.Int64

	mu   sync.Mutex // guards following
	seen map[uint64]int32
	dups int64
	lat  *hdrhistogram.Histogram // µs
	last int64                   // UnixNano of the last receipt
}

// key names one delivery: message k (global publish index) to device d.
func key(k uint64, d int) uint64 { return k<<20 | uint64(d) }

func connectDevices(ctx context.Context, c config) (*devices, error) {
	ds := &devices{seen: map[uint64]int32{}, lat: hdrhistogram.New(1, 600_000_000, 3)}
	for d := range c.conns {
		nc, err := nats.Connect(c.url, nats.Name(fmt.Sprintf("bench-d%d", d)))
		if err != nil {
			ds.close()
			return nil, fmt.Errorf("device %d: %w", d, err)
		}
		ds.conns = append(ds.conns, nc)
		js, err := jetstream.New(nc)
		if err != nil {
			ds.close()
			return nil, err
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, "BENCH", jetstream.ConsumerConfig{
			Durable:        fmt.Sprintf("bench-d%d", d),
			FilterSubjects: []string{fmt.Sprintf("dev.bench-d%d", d), fmt.Sprintf("grp.bench-g%d", d%c.groups)},
			AckPolicy:      jetstream.AckExplicitPolicy,
			DeliverPolicy:  jetstream.DeliverNewPolicy,
			MaxAckPending:  c.inflight,
			AckWait:        30 * time.Second,
		})
		if err != nil {
			ds.close()
			return nil, fmt.Errorf("consumer of device %d: %w", d, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) { ds.receive(d, m) }, jetstream.PullMaxMessages(c.inflight))
		if err != nil {
			ds.close()
			return nil, err
		}
		ds.ctxs = append(ds.ctxs, cc)
		if d%1000 == 999 {
			fmt.Fprintf(logOut, "%d consumers\n", d+1)
		}
	}
	return ds, nil
}

// receive records message m at device d and acks it.
func (ds *devices) receive(d int, m jetstream.Msg) {
	now := time.Now().UnixNano()
	data := m.Data()
	if len(data) < 16 {
		m.Term()
		return
	}
	k, at := binary.BigEndian.Uint64(data), int64(binary.BigEndian.Uint64(data[8:]))
	_ = m.Ack()
	ds.mu.Lock()
	n := ds.seen[key(k, d)]
	ds.seen[key(k, d)] = n + 1
	if n > 0 {
		ds.dups++
	} else {
		ds.unique.Add(1)
		ds.lat.RecordValue(max((now-at)/1000, 1))
	}
	ds.last = max(ds.last, now)
	ds.mu.Unlock()
}

func (ds *devices) report(rep *report, start time.Time) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	rep.Delivered, rep.Duplicates = ds.unique.Load(), ds.dups
	rep.Lost = max(rep.Expected-rep.Delivered, 0)
	took := time.Unix(0, ds.last).Sub(start)
	if took > 0 {
		rep.DeliverySeconds = took.Seconds()
		rep.DeliveredPerSecond = float64(rep.Delivered) / took.Seconds()
	}
	rep.LatencyMS = percentilesOf(ds.lat)
}

func (ds *devices) close() {
	for _, cc := range ds.ctxs {
		cc.Stop()
	}
	for _, nc := range ds.conns {
		nc.Close()
	}
}
