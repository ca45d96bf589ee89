package doctor

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// mustReadFixture returns a dump of testdata (see dumper_test.go for how
// they are made).
func mustReadFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// mustParse parses b and fails the test on any error.
func mustParse(tb testing.TB, b []byte) *Dump {
	tb.Helper()
	d, err := ParseGoroutines(bytes.NewReader(b))
	if err != nil {
		tb.Fatalf("ParseGoroutines: %v", err)
	}
	return d
}

// fixtures lists the dumps of testdata with their form.
var fixtures = []struct {
	name   string
	format Format
}{
	{"redigo-deadlock.debug1.txt", FormatCounted},
	{"redigo-deadlock.debug2.txt", FormatTraceback},
	{"redigo-deadlock.sigquit.txt", FormatCrash},
	{"redigo-busy.debug1.txt", FormatCounted},
	{"redigo-busy.debug2.txt", FormatTraceback},
	{"mutex.debug1.txt", FormatCounted},
	{"mutex.debug2.txt", FormatTraceback},
	{"waits.debug1.txt", FormatCounted},
	{"waits.debug2.txt", FormatTraceback},
	{"waits.panic.txt", FormatCrash},
}

func TestParseFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			b := mustReadFixture(t, fx.name)
			d := mustParse(t, b)
			if d.Format != fx.format {
				t.Errorf("format %q, want %q", d.Format, fx.format)
			}
			if d.Truncated {
				t.Errorf("truncated, want a whole dump")
			}
			if fx.format == FormatCounted && d.Count() != d.Total {
				t.Errorf("%d goroutines, the dump announces %d", d.Count(), d.Total)
			}
			if fx.format != FormatCounted {
				// One goroutine per "goroutine N [" line.
				want := bytes.Count(b, []byte("\ngoroutine "))
				if bytes.HasPrefix(b, []byte("goroutine ")) {
					want++
				}
				if got := len(d.Goroutines); got != want {
					t.Errorf("%d goroutines, want %d", got, want)
				}
			}
			if fx.format != FormatCrash && d.Skipped != 0 {
				t.Errorf("%d lines skipped, want 0", d.Skipped)
			}
			for i, g := range d.Goroutines {
				if g.Count < 1 || (len(g.Frames) == 0 && g.ID != 0) {
					t.Fatalf("goroutine %d: count %d, %d frames", i, g.Count, len(g.Frames))
				}
				for _, f := range g.Frames {
					if f.Function == "" || f.File == "" || f.Line <= 0 {
						t.Fatalf("goroutine %d: incomplete frame %+v", i, f)
					}
				}
			}
		})
	}
}

// goroutineWith returns the first goroutine of d with a frame of fn.
func goroutineWith(tb testing.TB, d *Dump, fn string) Goroutine {
	tb.Helper()
	for _, g := range d.Goroutines {
		for _, f := range g.Frames {
			if f.Function == fn {
				return g
			}
		}
	}
	tb.Fatalf("no goroutine calls %s", fn)
	return Goroutine{}
}

func TestParseTracebackDetails(t *testing.T) {
	for _, name := range []string{"waits.debug2.txt", "waits.panic.txt"} {
		t.Run(name, func(t *testing.T) {
			d := mustParse(t, mustReadFixture(t, name))
			if g := goroutineWith(t, d, "main.pinned"); !g.LockedToThread || g.State != "chan receive" {
				t.Errorf("main.pinned: locked %v, state %q; want locked to thread, chan receive", g.LockedToThread, g.State)
			}
			if g := goroutineWith(t, d, "main.deep"); !g.Elided || len(g.Frames) < 50 {
				t.Errorf("main.deep: elided %v, %d frames; want elided and at least 50", g.Elided, len(g.Frames))
			}
			g := goroutineWith(t, d, "main.acceptLoop.func1")
			if g.Labels["role"] != "reader" || g.Labels["conn"] != "tcp" {
				t.Errorf("labels %v, want role=reader conn=tcp", g.Labels)
			}
			if g.CreatedBy == nil || g.CreatedBy.Function != "main.acceptLoop" || g.CreatedBy.Line == 0 || g.CreatorID == 0 {
				t.Errorf("created by %+v in goroutine %d, want main.acceptLoop with a line and a creator", g.CreatedBy, g.CreatorID)
			}
			if g := goroutineWith(t, d, "main.waitNil"); g.State != "chan receive (nil chan)" {
				t.Errorf("main.waitNil: state %q", g.State)
			}
		})
	}
	d := mustParse(t, mustReadFixture(t, "waits.panic.txt"))
	if len(d.Header) == 0 || !strings.HasPrefix(d.Header[0], "panic: dumper: asked to panic") {
		t.Errorf("header %q, want the panic", d.Header)
	}
	d = mustParse(t, mustReadFixture(t, "redigo-deadlock.sigquit.txt"))
	if len(d.Header) == 0 || d.Header[0] != "SIGQUIT: quit" {
		t.Errorf("header %q, want SIGQUIT: quit", d.Header)
	}
	if g := goroutineWith(t, d, "runtime.gcBgMarkWorker"); g.State == "" {
		t.Errorf("GC worker without a state")
	}
}

