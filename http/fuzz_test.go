//go:build linux

package http

// Fuzz targets of the HTTP adapter's parsers. Seeds are in
// testdata/fuzz/<Name>; `go test ./http` runs them. To fuzz:
//
//	go test ./http -run '^$' -fuzz '^FuzzFrameParser$' -fuzztime 60s
//	go test ./http -run '^$' -fuzz '^FuzzFrameHeader$' -fuzztime 60s
//	go test ./http -run '^$' -fuzz '^FuzzPublishBody$' -fuzztime 60s

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/eventtest"
	"github.com/tetherpush/tether/wire"
)

// fuzzMaxFrame is the frame limit of the parser fuzz targets: small, so
// that the fuzzer reaches the 1009 paths.
const fuzzMaxFrame = 256

// FuzzFrameParser feeds one client byte stream to both I/O layers: whole,
// through the reader of the goroutine layer (conn.readLoop), and cut at
// arbitrary points (cuts gives the chunk sizes), through the epoll layer's
// incremental parser (poller.parse). Neither may panic; the parser's
// pending bytes stay bounded by the frame limit; and both layers must
// decode the same messages (the ack ids reaching the store, in order) and
// end with the same close code.
func FuzzFrameParser(f *testing.F) {
	f.Add(maskedFrames(ws.OpText, true, `{"type":"ack","ids":["a","b"]}`), []byte{1, 1, 1, 1, 1, 1, 1, 1})
	f.Add(maskedFrames(ws.OpText, false, `{"type":"ack",`, ws.OpPing, true, "x", ws.OpContinuation, true, `"ids":["c"]}`), []byte{3, 0, 7})
	rig := newParserRig(f)
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		if len(stream) > 16<<10 {
			return // keeps the ack ids far below the session's bound, which is timing-dependent
		}
		whole, split := rig.decodeBoth(t, stream, cuts)
		if whole.code != split.code {
			t.Errorf("close code: whole stream %d, split stream %d", whole.code, split.code)
		}
		if !slices.Equal(whole.acks, split.acks) {
			t.Errorf("acked ids: whole stream %q, split stream %q", whole.acks, split.acks)
		}
	})
}

// TestFrameParserHarness checks that FuzzFrameParser observes what it
// compares: known streams give known ack ids and close codes on both layers.
func TestFrameParserHarness(t *testing.T) {
	cases := []struct {
		name   string
		stream []byte
		acks   []string
		code   int
	}{
		{"ack", maskedFrames(ws.OpText, true, `{"type":"ack","ids":["a","b"]}`), []string{"a", "b"}, 0},
		{"fragmented ack around a ping", maskedFrames(ws.OpText, false, `{"type":"ack",`, ws.OpPing, true, "x", ws.OpContinuation, true, `"ids":["c"]}`), []string{"c"}, 0},
		{"acks then close", maskedFrames(ws.OpText, true, `{"type":"ack","ids":["d"]}`, ws.OpClose, true, "\x03\xe8", ws.OpText, true, `{"type":"ack","ids":["e"]}`), []string{"d"}, 1000},
		{"binary", maskedFrames(ws.OpBinary, true, "x"), nil, 1003},
		{"not json", maskedFrames(ws.OpText, true, "x"), nil, 1007},
		{"too big", maskedFrames(ws.OpText, true, strings.Repeat(" ", fuzzMaxFrame+1)), nil, 1009},
		{"unmasked", []byte{0x81, 0x00}, nil, 1002},
	}
	rig := newParserRig(t)
	for _, c := range cases {
		for _, cuts := range [][]byte{nil, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {5, 0, 9}} {
			whole, split := rig.decodeBoth(t, c.stream, cuts)
			for layer, got := range map[string]parseResult{"whole": whole, "split": split} {
				if got.code != c.code || !slices.Equal(got.acks, c.acks) {
					t.Errorf("%s, %s, cuts %v: close %d acks %q, want %d %q", c.name, layer, cuts, got.code, got.acks, c.code, c.acks)
				}
			}
		}
	}
}

