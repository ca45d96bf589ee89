// Command ppcompare runs panicparse (github.com/maruel/panicparse/v2) on
// goroutine dumps, to compare its grouping with tether doctor's. It is its
// own module, so that panicparse never enters tether's go.mod.
//
//	cd doctor/internal/ppcompare && go run . ../../testdata/*.txt
//
// For each dump it prints how many goroutines panicparse read, how many
// buckets (groups) it makes with each similarity, and the largest buckets
// with their state and the first frame of package main.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/maruel/panicparse/v2/stack"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ppcompare DUMP...")
		os.Exit(2)
	}
	for _, name := range os.Args[1:] {
		if err := compare(name); err != nil {
			fmt.Fprintf(os.Stderr, "ppcompare: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
}

func compare(name string) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	opts := stack.DefaultOpts()
	snap, _, err := stack.ScanSnapshot(bytes.NewReader(b), io.Discard, opts)
	if err != nil && err != io.EOF {
		fmt.Printf("%s: error %v\n", filepath.Base(name), err)
	}
	if snap == nil {
		fmt.Printf("%s: no goroutine found\n\n", filepath.Base(name))
		return nil
	}
	fmt.Printf("%s: %d goroutines\n", filepath.Base(name), len(snap.Goroutines))
	for _, s := range []struct {
		name string
		sim  stack.Similarity
	}{{"ExactLines", stack.ExactLines}, {"AnyPointer", stack.AnyPointer}, {"AnyValue", stack.AnyValue}} {
		fmt.Printf("  %-10s %d buckets\n", s.name, len(snap.Aggregate(s.sim).Buckets))
	}
	for i, bk := range snap.Aggregate(stack.AnyPointer).Buckets {
		if i == 6 {
			break
		}
		sleep := ""
		if bk.SleepMax > 0 {
			sleep = fmt.Sprintf(" %d-%d min", bk.SleepMin, bk.SleepMax)
		}
		fmt.Printf("  %3d  [%s%s]  %s\n", len(bk.IDs), bk.State, sleep, mainFrame(bk.Stack.Calls))
	}
	fmt.Println()
	return nil
}

// mainFrame returns the first call of package main, else the first call.
func mainFrame(calls []stack.Call) string {
	for _, c := range calls {
		if c.Func.IsPkgMain {
			return fmt.Sprintf("%s %s:%d", c.Func.Complete, c.SrcName, c.Line)
		}
	}
	if len(calls) == 0 {
		return "(no frames)"
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s:%d", calls[0].Func.Complete, calls[0].SrcName, calls[0].Line))
}
