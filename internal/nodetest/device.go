package nodetest

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// dialTimeout bounds the upgrades of Node.Dial, TryDial and TryDialPath;
// frameTimeout is how long MustNext waits for a frame.
const (
	dialTimeout  = 5 * time.Second
	frameTimeout = 5 * time.Second
)

// Device is a raw WebSocket client of the tether.v1 protocol: it writes
// the literal frames a test gives it and decodes what the server sends.
// The methods that fail a test (Send, SendFrame, Ack, MustNext,
// MustClose) need the Device's testing.TB: they may be called only from
// the test's goroutine, on a Device from Node.Dial, Node.Connect or
// NewDevice. Next and SendJSON fail no test and suit other goroutines.
type Device struct {
	// Conn is the connection; a test may write or read it raw, and close
	// it.
	Conn net.Conn
	// Silent devices do not answer WebSocket pings while reading.
	Silent bool

	tb testing.TB
	r  io.Reader // Conn behind what the handshake read ahead
}

// Frame is a decoded server frame; each type fills its own fields.
type Frame struct {
	Type        string          `json:"type"`
	Device      string          `json:"device"`
	Groups      []string        `json:"groups"`
	Node        string          `json:"node"`
	HeartbeatMS int64           `json:"heartbeat_ms"`
	ID          string          `json:"id"`
	Target      string          `json:"target"`
	Data        json.RawMessage `json:"data"`
	PublishedAt string          `json:"published_at"`
	Attempt     int             `json:"attempt"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
}

// CloseError is the error of Next when the server sent a close frame.
type CloseError struct{ Code int }

// Error says which code the connection closed with.
func (e CloseError) Error() string { return fmt.Sprintf("closed with %d", e.Code) }

// CloseCode returns the status code of a close frame's payload, or 1005
// (no status) when it has none.
func CloseCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}

// DialError is an upgrade the server refused with an HTTP answer.
type DialError struct {
	Status int
	Header http.Header // nil if the answer's header could not be read
	Body   []byte      // the answer's body, when it had a Content-Length
	Err    error
}

// Error says which status refused the upgrade.
func (e *DialError) Error() string {
	return fmt.Sprintf("upgrade refused with %d: %v", e.Status, e.Err)
}

// Unwrap returns the dialer's error (a ws.StatusError).
func (e *DialError) Unwrap() error { return e.Err }

// Dial opens a tether.v1 WebSocket connection to url
// (ws://host:port/v1/connect, with a query if need be) with header and,
// unless tok is "", tok as bearer token, within timeout. An upgrade the
// server refused returns a *DialError. The Device has no testing.TB (see
// NewDevice); the caller closes its Conn.
func Dial(url, tok string, header http.Header, timeout time.Duration) (*Device, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	var refused *DialError
	dialer := ws.Dialer{
		Header:    ws.HandshakeHeaderHTTP(h),
		Protocols: []string{"tether.v1"},
		Timeout:   timeout,
		OnStatusError: func(status int, _ []byte, resp io.Reader) {
			refused = &DialError{Status: status}
			if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
				refused.Header = r.Header
				if r.ContentLength >= 0 {
					refused.Body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
				}
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, br, _, err := dialer.Dial(ctx, url)
	if err != nil {
		if refused != nil {
			refused.Err = err
			return nil, refused
		}
		return nil, err
	}
	var r io.Reader = c
	if br != nil { // the welcome may have arrived with the handshake
		r = io.MultiReader(br, c)
	}
	return &Device{Conn: c, r: r}, nil
}

// NewDevice returns a Device on a connection the test upgraded itself
// (an unusual handshake or socket), reading from r: c, or c behind what
// the handshake read ahead. tb may be nil for a Device used only with
// Next and SendJSON.
func NewDevice(tb testing.TB, c net.Conn, r io.Reader) *Device {
	return &Device{Conn: c, tb: tb, r: r}
}

// Dial connects a device with tok (see MustToken); it fails the test
// unless the upgrade succeeds. The connection is closed when the test
// ends.
func (n *Node) Dial(tb testing.TB, tok string) *Device {
	tb.Helper()
	d, status, err := n.TryDial(tok, nil)
	n.Contract.Report(tb)
	if err != nil {
		tb.Fatalf("dial: status %d: %v", status, err)
	}
	d.tb = tb
	tb.Cleanup(func() { d.Conn.Close() })
	return d
}

// Connect dials device with a token for groups and reads its welcome frame,
// failing the test otherwise.
func (n *Node) Connect(tb testing.TB, device string, groups ...string) *Device {
	tb.Helper()
	d := n.Dial(tb, MustToken(tb, device, groups...))
	d.MustNext("welcome")
	return d
}

// TryDial connects with tok ("" for none) and header and returns the HTTP
// status: 101 on success, that of the refusal, or 0 if there was no
// answer. The Device has no testing.TB; the caller closes its Conn.
func (n *Node) TryDial(tok string, header http.Header) (*Device, int, error) {
	return n.tryDial("/v1/connect", tok, header)
}

// TryDialPath is TryDial to path (with a query, say) with header only.
func (n *Node) TryDialPath(path string, header http.Header) (*Device, int, error) {
	return n.tryDial(path, "", header)
}

func (n *Node) tryDial(path, tok string, header http.Header) (*Device, int, error) {
	d, err := Dial(n.WSURL+path, tok, header, dialTimeout)
	if err != nil {
		status := 0
		if de, ok := err.(*DialError); ok {
			status = de.Status
			n.Contract.checkRefusal(n.URL+path, tok, header, de)
		}
		return nil, status, err
	}
	return d, http.StatusSwitchingProtocols, nil
}

// Reader returns what reads the connection: Conn behind whatever the
// handshake read ahead. A test that reads raw frames reads them from it.
func (d *Device) Reader() io.Reader { return d.r }

// errNoTB is the panic of a Device method that fails a test called on a
// Device that has none.
var errNoTB = errors.New("nodetest: this Device has no testing.TB; get it from Node.Dial or Node.Connect, or make it with NewDevice")

// t returns the Device's testing.TB.
func (d *Device) t() testing.TB {
	if d.tb == nil {
		panic(errNoTB)
	}
	return d.tb
}

// Send writes s as one masked text frame.
func (d *Device) Send(s string) {
	d.t().Helper()
	d.SendFrame(ws.NewTextFrame([]byte(s)))
}

// SendFrame writes f masked, within 5 s.
func (d *Device) SendFrame(f ws.Frame) {
	tb := d.t()
	tb.Helper()
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteFrame(d.Conn, ws.MaskFrame(f)); err != nil {
		tb.Fatalf("send: %v", err)
	}
}

// SendJSON writes v encoded as JSON in one masked text frame, within 5 s,
// and returns the error.
func (d *Device) SendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteFrame(d.Conn, ws.MaskFrame(ws.NewTextFrame(b)))
}

// Ack acks ids in one ack frame.
func (d *Device) Ack(ids ...string) {
	tb := d.t()
	tb.Helper()
	if err := d.SendJSON(map[string]any{"type": "ack", "ids": ids}); err != nil {
		tb.Fatalf("send ack: %v", err)
	}
}

// Next returns the next text frame within timeout, answering pings unless
// the Device is Silent and skipping pongs. A close frame returns a
// CloseError.
func (d *Device) Next(timeout time.Duration) (Frame, error) {
	_ = d.Conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := ws.ReadFrame(d.r)
		if err != nil {
			return Frame{}, err
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			if !d.Silent {
				_ = d.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_ = ws.WriteFrame(d.Conn, ws.MaskFrame(ws.NewPongFrame(f.Payload)))
				_ = d.Conn.SetWriteDeadline(time.Time{})
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			return Frame{}, CloseError{Code: CloseCode(f.Payload)}
		}
		var fr Frame
		if err := json.Unmarshal(f.Payload, &fr); err != nil {
			return Frame{}, fmt.Errorf("frame %q: %v", f.Payload, err)
		}
		return fr, nil
	}
}

// MustNext returns the next frame within 5 s and checks its type.
func (d *Device) MustNext(typ string) Frame {
	tb := d.t()
	tb.Helper()
	f, err := d.Next(frameTimeout)
	if err != nil {
		tb.Fatalf("want %s frame: %v", typ, err)
	}
	if f.Type != typ {
		tb.Fatalf("got %s frame %+v, want %s", f.Type, f, typ)
	}
	return f
}

// MustClose reads frames until a close frame within timeout each and
// checks its code.
func (d *Device) MustClose(code int, timeout time.Duration) {
	tb := d.t()
	tb.Helper()
	for {
		_, err := d.Next(timeout)
		if err == nil {
			continue
		}
		ce, ok := err.(CloseError)
		if !ok {
			tb.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			tb.Fatalf("close code %d, want %d", ce.Code, code)
		}
		return
	}
}
