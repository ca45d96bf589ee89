package client

import (
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether/wire"
)

func TestBackoffFullJitter(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, time.Second
	ceils := []time.Duration{lo, 2 * lo, 4 * lo, 8 * lo, hi, hi, hi}
	for range 200 {
		b := backoff{min: lo, max: hi}
		for n, ceil := range ceils {
			if d := b.next(); d < 0 || d >= ceil {
				t.Fatalf("attempt %d: delay %v, want in [0, %v)", n, d, ceil)
			}
		}
		b.reset()
		if d := b.next(); d >= lo {
			t.Fatalf("after reset: delay %v, want below %v", d, lo)
		}
	}
}

func TestBackoffJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := backoff{min: time.Second, max: time.Minute}
		seen[b.next()] = true
	}
	if len(seen) < 40 {
		t.Errorf("%d distinct first delays in 50 clients, want them spread", len(seen))
	}
}

func TestDedupEvictsOldest(t *testing.T) {
	d := newDedup(3)
	for _, id := range []string{"a", "b", "c", "a", "d"} {
		d.add(id)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": true, "e": false} {
		if got := d.has(id); got != want {
			t.Errorf("has(%q) = %v, want %v", id, got, want)
		}
	}
	off := newDedup(-1)
	off.add("a")
	if off.has("a") {
		t.Error("a disabled set remembers ids")
	}
}

func TestAckQueueBounded(t *testing.T) {
	q := newAckQueue()
	for i := range maxPendingAcks + 5 {
		q.push(string(rune('a' + i%26)))
	}
	if got := q.len(); got != maxPendingAcks {
		t.Errorf("len = %d, want %d", got, maxPendingAcks)
	}
	if got := q.takeDropped(); got != 5 {
		t.Errorf("dropped = %d, want 5", got)
	}
	if got := len(q.take(wire.MaxAckIDs)); got != wire.MaxAckIDs {
		t.Errorf("take returned %d ids, want %d", got, wire.MaxAckIDs)
	}
}

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		resp string
		want time.Duration
	}{
		{
			resp: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
			want: 7 * time.Second,
		},
		{
			resp: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
			want: 0,
		},
		{
			resp: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n",
			want: 0,
		},
	} {
		if got := parseRetryAfter(strings.NewReader(tc.resp)); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.resp, got, tc.want)
		}
	}
}
