package http_test

// Hostile input (issue "Incident-proof: hostile input"): every test sends
// what an attacker or a broken client would and checks four things: the
// status or close code SPEC section 5 or 6 names, that a bystander device is
// unharmed (it still gets a pong and a published message), that nothing
// accepted is lost (a delivery in flight on the attacked session comes again
// on the next connection) and that no goroutine is left (noLeaks, on top of
// goleak in TestMain). Run them on both I/O layers:
//
//	go test ./http -run Hostile
//	go test ./http -run Hostile -args -io=goroutine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
)

// TestHostileAbsurdFrameLength: a header announcing an absurd payload (the
// 64-bit length form) is refused with 1009 on the header alone, before any
// payload is read or allocated: the client sends no payload at all.
func TestHostileAbsurdFrameLength(t *testing.T) {
	for _, length := range []int64{1 << 62, 1<<63 - 1, 1 << 32, 64<<10 + 1} {
		t.Run(fmt.Sprint(length), func(t *testing.T) {
			attack(t, nil, func(t *testing.T, d *Device) {
				sendHeader(t, d, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: length})
			}, 1009)
		})
	}
}

// TestHostileAnnouncedFramesCostNoMemory: clients that announce a frame of
// the maximum size and then send nothing must not make the server hold a
// buffer of that size each: memory for an incomplete frame should follow
// the bytes received, or 14 bytes of header buy 64 KiB of server memory.
func TestHostileAnnouncedFramesCostNoMemory(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", func(h *hub.Config, _ *tetherhttp.Config) { h.Heartbeat = time.Minute })
	b := bystander(t, n)
	const conns = 200
	var ds []*Device
	for i := 0; i < conns; i++ {
		d := n.Dial(t, MustToken(t, fmt.Sprintf("announcer-%d", i)))
		d.MustNext("welcome")
		ds = append(ds, d)
	}
	before := liveHeap()
	for _, d := range ds {
		sendHeader(t, d, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: 64 << 10})
	}
	time.Sleep(300 * time.Millisecond) // the readers have read the headers
	grown := int64(liveHeap()) - int64(before)
	t.Logf("live heap grew by %d KiB for %d announced 64 KiB frames", grown>>10, conns)
	if grown > conns*(64<<10)/4 {
		// BUG (goroutine layer): conn.readFrame allocates h.Length bytes
		// as soon as the header passes check, before any payload arrives.
		t.Errorf("BUG: live heap grew by %d KiB for %d announced 64 KiB frames without payload; want memory to follow the bytes received", grown>>10, conns)
	}
	for _, d := range ds {
		d.Conn.Close()
	}
	checkUnharmed(t, n, b)
}

// TestHostileOversizeText: a text frame one byte over --max-message-bytes
// closes with 1009; one of exactly the limit is served.
func TestHostileOversizeText(t *testing.T) {
	const limit = 1024
	edit := func(_ *hub.Config, c *tetherhttp.Config) { c.MaxMessageBytes = limit }
	t.Run("at the limit", func(t *testing.T) {
		noLeaks(t)
		n := MustOpenNode(t, "", edit)
		d := n.Dial(t, MustToken(t, "pos-1"))
		d.MustNext("welcome")
		d.Send(pingOfSize(limit))
		d.MustNext("pong")
	})
	t.Run("one over", func(t *testing.T) {
		attack(t, edit, func(t *testing.T, d *Device) { d.Send(pingOfSize(limit + 1)) }, 1009)
	})
}

// TestHostileFragmentedOversize: a fragmented message whose fragments are
// each small but whose total passes the limit closes with 1009, as soon as
// the fragment that passes it arrives (no final fragment is sent).
func TestHostileFragmentedOversize(t *testing.T) {
	const limit = 1024
	edit := func(_ *hub.Config, c *tetherhttp.Config) { c.MaxMessageBytes = limit }
	t.Run("two halves", func(t *testing.T) {
		attack(t, edit, func(t *testing.T, d *Device) {
			sendFrame(t, d, ws.OpText, false, bytes.Repeat([]byte(" "), 600))
			sendFrame(t, d, ws.OpContinuation, false, bytes.Repeat([]byte(" "), 600))
		}, 1009)
	})
	t.Run("many small", func(t *testing.T) {
		attack(t, edit, func(t *testing.T, d *Device) {
			sendFrame(t, d, ws.OpText, false, []byte(" "))
			for i := 0; i < limit/64+1; i++ {
				sendFrame(t, d, ws.OpContinuation, false, bytes.Repeat([]byte(" "), 64))
			}
		}, 1009)
	})
}

// TestHostilePayloadKinds: what is not a JSON object in a text frame is
// 1007 (SPEC section 5), a binary frame 1003.
func TestHostilePayloadKinds(t *testing.T) {
	cases := []struct {
		name string
		op   ws.OpCode
		data string
		code int
	}{
		{"not json", ws.OpText, "hello", 1007},
		{"json string", ws.OpText, `"ping"`, 1007},
		{"json array", ws.OpText, `[{"type":"ping"}]`, 1007},
		{"empty text", ws.OpText, "", 1007},
		{"nul bytes", ws.OpText, "\x00\x00\x00", 1007},
		{"binary json", ws.OpBinary, `{"type":"ping"}`, 1003},
		{"binary", ws.OpBinary, "\xff\xfe", 1003},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attack(t, nil, func(t *testing.T, d *Device) { sendFrame(t, d, c.op, true, []byte(c.data)) }, c.code)
		})
	}
}

