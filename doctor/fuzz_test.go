package doctor

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseGoroutines feeds the parser and the analysis anything. Its
// corpus in testdata/fuzz/FuzzParseGoroutines is cut from the real dumps
// of testdata (see TestUpdateFixtures); the whole dumps are added here.
func FuzzParseGoroutines(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseGoroutines(bytes.NewReader(b))
		if err != nil {
			if d != nil {
				t.Fatalf("dump %+v with error %v from a reader that cannot fail", d, err)
			}
			return
		}
		if len(d.Goroutines) == 0 || d.Count() < len(d.Goroutines) {
			t.Fatalf("%d goroutines counted %d", len(d.Goroutines), d.Count())
		}
		for _, g := range d.Goroutines {
			if g.Count < 1 || g.WaitMinutes < 0 || len(g.Frames) > maxFrames {
				t.Fatalf("goroutine %+v", g)
			}
		}
		r := Analyze(d)
		if r.Goroutines != d.Count() {
			t.Fatalf("report counts %d goroutines, dump %d", r.Goroutines, d.Count())
		}
		if err := r.WriteText(io.Discard, TextOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzSocketLine feeds the /proc/net/tcp line parser anything.
func FuzzSocketLine(f *testing.F) {
	f.Add("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode", 8080)
	f.Add("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0000000000000000 100 0 0 10 0", 8080)
	f.Add("   5: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D2F4 08 00000000:00000005 00:00000000 00000000     0        0 0 1", 8080)
	f.Fuzz(func(t *testing.T, line string, port int) {
		var c socketCounter
		c.line(line, port)
		r := c.report(port)
		n := 0
		for _, s := range r.States {
			if s.Count <= 0 || s.RecvQ < 0 || s.SendQ < 0 || s.Local > s.Count || s.Remote > s.Count {
				t.Fatalf("state %+v", s)
			}
			n += s.Count
		}
		if n != r.Total || n > 1 {
			t.Fatalf("total %d, states %+v", r.Total, r.States)
		}
	})
}
