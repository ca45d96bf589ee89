package hub

import (
	"sync"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/wire"
)

// feedCap is how many recent entries a feed keeps. A session whose
// position falls further behind reads its log from the store itself.
const feedCap = 1024

// feedRead is how many entries one read of a feed asks for.
const feedRead = 512

// feed is the hub's view of the tail of one group's log while sessions on
// this node read it, so that a message published to a group is read from
// the store at most once per node, not once per member. Entries published
// on this node are offered by Publish and cost no read at all; those
// published on other nodes are read once when the fleet announces them.
//
// A feed holds every entry of its log after base up to its last entry. It
// is anchored at the first position offered or announced to it, that is at
// the end of the log, never at some reader's old floor: a reader behind
// base reads the store itself until it reaches the feed.
type feed struct {
	group string
	h     *Hub

	mu       sync.Mutex // guards following
	anchored bool
	base     uint64  // the feed holds the entries after base
	entries  []entry // ascending; positions missing between them were purged
	last     uint64  // the newest position known to exist; entries may end before it
	// ahead holds entries offered out of order (concurrent publishes
	// finish in any order) until the ones before arrive; after gapWait
	// the feed reads the log instead.
	ahead   map[uint64]*tether.Message
	gap     *time.Timer
	readers map[*Session]struct{}
	queued  bool // on the read loop's queue
}

// entry is a log entry with its message frame for a first attempt,
// encoded once per node for all the readers of the log.
type entry struct {
	tether.Entry
	frame []byte
}

// newEntry returns e with its first-attempt frame.
func newEntry(e tether.Entry) entry {
	m := e.Message
	return entry{Entry: e, frame: wire.AppendMessage(make([]byte, 0, len(m.Data)+len(m.ID)+len(m.Target.ID)+112),
		m.ID, m.Target.String(), m.Data, m.PublishedAt, 1)}
}

// Out-of-order offers.
const (
	gapWait  = 20 * time.Millisecond // how long an offer waits for those before it
	maxAhead = 256                   // the most offers kept waiting
)

// feedFor returns the feed of group, made when s is its first reader, and
// registers s as a reader.
func (h *Hub) feedFor(group string, s *Session) *feed {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[group]
	if f == nil {
		f = &feed{group: group, h: h, readers: make(map[*Session]struct{})}
		h.feeds[group] = f
	}
	f.mu.Lock()
	f.readers[s] = struct{}{}
	f.mu.Unlock()
	return f
}

// leave unregisters s; the feed is dropped with its last reader.
func (f *feed) leave(s *Session) {
	h := f.h
	h.mu.Lock()
	defer h.mu.Unlock()
	f.mu.Lock()
	delete(f.readers, s)
	empty := len(f.readers) == 0
	f.mu.Unlock()
	if empty && h.feeds[f.group] == f {
		delete(h.feeds, f.group)
	}
}

// endLocked returns the position of the last entry held (base when none).
func (f *feed) endLocked() uint64 {
	if n := len(f.entries); n > 0 {
		return f.entries[n-1].Seq
	}
	return f.base
}

// offer hands the feed an entry published on this node (msg nil: only its
// position is known, as for a duplicate). An entry that does not follow
// the ones held waits for those before it for up to gapWait; then, or at
// once when only its position is known, the feed reads the log. Readers
// are woken.
func (f *feed) offer(seq uint64, msg *tether.Message) {
	f.mu.Lock()
	if !f.anchored {
		f.anchored, f.base = true, seq-1
	}
	end := f.endLocked()
	switch {
	case seq <= end:
		f.mu.Unlock()
		return // held already
	case msg != nil && seq == end+1:
		f.appendLocked(newEntry(tether.Entry{Seq: seq, Message: msg}))
		f.catchUpLocked()
	case msg != nil && len(f.ahead) < maxAhead:
		if f.ahead == nil {
			f.ahead = make(map[uint64]*tether.Message)
		}
		f.ahead[seq] = msg
		f.last = max(f.last, seq)
		if f.gap == nil {
			f.gap = time.AfterFunc(gapWait, f.gapPassed)
		}
		f.mu.Unlock()
		return
	default:
		f.last = max(f.last, seq)
	}
	f.wakeLocked()
}

