package redistest

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterReadyTimeout bounds the creation of a cluster: redis-cli's create
// and the wait for cluster_state:ok on every node.
const clusterReadyTimeout = 30 * time.Second

// Cluster is a Redis Cluster of three primaries, each a Server, with or
// without replicas.
type Cluster struct {
	// Nodes are all the servers: the three primaries and their replicas,
	// in no particular order (Primaries and Replica tell them apart).
	Nodes []*Server
}

// StartCluster starts three redis-server processes in cluster mode, joins
// them with redis-cli --cluster create (the slots spread over the three,
// no replicas) and waits until CLUSTER INFO says cluster_state:ok on every
// node. args are appended to each node's command line. The nodes are
// killed when the test ends.
func StartCluster(tb testing.TB, args ...string) *Cluster {
	tb.Helper()
	return startCluster(tb, 0, args)
}

// StartClusterReplicas is StartCluster with replicas replicas per primary:
// 3×(1+replicas) servers, joined with redis-cli --cluster create
// --cluster-replicas, which chooses which servers are primaries. It also
// waits until every replica has synchronised with its primary
// (master_link_status:up), so that WAIT counts them from the first write.
func StartClusterReplicas(tb testing.TB, replicas int, args ...string) *Cluster {
	tb.Helper()
	return startCluster(tb, replicas, args)
}

func startCluster(tb testing.TB, replicas int, args []string) *Cluster {
	tb.Helper()
	cli := lookPath(tb, "redis-cli")
	c := &Cluster{}
	for i := 0; i < 3*(1+replicas); i++ {
		nodeArgs := append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			// The bus port is chosen too: the default, port+10000, may be
			// taken or beyond 65535.
			"--cluster-port", strconv.Itoa(freePort(tb)),
			"--cluster-node-timeout", "2000",
		}, args...)
		c.Nodes = append(c.Nodes, Start(tb, nodeArgs...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	create := []string{"--cluster", "create"}
	create = append(create, c.Addrs()...)
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	c.waitOK(tb, ctx)
	if replicas > 0 {
		c.waitReplicas(tb, ctx, replicas)
	}
	return c
}

// Primaries returns the nodes that are primaries now (ROLE says master).
func (c *Cluster) Primaries(tb testing.TB) []*Server {
	tb.Helper()
	var out []*Server
	for _, n := range c.Nodes {
		if strings.HasPrefix(n.MustDo("ROLE"), "master\n") {
			out = append(out, n)
		}
	}
	return out
}

// Replica returns a replica of primary (a node whose ROLE names primary's
// port as its master), failing the test when it has none.
func (c *Cluster) Replica(tb testing.TB, primary *Server) *Server {
	tb.Helper()
	_, port, _ := strings.Cut(primary.Addr, ":")
	for _, n := range c.Nodes {
		role := strings.Split(n.MustDo("ROLE"), "\n")
		if len(role) >= 3 && role[0] == "slave" && role[2] == port {
			return n
		}
	}
	tb.Fatalf("redistest: no replica of %s", primary.Addr)
	return nil
}

// waitReplicas waits until every replica's link to its primary is up and
// every primary counts replicas connected replicas.
func (c *Cluster) waitReplicas(tb testing.TB, ctx context.Context, replicas int) {
	tb.Helper()
	want := "connected_slaves:" + strconv.Itoa(replicas)
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("INFO", "replication")
			if err == nil && (strings.Contains(info, "master_link_status:up") ||
				strings.Contains(info, "role:master") && strings.Contains(info, want)) {
				break
			}
			if ctx.Err() != nil {
				tb.Fatalf("redistest: cluster node %s: replication not up within %v: %q, %v", n.Addr, clusterReadyTimeout, info, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Addrs returns the nodes' addresses.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// WaitOK waits until every node says cluster_state:ok (after a node was
// restarted, for example), failing the test after 30s.
func (c *Cluster) WaitOK(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	c.waitOK(tb, ctx)
}

func (c *Cluster) waitOK(tb testing.TB, ctx context.Context) {
	tb.Helper()
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if ctx.Err() != nil {
				tb.Fatalf("redistest: cluster node %s not ok within %v: %q, %v", n.Addr, clusterReadyTimeout, info, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
