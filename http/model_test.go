package http_test

// TestModelDelivery is a model-based test of the delivery state machine
// (SPEC section 3): random sequences of actions run against a real node (the
// bolt store in a temporary directory, WebSocket sockets on loopback, short
// timers) and every frame a device receives is checked against a model of
// what each device was sent and acknowledged.
//
// Actions: connect (a second connect of a connected device is a takeover),
// disconnect (close handshake, FIN with and without waiting for the
// server's end, RST), publish (device or group, single or batch, with or
// without a client id, often repeated), membership changes through the API,
// receive, ack (some or all received ids, ids of other devices, unknown ids,
// repeats; then nothing, a ping barrier, or a barrier and a store check),
// clock advance past the ack timeout, waiting for a redelivery, draining one
// device, node restart (crash-like Close, or graceful Shutdown) on the same
// data directory, and store freeze (model_freeze_test.go): the store stops
// answering, stalled or with its answers lost, while a few other actions
// run, then thaws.
//
// What may arrive and what must arrive differ. An ack the client cannot
// know processed (the connection ended right after it, the node crashed)
// makes a redelivery possible, never required. The model forbids the
// redelivery of an ack once it knows the ack durable: GET
// /v1/messages/{id} showed it acked, or the server read it (a pong answered
// a ping sent after it, or a close handshake followed it) and the node then
// shut down gracefully. A pong proves the ack read, not stored: pongs never
// wait for the store (issue 9), acks are committed in the background. An
// ack the server read is never resent on that connection; on a later one,
// without a crash between, its redelivery is counted, and fails only with
// -model.strict. Arrivals are required only
// with generous deadlines (drain, redelivery). The invariants are listed at
// checkMessage and finish.
//
// During a freeze every publish and connect must fail fast with 503 and
// Retry-After, no connection may end unasked, and one the client closes is
// still closed by the server. Acks sent meanwhile, or while the sessions
// back off after the store failed them, prove nothing by a pong; once the
// backoff is over, those sent on a connection still open must be stored
// (checkOutageAcks). A publish that answered 503 may or may not have been
// stored (bbolt commits a write whose caller stopped waiting; Redis runs a
// script whose reply times out): the model keeps it in limbo (mlimbo),
// allowed to arrive and never required, until it arrives or a retry with its
// client id tells (200 duplicate: stored, then required; 202: it was not).
// Once thawed, without a restart, everything accepted must still be
// delivered and acked, and nothing may stay pending in the store.
//
// With -model.strict the test also fails on what SPEC tolerates but the node
// should not do: an ack read before a close handshake and redelivered on a
// later connection, and a message stored while its publish failed that a
// live session is not woken for after a retry accepted it (without
// -model.strict drain reconnects the device and counts it).
//
// Run longer, on either I/O layer, with
//
//	go test -race ./http -run TestModelDelivery -rapid.checks=300 [-model.steps=60] [-model.strict] [-args -io=goroutine]

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

var (
	modelSteps  = flag.Int("model.steps", 40, "TestModelDelivery: most actions per check")
	modelStrict = flag.Bool("model.strict", false, "TestModelDelivery: also fail on what SPEC tolerates but the node should avoid: the redelivery on a later connection of an ack read before a close handshake (also one read in a store outage), and a stored message a live session is not woken for")
)

// modelChecks is the default number of checks; -rapid.checks or RAPID_CHECKS
// override it.
const modelChecks = 30

const (
	// mHeartbeat is short enough that pings and pongs mix with the
	// deliveries, long enough that a scheduling stall of the test machine
	// (seen with two -race runs on two CPUs) does not end connections with
	// 4408.
	mHeartbeat   = time.Second
	mAckTimeout  = 150 * time.Millisecond
	mMaxInflight = 3
	mWait        = 5 * time.Second // deadline for what must happen "soon"
)

var (
	mDevices = []string{"d0", "d1", "d2"}
	mGroups  = []string{"g0", "g1"}
)

