package fault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// Flags of TestChaos. A failure is replayed (the same fault sequence; the
// timing of the rest still varies) with
//
//	go test -race -count=1 ./fault -run TestChaos -args -seed N
var (
	seedFlag         = flag.Uint64("seed", 0, "seed of TestChaos's monkey (default: from the clock; printed at start)")
	chaosFlag        = flag.Duration("chaos", 0, "how long TestChaos's monkey runs (default 20s; full 2m)")
	chaosDevicesFlag = flag.Int("chaos-devices", 0, "devices of TestChaos (default 30; full 300)")
)

const (
	chaosNodes  = 3
	chaosGroups = 5
)

// chaosNode is one node of TestChaos on a fixed address, so that it can be
// killed and started again where its devices will look for it.
type chaosNode struct {
	id, addr string

	mu sync.Mutex     // guards following
	n  *nodetest.Node // nil while down
}

func (n *chaosNode) up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.n != nil
}

// start opens the node's store, hub and server on n.addr (":0" the first
// time, then the address it got).
func (n *chaosNode) start(redisURL, prefix string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.n != nil {
		return nil
	}
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	nd, err := openNode(redis.Options{URL: redisURL, Prefix: prefix, ConnTimeout: 2 * time.Second}, func(h *hub.Config, c *tetherhttp.Config) {
		h.Node, h.Heartbeat = n.id, time.Second
		c.Listen = addr
	})
	if err != nil {
		return fmt.Errorf("start node on %s: %w", addr, err)
	}
	n.addr = nd.Server.Addr()
	n.n = nd
	return nil
}

// kill stops the node abruptly: its Redis client goes first, so it cannot
// write its sessions' disconnections, then the hub and the server.
func (n *chaosNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.n == nil {
		return
	}
	n.n.Store.Close()
	n.n.Close()
	n.n = nil
}

// node returns the node while it is up, else nil.
func (n *chaosNode) node() *nodetest.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.n
}

// chaosDevice is one raw WebSocket device that acks everything and
// reconnects to a random node with backoff.
type chaosDevice struct {
	id     string
	tok    string
	groups []string

	mu   sync.Mutex // guards conn
	conn net.Conn
	once atomic.Bool // connected at least once (memberships recorded)
}

func (d *chaosDevice) setConn(c net.Conn) {
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
}

// drop closes the device's socket from the client side; rst sends a reset
// instead of a FIN. It reports whether there was one.
func (d *chaosDevice) drop(rst bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return false
	}
	if tc, ok := d.conn.(*net.TCPConn); ok && rst {
		_ = tc.SetLinger(0)
	}
	_ = d.conn.Close()
	return true
}

// accepted is a message the publish API accepted, with the devices it
// addresses.
type acceptedMsg struct {
	id, target string
	pub, seq   int
	devices    []string
}

// chaosRun holds the state and history of one TestChaos run.
type chaosRun struct {
	t       *testing.T
	seed    uint64
	nodes   []*chaosNode
	devices []*chaosDevice
	members map[string][]string // group → device ids
	stop    atomic.Bool
	lastRx  atomic.Int64 // unix nanos of the last message frame received
	wg      sync.WaitGroup
	httpc   *http.Client

	mu       sync.Mutex                  // guards following
	received map[string]map[string][]int // device → message id → attempts
	accepted []acceptedMsg
	pubErrs  map[string]int // publish outcome that is not an acceptance → count
	faults   map[string]int
}

func (c *chaosRun) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		n.mu.Lock()
		out[i] = n.addr
		n.mu.Unlock()
	}
	return out
}

// upAddrs returns the addresses of the nodes up, or all of them if none.
func (c *chaosRun) upAddrs() []string {
	var out []string
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.n != nil {
			out = append(out, n.addr)
		}
		n.mu.Unlock()
	}
	if len(out) == 0 {
		return c.addrs()
	}
	return out
}

