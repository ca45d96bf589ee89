package http_test

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// mustOpenFleetNode starts node id on the Redis at url (a cluster seed when
// cluster is true), with a 300 ms heartbeat unless edit changes it, and no
// admin listener.
func mustOpenFleetNode(tb testing.TB, url string, cluster bool, id string, edit func(*hub.Config)) *nodetest.Node {
	tb.Helper()
	return openFleetNodeBehind(tb, url, cluster, id, edit, nil)
}

// openFleetNodeBehind is mustOpenFleetNode with the node's store behind
// wrap (a Freezer; nil: none). The fleet itself is not behind it.
func openFleetNodeBehind(tb testing.TB, url string, cluster bool, id string, edit func(*hub.Config), wrap func(tether.Store) tether.Store) *nodetest.Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redis.Open(ctx, redis.Options{URL: url, Cluster: cluster})
	if err != nil {
		tb.Fatalf("open redis store: %v", err)
	}
	return nodetest.MustOpen(tb, nodetest.Options{Store: st, IO: *ioMode, Wrap: wrap, Edit: func(h *hub.Config, c *tetherhttp.Config) {
		h.Node, h.Heartbeat, h.Fleet, h.Logger = id, 300*time.Millisecond, st.Fleet(), testLogger(tb)
		c.AdminListen, c.Registerer = "-", nil
		if edit != nil {
			edit(h)
		}
	}})
}

// TestFleetStoredDespite503: a publish on node A answered 503 although the
// store kept its message (the answer came too late), and never retried,
// reaches the device connected to node B once A's store answers again,
// for a device target and a group target.
func TestFleetStoredDespite503(t *testing.T) {
	r := redistest.Start(t)
	fz := &nodetest.Freezer{}
	a := openFleetNodeBehind(t, r.URL(), false, "node-a", func(h *hub.Config) { h.StoreTimeout = 300 * time.Millisecond }, fz.Wrap)
	t.Cleanup(fz.Unfreeze) // runs first: the node closes on a thawed store
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", nil)
	d := b.Dial(t, nodetest.MustToken(t, "pos-1", "shop-1"))
	d.MustNext("welcome")
	for _, target := range []string{"device:pos-1", "group:shop-1"} {
		fz.Freeze(true) // answers lost: the store keeps the message
		if code := a.API(t, "POST", "/v1/messages", map[string]any{"target": target, "data": target}, nil); code != 503 {
			t.Fatalf("publish to %s on node A while its store's answers are lost: %d, want 503", target, code)
		}
		fz.Unfreeze()
		f, err := d.Next(5 * time.Second)
		if err != nil || f.Type != "message" || f.Target != target {
			t.Fatalf("device on node B got %+v, %v within 5 s of node A's store answering again, want the message to %s", f, err, target)
		}
		d.Ack(f.ID)
	}
}

func TestFleetCrossNodeRouting(t *testing.T) {
	r := redistest.Start(t)
	a := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", nil)
	d := b.Dial(t, nodetest.MustToken(t, "pos-1", "shop-1"))
	if w := d.MustNext("welcome"); w.Node != "node-b" {
		t.Fatalf("welcome %+v", w)
	}
	var lat []time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		target := "device:pos-1"
		if i%2 == 1 {
			target = "group:shop-1"
		}
		id := a.Publish(t, target, i)
		m := d.MustNext("message")
		if m.ID != id {
			t.Fatalf("message %d: got %s, want %s", i, m.ID, id)
		}
		lat = append(lat, time.Since(start))
		d.Ack(id)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("publish on node A → frame on node B, 50 messages: p50 %v, p99 %v (publish request included)", lat[len(lat)/2], lat[len(lat)*99/100])

	var dev struct {
		Online bool   `json:"online"`
		Node   string `json:"node"`
	}
	a.API(t, "GET", "/v1/devices/pos-1", nil, &dev)
	if !dev.Online || dev.Node != "node-b" {
		t.Fatalf("presence seen from node A = %+v, want online on node-b", dev)
	}
	var g struct {
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	a.API(t, "GET", "/v1/groups/shop-1", nil, &g)
	if len(g.Devices) != 1 || !g.Devices[0].Online {
		t.Fatalf("group seen from node A = %+v", g)
	}
}

func TestFleetTakeoverAcrossNodes(t *testing.T) {
	r := redistest.Start(t)
	a := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", nil)
	tok := nodetest.MustToken(t, "pos-1")
	old := a.Dial(t, tok)
	old.MustNext("welcome")
	d := b.Dial(t, tok)
	d.MustNext("welcome")
	old.MustClose(4409, 3*time.Second)
	nodetest.Eventually(t, 3*time.Second, "node A forgets the device", func() bool { return a.Hub.Connections() == 0 })
	var dev struct {
		Online bool   `json:"online"`
		Node   string `json:"node"`
	}
	nodetest.Eventually(t, 3*time.Second, "presence on node-b", func() bool {
		a.API(t, "GET", "/v1/devices/pos-1", nil, &dev)
		return dev.Online && dev.Node == "node-b"
	})
}

// TestFleetLostSubscription kills the nodes' pub/sub connections on the
// Redis server; they must come back, and what is published meanwhile
// must be delivered.
func TestFleetLostSubscription(t *testing.T) {
	r := redistest.Start(t)
	a := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", nil)
	d := b.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	time.Sleep(200 * time.Millisecond) // subscriptions in place
	r.MustDo("CLIENT", "KILL", "TYPE", "pubsub")
	id := a.Publish(t, "device:pos-1", "while deaf")
	m, err := d.Next(5 * time.Second)
	if err != nil || m.ID != id {
		t.Fatalf("after CLIENT KILL: got %+v, %v; want %s within 5s", m, err, id)
	}
	d.Ack(id)
	// And the subscription works again for what comes next.
	id = a.Publish(t, "device:pos-1", "after")
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("got %+v, want %s", m, id)
	}
}

