package main

import (
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/client"
	"github.com/tetherpush/tether/internal/redistest"
)

// End-to-end tests of the event log and its webhook (SPEC section 11,
// issue 10) against real node processes: the receiver is an in-process
// HTTP server on loopback that verifies every batch with the SDK's
// client.WebhookHandler and records what arrives. Their helpers are in
// webhook_helpers_test.go.

// TestWebhookEveryEventType makes one event of each type on a node on the
// embedded store and checks that each reaches the receiver, signed (the
// SDK verifies), with the fields SPEC section 11 names.
func TestWebhookEveryEventType(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret,
		"--max-attempts", "1", "--ack-timeout", "1s")
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome

	acked := c.publishTTL(t, "device:pos-1", 0)
	if id, _ := d.nextMessage(); id != acked {
		t.Fatalf("got message %s, want %s", id, acked)
	}
	d.ack(acked)
	// The ack committed first, so no commit of the session carries the
	// first send of the next message before it is cancelled.
	waitFor(t, 5*time.Second, "the ack stored", func() bool { return c.state(t, acked) == "acked" })
	cancelled := c.publishTTL(t, "device:pos-1", 0)
	if id, _ := d.nextMessage(); id != cancelled {
		t.Fatalf("got message %s, want %s", id, cancelled)
	}
	var msg struct {
		Deliveries []struct {
			State    string
			Attempts int
		}
	}
	c.api(t, "GET", "/v1/messages/"+cancelled, nil, &msg)
	t.Logf("before DELETE, GET /v1/messages/%s answers deliveries %+v", cancelled, msg.Deliveries)
	var out struct{ Cancelled int }
	if code := c.api(t, "DELETE", "/v1/messages/"+cancelled, nil, &out); code != 200 || out.Cancelled != 1 {
		t.Fatalf("DELETE /v1/messages/%s: status %d, cancelled %d; want 200 and 1", cancelled, code, out.Cancelled)
	}
	dead := c.publishTTL(t, "device:pos-1", 0) // sent once, never acked: dead after --ack-timeout
	if id, _ := d.nextMessage(); id != dead {
		t.Fatalf("got message %s, want %s", id, dead)
	}
	expired := c.publishTTL(t, "device:pos-2", 0.5) // pos-2 never connects
	// pos-3 gets a message that expires before its redelivery is due and
	// never acks it: its one send must reach the store before the expiry
	// does, although the session commits nothing else.
	d3 := dialDevice(t, c.addr, "pos-3")
	d3.next(5 * time.Second) // welcome
	sentExpired := c.publishTTL(t, "device:pos-3", 0.5)
	if id, _ := d3.nextMessage(); id != sentExpired {
		t.Fatalf("got message %s, want %s", id, sentExpired)
	}
	waitFor(t, 10*time.Second, "the dead and the expired deliveries", func() bool {
		return c.state(t, dead) == "dead" && c.state(t, expired) == "expired" && c.state(t, sentExpired) == "expired"
	})
	// One after the other, so that the log read after pos-1's
	// device.offline holds pos-3's too.
	d3.closeNormally()
	c.waitLog(t, "device.offline of pos-3", isType(client.EventOffline, "pos-3"))
	d.closeNormally()
	log := c.waitLog(t, "device.offline", isType(client.EventOffline, "pos-1"))
	rc.waitAll(t, 10*time.Second, log)

	for _, w := range []struct {
		typ, message, target, device string
		attempts                     int
	}{
		{client.EventAcked, acked, "device:pos-1", "pos-1", 1},
		{client.EventCancelled, cancelled, "device:pos-1", "pos-1", 1},
		{client.EventDead, dead, "device:pos-1", "pos-1", 1},
		{client.EventExpired, expired, "device:pos-2", "pos-2", 0},
		{client.EventExpired, sentExpired, "device:pos-3", "pos-3", 1},
	} {
		a, ok := rc.find(isDelivery(w.typ, w.message))
		if !ok {
			t.Errorf("no %s for message %s arrived", w.typ, w.message)
			continue
		}
		if a.Target != w.target || a.Device != w.device || a.Attempts != w.attempts {
			t.Errorf("%s: target %q device %q attempts %d, want %q %q %d", w.typ, a.Target, a.Device, a.Attempts, w.target, w.device, w.attempts)
		}
		rc.checkFields(t, a)
	}
	on, ok := rc.find(isType(client.EventOnline, "pos-1"))
	if !ok || on.Node != "n1" {
		t.Errorf("device.online of pos-1: arrived %v, node %q; want node n1", ok, on.Node)
	}
	rc.checkFields(t, on)
	off, ok := rc.find(isType(client.EventOffline, "pos-1"))
	if !ok || off.Node != "n1" {
		t.Errorf("device.offline of pos-1: arrived %v, node %q; want node n1", ok, off.Node)
	}
	rc.checkFields(t, off)
	t.Logf("device.offline after the device closed with 1000: code %d", off.Code)
	if off.Code != int(ws.StatusNormalClosure) {
		t.Errorf("device.offline after the device closed with 1000 reports code %d, want 1000 (SPEC section 11: the close code, 0 only when the connection just went away)", off.Code)
	}
	dups := rc.checkLog(t, log)
	t.Logf("%d events in the log, %d duplicate arrivals", len(log), dups)
}

