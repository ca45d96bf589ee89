package wire_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether/wire"
)

// ids returns n distinct ids, as an ack frame's JSON array and as strings.
func ids(n int) (string, []string) {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%04d", i)
	}
	b, _ := json.Marshal(out)
	return string(b), out
}

// nested returns depth JSON arrays, one inside the other.
func nested(depth int) string {
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

func TestDecodeClientAccepted(t *testing.T) {
	ids1000JSON, ids1000 := ids(wire.MaxAckIDs)
	for _, tc := range []struct {
		name string
		in   string
		want wire.ClientFrame
	}{
		{"ping", `{"type":"ping"}`, wire.ClientFrame{Type: wire.TypePing}},
		{"ping, JSON whitespace around and inside", " \t\r\n{ \"type\" :\n\"ping\" }\r\n\t ", wire.ClientFrame{Type: wire.TypePing}},
		{"ping with extra fields", `{"type":"ping","ts":1732442400123,"ids":"not read","x":{"y":[1,null,true]}}`, wire.ClientFrame{Type: wire.TypePing}},
		{"ping with nested extra field", `{"type":"ping","x":` + nested(500) + `}`, wire.ClientFrame{Type: wire.TypePing}},
		{"ack", `{"type":"ack","ids":["01JDA","01JDB"]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{"01JDA", "01JDB"}}},
		{"ack, ids first", `{"ids":["a"],"type":"ack"}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{"a"}}},
		{"ack with extra fields", `{"type":"ack","ids":["a"],"seq":7}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{"a"}}},
		{"ack with no ids", `{"type":"ack","ids":[]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{}}},
		{"ack of an empty id", `{"type":"ack","ids":[""]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{""}}},
		{"ack, escaped id", `{"type":"ack","ids":["\u00e9\n\"\/x"]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{"é\n\"/x"}}},
		{"ack of MaxAckIDs ids", `{"type":"ack","ids":` + ids1000JSON + `}`, wire.ClientFrame{Type: wire.TypeAck, IDs: ids1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeClient([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeClient(%.80q) error %v, want %+v", tc.in, err, tc.want)
			}
			if got.Type != tc.want.Type || !slices.Equal(got.IDs, tc.want.IDs) || (got.IDs == nil) != (tc.want.IDs == nil) {
				t.Errorf("DecodeClient(%.80q) = %#v, want %#v", tc.in, got, tc.want)
			}
		})
	}
}

func TestDecodeClientRejected(t *testing.T) {
	ids1001JSON, _ := ids(wire.MaxAckIDs + 1)
	notObject := wire.ErrNotObject
	badFrame := wire.ErrBadFrame
	for _, tc := range []struct {
		name string
		in   string
		want error // wire.ErrNotObject or wire.ErrBadFrame
	}{
		// Not one JSON object: 1007.
		{"empty", ``, notObject},
		{"whitespace only", " \t\r\n", notObject},
		{"not JSON", `hello`, notObject},
		{"truncated object", `{"type":"ping"`, notObject},
		{"open brace", `{`, notObject},
		{"single quotes", `{'type':'ping'}`, notObject},
		{"trailing comma", `{"type":"ping",}`, notObject},
		{"unquoted key", `{type:"ping"}`, notObject},
		{"array", `[{"type":"ping"}]`, notObject},
		{"empty array", `[]`, notObject},
		{"string", `"ping"`, notObject},
		{"number", `42`, notObject},
		{"true", `true`, notObject},
		{"null", `null`, notObject},
		{"two objects", `{"type":"ping"}{"type":"ping"}`, notObject},
		{"object then garbage", `{"type":"ping"} x`, notObject},
		{"vertical tab before", "\v{\"type\":\"ping\"}", notObject},
		{"form feed after", "{\"type\":\"ping\"}\f", notObject},
		{"no-break space before", "\u00a0{\"type\":\"ping\"}", notObject},
		{"byte order mark before", "\ufeff{\"type\":\"ping\"}", notObject},
		{"NUL after", "{\"type\":\"ping\"}\x00", notObject},
		{"huge nesting in a field", `{"type":"ping","x":` + nested(100000) + `}`, notObject},
		{"huge nesting in ids", `{"type":"ack","ids":` + nested(100000) + `}`, notObject},
		{"huge nesting of objects", strings.Repeat(`{"a":`, 100000) + `1` + strings.Repeat(`}`, 100000), notObject},

		// A JSON object, but not a frame: error frame, then 1008.
		{"empty object", `{}`, badFrame},
		{"no type", `{"ids":["a"]}`, badFrame},
		{"type null", `{"type":null}`, badFrame},
		{"type number", `{"type":1}`, badFrame},
		{"type bool", `{"type":true}`, badFrame},
		{"type array", `{"type":["ping"]}`, badFrame},
		{"type object", `{"type":{"ping":true}}`, badFrame},
		{"ack without ids", `{"type":"ack"}`, badFrame},
		{"ack, ids null", `{"type":"ack","ids":null}`, badFrame},
		{"ack, ids a string", `{"type":"ack","ids":"a"}`, badFrame},
		{"ack, ids a number", `{"type":"ack","ids":5}`, badFrame},
		{"ack, ids an object", `{"type":"ack","ids":{"0":"a"}}`, badFrame},
		{"ack, number id", `{"type":"ack","ids":["a",1]}`, badFrame},
		{"ack, null id", `{"type":"ack","ids":["a",null]}`, badFrame},
		{"ack, only a null id", `{"type":"ack","ids":[null]}`, badFrame},
		{"ack, empty and null id", `{"type":"ack","ids":["", null ]}`, badFrame},
		{"ack, bool id", `{"type":"ack","ids":[true]}`, badFrame},
		{"ack, array id", `{"type":"ack","ids":[["a"]]}`, badFrame},
		{"ack, object id", `{"type":"ack","ids":[{"id":"a"}]}`, badFrame},
		{"ack, MaxAckIDs+1 ids", `{"type":"ack","ids":` + ids1001JSON + `}`, badFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeClient([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeClient(%.80q) = %#v, %v; want error %v", tc.in, got, err, tc.want)
			}
			var unknown *wire.UnknownTypeError
			if errors.As(err, &unknown) {
				t.Errorf("DecodeClient(%.80q) error %v is also an *UnknownTypeError", tc.in, err)
			}
			if got.Type != "" || got.IDs != nil {
				t.Errorf("DecodeClient(%.80q) = %#v with an error, want the zero frame", tc.in, got)
			}
		})
	}
}

func TestDecodeClientUnknownType(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		name, in, typ string
	}{
		{"empty type", `{"type":""}`, ""},
		{"other case", `{"type":"PING"}`, "PING"},
		{"future type", `{"type":"subscribe","topic":"t"}`, "subscribe"},
		{"server type", `{"type":"welcome"}`, "welcome"},
		{"message with ids", `{"type":"message","ids":["a"]}`, "message"},
		{"long type", `{"type":"` + long + `"}`, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeClient([]byte(tc.in))
			var unknown *wire.UnknownTypeError
			if !errors.As(err, &unknown) {
				t.Fatalf("DecodeClient(%q) = %#v, %v; want an *UnknownTypeError", tc.in, got, err)
			}
			if unknown.Type != tc.typ {
				t.Errorf("UnknownTypeError.Type = %q, want %q", unknown.Type, tc.typ)
			}
			if errors.Is(err, wire.ErrBadFrame) || errors.Is(err, wire.ErrNotObject) {
				t.Errorf("error %v also matches ErrBadFrame or ErrNotObject: it must leave the connection open", err)
			}
			// The message goes into an error frame: short, whatever the client sent.
			if msg := err.Error(); len(msg) > 100 || !strings.Contains(msg, "want ack or ping") {
				t.Errorf("Error() = %q (%d bytes), want a short message naming ack and ping", msg, len(msg))
			}
		})
	}
}

