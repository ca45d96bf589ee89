// Command enginebench measures the two candidate embedded engines for
// tether's single-node store on the machine it runs on: durable (fsync)
// small-record write throughput with 1, 16 and 64 concurrent writers, and the
// latency of a short range read (what Store.Pending does).
//
// It is a separate module so that Pebble never enters tether's main module.
// Run it from this directory:
//
//	go run . [-dur 1.5s] [-runs 3] [-dir /path/on/the/real/disk]
//	go run . -direct 1000000      # the delivery model's direct workload (direct.go)
//
// Every figure printed is the median of -runs runs made in this invocation,
// each on a fresh database.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
)

// valueSize is the size of one record: about one delivery plus a small
// message.
const valueSize = 128

// engine is one way of writing records durably.
type engine interface {
	put(key, value []byte) error
	// scan reads up to n records of prefix and returns how many it read.
	scan(prefix []byte, n int) (int, error)
	close() error
}

// engineSpec names an engine and opens it in a directory.
type engineSpec struct {
	name string
	open func(dir string) (engine, error)
}

var engines = []engineSpec{
	{"bbolt Update (one fsync per write)", openBoltUpdate},
	{"bbolt db.Batch (group commit)", openBoltBatch},
	{"bbolt committer goroutine (group commit)", openBoltCommitter},
	{"pebble Set with Sync (pipelined WAL sync)", openPebble},
	{"pebble committer goroutine (batch + Sync)", openPebbleCommitter},
}

