package bolt

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

// benchWriters runs b.N calls of op spread over writers goroutines and
// reports transactions per call (below 1: group commit at work).
func benchWriters(b *testing.B, s *Store, writers int, op func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	before := s.commits.Load()
	b.ResetTimer()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(s.commits.Load()-before)/float64(b.N), "tx/op")
}

// BenchmarkPublish publishes one device message per call, durably, from 1,
// 16 and 64 concurrent writers.
func BenchmarkPublish(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := mustOpen(b, Options{})
			ctx := context.Background()
			benchWriters(b, s, writers, func(i int) error {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := s.Publish(ctx, []*tether.Message{testMessage(i, fmt.Sprintf("d%d", i%writers))})
				return err
			})
		})
	}
}

// BenchmarkPublishAckCycle runs the life of one message per call: publish,
// Pending, Sent, Ack (three durable commits and a read), from 1 and 16
// concurrent devices.
func BenchmarkPublishAckCycle(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("devices=%d", writers), func(b *testing.B) {
			s := mustOpen(b, Options{})
			benchWriters(b, s, writers, func(i int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				m := testMessage(i, fmt.Sprintf("d%d", i))
				if _, err := s.Publish(ctx, []*tether.Message{m}); err != nil {
					return err
				}
				ds, err := s.Pending(ctx, m.Target.ID, "", 10, m.PublishedAt)
				if err != nil || len(ds) != 1 {
					return fmt.Errorf("pending: %d deliveries, %v", len(ds), err)
				}
				if _, err := s.Sent(ctx, m.Target.ID, []string{m.ID}); err != nil {
					return err
				}
				n, err := s.Ack(ctx, m.Target.ID, []string{m.ID}, m.PublishedAt)
				if err != nil || n != 1 {
					return fmt.Errorf("ack: %d, %v", n, err)
				}
				return nil
			})
		})
	}
}