func TestParseWaitMinutes(t *testing.T) {
	// The fixtures were written after holding their state for over a
	// minute, past a GC: the runtime prints the wait minutes.
	for _, name := range []string{"redigo-deadlock.debug2.txt", "redigo-deadlock.sigquit.txt", "mutex.debug2.txt"} {
		d := mustParse(t, mustReadFixture(t, name))
		longest := 0
		for _, g := range d.Goroutines {
			longest = max(longest, g.WaitMinutes)
		}
		if longest < 1 {
			t.Errorf("%s: longest wait %d minutes, want at least 1", name, longest)
		}
	}
}

func TestParseCountedDetails(t *testing.T) {
	d := mustParse(t, mustReadFixture(t, "waits.debug1.txt"))
	g := goroutineWith(t, d, "main.acceptLoop.func1")
	if g.Labels["role"] != "reader" || g.ID != 0 || g.State != "" || g.CreatedBy != nil {
		t.Errorf("labels %v, id %d, state %q, created by %v; want role=reader and nothing else", g.Labels, g.ID, g.State, g.CreatedBy)
	}
	d = mustParse(t, mustReadFixture(t, "redigo-deadlock.debug1.txt"))
	if g := goroutineWith(t, d, "main.(*store).markOnline"); g.Count != fixtureMaxActive {
		t.Errorf("markOnline record counts %d goroutines, want %d", g.Count, fixtureMaxActive)
	}
}

// TestParseSelf parses a dump of this very test binary.
func TestParseSelf(t *testing.T) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	d := mustParse(t, buf)
	if d.Format != FormatTraceback || d.Skipped != 0 || d.Truncated {
		t.Errorf("format %q, %d skipped, truncated %v", d.Format, d.Skipped, d.Truncated)
	}
	g := goroutineWith(t, d, "github.com/tetherpush/tether/doctor.TestParseSelf")
	if g.State != "running" {
		t.Errorf("state %q, want running", g.State)
	}
}

// TestParseTruncated cuts every fixture at many places: the parser must
// return what it read, never more, and say the dump is cut when it ends
// in the middle of a line.
func TestParseTruncated(t *testing.T) {
	for _, fx := range fixtures {
		b := mustReadFixture(t, fx.name)
		full := mustParse(t, b)
		for off := 1; off < len(b); off += 97 {
			d, err := ParseGoroutines(bytes.NewReader(b[:off]))
			if errors.Is(err, ErrNoGoroutines) {
				continue
			}
			if err != nil {
				t.Fatalf("%s cut at %d: %v", fx.name, off, err)
			}
			if d.Count() > full.Count() {
				t.Fatalf("%s cut at %d: %d goroutines, the whole dump has %d", fx.name, off, d.Count(), full.Count())
			}
			inGoroutines := off < bytes.LastIndex(b, []byte("\n\n")) || fx.format != FormatCrash
			if midLine := b[off-1] != '\n'; midLine && inGoroutines && !d.Truncated {
				t.Fatalf("%s cut at %d (%q): not marked truncated", fx.name, off, lastLine(b[:off]))
			}
		}
	}
}

func lastLine(b []byte) string {
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return string(b[i+1:])
	}
	return string(b)
}

func TestParseNotADump(t *testing.T) {
	for _, in := range []string{"", "\n\n", "hello world\n", "goroutine profile: total 3\n", "{\"json\": true}"} {
		if _, err := ParseGoroutines(strings.NewReader(in)); !errors.Is(err, ErrNoGoroutines) {
			t.Errorf("%q: error %v, want ErrNoGoroutines", in, err)
		}
	}
}

// TestParseReadError checks that a failing reader gives the goroutines
// read so far with the error.
func TestParseReadError(t *testing.T) {
	b := mustReadFixture(t, "redigo-deadlock.debug2.txt")
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(boom))
	d, err := ParseGoroutines(r)
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
	if d == nil || len(d.Goroutines) == 0 || !d.Truncated {
		t.Fatalf("dump %+v, want the goroutines read so far, truncated", d)
	}
	if _, err := ParseGoroutines(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
}

// TestParseSharesStacks checks that identical stacks share one slice.
func TestParseSharesStacks(t *testing.T) {
	d := mustParse(t, mustReadFixture(t, "mutex.debug2.txt"))
	stacks := make(map[*Frame]bool)
	for _, g := range d.Goroutines {
		if len(g.Frames) > 0 {
			stacks[&g.Frames[0]] = true
		}
	}
	if len(stacks) >= len(d.Goroutines)/2 {
		t.Errorf("%d stacks kept for %d goroutines, want them shared", len(stacks), len(d.Goroutines))
	}
}

func TestParseLongLine(t *testing.T) {
	in := "goroutine 1 [running]:\nmain.main(" + strings.Repeat("0x1, ", 100000) + ")\n\tmain.go:1 +0x1\n"
	d, err := ParseGoroutines(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	// The cut function line is not understood; the goroutine survives.
	if len(d.Goroutines) != 1 || d.Goroutines[0].State != "running" {
		t.Fatalf("goroutines %+v", d.Goroutines)
	}
}