// TestHostileFrameFlood: a client sending frames faster than twice the
// allowed rate is closed with 4429 (SPEC section 5: "too many frames"),
// whatever the frames are. Control frames and fragments are frames too: a
// flood of them costs the server as much (each ping is answered with a
// write) and must not escape the limit.
func TestHostileFrameFlood(t *testing.T) {
	burst := 3*hub.DefaultMaxFrameRate + 50
	const bug = "BUG: only complete text messages count against the frame rate (hub.Session.Received); control frames and fragments escape it"
	cases := []struct {
		name  string
		frame func(i int) (ws.OpCode, bool, []byte)
		bug   string
	}{
		{"application pings", func(int) (ws.OpCode, bool, []byte) { return ws.OpText, true, []byte(`{"type":"ping"}`) }, ""},
		{"acks of unknown ids", func(int) (ws.OpCode, bool, []byte) {
			return ws.OpText, true, []byte(`{"type":"ack","ids":["unknown"]}`)
		}, ""},
		{"unknown types", func(int) (ws.OpCode, bool, []byte) { return ws.OpText, true, []byte(`{"type":"subscribe"}`) }, ""},
		// BUG (docs/security.md, "Known gaps" 1): only complete text
		// messages are counted (hub.Session.Received); pings, pongs and
		// fragments are not, so these floods are never closed.
		{"websocket pings", func(int) (ws.OpCode, bool, []byte) { return ws.OpPing, true, []byte("flood") }, bug},
		{"websocket pongs", func(int) (ws.OpCode, bool, []byte) { return ws.OpPong, true, nil }, bug},
		{"empty fragments", func(i int) (ws.OpCode, bool, []byte) {
			if i == 0 {
				return ws.OpText, false, nil
			}
			return ws.OpContinuation, false, nil
		}, bug},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.bug != "" {
				t.Cleanup(func() {
					if t.Failed() {
						t.Log(c.bug)
					}
				})
			}
			attack(t, nil, func(t *testing.T, d *Device) {
				var buf bytes.Buffer
				for i := 0; i < burst; i++ {
					op, fin, p := c.frame(i)
					writeFrameTo(&buf, op, fin, p)
				}
				// One write: the whole burst arrives within a second.
				_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = d.Conn.Write(buf.Bytes()) // the server may close before the end
			}, 4429)
		})
	}
}

// TestHostilePingFloodWithoutReading: clients that flood WebSocket pings
// and never read their pongs must not hold up the other connections. The
// pongs fill the socket buffers; a pong written inline by the reader then
// waits for its write deadline, and on the epoll layer the reader is one of
// a few shared workers (max(2, GOMAXPROCS)).
func TestHostilePingFloodWithoutReading(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	const attackers = 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var flooders []*Device
	for i := 0; i < attackers; i++ {
		d := dialTinyReceiveBuffer(t, n, MustToken(t, fmt.Sprintf("flooder-%d", i)))
		d.MustNext("welcome")
		flooders = append(flooders, d)
		var burst bytes.Buffer
		for j := 0; j < 256; j++ {
			writeFrameTo(&burst, ws.OpPing, true, bytes.Repeat([]byte("p"), 125))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = d.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := d.Conn.Write(burst.Bytes()); err != nil && !isTimeoutErr(err) {
					return // closed by the server
				}
			}
		}()
	}
	// Probe the bystander while the flood goes on; the pongs fill the
	// flooders' buffers within a few hundred milliseconds.
	var worst time.Duration
	const bound = 500 * time.Millisecond // a blocked pong write holds a worker for 1s
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end) && worst <= bound; {
		start := time.Now()
		b.Send(`{"type":"ping"}`)
		f, err := b.Next(2 * time.Second)
		worst = max(worst, time.Since(start))
		if err != nil || f.Type != "pong" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, d := range flooders {
		d.Conn.Close() // frees whatever still writes to them
	}
	if worst > bound {
		// BUG (epoll layer): conn.control writes each pong inline with a
		// 1s deadline, on one of the poller's few workers.
		t.Errorf("BUG: the bystander waited %v for a pong while %d clients flooded pings without reading; want < %v", worst, attackers, bound)
	}
	checkUnharmed(t, n, bystander(t, n)) // a new session: the old one may hold a late pong
}

// dialTinyReceiveBuffer connects a device whose socket has a receive buffer
// of a few KiB from the start, so that a server writing to it without the
// client reading blocks soon.
func dialTinyReceiveBuffer(t *testing.T, n *Node, tok string) *Device {
	t.Helper()
	nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return errors.Join(err, serr)
	}}
	dialer := ws.Dialer{
		Header:    ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}}),
		Protocols: []string{"tether.v1"},
		Timeout:   5 * time.Second,
		NetDial:   nd.DialContext,
	}
	c, br, _, err := dialer.Dial(context.Background(), n.WSURL+"/v1/connect")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	return &Device{tb: t, Conn: c, r: r}
}

