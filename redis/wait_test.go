package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/storetest"
)

// These tests run MinReplicas on a real cluster of three primaries with a
// replica each (wait.go): every primary a round trip writes to waits for
// its own replica.

// openReplicaCluster opens a store on c with MinReplicas 1 and timeout.
func openReplicaCluster(t *testing.T, c *redistest.Cluster, prefix string, timeout time.Duration) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addrs: c.Addrs(), Prefix: prefix, MinReplicas: 1, ReplicaTimeout: timeout})
	if err != nil {
		t.Fatalf("open with MinReplicas 1: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// shardLayout names, for each primary (an index into c.Nodes), two
// devices whose own tag it serves, two groups, and message ids whose
// expiry bucket it serves.
type shardLayout struct {
	primaries []int
	devices   map[int][]string
	groups    map[int][]string
	ids       map[int][]string
}

func findShards(t *testing.T, c *redistest.Cluster, s *Store) shardLayout {
	t.Helper()
	l := shardLayout{devices: map[int][]string{}, groups: map[int][]string{}, ids: map[int][]string{}}
	for _, p := range c.Primaries(t) {
		l.primaries = append(l.primaries, slices.Index(c.Nodes, p))
	}
	if len(l.primaries) != 3 {
		t.Fatalf("%d primaries, want 3", len(l.primaries))
	}
	for i := 0; i < 1000; i++ {
		d := fmt.Sprintf("pos-%d", i)
		if n := owner(t, c, s.k.cursors(d)); len(l.devices[n]) < 2 {
			l.devices[n] = append(l.devices[n], d)
		}
		g := fmt.Sprintf("shop-%d", i)
		if n := owner(t, c, s.k.log(tether.GroupTarget(g)).seq); len(l.groups[n]) < 2 {
			l.groups[n] = append(l.groups[n], g)
		}
		id := fmt.Sprintf("01JTW%08d", i)
		if n := owner(t, c, s.k.bucket(bucketOf(id)).due); len(l.ids[n]) < 4 {
			l.ids[n] = append(l.ids[n], id)
		}
	}
	for _, p := range l.primaries {
		if len(l.devices[p]) < 2 || len(l.groups[p]) < 2 || len(l.ids[p]) < 4 {
			t.Fatalf("no suitable layout for primary %d: %+v", p, l)
		}
	}
	return l
}

func deviceMessage(id, device string, at time.Time) *tether.Message {
	return &tether.Message{ID: id, Target: tether.DeviceTarget(device), Data: json.RawMessage(`{}`),
		PublishedAt: at, ExpiresAt: at.Add(time.Hour)}
}

// waitCalls returns how many WAITs each primary has run.
func waitCalls(t *testing.T, c *redistest.Cluster, primaries []int) []int {
	t.Helper()
	out := make([]int, len(primaries))
	for i, p := range primaries {
		stats := c.Nodes[p].MustDo("INFO", "commandstats")
		for _, line := range strings.Split(stats, "\r\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_wait:calls="); ok {
				n, _, _ := strings.Cut(rest, ",")
				out[i], _ = strconv.Atoi(n)
			}
		}
	}
	return out
}

// TestClusterMinReplicas: with a replica per primary, publishes, acks and
// memberships on every shard succeed; a round trip writing to all three
// shards, two slots each, runs one WAIT on each primary; with the replica
// of one shard stopped, writes to that shard fail with ErrUnavailable
// after about the replica timeout (once, not once per slot) while writes
// to the other shards succeed, and succeed again once it resumes, also
// after the scripts are forgotten.
func TestClusterMinReplicas(t *testing.T) {
	const timeout = 500 * time.Millisecond
	c := redistest.StartClusterReplicas(t, 1)
	s := openReplicaCluster(t, c, "w", timeout)
	l := findShards(t, c, s)
	now := time.Now()

	// Publish to and ack by two devices on each shard.
	var msgs []*tether.Message
	for k, p := range l.primaries {
		for j, d := range l.devices[p] {
			msgs = append(msgs, deviceMessage(l.ids[l.primaries[(k+1)%3]][j], d, now))
		}
	}
	for _, m := range msgs {
		must(t, "join", func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Join(ctx, m.Target.ID, nil) })
	}
	must(t, "publish", func(ctx context.Context) ([]tether.PublishResult, error) { return s.Publish(ctx, msgs) })
	var changes []tether.Change
	for _, m := range msgs {
		if got := owedIDs(t, s, m.Target.ID, now); !slices.Equal(got, []string{m.ID}) {
			t.Errorf("%s is owed %q, want %s", m.Target.ID, got, m.ID)
		}
		changes = append(changes, tether.Change{Device: m.Target.ID, At: now, AckIDs: []string{m.ID}})
	}
	must(t, "commit", func(ctx context.Context) ([]tether.Committed, error) { return s.Commit(ctx, changes) })
	for _, m := range msgs {
		if got := owedIDs(t, s, m.Target.ID, now); len(got) != 0 {
			t.Errorf("%s is owed %q after its ack, want nothing", m.Target.ID, got)
		}
	}

	// One round trip writing six groups, two on each shard: three WAITs,
	// one on each primary.
	var groups []string
	for _, p := range l.primaries {
		groups = append(groups, l.groups[p]...)
	}
	before := waitCalls(t, c, l.primaries)
	must(t, "member", func(ctx context.Context) ([][]tether.Span, error) { return s.member(ctx, "join", "pos-w", groups, "j") })
	after := waitCalls(t, c, l.primaries)
	for i, p := range l.primaries {
		if n := after[i] - before[i]; n != 1 {
			t.Errorf("primary %s ran %d WAITs for a round trip writing two of its slots, want 1", c.Nodes[p].Addr, n)
		}
	}

	// The replica of the first shard stopped.
	stopped, healthy := l.primaries[0], l.primaries[1:]
	replica := c.Replica(t, c.Nodes[stopped])
	replica.Pause()
	defer replica.Resume()
	timed := func(fn func(ctx context.Context) error) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := fn(ctx)
		return time.Since(start), err
	}
	publish := func(id, device string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.Publish(ctx, []*tether.Message{deviceMessage(id, device, now)})
			return err
		}
	}
	took, err := timed(publish(l.ids[stopped][2], l.devices[stopped][0]))
	if !errors.Is(err, tether.ErrUnavailable) || took < timeout || took > timeout+2*time.Second {
		t.Errorf("publish on the shard whose replica is stopped: %v after %v, want ErrUnavailable after about %v", err, took, timeout)
	}
	t.Logf("publish refused after %v: %v", took.Round(time.Millisecond), err)
	// Two groups of the stopped shard in one round trip: one timeout.
	took, err = timed(func(ctx context.Context) error {
		_, err := s.member(ctx, "join", "pos-w2", l.groups[stopped], "j")
		return err
	})
	if !errors.Is(err, tether.ErrUnavailable) || took < timeout || took >= 2*timeout {
		t.Errorf("round trip writing two slots of the stopped shard: %v after %v, want ErrUnavailable after one timeout (%v), not two", err, took, timeout)
	}
	for k, p := range healthy {
		took, err := timed(publish(l.ids[healthy[(k+1)%2]][2], l.devices[p][0]))
		if err != nil || took >= timeout {
			t.Errorf("publish on a healthy shard (%s) with another shard's replica stopped: %v after %v", c.Nodes[p].Addr, err, took)
		}
	}
	replica.Resume()
	waitUntil(t, "a publish on the resumed shard accepted", func() bool {
		_, err := timed(publish(l.ids[stopped][3], l.devices[stopped][1]))
		return err == nil
	})

	// Scripts forgotten (NOSCRIPT, sent again as EVAL in a second
	// pipeline, with its own WAITs): writes on every shard still succeed.
	for _, n := range c.Nodes {
		n.MustDo("SCRIPT", "FLUSH")
	}
	if _, err := timed(func(ctx context.Context) error {
		_, err := s.member(ctx, "join", "pos-w3", groups, "j")
		return err
	}); err != nil {
		t.Errorf("round trip on every shard after SCRIPT FLUSH: %v", err)
	}
}