func TestModelDelivery(t *testing.T) {
	setDefaultChecks(t, modelChecks)
	var st modelStats
	t.Cleanup(func() { t.Logf("model: %s", st.String()) })
	rapid.Check(t, func(rt *rapid.T) {
		m := newModel(rt, &st)
		steps := rapid.IntRange(1, *modelSteps).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			m.step(i)
		}
		m.finish()
	})
}

// setDefaultChecks sets -rapid.checks to n unless the flag or RAPID_CHECKS
// was given.
func setDefaultChecks(t *testing.T, n int) {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "rapid.checks" })
	if _, ok := os.LookupEnv("RAPID_CHECKS"); given || ok {
		return
	}
	old := flag.Lookup("rapid.checks").Value.String()
	if err := flag.Set("rapid.checks", fmt.Sprint(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set("rapid.checks", old) })
}

// modelStats counts what the checks exercised, for the log.
type modelStats struct {
	checks, actions, published, duplicates, frames, redeliveries atomic.Int64
	takeovers, restarts, redeliveredAfterAck, flushRaces         atomic.Int64
	freezes, frozenNS, held, refused, unplanned, overloaded      atomic.Int64
	limbo, limboStored, limboAbsent, quiet, outageAcks           atomic.Int64
	firstFailure                                                 atomic.Int64 // the check that failed first
}

func (s *modelStats) String() string {
	failed := ""
	if n := s.firstFailure.Load(); n > 0 {
		failed = fmt.Sprintf("; check %d failed first", n)
	}
	return fmt.Sprintf("%d checks, %d actions, %d messages published, %d duplicate publishes, %d message frames (%d redeliveries), %d takeovers, %d restarts, %d redeliveries of acks not known durable (%d of acks read before a close handshake); "+
		"%d store freezes (%v) holding %d store calls, %d requests refused with 503 (%d publishes as overloaded outside an outage), %d store calls failed or late outside a freeze, %d acks sent in an outage found stored after it; "+
		"%d refused publishes, of which %d found stored and %d found not stored; %d stored messages fetched only after a reconnect",
		s.checks.Load(), s.actions.Load(), s.published.Load(), s.duplicates.Load(), s.frames.Load(), s.redeliveries.Load(),
		s.takeovers.Load(), s.restarts.Load(), s.redeliveredAfterAck.Load(), s.flushRaces.Load(),
		s.freezes.Load(), time.Duration(s.frozenNS.Load()).Round(time.Millisecond), s.held.Load(), s.refused.Load(), s.overloaded.Load(), s.unplanned.Load(), s.outageAcks.Load(),
		s.limbo.Load(), s.limboStored.Load(), s.limboAbsent.Load(), s.quiet.Load()) + failed
}

// model is one check: the node, the devices' connections and what the
// model knows of every message.
type model struct {
	t     *rapid.T
	st    *modelStats
	check int // 1 for the first
	dir   string
	node  *nodetest.Node
	epoch int // orders dials, acks processed and stored
	seq   int // publish order
	data  int // unique data per publish request

	devices map[string]*mdev
	members map[string]map[string]bool // group → devices
	msgs    []*mmsg                    // as the model learnt of them
	byID    map[string]*mmsg
	idem    map[string]*mmsg // target + " " + client id
	conns   []*mconn         // every connection, in dial order

	fs      *nodetest.Freezer // the hub's store
	frozen  bool
	freezes int       // freezes so far
	limbo   []*mlimbo // publishes refused with 503, not known stored or not
	// outageAcks are acks sent in a store outage, to check after it.
	outageAcks []outageAck
}

// mmsg is a message the node accepted, or one the model found stored
// although its publish answered 503 (see mlimbo).
type mmsg struct {
	id, target, data string
	seq              int
	recipients       map[string]bool
	// quiet: stored with no session woken (its publish failed); accepted:
	// a repeat then answered 200 with its id; unordered: its publish order
	// is not known (refused twice).
	quiet, accepted, unordered bool
}

