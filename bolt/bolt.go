// Package bolt is tether's embedded single-node store: tether.Store on
// go.etcd.io/bbolt, one file, no server to install.
//
// Writes are durable when a method returns (bbolt fsyncs on every commit)
// and are group-committed: one committer goroutine takes every write queued
// while the previous commit was syncing and applies them all in one
// transaction and one fsync. Reads run in read-only transactions beside it.
// docs/notes/store.md records the measurements behind the choice of engine
// and the key layout (also in codec.go).
package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var _ tether.Store = (*Store)(nil)

// Defaults of Options; a zero field means the default.
const (
	// DefaultOpenTimeout bounds the wait for the file lock in Open (another
	// process holding the file).
	DefaultOpenTimeout = time.Second
	// DefaultMaxBatch is the most write calls coalesced into one
	// transaction.
	DefaultMaxBatch = 256
	// DefaultQueueSize is the capacity of the queue of writes waiting for
	// the committer. A caller that finds it full waits, within its ctx
	// deadline, for room.
	DefaultQueueSize = 1024
)

// Options configures a Store. A zero field means the matching default.
type Options struct {
	// OpenTimeout bounds the wait for the file lock; zero means
	// DefaultOpenTimeout.
	OpenTimeout time.Duration
	// MaxBatch is the most write calls in one transaction; zero means
	// DefaultMaxBatch.
	MaxBatch int
	// QueueSize is the capacity of the write queue; zero means
	// DefaultQueueSize.
	QueueSize int
}

func (o Options) withDefaults() Options {
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	return o
}

// Store is tether.Store on one bbolt file. Open it with Open; it is safe
// for concurrent use.
//
// Every method is one transaction (writes share theirs with the other
// writes of the same group commit) and honours ctx: it checks ctx before it
// starts, waits for the write queue and the commit only while ctx lives,
// and answers an error wrapping tether.ErrUnavailable and ctx's error once
// ctx ends. After Close every method answers an error wrapping
// tether.ErrClosed. Bad arguments are *tether.Error with EInvalid; anything
// else (I/O, a corrupt record) is internal.
type Store struct {
	db       *bolt.DB
	maxBatch int

	queue  chan *request // writes waiting for the committer
	quit   chan struct{} // closed by Close: the committer stops
	exited chan struct{} // closed by the committer when it has stopped

	commits atomic.Uint64 // transactions the committer ran (tests, benchmarks)

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// initialMmapSize is the size of the file's first mapping: 1 GiB of
// address space (bbolt maps again, doubling, when the file outgrows it).
const initialMmapSize = 1 << 30

// Open opens or creates the store file at path (its directory is created
// when missing) and starts the committer. It waits at most
// opts.OpenTimeout for another process to release the file.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.OpenTimeout,
		// As etcd does: the freelist is rebuilt at open instead of being
		// written on every commit, which shortens each commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Address space, not memory: a file that grows past the mapping
		// is mapped again, and that waits for every read transaction and
		// holds the writer meanwhile (the event log grows the file by
		// megabytes a second under load).
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	if err := db.Update(initLayout); err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt open %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		maxBatch: opts.MaxBatch,
		queue:    make(chan *request, opts.QueueSize),
		quit:     make(chan struct{}),
		exited:   make(chan struct{}),
	}
	go pprof.Do(context.Background(), pprof.Labels("tether", "bolt-committer", "path", path),
		func(context.Context) { s.commitLoop() })
	return s, nil
}

// initLayout creates the buckets and checks the layout version.
func initLayout(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyVersion)
	if v == nil {
		return meta.Put(keyVersion, []byte{layoutVersion})
	}
	if len(v) != 1 || v[0] != layoutVersion {
		return fmt.Errorf("the file has layout version %v and this tether reads layout %d only: another version of tether wrote it (docs/operations.md, \"Upgrading\")", v, layoutVersion)
	}
	return nil
}

// Close stops the committer, failing the writes still queued with
// ErrClosed, waits for it and closes the file. It waits for read
// transactions in progress. Idempotent: later calls return the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.exited
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Ping checks that the file answers a read transaction. It honours ctx and
// returns an error wrapping ErrClosed after Close.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyVersion) == nil {
			return fmt.Errorf("meta version: %w", errCorrupt)
		}
		return nil
	})
}

// check returns the error op must fail with before it starts: the store is
// closed or ctx is done.
func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("bolt %s: %w", op, tether.ErrClosed)
	}
	return ctxErr(ctx, op)
}

// ctxErr returns ctx's error wrapped for op (and as ErrUnavailable), or
// nil while ctx is live.
func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt %s: %w: %w", op, tether.ErrUnavailable, err)
	}
	return nil
}

// view runs fn in a read-only transaction. It checks ctx before and after;
// a result computed after the deadline passed is dropped.
func (s *Store) view(ctx context.Context, op string, fn func(tx *bolt.Tx) error) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	if err := s.db.View(fn); err != nil {
		if ctx.Err() != nil {
			return ctxErr(ctx, op)
		}
		return wrapErr(op, err)
	}
	return ctxErr(ctx, op)
}

// wrapErr wraps an error of a transaction for op, turning bbolt's "not
// open" into ErrClosed.
func wrapErr(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) || errors.Is(err, berrors.ErrTxClosed) {
		return fmt.Errorf("bolt %s: %w", op, tether.ErrClosed)
	}
	return fmt.Errorf("bolt %s: %w", op, err)
}

// ctxCheckEvery is how many records a long scan reads between two looks at
// its ctx.
const ctxCheckEvery = 1024