func main() {
	dur := flag.Duration("dur", 1200*time.Millisecond, "duration of one write run")
	runs := flag.Int("runs", 3, "runs per figure (the median is printed)")
	verbose := flag.Bool("v", false, "also print every run")
	dirFlag := flag.String("dir", "", "parent directory of the databases (default: a temporary directory)")
	directN := flag.Int("direct", 0, "instead: the direct workload of the delivery model with this many deliveries (direct.go)")
	directBatch := flag.Int("direct-batch", 1600, "publishes a transaction in -direct")
	fsync := flag.Bool("fsync", false, "instead: the cost of an fsync by the number of pages written before it (fsync.go)")
	flag.Parse()
	log.SetFlags(0)

	parent, err := os.MkdirTemp(*dirFlag, "enginebench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(parent)

	if *fsync {
		if err := fsyncPages(parent, 100); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *directN > 0 {
		if err := direct(parent, *directN, *directBatch, *runs); err != nil {
			log.Fatal(err)
		}
		return
	}
	host, _ := os.Hostname()
	fmt.Printf("enginebench: %s/%s, %d CPUs, GOMAXPROCS %d, host %s, dir %s\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), host, parent)
	fmt.Printf("record: 16-byte key, %d-byte value; %v per write run; median of %d runs\n\n", valueSize, *dur, *runs)

	start := time.Now()
	// Runs are interleaved (run 1 of every engine and writer count, then
	// run 2, …) so that a slow period of a shared disk hits all engines
	// alike rather than one figure.
	counts := []int{1, 16, 64}
	results := make([][][]writeResult, len(engines))
	for i := range results {
		results[i] = make([][]writeResult, len(counts))
	}
	for r := 0; r < *runs; r++ {
		for j, writers := range counts {
			for i, e := range engines {
				wr, err := runWrites(e, parent, writers, *dur)
				if err != nil {
					log.Fatalf("%s, %d writers: %v", e.name, writers, err)
				}
				results[i][j] = append(results[i][j], wr)
			}
		}
	}
	fmt.Println("## durable writes: ops/s (p50 / p99 latency per write)")
	fmt.Printf("%-44s %22s %22s %22s\n", "engine", "1 writer", "16 writers", "64 writers")
	for i, e := range engines {
		fmt.Printf("%-44s", e.name)
		for j := range counts {
			m := medianWrite(results[i][j])
			fmt.Printf(" %22s", fmt.Sprintf("%.0f (%s/%s)", m.opsPerSec, short(m.p50), short(m.p99)))
		}
		fmt.Println()
	}
	if *verbose {
		fmt.Println("\nevery run, ops/s:")
		for i, e := range engines {
			for j, writers := range counts {
				fmt.Printf("  %-44s %2d writers:", e.name, writers)
				for _, wr := range results[i][j] {
					fmt.Printf(" %.0f", wr.opsPerSec)
				}
				fmt.Println()
			}
		}
	}

	fmt.Println("\n## range read: 100 records of one device out of 64 x 1000 (p50 / p99 per scan)")
	// Loaded through the group-committing writers: the read path is the
	// same whatever wrote the file.
	for _, e := range []engineSpec{{"bbolt", openBoltCommitter}, {"pebble", openPebble}} {
		var p50s, p99s []time.Duration
		for r := 0; r < *runs; r++ {
			p50, p99, err := runScans(e, parent)
			if err != nil {
				log.Fatalf("%s scan: %v", e.name, err)
			}
			p50s, p99s = append(p50s, p50), append(p99s, p99)
		}
		fmt.Printf("%-44s p50 %s  p99 %s\n", e.name, short(median(p50s)), short(median(p99s)))
	}
	fmt.Printf("\ntotal %v\n", time.Since(start).Round(time.Millisecond))
}

// writeResult is one write run.
type writeResult struct {
	opsPerSec float64
	p50, p99  time.Duration
}

// runWrites opens a fresh database and lets writers goroutines write records
// durably for dur.
func runWrites(spec engineSpec, parent string, writers int, dur time.Duration) (writeResult, error) {
	dir, err := os.MkdirTemp(parent, "w")
	if err != nil {
		return writeResult{}, err
	}
	defer os.RemoveAll(dir)
	e, err := spec.open(dir)
	if err != nil {
		return writeResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var (
		wg    sync.WaitGroup
		total atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		first error
	)
	begin := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []time.Duration
			value := make([]byte, valueSize)
			for seq := 0; ctx.Err() == nil; seq++ {
				key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(w)), uint64(seq))
				t := time.Now()
				if err := e.put(key, value); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
				total.Add(1)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if err := e.close(); err != nil && first == nil {
		first = err
	}
	if first != nil {
		return writeResult{}, first
	}
	slices.Sort(lats)
	return writeResult{
		opsPerSec: float64(total.Load()) / elapsed.Seconds(),
		p50:       pct(lats, 0.50),
		p99:       pct(lats, 0.99),
	}, nil
}

// runScans loads 64 devices with 1000 records each, then times 2000 scans of
// 100 records of a random device.
func runScans(spec engineSpec, parent string) (p50, p99 time.Duration, err error) {
	dir, err := os.MkdirTemp(parent, "r")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	e, err := spec.open(dir)
	if err != nil {
		return 0, 0, err
	}
	defer e.close()
	const devices, perDevice = 64, 1000
	if err := load(e, devices, perDevice); err != nil {
		return 0, 0, err
	}
	lats := make([]time.Duration, 0, 2000)
	for i := 0; i < 2000; i++ {
		prefix := binary.BigEndian.AppendUint64(nil, uint64(rand.IntN(devices)))
		t := time.Now()
		n, err := e.scan(prefix, 100)
		if err != nil {
			return 0, 0, err
		}
		if n != 100 {
			return 0, 0, fmt.Errorf("scan read %d records, want 100", n)
		}
		lats = append(lats, time.Since(t))
	}
	slices.Sort(lats)
	return pct(lats, 0.50), pct(lats, 0.99), nil
}

// load writes the records of runScans, concurrently so that engines with
// group commit load fast.
func load(e engine, devices, perDevice int) error {
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	value := make([]byte, valueSize)
	for d := 0; d < devices; d++ {
		wg.Add(1)
		go func(d int) {
			defer wg.Done()
			for i := 0; i < perDevice; i++ {
				key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(d)), uint64(i))
				if err := e.put(key, value); err != nil {
					errs <- err
					return
				}
			}
		}(d)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianWrite(rs []writeResult) writeResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b writeResult) int {
		switch {
		case a.opsPerSec < b.opsPerSec:
			return -1
		case a.opsPerSec > b.opsPerSec:
			return 1
		}
		return 0
	})
	m := s[len(s)/2]
	var p50s, p99s []time.Duration
	for _, r := range rs {
		p50s, p99s = append(p50s, r.p50), append(p99s, r.p99)
	}
	m.p50, m.p99 = median(p50s), median(p99s)
	return m
}

func short(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

// --- bbolt ---

var bucket = []byte("b")

type boltEngine struct {
	db    *bolt.DB
	write func(db *bolt.DB, key, value []byte) error
	stop  func()
}

func openBolt(dir string, write func(db *bolt.DB, key, value []byte) error) (*boltEngine, error) {
	db, err := bolt.Open(dir+"/bolt.db", 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	return &boltEngine{db: db, write: write}, err
}

func putTx(key, value []byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, value) }
}