// runDevice connects d to random nodes until the run stops, recording and
// acking every message.
func (c *chaosRun) runDevice(d *chaosDevice, rng *rand.Rand) {
	defer c.wg.Done()
	backoff := 50 * time.Millisecond
	for !c.stop.Load() {
		addrs := c.addrs()
		conn, err := nodetest.Dial("ws://"+addrs[rng.IntN(len(addrs))]+"/v1/connect", d.tok, nil, 2*time.Second)
		if err != nil {
			time.Sleep(time.Duration(rng.Int64N(int64(backoff))) + 10*time.Millisecond)
			backoff = min(2*backoff, time.Second)
			continue
		}
		d.setConn(conn.Conn)
		if c.stop.Load() {
			d.setConn(nil)
			conn.Conn.Close()
			break
		}
		for {
			f, err := conn.Next(5 * time.Second)
			if err != nil {
				break
			}
			switch f.Type {
			case "welcome":
				d.once.Store(true)
				backoff = 50 * time.Millisecond
			case "message":
				c.lastRx.Store(time.Now().UnixNano())
				c.mu.Lock()
				c.received[d.id][f.ID] = append(c.received[d.id][f.ID], f.Attempt)
				c.mu.Unlock()
				_ = conn.SendJSON(map[string]any{"type": "ack", "ids": []string{f.ID}})
			}
		}
		d.setConn(nil)
		conn.Conn.Close()
		time.Sleep(time.Duration(rng.Int64N(int64(backoff))) + 10*time.Millisecond)
	}
}

// runPublisher publishes numbered messages to random devices and groups
// through random nodes until end.
func (c *chaosRun) runPublisher(pub int, rng *rand.Rand, end time.Time) {
	defer c.wg.Done()
	for seq := 0; time.Now().Before(end); seq++ {
		var target string
		var devs []string
		if rng.IntN(10) < 3 {
			g := fmt.Sprintf("cg-%d", rng.IntN(chaosGroups+1))
			target, devs = "group:"+g, c.members[g]
		} else {
			d := c.devices[rng.IntN(len(c.devices))]
			target, devs = "device:"+d.id, []string{d.id}
		}
		// A random node that is up as far as the test knows (it may be
		// killed while the request is in flight).
		addrs := c.upAddrs()
		addr := addrs[rng.IntN(len(addrs))]
		b, _ := json.Marshal(map[string]any{"target": target, "data": map[string]int{"pub": pub, "seq": seq}})
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/messages", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+nodetest.APIKey)
		resp, err := c.httpc.Do(req)
		outcome := ""
		var out struct {
			ID string `json:"id"`
		}
		switch {
		case err != nil:
			outcome = "transport error"
		default:
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if (resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK) || out.ID == "" {
				outcome = fmt.Sprintf("HTTP %d", resp.StatusCode)
			}
		}
		c.mu.Lock()
		if outcome == "" {
			c.accepted = append(c.accepted, acceptedMsg{id: out.ID, target: target, pub: pub, seq: seq, devices: devs})
		} else {
			c.pubErrs[outcome]++
		}
		c.mu.Unlock()
		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
	}
}