// catchUpLocked appends the entries waiting ahead that now follow.
func (f *feed) catchUpLocked() {
	for len(f.ahead) > 0 {
		end := f.endLocked()
		for s := range f.ahead {
			if s <= end {
				delete(f.ahead, s)
			}
		}
		m, ok := f.ahead[end+1]
		if !ok {
			return
		}
		delete(f.ahead, end+1)
		f.appendLocked(newEntry(tether.Entry{Seq: end + 1, Message: m}))
	}
	if f.gap != nil {
		f.gap.Stop()
		f.gap = nil
	}
}

// gapPassed runs gapWait after an entry was offered out of order: if the
// entries before it have not come, the feed reads the log.
func (f *feed) gapPassed() {
	f.mu.Lock()
	f.gap = nil
	f.wakeLocked()
}

// announce tells the feed that its log holds entries up to seq, published
// on another node: the feed reads them.
func (f *feed) announce(seq uint64) {
	f.mu.Lock()
	if !f.anchored {
		f.anchored, f.base = true, seq-1
	}
	if seq <= f.endLocked() {
		f.mu.Unlock()
		return
	}
	f.last = max(f.last, seq)
	f.wakeLocked()
}

// readToEnd has the feed read its log to the end: entries may have been
// added that nobody announced. A feed not anchored yet does not know where
// its log ends (anchoring it at its start would read the whole log), so
// its readers read the store themselves, each from its own position.
func (f *feed) readToEnd() {
	f.mu.Lock()
	if !f.anchored {
		readers := f.readersLocked()
		f.mu.Unlock()
		for _, s := range readers {
			s.reread(f.group)
		}
		return
	}
	seq := f.endLocked() + 1 // at least one more: read to the end
	f.mu.Unlock()
	f.announce(seq)
}

// wakeLocked unlocks f, starts a read when the feed is behind the log and
// wakes the readers.
func (f *feed) wakeLocked() {
	behind := f.last > f.endLocked() && f.gap == nil
	readers := f.readersLocked()
	f.mu.Unlock()
	if behind {
		f.h.reads.fill(f)
	}
	for _, s := range readers {
		s.wake()
	}
}

// appendLocked holds e, dropping the oldest quarter beyond feedCap.
func (f *feed) appendLocked(e entry) {
	if len(f.entries) == feedCap {
		drop := feedCap / 4
		f.base = f.entries[drop-1].Seq
		n := copy(f.entries, f.entries[drop:])
		clear(f.entries[n:])
		f.entries = f.entries[:n]
	}
	f.entries = append(f.entries, e)
	f.last = max(f.last, e.Seq)
}

func (f *feed) readersLocked() []*Session {
	out := make([]*Session, 0, len(f.readers))
	for s := range f.readers {
		out = append(out, s)
	}
	return out
}

// after returns up to n entries held after pos. need is true when the
// feed cannot answer for pos (before its base): the reader must read the
// store itself. A feed not anchored yet answers nothing: its log has had
// nothing new since its readers read it.
func (f *feed) after(pos uint64, n int) (out []entry, need bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.anchored {
		return nil, false
	}
	if pos < f.base {
		return nil, true
	}
	i := searchSeq(f.entries, pos)
	return append(out, f.entries[i:min(len(f.entries), i+n)]...), false
}

// searchSeq returns the index of the first entry after pos.
func searchSeq(es []entry, pos uint64) int {
	lo, hi := 0, len(es)
	for lo < hi {
		m := (lo + hi) / 2
		if es[m].Seq <= pos {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// readFrom returns where the feed's next read starts, the newest position
// known at this moment, and whether the feed needs a read.
func (f *feed) readFrom() (from, known uint64, need bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.endLocked()
	return end, f.last, f.anchored && f.last > end
}

// filled takes the entries of a read that started after from when the
// newest position known was known; full says the read answered all it was
// asked, so more may follow. It returns whether the feed must read again,
// and wakes the readers.
func (f *feed) filled(from, known uint64, es []tether.Entry, full bool) bool {
	f.mu.Lock()
	// The read holds every entry after from up to its last; the feed may
	// have grown past from meanwhile, so it takes what follows its end.
	for _, e := range es {
		if e.Seq > f.endLocked() && e.Seq > from {
			f.appendLocked(newEntry(e))
		}
	}
	f.catchUpLocked()
	switch end := f.endLocked(); {
	case full:
		f.last = max(f.last, end+1) // more may follow: read on
	case f.last <= known:
		f.last = end // the read saw all that was known when it began (what it missed was purged)
	}
	again := f.last > f.endLocked()
	readers := f.readersLocked()
	f.mu.Unlock()
	for _, s := range readers {
		s.wake()
	}
	return again
}