func openBoltUpdate(dir string) (engine, error) {
	return openBolt(dir, func(db *bolt.DB, key, value []byte) error { return db.Update(putTx(key, value)) })
}

func openBoltBatch(dir string) (engine, error) {
	return openBolt(dir, func(db *bolt.DB, key, value []byte) error { return db.Batch(putTx(key, value)) })
}

// committer coalesces writes the way tether's bolt store does: one
// goroutine takes the first queued write, everything else already queued
// (up to 256), and commits them together, without waiting for more. This is
// also what a store on Pebble would need, since Sent and Ack read, modify
// and write records and must not interleave.
type committer struct {
	queue chan req
	wg    sync.WaitGroup
}

type req struct {
	key, value []byte
	done       chan error
}

func newCommitter(commit func(batch []req) error) *committer {
	c := &committer{queue: make(chan req, 1024)}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for r := range c.queue {
			batch := []req{r}
		drain:
			for len(batch) < 256 {
				select {
				case r, ok := <-c.queue:
					if !ok {
						break drain
					}
					batch = append(batch, r)
				default:
					break drain
				}
			}
			err := commit(batch)
			for _, r := range batch {
				r.done <- err
			}
		}
	}()
	return c
}

func (c *committer) put(key, value []byte) error {
	r := req{key, value, make(chan error, 1)}
	c.queue <- r
	return <-r.done
}

func (c *committer) stop() { close(c.queue); c.wg.Wait() }

func openBoltCommitter(dir string) (engine, error) {
	var c *committer
	e, err := openBolt(dir, func(_ *bolt.DB, key, value []byte) error { return c.put(key, value) })
	if err != nil {
		return nil, err
	}
	c = newCommitter(func(batch []req) error {
		return e.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, r := range batch {
				if err := b.Put(r.key, r.value); err != nil {
					return err
				}
			}
			return nil
		})
	})
	e.stop = c.stop
	return e, nil
}

func (e *boltEngine) put(key, value []byte) error { return e.write(e.db, key, value) }

func (e *boltEngine) scan(prefix []byte, n int) (int, error) {
	read := 0
	err := e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		var sink []byte
		for k, v := c.Seek(prefix); k != nil && read < n && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			sink = append(sink[:0], v...)
			read++
		}
		_ = sink
		return nil
	})
	return read, err
}

func (e *boltEngine) close() error {
	if e.stop != nil {
		e.stop()
	}
	return e.db.Close()
}

// --- pebble ---

type pebbleEngine struct {
	db *pebble.DB
	c  *committer // nil: writers call Set themselves
}

// quietLogger is a pebble.Logger that drops pebble's informational lines.
type quietLogger struct{}

// Infof discards the line.
func (quietLogger) Infof(string, ...any) {}

// Errorf logs the line.
func (quietLogger) Errorf(f string, a ...any) { log.Printf(f, a...) }

// Fatalf logs the line and exits.
func (quietLogger) Fatalf(f string, a ...any) { log.Fatalf(f, a...) }

func openPebble(dir string) (engine, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db: db}, nil
}

func openPebbleCommitter(dir string) (engine, error) {
	en, err := openPebble(dir)
	if err != nil {
		return nil, err
	}
	e := en.(*pebbleEngine)
	e.c = newCommitter(func(batch []req) error {
		b := e.db.NewBatch()
		for _, r := range batch {
			if err := b.Set(r.key, r.value, nil); err != nil {
				return err
			}
		}
		return b.Commit(pebble.Sync)
	})
	return e, nil
}

func (e *pebbleEngine) put(key, value []byte) error {
	if e.c != nil {
		return e.c.put(key, value)
	}
	return e.db.Set(key, value, pebble.Sync)
}

func (e *pebbleEngine) scan(prefix []byte, n int) (int, error) {
	upper := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(prefix)+1)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	read := 0
	var sink []byte
	for ok := it.First(); ok && read < n; ok = it.Next() {
		sink = append(sink[:0], it.Value()...)
		read++
	}
	_ = sink
	return read, it.Close()
}

func (e *pebbleEngine) close() error {
	if e.c != nil {
		e.c.stop()
	}
	return e.db.Close()
}
