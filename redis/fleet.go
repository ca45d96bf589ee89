package redis

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Fleet is tether.Fleet on the same Redis as the Store (hub.Config.Fleet).
//
// Keys: the presence of a device lives on its shard, P:{d:D}:presence, a
// hash {node, session, connected, seen}; it is written when a session
// opens or closes. A node's liveness is P:{n:N}:alive, refreshed every
// heartbeat with a time to live, and P:{n:all}:nodes, a zset of the nodes
// scored by when their liveness ends, lists them. Events for node N go to
// the sharded channel P:{n:N}:events (SPUBLISH/SSUBSCRIBE, so that on a
// cluster only the shard of the node's slot carries them); an event for
// every node goes to each live node's channel.
type Fleet struct {
	s *Store

	mu      sync.Mutex // guards following
	nodes   []string   // live nodes, as last read
	nodesAt time.Time  // when
}

// nodesTTL is how long Send uses the list of live nodes before it reads it
// again.
const nodesTTL = time.Second

var _ tether.Fleet = (*Fleet)(nil)

var (
	//go:embed lua/connect.lua
	connectLua string
	//go:embed lua/disconnect.lua
	disconnectLua string

	scriptConnect    = newScript(connectLua, false)
	scriptDisconnect = newScript(disconnectLua, false)
)

// Fleet returns the fleet side of the store.
func (s *Store) Fleet() *Fleet { return &Fleet{s: s} }

func (k keys) nodes() string { return k.prefix + ":{n:all}:nodes" }

func (k keys) presence(device string) string { return k.prefix + ":{d:" + device + "}:presence" }
func (k keys) alive(node string) string      { return k.prefix + ":{n:" + node + "}:alive" }
func (k keys) events(node string) string     { return k.prefix + ":{n:" + node + "}:events" }

// Alive refreshes node's liveness key for ttl and its entry in the list
// of nodes: one pipeline.
func (f *Fleet) Alive(ctx context.Context, node string, ttl time.Duration) error {
	s := f.s
	if err := s.check(ctx, "alive"); err != nil {
		return err
	}
	now := time.Now()
	until, expired := float64(now.Add(ttl).UnixMilli()), strconv.FormatInt(now.UnixMilli(), 10)
	_, err := s.roundTrip(ctx, "alive", []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Set().Key(s.k.alive(node)).Value("1").Px(ttl).Build()
		}),
		plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Zadd().Key(s.k.nodes()).ScoreMember().ScoreMember(until, node).Build()
		}),
		plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Zremrangebyscore().Key(s.k.nodes()).Min("-inf").Max("(" + expired).Build()
		}),
	})
	return err
}

// liveNodes returns the nodes whose liveness has not ended, read at most
// once per nodesTTL.
func (f *Fleet) liveNodes(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	if time.Since(f.nodesAt) < nodesTTL {
		nodes := f.nodes
		f.mu.Unlock()
		return nodes, nil
	}
	f.mu.Unlock()
	s := f.s
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	res, err := s.roundTrip(ctx, "send", []call{plainCall(func(b rueidis.Builder) rueidis.Completed {
		return b.Zrangebyscore().Key(s.k.nodes()).Min(now).Max("+inf").Build()
	})})
	if err != nil {
		return nil, err
	}
	nodes, err := res[0].AsStrSlice()
	if err != nil {
		return nil, s.wrap(ctx, "send", err)
	}
	f.mu.Lock()
	f.nodes, f.nodesAt = nodes, time.Now()
	f.mu.Unlock()
	return nodes, nil
}

// Connected records sessions and returns the entries they replaced. One
// pipeline of one script per device.
func (f *Fleet) Connected(ctx context.Context, sessions []tether.Online) ([]tether.Online, error) {
	s := f.s
	if err := s.check(ctx, "connected"); err != nil {
		return nil, err
	}
	calls := make([]call, len(sessions))
	for i, o := range sessions {
		calls[i] = scriptCall(scriptConnect, []string{s.k.presence(o.Device)},
			o.Node, o.Session, nanos(o.ConnectedAt), nanos(o.LastSeen))
	}
	res, err := s.roundTrip(ctx, "connected", calls)
	if err != nil {
		return nil, err
	}
	prev := make([]tether.Online, len(sessions))
	for i, r := range res {
		vals, err := r.ToArray()
		if err != nil {
			return nil, s.wrap(ctx, "connected", err)
		}
		prev[i] = presenceOf(sessions[i].Device, vals)
	}
	return prev, nil
}

// Disconnected forgets sessions that are still current. One pipeline.
func (f *Fleet) Disconnected(ctx context.Context, sessions []tether.Online) error {
	s := f.s
	if err := s.check(ctx, "disconnected"); err != nil {
		return err
	}
	calls := make([]call, len(sessions))
	for i, o := range sessions {
		calls[i] = scriptCall(scriptDisconnect, []string{s.k.presence(o.Device)}, o.Session, nanos(o.LastSeen))
	}
	_, err := s.roundTrip(ctx, "disconnected", calls)
	return err
}

