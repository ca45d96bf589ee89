// Package redis is tether's shared store: tether.Store on Redis, a single
// instance or a Redis Cluster, so that many gateway nodes share the logs
// of devices and groups, each device's cursors in them, memberships and
// idempotency keys.
//
// The client is rueidis: every call is multiplexed onto a few pipelined
// connections per node, so no caller ever holds a connection, and every
// wait (for the send queue, for the reply) ends with the caller's ctx.
// docs/notes/redis.md records the measurements behind that choice, the key
// layout (also in keys.go), which methods are one round trip and which
// are a short fixed sequence of them, why that keeps at-least-once, and
// what a delivery costs Redis.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

var _ tether.Store = (*Store)(nil)

// Defaults of Options; a zero field means the default.
const (
	// DefaultPrefix starts every key.
	DefaultPrefix = "tether"
	// DefaultDialTimeout bounds one connection attempt, the first PING
	// included.
	DefaultDialTimeout = time.Second
	// DefaultConnTimeout is how long a connection may wait for any reply
	// before it is closed and redialled.
	DefaultConnTimeout = 5 * time.Second
)

// blockingPoolSize is the size of rueidis's pool of dedicated connections,
// used only by pipelines longer than rueidis's BlockingPipeline (2000
// commands); taking one honours ctx.
const blockingPoolSize = 8

// Options configures a Store. A zero field means the matching default.
type Options struct {
	// URL addresses a single instance: redis://[user:password@]host:port/db,
	// or rediss:// for TLS. With Cluster and no Addrs, its host is the seed
	// node of the cluster (db must be 0).
	URL string
	// Addrs are seed nodes of a Redis Cluster, host:port; setting them
	// implies Cluster.
	Addrs []string
	// Cluster says the server is a Redis Cluster.
	Cluster bool
	// Sentinels, host:port, find the primary through Redis Sentinel (SPEC
	// section 12): the URL's host is then the master set's name
	// (redis://MASTERNAME/0), and the client follows failovers the
	// Sentinels announce, checking with them every sentinelRefresh too.
	Sentinels []string
	// MinReplicas, when above 0, makes every write that answers a publish,
	// records acks or changes a membership wait until that many replicas
	// have it (WAIT, on the same connection, in the same round trip), for
	// at most ReplicaTimeout (zero: DefaultReplicaTimeout); when they do
	// not, the call fails with an error wrapping tether.ErrUnavailable
	// (the write itself may have been applied: a retry with the same
	// message id is safe). On a cluster every primary a round trip
	// writes to waits for that many of its own replicas (wait.go).
	MinReplicas    int
	ReplicaTimeout time.Duration
	// Username and Password authenticate with Addrs; a URL carries its own.
	Username, Password string
	// Prefix starts every key, so that several stores can share a server;
	// zero means DefaultPrefix. It may not contain braces.
	Prefix string
	// DialTimeout bounds one connection attempt, the first PING included;
	// zero means DefaultDialTimeout. Callers that find a connection being
	// redialled wait for that attempt, within the deadline of the caller
	// that started it: a caller with a shorter deadline than that one may
	// wait past its own by up to DialTimeout.
	DialTimeout time.Duration
	// ConnTimeout is how long a connection may go without any reply before
	// it is closed and redialled; zero means DefaultConnTimeout. A call
	// abandoned at its deadline leaves one goroutine waiting for its reply
	// until the reply comes or the connection is closed: ConnTimeout
	// bounds that wait when the server hangs.
	ConnTimeout time.Duration
}

// DefaultReplicaTimeout is how long a write waits for MinReplicas replicas
// when Options.ReplicaTimeout is zero.
const DefaultReplicaTimeout = time.Second

