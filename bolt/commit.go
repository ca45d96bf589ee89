package bolt

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetherpush/tether"
	bolt "go.etcd.io/bbolt"
)

// request is one write call waiting for the committer.
type request struct {
	ctx context.Context
	op  string
	// fn applies the call inside the shared transaction. It may run more
	// than once (when another call of its batch fails, the batch is rolled
	// back and applied again without the failing call), so it resets
	// whatever it reports before writing it.
	fn   func(tx *bolt.Tx) error
	done chan error // buffered: the committer never blocks on it
}

// fnError marks an error returned by one request's fn, as opposed to an
// error of the transaction itself.
type fnError struct {
	index int
	err   error
}

// Error returns the message of the error fn returned.
func (e *fnError) Error() string { return e.err.Error() }

// update queues fn for the committer and waits until it is durable, ctx is
// done or the store closes. When ctx ends first the error wraps ctx's error
// and the write may or may not have been committed; callers retry
// idempotently.
func (s *Store) update(ctx context.Context, op string, fn func(tx *bolt.Tx) error) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	r := &request{ctx: ctx, op: op, fn: fn, done: make(chan error, 1)}
	select {
	case s.queue <- r:
	case <-ctx.Done():
		return ctxErr(ctx, op)
	case <-s.quit:
		return fmt.Errorf("bolt %s: %w", op, tether.ErrClosed)
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctxErr(ctx, op)
	case <-s.exited:
		// The committer answers every request it took before it exits.
		select {
		case err := <-r.done:
			return err
		default:
			return fmt.Errorf("bolt %s: %w", op, tether.ErrClosed)
		}
	}
}

// commitLoop is the committer: it takes the first queued write, everything
// else already queued (up to maxBatch), and commits them in one
// transaction. It never waits for more writes to arrive: the writes that
// queue up during one fsync form the next batch.
func (s *Store) commitLoop() {
	defer close(s.exited)
	batch := make([]*request, 0, s.maxBatch)
	for {
		select {
		case <-s.quit:
			s.drainClosed()
			return
		case r := <-s.queue:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// drainClosed fails every queued write with ErrClosed.
func (s *Store) drainClosed() {
	for {
		select {
		case r := <-s.queue:
			r.done <- fmt.Errorf("bolt %s: %w", r.op, tether.ErrClosed)
		default:
			return
		}
	}
}

// commit applies batch in one transaction and answers every request. A
// request whose ctx is already done is answered with its ctx error and not
// applied. When one request's fn fails, that request gets its error and
// the transaction is retried without it.
func (s *Store) commit(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := ctxErr(r.ctx, r.op); err != nil {
			r.done <- err
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		s.commits.Add(1)
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, r := range live {
				if err := r.fn(tx); err != nil {
					return &fnError{index: i, err: err}
				}
			}
			return nil
		})
		var fe *fnError
		if errors.As(err, &fe) {
			r := live[fe.index]
			r.done <- wrapErr(r.op, fe.err)
			live = append(live[:fe.index:fe.index], live[fe.index+1:]...)
			continue
		}
		for _, r := range live {
			if err != nil {
				r.done <- wrapErr(r.op, err)
			} else {
				r.done <- nil
			}
		}
		return
	}
}
