package redistest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DownAfter is how long the Sentinels of a SentinelSet wait for a silent
// primary before they fail it over (down-after-milliseconds). At 1 s, a
// primary starved of CPU on a loaded CI machine (two cores, every package
// testing at once) was taken for dead and failed over a second time,
// back to a server that had just come back empty.
const DownAfter = 3 * time.Second

// SentinelSet is a Redis primary, one replica and three Sentinels that
// watch them as master set Name (quorum 2, a primary is down after
// DownAfter without answers), all on loopback. Everything is killed when the test
// ends.
type SentinelSet struct {
	Name      string
	Primary   *Server // the primary at start; after a failover, Replica is
	Replica   *Server
	Sentinels []*Server
}

// StartSentinelSet starts a SentinelSet and waits until the replica
// follows the primary and every Sentinel names the primary. args are
// appended to both data servers' command lines.
func StartSentinelSet(tb testing.TB, args ...string) *SentinelSet {
	tb.Helper()
	bin := lookPath(tb, "redis-sentinel")
	ss := &SentinelSet{Name: "tether-test"}
	ss.Primary = Start(tb, args...)
	_, pport, _ := net.SplitHostPort(ss.Primary.Addr)
	ss.Replica = Start(tb, append([]string{"--replicaof", "127.0.0.1", pport}, args...)...)
	waitFor(tb, "the replica to follow the primary", func() bool {
		info, err := ss.Replica.Do("INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for i := 0; i < 3; i++ {
		dir := tb.TempDir()
		port := freePort(tb)
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %[1]d\nbind 127.0.0.1\ndir %[2]s\nlogfile %[3]s\n"+
			"sentinel monitor %[4]s 127.0.0.1 %[5]s 2\nsentinel down-after-milliseconds %[4]s %[6]d\n"+
			"sentinel failover-timeout %[4]s 10000\nsentinel parallel-syncs %[4]s 1\n",
			port, dir, filepath.Join(dir, "redis.log"), ss.Name, pport, DownAfter.Milliseconds())
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, tb: tb, bin: bin, args: []string{conf}}
		if err := s.start(); err != nil {
			tb.Fatalf("redistest: sentinel: %v", err)
		}
		tb.Cleanup(s.Kill)
		ss.Sentinels = append(ss.Sentinels, s)
	}
	waitFor(tb, "every Sentinel to know the replica and the other Sentinels", func() bool {
		for _, s := range ss.Sentinels {
			reply, err := s.Do("SENTINEL", "MASTER", ss.Name)
			if err != nil || !strings.Contains(reply, "num-slaves\n1\n") || !strings.Contains(reply, "num-other-sentinels\n2\n") {
				return false
			}
		}
		return true
	})
	return ss
}

// SentinelAddrs returns the Sentinels' addresses, comma-separated (the
// form of --redis-sentinel).
func (ss *SentinelSet) SentinelAddrs() []string {
	var out []string
	for _, s := range ss.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

// MasterAddr returns the primary's address as the first Sentinel that
// answers names it.
func (ss *SentinelSet) MasterAddr() string {
	for _, s := range ss.Sentinels {
		reply, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", ss.Name)
		if host, port, ok := strings.Cut(reply, "\n"); err == nil && ok {
			return net.JoinHostPort(host, port)
		}
	}
	return ""
}

// agreedMaster returns the primary's address when every Sentinel names
// the same one, else "".
func (ss *SentinelSet) agreedMaster() string {
	agreed := ""
	for _, s := range ss.Sentinels {
		reply, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", ss.Name)
		host, port, ok := strings.Cut(reply, "\n")
		if err != nil || !ok {
			return ""
		}
		a := net.JoinHostPort(host, port)
		if agreed != "" && a != agreed {
			return ""
		}
		agreed = a
	}
	return agreed
}

// WaitFailover waits until every Sentinel names the same primary, other
// than from, and returns its address; it fails the test after timeout.
// Waiting for all of them matters: a Sentinel that has not yet heard of
// the previous failover still names the primary before it, and a test
// that took that for a new failover would restart the killed server while
// the others still hold it for the primary.
func (ss *SentinelSet) WaitFailover(from string, timeout time.Duration) string {
	ss.Primary.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if a := ss.agreedMaster(); a != "" && a != from {
			return a
		}
		if time.Now().After(deadline) {
			ss.Primary.tb.Fatalf("redistest: no failover from %s within %v", from, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or readyTimeout passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
