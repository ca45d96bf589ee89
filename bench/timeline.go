package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Point is one second of a run.
type Point struct {
	T         int     `json:"t"`         // second since the run started
	Open      int64   `json:"open"`      // connections open at the end of the second
	Published int64   `json:"published"` // messages accepted in the second
	Delivered int64   `json:"delivered"` // first receipts in the second
	P50       float64 `json:"p50_ms,omitempty"`
	P99       float64 `json:"p99_ms,omitempty"`
	Max       float64 `json:"max_ms,omitempty"`
}

// maxTimeline bounds the seconds a timeline keeps (a day's worth at most).
const maxTimeline = int(MaxDuration/time.Second) + 3600

// timeline bins a run's figures by second. Not safe for concurrent use.
type timeline struct {
	start time.Time
	bins  []tbin
}

type tbin struct {
	open      int64
	openSet   bool
	published int64
	delivered int64
	lat       *hdrhistogram.Histogram
}

// bin returns the bin of time t; nil outside the timeline.
func (tl *timeline) bin(t time.Time) *tbin {
	i := int(t.Sub(tl.start) / time.Second)
	if i < 0 || i >= maxTimeline {
		return nil
	}
	if i >= len(tl.bins) {
		tl.bins = append(tl.bins, make([]tbin, i+1-len(tl.bins))...)
	}
	return &tl.bins[i]
}

func (tl *timeline) published(t time.Time, n int) {
	if b := tl.bin(t); b != nil {
		b.published += int64(n)
	}
}

// progress adds what a worker reported at t: deliveries since its last
// report and their latencies; open is the sum over workers.
func (tl *timeline) progress(t time.Time, delivered, open int64, lat *hdrhistogram.Histogram) {
	b := tl.bin(t)
	if b == nil {
		return
	}
	b.delivered += delivered
	b.open, b.openSet = open, true
	if lat != nil && lat.TotalCount() > 0 {
		if b.lat == nil {
			b.lat = newHist()
		}
		b.lat.Merge(lat)
	}
}

// points returns the timeline; a second without a report keeps the open
// count of the one before.
func (tl *timeline) points() []Point {
	out := make([]Point, len(tl.bins))
	var open int64
	for i, b := range tl.bins {
		if b.openSet {
			open = b.open
		}
		p := Point{T: i, Open: open, Published: b.published, Delivered: b.delivered}
		if b.lat != nil {
			pc := percentiles(b.lat)
			p.P50, p.P99, p.Max = pc.P50, pc.P99, pc.Max
		}
		out[i] = p
	}
	return out
}
