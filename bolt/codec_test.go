package bolt

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

func sampleMessage() *tether.Message {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)
	return &tether.Message{
		ID:          "01JTQ8Z3K4X9V7M2N5P6R8S0T1",
		Target:      tether.GroupTarget("shop-1042"),
		Data:        json.RawMessage(`{"order":"A-1042","total":12.5,"items":[{"sku":"coffee","qty":2}]}`),
		ClientID:    "order-A-1042",
		PublishedAt: t0,
		ExpiresAt:   t0.Add(24 * time.Hour),
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []*tether.Message{
		sampleMessage(),
		{ID: "x", Target: tether.DeviceTarget("d"), PublishedAt: time.Unix(0, 1), ExpiresAt: time.Unix(0, 2)},
	} {
		got, err := decodeMessage(m.ID, encodeMessage(m))
		if err != nil {
			t.Fatalf("decode %s: %v", m.ID, err)
		}
		if got.ID != m.ID || got.Target != m.Target || got.ClientID != m.ClientID || !bytes.Equal(got.Data, m.Data) ||
			!got.PublishedAt.Equal(m.PublishedAt) || !got.ExpiresAt.Equal(m.ExpiresAt) {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestDeliveryRoundTrip(t *testing.T) {
	for _, d := range []delivery{
		{state: statePending},
		{state: stateInflight, attempts: 300},
		{state: stateAcked, attempts: 2, ackedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano()},
		{state: stateExpired, attempts: 1},
		{state: stateDead, attempts: 5},
	} {
		got, err := decodeDelivery(d.encode())
		if err != nil || got != d {
			t.Errorf("round trip of %+v: %+v, %v", d, got, err)
		}
	}
}

func TestRecipientsAndIdemRoundTrip(t *testing.T) {
	for _, devices := range [][]string{{}, {"a"}, {"a", "b", strings.Repeat("z", 128)}} {
		got, err := decodeRecipients(encodeRecipients(devices))
		if err != nil || !slices.Equal(got, devices) {
			t.Errorf("recipients %q: got %q, %v", devices, got, err)
		}
	}
	r := idem{expiresAt: -5, recipients: 1000, id: "m1"}
	if got, err := decodeIdem(r.encode()); err != nil || got != r {
		t.Errorf("idem %+v: got %+v, %v", r, got, err)
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

// FuzzDecode: the decoders of stored records return errors, never panic,
// on any bytes (a torn or foreign file).
func FuzzDecode(f *testing.F) {
	f.Add(encodeMessage(sampleMessage()))
	f.Add(delivery{state: stateAcked, attempts: 3, ackedAt: 99}.encode())
	f.Add(encodeRecipients([]string{"a", "bb"}))
	f.Add(idem{expiresAt: 1, recipients: 2, id: "m"}.encode())
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeMessage("m", b)
		messageExpiry(b)
		decodeDelivery(b)
		decodeRecipients(b)
		decodeIdem(b)
	})
}

// jsonMessage is the JSON encoding BenchmarkCodec compares with.
type jsonMessage struct {
	Target      string          `json:"t"`
	ClientID    string          `json:"c,omitempty"`
	PublishedAt int64           `json:"p"`
	ExpiresAt   int64           `json:"e"`
	Data        json.RawMessage `json:"d"`
}

// BenchmarkCodec compares the binary message record with the JSON one it
// replaced: size, and encode plus decode time.
func BenchmarkCodec(b *testing.B) {
	m := sampleMessage()
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			rec := encodeMessage(m)
			size = len(rec)
			if _, err := decodeMessage(m.ID, rec); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "bytes/record")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			rec, err := json.Marshal(jsonMessage{m.Target.String(), m.ClientID, m.PublishedAt.UnixNano(), m.ExpiresAt.UnixNano(), m.Data})
			if err != nil {
				b.Fatal(err)
			}
			size = len(rec)
			var out jsonMessage
			if err := json.Unmarshal(rec, &out); err != nil {
				b.Fatal(err)
			}
			if _, err := tether.ParseTarget(out.Target); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "bytes/record")
	})
}