// mdev is a device of the model.
type mdev struct {
	name      string
	conn      *mconn // the live connection, or nil
	ds        map[string]*mdel
	lastFirst map[string]int // target → seq of the last first delivery
}

// mdel is the delivery of one message to one device.
type mdel struct {
	msg        *mmsg
	received   int
	attempts   map[int]bool
	maxAttempt int
	ackSent    bool
	// processedOn is the connection on which the server answered a ping
	// sent after an ack of this delivery (frame processedAt): from then on
	// that connection must not carry it again.
	processedOn *mconn
	processedAt int
	// storedEp is the epoch from which the ack is known durable (0: not
	// known), for the reason in stored; connections dialled later must not
	// carry it.
	storedEp int
	stored   string
	// readEp is the epoch from which the server is known to have read the
	// ack (a pong followed it, or a close handshake the client completed):
	// the node commits it unless it crashes first. readFails is the count
	// of failed store calls then, readOutage whether it was during an
	// outage.
	readEp     int
	readFails  int64
	readOutage bool
}

func newModel(t *rapid.T, st *modelStats) *model {
	dir, err := os.MkdirTemp("", "tether-model-")
	if err != nil {
		t.Fatal(err)
	}
	m := &model{
		t: t, st: st, dir: dir,
		devices: map[string]*mdev{},
		members: map[string]map[string]bool{},
		byID:    map[string]*mmsg{},
		idem:    map[string]*mmsg{},
		fs:      &nodetest.Freezer{},
	}
	for _, d := range mDevices {
		m.devices[d] = &mdev{name: d, ds: map[string]*mdel{}, lastFirst: map[string]int{}}
	}
	for _, g := range mGroups {
		m.members[g] = map[string]bool{}
	}
	t.Cleanup(m.close)
	m.check = int(st.checks.Add(1))
	m.open()
	return m
}

// close ends the check: store freeze, sockets, node, directory. Every
// reader goroutine is waited for, so goleak stays clean.
func (m *model) close() {
	if m.t.Failed() {
		m.st.firstFailure.CompareAndSwap(0, int64(m.check))
	}
	m.fs.Unfreeze()
	m.st.held.Add(m.fs.Held())
	m.st.unplanned.Add(m.fs.Unplanned())
	for _, c := range m.conns {
		c.c.Close()
	}
	for _, c := range m.conns {
		<-c.done
	}
	if m.node != nil {
		m.node.Close()
	}
	os.RemoveAll(m.dir)
}

func (m *model) tick() int { m.epoch++; return m.epoch }

// open starts a node on the check's data directory with short timers and
// its store behind m.fs.
func (m *model) open() {
	n, err := nodetest.Open(nodetest.Options{Dir: m.dir, Wrap: m.fs.Wrap, IO: *ioMode, Edit: func(h *hub.Config, c *tetherhttp.Config) {
		h.Heartbeat, h.AckTimeout, h.MaxInflight, h.StoreTimeout = mHeartbeat, mAckTimeout, mMaxInflight, mStoreTimeout
		c.AdminListen = "-"
	}})
	if err != nil {
		m.t.Fatalf("open node: %v", err)
	}
	m.node = n
}

// step draws and runs one action. Cheap actions come first: rapid shrinks
// towards them.
func (m *model) step(i int) {
	actions := []string{
		"receive", "publish", "publish", "ack", "ack", "connect", "sleep",
		"disconnect", "publishKey", "batch", "member", "redelivery", "bounce", "drain", "freeze", "restart",
	}
	a := rapid.SampledFrom(actions).Draw(m.t, fmt.Sprintf("action %d", i))
	m.st.actions.Add(1)
	m.pump()
	m.checkOutageAcks()
	m.step1(a)
	m.pump()
}

