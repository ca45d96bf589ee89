package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/wire"
)

func TestPayload(t *testing.T) {
	for _, size := range []int{MinSize, 100, 256, 4096} {
		b := appendPayload(nil, "3f9a1c0d", 7, 123456, size)
		if len(b) != size {
			t.Errorf("size %d: payload of %d bytes: %s", size, len(b), b)
		}
		if !json.Valid(b) {
			t.Errorf("size %d: not JSON: %s", size, b)
		}
		p, ok := parsePayload(b)
		if !ok || p != (payload{"3f9a1c0d", 7, 123456}) {
			t.Errorf("size %d: parsePayload = %+v, %v", size, p, ok)
		}
	}
	// Too small to pad: the payload is longer than asked, never invalid.
	if b := appendPayload(nil, "3f9a1c0d", 1, 1, 10); !json.Valid(b) {
		t.Errorf("unpadded payload not JSON: %s", b)
	}
	// Reordered or spaced JSON takes the slow path.
	p, ok := parsePayload([]byte(`{"s": 5, "g": 1, "bench": "r1"}`))
	if !ok || p != (payload{"r1", 1, 5}) {
		t.Errorf("slow path: %+v, %v", p, ok)
	}
	for _, data := range []string{`{"order":1}`, `"text"`, `[1,2]`, `{"bench":"r","g":-1,"s":2}`, `{"bench":"r","g":1,"s":99999999999999999999}`, ``} {
		if p, ok := parsePayload([]byte(data)); ok {
			t.Errorf("parsePayload(%s) = %+v, want not a bench payload", data, p)
		}
	}
}

func TestParseFrame(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 0, 0, 123_000_000, time.UTC)
	data := appendPayload(nil, "r1", 2, 9, 80)
	b := wire.AppendMessage(nil, "01JABC", "group:bench-g2", data, at, 3)
	f, ok := fastMessage(b)
	if !ok {
		t.Fatalf("fast path refused %s", b)
	}
	if f.Type != wire.TypeMessage || f.ID != "01JABC" || string(f.Data) != string(data) || !f.PublishedAt.Equal(at) || f.Attempt != 3 {
		t.Errorf("fastMessage = %+v", f)
	}
	// The slow path reads the same frame the same way.
	var sf wire.ServerFrame
	if err := json.Unmarshal(b, &sf); err != nil || sf.ID != f.ID || !sf.PublishedAt.Equal(f.PublishedAt) || sf.Attempt != f.Attempt {
		t.Errorf("encoding/json reads %+v, %v", sf, err)
	}
	// Data holding the published_at key itself still parses.
	tricky := []byte(`{"x":",\"published_at\":\""}`)
	f, err := parseFrame(wire.AppendMessage(nil, "01J", "device:d", tricky, at, 1))
	if err != nil || string(f.Data) != string(tricky) || !f.PublishedAt.Equal(at) {
		t.Errorf("tricky data: %+v, %v", f, err)
	}
	welcome := wire.EncodeWelcome(wire.Welcome{Device: "d", HeartbeatMS: 25000})
	if f, err := parseFrame(welcome); err != nil || f.Type != wire.TypeWelcome {
		t.Errorf("welcome: %+v, %v", f, err)
	}
	if f, err := parseFrame(wire.EncodeError("x", "y")); err != nil || f.Type != wire.TypeError || f.Code != "x" || f.Message != "y" {
		t.Errorf("error frame: %+v, %v", f, err)
	}
	if _, err := parseFrame([]byte("not json")); err == nil {
		t.Error("parseFrame accepted garbage")
	}
}

func TestSeqSet(t *testing.T) {
	var q seqSet
	for _, s := range []int{0, 5, 64, 200} {
		if q.add(s) {
			t.Errorf("add(%d) reports a duplicate on first sight", s)
		}
	}
	if !q.add(64) {
		t.Error("add(64) twice is not a duplicate")
	}
	if q.len() != 4 || !q.has(200) || q.has(199) || q.has(-1) || q.has(10_000) {
		t.Errorf("len %d, has(200) %v, has(199) %v", q.len(), q.has(200), q.has(199))
	}
	// Published ids by sequence number; "" where the publish failed.
	ids := make([]string, 201)
	for s := range ids {
		ids[s] = fmt.Sprintf("id%d", s)
	}
	ids[1], ids[3] = "", ""
	n, first := q.missing(ids)
	if n != 201-2-4 || first != "id2" {
		t.Errorf("missing = %d, %q; want %d, id2", n, first, 201-2-4)
	}
	ids[5] = "" // received but its publish failed
	if got := q.unconfirmed(ids); got != 1 {
		t.Errorf("unconfirmed = %d, want 1", got)
	}
	if got := q.unconfirmed(ids[:100]); got != 2 { // 5, and 200 beyond the ids
		t.Errorf("unconfirmed with fewer ids = %d, want 2", got)
	}
	var empty seqSet
	if n, _ := empty.missing(nil); n != 0 {
		t.Errorf("nothing published, %d missing", n)
	}
}

func TestClientFrame(t *testing.T) {
	b := clientFrame(ws.OpText, []byte(`{"type":"ack","ids":["a"]}`))
	h, err := ws.ReadHeader(bytes.NewReader(b))
	if err != nil || !h.Masked || !h.Fin || h.OpCode != ws.OpText || h.Length != 26 {
		t.Fatalf("header %+v, %v", h, err)
	}
	p := append([]byte(nil), b[len(b)-int(h.Length):]...)
	ws.Cipher(p, h.Mask, 0)
	if f, err := wire.DecodeClient(p); err != nil || f.Type != wire.TypeAck || len(f.IDs) != 1 {
		t.Errorf("the node would read %+v, %v", f, err)
	}
	if got := closeText([]byte{0x0f, 0xa3, 'b', 'y', 'e'}); got != "4003 bye" {
		t.Errorf("closeText = %q", got)
	}
}

func TestErrorKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "none"},
		{ws.StatusError(503), "http 503"},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection refused"},
		{fmt.Errorf("bind: %w", syscall.EADDRNOTAVAIL), "no free source port"},
		{syscall.EMFILE, "too many open files"},
		{io.ErrUnexpectedEOF, "closed by the node"},
		{errors.New("what"), "other"},
	} {
		if got := errorKind(tc.err); got != tc.want {
			t.Errorf("errorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
