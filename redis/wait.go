package redis

import (
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Waiting for replicas (Options.MinReplicas, SPEC section 12).
//
// WAIT counts the replicas that have the writes made on its own connection
// before it. On a single instance or Sentinel a writing pipeline ends with
// one WAIT: it is blocking, so rueidis sends the whole pipeline on one
// dedicated connection.
//
// On a cluster rueidis splits a pipeline by the node serving each
// command's slot and sends each node its part, in order, on that node's
// connection (a dedicated one when the part holds WAIT). WAIT has no key,
// so each is routed (Completed.SetSlot) to a key the pipeline writes: the
// pipeline ends with one WAIT per primary it writes to, and each node's part
// ends with its WAIT. One WAIT per slot would do too, but the WAITs of one
// connection run one after the other, so with too few replicas a pipeline
// writing k slots of a shard would take k timeouts: the writes are grouped
// by primary instead, with a map of the slots to their primaries
// (shardMap). It comes from CLUSTER SLOTS — what rueidis reads itself on
// Redis 7 — once in Open, then every shardsRefresh and at once when a WAIT
// answers an error (it went to a node that is no longer a primary). A
// failover moves all the slots of a primary together, so it leaves the
// grouping right; only a resharding changes it, and until the next refresh
// two slots thought to share a primary may be served by two, the second's
// writes then followed by no WAIT. rueidis follows MOVED and ASK
// redirections too, which likewise send a write to a node without the WAIT
// (a failover is caught all the same: the WAIT goes to the demoted node,
// which refuses it, and the call fails as unavailable until rueidis
// follows the new primary; TestClusterMinReplicasFailover). Both need a
// resharding in progress.

// shardsRefresh is how often a store on a cluster with MinReplicas reads
// which slots share a primary.
const shardsRefresh = 5 * time.Second

// numSlots is the number of hash slots of a Redis Cluster.
const numSlots = 16384

// shardMap maps each slot to 1 + the index of its primary in a CLUSTER
// SLOTS answer; 0 means no primary was known for the slot.
type shardMap [numSlots]uint16

// waitFor returns the WAIT commands that follow cmds, built from calls:
// none without MinReplicas or without a call that writes (a script that is
// not read-only), one on a single instance, one per primary written to on
// a cluster (routed to a key the call writes).
func (s *Store) waitFor(cmds rueidis.Commands, calls []call) rueidis.Commands {
	if s.minReplicas == 0 {
		return nil
	}
	wait := func() rueidis.Completed {
		return s.c.B().Wait().Numreplicas(int64(s.minReplicas)).Timeout(s.replicaTimeout.Milliseconds()).Build()
	}
	var (
		m     = s.shards.Load()
		seen  []int // groups with a WAIT: 1+primary, or -1-slot when unknown
		waits rueidis.Commands
	)
	for i, c := range calls {
		if c.sc == nil || c.sc.readOnly {
			continue
		}
		if !s.cluster {
			return rueidis.Commands{wait()}
		}
		slot := cmds[i].Slot()
		g := -1 - int(slot)
		if slot < numSlots && m != nil && m[slot] != 0 {
			g = int(m[slot])
		}
		if !containsInt(seen, g) {
			seen = append(seen, g)
			waits = append(waits, wait().SetSlot(c.keys[0]))
		}
	}
	return waits
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// checkWaits fails with an error wrapping tether.ErrUnavailable unless
// every WAIT answered at least MinReplicas. An error answer (a WAIT sent
// to a primary demoted meanwhile: "WAIT cannot be used with replica
// instances") is unavailable too, and asks for the shard map to be read
// again.
func (s *Store) checkWaits(ctx context.Context, op string, waits []rueidis.RedisResult) error {
	for _, r := range waits {
		n, err := r.AsInt64()
		if _, ok := rueidis.IsRedisErr(err); ok {
			s.kickShards()
			return fmt.Errorf("redis %s: %w: wait: %w", op, tether.ErrUnavailable, err)
		}
		if err != nil {
			return s.wrap(ctx, op, err)
		}
		if n < int64(s.minReplicas) {
			return fmt.Errorf("redis %s: %w: %d of %d replicas have the write after %v", op, tether.ErrUnavailable, n, s.minReplicas, s.replicaTimeout)
		}
	}
	return nil
}

// loadShards reads CLUSTER SLOTS (one command, to any node) into s.shards.
func (s *Store) loadShards(ctx context.Context) error {
	slots, err := s.c.Do(ctx, s.c.B().ClusterSlots().Build()).ToArray()
	if err != nil {
		return s.wrap(ctx, "cluster slots", err)
	}
	m := new(shardMap)
	var primaries []string
	for _, r := range slots {
		v, err := r.ToArray()
		if err != nil || len(v) < 3 {
			return fmt.Errorf("redis cluster slots: unexpected entry %v", r)
		}
		from, err1 := v[0].AsInt64()
		to, err2 := v[1].AsInt64()
		primary, err3 := v[2].ToArray()
		if err1 != nil || err2 != nil || err3 != nil || len(primary) < 2 || from < 0 || to >= numSlots || from > to {
			return fmt.Errorf("redis cluster slots: unexpected entry %v", r)
		}
		// host, port and (since Redis 4) the node id.
		var id []string
		for _, e := range primary[:min(3, len(primary))] {
			f, _ := e.ToString()
			if e.IsInt64() {
				n, _ := e.AsInt64()
				f = fmt.Sprint(n)
			}
			id = append(id, f)
		}
		key := strings.Join(id, " ")
		g := indexOf(primaries, key)
		if g < 0 {
			primaries = append(primaries, key)
			g = len(primaries) - 1
		}
		for slot := from; slot <= to; slot++ {
			m[slot] = uint16(g + 1)
		}
	}
	s.shards.Store(m)
	return nil
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// kickShards asks refreshShards to read the map now.
func (s *Store) kickShards() {
	if s.shardsKick == nil {
		return
	}
	select {
	case s.shardsKick <- struct{}{}:
	default:
	}
}

// startShards reads the shard map and starts refreshShards, stopped by
// Close; only on a cluster with MinReplicas.
func (s *Store) startShards(ctx context.Context) error {
	if !s.cluster || s.minReplicas == 0 {
		return nil
	}
	if err := s.loadShards(ctx); err != nil {
		return err
	}
	bg, cancel := context.WithCancel(context.Background())
	s.shardsKick = make(chan struct{}, 1)
	s.stopShards = cancel
	s.shardsDone = make(chan struct{})
	go pprof.Do(bg, pprof.Labels("role", "redis-shards"), s.refreshShards)
	return nil
}

// refreshShards reads the shard map every shardsRefresh and when kicked,
// until ctx ends. A failed read keeps the map it had.
func (s *Store) refreshShards(ctx context.Context) {
	defer close(s.shardsDone)
	t := time.NewTicker(shardsRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.shardsKick:
		}
		rctx, cancel := context.WithTimeout(ctx, shardsRefresh)
		s.loadShards(rctx)
		cancel()
	}
}
