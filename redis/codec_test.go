package redis

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

func TestMessageRecord(t *testing.T) {
	for _, m := range []*tether.Message{
		{ID: "01JT1", Target: tether.DeviceTarget("pos-1"), Data: json.RawMessage(`{"a":"café ☕"}`), ClientID: "order-42",
			PublishedAt: time.Date(2026, 11, 24, 10, 0, 0, 123_456_789, time.UTC), ExpiresAt: time.Date(2026, 11, 25, 10, 0, 0, 7, time.UTC)},
		{ID: "x", Target: tether.GroupTarget("shop:1.a_b-c"), Data: json.RawMessage(`null`),
			PublishedAt: time.Unix(0, -5).UTC(), ExpiresAt: time.Unix(0, math.MaxInt64).UTC()},
	} {
		got, err := decodeMessage(m.ID, encodeMessage(m))
		if err != nil {
			t.Fatalf("decode(encode(%s)): %v", m.ID, err)
		}
		if got.ID != m.ID || got.Target != m.Target || got.ClientID != m.ClientID || !bytes.Equal(got.Data, m.Data) ||
			!got.PublishedAt.Equal(m.PublishedAt) || !got.ExpiresAt.Equal(m.ExpiresAt) {
			t.Errorf("decode(encode(%+v)) = %+v", m, got)
		}
	}
}

func TestMeta(t *testing.T) {
	for _, m := range []meta{
		{target: tether.GroupTarget("g"), clientID: "k", recipients: []string{"a", "b"}},
		{target: tether.DeviceTarget("d"), recipients: []string{"d"}},
		{target: tether.GroupTarget("empty"), recipients: []string{}},
	} {
		got, err := decodeMeta(m.encode())
		if err != nil {
			t.Fatalf("decodeMeta(%q): %v", m.encode(), err)
		}
		if got.target != m.target || got.clientID != m.clientID || !slices.Equal(got.recipients, m.recipients) {
			t.Errorf("decodeMeta(encode(%+v)) = %+v", m, got)
		}
		if metaTarget(m.encode()) != m.target.String() {
			t.Errorf("metaTarget(%q) = %q", m.encode(), metaTarget(m.encode()))
		}
	}
}

func TestDeliveryValue(t *testing.T) {
	exp := time.Date(2026, 11, 24, 10, 0, 0, 123_456_789, time.UTC).UnixNano()
	d, err := decodeDelivery("pos-1", newDelivery(exp))
	if err != nil || d.State != tether.StatePending || d.Attempts != 0 || !d.AckedAt.IsZero() || d.Device != "pos-1" {
		t.Errorf("decodeDelivery(newDelivery) = %+v, %v", d, err)
	}
	acked := time.Date(2026, 11, 24, 10, 0, 5, 0, time.UTC)
	d, err = decodeDelivery("pos-1", "a|3|1|2|"+strconv.FormatInt(acked.UnixNano(), 10))
	if err != nil || d.State != tether.StateAcked || d.Attempts != 3 || !d.AckedAt.Equal(acked) {
		t.Errorf("decodeDelivery(acked) = %+v, %v", d, err)
	}
	for _, bad := range []string{"", "p|0", "x|0|1|2|", "p|-|1|2|", "p|0|1|2|zz", "pp|0|1|2|"} {
		if _, err := decodeDelivery("d", bad); err == nil {
			t.Errorf("decodeDelivery(%q) succeeded", bad)
		}
	}
}

func TestIdem(t *testing.T) {
	e := idem{expiresAt: -42, recipients: 7, id: "01JT|with|bars"}
	got, err := decodeIdem(e.encode())
	if err != nil || got != e {
		t.Errorf("decodeIdem(encode(%+v)) = %+v, %v", e, got, err)
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

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(&tether.Message{ID: "1", Target: tether.GroupTarget("g"), Data: []byte(`{}`), ClientID: "c",
		PublishedAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0)}))
	f.Add("")
	f.Add("\x01\x02")
	f.Fuzz(func(t *testing.T, rec string) {
		m, err := decodeMessage("id", rec)
		if err != nil {
			return
		}
		again, err := decodeMessage("id", encodeMessage(m))
		if err != nil || again.Target != m.Target || again.ClientID != m.ClientID || !bytes.Equal(again.Data, m.Data) ||
			!again.PublishedAt.Equal(m.PublishedAt) || !again.ExpiresAt.Equal(m.ExpiresAt) {
			t.Errorf("record %q decodes to %+v, which does not survive encode and decode: %+v, %v", rec, m, again, err)
		}
	})
}

func FuzzDecodeValues(f *testing.F) {
	f.Add("group:g\nk\na\nb")
	f.Add("p|0|1|2|")
	f.Add(idem{expiresAt: 5, recipients: 1, id: "x"}.encode())
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := decodeMeta(s); err == nil && m.encode() != s {
			t.Errorf("meta %q decodes to %+v, which encodes to %q", s, m, m.encode())
		}
		decodeDelivery("d", s)
		if e, err := decodeIdem(s); err == nil {
			if _, err := decodeIdem(e.encode()); err != nil {
				t.Errorf("idem %q decodes to %+v, which does not decode again: %v", s, e, err)
			}
		}
	})
}