// step1 runs action a.
func (m *model) step1(a string) {
	switch a {
	case "receive":
		m.receive()
	case "publish":
		m.publish(false)
	case "publishKey":
		m.publish(true)
	case "batch":
		m.batch()
	case "ack":
		m.ack()
	case "connect":
		m.connect(m.drawDevice("connect"), m.drawGroups())
	case "disconnect":
		m.disconnect()
	case "bounce":
		m.bounce()
	case "sleep":
		k := rapid.IntRange(1, 2).Draw(m.t, "ack timeouts")
		time.Sleep(time.Duration(k)*mAckTimeout + 20*time.Millisecond)
	case "member":
		m.member()
	case "redelivery":
		m.redelivery()
	case "drain":
		m.drain(m.drawLive("drain"))
	case "freeze":
		m.freeze()
	case "restart":
		m.restart(rapid.Bool().Draw(m.t, "graceful"))
	}
}

func (m *model) drawDevice(label string) *mdev {
	return m.devices[rapid.SampledFrom(mDevices).Draw(m.t, label)]
}

// drawLive draws a device with a live connection, connecting one when none
// has.
func (m *model) drawLive(label string) *mdev {
	var live []string
	for _, name := range mDevices {
		if m.devices[name].conn != nil {
			live = append(live, name)
		}
	}
	if len(live) == 0 {
		d := m.drawDevice(label + ": connect first")
		m.connect(d, nil)
		return d
	}
	return m.devices[rapid.SampledFrom(live).Draw(m.t, label)]
}

// anyLive reports whether a device has a live connection.
func (m *model) anyLive() bool {
	for _, d := range m.devices {
		if d.conn != nil {
			return true
		}
	}
	return false
}

func (m *model) drawGroups() []string {
	var gs []string
	for _, g := range mGroups {
		if rapid.IntRange(0, 2).Draw(m.t, "in "+g) == 0 {
			gs = append(gs, g)
		}
	}
	return gs
}

// durable records that the ack of del is durable from epoch ep on.
func (del *mdel) durable(ep int, why string) {
	if del.storedEp == 0 {
		del.storedEp, del.stored = ep, why
	}
}

// restart stops the node (crash-like Close, or graceful Shutdown, which
// must end every session with 1001 and flush the acks it processed) and
// opens a new one on the same directory.
func (m *model) restart(graceful bool) {
	if rapid.Bool().Draw(m.t, "ack all first") {
		for _, name := range mDevices {
			if d := m.devices[name]; d.conn != nil {
				m.ackProcessed(d)
			}
		}
	}
	m.t.Logf("restart (graceful %v)", graceful)
	m.st.restarts.Add(1)
	n := m.node
	var err error
	fails := m.fs.Failures()
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = n.Hub.Shutdown(ctx)
		cancel()
	}
	calm := m.fs.Failures() == fails
	n.Close()
	m.node = nil
	for _, name := range mDevices {
		if c := m.devices[name].conn; c != nil {
			m.expectEnd(c, 1001, "the node stopped")
		}
	}
	flushed := graceful && err == nil && calm
	if graceful && err != nil {
		m.t.Logf("shutdown: %v", err)
	}
	ep := m.tick()
	for _, d := range m.devices {
		if !flushed {
			d.lastFirst = map[string]int{} // attempt 1 may come again (below)
		}
		for _, del := range d.ds {
			if !flushed {
				// Sends are committed in the background with the acks:
				// a crash may lose the last ones, and attempt numbers
				// start again from the last committed.
				del.attempts, del.maxAttempt = map[int]bool{}, 0
			}
			if del.readEp == 0 || del.storedEp > 0 {
				continue
			}
			// A session that closed in a store outage may still hold the
			// ack, backing off, or may have dropped it: -model.strict
			// holds that a graceful shutdown must have stored it anyway.
			stored := del.readFails == fails && !del.readOutage
			switch {
			case flushed && (stored || *modelStrict):
				del.durable(ep, "the server read it, then a graceful shutdown")
			case !flushed: // a crash may lose the acks it had not stored
				del.readEp = 0
			}
		}
	}
	m.open()
}