// TestHostileAckFlood: 1000 frames of 1000 unknown ids each (a million ids)
// are ignored: the session's real acks among them still complete their
// deliveries, the connection stays usable, and no memory is left behind.
// That the session holds a bounded number of ack ids while the store is
// slow is shown by TestAckFloodBoundedWhileStoreStalls (fuzz_test.go).
func TestHostileAckFlood(t *testing.T) {
	noLeaks(t)
	frames := 1000
	if raceEnabled {
		frames = 150 // the race detector makes decoding ten times slower
	}
	n := MustOpenNode(t, "", func(h *hub.Config, _ *tetherhttp.Config) {
		h.MaxFrameRate = 1 << 20 // this test is about ids, not the frame rate
		h.Heartbeat = time.Minute
	})
	b := bystander(t, n)
	d := n.Dial(t, MustToken(t, "pos-1"))
	d.MustNext("welcome")
	var real []string
	for i := 0; i < 5; i++ {
		real = append(real, n.Publish(t, "device:pos-1", i))
	}
	for range real {
		d.MustNext("message")
	}
	heapBefore := liveHeap()
	ids := make([]string, 1000)
	for f := 0; f < frames; f++ {
		for i := range ids {
			ids[i] = fmt.Sprintf("01J0000000000000%04d%06d", f, i)
		}
		if f%(frames/len(real)) == 0 && f/(frames/len(real)) < len(real) {
			ids[0] = real[f/(frames/len(real))] // a real ack among the flood
		}
		d.Ack(ids...)
	}
	d.Send(`{"type":"ping"}`)
	d.MustNext("pong")
	for _, id := range real {
		eventually(t, 10*time.Second, "real ack of "+id+" recorded", func() bool { return deliveryState(t, n, id) == "acked" })
	}
	if grown := int64(liveHeap()) - int64(heapBefore); grown > 16<<20 {
		t.Errorf("live heap grew by %d MiB during an ack flood of %d unknown ids; want it bounded", grown>>20, frames*len(ids))
	}
	id := n.Publish(t, "device:pos-1", "after the flood")
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("after the flood got %+v, want %s", m, id)
	}
	checkUnharmed(t, n, b)
}

// TestHostileUnknownAcksIgnored: acks of ids the device never got (another
// device's message, made-up ids, empty strings) change nothing: the
// connection stays open and the device's own delivery is still in flight
// until it acks it itself.
func TestHostileUnknownAcksIgnored(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	other := n.Dial(t, MustToken(t, "other"))
	other.MustNext("welcome")
	theirs := n.Publish(t, "device:other", "not yours")
	other.MustNext("message")
	d := n.Dial(t, MustToken(t, "pos-1"))
	d.MustNext("welcome")
	mine := n.Publish(t, "device:pos-1", "yours")
	d.MustNext("message")
	d.Ack(theirs, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "", strings.Repeat("x", 500), "../../etc/passwd")
	d.Send(`{"type":"ping"}`)
	d.MustNext("pong")
	if st := deliveryState(t, n, theirs); st != "inflight" {
		t.Errorf("another device's ack changed %s to %q, want inflight", theirs, st)
	}
	if st := deliveryState(t, n, mine); st != "inflight" {
		t.Errorf("unknown acks changed %s to %q, want inflight", mine, st)
	}
	d.Ack(mine)
	eventually(t, 5*time.Second, "own ack", func() bool { return deliveryState(t, n, mine) == "acked" })
	other.Ack(theirs)
	eventually(t, 5*time.Second, "other's ack", func() bool { return deliveryState(t, n, theirs) == "acked" })
	checkUnharmed(t, n, b)
}

// TestHostileHugeBody: a publish announcing a 10 GB body (or streaming a
// chunked one without end) gets 413 after the server has read at most its
// limit, and the connection is closed: the client cannot make the server
// read gigabytes.
func TestHostileHugeBody(t *testing.T) {
	// A small --max-message-bytes keeps the batch limit (1000 messages) at
	// 5 MiB, so that the test is quick under -race too.
	const maxMessage = 4 << 10
	edit := func(_ *hub.Config, c *tetherhttp.Config) { c.MaxMessageBytes = maxMessage }
	cases := []struct {
		path    string
		chunked bool
		limit   int64 // what the server may read before it answers
	}{
		{"/v1/messages", false, maxMessage + 16<<10},
		{"/v1/messages", true, maxMessage + 16<<10},
		{"/v1/messages/batch", false, 1000 * (maxMessage + 1<<10)},
		{"/v1/messages/batch", true, 1000 * (maxMessage + 1<<10)},
	}
	t.Run("no api key", func(t *testing.T) {
		noLeaks(t)
		n := MustOpenNode(t, "", nil)
		start := time.Now()
		status, sent := hugeBody(t, n, "/v1/messages", false, "")
		if status != 401 || sent > 8<<20 || time.Since(start) > time.Second {
			t.Errorf("status %d after %v and %d MiB, want 401 at once", status, time.Since(start), sent>>20)
		}
	})
	for _, c := range cases {
		name := strings.TrimPrefix(c.path, "/v1/")
		if c.chunked {
			name += " chunked"
		}
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			n := MustOpenNode(t, "", edit)
			b := bystander(t, n)
			start := time.Now()
			status, sent := hugeBody(t, n, c.path, c.chunked, testAPIKey)
			if status != 413 {
				t.Errorf("status %d, want 413", status)
			}
			if sent > c.limit+16<<20 { // + what the socket buffers hold
				t.Errorf("the client sent %d MiB before the answer; the server reads too much", sent>>20)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("413 after %v, want it quickly", el)
			}
			t.Logf("413 after %v, %d MiB sent", time.Since(start), sent>>20)
			checkUnharmed(t, n, b)
		})
	}
}

