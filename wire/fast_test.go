package wire

import (
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeFast: whatever the fast path accepts, encoding/json decodes
// to the same frame; and the frames the SDKs write take the fast path.
//
//	go test ./wire -run '^$' -fuzz FuzzDecodeFast -fuzztime 60s
func FuzzDecodeFast(f *testing.F) {
	for _, seed := range []string{
		`{"type":"ack","ids":["01JDA","01JDB"]}`, `{"ids":[],"type":"ack"}`, ` {"type" : "ping"} `,
		`{"type":"ack","ids":["a",""]}`, `{"type":"ack","ids":[null]}`, `{"Type":"ack","ids":["a"]}`,
		`{"type":"ack","type":"ping"}`, `{"type":"ack","ids":["\u0041"]}`, `{"type":"ping","ids":[]}`,
		"{\"type\":\"ack\",\"ids\":[\"\xff\"]}", `{"type":"ack","ids":["a"],}`, `{}`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := decodeFast(b)
		if !ok {
			return
		}
		slow, err := decodeClientJSON(b)
		if err != nil {
			t.Fatalf("fast path accepted %q as %#v; encoding/json refuses it: %v", b, fast, err)
		}
		if fast.Type != slow.Type || !slices.Equal(fast.IDs, slow.IDs) || (fast.IDs == nil) != (slow.IDs == nil) {
			t.Fatalf("%q: fast path %#v, encoding/json %#v", b, fast, slow)
		}
	})
}

// TestDecodeFastTakes: the frames the SDKs and the bench write are decoded
// by the fast path; the odd ones are left to encoding/json.
func TestDecodeFastTakes(t *testing.T) {
	ids := make([]string, MaxAckIDs)
	for i := range ids {
		ids[i] = "01JDAZZZZZZZZZZZZZZZZZZZZZ"
	}
	for _, b := range [][]byte{EncodeAck([]string{"01JDA"}), EncodeAck(ids), EncodeAck([]string{}), Ping,
		[]byte("{ \"type\" :\t\"ack\" ,\r\n \"ids\" : [ \"a\" , \"b\" ] }"), []byte(`{"ids":["a"],"type":"ack"}`)} {
		if _, ok := decodeFast(b); !ok {
			t.Errorf("the fast path declines %.80q", b)
		}
	}
	for _, b := range []string{
		`{"Type":"ack","ids":["a"]}`,              // encoding/json matches keys case-insensitively
		`{"type":"ack","ids":["\u0041"]}`,         // escapes
		`{"type":"ack","ids":["a"],"ids":["b"]}`,  // a repeated key: the last wins there
		`{"type":"ack","ids":["a"],"extra":1}`,    // a field a newer client may add
		`{"type":"ack","ids":[null]}`,             // refused there
		`{"type":"ack","ids":"a"}`,                // refused there
		`{"type":"ack"}`, `{"type":"pong"}`, `{}`, // refused there, each its own way
		`{"type":"ack","ids":["` + strings.Repeat(`a","`, MaxAckIDs) + `a"]}`, // too many ids
	} {
		if f, ok := decodeFast([]byte(b)); ok {
			t.Errorf("the fast path takes %.80q (as %#v): encoding/json should", b, f)
		}
	}
}
