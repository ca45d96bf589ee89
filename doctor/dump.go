// Package doctor diagnoses Go programs from the outside: it reads
// goroutine dumps of any Go program and says, in plain words, where the
// goroutines wait and whether they wait for each other (a pool deadlock of
// the kind SPEC section 2 describes); and it counts the TCP sockets of a
// port by state, like ss. It is the library behind `tether doctor`.
//
// Package doctor reads only what it is given: it never attaches to a
// process. Its parsers accept truncated and damaged input and never panic.
package doctor

import "strings"

// Format is the form a goroutine dump was written in.
type Format string

// Formats of goroutine dumps.
const (
	// FormatCounted is pprof.Lookup("goroutine").WriteTo(w, 1), or
	// /debug/pprof/goroutine?debug=1: "goroutine profile: total N", then
	// one record per distinct stack with its count. It has no goroutine
	// ids, no wait states and no wait minutes, and it hides the runtime
	// frames at the top of each stack.
	FormatCounted Format = "debug=1"
	// FormatTraceback is WriteTo(w, 2), /debug/pprof/goroutine?debug=2 or
	// runtime.Stack(buf, true): one block per goroutine, with its state.
	FormatTraceback Format = "debug=2"
	// FormatCrash is what the runtime prints when a program panics, hits
	// a fatal error or receives SIGQUIT: the blocks of FormatTraceback
	// after a header ("panic: …", "SIGQUIT: quit", "fatal error: …"),
	// often with runtime frames, frame pointers and registers.
	FormatCrash Format = "crash"
)

// Dump is a parsed goroutine dump.
type Dump struct {
	Format Format
	// Header holds the lines before the first goroutine of a crash dump:
	// "panic: …", "fatal error: …", "SIGQUIT: quit", at most
	// maxHeaderLines of them.
	Header []string
	// Total is the number of goroutines the dump says it holds ("goroutine
	// profile: total N"); 0 when the format does not say.
	Total int
	// Goroutines holds one entry per goroutine of a traceback or crash
	// dump, and one per record of a counted dump (see Goroutine.Count).
	// Goroutines with identical stacks share one Frames slice.
	Goroutines []Goroutine
	// Truncated reports that the input ended inside a goroutine, or held
	// fewer goroutines than Total.
	Truncated bool
	// Skipped counts the non-blank lines that were not understood.
	Skipped int
}

// Count returns the number of goroutines in the dump: the sum of the
// counts of its entries.
func (d *Dump) Count() int {
	n := 0
	for i := range d.Goroutines {
		n += d.Goroutines[i].Count
	}
	return n
}

// Goroutine is one goroutine of a dump, or, in a counted dump, Count
// goroutines with the same stack.
type Goroutine struct {
	ID    int64 // 0 in a counted dump
	Count int   // 1, or the count of a counted record
	// State is the wait reason or status the runtime printed: "chan
	// receive", "IO wait", "sync.Mutex.Lock", "select", "running", …, with
	// any " (scan)", " (durable)" or " (leaked)" mark. "" in a counted
	// dump.
	State string
	// WaitMinutes is how long the goroutine has been blocked, as the
	// runtime printed it ("[select, 12 minutes]"); 0 when not printed. The
	// runtime prints it only past one minute, and only once a GC has run
	// since the goroutine blocked.
	WaitMinutes    int
	LockedToThread bool
	Labels         map[string]string // pprof labels, when the dump shows them
	Frames         []Frame           // innermost call first
	// Elided reports that the runtime left frames out of the stack
	// ("...N frames elided...").
	Elided    bool
	CreatedBy *Frame // the go statement that started it; nil when unknown
	CreatorID int64  // the goroutine that ran that go statement; 0 when unknown
}

// Frame is one call of a stack.
type Frame struct {
	// Function is the fully qualified function name as printed:
	// "github.com/gomodule/redigo/redis.(*Pool).Get", "main.main.func1".
	Function string `json:"function"`
	File     string `json:"file,omitempty"` // "" when the dump does not say
	Line     int    `json:"line,omitempty"` // 0 when the dump does not say
}

// Package returns the import path of the frame's function:
// "github.com/gomodule/redigo/redis" for
// "github.com/gomodule/redigo/redis.(*Pool).Get".
func (f Frame) Package() string { return packageOf(f.Function) }

// packageOf returns the import path part of a function name.
func packageOf(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	if dot < 0 {
		return fn
	}
	return fn[:slash+1+dot]
}

// isStdRoot reports whether root is the first path element of a package
// of the standard library.
func isStdRoot(root string) bool {
	switch root {
	case "archive", "bufio", "bytes", "cmp", "compress", "container", "context",
		"crypto", "database", "debug", "embed", "encoding", "errors", "expvar",
		"flag", "fmt", "go", "hash", "html", "image", "index", "internal", "io",
		"iter", "log", "maps", "math", "mime", "net", "os", "path", "plugin",
		"reflect", "regexp", "runtime", "slices", "sort", "strconv", "strings",
		"structs", "sync", "syscall", "testing", "text", "time", "unicode",
		"unique", "unsafe", "vendor", "weak",
		"panic": // runtime.gopanic prints as "panic"
		return true
	}
	return false
}

// isStd reports whether fn is a function of the standard library.
func isStd(fn string) bool {
	root := fn
	if i := strings.IndexAny(root, "/."); i >= 0 {
		root = root[:i]
	}
	return isStdRoot(root)
}

// isRuntime reports whether fn is part of the runtime's machinery.
func isRuntime(fn string) bool {
	return strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/runtime/")
}
