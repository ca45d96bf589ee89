package bolt

import (
	"context"
	"fmt"
	"strings"
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
// Cursors, Read, Commit of the ack (two durable commits and two reads),
// from 1 and 16 concurrent devices.
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
				cs, err := s.Cursors(ctx, []string{m.Target.ID})
				if err != nil {
					return err
				}
				es, err := s.Read(ctx, []tether.ReadRequest{{Source: m.Target, After: cs[0][0].Floor, Limit: 10}})
				if err != nil || len(es[0]) != 1 {
					return fmt.Errorf("read: %d entries, %v", len(es[0]), err)
				}
				mark := tether.Mark{Source: m.Target, Seq: es[0][0].Seq, State: tether.StateAcked, Attempts: 1}
				res, err := s.Commit(ctx, []tether.Change{{Device: m.Target.ID, At: m.PublishedAt, Marks: []tether.Mark{mark}}})
				if err != nil || res[0].Acked != 1 {
					return fmt.Errorf("ack: %+v, %v", res, err)
				}
				return nil
			})
		})
	}
}

// BenchmarkGroupPublish publishes one message per call to a group of 1 or
// 10,000 members: the cost must not grow with the group.
func BenchmarkGroupPublish(b *testing.B) {
	for _, members := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s := mustOpen(b, Options{})
			ctx := context.Background()
			for i := range members {
				if err := s.Join(ctx, fmt.Sprintf("d%d", i), []string{"g"}); err != nil {
					b.Fatal(err)
				}
			}
			benchWriters(b, s, 16, func(i int) error {
				m := testMessage(i, "x")
				m.Target = tether.GroupTarget("g")
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				res, err := s.Publish(ctx, []*tether.Message{m})
				if err == nil && res[0].Recipients != members {
					err = fmt.Errorf("%d recipients, want %d", res[0].Recipients, members)
				}
				return err
			})
		})
	}
}

// BenchmarkDirect publishes batches of 100 device messages to 10,000
// devices from 32 writers and acks each message once published (the
// direct workload of tether bench), reporting deliveries per second and
// transactions, pages and write time per delivery.
func BenchmarkDirect(b *testing.B) {
	const devices, batch = 10_000, 100
	s := mustOpen(b, Options{})
	ctx := context.Background()
	var next atomic.Int64
	before := s.db.Stats()
	benchWriters(b, s, 32, func(i int) error {
		if i%batch != 0 {
			return nil
		}
		msgs := make([]*tether.Message, batch)
		for j := range msgs {
			k := int(next.Add(1))
			msgs[j] = testMessage(k, fmt.Sprintf("d%d", k%devices))
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := s.Publish(ctx, msgs)
		if err != nil {
			return err
		}
		changes := make([]tether.Change, batch)
		for j, m := range msgs {
			changes[j] = tether.Change{Device: m.Target.ID, At: m.PublishedAt,
				Marks: []tether.Mark{{Source: m.Target, Seq: res[j].Seq, State: tether.StateAcked, Attempts: 1}}}
		}
		_, err = s.Commit(ctx, changes)
		return err
	})
	after := s.db.Stats()
	st := after.Sub(&before)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(st.TxStats.GetPageCount())/float64(b.N), "pages/delivery")
	b.ReportMetric(float64(st.TxStats.GetWriteTime().Microseconds())/float64(b.N), "write-µs/delivery")
	b.ReportMetric(float64(st.TxStats.GetSpillTime().Microseconds())/float64(b.N), "spill-µs/delivery")
}

// BenchmarkGroupAcks is the store's side of the groups workload: 1,000
// devices in 10 groups of 100; each round publishes two messages to every
// group and commits the acks of all 1,000 devices in one Commit (the
// hub's commit loop gathers about that many at half rate). It reports
// pages and write time per delivery: a commit rewrites every cursor, and
// appends an event per ack.
func BenchmarkGroupAcks(b *testing.B) {
	const groups, members, perRound = 10, 100, 2
	s := mustOpen(b, Options{})
	ctx := context.Background()
	for d := range groups * members {
		if err := s.Join(ctx, fmt.Sprintf("d%d", d), []string{fmt.Sprintf("g%d", d%groups)}); err != nil {
			b.Fatal(err)
		}
	}
	before := s.db.Stats()
	b.ResetTimer()
	for n := 0; n < b.N; n += groups * members * perRound {
		msgs := make([]*tether.Message, 0, groups*perRound)
		for g := range groups * perRound {
			m := testMessage(n+g, "x")
			m.Target = tether.GroupTarget(fmt.Sprintf("g%d", g%groups))
			msgs = append(msgs, m)
		}
		res, err := s.Publish(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		changes := make([]tether.Change, groups*members)
		for d := range changes {
			ch := tether.Change{Device: fmt.Sprintf("d%d", d), At: msgs[0].PublishedAt}
			for j, m := range msgs {
				if j%groups == d%groups {
					ch.Marks = append(ch.Marks, tether.Mark{Source: m.Target, Seq: res[j].Seq, State: tether.StateAcked, Attempts: 1})
				}
			}
			changes[d] = ch
		}
		if _, err := s.Commit(ctx, changes); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := s.db.Stats()
	st = st.Sub(&before)
	b.ReportMetric(float64(st.TxStats.GetPageCount())/float64(b.N), "pages/delivery")
	b.ReportMetric(float64(st.TxStats.GetWriteTime().Nanoseconds())/float64(b.N), "write-ns/delivery")
}

// BenchmarkPublishBody publishes one device message per call, from 16
// writers, with bodies of several sizes, and reports the pages written
// per message against the pages the bodies fill.
func BenchmarkPublishBody(b *testing.B) {
	for _, size := range []int{256, 1024, 2048, 4096, 16384} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			s := mustOpen(b, Options{})
			ctx := context.Background()
			data := []byte(`"` + strings.Repeat("x", size-2) + `"`)
			before := s.db.Stats()
			benchWriters(b, s, 16, func(i int) error {
				m := testMessage(i, fmt.Sprintf("d%d", i%16))
				m.Data = data
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := s.Publish(ctx, []*tether.Message{m})
				return err
			})
			st := s.db.Stats()
			st = st.Sub(&before)
			b.ReportMetric(float64(st.TxStats.GetPageCount())/float64(b.N), "pages/msg")
			b.ReportMetric(float64(size)/4096, "body-pages/msg")
		})
	}
}