// runMonkey performs random faults until end, keeping at least one node
// up, then heals everything: all nodes up, Redis running.
func (c *chaosRun) runMonkey(r *redistest.Server, redisURL, prefix string, rng *rand.Rand, end time.Time) error {
	restartAt := make([]time.Time, len(c.nodes)) // zero: up
	restartDue := func(force bool) error {
		for i, n := range c.nodes {
			if restartAt[i].IsZero() || (!force && time.Now().Before(restartAt[i])) {
				continue
			}
			if err := n.start(redisURL, prefix); err != nil {
				if force {
					return fmt.Errorf("restart %s: %w", n.id, err)
				}
				continue // try again on the next round
			}
			restartAt[i] = time.Time{}
			c.note("restart node")
		}
		return nil
	}
	for time.Now().Before(end) {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		if err := restartDue(false); err != nil {
			return err
		}
		switch k := rng.IntN(10); {
		case k < 2: // kill a node, keeping one up
			var up []int
			for i := range c.nodes {
				if restartAt[i].IsZero() {
					up = append(up, i)
				}
			}
			if len(up) < 2 {
				continue
			}
			i := up[rng.IntN(len(up))]
			c.nodes[i].kill()
			restartAt[i] = time.Now().Add(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
			c.note("kill node")
		case k < 3: // freeze Redis
			r.Pause()
			time.Sleep(time.Duration(1000+rng.IntN(1000)) * time.Millisecond)
			r.Resume()
			c.note("SIGSTOP redis")
		case k < 4: // crash Redis; it comes back from its append-only file
			r.Kill()
			time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
			r.Restart()
			c.note("SIGKILL redis")
		case k < 7: // drop client sockets
			for range 1 + rng.IntN(max(1, len(c.devices)/4)) {
				if c.devices[rng.IntN(len(c.devices))].drop(rng.IntN(2) == 0) {
					c.note("drop socket")
				}
			}
		default: // force reconnects: a session takeover of the same device
			for range 1 + rng.IntN(3) {
				d := c.devices[rng.IntN(len(c.devices))]
				addrs := c.addrs()
				conn, err := nodetest.Dial("ws://"+addrs[rng.IntN(len(addrs))]+"/v1/connect", d.tok, nil, time.Second)
				if err != nil {
					continue
				}
				// Wait for the welcome (the old session is closed with
				// 4409) and leave: whatever this session got is not acked
				// and must be redelivered to the device.
				_, _ = conn.Next(time.Second)
				conn.Conn.Close()
				c.note("takeover")
			}
		}
	}
	r.Resume()
	return restartDue(true)
}

func (c *chaosRun) note(fault string) {
	c.mu.Lock()
	c.faults[fault]++
	c.mu.Unlock()
}

// missing returns the (device, id) pairs accepted but never received.
func (c *chaosRun) missing() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.accepted {
		for _, d := range m.devices {
			if len(c.received[d][m.id]) == 0 {
				out = append(out, fmt.Sprintf("(%s, %s pub %d seq %d to %s)", d, m.id, m.pub, m.seq, m.target))
			}
		}
	}
	return out
}

