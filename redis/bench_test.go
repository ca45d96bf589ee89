package redis_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// The benchmarks run the store calls the hub makes for a workload against
// a redis-server of their own (appendonly yes, appendfsync everysec, as in
// production) and report, besides deliveries per second, the Redis CPU
// each delivery cost: the server's main thread (INFO cpu), and the time
// spent inside commands (INFO commandstats), per delivery acked.
//
//	go test -run '^$' -bench . -benchtime 200000x ./redis/

// redisCPU is a sample of a server's CPU counters, and its memory.
type redisCPU struct {
	main time.Duration // used_cpu_user_main_thread + used_cpu_sys_main_thread
	per  map[string]time.Duration
	mem  int64 // used_memory
}

// sampleCPU reads srv's CPU counters.
func sampleCPU(tb testing.TB, srv *redistest.Server) redisCPU {
	tb.Helper()
	out := redisCPU{per: map[string]time.Duration{}}
	for _, line := range strings.Split(srv.MustDo("INFO", "cpu"), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread" {
			f, _ := strconv.ParseFloat(v, 64)
			out.main += time.Duration(f * float64(time.Second))
		}
	}
	for _, line := range strings.Split(srv.MustDo("INFO", "commandstats"), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if us, ok := strings.CutPrefix(f, "usec="); ok {
				n, _ := strconv.ParseInt(us, 10, 64)
				out.per[strings.TrimPrefix(k, "cmdstat_")] = time.Duration(n) * time.Microsecond
			}
		}
	}
	for _, line := range strings.Split(srv.MustDo("INFO", "memory"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			out.mem, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return out
}

// reportCPU reports the Redis CPU per delivery between before and after
// and the memory each message kept, and logs the commands that took the
// CPU.
func reportCPU(b *testing.B, srv *redistest.Server, before redisCPU, deliveries, messages int64) {
	after := sampleCPU(b, srv)
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(deliveries) }
	b.ReportMetric(float64(deliveries)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(per(after.main-before.main), "redis-cpu-µs/delivery")
	b.ReportMetric(float64(after.mem-before.mem)/float64(messages), "redis-bytes/message")
	b.Logf("%d deliveries; command µs per delivery (a script's commands count in its time too): %s",
		deliveries, breakdown(before, after, int(deliveries)))
}

// breakdown lists the command time per unit between two samples, most
// first.
func breakdown(before, after redisCPU, units int) string {
	type cmd struct {
		name string
		d    time.Duration
	}
	var cmds []cmd
	for name, d := range after.per {
		if d -= before.per[name]; d > 0 && name != "info" {
			cmds = append(cmds, cmd{name, d})
		}
	}
	slices.SortFunc(cmds, func(a, b cmd) int { return cmp.Compare(b.d, a.d) })
	parts := make([]string, len(cmds))
	for i, c := range cmds {
		parts[i] = fmt.Sprintf("%s %.2f", c.name, float64(c.d.Nanoseconds())/1e3/float64(units))
	}
	return strings.Join(parts, ", ")
}

// benchServer starts a server configured as in production and a store on
// it.
func benchServer(b *testing.B) (*redistest.Server, *redis.Store) {
	srv := redistest.Start(b, "--appendonly", "yes", "--appendfsync", "everysec")
	return srv, MustOpen(b, redis.Options{URL: srv.URL(), Prefix: "bench"})
}

// benchMessage returns message n to target.
func benchMessage(n int64, target tether.Target, at time.Time) *tether.Message {
	return &tether.Message{ID: fmt.Sprintf("01JB%014d", n), Target: target, Data: json.RawMessage(`{"order":12345,"total":"42.00"}`),
		PublishedAt: at, ExpiresAt: at.Add(time.Hour)}
}

// BenchmarkGroupCycle is the group workload of issue 9: 1,000 devices in
// 10 groups of 100. Each group's worker publishes batch messages to its
// group, one per Publish call (as many HTTP requests do), reads them once
// (the hub reads a group's log once per node), and commits every member's
// acks of them in one Commit of 100 changes: each device acks in batches
// of batch messages. b.N counts deliveries acked.
func BenchmarkGroupCycle(b *testing.B) {
	for _, batch := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("ackbatch=%d", batch), func(b *testing.B) {
			const groups, members = 10, 100
			srv, s := benchServer(b)
			ctx := context.Background()
			for g := range groups {
				for d := range members {
					if err := s.Join(ctx, fmt.Sprintf("pos-%d-%d", g, d), []string{fmt.Sprintf("shop-%d", g)}); err != nil {
						b.Fatal(err)
					}
				}
			}
			var next, delivered atomic.Int64
			rounds := (b.N + groups*members*batch - 1) / (groups * members * batch)
			before := sampleCPU(b, srv)
			b.ResetTimer()
			var wg sync.WaitGroup
			for g := range groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range rounds {
						n, err := groupRound(s, g, members, batch, &next)
						if err != nil {
							b.Error(err)
							return
						}
						delivered.Add(int64(n))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			reportCPU(b, srv, before, delivered.Load(), next.Load())
		})
	}
}

