package doctor

import (
	"fmt"
	"strings"
)

// poolKind describes a connection-pool library whose waits doctor
// recognises.
type poolKind struct {
	name string
	// pkgs are substrings of the function names of the library: its pool,
	// its connections and its commands.
	pkgs []string
	// gets are the ends of the names of the functions that wait for a
	// connection, among the library's functions.
	gets []string
	// background are the ends of the names of the library's own
	// goroutines that hold no connection for a caller (openers, reapers).
	background []string
	// fix is the advice for a pool deadlock.
	fix string
}

// poolKinds returns the pool libraries doctor recognises.
func poolKinds() []*poolKind {
	return []*poolKind{
		{
			name: "redigo",
			pkgs: []string{"/redigo/redis."},
			gets: []string{".(*Pool).waitVacantConn", ".(*Pool).GetContext", ".(*Pool).Get", ".(*Pool).get"},
			fix: "never hold a pooled connection while getting another (one round trip, a pipeline or a script instead), " +
				"and give the wait a deadline: Pool.GetContext with a context deadline (Wait: true with Pool.Get waits forever)",
		},
		{
			name:       "go-redis",
			pkgs:       []string{"github.com/redis/go-redis", "github.com/go-redis/redis"},
			gets:       []string{"/internal/pool.(*ConnPool).waitTurn", "/internal/pool.(*ConnPool).Get"},
			background: []string{".(*ConnPool).reaper", ".(*ConnPool).reapStaleConns", ".(*ConnPool).checkMinIdleConns"},
			fix: "never run commands on the client while holding a connection (Conn, Watch or pipeline callbacks), " +
				"and bound the wait with PoolTimeout and context deadlines",
		},
		{
			name:       "database/sql",
			pkgs:       []string{"database/sql."},
			gets:       []string{"database/sql.(*DB).conn"},
			background: []string{"database/sql.(*DB).connectionOpener", "database/sql.(*DB).connectionCleaner", "database/sql.(*DB).connectionResetter"},
			fix: "never query through the *sql.DB while holding a Tx, a Conn or unclosed Rows when MaxOpenConns is set, " +
				"and pass contexts with deadlines",
		},
		{
			name: "pgx",
			pkgs: []string{"github.com/jackc/puddle", "github.com/jackc/pgx"},
			gets: []string{".(*Pool).Acquire", ".(*Pool).acquire"},
			fix:  "never acquire a second connection while holding one, and pass contexts with deadlines to Acquire",
		},
	}
}

// owns reports whether fn belongs to the library.
func (k *poolKind) owns(fn string) bool {
	for _, p := range k.pkgs {
		if strings.Contains(fn, p) {
			return true
		}
	}
	return false
}

// isGet reports whether fn waits for a connection of the library.
func (k *poolKind) isGet(fn string) bool {
	if !k.owns(fn) {
		return false
	}
	for _, g := range k.gets {
		if strings.HasSuffix(fn, g) {
			return true
		}
	}
	return false
}

// isBackground reports whether a stack is one of the library's own
// goroutines.
func (k *poolKind) isBackground(frames []Frame) bool {
	for _, f := range frames {
		for _, b := range k.background {
			if strings.HasSuffix(f.Function, b) {
				return true
			}
		}
	}
	return false
}

// poolHelper reports whether fn is in a package a pool may wait in.
func poolHelper(fn string) bool {
	return strings.HasPrefix(fn, "golang.org/x/sync/")
}

// poolWait reports whether a parked stack waits for a pooled connection:
// a pool get function of a known library with nothing above it but the
// standard library, the pool's own library and semaphores. A get that is
// dialing a new connection is a network wait for the pool.
func poolWait(frames []Frame) (waitInfo, bool) {
	kinds := poolKinds()
	for i, f := range frames {
		var kind *poolKind
		for _, k := range kinds {
			if k.isGet(f.Function) {
				kind = k
				break
			}
		}
		if kind == nil {
			if isStd(f.Function) || poolHelper(f.Function) || ownedByAny(kinds, f.Function) {
				continue
			}
			return waitInfo{}, false
		}
		w := waitInfo{wait: WaitPool, pool: kind, place: i, caller: -1}
		for j := i + 1; j < len(frames); j++ {
			if !kind.owns(frames[j].Function) {
				w.caller, w.place = j, j
				break
			}
		}
		if d := networkDetail(frames[:i]); d != "I/O" || hasNetpoll(frames[:i]) {
			w.wait, w.detail = WaitNetwork, d
		}
		return w, true
	}
	return waitInfo{}, false
}

func ownedByAny(kinds []*poolKind, fn string) bool {
	for _, k := range kinds {
		if k.owns(fn) {
			return true
		}
	}
	return false
}

func hasNetpoll(frames []Frame) bool {
	for _, f := range frames {
		if f.Function == "internal/poll.runtime_pollWait" {
			return true
		}
	}
	return false
}

// poolStats is what analysis gathers about one pool library.
type poolStats struct {
	kind    *poolKind
	waiting int     // goroutines waiting for a connection
	longest int     // longest wait in minutes among them
	inUse   int     // goroutines using a connection (outside a get)
	holding int     // waiters that hold a connection already
	nested  []nests // how the holders got there, most first
	callers map[string]bool
}