// TestAckFloodBoundedWhileStoreStalls: an ack flood of a million unknown
// ids arriving while the store does not answer is held in bounded memory
// (the session drops unknown ids beyond its bound, never real ones), and
// once the store answers, the real acks among the flood are recorded.
func TestAckFloodBoundedWhileStoreStalls(t *testing.T) {
	st := newRecordingStore()
	st.gate = make(chan struct{})
	var real []string
	now := time.Now()
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("01J0REAL%018d", i)
		real = append(real, id)
		st.pending["pos-1"] = append(st.pending["pos-1"], &tether.Message{ID: id, Target: tether.DeviceTarget("pos-1"),
			Data: json.RawMessage(`1`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)})
	}
	h := hub.New(st, hub.Config{Node: "n", Heartbeat: time.Hour, AckTimeout: time.Hour, Workers: 2,
		MaxFrameRate: 1 << 30, SweepInterval: time.Hour, StoreTimeout: time.Minute})
	if err := h.Open(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fc := newFuzzConn(nil)
	c := newConn(fc, tether.DefaultMaxMessageBytes)
	sess := fuzzAttach(t, h, "pos-1", c)
	deadline := time.Now().Add(5 * time.Second)
	for fc.textFrames() < 1+len(real) { // the welcome and the deliveries
		if time.Now().After(deadline) {
			t.Fatalf("the deliveries were not sent")
		}
		time.Sleep(time.Millisecond)
	}

	frames := 1000
	if raceBuild || testing.Short() {
		frames = 100 // the race detector makes decoding ten times slower; 100,000 ids still pass the bound tenfold
	}
	before := heapInUse()
	ids := make([]string, wire.MaxAckIDs)
	for f := 0; f < frames; f++ {
		for i := range ids {
			ids[i] = fmt.Sprintf("01J0UNKNOWN%05d%06d", f, i)
		}
		if f%(frames/len(real)) == 0 {
			ids[len(ids)/2] = real[f/(frames/len(real))]
		}
		if !c.handle(sess, ws.Header{Fin: true, OpCode: ws.OpText}, wire.EncodeAck(ids)) {
			t.Fatalf("the session closed during the flood: %q", fc.out.Bytes())
		}
	}
	grown := int64(heapInUse()) - int64(before)
	t.Logf("live heap grew by %d KiB while %d unknown ids waited for a stalled store", grown>>10, frames*len(ids))
	if grown > 2<<20 {
		t.Errorf("live heap grew by %d MiB during an ack flood with the store stalled; want it bounded", grown>>20)
	}
	close(st.gate)
	got := st.waitForAll(t, "pos-1", real)
	if len(got) > 4*8*wire.MaxAckIDs {
		t.Errorf("%d ids reached the store; the session should keep a bounded number", len(got))
	}
}

// raceBuild reports whether the test binary was built with -race.
var raceBuild = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}()

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// parseResult is what a client stream did: the close code the server sent
// (0: none) and the ack ids that reached the store.
type parseResult struct {
	code int
	acks []string
}

// parserRig is one hub, on a store that records ack ids, on which
// decodeBoth runs each stream with two new sessions.
type parserRig struct {
	h  *hub.Hub
	st *recordingStore
	n  int
}

func newParserRig(tb testing.TB) *parserRig {
	st := newRecordingStore()
	h := hub.New(st, hub.Config{Node: "fuzz", Heartbeat: time.Hour, AckTimeout: time.Hour, Workers: 2,
		MaxFrameRate: 1 << 30, SweepInterval: time.Hour, WriteTimeout: time.Second})
	if err := h.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return &parserRig{h: h, st: st}
}

