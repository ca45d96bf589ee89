package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
)

// The direct workload (-direct): the writes of the delivery model of
// logs and cursors (docs/design.md) when every message goes to one of
// 10,000 devices, the way tether's committer makes them — one transaction
// at a time, each holding a batch of publishes and the acks of the
// previous batch, durable before the next. A publish reads and writes the
// device log's source record, appends a log entry and writes the id and
// expiry indexes; an ack rewrites the device's cursors. Layouts:
//
//   - entries: log entries hold the message and stay until purge (tether
//     0.2's bolt layout 2);
//   - colocated: as entries, but every key of a device (log, source,
//     cursors) under one prefix, so that one delivery dirties one region;
//   - split: the message under its id (keys that grow with time), the log
//     entry only names it and is deleted once acked (layout 3).
//
// Each engine runs it in one goroutine (bbolt: one read-write transaction
// per batch; Pebble: one indexed batch committed with Sync).

const directDevices = 10_000

type kvTx interface {
	begin() error
	get(k []byte) []byte
	set(k, v []byte) error
	del(k []byte) error
	commit() error
	close() error
}

type boltKV struct {
	db *bolt.DB
	tx *bolt.Tx
	b  *bolt.Bucket
}

func (e *boltKV) begin() (err error) {
	if e.tx, err = e.db.Begin(true); err == nil {
		e.b, err = e.tx.CreateBucketIfNotExists([]byte("x"))
	}
	return err
}
func (e *boltKV) get(k []byte) []byte     { return append([]byte(nil), e.b.Get(k)...) }
func (e *boltKV) set(k, v []byte) error   { return e.b.Put(k, v) }
func (e *boltKV) del(k []byte) error      { return e.b.Delete(k) }
func (e *boltKV) commit() error           { return e.tx.Commit() }
func (e *boltKV) close() error            { return e.db.Close() }
func (e *pebbleKV) set(k, v []byte) error { return e.b.Set(k, v, nil) }
func (e *pebbleKV) del(k []byte) error    { return e.b.Delete(k, nil) }
func (e *pebbleKV) close() error          { return e.db.Close() }

type pebbleKV struct {
	db *pebble.DB
	b  *pebble.Batch
}

func (e *pebbleKV) begin() error { e.b = e.db.NewIndexedBatch(); return nil }
func (e *pebbleKV) get(k []byte) []byte {
	v, c, err := e.b.Get(k)
	if err != nil {
		return nil
	}
	defer c.Close()
	return append([]byte(nil), v...)
}
func (e *pebbleKV) commit() error {
	defer e.b.Close()
	return e.b.Commit(pebble.Sync)
}

// directKey builds a key from strings (each followed by 0x00) and
// big-endian uint64s.
func directKey(parts ...any) []byte {
	var k []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			k = append(append(k, v...), 0)
		case uint64:
			k = binary.BigEndian.AppendUint64(k, v)
		}
	}
	return k
}

// runDirect writes n deliveries in transactions of batch publishes (and
// the previous batch's acks) and returns deliveries per second.
func runDirect(kv kvTx, layout string, n, batch int) (float64, error) {
	value := make([]byte, 350) // a 256-byte message and its record
	key := func(dev, kind string, rest ...any) []byte {
		if layout == "colocated" {
			return directKey(append([]any{"D" + dev, kind}, rest...)...)
		}
		return directKey(append([]any{kind, dev}, rest...)...)
	}
	id := uint64(1) << 40
	type sent struct {
		dev string
		seq uint64
	}
	var prev []sent
	start := time.Now()
	for done := 0; done < n; done += batch {
		if err := kv.begin(); err != nil {
			return 0, err
		}
		cur := make([]sent, 0, batch)
		for i := range batch {
			dev := fmt.Sprintf("device:bench-d%d", (done+i)%directDevices)
			id++
			kv.get(directKey("I", id)) // duplicate check
			var last uint64
			if v := kv.get(key(dev, "S")); len(v) >= 8 {
				last = binary.BigEndian.Uint64(v)
			}
			last++
			var err error
			if layout == "split" {
				err = kv.set(directKey("I", id), value)
				if err == nil {
					err = kv.set(key(dev, "L", last), directKey("I", id))
				}
			} else {
				err = kv.set(key(dev, "L", last), value)
				if err == nil {
					err = kv.set(directKey("I", id), make([]byte, 30))
				}
			}
			if err == nil {
				err = kv.set(directKey("E", uint64(time.Now().UnixNano()), id), nil)
			}
			if err == nil {
				err = kv.set(key(dev, "S"), binary.BigEndian.AppendUint64(nil, last))
			}
			if err != nil {
				return 0, err
			}
			cur = append(cur, sent{dev, last})
		}
		for _, s := range prev {
			c := kv.get(key(s.dev, "c"))
			c = binary.BigEndian.AppendUint64(c[:0], s.seq)
			if err := kv.set(key(s.dev, "c"), append(c, make([]byte, 52)...)); err != nil {
				return 0, err
			}
			if layout == "split" {
				if err := kv.del(key(s.dev, "L", s.seq)); err != nil {
					return 0, err
				}
			}
		}
		if err := kv.commit(); err != nil {
			return 0, err
		}
		prev = cur
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// direct runs every engine and layout runs times and prints the medians.
func direct(parent string, n, batch, runs int) error {
	type variant struct{ engine, layout string }
	variants := []variant{{"bbolt", "entries"}, {"bbolt", "colocated"}, {"bbolt", "split"}, {"pebble", "entries"}, {"pebble", "split"}}
	res := make([][]float64, len(variants))
	for r := 0; r < runs; r++ {
		for i, v := range variants {
			dir, err := os.MkdirTemp(parent, "direct-")
			if err != nil {
				return err
			}
			var kv kvTx
			if v.engine == "bbolt" {
				db, err := bolt.Open(filepath.Join(dir, "b.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
				if err != nil {
					return err
				}
				kv = &boltKV{db: db}
			} else {
				db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
				if err != nil {
					return err
				}
				kv = &pebbleKV{db: db}
			}
			rate, err := runDirect(kv, v.layout, n, batch)
			kv.close()
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s %s: %w", v.engine, v.layout, err)
			}
			res[i] = append(res[i], rate)
		}
	}
	fmt.Printf("## direct workload: %d deliveries to %d devices, %d publishes (and the acks of the %d before) a transaction; deliveries/s, median of %d (every run)\n",
		n, directDevices, batch, batch, runs)
	for i, v := range variants {
		sorted := append([]float64(nil), res[i]...)
		for a := range sorted {
			for b := a + 1; b < len(sorted); b++ {
				if sorted[b] < sorted[a] {
					sorted[a], sorted[b] = sorted[b], sorted[a]
				}
			}
		}
		fmt.Printf("%-8s %-10s %8.0f   %.0f\n", v.engine, v.layout, sorted[len(sorted)/2], res[i])
	}
	return nil
}