func (o Options) withDefaults() Options {
	if o.ReplicaTimeout == 0 {
		o.ReplicaTimeout = DefaultReplicaTimeout
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ConnTimeout <= 0 {
		o.ConnTimeout = DefaultConnTimeout
	}
	if len(o.Addrs) > 0 {
		o.Cluster = true
	}
	return o
}

// Store is tether.Store on Redis. Open it with Open; it is safe for
// concurrent use.
//
// Every method honours ctx: it checks ctx before it starts, and every
// round trip ends when ctx ends (rueidis selects on ctx while queueing the
// command and while waiting for the reply), with an error wrapping
// tether.ErrUnavailable and ctx's error. No method holds a connection while
// acquiring another: commands are multiplexed, and the rare pipeline long
// enough for a dedicated connection takes one, within ctx, and nothing
// else. Methods are one script or one pipeline, except where their doc
// says otherwise. After Close every method answers an error wrapping
// tether.ErrClosed. Bad arguments are *tether.Error with EInvalid; network
// failures and a cluster that cannot serve wrap tether.ErrUnavailable;
// anything else (a script error, a corrupt record) is internal.
type Store struct {
	c       rueidis.Client
	conns   *connSet // the client's connections, cut first by Close
	k       keys
	cluster bool
	cache   cursorCache // each device's cursors as last read or written (commit.go)
	ids     idCache     // message ids of positions recently published or read, for events (events.go)

	minReplicas    int           // WAIT for this many replicas after writes (0: none)
	replicaTimeout time.Duration // WAIT's timeout

	// On a cluster with minReplicas (wait.go): which slots share a
	// primary, read by refreshShards until stopShards.
	shards     atomic.Pointer[shardMap]
	shardsKick chan struct{} // asks refreshShards to read the map now
	stopShards context.CancelFunc
	shardsDone chan struct{} // closed when refreshShards has returned

	relay *relay // on a cluster: moves events from the outboxes to the log (relay.go)

	closed    atomic.Bool
	closeOnce sync.Once
}

// Open connects to Redis, checks the key layout and loads the scripts on
// every node, within ctx. The client keeps its connections open and
// redials them when they fail.
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if opts.MinReplicas < 0 {
		return nil, tether.Errorf(tether.EInvalid, "redis: MinReplicas %d: must be 0 or more", opts.MinReplicas)
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, tether.Errorf(tether.EInvalid, "redis prefix %q: may not contain braces", opts.Prefix)
	}
	var openBy atomic.Int64 // Unix ns; bounds the dials of NewClient
	if d, ok := ctx.Deadline(); ok {
		openBy.Store(d.UnixNano())
	}
	conns := &connSet{}
	co, err := clientOptions(opts, &openBy, conns)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redis open: %w: %w", tether.ErrUnavailable, err)
	}
	c, err := rueidis.NewClient(co)
	openBy.Store(0)
	if err != nil {
		return nil, fmt.Errorf("redis open %s: %w: %w", strings.Join(co.InitAddress, ","), tether.ErrUnavailable, err)
	}
	s := &Store{c: c, conns: conns, k: keys{prefix: opts.Prefix}, cluster: opts.Cluster,
		minReplicas: opts.MinReplicas, replicaTimeout: opts.ReplicaTimeout}
	if err := s.checkLayout(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.loadScripts(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.startShards(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.startRelay()
	return s, nil
}

// sentinelRefresh is how often a client on Sentinel checks which server
// is the primary, besides following the Sentinels' announcements.
const sentinelRefresh = time.Second

// clientOptions translates opts into rueidis's options; openBy and conns
// are passed to the dial function (see dialer).
func clientOptions(opts Options, openBy *atomic.Int64, conns *connSet) (rueidis.ClientOption, error) {
	var co rueidis.ClientOption
	switch {
	case opts.URL != "":
		var err error
		if co, err = rueidis.ParseURL(opts.URL); err != nil {
			return co, tether.Errorf(tether.EInvalid, "redis url: %v", err)
		}
		if opts.Cluster && co.SelectDB != 0 {
			return co, tether.Errorf(tether.EInvalid, "redis url %q: a cluster has only database 0", opts.URL)
		}
	case len(opts.Addrs) == 0:
		return co, tether.Errorf(tether.EInvalid, "redis: URL or Addrs is required")
	}
	if len(opts.Addrs) > 0 {
		co.InitAddress = opts.Addrs
	}
	if len(opts.Sentinels) > 0 {
		if opts.Cluster || len(opts.Addrs) > 0 {
			return co, tether.Errorf(tether.EInvalid, "redis: Sentinel and Cluster exclude each other")
		}
		u, err := url.Parse(opts.URL)
		if err != nil || u.Hostname() == "" {
			return co, tether.Errorf(tether.EInvalid, "redis url %q: with Sentinels its host is the master set's name (redis://mymaster/0)", opts.URL)
		}
		co.InitAddress = opts.Sentinels
		co.Sentinel.MasterSet = u.Hostname()
		co.Sentinel.TopologyRefreshInterval = sentinelRefresh
		co.Sentinel.Dialer = net.Dialer{Timeout: opts.DialTimeout, KeepAlive: time.Second}
	}
	if opts.Username != "" || opts.Password != "" {
		co.Username, co.Password = opts.Username, opts.Password
	}
	co.ForceSingleClient = !opts.Cluster
	co.ClientName = "tether"
	co.DisableCache = true // client-side caching: not wanted, and it needs RESP3 tracking
	// Pipelining from the first command: a lone command would otherwise be
	// sent synchronously, and its timeout would close the connection, which
	// the next callers must then redial, waiting for one another.
	co.AlwaysPipelining = true
	// No retries in the client: rueidis would retry read-only commands
	// after network errors, with backoff up to a second, until ctx ends. An
	// outage is a fast error instead; callers retry on their own schedule.
	// MOVED and ASK redirections are still followed.
	co.DisableRetry = true
	co.BlockingPoolSize = blockingPoolSize
	co.ConnWriteTimeout = opts.ConnTimeout
	co.Dialer = net.Dialer{Timeout: opts.DialTimeout, KeepAlive: time.Second}
	co.DialCtxFn = dialer(co.DialCtxFn, openBy, conns)
	return co, nil
}

// checkLayout records the layout version on a new store and refuses a
// store written with another one: one command.
func (s *Store) checkLayout(ctx context.Context) error {
	res := s.c.Do(ctx, s.c.B().Set().Key(s.k.layout()).Value(layoutVersion).Nx().Get().Build())
	v, err := res.ToString()
	if rueidis.IsRedisNil(err) {
		return nil
	}
	if err != nil {
		return s.wrap(ctx, "open", err)
	}
	if v == "1" {
		return fmt.Errorf("redis open: the keys under prefix %q were written by an earlier release (layout 1, one record per delivery), which this one cannot read: let the old nodes deliver what they hold, then empty the keys or use another prefix", s.k.prefix)
	}
	if v != layoutVersion {
		return fmt.Errorf("redis open: key layout version %q under %s, want %q", v, s.k.layout(), layoutVersion)
	}
	return nil
}

// Servers returns the addresses of the Redis servers the store uses now:
// the instance, the primary found through Sentinel (another one after a
// failover), or a cluster's nodes; sorted.
func (s *Store) Servers() []string {
	var out []string
	for addr := range s.c.Nodes() {
		out = append(out, addr)
	}
	sort.Strings(out)
	return out
}

// Close closes the client's connections at once, even when the server
// hangs; calls in progress fail with an error wrapping ErrClosed.
// Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.stopShards != nil {
			s.stopShards()
		}
		s.conns.closeAll()
		s.c.Close()
		if s.shardsDone != nil {
			<-s.shardsDone
		}
		s.stopRelay()
	})
	return nil
}