// decodeBoth runs stream through the goroutine layer's reader, whole, and
// through the poller's parser in chunks whose sizes cuts gives (an odd
// first cut sends the first chunk as bytes read with the handshake).
func (rig *parserRig) decodeBoth(t *testing.T, stream, cuts []byte) (whole, split parseResult) {
	rig.n++
	wdev, sdev := fmt.Sprintf("whole-%d", rig.n), fmt.Sprintf("split-%d", rig.n)

	wc := newFuzzConn(stream)
	c := newConn(wc, fuzzMaxFrame)
	wsess := fuzzAttach(t, rig.h, wdev, c)
	c.readLoop(wsess, time.Hour)

	sc := newFuzzConn(nil)
	pc := &pconn{conn: newConn(sc, fuzzMaxFrame)}
	pc.onClose = func() {} // as the poller does: no blocking drain
	pc.sess = fuzzAttach(t, rig.h, sdev, pc.conn)
	var p poller
	rest := stream
	for i := 0; len(rest) > 0 && !pc.closing.Load(); i++ {
		n := len(rest)
		if i < len(cuts) {
			n = min(n, int(cuts[i]))
		}
		chunk := rest[:n:n]
		rest = rest[n:]
		if i == 0 && len(cuts) > 0 && cuts[0]%2 == 1 {
			pc.buf = bytes.Clone(chunk) // sent with the handshake: the "early" bytes
			p.parse(pc, nil)
		} else {
			p.parse(pc, chunk)
		}
		if len(pc.buf) > fuzzMaxFrame+ws.MaxHeaderSize {
			t.Fatalf("the parser keeps %d pending bytes; the frame limit is %d", len(pc.buf), fuzzMaxFrame)
		}
	}
	pc.sess.Ended() // the peer is gone
	pc.finish()

	// A last ack, which no input can guess, tells when the sessions' acks
	// have all reached the store: acks are flushed in order, even after the
	// session closed.
	end := fmt.Sprintf("~end-%x~", rand.Uint64())
	sentinel := []byte(`{"type":"ack","ids":["` + end + `"]}`)
	wsess.Received(sentinel)
	pc.sess.Received(sentinel)
	return parseResult{wc.closeCode(t), rig.st.waitFor(t, wdev, end)}, parseResult{sc.closeCode(t), rig.st.waitFor(t, sdev, end)}
}

// FuzzFrameHeader checks conn.check against RFC 6455 and the size limit,
// written out independently: a header passes only if it is masked, has no
// reserved bit, a defined opcode, a control frame is final with at most 125
// bytes, and the length is within the limit; the close code says why not.
func FuzzFrameHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x80, 1, 2, 3, 4})
	f.Add([]byte{0x89, 0xfe, 0, 126, 1, 2, 3, 4})
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ws.ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		c := &conn{maxFrame: fuzzMaxFrame}
		want := 0
		switch {
		case h.Rsv != 0 || !h.Masked:
			want = 1002
		case h.OpCode >= 3 && h.OpCode <= 7 || h.OpCode >= 11:
			want = 1002
		case h.OpCode >= 8 && (h.Length > 125 || !h.Fin):
			want = 1002
		case h.Length > fuzzMaxFrame:
			want = 1009
		}
		got := 0
		var ec errClose
		if err := c.check(h); errors.As(err, &ec) {
			got = ec.code
		} else if err != nil {
			t.Fatalf("check(%+v) = %v, want an errClose or nil", h, err)
		}
		if got != want {
			t.Fatalf("check(%+v) closes with %d, want %d", h, got, want)
		}
	})
}

// FuzzPublishBody feeds arbitrary bodies to POST /v1/messages and
// /v1/messages/batch on a real embedded store. No body may cause a panic or
// a 5xx; every answer is JSON; refusals carry the code of their status and
// a message; and every message accepted (2xx) can be read back with its
// target: nothing accepted is lost.
func FuzzPublishBody(f *testing.F) {
	f.Add([]byte(`{"target":"device:pos-1","data":{"order":1}}`), false)
	f.Add([]byte(`{"messages":[{"target":"group:shop-1","data":1,"id":"k"},{"target":"x","data":2}]}`), true)
	st, err := bolt.Open(filepath.Join(f.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		f.Fatal(err)
	}
	h := hub.New(st, hub.Config{Node: "fuzz", SweepInterval: time.Hour, Workers: 1})
	if err := h.Open(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close(); st.Close() })
	s := NewServer(h, Config{APIKey: "fuzz-key", TokenSecret: []byte("s"), MaxMessageBytes: 512, MaxTTL: time.Hour})
	routes := s.routes()
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		path := "/v1/messages"
		if batch {
			path += "/batch"
		}
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer fuzz-key")
		rec := httptest.NewRecorder()
		routes.ServeHTTP(rec, req)
		checkPublishAnswer(t, h, rec.Code, rec.Body.Bytes(), batch)
	})
}