// TestWebhookReceiverDown keeps the receiver answering 500 for 30 s while
// events happen, then brings it back: every event arrives, in log order,
// none missing; duplicates are allowed and counted.
func TestWebhookReceiverDown(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps the receiver down for 30 s")
	}
	closeAPIClient(t)
	rc := startReceiver(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret)
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome
	rc.waitAll(t, 10*time.Second, c.waitLog(t, "device.online", isType(client.EventOnline, "pos-1")))

	const outage = 30 * time.Second
	rc.set(hookFail, 0)
	down := time.Now()
	var last string
	cycles := 0
	for i := 0; time.Since(down) < outage-3*time.Second; i++ {
		last = c.publishTTL(t, "device:pos-1", 0)
		if id, _ := d.nextMessage(); id != last {
			t.Fatalf("got message %s, want %s", id, last)
		}
		d.ack(last)
		if i%5 == 0 { // presence events too
			d2 := dialDevice(t, c.addr, "pos-2")
			d2.next(5 * time.Second) // welcome
			d2.closeNormally()
			cycles++
		}
		time.Sleep(time.Second)
	}
	var log []client.Event
	waitFor(t, 10*time.Second, "the last events in the log", func() bool {
		log = c.eventLog(t)
		offline := 0
		for _, e := range log {
			if e.Type == client.EventOffline && e.Device == "pos-2" {
				offline++
			}
		}
		return offline == cycles && slices.ContainsFunc(log, isDelivery(client.EventAcked, last))
	})
	time.Sleep(time.Until(down.Add(outage)))
	rc.set(hookOK, 0)
	up := time.Now()
	rc.waitAll(t, 60*time.Second, log) // the sender backs off 1, 2, 4, 8, 16 s
	rc.mu.Lock()
	failed := rc.failed
	rc.mu.Unlock()
	if failed == 0 {
		t.Fatal("the receiver answered no 500 during the outage: the test did not test it")
	}
	log = c.eventLog(t) // with what happened since, such as pos-1 timing out
	rc.waitAll(t, 10*time.Second, log)
	dups := rc.checkLog(t, log)
	t.Logf("%d events in the log, made during a %v outage; %d batches answered 500; all arrived %v after the receiver came back; %d duplicate arrivals",
		len(log), outage, failed, time.Since(up).Round(time.Millisecond), dups)
	rc.logDuplicates(t)
}

// TestWebhookNodeKill9 kills the node with SIGKILL while the receiver is
// slow, so that a batch is in flight, restarts it on the same data dir and
// checks that every event of the log (GET /v1/events) arrives.
func TestWebhookNodeKill9(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	rc.set(hookOK, 300*time.Millisecond)
	dir := t.TempDir()
	args := []string{"--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret}
	c := startChild(t, dir, args...)
	s := startStream(t, c.addr, "pos-1")
	p := startPublisher(c, "device:pos-1", s)
	waitFor(t, 20*time.Second, "three batches received and a fourth in flight", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.batches >= 3 && rc.inside > 0
	})
	ids := p.stop(t) // the device goes on acking the backlog while the node is killed
	delivered := s.delivered.Load()
	c.kill9()
	killed := time.Now()
	before := len(rc.snapshot())

	c = startChild(t, dir, args...)
	rc.set(hookOK, 0)
	log := c.eventLog(t)
	rc.waitAll(t, 30*time.Second, log)
	dups := rc.checkLog(t, log)
	acked := 0
	for _, e := range log {
		if e.Type == client.EventAcked {
			acked++
		}
	}
	inState := 0
	for _, id := range ids {
		if c.state(t, id) == "acked" {
			inState++
		}
	}
	if acked != inState {
		t.Errorf("the log holds %d delivery.acked, but %d messages are acked", acked, inState)
	}
	t.Logf("killed with %d of %d messages delivered and %d events received; after the restart the log holds %d events (%d acked), all arrived within %v of the kill, %d duplicate arrivals",
		delivered, len(ids), before, len(log), acked, time.Since(killed).Round(time.Millisecond), dups)
	rc.logDuplicates(t)
}

