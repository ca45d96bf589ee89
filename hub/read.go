package hub

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetherpush/tether"
)

// readBatch is the most sessions or feeds one round of the read loop
// serves.
const readBatch = 1024

// readLoop does the store reads of every session and feed: cursor loads of
// new sessions, reads of the logs sessions are behind in, and reads of the
// feeds of group logs. Each round takes everything queued and makes one
// Cursors and one Read call for all of it.
type readLoop struct {
	h      *Hub
	signal chan struct{}

	mu    sync.Mutex // guards following
	loads fifo[*Session]
	reads fifo[*Session]
	fills fifo[*feed]
}

func (r *readLoop) init(h *Hub) {
	r.h = h
	r.signal = make(chan struct{}, 1)
}

func (r *readLoop) kick() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// load queues a load of s's cursors unless one is queued or under way.
func (r *readLoop) load(s *Session) {
	s.mu.Lock()
	if s.d.loading || s.closed {
		s.mu.Unlock()
		return
	}
	s.d.loading = true
	s.mu.Unlock()
	r.mu.Lock()
	r.loads.push(s, time.Now())
	r.mu.Unlock()
	r.kick()
}

// read queues the reads s needs; the caller has set s's readQueued.
func (r *readLoop) read(s *Session) {
	r.mu.Lock()
	r.reads.push(s, time.Now())
	r.mu.Unlock()
	r.kick()
}

// fill queues a read of feed f unless one is queued.
func (r *readLoop) fill(f *feed) {
	f.mu.Lock()
	if f.queued {
		f.mu.Unlock()
		return
	}
	f.queued = true
	f.mu.Unlock()
	r.mu.Lock()
	r.fills.push(f, time.Now())
	r.mu.Unlock()
	r.kick()
}

// oldestAge returns how long the oldest queued work has waited.
func (r *readLoop) oldestAge(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var age time.Duration
	for _, t := range []time.Time{r.loads.oldest(), r.reads.oldest(), r.fills.oldest()} {
		if !t.IsZero() {
			age = max(age, now.Sub(t))
		}
	}
	return age
}

func (r *readLoop) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.signal:
		}
		for {
			r.mu.Lock()
			loads, reads, fills := r.loads.take(readBatch), r.reads.take(readBatch), r.fills.take(readBatch)
			more := r.loads.len()+r.reads.len()+r.fills.len() > 0
			r.mu.Unlock()
			if len(loads)+len(reads)+len(fills) == 0 {
				break
			}
			ok := r.round(ctx, loads, reads, fills)
			if ok {
				backoff = 0
			} else {
				backoff = min(max(2*backoff, 100*time.Millisecond), time.Second)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
			}
			if !more {
				break
			}
		}
	}
}

// round serves one batch and reports whether the store answered.
func (r *readLoop) round(ctx context.Context, loads, reads []*Session, fills []*feed) bool {
	ok := r.loadCursors(ctx, loads)
	return r.readLogs(ctx, reads, fills) && ok
}

// loadCursors loads the cursors of sessions. A device whose previous
// session here still has marks to commit waits for them, so that what it
// acked there is not sent again.
func (r *readLoop) loadCursors(ctx context.Context, loads []*Session) bool {
	h := r.h
	var ready, later []*Session
	for _, s := range loads {
		if h.endingDevice(s.device) {
			later = append(later, s)
		} else {
			ready = append(ready, s)
		}
	}
	if len(later) > 0 {
		r.mu.Lock()
		for _, s := range later {
			r.loads.push(s, time.Now())
		}
		r.mu.Unlock()
		time.AfterFunc(5*time.Millisecond, r.kick)
	}
	if len(ready) == 0 {
		return true
	}
	devices := make([]string, len(ready))
	for i, s := range ready {
		devices[i] = s.device
	}
	cs, err := h.store.Cursors(ctx, devices)
	if err != nil {
		r.logFailure("loading cursors", err)
		r.mu.Lock()
		for _, s := range ready {
			r.loads.push(s, time.Now())
		}
		r.mu.Unlock()
		r.kick()
		return false
	}
	for i, s := range ready {
		s.loaded(cs[i])
	}
	return true
}

// endingDevice reports whether a closed session of device still has marks
// to commit.
func (h *Hub) endingDevice(device string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.ending {
		if s.device == device {
			return true
		}
	}
	return false
}

// readLogs reads what sessions and feeds are behind in, in one Read call.
func (r *readLoop) readLogs(ctx context.Context, reads []*Session, fills []*feed) bool {
	var (
		reqs    []tether.ReadRequest
		srs     []sessionRead
		feeds   []*feed
		from    []uint64
		known   []uint64
		feedReq []int
	)
	for _, s := range reads {
		for _, sr := range s.takeReads() {
			srs = append(srs, sr)
			reqs = append(reqs, tether.ReadRequest{Source: sr.source, After: sr.after, Limit: sr.limit})
		}
	}
	for _, f := range fills {
		f.mu.Lock()
		f.queued = false
		f.mu.Unlock()
		at, k, need := f.readFrom()
		if !need {
			continue
		}
		feeds, from, known = append(feeds, f), append(from, at), append(known, k)
		feedReq = append(feedReq, len(reqs))
		reqs = append(reqs, tether.ReadRequest{Source: tether.GroupTarget(f.group), After: at, Limit: feedRead})
	}
	if len(reqs) == 0 {
		return true
	}
	res, err := r.h.store.Read(ctx, reqs)
	if err != nil {
		r.logFailure("reading logs", err)
	}
	for i, sr := range srs {
		var es []tether.Entry
		if err == nil {
			es = res[i]
		}
		sr.s.readDone(sr, es, err)
		if err != nil {
			sr.s.mu.Lock()
			sr.s.d.readQueued = true
			sr.s.mu.Unlock()
			r.read(sr.s)
		}
	}
	for j, f := range feeds {
		if err != nil {
			r.fill(f)
			continue
		}
		es := res[feedReq[j]]
		if f.filled(from[j], known[j], es, len(es) == feedRead) {
			r.fill(f)
		}
	}
	return err == nil
}

func (r *readLoop) logFailure(what string, err error) {
	if !errors.Is(err, context.Canceled) {
		r.h.log.Warn(what+" failed; trying again", "err", err)
	}
}