func checkPublishAnswer(t *testing.T, h *hub.Hub, status int, raw []byte, batch bool) {
	t.Helper()
	var out struct {
		publishAnswer
		Results []publishAnswer `json:"results"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("status %d: answer %q is not JSON: %v", status, raw, err)
	}
	switch {
	case status >= 500:
		t.Fatalf("status %d: %s", status, raw)
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge:
		want := map[int]string{400: tether.EInvalid, 413: tether.ETooLarge}[status]
		if out.Error == nil || out.Error.Code != want || out.Error.Message == "" {
			t.Fatalf("status %d: answer %s, want error %q with a message", status, raw, want)
		}
		return
	case batch && status == http.StatusOK:
		if len(out.Results) == 0 || len(out.Results) > tether.MaxBatch {
			t.Fatalf("batch answer with %d results: %s", len(out.Results), raw)
		}
		for _, r := range out.Results {
			checkAccepted(t, h, r)
		}
		return
	case !batch && (status == http.StatusAccepted || status == http.StatusOK):
		checkAccepted(t, h, out.publishAnswer)
		return
	}
	t.Fatalf("status %d: %s", status, raw)
}

// checkAccepted checks one publish result: an error with code and message,
// or an id the store knows.
func checkAccepted(t *testing.T, h *hub.Hub, r publishAnswer) {
	t.Helper()
	if r.Error != nil {
		if r.Error.Code == "" || r.Error.Message == "" || r.ID != "" {
			t.Fatalf("result %+v: an error needs a code and a message, and no id", r)
		}
		if r.Error.Code == tether.EInternal || r.Error.Code == tether.EUnavailable {
			t.Fatalf("result %+v: a 5xx error inside a batch", r)
		}
		return
	}
	if r.ID == "" || r.Recipients == nil {
		t.Fatalf("accepted result %+v without id or recipients", r)
	}
	ms, err := h.Message(context.Background(), r.ID)
	if err != nil {
		t.Fatalf("accepted message %s cannot be read back: %v", r.ID, err)
	}
	if ms.Message.Target.String() == "" || !tether.ValidID(ms.Message.Target.ID) {
		t.Fatalf("accepted message %s has target %q", r.ID, ms.Message.Target)
	}
}

// fuzzAttach starts a session of device on c.
func fuzzAttach(t *testing.T, h *hub.Hub, device string, c *conn) *hub.Session {
	t.Helper()
	sid, err := h.Admit(context.Background(), device, nil)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := h.Attach(sid, device, nil, time.Time{}, c)
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

// maskedFrames encodes (opcode, fin, payload) triples as masked frames.
func maskedFrames(spec ...any) []byte {
	var buf bytes.Buffer
	for i := 0; i+2 < len(spec); i += 3 {
		p := []byte(spec[i+2].(string))
		h := ws.Header{Fin: spec[i+1].(bool), OpCode: spec[i].(ws.OpCode), Masked: true, Mask: [4]byte{1, 2, 3, 4}, Length: int64(len(p))}
		_ = ws.WriteHeader(&buf, h)
		ws.Cipher(p, h.Mask, 0)
		buf.Write(p)
	}
	return buf.Bytes()
}

// fuzzConn is a net.Conn reading a fixed stream and recording writes.
type fuzzConn struct {
	r *bytes.Reader

	mu  sync.Mutex // guards following
	out bytes.Buffer
}

var _ net.Conn = (*fuzzConn)(nil)

func newFuzzConn(in []byte) *fuzzConn { return &fuzzConn{r: bytes.NewReader(in)} }

func (c *fuzzConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// textFrames counts the text frames the server wrote.
func (c *fuzzConn) textFrames() int {
	c.mu.Lock()
	r := bytes.NewReader(bytes.Clone(c.out.Bytes()))
	c.mu.Unlock()
	n := 0
	for {
		f, err := ws.ReadFrame(r)
		if err != nil {
			return n
		}
		if f.Header.OpCode == ws.OpText {
			n++
		}
	}
}

// closeCode returns the code of the first close frame the server wrote, or
// 0 when it wrote none.
func (c *fuzzConn) closeCode(t *testing.T) int {
	t.Helper()
	c.mu.Lock()
	r := bytes.NewReader(bytes.Clone(c.out.Bytes()))
	c.mu.Unlock()
	for {
		f, err := ws.ReadFrame(r)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			t.Fatalf("the server wrote a broken frame: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			if len(f.Payload) < 2 {
				return 1005
			}
			return int(binary.BigEndian.Uint16(f.Payload))
		}
	}
}

// recordingStore is a store that keeps nothing but the ack ids it is given,
// per device and in order, and serves the messages put in pending as the
// device's log until they are acked. While gate is set, Commit waits for it
// to be closed (or for its context).
type recordingStore struct {
	*eventtest.Memory // the event log: not what these tests look at
	gate              chan struct{}

	mu      sync.Mutex // guards following
	acks    map[string][]string
	pending map[string][]*tether.Message
	changed chan struct{} // closed and replaced on every Ack
}

var _ tether.Store = (*recordingStore)(nil)

func newRecordingStore() *recordingStore {
	return &recordingStore{Memory: eventtest.NewMemory(), acks: make(map[string][]string), pending: make(map[string][]*tether.Message), changed: make(chan struct{})}
}

// waitForAll waits until device's acks hold every one of ids and returns
// them all.
func (s *recordingStore) waitForAll(t *testing.T, device string, ids []string) []string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		acks, changed := s.acks[device], s.changed
		s.mu.Unlock()
		missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(acks, id) })
		if len(missing) == 0 {
			return acks
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("acks %q of %s never reached the store (%d ids did)", missing, device, len(acks))
		}
	}
}

// waitFor waits until device's acks end with id and returns those before.
func (s *recordingStore) waitFor(t *testing.T, device, id string) []string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		acks, changed := s.acks[device], s.changed
		s.mu.Unlock()
		if len(acks) > 0 && acks[len(acks)-1] == id {
			return acks[:len(acks)-1]
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("the acks of %s never reached the store; got %q", device, acks)
		}
	}
}

// Commit records the acks of each change: acked marks (by the message at
// that position of the device's log) then its AckIDs.
func (s *recordingStore) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]tether.Committed, len(changes))
	for i, ch := range changes {
		for _, m := range ch.Marks {
			if list := s.pending[ch.Device]; m.State == tether.StateAcked && m.Seq >= 1 && int(m.Seq) <= len(list) {
				s.acks[ch.Device] = append(s.acks[ch.Device], list[m.Seq-1].ID)
			}
		}
		s.acks[ch.Device] = append(s.acks[ch.Device], ch.AckIDs...)
		out[i].Cursors = []tether.Cursor{{Source: tether.DeviceTarget(ch.Device)}}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return out, nil
}

func (s *recordingStore) Publish(_ context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	res := make([]tether.PublishResult, len(msgs))
	for i, m := range msgs {
		res[i] = tether.PublishResult{ID: m.ID}
	}
	return res, nil
}
func (s *recordingStore) Join(context.Context, string, []string) error { return nil }
func (s *recordingStore) Leave(context.Context, string, string) error  { return nil }

// Cursors answers each device's own log at floor 0.
func (s *recordingStore) Cursors(_ context.Context, devices []string) ([][]tether.Cursor, error) {
	out := make([][]tether.Cursor, len(devices))
	for i, d := range devices {
		out[i] = []tether.Cursor{{Source: tether.DeviceTarget(d)}}
	}
	return out, nil
}

// Read serves the messages put in pending as the device's log, position
// i+1 for pending[i], skipping acked ones.
func (s *recordingStore) Read(_ context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]tether.Entry, len(reqs))
	for i, r := range reqs {
		for j, m := range s.pending[r.Source.ID] {
			if seq := uint64(j + 1); seq > r.After && len(out[i]) < r.Limit && !slices.Contains(s.acks[r.Source.ID], m.ID) {
				out[i] = append(out[i], tether.Entry{Seq: seq, Message: m})
			}
		}
	}
	return out, nil
}

func (s *recordingStore) Expire(context.Context, time.Time, time.Time, int) (int, bool, error) {
	return 0, false, nil
}
func (s *recordingStore) Message(context.Context, string) (tether.MessageStatus, error) {
	return tether.MessageStatus{}, tether.ErrNotFound
}
func (s *recordingStore) Device(context.Context, string) (tether.DeviceInfo, error) {
	return tether.DeviceInfo{}, tether.ErrNotFound
}
func (s *recordingStore) Group(_ context.Context, id string) (tether.GroupInfo, error) {
	return tether.GroupInfo{ID: id}, nil
}
func (s *recordingStore) Ping(context.Context) error { return nil }
func (s *recordingStore) Close() error               { return nil }

// Cancel knows no message.
func (s *recordingStore) Cancel(context.Context, string, time.Time, map[string]int) ([]string, error) {
	return nil, tether.ErrNotFound
}
