package doctor

import "strings"

// Wait says what a goroutine waits for.
type Wait string

// Kinds of wait.
const (
	WaitPool      Wait = "pool"          // a connection from a connection pool (see Place.Pool)
	WaitMutex     Wait = "mutex"         // sync.Mutex.Lock
	WaitRLock     Wait = "rwmutex-rlock" // sync.RWMutex.RLock
	WaitLock      Wait = "rwmutex-lock"  // sync.RWMutex.Lock
	WaitWaitGroup Wait = "waitgroup"     // sync.WaitGroup.Wait
	WaitCond      Wait = "cond"          // sync.Cond.Wait
	WaitReceive   Wait = "chan-receive"  // receive from a channel
	WaitSend      Wait = "chan-send"     // send on a channel
	WaitSelect    Wait = "select"        // a select statement
	WaitForever   Wait = "forever"       // a nil channel or an empty select: nothing can wake it
	WaitNetwork   Wait = "network"       // the network poller: a read, write, accept or dial (see Detail)
	WaitSleep     Wait = "sleep"         // time.Sleep
	WaitSyscall   Wait = "syscall"       // in a system call
	WaitSemaphore Wait = "semaphore"     // another runtime semaphore
	WaitRuntime   Wait = "runtime"       // a goroutine of the runtime itself (GC, finalizers)
	WaitNone      Wait = "running"       // running or runnable: not waiting
	WaitUnknown   Wait = "unknown"       // the dump does not say (debug=1 hides channel waits)
)

// parked reports whether w is a wait of a parked program goroutine: one
// that counts for the places where goroutines block.
func (w Wait) parked() bool {
	return w != WaitNone && w != WaitRuntime && w != WaitSyscall
}

// label returns a short name for a wait, for tables: "pool get (redigo)",
// "network read", "chan receive".
func label(w Wait, detail, pool string) string {
	switch w {
	case WaitPool:
		return "pool get (" + pool + ")"
	case WaitMutex:
		return "Mutex.Lock"
	case WaitRLock:
		return "RWMutex.RLock"
	case WaitLock:
		return "RWMutex.Lock"
	case WaitWaitGroup:
		return "WaitGroup.Wait"
	case WaitCond:
		return "Cond.Wait"
	case WaitReceive:
		return "chan receive"
	case WaitSend:
		return "chan send"
	case WaitForever:
		return "blocked forever (" + detail + ")"
	case WaitNetwork:
		if pool != "" {
			return "network " + detail + " (" + pool + ")"
		}
		return "network " + detail
	case WaitSleep:
		return "time.Sleep"
	case WaitUnknown:
		if detail != "" {
			return detail
		}
		return "unknown"
	}
	return string(w)
}

// phrase returns what n goroutines with this wait do, for sentences: "wait
// to lock a sync.Mutex".
func phrase(w Wait, detail, pool string) string {
	switch w {
	case WaitPool:
		return "wait for a connection from a " + pool + " pool"
	case WaitMutex:
		return "wait to lock a sync.Mutex"
	case WaitRLock:
		return "wait for a read lock on a sync.RWMutex"
	case WaitLock:
		return "wait to lock a sync.RWMutex"
	case WaitWaitGroup:
		return "wait for a sync.WaitGroup"
	case WaitCond:
		return "wait on a sync.Cond"
	case WaitReceive:
		return "wait to receive from a channel"
	case WaitSend:
		return "wait to send on a channel"
	case WaitSelect:
		return "wait in a select"
	case WaitForever:
		return "wait forever (" + detail + ")"
	case WaitNetwork:
		return "wait for the network (" + detail + ")"
	case WaitSleep:
		return "sleep"
	case WaitSyscall:
		return "are in a system call"
	case WaitSemaphore:
		return "wait on a runtime semaphore"
	case WaitRuntime:
		return "belong to the runtime"
	case WaitNone:
		return "are running or runnable"
	}
	return "are parked for a reason the dump does not give"
}

// waitInfo is what classify found out about one stack.
type waitInfo struct {
	wait   Wait
	detail string    // network: "read", "write", "accept", "dial", "I/O"; forever: "nil channel", …
	pool   *poolKind // WaitPool, or a dial for a pool
	place  int       // index of the frame where it blocks; -1 for none
	caller int       // WaitPool: index of the frame that called the pool; -1 for none
}

// classify says what g waits for and where.
func classify(g *Goroutine) waitInfo {
	w := waitInfo{place: placeIndex(g.Frames), caller: -1}
	state := baseState(g.State)
	switch {
	case isRuntimeGoroutine(g):
		w.wait = WaitRuntime
		return w
	case state == "running" || state == "runnable" || state == "preempted" || isDumper(g.Frames):
		w.wait = WaitNone
		return w
	case state == "syscall":
		w.wait = WaitSyscall
		return w
	}
	if pw, ok := poolWait(g.Frames); ok {
		return pw
	}
	w.wait, w.detail = waitFromFrames(g.Frames)
	if sw, sd := waitFromState(state); sw != "" && !specific(w.wait) {
		w.wait, w.detail = sw, sd
	}
	if w.wait == WaitNetwork && w.detail == "" {
		w.detail = networkDetail(g.Frames)
	}
	if w.wait == "" {
		w.wait = WaitUnknown
		if g.State != "" {
			w.detail = g.State
		}
	}
	return w
}

// specific reports whether w, found from the frames, says more than the
// state: an RWMutex's writer waits in state "sync.Mutex.Lock", a
// WaitGroup in state "semacquire".
func specific(w Wait) bool {
	switch w {
	case WaitRLock, WaitLock, WaitWaitGroup, WaitCond, WaitMutex:
		return true
	}
	return false
}