func TestAppendMessage(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name        string
		data        string
		publishedAt time.Time
		wantTime    string
		attempt     int
	}{
		{"object, other zone, nanoseconds", `{"order":"A-17","items":[1,2]}`, time.Date(2026, 11, 24, 11, 0, 0, 123456789, paris), "2026-11-24T10:00:00.123Z", 1},
		{"whole second", `{}`, time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC), "2026-11-24T10:00:00.000Z", 2},
		{"string", `"hello"`, time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC), "2026-01-02T03:04:05.006Z", 3},
		{"number", `-1.5e3`, time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC), "2026-12-31T23:59:59.999Z", 17},
		{"null", `null`, time.Date(2026, 6, 1, 0, 0, 0, 0, paris), "2026-05-31T23:00:00.000Z", 1},
		{"array", `[true,false,{"a":"\u00e9"}]`, time.Date(2026, 6, 1, 12, 0, 0, 500000000, time.Local), "", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id, target = "01JDAXYZ0000000000000000AB", "group:shop-1"
			prefix := []byte("prefix:")
			b := wire.AppendMessage(prefix, id, target, []byte(tc.data), tc.publishedAt, tc.attempt)
			if !strings.HasPrefix(string(b), "prefix:") {
				t.Fatalf("AppendMessage lost dst: %q", b)
			}
			frame := b[len(prefix):]
			if !json.Valid(frame) {
				t.Fatalf("frame %s is not valid JSON", frame)
			}

			var f wire.ServerFrame
			if err := json.Unmarshal(frame, &f); err != nil {
				t.Fatalf("decode %s: %v", frame, err)
			}
			want := tc.publishedAt.Truncate(time.Millisecond)
			if f.Type != wire.TypeMessage || f.ID != id || f.Target != target || string(f.Data) != tc.data ||
				!f.PublishedAt.Equal(want) || f.Attempt != tc.attempt {
				t.Errorf("decoded %+v from %s; want message %s to %s, data %s, published %v, attempt %d",
					f, frame, id, target, tc.data, want, tc.attempt)
			}
			if got, err := wire.DecodeServer(frame); err != nil || !reflect.DeepEqual(got, f) {
				t.Errorf("DecodeServer = %+v, %v; want %+v as encoding/json decodes it", got, err, f)
			}

			var fields map[string]any
			if err := json.Unmarshal(frame, &fields); err != nil {
				t.Fatal(err)
			}
			wantTime := tc.wantTime
			if wantTime == "" {
				wantTime = want.UTC().Format("2006-01-02T15:04:05.000Z")
			}
			if got := fields["published_at"]; got != wantTime {
				t.Errorf("published_at = %q, want %q (UTC, milliseconds, Z)", got, wantTime)
			}
			if len(fields) != 6 {
				t.Errorf("frame %s has %d fields, want type, id, target, data, published_at, attempt", frame, len(fields))
			}
		})
	}
}

