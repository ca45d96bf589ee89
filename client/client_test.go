package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether/client"
	"github.com/tetherpush/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testHeartbeat is the heartbeat test servers announce unless a test is
// about heartbeats: long enough that no ping interferes.
const testHeartbeat = 10 * time.Second

// event is one OnState call.
type event struct {
	state client.State
	err   error
}

// recorder collects handled messages and state changes of a client.
type recorder struct {
	states chan event

	mu      sync.Mutex // guards following
	handled []client.Message
	fail    map[string]int // id → attempts to fail
}

func newRecorder() *recorder {
	return &recorder{states: make(chan event, 256), fail: map[string]int{}}
}

func (r *recorder) handler(_ context.Context, m client.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail[m.ID] >= m.Attempt {
		return fmt.Errorf("cannot print order %s", m.ID)
	}
	r.handled = append(r.handled, m)
	return nil
}

func (r *recorder) onState(s client.State, err error) {
	select {
	case r.states <- event{s, err}:
	default:
		panic("recorder: too many state changes")
	}
}

// handledIDs returns the ids the handler accepted, in order.
func (r *recorder) handledIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, len(r.handled))
	for i, m := range r.handled {
		ids[i] = m.ID
	}
	return ids
}

// waitState returns the next state change equal to want, failing after
// waitTimeout; other states on the way are skipped.
func (r *recorder) waitState(tb testing.TB, want client.State) event {
	tb.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case ev := <-r.states:
			if ev.state == want {
				return ev
			}
		case <-timeout:
			tb.Fatalf("no state %v within %v", want, waitTimeout)
		}
	}
}