// TestStoreClusterMinReplicas runs the conformance suite on a cluster with
// a replica per primary and MinReplicas 1.
func TestStoreClusterMinReplicas(t *testing.T) {
	c := redistest.StartClusterReplicas(t, 1)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) tether.Store {
		return openReplicaCluster(t, c, fmt.Sprintf("m%d", n.Add(1)), time.Second)
	})
}

// TestClusterMinReplicasFailover: after a manual failover of one shard,
// the first write to it (its WAIT sent to the demoted primary, which
// refuses WAIT, while rueidis follows the write's MOVED) fails with
// ErrUnavailable, never silently unwaited, and writes succeed again once
// the client follows the new primary, each with its WAIT there.
func TestClusterMinReplicasFailover(t *testing.T) {
	c := redistest.StartClusterReplicas(t, 1)
	s := openReplicaCluster(t, c, "f", 500*time.Millisecond)
	l := findShards(t, c, s)
	p := l.primaries[0]
	device := l.devices[p][0]
	must(t, "join", func(ctx context.Context) (struct{}, error) { return struct{}{}, s.Join(ctx, device, nil) })
	replica := c.Replica(t, c.Nodes[p])
	replica.MustDo("CLUSTER", "FAILOVER")
	waitUntil(t, "the replica promoted and the old primary following it", func() bool {
		role, err := c.Nodes[p].Do("ROLE")
		info, err2 := c.Nodes[p].Do("INFO", "replication")
		return err == nil && err2 == nil && strings.HasPrefix(role, "slave\n") && strings.Contains(info, "master_link_status:up")
	})
	now := time.Now()
	var refused int
	for i := 0; ; i++ {
		if i == 50 {
			t.Fatalf("no publish accepted after the failover in %d attempts", i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.Publish(ctx, []*tether.Message{deviceMessage(l.ids[p][i%4]+"F"+strconv.Itoa(i), device, now)})
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, tether.ErrUnavailable) {
			t.Fatalf("publish after the failover: %v, want nil or ErrUnavailable", err)
		}
		refused++
		t.Logf("refused: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d publishes refused after the failover", refused)
	// A write to the shard now waits on its new primary.
	primary := slices.Index(c.Nodes, replica)
	// (The new primary may not have had the script cached yet: NOSCRIPT,
	// then EVAL with a WAIT of its own. Once first, then measured.)
	must(t, "member", func(ctx context.Context) ([][]tether.Span, error) {
		return s.member(ctx, "join", device, l.groups[p], "j")
	})
	before := waitCalls(t, c, []int{primary})
	must(t, "member", func(ctx context.Context) ([][]tether.Span, error) {
		return s.member(ctx, "join", "pos-f2", l.groups[p], "j")
	})
	if n := waitCalls(t, c, []int{primary})[0] - before[0]; n != 1 {
		t.Errorf("the new primary ran %d WAITs for a round trip writing two of its slots, want 1", n)
	}
}