func TestEncodeWelcome(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   wire.Welcome
		want string
	}{
		{
			name: "nil groups",
			in:   wire.Welcome{Device: "pos-1", Node: "n1", HeartbeatMS: 25000, AckTimeoutMS: 30000, MaxInflight: 256},
			want: `{"type":"welcome","device":"pos-1","groups":[],"node":"n1","heartbeat_ms":25000,"ack_timeout_ms":30000,"max_inflight":256}`,
		},
		{
			name: "groups, type set by the encoder",
			in:   wire.Welcome{Type: "bogus", Device: "pos-1", Groups: []string{"shop-1", "region-2"}, Node: "n1", HeartbeatMS: 1, AckTimeoutMS: 2, MaxInflight: 3},
			want: `{"type":"welcome","device":"pos-1","groups":["shop-1","region-2"],"node":"n1","heartbeat_ms":1,"ack_timeout_ms":2,"max_inflight":3}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := wire.EncodeWelcome(tc.in)
			if string(b) != tc.want {
				t.Fatalf("EncodeWelcome = %s\nwant            %s", b, tc.want)
			}
			f, err := wire.DecodeServer(b)
			if err != nil {
				t.Fatalf("DecodeServer(%s): %v", b, err)
			}
			want := tc.in
			want.Type = wire.TypeWelcome
			if want.Groups == nil {
				want.Groups = []string{}
			}
			if got := f.Welcome(); !reflect.DeepEqual(got, want) {
				t.Errorf("Welcome() = %#v, want %#v", got, want)
			}
		})
	}
}

func TestEncodeClientFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
		dec   wire.ClientFrame
	}{
		{"ping", wire.Ping, `{"type":"ping"}`, wire.ClientFrame{Type: wire.TypePing}},
		{"ack", wire.EncodeAck([]string{"a", "b"}), `{"type":"ack","ids":["a","b"]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{"a", "b"}}},
		{"ack of nil", wire.EncodeAck(nil), `{"type":"ack","ids":[]}`, wire.ClientFrame{Type: wire.TypeAck, IDs: []string{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.frame) != tc.want {
				t.Errorf("frame = %s, want %s", tc.frame, tc.want)
			}
			got, err := wire.DecodeClient(tc.frame)
			if err != nil || got.Type != tc.dec.Type || !slices.Equal(got.IDs, tc.dec.IDs) {
				t.Errorf("DecodeClient(%s) = %#v, %v; want %#v", tc.frame, got, err, tc.dec)
			}
		})
	}
}

func TestEncodeServerFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"pong", wire.Pong, `{"type":"pong"}`},
		{"error", wire.EncodeError(wire.ErrUnknownType, `unknown frame type "x"`), `{"type":"error","code":"unknown_type","message":"unknown frame type \"x\""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.frame) != tc.want {
				t.Errorf("frame = %s, want %s", tc.frame, tc.want)
			}
			var want wire.ServerFrame
			if err := json.Unmarshal(tc.frame, &want); err != nil {
				t.Fatal(err)
			}
			if got, err := wire.DecodeServer(tc.frame); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("DecodeServer(%s) = %+v, %v; want %+v", tc.frame, got, err, want)
			}
		})
	}
}

func TestDecodeServer(t *testing.T) {
	published := time.Date(2026, 11, 24, 10, 0, 0, 123000000, time.UTC)
	for _, tc := range []struct {
		name string
		in   string
		want wire.ServerFrame
	}{
		{"pong", `{"type":"pong"}`, wire.ServerFrame{Type: wire.TypePong}},
		{"pong, whitespace", "\r\n {\"type\": \"pong\"} \t", wire.ServerFrame{Type: wire.TypePong}},
		{"message", `{"type":"message","id":"m1","target":"device:pos-1","data":{"a":1},"published_at":"2026-11-24T10:00:00.123Z","attempt":2}`,
			wire.ServerFrame{Type: wire.TypeMessage, ID: "m1", Target: "device:pos-1", Data: json.RawMessage(`{"a":1}`), PublishedAt: published, Attempt: 2}},
		{"message, data null", `{"type":"message","id":"m1","data":null}`, wire.ServerFrame{Type: wire.TypeMessage, ID: "m1", Data: json.RawMessage(`null`)}},
		{"error", `{"type":"error","code":"token_expired","message":"bye"}`, wire.ServerFrame{Type: wire.TypeError, Code: "token_expired", Message: "bye"}},
		{"future type with unknown fields", `{"type":"notice","text":"maintenance at 2am","level":3}`, wire.ServerFrame{Type: "notice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeServer([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeServer(%q): %v", tc.in, err)
			}
			if !got.PublishedAt.Equal(tc.want.PublishedAt) {
				t.Errorf("PublishedAt = %v, want %v", got.PublishedAt, tc.want.PublishedAt)
			}
			got.PublishedAt, tc.want.PublishedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeServer(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
		})
	}
}

func TestDecodeServerRejected(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"empty", ``, wire.ErrNotObject},
		{"not JSON", `welcome`, wire.ErrNotObject},
		{"array", `[{"type":"pong"}]`, wire.ErrNotObject},
		{"string", `"pong"`, wire.ErrNotObject},
		{"null", `null`, wire.ErrNotObject},
		{"truncated", `{"type":"pong"`, wire.ErrNotObject},
		{"two objects", `{"type":"pong"}{"type":"pong"}`, wire.ErrNotObject},
		{"no-break space before", "\u00a0{\"type\":\"pong\"}", wire.ErrNotObject},
		{"huge nesting", `{"type":"pong","x":` + nested(100000) + `}`, wire.ErrNotObject},
		{"empty object", `{}`, wire.ErrBadFrame},
		{"type empty", `{"type":""}`, wire.ErrBadFrame},
		{"type null", `{"type":null}`, wire.ErrBadFrame},
		{"type number", `{"type":7}`, wire.ErrBadFrame},
		{"type array", `{"type":["pong"]}`, wire.ErrBadFrame},
		{"attempt a string", `{"type":"message","id":"m1","attempt":"1"}`, wire.ErrBadFrame},
		{"published_at not a time", `{"type":"message","id":"m1","published_at":"yesterday"}`, wire.ErrBadFrame},
		{"published_at a number", `{"type":"message","id":"m1","published_at":1732442400}`, wire.ErrBadFrame},
		{"heartbeat_ms a string", `{"type":"welcome","heartbeat_ms":"25s"}`, wire.ErrBadFrame},
		{"groups a string", `{"type":"welcome","groups":"shop-1"}`, wire.ErrBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeServer([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeServer(%.80q) = %+v, %v; want error %v", tc.in, got, err, tc.want)
			}
			if !reflect.DeepEqual(got, wire.ServerFrame{}) {
				t.Errorf("DecodeServer(%.80q) = %+v with an error, want the zero frame", tc.in, got)
			}
		})
	}
}

// BenchmarkDecodeClientAck decodes an ack of 4 ids, about what a device
// sends under load (the bench's devices averaged 4 in the groups run), and
// one of 100.
func BenchmarkDecodeClientAck(b *testing.B) {
	for _, n := range []int{4, 100} {
		b.Run(fmt.Sprintf("ids=%d", n), func(b *testing.B) {
			_, list := ids(n)
			frame := wire.EncodeAck(list)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.DecodeClient(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