// mustDial starts a client of srv with short timings; it is closed when the
// test ends. edit, if not nil, adjusts the config first.
func mustDial(tb testing.TB, srv *testServer, r *recorder, edit func(*client.Config)) *client.Client {
	tb.Helper()
	cfg := client.Config{
		URL:        srv.url,
		Token:      "tok-pos-1",
		Handler:    r.handler,
		OnState:    r.onState,
		AckBatch:   20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 40 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// connect starts a client and returns it with its first, welcomed,
// server connection.
func connect(tb testing.TB, edit func(*client.Config)) (*testServer, *recorder, *client.Client, *serverConn) {
	tb.Helper()
	srv := mustServer(tb)
	r := newRecorder()
	c := mustDial(tb, srv, r, edit)
	sc := srv.accept(tb)
	sc.welcome(tb, testHeartbeat)
	r.waitState(tb, client.StateConnected)
	return srv, r, c, sc
}

func TestConnectWelcome(t *testing.T) {
	_, _, c, sc := connect(t, nil)
	if sc.path != wire.Path {
		t.Errorf("path = %q, want %q", sc.path, wire.Path)
	}
	if want := "Bearer tok-pos-1"; sc.auth != want {
		t.Errorf("Authorization = %q, want %q", sc.auth, want)
	}
	if sc.protocol != wire.Subprotocol {
		t.Errorf("subprotocol = %q, want %q", sc.protocol, wire.Subprotocol)
	}
	w, ok := c.Welcome()
	if !ok || w.Device != "pos-1" || w.Node != "n1" || !slices.Equal(w.Groups, []string{"shop-1"}) || w.HeartbeatMS != testHeartbeat.Milliseconds() {
		t.Errorf("Welcome() = %+v, %v; want the welcome sent", w, ok)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err() = %v while running, want nil", err)
	}
}

func TestMessageHandledAndAcked(t *testing.T) {
	_, r, _, sc := connect(t, nil)
	sc.send(t, "m1", 1)
	if got := sc.readAck(t); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("ack ids = %q, want [m1]", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.handled) != 1 {
		t.Fatalf("handled %d messages, want 1", len(r.handled))
	}
	m := r.handled[0]
	if m.ID != "m1" || m.Target != "group:shop-1" || string(m.Data) != `{"order":"m1"}` || m.Attempt != 1 {
		t.Errorf("message = %s, want m1 to group:shop-1, attempt 1", mustJSON(t, m))
	}
	if age := time.Since(m.PublishedAt); age < 0 || age > waitTimeout {
		t.Errorf("PublishedAt = %v, %v ago; want the publish time", m.PublishedAt, age)
	}
}

func TestAcksBatchedByTime(t *testing.T) {
	_, r, _, sc := connect(t, func(cfg *client.Config) { cfg.AckBatch = 300 * time.Millisecond })
	want := []string{"m1", "m2", "m3", "m4", "m5"}
	start := time.Now()
	for _, id := range want {
		sc.send(t, id, 1)
	}
	if got := sc.readAck(t); !slices.Equal(got, want) {
		t.Fatalf("ack ids = %q, want %q in one frame", got, want)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("ack sent after %v, want it to wait for AckBatch", waited)
	}
	if got := r.handledIDs(); !slices.Equal(got, want) {
		t.Errorf("handled %q, want %q in arrival order", got, want)
	}
}

func TestAcksBatchedByCount(t *testing.T) {
	_, _, _, sc := connect(t, func(cfg *client.Config) {
		cfg.AckBatch = time.Hour // only AckMax can send
		cfg.AckMax = 3
	})
	for i := 1; i <= 7; i++ {
		sc.send(t, fmt.Sprintf("m%d", i), 1)
	}
	for _, want := range [][]string{{"m1", "m2", "m3"}, {"m4", "m5", "m6"}} {
		if got := sc.readAck(t); !slices.Equal(got, want) {
			t.Fatalf("ack ids = %q, want %q", got, want)
		}
	}
	sc.expectNoAck(t, 200*time.Millisecond) // m7 waits for a full frame or the hour
}

func TestHandlerErrorNotAcked(t *testing.T) {
	_, r, _, sc := connect(t, nil)
	r.mu.Lock()
	r.fail["bad"] = 1 // the first attempt fails
	r.mu.Unlock()
	sc.send(t, "bad", 1)
	sc.send(t, "good", 1)
	if got := sc.readAck(t); !slices.Equal(got, []string{"good"}) {
		t.Fatalf("ack ids = %q, want [good] only", got)
	}
	sc.expectNoAck(t, 200*time.Millisecond)

	sc.send(t, "bad", 2) // the server redelivers after its ack timeout
	if got := sc.readAck(t); !slices.Equal(got, []string{"bad"}) {
		t.Fatalf("ack ids = %q, want [bad] after the redelivery", got)
	}
	if got, want := r.handledIDs(), []string{"good", "bad"}; !slices.Equal(got, want) {
		t.Errorf("handled %q, want %q", got, want)
	}
}

func TestDuplicateAfterReconnectAckedNotHandled(t *testing.T) {
	srv, r, _, sc := connect(t, nil)
	sc.send(t, "m1", 1)
	if got := sc.readAck(t); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("ack ids = %q, want [m1]", got)
	}
	sc.closeWith(t, wire.CloseGoingAway) // the node drains: reconnect elsewhere

	ev := r.waitState(t, client.StateDisconnected)
	var ce *client.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != wire.CloseGoingAway {
		t.Fatalf("disconnected with %v, want close code %d", ev.err, wire.CloseGoingAway)
	}
	sc2 := srv.accept(t)
	sc2.welcome(t, testHeartbeat)
	r.waitState(t, client.StateConnected)
	sc2.send(t, "m1", 2) // its ack was lost with the old node
	sc2.send(t, "m2", 1)
	if got := sc2.readAck(t); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("ack ids = %q, want [m1 m2]", got)
	}
	if got, want := r.handledIDs(), []string{"m1", "m2"}; !slices.Equal(got, want) {
		t.Errorf("handled %q, want %q: m1 only once", got, want)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	srv, r, _, sc := connect(t, nil)
	for i := range 3 {
		sc.conn.Close() // no close frame: the network failed
		ev := r.waitState(t, client.StateDisconnected)
		if ev.err == nil {
			t.Fatalf("drop %d: disconnected without an error", i)
		}
		r.waitState(t, client.StateConnecting)
		sc = srv.accept(t)
		sc.welcome(t, testHeartbeat)
		r.waitState(t, client.StateConnected)
	}
	sc.send(t, "after", 1)
	if got := sc.readAck(t); !slices.Equal(got, []string{"after"}) {
		t.Fatalf("ack ids = %q, want [after] on the fourth connection", got)
	}
	if got := srv.accepted.Load(); got != 4 {
		t.Errorf("%d connections, want 4", got)
	}
}

func TestReplacedNoReconnect(t *testing.T) {
	srv, r, c, sc := connect(t, nil)
	sc.closeWith(t, wire.CloseReplaced)

	ev := r.waitState(t, client.StateDisconnected)
	var ce *client.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != wire.CloseReplaced {
		t.Fatalf("disconnected with %v, want close code %d", ev.err, wire.CloseReplaced)
	}
	ev = r.waitState(t, client.StateClosed)
	if !errors.As(ev.err, &ce) || ce.Code != wire.CloseReplaced {
		t.Fatalf("closed with %v, want close code %d", ev.err, wire.CloseReplaced)
	}
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatal("client still running after 4409")
	}
	if !errors.As(c.Err(), &ce) || ce.Code != wire.CloseReplaced {
		t.Errorf("Err() = %v, want close code %d", c.Err(), wire.CloseReplaced)
	}
	srv.expectNoConn(t, 200*time.Millisecond) // 5 × MaxBackoff
}

