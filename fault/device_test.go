package fault_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/internal/nodetest"
)

// device is a well-behaved device: one goroutine that keeps a connection
// open (reconnecting after 200 ms when it loses it), answers pings and
// acks every message at once.
type device struct {
	id  string
	tok string
	n   *nodetest.Node

	mu    sync.Mutex // guards following
	conn  net.Conn
	got   map[string]int       // message id → times received
	at    map[string]time.Time // message id → first received
	dials int
}

// fleet is the devices of a test and their goroutines.
type fleet struct {
	devices []*device
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// received returns when the device first received message id.
func (d *device) received(id string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.at[id]
	return at, ok
}

// startFleet connects count devices dev-0…, member of group shop-(i%groups),
// and waits until all have their welcome. It stops them when the test
// ends.
func startFleet(tb testing.TB, n *nodetest.Node, count, groups int) *fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{ctx: ctx, cancel: cancel}
	tb.Cleanup(f.stop)
	var welcomed sync.WaitGroup
	for i := 0; i < count; i++ {
		id := fmt.Sprintf("dev-%d", i)
		d := &device{id: id, tok: nodetest.MustToken(tb, id, fmt.Sprintf("shop-%d", i%groups)), n: n, got: map[string]int{}, at: map[string]time.Time{}}
		f.devices = append(f.devices, d)
		welcomed.Add(1)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			d.run(ctx, welcomed.Done)
		}()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // no connect storm
		}
	}
	done := make(chan struct{})
	go func() { welcomed.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		f.stop()
		<-done
		tb.Fatalf("%d devices not all connected within 60s", count)
	}
	return f
}

// stop closes every device's connection and waits for their goroutines.
func (f *fleet) stop() {
	f.cancel()
	for _, d := range f.devices {
		d.mu.Lock()
		if d.conn != nil {
			d.conn.Close()
		}
		d.mu.Unlock()
	}
	f.wg.Wait()
}

// run connects until ctx ends; welcomed is called after the first welcome
// (or when ctx ends first).
func (d *device) run(ctx context.Context, welcomed func()) {
	var once sync.Once
	defer once.Do(welcomed)
	for ctx.Err() == nil {
		c, err := nodetest.Dial(d.n.WSURL+"/v1/connect", d.tok, nil, 5*time.Second)
		if err == nil {
			d.mu.Lock()
			d.conn = c.Conn
			d.dials++
			d.mu.Unlock()
			if ctx.Err() != nil { // stop ran before conn was set
				c.Conn.Close()
				return
			}
			d.serve(c, func() { once.Do(welcomed) })
			c.Conn.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve reads frames until the connection ends, acking every message.
func (d *device) serve(c *nodetest.Device, welcomed func()) {
	for {
		f, err := c.Next(time.Minute)
		if err != nil {
			return
		}
		switch f.Type {
		case "welcome":
			welcomed()
		case "message":
			d.mu.Lock()
			if d.got[f.ID]++; d.got[f.ID] == 1 {
				d.at[f.ID] = time.Now()
			}
			d.mu.Unlock()
			if c.SendJSON(map[string]any{"type": "ack", "ids": []string{f.ID}}) != nil {
				return
			}
		}
	}
}

// churn connects and drops devices churn-W-K on workers goroutines,
// closing one connection in four with a close frame, one with a bare
// FIN after CloseWrite, one with Close and one with an RST.
type churn struct {
	stopc        chan struct{}
	wg           sync.WaitGroup
	dials, fails atomic.Int64
	byClose      [4]atomic.Int64
}

var closeKinds = [4]string{"close frame", "CloseWrite FIN", "Close FIN", "RST"}

func startChurn(tb testing.TB, n *nodetest.Node, workers int) *churn {
	ch := &churn{stopc: make(chan struct{})}
	for w := 0; w < workers; w++ {
		ch.wg.Add(1)
		go func() {
			defer ch.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-ch.stopc:
					return
				case <-time.After(20 * time.Millisecond):
				}
				ch.once(tb, n, fmt.Sprintf("churn-%d-%d", w, i%8), (w+i)%4)
			}
		}()
	}
	tb.Cleanup(ch.stop)
	return ch
}

func (ch *churn) stop() {
	select {
	case <-ch.stopc:
	default:
		close(ch.stopc)
	}
	ch.wg.Wait()
}

// once dials dev, waits up to 2 s for its welcome (the store may be
// down), then closes in the given way.
func (ch *churn) once(tb testing.TB, n *nodetest.Node, dev string, kind int) {
	ch.dials.Add(1)
	c, err := nodetest.Dial(n.WSURL+"/v1/connect", nodetest.MustToken(tb, dev), nil, 3*time.Second)
	if err != nil {
		ch.fails.Add(1)
		return
	}
	_, _ = c.Next(2 * time.Second)
	ch.byClose[kind].Add(1)
	tc := c.Conn.(*net.TCPConn)
	switch kind {
	case 0:
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = ws.WriteFrame(c.Conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
		drain(c)
	case 1:
		_ = tc.CloseWrite()
		drain(c)
	case 2:
	case 3:
		_ = tc.SetLinger(0)
	}
	_ = c.Conn.Close()
}

// drain reads until the server closes (or 2 s pass).
func drain(c *nodetest.Device) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Conn.Read(buf); err != nil {
			return
		}
	}
}