// groupRound is one round of group g's worker in BenchmarkGroupCycle. It
// returns the deliveries acked.
func groupRound(s *redis.Store, g, members, batch int, next *atomic.Int64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	target := tether.GroupTarget(fmt.Sprintf("shop-%d", g))
	now := time.Now()
	var first uint64
	for i := range batch {
		res, err := s.Publish(ctx, []*tether.Message{benchMessage(next.Add(1), target, now)})
		if err != nil {
			return 0, err
		}
		if res[0].Recipients != members {
			return 0, fmt.Errorf("publish to %s: %d recipients, want %d", target, res[0].Recipients, members)
		}
		if i == 0 {
			first = res[0].Seq
		}
	}
	es, err := s.Read(ctx, []tether.ReadRequest{{Source: target, After: first - 1, Limit: batch}})
	if err != nil {
		return 0, err
	}
	marks := make([]tether.Mark, 0, len(es[0]))
	for _, e := range es[0] {
		marks = append(marks, tether.Mark{Source: target, Seq: e.Seq, State: tether.StateAcked, Attempts: 1})
	}
	changes := make([]tether.Change, members)
	for d := range changes {
		changes[d] = tether.Change{Device: fmt.Sprintf("pos-%d-%d", g, d), At: now, Marks: marks}
	}
	res, err := s.Commit(ctx, changes)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res {
		n += r.Acked
	}
	if n != members*batch {
		return 0, fmt.Errorf("commit of %s: %d acked, want %d", target, n, members*batch)
	}
	return n, nil
}

// BenchmarkDirect is the direct workload of issue 9: 10,000 devices, 32
// publishers each publishing batches of 100 messages to 100 devices, each
// message acked by its device in a Commit of the batch's 100 changes (the
// hub hands messages published on its node to the sessions there without
// reading them back). b.N counts deliveries acked.
func BenchmarkDirect(b *testing.B) {
	srv, s := benchServer(b)
	before := sampleCPU(b, srv)
	n := directLoad(b, s)
	reportCPU(b, srv, before, n, n)
}