// Ping checks that the store answers: PING on a single instance; on a
// cluster, CLUSTER INFO on one node, which must say that every slot is
// served (cluster_state:ok). One command.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx, "ping"); err != nil {
		return err
	}
	if !s.cluster {
		return s.wrap(ctx, "ping", s.c.Do(ctx, s.c.B().Ping().Build()).Error())
	}
	info, err := s.c.Do(ctx, s.c.B().ClusterInfo().Build()).ToString()
	if err != nil {
		return s.wrap(ctx, "ping", err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("redis ping: cluster state is not ok: %w", tether.ErrUnavailable)
	}
	return nil
}

// check returns the error op must fail with before it starts: the store is
// closed or ctx is done.
func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redis %s: %w", op, tether.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis %s: %w: %w", op, tether.ErrUnavailable, err)
	}
	return nil
}

// wrap turns an error of a round trip into the error op returns: ErrClosed
// after Close, ctx's error (as ErrUnavailable) once ctx has ended, Redis
// answers that mean "not now" (loading, cluster down, try again, busy
// script, read-only replica, out of memory) and network failures as
// ErrUnavailable, other Redis errors as internal.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case s.closed.Load() || errors.Is(err, rueidis.ErrClosing):
		return fmt.Errorf("redis %s: %w", op, tether.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("redis %s: %w: %w", op, tether.ErrUnavailable, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("redis %s: %w: %w", op, tether.ErrUnavailable, err)
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		if transient(re) {
			return fmt.Errorf("redis %s: %w: %w", op, tether.ErrUnavailable, err)
		}
		return fmt.Errorf("redis %s: %w", op, err)
	}
	var e *tether.Error
	if errors.As(err, &e) || errors.Is(err, errCorrupt) {
		return err
	}
	return fmt.Errorf("redis %s: %w: %w", op, tether.ErrUnavailable, err)
}

// transient reports whether a Redis error reply means the server cannot
// serve now rather than that the command is wrong.
func transient(re *rueidis.RedisError) bool {
	if re.IsLoading() || re.IsClusterDown() || re.IsTryAgain() {
		return true
	}
	msg := re.Error()
	for _, p := range []string{"BUSY ", "MASTERDOWN", "READONLY", "OOM ", "NOREPLICAS", "MOVED ", "ASK "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
