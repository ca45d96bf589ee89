package redis

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

func TestSpans(t *testing.T) {
	for _, spans := range [][]tether.Span{nil, {{From: 0}}, {{From: 3, To: 9}, {From: 12, To: 0}}, {{From: 1 << 50, To: 1<<50 + 1}}} {
		got, err := decodeSpans(encodeSpans(spans))
		if err != nil || !reflect.DeepEqual(got, spans) {
			t.Errorf("decodeSpans(encodeSpans(%v)) = %v, %v", spans, got, err)
		}
	}
	for _, bad := range []string{"1", "1:x", ":", "1:2,", "-1:2"} {
		if _, err := decodeSpans(bad); err == nil {
			t.Errorf("decodeSpans(%q) succeeded", bad)
		}
	}
}

func TestHistMember(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 123_456_789, time.UTC)
	r := tether.Range{From: 7, To: 42, State: tether.StateAcked, Attempts: 2, Since: at, At: at.Add(time.Millisecond)}
	got, err := decodeHist(histMember(r))
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("decodeHist(histMember(%+v)) = %+v, %v", r, got, err)
	}
}

func TestIDs(t *testing.T) {
	seq, n, err := parseIDs("12|100")
	if err != nil || seq != 12 || n != 100 {
		t.Errorf("parseIDs = %d, %d, %v", seq, n, err)
	}
	for _, bad := range []string{"", "12", "x|1", "1|x"} {
		if _, _, err := parseIDs(bad); err == nil {
			t.Errorf("parseIDs(%q) succeeded", bad)
		}
	}
}

// TestTimeKey: byte order is time order, negative times included, and
// splitMs is exact floor division.
func TestTimeKey(t *testing.T) {
	times := []int64{math.MinInt64, -1e6 - 1, -1, 0, 1, 999_999, 1e6, math.MaxInt64}
	for i, a := range times {
		got, ok := parseTimeKey(timeKey(a))
		if !ok || got != a {
			t.Errorf("parseTimeKey(timeKey(%d)) = %d, %v", a, got, ok)
		}
		if i > 0 && timeKey(times[i-1]) >= timeKey(a) {
			t.Errorf("timeKey(%d) >= timeKey(%d)", times[i-1], a)
		}
		ms, sub := splitMs(a)
		if sub < 0 || sub >= 1e6 || (a > math.MinInt64+1e6 && ms*1e6+sub != a) {
			t.Errorf("splitMs(%d) = %d, %d", a, ms, sub)
		}
	}
}

// FuzzDecodeValues: the decoders of what Lua and Go exchange return
// errors, never panic, and what decodes encodes back to itself.
func FuzzDecodeValues(f *testing.F) {
	f.Add("3:9,12:0")
	f.Add("12|100")
	f.Add(histMember(tether.Range{From: 1, To: 2, State: tether.StateAcked}))
	f.Fuzz(func(t *testing.T, s string) {
		if spans, err := decodeSpans(s); err == nil {
			if again, err := decodeSpans(encodeSpans(spans)); err != nil || !reflect.DeepEqual(again, spans) {
				t.Errorf("spans %q decode to %v, which do not survive encode and decode", s, spans)
			}
		}
		_, _, _ = parseIDs(s)
		_, _ = decodeHist(s)
		_ = metaTarget(s) + metaClientID(s)
	})
}