// nests counts waiters that hold a connection got in holder and wait for
// another one in waiter.
type nests struct {
	holder, waiter Frame
	count          int
}

// nestedAcquisition finds, in one pool waiter's stack, a frame below its
// pool call that already holds a connection of the same pool. callers
// holds the functions seen calling the pool's get directly, in any
// waiter's stack. The evidence, in order:
//
//  1. a get of the same pool deeper in the stack: the goroutine is inside
//     a get already (a Dial or TestOnBorrow callback that gets again);
//  2. a function that calls the pool's get directly (it is the caller of
//     a get in some waiter's stack) appears deeper in this stack: that
//     call has got its connection and, with the usual defer Close, holds
//     it while the call below it waits for another.
//
// It returns the holding frame.
func nestedAcquisition(frames []Frame, w waitInfo, callers map[string]bool) (Frame, bool) {
	if w.caller < 0 {
		return Frame{}, false
	}
	for j := w.caller + 1; j < len(frames); j++ {
		fn := frames[j].Function
		if w.pool.isGet(fn) {
			for k := j + 1; k < len(frames); k++ {
				if !w.pool.owns(frames[k].Function) {
					return frames[k], true
				}
			}
			return frames[j], true
		}
		if callers[fn] && !w.pool.owns(fn) {
			return frames[j], true
		}
	}
	return Frame{}, false
}

// poolFindings turns the pool statistics into findings.
func poolFindings(stats []*poolStats) []Finding {
	var out []Finding
	for _, s := range stats {
		if s.waiting == 0 {
			continue
		}
		out = append(out, poolFinding(s))
	}
	return out
}

func poolFinding(s *poolStats) Finding {
	name := s.kind.name
	f := Finding{Pool: name, Goroutines: s.waiting, Holding: s.holding, InUse: s.inUse, LongestWaitMinutes: s.longest}
	for i, n := range s.nested {
		if i == 3 {
			f.Details = append(f.Details, fmt.Sprintf("… and %d more ways in", len(s.nested)-3))
			break
		}
		f.Details = append(f.Details, fmt.Sprintf("%s in %s (%s), which then called %s: it waits for a second one at %s",
			subject(n.count, "hold a connection got"), n.holder.Function, shortFileLine(n.holder), n.waiter.Function, shortFileLine(n.waiter)))
	}
	switch {
	case s.holding > 0 && s.inUse == 0:
		f.Kind, f.Severity = "pool-deadlock", SeverityCritical
		f.Title = fmt.Sprintf("nested-acquisition deadlock on a %s pool", name)
		f.Summary = fmt.Sprintf("%s whose connections are all held by goroutines that are themselves waiting — a nested-acquisition deadlock.",
			subject(s.waiting, "wait for a connection from a "+name+" pool"))
		f.Details = append(f.Details, fmt.Sprintf("no goroutine is using a %s connection (none is in a command or in network I/O under %s), so no connection will come back", name, name))
		f.Details = append(f.Details, "fix: "+s.kind.fix)
	case s.holding > 0:
		f.Kind, f.Severity = "pool-nested", SeverityWarning
		f.Title = fmt.Sprintf("nested acquisition on a %s pool: a deadlock waiting for load", name)
		f.Summary = fmt.Sprintf("%s while holding one; %s, so the pool still moves, but once every connection is held by such a goroutine it deadlocks.",
			subject(s.holding, "wait for a connection from a "+name+" pool"), subject(s.inUse, "use a connection"))
		f.Details = append(f.Details, "fix: "+s.kind.fix)
	case s.inUse == 0:
		f.Kind, f.Severity = "pool-stalled", SeverityWarning
		f.Title = fmt.Sprintf("%s pool stalled", name)
		f.Summary = fmt.Sprintf("%s, and no goroutine is using one: the connections are leaked (never returned) or held by goroutines blocked elsewhere.",
			subject(s.waiting, "wait for a connection from a "+name+" pool"))
		f.Details = append(f.Details, "look for goroutines that got a connection and block on something else (a lock, a channel, another pool); no stack here shows one holding a connection directly")
	default:
		f.Kind, f.Severity = "pool-busy", SeverityInfo
		f.Title = fmt.Sprintf("%s pool busy", name)
		f.Summary = fmt.Sprintf("%s while %s: the pool is exhausted but moving, not deadlocked.",
			subject(s.waiting, "wait for a connection from a "+name+" pool"), subject(s.inUse, "use one"))
		f.Details = append(f.Details, "if the waits are long, the pool is too small or commands are slow; a wait without a deadline turns this into a hang")
	}
	return f
}

// goroutines returns "1 goroutine" or "n goroutines".
func goroutines(n int) string {
	if n == 1 {
		return "1 goroutine"
	}
	return fmt.Sprintf("%d goroutines", n)
}

// subject returns "n goroutines wait …", or "1 goroutine waits …" for
// a phrase that starts with a verb in the plural.
func subject(n int, phrase string) string {
	if n != 1 {
		return goroutines(n) + " " + phrase
	}
	verb, rest, _ := strings.Cut(phrase, " ")
	switch verb {
	case "are":
		verb = "is"
	case "have":
		verb = "has"
	default:
		verb += "s"
	}
	return goroutines(n) + " " + strings.TrimSpace(verb+" "+rest)
}
