package tether

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// referenceJSON is the event's JSON as encoding/json writes the wire form
// (what MarshalJSON returned before AppendJSON).
func referenceJSON(t *rapid.T, e LogEvent) []byte {
	w := logEventJSON{ID: e.ID, Type: e.Type, At: e.At.UTC().Format(TimeFormat), Device: e.Device}
	if e.IsDelivery() {
		w.Message, w.Target, w.Attempts = e.Message, e.Target, &e.Attempts
	} else {
		w.Node = e.Node
		if e.Type == EventOffline {
			w.Code = &e.Code
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAppendJSONMatchesEncodingJSON: AppendJSON writes, byte for byte,
// what encoding/json writes for the wire form, for every event type and
// for strings that need escaping (quotes, controls, HTML characters,
// non-ASCII, invalid UTF-8, U+2028), with and without the id.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	types := []EventType{EventAcked, EventDead, EventExpired, EventCancelled, EventOnline, EventOffline, "other"}
	str := rapid.OneOf(
		rapid.SampledFrom([]string{"", "pos-17", "device:pos-17", "01JB00000000000001", `a"b`, `a\b`, "<&>", "é", "\u2028", "\x00\x1f", "\xff\xfe", "node-a"}),
		rapid.String(),
		rapid.StringMatching(`[ -~]{0,20}`),
	)
	rapid.Check(t, func(t *rapid.T) {
		e := LogEvent{
			ID:       str.Draw(t, "id"),
			Type:     rapid.SampledFrom(types).Draw(t, "type"),
			At:       time.Unix(0, rapid.Int64Range(-1e18, 4e18).Draw(t, "at")).In(time.FixedZone("x", rapid.IntRange(-50000, 50000).Draw(t, "zone"))),
			Message:  str.Draw(t, "message"),
			Target:   str.Draw(t, "target"),
			Attempts: rapid.Int().Draw(t, "attempts"),
			Device:   str.Draw(t, "device"),
			Node:     str.Draw(t, "node"),
			Code:     rapid.Int().Draw(t, "code"),
		}
		want := referenceJSON(t, e)
		if got := e.AppendJSON([]byte("prefix"), true); !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("AppendJSON(with id)\n got %s\nwant %s", got[len("prefix"):], want)
		}
		noID := e
		noID.ID = ""
		wantNoID := append([]byte{'{'}, bytes.TrimPrefix(referenceJSON(t, noID), []byte(`{"id":"",`))...)
		if got := e.AppendJSON(nil, false); !bytes.Equal(got, wantNoID) {
			t.Fatalf("AppendJSON(without id)\n got %s\nwant %s", got, wantNoID)
		}
		m, err := json.Marshal(e)
		if err != nil || !bytes.Equal(m, want) {
			t.Fatalf("json.Marshal = %s, %v; want %s", m, err, want)
		}
	})
}

// BenchmarkAppendJSON: one delivery.acked event, as a Redis store's
// commit encodes it, against encoding/json on the wire form.
func BenchmarkAppendJSON(b *testing.B) {
	e := LogEvent{Type: EventAcked, At: time.Now(), Message: "01JB00000000000001", Target: "group:shop-1", Device: "pos-17", Attempts: 1}
	b.Run("append", func(b *testing.B) {
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf = e.AppendJSON(buf[:0], false)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		a := 1
		w := logEventJSON{Type: e.Type, Device: e.Device, Message: e.Message, Target: e.Target, Attempts: &a}
		for b.Loop() {
			w.At = e.At.UTC().Format(TimeFormat)
			if _, err := json.Marshal(w); err != nil {
				b.Fatal(err)
			}
		}
	})
}
