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

// Cluster is a Redis Cluster of three masters without replicas, each a
// Server.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts three redis-server processes in cluster mode, joins
// them with redis-cli --cluster create (the slots spread over the three,
// no replicas) and waits until CLUSTER INFO says cluster_state:ok on every
// node. args are appended to each node's command line. The nodes are
// killed when the test ends.
func StartCluster(tb testing.TB, args ...string) *Cluster {
	tb.Helper()
	cli := lookPath(tb, "redis-cli")
	c := &Cluster{}
	for i := 0; i < 3; i++ {
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
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	c.waitOK(tb, ctx)
	return c
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