// Lookup returns the presence of devices: one pipeline for the entries,
// one for the liveness of the nodes they name.
func (f *Fleet) Lookup(ctx context.Context, devices []string) ([]tether.Online, error) {
	s := f.s
	if err := s.check(ctx, "lookup"); err != nil {
		return nil, err
	}
	calls := make([]call, len(devices))
	for i, d := range devices {
		key := s.k.presence(d)
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Hmget().Key(key).Field("node", "session", "connected", "seen").Build()
		})
	}
	res, err := s.roundTrip(ctx, "lookup", calls)
	if err != nil {
		return nil, err
	}
	out := make([]tether.Online, len(devices))
	var nodes []string
	seen := map[string]bool{}
	for i, r := range res {
		vals, err := r.ToArray()
		if err != nil {
			return nil, s.wrap(ctx, "lookup", err)
		}
		out[i] = presenceOf(devices[i], vals)
		if n := out[i].Node; n != "" && !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
	}
	alive, err := f.aliveNodes(ctx, nodes)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Node != "" && !alive[out[i].Node] {
			out[i].Node = "" // its node crashed: offline since its key expired
		}
	}
	return out, nil
}

func (f *Fleet) aliveNodes(ctx context.Context, nodes []string) (map[string]bool, error) {
	s := f.s
	calls := make([]call, len(nodes))
	for i, n := range nodes {
		key := s.k.alive(n)
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Exists().Key(key).Build() })
	}
	res, err := s.roundTrip(ctx, "lookup", calls)
	if err != nil {
		return nil, err
	}
	alive := make(map[string]bool, len(nodes))
	for i, r := range res {
		n, err := r.AsInt64()
		if err != nil {
			return nil, s.wrap(ctx, "lookup", err)
		}
		alive[nodes[i]] = n == 1
	}
	return alive, nil
}

// wireEvent is an event as it travels on a node's channel.
type wireEvent struct {
	Kind    tether.EventKind `json:"k"`
	Device  string           `json:"d,omitempty"`
	Group   string           `json:"g,omitempty"`
	Seq     uint64           `json:"q,omitempty"`
	Session string           `json:"s,omitempty"`
}

// Send publishes events on their nodes' channels (an event for every node
// on each live node's), one message per node, in one pipeline.
func (f *Fleet) Send(ctx context.Context, events []tether.Event) error {
	s := f.s
	if err := s.check(ctx, "send"); err != nil {
		return err
	}
	byNode := map[string][]wireEvent{}
	var order []string
	add := func(node string, e tether.Event) {
		if byNode[node] == nil {
			order = append(order, node)
		}
		byNode[node] = append(byNode[node], wireEvent{Kind: e.Kind, Device: e.Device, Group: e.Group, Seq: e.Seq, Session: e.Session})
	}
	for _, e := range events {
		if e.Node != "" {
			add(e.Node, e)
			continue
		}
		nodes, err := f.liveNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			add(n, e)
		}
	}
	calls := make([]call, 0, len(order))
	for _, n := range order {
		payload, err := json.Marshal(byNode[n])
		if err != nil {
			return err
		}
		ch := s.k.events(n)
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Spublish().Channel(ch).Message(string(payload)).Build()
		}))
	}
	_, err := s.roundTrip(ctx, "send", calls)
	return err
}

// Listen subscribes to node's channel and calls fn for each event until ctx
// ends or the subscription fails.
func (f *Fleet) Listen(ctx context.Context, node string, ready func(), fn func(tether.Event)) error {
	s := f.s
	if err := s.check(ctx, "listen"); err != nil {
		return err
	}
	ch := s.k.events(node)
	hctx := rueidis.WithOnSubscriptionHook(ctx, func(sub rueidis.PubSubSubscription) {
		if sub.Kind == "ssubscribe" && sub.Channel == ch {
			ready()
		}
	})
	err := s.c.Receive(hctx, s.c.B().Ssubscribe().Channel(ch).Build(), func(m rueidis.PubSubMessage) {
		var evs []wireEvent
		if json.Unmarshal([]byte(m.Message), &evs) != nil {
			return
		}
		for _, e := range evs {
			fn(tether.Event{Node: node, Kind: e.Kind, Device: e.Device, Group: e.Group, Seq: e.Seq, Session: e.Session})
		}
	})
	if err == nil {
		err = fmt.Errorf("redis listen: subscription ended")
	}
	return s.wrap(ctx, "listen", err)
}

func nanos(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// presenceOf decodes HMGET node session connected seen.
func presenceOf(device string, vals []rueidis.RedisMessage) tether.Online {
	str := func(i int) string {
		if i >= len(vals) {
			return ""
		}
		v, _ := vals[i].ToString()
		return v
	}
	at := func(i int) time.Time {
		n, err := strconv.ParseInt(str(i), 10, 64)
		if err != nil || n == 0 {
			return time.Time{}
		}
		return time.Unix(0, n).UTC()
	}
	return tether.Online{Device: device, Node: str(0), Session: str(1), ConnectedAt: at(2), LastSeen: at(3)}
}