// TestWebhookFleetOneSender runs two nodes, each with its own webhook path
// on one receiver, on one redis-server and on a Redis Cluster (whose
// delivery events go through the relay of redis/relay.go): no event
// arrives from both. The node holding the sender's lease is killed with
// SIGKILL; the other takes over and new events arrive.
//
// serve gives the sender a heartbeat of min(webhook.DefaultHeartbeat,
// --heartbeat), 1 s here: the lease lasts 3 s and the other node tries to
// take it every second. After a kill -9 the takeover comes within the
// lease's ttl and one more try: the bound asserted is 4 × heartbeat plus a
// second for the first batch on a loaded machine, and the figure is
// logged.
func TestWebhookFleetOneSender(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		testWebhookFleet(t, "--store", "redis", "--redis-url", redistest.Start(t).URL())
	})
	// On a cluster the delivery events go through the outboxes of the
	// devices' slots and the relay (redis/relay.go).
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t)
		testWebhookFleet(t, "--store", "redis", "--redis-cluster", "--redis-url", "redis://"+c.Nodes[0].Addr)
	})
}

func testWebhookFleet(t *testing.T, store ...string) {
	closeAPIClient(t)
	rc := startReceiver(t)
	fleet := append(store, "--heartbeat", "1s", "--webhook-secret", hookSecret)
	nodes := map[string]*child{
		"/hook/a": startChild(t, t.TempDir(), append(fleet, "--node-id", "node-a", "--webhook-url", rc.url("/hook/a"))...),
		"/hook/b": startChild(t, t.TempDir(), append(fleet, "--node-id", "node-b", "--webhook-url", rc.url("/hook/b"))...),
	}
	devices := map[string]*wsDevice{}
	for path, c := range nodes {
		devices[path] = dialDevice(t, c.addr, "pos-"+path[len(path)-1:])
		devices[path].next(5 * time.Second) // welcome
	}
	var last string
	for i := 0; i < 10; i++ {
		for path, c := range nodes {
			d := devices[path]
			last = c.publishTTL(t, "device:pos-"+path[len(path)-1:], 0)
			if id, _ := d.nextMessage(); id != last {
				t.Fatalf("got message %s, want %s", id, last)
			}
			d.ack(last)
		}
	}
	log := nodes["/hook/a"].waitLog(t, "the last ack", isDelivery(client.EventAcked, last))
	rc.waitAll(t, 20*time.Second, log)
	rc.mu.Lock()
	for id, paths := range rc.paths {
		if len(paths) > 1 {
			t.Errorf("event %s arrived from both nodes: %v", id, paths)
		}
	}
	holder := rc.arrivals[len(rc.arrivals)-1].path
	rc.mu.Unlock()
	survivor := "/hook/a"
	if holder == survivor {
		survivor = "/hook/b"
	}

	nodes[holder].kill9()
	killed := time.Now()
	c, d := nodes[survivor], devices[survivor]
	after := c.publishTTL(t, "device:pos-"+survivor[len(survivor)-1:], 0)
	if id, _ := d.nextMessage(); id != after {
		t.Fatalf("got message %s, want %s", id, after)
	}
	d.ack(after)
	const heartbeat = time.Second                  // --heartbeat above, shorter than webhook.DefaultHeartbeat
	bound := 3*heartbeat + heartbeat + time.Second // the lease's ttl, one more try, the first batch
	var took time.Duration
	waitFor(t, bound+10*time.Second, "an event made after the kill from the other node", func() bool {
		a, ok := rc.find(isDelivery(client.EventAcked, after))
		took = a.at.Sub(killed)
		return ok && a.path == survivor
	})
	t.Logf("%s held the lease; killed; %s sent an event made after the kill %v later (lease ttl %v, the sender's heartbeat %v)",
		holder, survivor, took.Round(time.Millisecond), 3*heartbeat, heartbeat)
	if took > bound {
		t.Errorf("the other node took over after %v, more than 4 × heartbeat + 1 s = %v", took, bound)
	}
	log = c.eventLog(t)
	rc.waitAll(t, 10*time.Second, log)
	dups := rc.checkLog(t, log)
	resent := 0
	rc.mu.Lock()
	for id, paths := range rc.paths {
		if len(paths) < 2 {
			continue
		}
		// Only a batch the killed node POSTed but did not record may come
		// again from the other node.
		if a := rc.firstArrival(id); a.at.After(killed) {
			t.Errorf("event %s arrived from both nodes, first after the kill", id)
		}
		resent++
	}
	rc.mu.Unlock()
	t.Logf("%d events in the log, %d duplicate arrivals, %d sent again by the node that took over", len(log), dups, resent)
}

// firstArrival returns the first arrival of id; rc.mu must be held.
func (rc *hookReceiver) firstArrival(id string) hookArrival {
	for _, a := range rc.arrivals {
		if a.ID == id {
			return a
		}
	}
	return hookArrival{}
}

