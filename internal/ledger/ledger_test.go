package ledger

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether"
)

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 123_456_789, time.UTC)

func sampleCursors() []tether.Cursor {
	return []tether.Cursor{
		{Source: tether.DeviceTarget("pos-1"), Floor: 41,
			Settled: []tether.Range{{From: 43, To: 50, State: tether.StateAcked, Attempts: 1, Since: t0, At: t0.Add(time.Millisecond)}},
			Flight:  []tether.Flight{{Seq: 42, Attempts: 3}},
			Tail:    tether.Range{From: 30, To: 41, State: tether.StateAcked, Attempts: 1, Since: t0.Add(-time.Hour), At: t0.Add(-time.Hour)}},
		{Source: tether.GroupTarget("shop-1"), Floor: 7, Spans: []tether.Span{{From: 2, To: 9}, {From: 12}}},
	}
}

func TestRoundTrips(t *testing.T) {
	m := &tether.Message{ID: "01JT0001", Target: tether.GroupTarget("shop-1"), ClientID: "k-1",
		Data: json.RawMessage(`{"order":1}`), PublishedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	got, err := DecodeMessage(EncodeMessage(m))
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("message: got %+v, %v; want %+v", got, err, m)
	}
	if exp, err := MessageExpiry(EncodeMessage(m)); err != nil || exp != m.ExpiresAt.UnixNano() {
		t.Errorf("MessageExpiry = %d, %v", exp, err)
	}
	cs := sampleCursors()
	gotCs, err := DecodeCursors(EncodeCursors(cs))
	if err != nil || !reflect.DeepEqual(gotCs, cs) {
		t.Errorf("cursors: got %+v, %v;\nwant %+v", gotCs, err, cs)
	}
	r := cs[0].Settled[0]
	if got, err := DecodeRange(r.To, EncodeRange(r)); err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("range: got %+v, %v; want %+v", got, err, r)
	}
	e := Idem{ExpiresAt: t0.UnixNano(), Recipients: 100, Seq: 7, ID: "01JT0001"}
	if got, err := DecodeIdem(EncodeIdem(e)); err != nil || got != e {
		t.Errorf("idem: got %+v, %v", got, err)
	}
	sp := cs[1].Spans
	if got, err := DecodeSpans(EncodeSpans(sp)); err != nil || !reflect.DeepEqual(got, sp) {
		t.Errorf("spans: got %+v, %v", got, err)
	}
}

func TestTruncatedRecordsAreCorrupt(t *testing.T) {
	b := EncodeCursors(sampleCursors())
	for n := 1; n < len(b); n++ {
		if _, err := DecodeCursors(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cursors cut at %d of %d: err %v, want ErrCorrupt", n, len(b), err)
		}
	}
	if _, err := DecodeRange(3, EncodeRange(tether.Range{From: 1, To: 9, State: tether.StateAcked})); !errors.Is(err, ErrCorrupt) {
		t.Errorf("range reaching below 0: err %v, want ErrCorrupt", err)
	}
}

// FuzzDecode feeds every decoder arbitrary bytes: none may panic, and a
// record that decodes encodes back to a record that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add(EncodeCursors(sampleCursors()))
	f.Add(EncodeMessage(&tether.Message{ID: "x", Target: tether.DeviceTarget("d"), Data: json.RawMessage(`1`)}))
	f.Add(EncodeIdem(Idem{ID: "x"}))
	f.Add(EncodeSpans([]tether.Span{{From: 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cs, err := DecodeCursors(b); err == nil {
			again, err := DecodeCursors(EncodeCursors(cs))
			if err != nil || !reflect.DeepEqual(again, cs) && len(cs) > 0 {
				t.Fatalf("cursors do not round-trip: %v", err)
			}
		}
		_, _ = DecodeMessage(b)
		_, _ = MessageExpiry(b)
		_, _ = DecodeIdem(b)
		_, _ = DecodeSpans(b)
		_, _ = DecodeRange(1<<40, b)
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