// finish connects every device, drains it and checks the end state: every
// message addressed to a device reached it and is acked (no loss); the
// store's deliveries match the recipients at publish time and count at
// least the attempts seen; no device has anything pending; the groups hold
// the model's members.
func (m *model) finish() {
	m.pump()
	for _, name := range mDevices {
		if d := m.devices[name]; d.conn == nil {
			m.connect(d, nil)
		}
	}
	for _, name := range mDevices {
		m.drain(m.devices[name])
	}
	m.pump()
	for _, mm := range m.msgs {
		var out struct {
			Target     string `json:"target"`
			Deliveries []struct {
				Device   string `json:"device"`
				State    string `json:"state"`
				Attempts int    `json:"attempts"`
			} `json:"deliveries"`
		}
		if code := m.api("GET", "/v1/messages/"+mm.id, nil, &out); code != 200 || out.Target != mm.target {
			m.t.Fatalf("GET message %s: status %d, target %q, want %s", mm.id, code, out.Target, mm.target)
		}
		var got []string
		for _, dl := range out.Deliveries {
			got = append(got, dl.Device)
			del := m.devices[dl.Device].ds[mm.id]
			if del == nil {
				continue
			}
			if dl.State != "acked" || del.received == 0 || dl.Attempts < del.maxAttempt {
				m.t.Fatalf("message %s to %s: store %q with %d attempts; device received it %d times, attempts %v", mm.id, dl.Device, dl.State, dl.Attempts, del.received, sortedKeys(del.attempts))
			}
		}
		if want := keys(mm.recipients); !slices.Equal(got, want) {
			m.t.Fatalf("message %s: deliveries to %v, want %v", mm.id, got, want)
		}
	}
	for _, name := range mDevices {
		var dev struct {
			Online  bool `json:"online"`
			Pending int  `json:"pending"`
		}
		if code := m.api("GET", "/v1/devices/"+name, nil, &dev); code != 200 || !dev.Online || dev.Pending != 0 {
			m.t.Fatalf("GET device %s: status %d %+v, want online with nothing pending", name, code, dev)
		}
	}
	for _, g := range mGroups {
		var grp struct {
			Devices []struct{ ID string } `json:"devices"`
		}
		code := m.api("GET", "/v1/groups/"+g, nil, &grp)
		var got []string
		for _, d := range grp.Devices {
			got = append(got, d.ID)
		}
		if want := keys(m.members[g]); code != 200 || !slices.Equal(got, want) {
			m.t.Fatalf("GET group %s: status %d, members %v, want %v", g, code, got, want)
		}
	}
}

// api calls the node's HTTP API and decodes the answer into out. Outside
// a freeze it retries a 503 that followed a failed store call (a slow
// disk); callers use it for requests that are safe to repeat.
func (m *model) api(method, path string, body, out any) int {
	deadline := time.Now().Add(mWait)
	for {
		fails := m.fs.Failures()
		code, _ := m.call(method, path, body, out)
		if code != http.StatusServiceUnavailable || m.frozen || m.fs.Failures() == fails || time.Now().After(deadline) {
			return code
		}
		m.t.Logf("%s %s: 503 after a store call failed, retry", method, path)
		time.Sleep(100 * time.Millisecond)
	}
}

// call calls the node's HTTP API once and decodes the answer into out.
func (m *model) call(method, path string, body, out any) (int, http.Header) {
	a, err := m.node.Do(context.Background(), method, path, body)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil && len(a.Body) > 0 {
		if err := json.Unmarshal(a.Body, out); err != nil {
			m.t.Fatalf("%s %s: status %d, decode %q: %v", method, path, a.Status, a.Body, err)
		}
	}
	return a.Status, a.Header
}

func keys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys[K interface{ ~string | ~int }, V any](mp map[K]V) []K {
	out := make([]K, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