// baseState drops the marks the runtime adds to a state.
func baseState(s string) string {
	for _, mark := range []string{" (scan)", " (durable)", " (leaked)"} {
		s = strings.TrimSuffix(s, mark)
	}
	return s
}

// waitFromState maps the state of a traceback to a wait; "" when the
// state does not say.
func waitFromState(state string) (Wait, string) {
	switch state {
	case "chan receive (nil chan)", "chan send (nil chan)":
		return WaitForever, "nil channel"
	case "select (no cases)":
		return WaitForever, "empty select"
	case "IO wait":
		return WaitNetwork, ""
	case "sleep":
		return WaitSleep, ""
	case "sync.Mutex.Lock":
		return WaitMutex, ""
	case "sync.RWMutex.RLock":
		return WaitRLock, ""
	case "sync.RWMutex.Lock":
		return WaitLock, ""
	case "sync.WaitGroup.Wait":
		return WaitWaitGroup, ""
	case "sync.Cond.Wait":
		return WaitCond, ""
	case "semacquire":
		return WaitSemaphore, ""
	}
	switch {
	case strings.HasPrefix(state, "chan receive"):
		return WaitReceive, ""
	case strings.HasPrefix(state, "chan send"):
		return WaitSend, ""
	case strings.HasPrefix(state, "select"):
		return WaitSelect, ""
	}
	return "", ""
}

// waitFromFrames finds the wait from the standard-library frames at the
// top of a stack: the only clue in a debug=1 dump, and a finer one than
// the state for locks. "" when they do not say.
func waitFromFrames(frames []Frame) (Wait, string) {
	var found Wait
	best := 0
	for _, f := range frames {
		if !isStd(f.Function) {
			break
		}
		if w, rank := frameWait(f.Function); rank > best {
			found, best = w, rank
		}
	}
	if found == WaitForever {
		return found, "empty select"
	}
	return found, ""
}

// frameWait returns the wait a function of the standard library means,
// and its rank: a higher rank is more specific (RWMutex.Lock and
// WaitGroup.Wait call down into the Mutex and semaphore functions). Rank
// 0 means none.
func frameWait(fn string) (Wait, int) {
	switch fn {
	case "sync.(*RWMutex).RLock":
		return WaitRLock, 9
	case "sync.(*RWMutex).Lock":
		return WaitLock, 9
	case "sync.(*WaitGroup).Wait":
		return WaitWaitGroup, 9
	case "sync.(*Cond).Wait":
		return WaitCond, 9
	case "sync.(*Mutex).Lock", "internal/sync.(*Mutex).Lock", "sync.(*Mutex).lockSlow",
		"internal/sync.(*Mutex).lockSlow", "sync.runtime_SemacquireMutex", "internal/sync.runtime_SemacquireMutex":
		return WaitMutex, 5
	case "time.Sleep":
		return WaitSleep, 5
	case "internal/poll.runtime_pollWait":
		return WaitNetwork, 5
	case "runtime.chanrecv1", "runtime.chanrecv2":
		return WaitReceive, 5
	case "runtime.chansend1":
		return WaitSend, 5
	case "runtime.selectgo":
		return WaitSelect, 5
	case "runtime.block":
		return WaitForever, 5
	}
	if strings.HasSuffix(fn, "sync.runtime_Semacquire") || strings.HasPrefix(fn, "sync.runtime_Semacquire") {
		return WaitSemaphore, 1
	}
	return "", 0
}

// networkDetail says which network operation a netpoll wait is.
func networkDetail(frames []Frame) string {
	for _, f := range frames {
		fn := f.Function
		switch {
		case strings.HasPrefix(fn, "net.(*sysDialer)") || strings.HasPrefix(fn, "net.(*netFD).connect") || strings.HasPrefix(fn, "net.(*Dialer)"):
			return "dial"
		case strings.HasPrefix(fn, "internal/poll.(*FD).Accept"):
			return "accept"
		case strings.HasPrefix(fn, "internal/poll.(*FD).Read") || strings.HasPrefix(fn, "internal/poll.(*FD).Recv"):
			return "read"
		case strings.HasPrefix(fn, "internal/poll.(*FD).Write") || strings.HasPrefix(fn, "internal/poll.(*FD).Send"):
			return "write"
		}
	}
	return "I/O"
}

// placeIndex returns the index of the frame where a goroutine blocks: the
// first frame outside the standard library, else the outermost frame
// that is not the runtime's; -1 for no frame.
func placeIndex(frames []Frame) int {
	for i, f := range frames {
		if !isStd(f.Function) {
			return i
		}
	}
	for i := len(frames) - 1; i >= 0; i-- {
		if !isRuntime(frames[i].Function) {
			return i
		}
	}
	return len(frames) - 1
}

// isRuntimeGoroutine reports whether g is one of the runtime's own
// goroutines (GC workers, the scavenger, finalizers, a thread's g0).
func isRuntimeGoroutine(g *Goroutine) bool {
	if len(g.Frames) == 0 {
		return g.ID == 0 && g.Count == 1 && g.State != ""
	}
	for _, f := range g.Frames {
		if !isRuntime(f.Function) {
			return false
		}
	}
	return true
}

// isDumper reports whether the stack is the goroutine that wrote the
// dump.
func isDumper(frames []Frame) bool {
	for _, f := range frames {
		switch f.Function {
		case "runtime/pprof.writeGoroutineStacks", "runtime/pprof.writeRuntimeProfile", "runtime.Stack":
			return true
		}
		if !isStd(f.Function) {
			return false
		}
	}
	return false
}