// TestHostileInvalidTargetsAndIDs: malformed targets and ids are 400 with
// code "invalid" and a message, in single and batch publishes and in every
// path that takes an id; nothing is stored.
func TestHostileInvalidTargetsAndIDs(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	targets := []string{
		"", ":", "device", "device:", "group:", "device:a b", "user:pos-1", "DEVICE:pos-1",
		"device:" + strings.Repeat("a", 129), "device:é", "device:pos/1", "device:pos%2F1",
		"device:pos-1\x00", "device:\u202epos", " device:pos-1", "group:../../shop", "device:pos-1\n",
	}
	for _, tgt := range targets {
		checkInvalid(t, n, "POST", "/v1/messages", map[string]any{"target": tgt, "data": 1})
	}
	for _, id := range []string{" ", "a b", strings.Repeat("k", 129), "ключ", "id\x00", "id/1", "id\r\nX-Evil: 1"} {
		checkInvalid(t, n, "POST", "/v1/messages", map[string]any{"target": "device:pos-1", "data": 1, "id": id})
	}
	for _, body := range []any{
		map[string]any{"target": 7, "data": 1},
		map[string]any{"target": []string{"device:a"}, "data": 1},
		map[string]any{"target": "device:a", "data": 1, "id": 5},
		map[string]any{"target": "device:a", "data": 1, "ttl_s": "1h"},
		map[string]any{"target": "device:a", "data": 1, "ttl_s": 0},
		`{"target":"device:a","data":1}{"target":"device:b","data":2}`,
		`{"target":"device:a","data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
		`{"target":"device:a","data":{"a":1,}}`,
		`{"target":"device:a","data":NaN}`,
		`{"target":"device:a","data":"\ud800"` + "\xff}",
	} {
		checkInvalid(t, n, "POST", "/v1/messages", body)
	}
	for _, body := range []any{
		map[string]any{"messages": []any{}},
		map[string]any{"messages": nil},
		map[string]any{"messages": "x"},
		map[string]any{"messages": make([]map[string]any, 1001)},
	} {
		checkInvalid(t, n, "POST", "/v1/messages/batch", body)
	}
	// In a batch, each bad item has its own error and the good one passes.
	var batch struct {
		Results []struct {
			ID    string `json:"id"`
			Error *struct{ Code, Message string }
		} `json:"results"`
	}
	items := []any{map[string]any{"target": "device:pos-1", "data": 1}}
	for _, tgt := range targets {
		items = append(items, map[string]any{"target": tgt, "data": 1})
	}
	if code := n.API(t, "POST", "/v1/messages/batch", map[string]any{"messages": items}, &batch); code != 200 || len(batch.Results) != len(items) {
		t.Fatalf("batch: status %d, %d results, want 200 with %d", code, len(batch.Results), len(items))
	}
	goodItems := 1
	if r := batch.Results[0]; r.ID == "" || r.Error != nil {
		t.Errorf("good item: %+v", r)
	}
	for i, r := range batch.Results[1:] {
		if r.Error == nil || r.Error.Code != "invalid" || r.Error.Message == "" {
			t.Errorf("item with target %q: %+v, want an invalid error with a message", targets[i], r)
		}
	}
	// BUG: a ttl_s that rounds down to nothing passes newMessage and is
	// refused by the store, which fails the whole batch with 400 (naming a
	// server-made message id) instead of this item alone.
	tiny := []any{map[string]any{"target": "device:pos-1", "data": 1}, map[string]any{"target": "device:pos-1", "data": 1, "ttl_s": 1e-10}}
	batch.Results = nil
	if code := n.API(t, "POST", "/v1/messages/batch", map[string]any{"messages": tiny}, &batch); code != 200 || len(batch.Results) != 2 ||
		batch.Results[0].ID == "" || batch.Results[1].Error == nil || batch.Results[1].Error.Code != "invalid" {
		t.Errorf("BUG: batch with one item of ttl_s 1e-10: status %d, results %+v; want 200, the good item accepted and the other invalid", code, batch.Results)
	} else {
		goodItems++
	}
	for _, p := range []string{"a%20b", strings.Repeat("d", 129), "%C3%A9", "a%00b", "a%2Fb"} {
		checkInvalid(t, n, "GET", "/v1/devices/"+p, nil)
		checkInvalid(t, n, "GET", "/v1/groups/"+p, nil)
		checkInvalid(t, n, "PUT", "/v1/groups/"+p+"/devices/pos-1", nil)
		checkInvalid(t, n, "DELETE", "/v1/groups/shop-1/devices/"+p, nil)
	}
	var dev struct{ Pending int }
	n.API(t, "GET", "/v1/devices/pos-1", nil, &dev)
	if dev.Pending != goodItems { // the good batch items only
		t.Errorf("pos-1 has %d pending deliveries, want %d: an invalid request stored something", dev.Pending, goodItems)
	}
	checkUnharmed(t, n, b)
}

// TestHostileTokens: every token that is not HS256 signed with the node's
// secret, unexpired and well formed is refused with 401 before the upgrade
// (SPEC section 5), including algorithm confusion: other HMAC strengths
// with the right secret, alg "none", RS256 with a real key, an HS256 token
// keyed with an RSA public key, and an RS256 header over an HMAC signature.
func TestHostileTokens(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	exp := time.Now().Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "pos-1", "exp": exp}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	secret := []byte(testSecret)
	valid := sign(jwt.SigningMethodHS256, secret, good)
	parts := strings.Split(valid, ".")
	cases := map[string]string{
		"alg none":                                     sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"alg none, HS256 sig kept":                     handMade(`{"alg":"none","typ":"JWT"}`, parts[1], parts[2]),
		"alg NONE":                                     handMade(`{"alg":"NONE","typ":"JWT"}`, parts[1], ""),
		"no alg":                                       handMade(`{"typ":"JWT"}`, parts[1], parts[2]),
		"alg hs256 (lower case)":                       hmacMade(`{"alg":"hs256","typ":"JWT"}`, parts[1], secret),
		"HS384 with the secret":                        sign(jwt.SigningMethodHS384, secret, good),
		"HS512 with the secret":                        sign(jwt.SigningMethodHS512, secret, good),
		"RS256 with a real key":                        sign(jwt.SigningMethodRS256, rsaKey, good),
		"HS256 keyed with an RSA public key PEM":       sign(jwt.SigningMethodHS256, publicPEM, good),
		"RS256 header, HMAC signature with the secret": hmacMade(`{"alg":"RS256","typ":"JWT"}`, parts[1], secret),
		"signature stripped":                           parts[0] + "." + parts[1] + ".",
		"signature of another":                         parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":9999999999}`)) + "." + parts[2],
		"four parts":                                   valid + ".x",
		"wrong secret":                                 sign(jwt.SigningMethodHS256, []byte(testSecret+"x"), good),
		"empty secret":                                 hmacMade(`{"alg":"HS256","typ":"JWT"}`, parts[1], nil),
		"expired":                                      sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1", "exp": time.Now().Add(-time.Minute).Unix()}),
		"no exp":                                       sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1"}),
		"not valid before later":                       sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1", "exp": exp, "nbf": exp - 60}),
		"no sub":                                       sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp}),
		"bad sub":                                      sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos 1", "exp": exp}),
		"bad group":                                    sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1", "exp": exp, "groups": []string{"shop/1"}}),
		"groups not an array":                          sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1", "exp": exp, "groups": "shop-1"}),
		"longer than 8 KiB":                            sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "pos-1", "exp": exp, "pad": strings.Repeat("p", 9<<10)}),
		"garbage":                                      "not-a-jwt",
	}
	for name, tok := range cases {
		if _, code, _ := n.TryDial(tok, nil); code != 401 {
			t.Errorf("%s (header): status %d, want 401", name, code)
		}
		if _, code, _ := n.TryDialPath("/v1/connect?token="+url.QueryEscape(tok), nil); code != 401 {
			t.Errorf("%s (query): status %d, want 401", name, code)
		}
	}
	d, code, err := n.TryDial(valid, nil) // the control: the same claims, done right
	if err != nil {
		t.Fatalf("valid token: status %d: %v", code, err)
	}
	d.Conn.Close()
	checkUnharmed(t, n, b)
}