func TestUnauthorizedNoReconnect(t *testing.T) {
	srv := mustServer(t)
	srv.reject.Store(401)
	r := newRecorder()
	c := mustDial(t, srv, r, nil)

	ev := r.waitState(t, client.StateClosed)
	var se *client.StatusError
	if !errors.As(ev.err, &se) || se.Status != 401 {
		t.Fatalf("closed with %v, want HTTP 401", ev.err)
	}
	<-c.Done()
	if !errors.As(c.Err(), &se) || se.Status != 401 {
		t.Errorf("Err() = %v, want HTTP 401", c.Err())
	}
	srv.expectNoConn(t, 200*time.Millisecond)
	if got := srv.refused.Load(); got != 1 {
		t.Errorf("%d handshakes refused, want 1", got)
	}
}

func TestUnavailableRetried(t *testing.T) {
	srv := mustServer(t)
	srv.reject.Store(503)
	r := newRecorder()
	mustDial(t, srv, r, nil)
	ev := r.waitState(t, client.StateDisconnected)
	var se *client.StatusError
	if !errors.As(ev.err, &se) || se.Status != 503 {
		t.Fatalf("disconnected with %v, want HTTP 503", ev.err)
	}
	srv.reject.Store(0)
	srv.accept(t).welcome(t, testHeartbeat)
	r.waitState(t, client.StateConnected)
}

func TestAnswersServerPing(t *testing.T) {
	_, _, _, sc := connect(t, nil)
	sc.write(t, ws.OpPing, []byte("are you there"))
	if f := sc.readUntil(t, ws.OpPong); string(f.Payload) != "are you there" {
		t.Errorf("pong payload = %q, want the ping's", f.Payload)
	}
}