// TestChaos: an at-least-once checker under chaos (fault suite item 3).
// Three nodes on one redis-server with appendfsync always; devices that
// ack everything and reconnect to random nodes; publishers numbering their
// messages to devices and groups through random nodes; a seeded monkey
// that kills and restarts nodes, freezes Redis, kills and restarts Redis,
// drops client sockets and takes sessions over. Afterwards every accepted message must have been
// delivered to, and acked by, every device it addressed.
func TestChaos(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("chaos seed %d (replay: go test -race -count=1 ./fault -run TestChaos -args -seed %d)", seed, seed)
	chaosFor := time.Duration(scaled(int(*chaosFlag), int(20*time.Second), int(2*time.Minute)))
	ndev := scaled(*chaosDevicesFlag, 30, 300)

	r := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	prefix := fmt.Sprintf("chaos%d", time.Now().UnixNano())
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	c := &chaosRun{t: t, seed: seed, members: map[string][]string{}, received: map[string]map[string][]int{},
		pubErrs: map[string]int{}, faults: map[string]int{},
		httpc: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
	for i := range chaosNodes {
		n := &chaosNode{id: fmt.Sprintf("chaos-%c", 'a'+i)}
		if err := n.start(r.URL(), prefix); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	defer func() {
		for _, n := range c.nodes {
			n.kill()
		}
		tr.CloseIdleConnections()
	}()
	// Memberships are static and known: device i is in cg-(i%5), and one
	// in three also in cg-5.
	for i := range ndev {
		d := &chaosDevice{id: fmt.Sprintf("cd-%d", i), groups: []string{fmt.Sprintf("cg-%d", i%chaosGroups)}}
		if i%3 == 0 {
			d.groups = append(d.groups, fmt.Sprintf("cg-%d", chaosGroups))
		}
		d.tok = nodetest.MustToken(t, d.id, d.groups...)
		for _, g := range d.groups {
			c.members[g] = append(c.members[g], d.id)
		}
		c.received[d.id] = map[string][]int{}
		c.devices = append(c.devices, d)
	}
	devWG := &c.wg
	for i, d := range c.devices {
		devWG.Add(1)
		go c.runDevice(d, rand.New(rand.NewPCG(seed, uint64(1000+i))))
	}
	stopDevices := func() {
		c.stop.Store(true)
		for _, d := range c.devices {
			d.drop(false)
		}
		devWG.Wait()
	}
	defer func() {
		if !c.stop.Load() {
			stopDevices()
		}
	}()
	// A group message is addressed to the members at publish time: every
	// device must have connected once before anything is published.
	nodetest.Eventually(t, 30*time.Second, "every device connected once", func() bool {
		for _, d := range c.devices {
			if !d.once.Load() {
				return false
			}
		}
		return true
	})

	start := time.Now()
	end := start.Add(chaosFor)
	var pubWG sync.WaitGroup
	for p := range 3 {
		pubWG.Add(1)
		c.wg.Add(1)
		go func() { defer pubWG.Done(); c.runPublisher(p, rand.New(rand.NewPCG(seed, uint64(p))), end) }()
	}
	monkeyErr := c.runMonkey(r, r.URL(), prefix, rand.New(rand.NewPCG(seed, 0)), end)
	pubWG.Wait()
	if monkeyErr != nil {
		t.Fatalf("seed %d: healing: %v", seed, monkeyErr)
	}
	healed := time.Now()

	// Every (addressed device, accepted id) received, within a bound.
	deadline := healed.Add(60 * time.Second)
	var miss []string
	for {
		miss = c.missing()
		if len(miss) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every delivery of every accepted message acked, as the API says.
	var notAcked []string
	if len(miss) == 0 {
		c.mu.Lock()
		acc := append([]acceptedMsg(nil), c.accepted...)
		c.mu.Unlock()
		api := c.nodes[0].node() // all up once healed
		pending := acc
		for len(pending) > 0 {
			var still []acceptedMsg
			notAcked = notAcked[:0]
			for _, m := range pending {
				a, err := api.Do(context.Background(), "GET", "/v1/messages/"+m.id, nil)
				var ms struct {
					Deliveries []struct {
						Device string `json:"device"`
						State  string `json:"state"`
					} `json:"deliveries"`
				}
				if err == nil && a.Status == http.StatusOK {
					_ = json.Unmarshal(a.Body, &ms)
				}
				ok := err == nil && a.Status == http.StatusOK && len(ms.Deliveries) == len(m.devices)
				for _, d := range ms.Deliveries {
					if d.State != "acked" {
						ok = false
					}
				}
				if !ok {
					still = append(still, m)
					notAcked = append(notAcked, fmt.Sprintf("%s to %s: %d %s %v", m.id, m.target, a.Status, a.Body, err))
				}
			}
			pending = still
			if len(pending) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// Quiet: no message frame for 1 s (bounded), so that late redeliveries
	// are counted as duplicates.
	quiet := time.Now().Add(10 * time.Second)
	for time.Since(time.Unix(0, c.lastRx.Load())) < time.Second && time.Now().Before(quiet) {
		time.Sleep(100 * time.Millisecond)
	}
	stopDevices()

	c.mu.Lock()
	known := map[string]bool{}
	pairs := 0
	for _, m := range c.accepted {
		known[m.id] = true
		pairs += len(m.devices)
	}
	var delivered, dups, unknown, frames int
	for _, ids := range c.received {
		for id, atts := range ids {
			frames += len(atts)
			if !known[id] {
				unknown++
				continue
			}
			delivered++
			dups += len(atts) - 1
		}
	}
	t.Logf("%v of chaos, healed in %v; faults %v; %d messages accepted (%d (device, id) pairs), publish failures %v; %d message frames received",
		chaosFor, time.Since(healed).Round(time.Millisecond), c.faults, len(c.accepted), pairs, c.pubErrs, frames)
	c.mu.Unlock()
	t.Logf("delivered %d / duplicates %d / lost %d / unknown %d (seed %d)", delivered, dups, len(miss), unknown, seed)
	if len(miss) > 0 {
		sort.Strings(miss)
		show := miss
		if len(show) > 50 {
			show = show[:50]
		}
		t.Fatalf("seed %d: %d (device, message) pairs accepted but never delivered within 60 s of healing: %s", seed, len(miss), strings.Join(show, " "))
	}
	if len(notAcked) > 0 {
		show := notAcked
		if len(show) > 20 {
			show = show[:20]
		}
		t.Fatalf("seed %d: %d accepted messages delivered but not acked by all their devices (GET /v1/messages/{id}): %s", seed, len(notAcked), strings.Join(show, "; "))
	}
	if len(c.accepted) == 0 {
		t.Fatalf("seed %d: nothing was accepted", seed)
	}
}