// TestFleetCrashedNodeGoesOffline: a node that stops without telling
// (its presence entries stay) shows its devices offline within 3 ×
// heartbeat, and they reconnect to another node and get their messages.
func TestFleetCrashedNodeGoesOffline(t *testing.T) {
	r := redistest.Start(t)
	a := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", nil)
	tok := nodetest.MustToken(t, "pos-1")
	d := b.Dial(t, tok)
	d.MustNext("welcome")
	id := a.Publish(t, "device:pos-1", "unacked on the dead node")
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("got %+v", m)
	}
	// Crash node B: its Redis client goes first, so it cannot write its
	// sessions' disconnections.
	b.Store.Close()
	b.Hub.Close()
	b.Server.Close()
	start := time.Now()
	var dev struct {
		Online bool `json:"online"`
	}
	nodetest.Eventually(t, 3*time.Second, "device offline", func() bool {
		a.API(t, "GET", "/v1/devices/pos-1", nil, &dev)
		return !dev.Online
	})
	if el := time.Since(start); el > 3*300*time.Millisecond+500*time.Millisecond {
		t.Fatalf("offline after %v, want within 3 × heartbeat (900ms)", el)
	}
	d = a.Dial(t, tok)
	d.MustNext("welcome")
	// Node B crashed before it committed the send (first sends are
	// committed lazily), so the attempt count may start again.
	if m := d.MustNext("message"); m.ID != id {
		t.Fatalf("after moving to node A: %+v, want %s again", m, id)
	}
}

func TestFleetOnRedisCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	url := "redis://" + c.Addrs()[0]
	a := mustOpenFleetNode(t, url, true, "node-a", nil)
	b := mustOpenFleetNode(t, url, true, "node-b", nil)
	var ds []*nodetest.Device
	for i := 0; i < 6; i++ { // devices spread over the cluster's slots
		d := b.Dial(t, nodetest.MustToken(t, fmt.Sprintf("pos-%d", i), "shop-1"))
		d.MustNext("welcome")
		ds = append(ds, d)
	}
	id := a.Publish(t, "group:shop-1", "to all")
	for i, d := range ds {
		if m := d.MustNext("message"); m.ID != id {
			t.Fatalf("device %d got %+v", i, m)
		}
	}
	tok := nodetest.MustToken(t, "pos-0", "shop-1")
	d := a.Dial(t, tok)
	d.MustNext("welcome")
	ds[0].MustClose(4409, 3*time.Second)
}

// TestFleetRedisCrashLosesNothing: with appendfsync always, a redis-server
// killed with SIGKILL between publish and delivery and restarted loses
// none of the accepted messages; the node rides it out without restarting.
func TestFleetRedisCrashLosesNothing(t *testing.T) {
	r := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	n := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, n.Publish(t, "device:pos-1", i))
	}
	r.Kill()
	r.Restart()
	d := n.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	for i, id := range ids {
		m := d.MustNext("message")
		if m.ID != id {
			t.Fatalf("message %d after the Redis crash: %s, want %s", i, m.ID, id)
		}
		d.Ack(id)
	}
}

// deafFleet passes events on only while it is not deaf: a subscription
// that stays connected but hears nothing.
type deafFleet struct {
	tether.Fleet
	deaf atomic.Bool
}

func (f *deafFleet) Listen(ctx context.Context, node string, ready func(), fn func(tether.Event)) error {
	return f.Fleet.Listen(ctx, node, ready, func(e tether.Event) {
		if !f.deaf.Load() {
			fn(e)
		}
	})
}

// TestFleetDeafSubscription: node B's subscription silently stops hearing;
// its self-probe notices within two heartbeats, it subscribes again, and
// its sessions fetch what was published meanwhile.
func TestFleetDeafSubscription(t *testing.T) {
	r := redistest.Start(t)
	a := mustOpenFleetNode(t, r.URL(), false, "node-a", nil)
	var deaf *deafFleet
	b := mustOpenFleetNode(t, r.URL(), false, "node-b", func(c *hub.Config) {
		deaf = &deafFleet{Fleet: c.Fleet}
		c.Fleet = deaf
	})
	d := b.Dial(t, nodetest.MustToken(t, "pos-1"))
	d.MustNext("welcome")
	deaf.deaf.Store(true)
	id := a.Publish(t, "device:pos-1", "published while B is deaf")
	start := time.Now()
	m, err := d.Next(5 * time.Second)
	if err != nil || m.ID != id {
		t.Fatalf("got %+v, %v; want %s once B notices it is deaf", m, err, id)
	}
	t.Logf("delivered %v after the publish (heartbeat 300ms)", time.Since(start))
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %v", el)
	}
}
