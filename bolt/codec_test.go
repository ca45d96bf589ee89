package bolt

import (
	"bytes"
	"testing"

	"github.com/tetherpush/tether"
)

func TestSourceAndPositionRoundTrip(t *testing.T) {
	for _, r := range []source{{}, {last: 1 << 40, members: 100_000, trimmed: 77}} {
		got, err := decodeSource(r.encode())
		if err != nil || got != r {
			t.Errorf("source %+v: got %+v, %v", r, got, err)
		}
	}
	for _, p := range []position{
		{source: tether.DeviceTarget("pos-1"), seq: 1, recipients: 1},
		{source: tether.GroupTarget("shop:1.a"), seq: 1 << 50, recipients: 1_000_000},
	} {
		got, err := decodePosition(p.encode())
		if err != nil || got != p {
			t.Errorf("position %+v: got %+v, %v", p, got, err)
		}
	}
}

func TestTimeKeyOrder(t *testing.T) {
	times := []int64{-1 << 62, -1, 0, 1, 1 << 62}
	for i := 1; i < len(times); i++ {
		a, b := timeKey(times[i-1], "z"), timeKey(times[i], "a")
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("timeKey(%d) sorts after timeKey(%d)", times[i-1], times[i])
		}
	}
	if ts, id := splitTimeKey(timeKey(-42, "m1")); ts != -42 || id != "m1" {
		t.Errorf("splitTimeKey = %d, %q", ts, id)
	}
}

func TestLogKeysSortByPosition(t *testing.T) {
	a, b := logKey(tether.DeviceTarget("d"), 255), logKey(tether.DeviceTarget("d"), 256)
	if bytes.Compare(a, b) >= 0 || !bytes.HasPrefix(b, prefixKey("device:d")) {
		t.Errorf("log keys %x, %x: want ascending under the log's prefix", a, b)
	}
}

// FuzzDecode: the decoders of the store's own records return errors, never
// panic, on any bytes (a torn or foreign file). The shared records are
// fuzzed in internal/ledger.
func FuzzDecode(f *testing.F) {
	f.Add(source{last: 9, members: 3, trimmed: 1}.encode())
	f.Add(position{source: tether.GroupTarget("g"), seq: 7, recipients: 2}.encode())
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeSource(b)
		decodePosition(b)
	})
}
