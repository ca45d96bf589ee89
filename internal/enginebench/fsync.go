package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// fsyncPages prints what an fsync costs after writing n scattered
// 4 KiB pages of a 256 MiB file, for a few n: the price of the pages a
// bbolt transaction writes (docs/design.md, "Embedded store").
func fsyncPages(dir string, rounds int) error {
	f, err := os.Create(filepath.Join(dir, "fsync"))
	if err != nil {
		return err
	}
	defer f.Close()
	const fileSize, pageSize = 256 << 20, 4096
	if err := f.Truncate(fileSize); err != nil {
		return err
	}
	page := make([]byte, pageSize)
	fmt.Printf("## fsync (os.File.Sync) after writing n random 4 KiB pages of a 256 MiB file (%d rounds each)\n", rounds)
	fmt.Printf("%6s %10s %10s %10s\n", "pages", "p50", "p90", "max")
	for _, n := range []int{1, 20, 40, 70, 105, 170} {
		took := make([]time.Duration, rounds)
		for r := range took {
			start := time.Now()
			for range n {
				if _, err := f.WriteAt(page, rand.Int64N(fileSize/pageSize)*pageSize); err != nil {
					return err
				}
			}
			if err := f.Sync(); err != nil {
				return err
			}
			took[r] = time.Since(start)
		}
		slices.Sort(took)
		fmt.Printf("%6d %10v %10v %10v\n", n, took[rounds/2].Round(time.Microsecond),
			took[rounds*9/10].Round(time.Microsecond), took[rounds-1].Round(time.Microsecond))
	}
	return nil
}