// handMade assembles a token from a JSON header and encoded claims and
// signature.
func handMade(header, claims, sig string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + claims + "." + sig
}

// hmacMade signs a JSON header and encoded claims with HMAC-SHA256 and key,
// whatever the header says.
func hmacMade(header, claims string, key []byte) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + claims
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// TestHostileOrigins: with --allowed-origins set, only an exact match of
// scheme, host and port passes (SPEC section 5); lookalikes get 403 before
// the token is even looked at, and so does a request with two Origin
// headers. No Origin at all is not a browser and passes on its token.
func TestHostileOrigins(t *testing.T) {
	noLeaks(t)
	const allowed = "https://shop.example.com"
	n := MustOpenNode(t, "", func(_ *hub.Config, c *tetherhttp.Config) { c.AllowedOrigins = []string{allowed} })
	b := bystander(t, n)
	tok := MustToken(t, "pos-1")
	refused := map[string][]string{
		"null":                    {"null"},
		"empty":                   {""},
		"other scheme":            {"http://shop.example.com"},
		"websocket scheme":        {"wss://shop.example.com"},
		"other port":              {"https://shop.example.com:8443"},
		"explicit default port":   {"https://shop.example.com:443"},
		"sibling subdomain":       {"https://api.example.com"},
		"parent domain":           {"https://example.com"},
		"child subdomain":         {"https://evil.shop.example.com"},
		"suffix trick":            {"https://shop.example.com.evil.com"},
		"inner suffix trick":      {"https://shop.example.evil.com"},
		"prefix trick":            {"https://evilshop.example.com"},
		"userinfo trick":          {"https://shop.example.com@evil.com"},
		"trailing slash":          {allowed + "/"},
		"path":                    {allowed + "/index.html"},
		"shorter host":            {"https://shop.example.co"},
		"longer host":             {"https://shop.example.comm"},
		"list in one header":      {allowed + ", https://evil.com"},
		"two headers, good first": {allowed, "https://evil.com"},
		"two headers, good last":  {"https://evil.com", allowed},
		"two good headers":        {allowed, allowed},
		"wildcard":                {"*"},
	}
	for name, origins := range refused {
		if _, code, _ := n.TryDial(tok, http.Header{"Origin": origins}); code != 403 {
			t.Errorf("origin %s %q: status %d, want 403", name, origins, code)
		}
	}
	// A refused origin is refused before the token: no token oracle for pages.
	if _, code, _ := n.TryDial("", http.Header{"Origin": {"https://evil.com"}}); code != 403 {
		t.Errorf("refused origin without token: status %d, want 403", code)
	}
	for name, h := range map[string]http.Header{"exact": {"Origin": {allowed}}, "host case": {"Origin": {"https://SHOP.example.com"}}, "no origin": {}} {
		d, code, err := n.TryDial(tok, h)
		if err != nil {
			t.Errorf("%s: status %d: %v, want 101", name, code, err)
			continue
		}
		d.Conn.Close()
	}
	checkUnharmed(t, n, b)
}

