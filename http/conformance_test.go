package http_test

// A Go-native subset of the Autobahn|Testsuite case categories, run against
// tether's /v1/connect with raw frames (both I/O layers: add
// -args -io=goroutine). Categories: 1-2 framing and pings, 3 reserved bits,
// 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close handling. The payloads are
// tether protocol frames, since a text message must be one JSON object.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/internal/nodetest"
)

// conformanceCase sends frames on a fresh session, then either expects the
// server to close with want (and its socket), or runs check.
type conformanceCase struct {
	name  string
	send  func(t *testing.T, d *nodetest.Device)
	want  int
	check func(t *testing.T, d *nodetest.Device)
}

func TestConformance(t *testing.T) {
	noLeaks(t)
	n := mustOpenNode(t, nil)
	b := bystander(t, n)
	for i, c := range conformanceCases() {
		t.Run(c.name, func(t *testing.T) {
			d := n.Dial(t, nodetest.MustToken(t, fmt.Sprintf("conformance-%d", i)))
			d.MustNext("welcome")
			c.send(t, d)
			if c.check != nil {
				c.check(t, d)
				return
			}
			expectClose(t, d, c.want)
		})
	}
	checkUnharmed(t, n, b)
}

func conformanceCases() []conformanceCase {
	ping := []byte(`{"type":"ping"}`)
	cases := []conformanceCase{
		// 1, 2: framing, pings and pongs.
		{name: "unmasked text frame", want: 1002, send: func(t *testing.T, d *nodetest.Device) {
			sendHeader(t, d, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(ping))}, ping...)
		}},
		{name: "unmasked ping", want: 1002, send: func(t *testing.T, d *nodetest.Device) {
			sendHeader(t, d, ws.Header{Fin: true, OpCode: ws.OpPing, Length: 2}, 'h', 'i')
		}},
		{name: "ping with empty payload", send: frames(ws.OpPing, true, ""), check: expectPong("")},
		{name: "ping with 125-byte payload", send: frames(ws.OpPing, true, string(bytesUpTo(125))), check: expectPong(string(bytesUpTo(125)))},
		{name: "ping with 126-byte payload", want: 1002, send: frames(ws.OpPing, true, string(bytesUpTo(126)))},
		{name: "pong with 126-byte payload", want: 1002, send: frames(ws.OpPong, true, string(bytesUpTo(126)))},
		{name: "unsolicited pong is ignored", send: frames(ws.OpPong, true, "unsolicited", ws.OpText, true, string(ping)), check: expectAppPong},
		{name: "64-bit length with the top bit set", send: func(t *testing.T, d *nodetest.Device) {
			// ws.WriteHeader refuses it: build the header by hand.
			h := []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4}
			sendBytes(t, d, h)
		}, check: expectFailed(1002)},
		{name: "non-minimal 16-bit length", send: func(t *testing.T, d *nodetest.Device) {
			// RFC 6455 asks senders for the minimal length form; receivers
			// may accept the longer one, as tether does.
			mask := ws.NewMask()
			p := bytes.Clone(ping)
			ws.Cipher(p, mask, 0)
			h := append([]byte{0x81, 0x80 | 126, 0, byte(len(p))}, mask[:]...)
			sendBytes(t, d, append(h, p...))
		}, check: expectAppPong},

		// 3: reserved bits.
		{name: "RSV1 on text", want: 1002, send: rsv(ws.OpText, 4, ping)},
		{name: "RSV2 on text", want: 1002, send: rsv(ws.OpText, 2, ping)},
		{name: "RSV3 on text", want: 1002, send: rsv(ws.OpText, 1, ping)},
		{name: "RSV1-3 on ping", want: 1002, send: rsv(ws.OpPing, 7, []byte("x"))},
		{name: "RSV2 on close", want: 1002, send: rsv(ws.OpClose, 2, closePayload(1000, ""))},

		// 5: fragmentation.
		{name: "fragmented ping", want: 1002, send: frames(ws.OpPing, false, "a")},
		{name: "fragmented close", want: 1002, send: func(t *testing.T, d *nodetest.Device) {
			sendFrame(t, d, ws.OpClose, false, closePayload(1000, ""))
		}},
		{name: "ping inside a fragmented message", send: frames(ws.OpText, false, `{"type":`, ws.OpPing, true, "inside", ws.OpContinuation, true, `"ping"}`),
			check: func(t *testing.T, d *nodetest.Device) {
				expectPong("inside")(t, d)
				expectAppPong(t, d)
			}},
		{name: "pong inside a fragmented message", send: frames(ws.OpText, false, `{"type":`, ws.OpPong, true, "x", ws.OpContinuation, true, `"ping"}`), check: expectAppPong},
		{name: "one-byte fragments", send: func(t *testing.T, d *nodetest.Device) {
			var buf bytes.Buffer
			for i, c := range ping {
				op := ws.OpContinuation
				if i == 0 {
					op = ws.OpText
				}
				writeFrameTo(&buf, op, i == len(ping)-1, []byte{c})
			}
			sendBytes(t, d, buf.Bytes())
		}, check: expectAppPong},
		{name: "empty fragments", send: frames(ws.OpText, false, "", ws.OpContinuation, false, "", ws.OpContinuation, true, string(ping)), check: expectAppPong},
		{name: "continuation without a start", want: 1002, send: frames(ws.OpContinuation, true, string(ping))},
		{name: "unfinished continuation without a start", want: 1002, send: frames(ws.OpContinuation, false, `{"type":`)},
		{name: "text inside a fragmented message", want: 1002, send: frames(ws.OpText, false, `{"type":`, ws.OpText, true, string(ping))},
		{name: "binary inside a fragmented message", want: 1002, send: frames(ws.OpText, false, `{"type":`, ws.OpBinary, true, "x")},

		// 6: UTF-8.
		{name: "invalid UTF-8 byte", want: 1007, send: frames(ws.OpText, true, "{\"type\":\"ping\",\"x\":\"\xff\"}")},
		{name: "overlong UTF-8", want: 1007, send: frames(ws.OpText, true, "{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}")},
		{name: "UTF-8 surrogate", want: 1007, send: frames(ws.OpText, true, "{\"type\":\"ping\",\"x\":\"\xed\xa0\x80\"}")},
		{name: "UTF-8 beyond U+10FFFF", want: 1007, send: frames(ws.OpText, true, "{\"type\":\"ping\",\"x\":\"\xf4\x90\x80\x80\"}")},
		{name: "truncated UTF-8 at the end", want: 1007, send: frames(ws.OpText, true, "{\"type\":\"ping\"}\xe2\x82")},
		{name: "UTF-8 split across fragments", send: frames(
			ws.OpText, false, "{\"type\":\"ping\",\"x\":\"\xc3",
			ws.OpContinuation, false, "\xa9\xe2\x82",
			ws.OpContinuation, false, "\xac\xf0\x9d",
			ws.OpContinuation, true, "\x84\x9e\"}"),
			check: expectAppPong},
		{name: "invalid UTF-8 across fragments", want: 1007, send: frames(
			ws.OpText, false, "{\"type\":\"ping\",\"x\":\"\xce",
			ws.OpContinuation, true, "a\"}")},

		// 7: close handling.
		{name: "close 1000 is echoed", send: frames(ws.OpClose, true, string(closePayload(1000, "bye"))), check: expectEcho(1000)},
		{name: "close without payload is echoed", send: frames(ws.OpClose, true, ""), check: expectEcho(1000)},
		{name: "close 1001 is echoed", send: frames(ws.OpClose, true, string(closePayload(1001, ""))), check: expectEcho(1001)},
		{name: "close 3000 is echoed", send: frames(ws.OpClose, true, string(closePayload(3000, "app"))), check: expectEcho(3000)},
		{name: "close 4999 is echoed", send: frames(ws.OpClose, true, string(closePayload(4999, ""))), check: expectEcho(4999)},
		{name: "close with 1-byte payload", want: 1002, send: frames(ws.OpClose, true, "\x03")},
		{name: "close reason with invalid UTF-8", want: 1002, send: frames(ws.OpClose, true, string(closePayload(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")))},
		{name: "close with 124-byte reason", send: frames(ws.OpClose, true, string(closePayload(1000, string(bytes.Repeat([]byte("r"), 123))))), check: expectEcho(1000)},
		{name: "close with 126-byte payload", want: 1002, send: frames(ws.OpClose, true, string(closePayload(1000, string(bytes.Repeat([]byte("r"), 124)))))},
	}
	// 4: reserved opcodes.
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		cases = append(cases, conformanceCase{name: fmt.Sprintf("reserved opcode %d", op), want: 1002, send: frames(op, true, "x")})
	}
	// 7.9: invalid close codes.
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, conformanceCase{name: fmt.Sprintf("close with code %d", code), want: 1002, send: frames(ws.OpClose, true, string(closePayload(code, "")))})
	}
	return cases
}