// TestWebhookHangingReceiver measures the deliveries per second of a
// device acking a steady stream with a healthy receiver and then with one
// that accepts requests and never answers: the hanging receiver must not
// slow delivery down, nor grow the node's goroutines.
func TestWebhookHangingReceiver(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	admin := freeAddr(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret,
		"--admin-listen", admin)
	s := startStream(t, c.addr, "pos-1")

	p := startPublisher(c, "device:pos-1", s)
	defer p.stop(t)
	rate := func(d time.Duration) float64 {
		n0, t0 := s.delivered.Load(), time.Now()
		time.Sleep(d)
		return float64(s.delivered.Load()-n0) / time.Since(t0).Seconds()
	}
	waitFor(t, 10*time.Second, "the stream to flow", func() bool { return s.delivered.Load() > 500 })
	g0 := goroutines(t, admin)
	healthy := rate(4 * time.Second)
	rc.mu.Lock()
	healthyBatches := rc.batches
	rc.mu.Unlock()

	rc.set(hookHang, 0)
	waitFor(t, 10*time.Second, "a webhook request hanging", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.inside > 0
	})
	hanging := rate(4 * time.Second)
	g1 := goroutines(t, admin)
	t.Logf("deliveries/s: %.0f with a healthy receiver (%d batches), %.0f with a hanging one (%.0f %%); node goroutines %d before, %d during",
		healthy, healthyBatches, hanging, 100*hanging/healthy, g0, g1)
	if healthyBatches == 0 {
		t.Error("no batch reached the healthy receiver")
	}
	if hanging < 0.8*healthy {
		t.Errorf("a hanging receiver slowed delivery from %.0f/s to %.0f/s, want at least 80 %%", healthy, hanging)
	}
	if g1 > g0+10 {
		t.Errorf("the node's goroutines grew from %d to %d while the receiver hung", g0, g1)
	}
}

// TestEventsLongPoll measures how soon GET /v1/events answers after an
// event on a node process (from the device's ack to the answer), and
// checks that its cursor resumes across a kill -9 and restart.
func TestEventsLongPoll(t *testing.T) {
	closeAPIClient(t)
	dir := t.TempDir()
	c := startChild(t, dir, "--node-id", "n1")
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome
	log := c.waitLog(t, "device.online", isType(client.EventOnline, "pos-1"))
	cursor := log[len(log)-1].ID

	var took []time.Duration
	for i := 0; i < 5; i++ {
		id := c.publishTTL(t, "device:pos-1", 0)
		if got, _ := d.nextMessage(); got != id {
			t.Fatalf("got message %s, want %s", got, id)
		}
		type answer struct {
			evs  []client.Event
			next string
			err  error
			at   time.Time
		}
		ch := make(chan answer, 1)
		go func() {
			evs, next, err := c.getEvents(cursor, 10*time.Second)
			ch <- answer{evs, next, err, time.Now()}
		}()
		time.Sleep(200 * time.Millisecond) // the poll is waiting
		acked := time.Now()
		d.ack(id)
		a := <-ch // within wait + the server's slack
		if a.err != nil {
			t.Fatal(a.err)
		}
		if !slices.ContainsFunc(a.evs, isDelivery(client.EventAcked, id)) {
			t.Fatalf("the long poll answered %v, want the delivery.acked of %s", a.evs, id)
		}
		took = append(took, a.at.Sub(acked))
		cursor = a.next
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	t.Logf("ack to long-poll answer: %v (median %v)", took, sorted[len(sorted)/2])
	if sorted[len(sorted)/2] > 500*time.Millisecond {
		t.Errorf("the long poll answered a median %v after the ack, want well within 500ms (50ms on an idle machine)", sorted[len(sorted)/2])
	}

	c.kill9()
	c = startChild(t, dir, "--node-id", "n1")
	d = dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome: a new device.online
	evs, next := c.events(t, cursor, 10*time.Second)
	var want []client.Event
	for _, e := range c.eventLog(t) {
		if e.ID > cursor {
			want = append(want, e)
		}
	}
	if len(evs) == 0 || len(evs) > len(want) || !slices.Equal(eventIDs(evs), eventIDs(want[:len(evs)])) {
		t.Fatalf("after the restart, events after %s: %v; want the start of %v", cursor, eventIDs(evs), eventIDs(want))
	}
	if !slices.ContainsFunc(evs, isType(client.EventOnline, "pos-1")) {
		t.Errorf("after the restart the cursor read %v, want the new device.online", evs)
	}
	id := c.publishTTL(t, "device:pos-1", 0)
	for {
		got, _ := d.nextMessage()
		if got == id {
			break
		}
		d.ack(got) // unacked before the kill, sent again
	}
	d.ack(id)
	waitFor(t, 10*time.Second, "the ack after the restart", func() bool {
		evs, n := c.events(t, next, time.Second)
		if slices.ContainsFunc(evs, isDelivery(client.EventAcked, id)) {
			return true
		}
		next = n
		return false
	})
}