// TestHostileMalformedRequests: requests a smuggling or desync attack
// would send are refused by the HTTP server with 400 and do not disturb
// anyone else.
func TestHostileMalformedRequests(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	auth := "Authorization: Bearer " + testAPIKey + "\r\n"
	body := `{"target":"device:pos-1","data":1}`
	for name, req := range map[string]string{
		"content-length and chunked": "POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"two content-lengths":        "POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2\r\nContent-Length: 35\r\n\r\n" + body,
		"bad chunk size":             "POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n",
		"space before colon":         "POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length : 35\r\n\r\n" + body,
		"no host":                    "POST /v1/messages HTTP/1.1\r\n" + auth + "Content-Length: 35\r\n\r\n" + body,
		"bare CR in header":          "GET /v1/connect HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
		"garbage request line":       "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
	} {
		if status := rawStatus(t, n, req); status != 400 {
			t.Errorf("%s: status %d, want 400", name, status)
		}
	}
	var dev struct{ Pending int }
	n.API(t, "GET", "/v1/devices/pos-1", nil, &dev)
	if dev.Pending != 0 {
		t.Errorf("a malformed request published %d messages", dev.Pending)
	}
	checkUnharmed(t, n, b)
}

// TestHostileOversizeHeaders: request headers beyond MaxHeaderBytes are
// refused with 431 before any handler runs, on the upgrade and the API.
func TestHostileOversizeHeaders(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	for name, extra := range map[string]string{
		"one huge header": "X-Pad: " + strings.Repeat("a", 64<<10) + "\r\n",
		"many headers":    strings.Repeat("X-A: b\r\n", 8000),
		"huge token":      "Authorization: Bearer " + strings.Repeat("t", 64<<10) + "\r\n",
	} {
		for _, req := range []string{
			"GET /v1/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
			"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testAPIKey + "\r\nContent-Length: 2\r\n",
		} {
			status := rawStatus(t, n, req+extra+"\r\n")
			if status != 431 {
				t.Errorf("%s on %s: status %d, want 431", name, strings.Fields(req)[1], status)
			}
		}
	}
	checkUnharmed(t, n, b)
}