// frames returns a sender of masked frames given as (opcode, fin, payload)
// triples.
func frames(spec ...any) func(t *testing.T, d *nodetest.Device) {
	return func(t *testing.T, d *nodetest.Device) {
		t.Helper()
		var buf bytes.Buffer
		for i := 0; i+2 < len(spec); i += 3 {
			writeFrameTo(&buf, spec[i].(ws.OpCode), spec[i+1].(bool), []byte(spec[i+2].(string)))
		}
		sendBytes(t, d, buf.Bytes())
	}
}

// rsv returns a sender of one frame with reserved bits bits (RSV1 = 4).
func rsv(op ws.OpCode, bits byte, payload []byte) func(t *testing.T, d *nodetest.Device) {
	return func(t *testing.T, d *nodetest.Device) {
		t.Helper()
		sendHeader(t, d, ws.Header{Fin: true, Rsv: bits, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}, payload...)
	}
}

func closePayload(code int, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(p, reason...)
}

// bytesUpTo returns n bytes 0, 1, 2, ….
func bytesUpTo(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// expectPong checks that the next frame is a WebSocket pong with payload.
func expectPong(payload string) func(t *testing.T, d *nodetest.Device) {
	return func(t *testing.T, d *nodetest.Device) {
		t.Helper()
		f, err := nextRaw(d, 3*time.Second)
		if err != nil {
			t.Fatalf("want pong: %v", err)
		}
		if f.Header.OpCode != ws.OpPong || string(f.Payload) != payload {
			t.Fatalf("got opcode %d payload %q, want pong with %q", f.Header.OpCode, f.Payload, payload)
		}
	}
}

// expectAppPong checks that the session answers with an application pong:
// the last message was assembled and the connection is open.
func expectAppPong(t *testing.T, d *nodetest.Device) {
	t.Helper()
	f, err := nextRaw(d, 3*time.Second)
	if err != nil {
		t.Fatalf("want the application pong: %v", err)
	}
	if f.Header.OpCode != ws.OpText || string(f.Payload) != `{"type":"pong"}` {
		t.Fatalf("got opcode %d payload %q, want text {\"type\":\"pong\"}", f.Header.OpCode, f.Payload)
	}
}

// expectEcho checks the close handshake: the server echoes a close frame
// with code and closes its socket.
func expectEcho(code int) func(t *testing.T, d *nodetest.Device) {
	return func(t *testing.T, d *nodetest.Device) {
		t.Helper()
		expectClose(t, d, code)
	}
}

// expectFailed accepts either way RFC 6455 allows to fail a connection: a
// close frame with code, or the socket closed without one.
func expectFailed(code int) func(t *testing.T, d *nodetest.Device) {
	return func(t *testing.T, d *nodetest.Device) {
		t.Helper()
		start := time.Now()
		f, err := nextRaw(d, 3*time.Second)
		switch {
		case err == nil && f.Header.OpCode == ws.OpClose:
			if got := nodetest.CloseCode(f.Payload); got != code {
				t.Fatalf("close code %d, want %d", got, code)
			}
			expectEOF(t, d)
		case err == nil:
			t.Fatalf("got opcode %d, want the connection failed", f.Header.OpCode)
		case isTimeoutErr(err):
			t.Fatalf("connection still open after %v", time.Since(start))
		default:
			t.Logf("closed without a close frame after %v (%v)", time.Since(start), err)
		}
	}
}

// expectClose reads until the server's close frame, checks its code, and
// then that the server closes its side of the socket (the client reads EOF)
// within the close grace period.
func expectClose(t *testing.T, d *nodetest.Device, code int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		f, err := nextRaw(d, time.Until(deadline))
		if err != nil {
			t.Fatalf("want close %d, got %v", code, err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		if got := nodetest.CloseCode(f.Payload); got != code {
			t.Fatalf("close code %d (%q), want %d", got, f.Payload, code)
		}
		break
	}
	expectEOF(t, d)
}

// expectEOF checks that the server closes its side of the socket within
// the close grace period (plus a margin), discarding what it still sends.
func expectEOF(t *testing.T, d *nodetest.Device) {
	t.Helper()
	_ = d.Conn.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	_, err := io.Copy(io.Discard, d.Reader())
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close its socket after the close frame")
	}
}

// nextRaw reads the next frame of any kind but the server's heartbeat
// pings, unmasking nothing (server frames are not masked).
func nextRaw(d *nodetest.Device, timeout time.Duration) (ws.Frame, error) {
	_ = d.Conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := ws.ReadFrame(d.Reader())
		if err != nil || f.Header.OpCode != ws.OpPing {
			return f, err
		}
	}
}

// sendFrame sends one masked frame; it may be invalid (fragmented control
// frames, reserved opcodes).
func sendFrame(t testing.TB, d *nodetest.Device, op ws.OpCode, fin bool, payload []byte) {
	t.Helper()
	var buf bytes.Buffer
	writeFrameTo(&buf, op, fin, payload)
	sendBytes(t, d, buf.Bytes())
}

// sendHeader sends h as given (its Length need not match) followed by
// payload, masked with h.Mask when h.Masked.
func sendHeader(t testing.TB, d *nodetest.Device, h ws.Header, payload ...byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		t.Fatal(err)
	}
	p := bytes.Clone(payload)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	buf.Write(p)
	sendBytes(t, d, buf.Bytes())
}

func sendBytes(t testing.TB, d *nodetest.Device, b []byte) {
	t.Helper()
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.Conn.Write(b); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// writeFrameTo appends one masked frame to buf.
func writeFrameTo(buf *bytes.Buffer, op ws.OpCode, fin bool, payload []byte) {
	h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	_ = ws.WriteHeader(buf, h)
	p := bytes.Clone(payload)
	ws.Cipher(p, h.Mask, 0)
	buf.Write(p)
}
