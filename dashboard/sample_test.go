package dashboard

import (
	"math"
	"testing"
)

func TestHistQuantile(t *testing.T) {
	h := hist{bounds: []float64{1, 2, 4}, counts: []float64{10, 20, 20}, count: 20}
	for _, tc := range []struct {
		q, want float64
	}{
		{0.5, 1},       // rank 10: the top of the first bucket
		{0.25, 0.5},    // rank 5: half way through [0, 1]
		{0.99, 1.98},   // rank 19.8: in (1, 2]
		{0.75, 1.5},    // rank 15
		{0.001, 0.002}, // rank 0.02
	} {
		got, ok := h.quantile(tc.q)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, %v; want %v", tc.q, got, ok, tc.want)
		}
	}

	// Observations above the highest bound give that bound.
	h.count = 30
	if got, _ := h.quantile(0.99); got != 4 {
		t.Errorf("quantile in +Inf bucket = %v, want 4", got)
	}
	// An empty bucket is skipped.
	h = hist{bounds: []float64{1, 2, 4}, counts: []float64{0, 0, 10}, count: 10}
	if got, _ := h.quantile(0.5); got != 3 {
		t.Errorf("quantile with empty buckets = %v, want 3", got)
	}
	if _, ok := (hist{bounds: []float64{1}, counts: []float64{0}}).quantile(0.5); ok {
		t.Error("quantile of an empty histogram is ok, want not ok")
	}
}

func TestHistSub(t *testing.T) {
	prev := hist{bounds: []float64{1, 2}, counts: []float64{1, 3}, count: 4, sum: 5}
	cur := hist{bounds: []float64{1, 2}, counts: []float64{2, 7}, count: 9, sum: 12}
	d := cur.sub(prev)
	if d.count != 5 || d.sum != 7 || d.counts[0] != 1 || d.counts[1] != 4 {
		t.Errorf("sub = %+v", d)
	}
	if cur.counts[1] != 7 {
		t.Error("sub changed its receiver")
	}
	// A reset (fewer observations) counts from zero.
	if d := prev.sub(cur); d.count != 4 {
		t.Errorf("sub after reset: count %v, want 4", d.count)
	}
	// A reading with other buckets counts from zero.
	if d := cur.sub(hist{bounds: []float64{1}, counts: []float64{1}, count: 1}); d.count != 9 {
		t.Errorf("sub with other buckets: count %v, want 9", d.count)
	}
}

func TestRate(t *testing.T) {
	if got := rate(30, 10, 2); got != 10 {
		t.Errorf("rate = %v, want 10", got)
	}
	if got := rate(4, 10, 2); got != 2 {
		t.Errorf("rate after reset = %v, want 2", got)
	}
	if got := rate(4, 1, 0); got != 0 {
		t.Errorf("rate over no time = %v, want 0", got)
	}
}