// TestHostileHandshakeSlowloris: a client that sends its request headers
// one byte every 200ms is cut off by ReadHeaderTimeout: the server closes
// its socket (the client reads EOF) and the bystander is unharmed.
func TestHostileHandshakeSlowloris(t *testing.T) {
	noLeaks(t)
	const timeout = time.Second
	n := MustOpenNode(t, "", func(_ *hub.Config, c *tetherhttp.Config) { c.ReadHeaderTimeout = timeout })
	b := bystander(t, n)
	c, err := net.Dial("tcp", n.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /v1/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-Slow: " + strings.Repeat("s", 100)
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		var b [1]byte
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.Read(b[:]); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	var el time.Duration
trickle:
	for i := 0; i < len(req) && time.Since(start) < 3*timeout; i++ {
		if _, err := c.Write([]byte{req[i]}); err != nil {
			break // the server closed the socket
		}
		select {
		case el = <-closed:
			break trickle
		case <-time.After(200 * time.Millisecond):
		}
	}
	if el == 0 {
		select {
		case el = <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the server kept a handshake that sent one byte every 200ms open for %v", time.Since(start))
		}
	}
	if el < timeout-100*time.Millisecond || el > 2*timeout+500*time.Millisecond {
		t.Errorf("server closed the slow handshake after %v, want about ReadHeaderTimeout (%v)", el, timeout)
	}
	checkUnharmed(t, n, b)
}

// TestHostileFrameSlowloris: after the upgrade, a frame trickled one byte
// every 50ms never completes within 2 × heartbeat: the session is closed
// with 4408 although bytes keep arriving.
func TestHostileFrameSlowloris(t *testing.T) {
	attack(t, func(h *hub.Config, _ *tetherhttp.Config) { h.Heartbeat = 300 * time.Millisecond }, func(t *testing.T, d *Device) {
		var buf bytes.Buffer
		writeFrameTo(&buf, ws.OpText, true, []byte(pingOfSize(200)))
		stop := time.Now().Add(2 * time.Second)
		for _, c := range buf.Bytes() {
			if time.Now().After(stop) {
				return
			}
			if _, err := d.Conn.Write([]byte{c}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}, 4408)
}

// TestHostilePermessageDeflate: compression offered by the client is not
// accepted (no decompression bombs), and a compressed frame (RSV1) is a
// protocol error, 1002.
func TestHostilePermessageDeflate(t *testing.T) {
	noLeaks(t)
	n := MustOpenNode(t, "", nil)
	b := bystander(t, n)
	c, err := net.Dial("tcp", n.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /v1/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: tether.v1\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n"+
		"Authorization: Bearer %s\r\n\r\n", MustToken(t, "pos-1"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) != 0 {
		t.Errorf("server accepted extensions %q; it must not negotiate compression", ext)
	}
	d := &Device{tb: t, Conn: c, r: br}
	d.MustNext("welcome")
	// "Hello" compressed with DEFLATE, as permessage-deflate would send it.
	compressed := []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}
	sendHeader(t, d, ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: int64(len(compressed))}, compressed...)
	expectClose(t, d, 1002)
	checkUnharmed(t, n, b)
}

// TestHostileAPIKeyNeverLogged: whatever is sent, the server's log holds
// neither the API key, nor a wrong key a client tried, nor a device token,
// nor the token secret, even at debug level and on error paths.
func TestHostileAPIKeyNeverLogged(t *testing.T) {
	noLeaks(t)
	var mu sync.Mutex
	var logs bytes.Buffer
	logger := newBufferLogger(&mu, &logs)
	n := MustOpenNode(t, "", func(h *hub.Config, c *tetherhttp.Config) { h.Logger = logger; c.Logger = logger })
	const wrong = "wrong-api-key-0123456789"
	tok := MustToken(t, "pos-1")
	b := bystander(t, n)
	for _, key := range []string{testAPIKey, wrong, "Bearer " + testAPIKey, testAPIKey + " "} {
		for _, p := range []string{"/v1/messages", "/v1/messages/batch", "/v1/devices/pos-1", "/v1/nope", "/v1/devices/a%20b"} {
			n.APIKey(t, key, "POST", p, `{"target":"device:pos-1","data":`, nil)
			n.APIKey(t, key, "GET", p, nil, nil)
		}
	}
	if _, code, _ := n.TryDial(tok+"x", nil); code != 401 {
		t.Errorf("tampered token: %d, want 401", code)
	}
	rawStatus(t, n, "GET /v1/devices/pos-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testAPIKey+"\r\nX-Pad: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	rawStatus(t, n, "GET /v1/devices/pos-1 HTTP/1.1\r\nAuthorization: Bearer "+wrong+"\r\n\x00\r\n\r\n")
	// Error paths that do log: the store is gone, requests get 503.
	n.Store.Close()
	n.APIKey(t, testAPIKey, "POST", "/v1/messages", map[string]any{"target": "device:pos-1", "data": 1}, nil)
	n.APIKey(t, testAPIKey, "GET", "/v1/devices/pos-1", nil, nil)
	n.TryDial(tok, nil)
	n.TryDialPath("/v1/connect?token="+tok, nil) // the query is never logged either
	b.Send(`{"type":"ping"}`)
	b.MustNext("pong")
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if out == "" {
		t.Fatal("nothing was logged: the test checks nothing")
	}
	for name, secret := range map[string]string{"API key": testAPIKey, "wrong key": wrong, "device token": tok, "token secret": testSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds the %s %q:\n%s", name, secret, out)
		}
	}
	t.Logf("%d log lines checked", strings.Count(out, "\n"))
}

// attack runs one hostile session: a bystander connects, the attacked
// device gets a delivery it does not ack, send misbehaves, and the server
// must close with code and its socket. Then the bystander is unharmed and
// the attacked device gets its delivery again on a new connection.
func attack(t *testing.T, edit func(*hub.Config, *tetherhttp.Config), send func(*testing.T, *Device), code int) {
	t.Helper()
	noLeaks(t)
	n := MustOpenNode(t, "", edit)
	b := bystander(t, n)
	tok := MustToken(t, "attacker")
	d := n.Dial(t, tok)
	d.MustNext("welcome")
	pending := n.Publish(t, "device:attacker", "in flight during the attack")
	d.MustNext("message")
	stop := keepAlive(t, b)
	send(t, d)
	expectClose(t, d, code)
	stop()
	checkUnharmed(t, n, b)
	eventually(t, 2*time.Second, "attacked session gone", func() bool { return n.Hub.Connections() == 1 })
	again := n.Dial(t, tok)
	again.MustNext("welcome")
	if m := again.MustNext("message"); m.ID != pending || m.Attempt < 2 {
		t.Fatalf("after reconnect got %+v, want %s again (nothing accepted is lost)", m, pending)
	}
	again.Ack(pending)
	eventually(t, 5*time.Second, "delivery acked after the attack", func() bool { return deliveryState(t, n, pending) == "acked" })
}

// keepAlive answers b's heartbeat pings until stop is called, so that
// tests with a short heartbeat keep their bystander; b must not be used
// meanwhile.
func keepAlive(t *testing.T, b *Device) (stop func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_ = b.Conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			f, err := ws.ReadFrame(b.r)
			select {
			case <-quit:
				return
			default:
			}
			if err == nil && f.Header.OpCode == ws.OpPing {
				_ = b.Conn.SetWriteDeadline(time.Now().Add(time.Second))
				_ = ws.WriteFrame(b.Conn, ws.MaskFrame(ws.NewPongFrame(f.Payload)))
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop)
	return stop
}

// noLeaks checks, when the test ends (after its nodes are closed), that no
// goroutine started during the test is left.
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	// net/http lingers up to 500ms on a connection it closes after an
	// oversized request (closeWriteAndWait): give it time.
	t.Cleanup(func() {
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if goleak.Find(opt) == nil {
				return
			}
		}
		goleak.VerifyNone(t, opt)
	})
}