// BenchmarkDirectCluster is BenchmarkDirect on a Redis Cluster of three
// primaries: every script call carries one unit (one slot), and the acks'
// events go to their slot's outbox, which the store's relay moves to the
// event log. It reports the CPU of the three main threads per delivery,
// in all and of the busiest: one Redis's thread caps a single instance,
// each shard of a cluster carries its share. The three servers, the relay
// and the writers share the machine's cores, so deliveries per second
// say little here; the CPU per delivery is the figure.
func BenchmarkDirectCluster(b *testing.B) {
	c := redistest.StartCluster(b, "--appendonly", "yes", "--appendfsync", "everysec")
	s := MustOpen(b, redis.Options{Addrs: c.Addrs(), Prefix: "bench"})
	shards := c.Primaries(b)
	before := make([]redisCPU, len(shards))
	for i, srv := range shards {
		before[i] = sampleCPU(b, srv)
	}
	n := directLoad(b, s)
	var all, busiest time.Duration
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
	for i, srv := range shards {
		after := sampleCPU(b, srv)
		d := after.main - before[i].main
		all, busiest = all+d, max(busiest, d)
		b.Logf("shard %d: %.1f µs of CPU per delivery; commands: %s", i, per(d), breakdown(before[i], after, int(n)))
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(per(all), "redis-cpu-µs/delivery")
	b.ReportMetric(per(busiest), "busiest-shard-cpu-µs/delivery")
}

// directLoad runs BenchmarkDirect's workload on s, b.N deliveries rounded
// up to whole batches, timed, and returns the deliveries acked.
func directLoad(b *testing.B, s *redis.Store) int64 {
	const devices, batch, writers = 10_000, 100, 32
	var next, delivered atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for delivered.Add(batch) <= int64(b.N)+batch-1 {
				if err := directRound(s, devices, batch, &next); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	return next.Load()
}

// directRound publishes one batch of BenchmarkDirect and commits its acks.
func directRound(s *redis.Store, devices, batch int, next *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	msgs := make([]*tether.Message, batch)
	for i := range msgs {
		n := next.Add(1)
		msgs[i] = benchMessage(n, tether.DeviceTarget(fmt.Sprintf("pos-%d", n%int64(devices))), now)
	}
	res, err := s.Publish(ctx, msgs)
	if err != nil {
		return err
	}
	changes := make([]tether.Change, batch)
	for i, m := range msgs {
		changes[i] = tether.Change{Device: m.Target.ID, At: now,
			Marks: []tether.Mark{{Source: m.Target, Seq: res[i].Seq, State: tether.StateAcked, Attempts: 1}}}
	}
	out, err := s.Commit(ctx, changes)
	if err != nil {
		return err
	}
	for i, r := range out {
		if r.Acked != 1 {
			return fmt.Errorf("commit of %s: %d acked, want 1", changes[i].Device, r.Acked)
		}
	}
	return nil
}

// BenchmarkExpire is the other half of a message's cost in steady state:
// b.N direct messages to 10,000 devices, acked, then swept by Expire
// calls of 1,000 as the hub's sweeper makes them, first at their expiry
// (retention 1 h: nothing to settle, the expiry index entries move on),
// then at the end of the retention (purged). b.N counts messages.
func BenchmarkExpire(b *testing.B) {
	const devices, batch = 10_000, 100
	srv, s := benchServer(b)
	var next atomic.Int64
	for next.Load() < int64(b.N) {
		if err := directRound(s, devices, min(batch, b.N-int(next.Load())), &next); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	sweep := func(now, purgeBefore time.Time) {
		for more := true; more; {
			var err error
			if _, more, err = s.Expire(ctx, now, purgeBefore, 1000); err != nil {
				b.Fatal(err)
			}
		}
	}
	at := time.Now().Add(time.Hour + time.Minute) // every message expired, none an hour ago
	before := sampleCPU(b, srv)
	b.ResetTimer()
	sweep(at, at.Add(-time.Hour))
	mid := sampleCPU(b, srv)
	at = at.Add(2 * time.Hour)
	sweep(at, at.Add(-time.Hour))
	b.StopTimer()
	per := func(a, z redisCPU) float64 { return float64((z.main - a.main).Nanoseconds()) / 1e3 / float64(b.N) }
	end := sampleCPU(b, srv)
	b.ReportMetric(per(before, mid), "expire-redis-cpu-µs/message")
	b.ReportMetric(per(mid, end), "purge-redis-cpu-µs/message")
	b.Logf("expire: %s", breakdown(before, mid, b.N))
	b.Logf("purge: %s", breakdown(mid, end, b.N))
	b.Logf("%s keys left after the purge", srv.MustDo("DBSIZE"))
}