func TestHeartbeat(t *testing.T) {
	const hb = 150 * time.Millisecond
	srv := mustServer(t)
	r := newRecorder()
	mustDial(t, srv, r, nil)
	sc := srv.accept(t)
	sc.welcome(t, hb)
	r.waitState(t, client.StateConnected)

	// A silent server is pinged once it has been quiet for a heartbeat.
	start := time.Now()
	f := sc.readUntil(t, ws.OpText)
	if cf, err := wire.DecodeClient(f.Payload); err != nil || cf.Type != wire.TypePing {
		t.Fatalf("client sent %q, want a ping", f.Payload)
	}
	if waited := time.Since(start); waited < hb*3/4 {
		t.Errorf("pinged after %v, want about %v of silence", waited, hb)
	}

	// Still silent at 2 × heartbeat: the client closes with 4408 and redials.
	f = sc.readUntil(t, ws.OpClose)
	if code, _ := ws.ParseCloseFrameData(f.Payload); int(code) != wire.CloseHeartbeat {
		t.Errorf("close code = %d, want %d", code, wire.CloseHeartbeat)
	}
	if ev := r.waitState(t, client.StateDisconnected); !errors.Is(ev.err, client.ErrHeartbeatTimeout) {
		t.Errorf("disconnected with %v, want ErrHeartbeatTimeout", ev.err)
	}
	srv.accept(t)
}

func TestCloseNoLeak(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, srv *testServer, r *recorder)
	}{
		{
			name:  "dialing",
			setup: func(*testing.T, *testServer, *recorder) {},
		},
		{
			name: "connected, handler blocked",
			setup: func(t *testing.T, srv *testServer, r *recorder) {
				sc := srv.accept(t)
				sc.welcome(t, testHeartbeat)
				r.waitState(t, client.StateConnected)
				sc.send(t, "slow", 1)
				sc.send(t, "queued", 1)
			},
		},
		{
			name: "backing off",
			setup: func(t *testing.T, srv *testServer, r *recorder) {
				srv.accept(t).conn.Close()
				r.waitState(t, client.StateDisconnected)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := mustServer(t)
			ignore := goleak.IgnoreCurrent() // the server's goroutines are not the client's
			r := newRecorder()
			c, err := client.Dial(context.Background(), client.Config{
				URL:        srv.url,
				MinBackoff: time.Minute,
				MaxBackoff: time.Minute,
				OnState:    r.onState,
				Handler: func(ctx context.Context, m client.Message) error {
					<-ctx.Done()
					return ctx.Err()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, srv, r)
			c.Close()
			c.Close()
			if ev := r.waitState(t, client.StateClosed); !errors.Is(ev.err, client.ErrClosed) {
				t.Errorf("closed with %v, want ErrClosed", ev.err)
			}
			if !errors.Is(c.Err(), client.ErrClosed) {
				t.Errorf("Err() = %v, want ErrClosed", c.Err())
			}
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestCloseSendsQueuedAcks(t *testing.T) {
	_, _, c, sc := connect(t, func(cfg *client.Config) { cfg.AckBatch = time.Hour })
	sc.send(t, "m1", 1)
	sc.expectNoAck(t, 100*time.Millisecond)
	c.Close()
	if got := sc.readAck(t); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("ack ids = %q, want [m1] sent by Close", got)
	}
	f := sc.readUntil(t, ws.OpClose)
	if code, _ := ws.ParseCloseFrameData(f.Payload); int(code) != wire.CloseNormal {
		t.Errorf("close code = %d, want %d", code, wire.CloseNormal)
	}
}

func TestDialConfig(t *testing.T) {
	h := func(context.Context, client.Message) error { return nil }
	for _, tc := range []struct {
		name string
		cfg  client.Config
	}{
		{name: "no handler", cfg: client.Config{URL: "ws://127.0.0.1:1"}},
		{name: "http scheme", cfg: client.Config{URL: "http://127.0.0.1:1", Handler: h}},
		{name: "no host", cfg: client.Config{URL: "ws:///v1/connect", Handler: h}},
		{name: "AckMax too big", cfg: client.Config{URL: "ws://127.0.0.1:1", Handler: h, AckMax: wire.MaxAckIDs + 1}},
		{name: "MinBackoff above MaxBackoff", cfg: client.Config{URL: "ws://127.0.0.1:1", Handler: h, MinBackoff: time.Minute, MaxBackoff: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Dial(context.Background(), tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded, want a config error")
			}
		})
	}
}