// bystander connects a device that no attack targets.
func bystander(t *testing.T, n *Node) *Device {
	t.Helper()
	b := n.Dial(t, MustToken(t, "bystander"))
	b.MustNext("welcome")
	return b
}

// checkUnharmed checks that b still gets a pong and a published message,
// and that its ack is recorded.
func checkUnharmed(t *testing.T, n *Node, b *Device) {
	t.Helper()
	b.Send(`{"type":"ping"}`)
	if f, err := b.Next(5 * time.Second); err != nil || f.Type != "pong" {
		t.Fatalf("bystander: got %+v, %v, want pong", f, err)
	}
	id := n.Publish(t, "device:bystander", "still served")
	if f, err := b.Next(5 * time.Second); err != nil || f.ID != id {
		t.Fatalf("bystander: got %+v, %v, want message %s", f, err, id)
	}
	b.Ack(id)
	eventually(t, 5*time.Second, "bystander ack", func() bool { return deliveryState(t, n, id) == "acked" })
}

// deliveryState returns the state of message id's first delivery.
func deliveryState(t *testing.T, n *Node, id string) string {
	t.Helper()
	var st struct {
		Deliveries []struct{ State string } `json:"deliveries"`
	}
	n.API(t, "GET", "/v1/messages/"+id, nil, &st)
	if len(st.Deliveries) == 0 {
		return ""
	}
	return st.Deliveries[0].State
}

// pingOfSize returns an application ping frame of exactly size bytes.
func pingOfSize(size int) string {
	const head, tail = `{"type":"ping","pad":"`, `"}`
	return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
}

// checkInvalid calls the API and expects 400 with code "invalid" and a
// message.
func checkInvalid(t *testing.T, n *Node, method, path string, body any) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	code := n.API(t, method, path, body, &e)
	if code != 400 || e.Error.Code != "invalid" || e.Error.Message == "" {
		b, _ := json.Marshal(body)
		t.Errorf("%s %s %.80s: status %d %+v, want 400 invalid with a message", method, path, b, code, e.Error)
	}
}

// rawStatus sends req on a new connection and returns the response status.
func rawStatus(t *testing.T, n *Node, req string) int {
	t.Helper()
	c, err := net.Dial("tcp", n.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = io.WriteString(c, req) }() // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.40q: %v", req, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hugeBody posts a body announced as 10 GB (or chunked without end),
// streaming until the server answers, and returns the status and how many
// body bytes the client managed to send.
func hugeBody(t *testing.T, n *Node, path string, chunked bool, key string) (status int, sent int64) {
	t.Helper()
	c, err := net.Dial("tcp", n.Server.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	head := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	if key != "" {
		head += "Authorization: Bearer " + key + "\r\n"
	}
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		head += "Content-Length: 10000000000\r\n\r\n"
	}
	prefix := `{"target":"device:pos-1","data":"`
	if strings.HasSuffix(path, "/batch") {
		prefix = `{"messages":[{"target":"device:pos-1","data":"`
	}
	done := make(chan int64, 1)
	go func() {
		var total int64
		defer func() { done <- total }()
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		first := append([]byte(prefix), chunk[len(prefix):]...)
		for i := 0; total < 10_000_000_000; i++ {
			p := chunk
			if i == 0 {
				p = first
			}
			if chunked {
				if _, err := fmt.Fprintf(c, "%x\r\n", len(p)); err != nil {
					return
				}
			}
			m, err := c.Write(p)
			total += int64(m)
			if err != nil {
				return
			}
			if chunked {
				if _, err := io.WriteString(c, "\r\n"); err != nil {
					return
				}
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	c.Close() // ends the writer if the server has not closed yet
	return resp.StatusCode, <-done
}

// liveHeap returns the bytes of live heap objects after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// newBufferLogger returns a debug-level logger writing text lines to buf.
func newBufferLogger(mu *sync.Mutex, buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// raceEnabled reports whether the test binary was built with -race.
var raceEnabled = func() bool {
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
