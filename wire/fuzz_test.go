package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tetherpush/tether/wire"
)

// FuzzDecodeClient checks that DecodeClient never panics, sorts every
// refusal into exactly one of its three kinds, and accepts only frames that
// re-encode to a frame decoding to the same value. Seeds are in
// testdata/fuzz/FuzzDecodeClient.
//
//	go test ./wire -run '^$' -fuzz FuzzDecodeClient -fuzztime 60s
func FuzzDecodeClient(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		cf, err := wire.DecodeClient(b)
		if !bytes.Equal(in, b) {
			t.Fatalf("DecodeClient modified its input: %q became %q", in, b)
		}
		if err != nil {
			checkRefusal(t, b, cf, err)
			return
		}
		if !json.Valid(b) {
			t.Fatalf("DecodeClient(%q) accepted invalid JSON as %#v", b, cf)
		}
		var again []byte
		switch cf.Type {
		case wire.TypePing:
			if cf.IDs != nil {
				t.Fatalf("DecodeClient(%q) = ping with ids %q", b, cf.IDs)
			}
			again = wire.Ping
		case wire.TypeAck:
			if cf.IDs == nil || len(cf.IDs) > wire.MaxAckIDs {
				t.Fatalf("DecodeClient(%q) = ack with %d ids (nil: %v)", b, len(cf.IDs), cf.IDs == nil)
			}
			again = wire.EncodeAck(cf.IDs)
		default:
			t.Fatalf("DecodeClient(%q) accepted type %q", b, cf.Type)
		}
		cf2, err := wire.DecodeClient(again)
		if err != nil {
			t.Fatalf("re-encoded %q as %q, which fails: %v", b, again, err)
		}
		if cf2.Type != cf.Type || !slices.Equal(cf2.IDs, cf.IDs) {
			t.Fatalf("%q decodes to %#v, re-encoded %q to %#v", b, cf, again, cf2)
		}
	})
}

// checkRefusal checks a DecodeClient error: the zero frame and exactly one
// of ErrNotObject (1007), ErrBadFrame (1008), *UnknownTypeError (stays open).
func checkRefusal(t *testing.T, b []byte, cf wire.ClientFrame, err error) {
	t.Helper()
	if cf.Type != "" || cf.IDs != nil {
		t.Fatalf("DecodeClient(%q) = %#v with error %v, want the zero frame", b, cf, err)
	}
	var unknown *wire.UnknownTypeError
	kinds := 0
	for _, is := range []bool{errors.Is(err, wire.ErrNotObject), errors.Is(err, wire.ErrBadFrame), errors.As(err, &unknown)} {
		if is {
			kinds++
		}
	}
	if kinds != 1 {
		t.Fatalf("DecodeClient(%q) error %v is of %d kinds, want exactly one", b, err, kinds)
	}
	if unknown != nil && (unknown.Type == wire.TypeAck || unknown.Type == wire.TypePing) {
		t.Fatalf("DecodeClient(%q) calls %q unknown", b, unknown.Type)
	}
	if errors.Is(err, wire.ErrNotObject) && json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
		t.Fatalf("DecodeClient(%q) = ErrNotObject for a JSON object", b)
	}
}

// FuzzDecodeServer checks that DecodeServer never panics and that a frame
// it accepts survives encoding/json and DecodeServer again unchanged.
func FuzzDecodeServer(f *testing.F) {
	for _, seed := range []string{
		`{"type":"welcome","device":"pos-1","groups":["shop-1"],"node":"n1","heartbeat_ms":25000,"ack_timeout_ms":30000,"max_inflight":256}`,
		`{"type":"message","id":"01JDA","target":"group:shop-1","data":{"a":[1,"x"]},"published_at":"2026-11-24T10:00:00.123Z","attempt":1}`,
		`{"type":"pong"}`,
		`{"type":"error","code":"unknown_type","message":"x"}`,
		`{"type":"notice","x":1}`,
		`{"type":7}`,
		`[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := wire.DecodeServer(b)
		if err != nil {
			if errors.Is(err, wire.ErrNotObject) == errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("DecodeServer(%q) error %v, want ErrNotObject or ErrBadFrame", b, err)
			}
			return
		}
		if sf.Type == "" || !json.Valid(b) {
			t.Fatalf("DecodeServer(%q) accepted %+v", b, sf)
		}
		again, err := json.Marshal(sf)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", sf, err)
		}
		sf2, err := wire.DecodeServer(again)
		if err != nil {
			t.Fatalf("re-encoded %q as %q, which fails: %v", b, again, err)
		}
		if !sameServerFrame(sf, sf2) {
			t.Fatalf("%q decodes to %+v, re-encoded %q to %+v", b, sf, again, sf2)
		}
	})
}

// sameServerFrame compares frames as JSON sees them: data as the value it
// holds (encoding/json compacts and HTML-escapes raw data), times as
// instants, an empty group list as none (omitempty drops it).
func sameServerFrame(a, b wire.ServerFrame) bool {
	if !a.PublishedAt.Equal(b.PublishedAt) || !slices.Equal(a.Groups, b.Groups) || (a.Data == nil) != (b.Data == nil) {
		return false
	}
	if a.Data != nil {
		var va, vb any
		if json.Unmarshal(a.Data, &va) != nil || json.Unmarshal(b.Data, &vb) != nil || !reflect.DeepEqual(va, vb) {
			return false
		}
	}
	a.PublishedAt, a.Groups, a.Data = time.Time{}, nil, nil
	b.PublishedAt, b.Groups, b.Data = time.Time{}, nil, nil
	return reflect.DeepEqual(a, b)
}
