package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherpush/tether/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestServer: the server answers, keeps what AOF persisted across Stop and
// Kill, hangs while paused and answers again once resumed.
func TestServer(t *testing.T) {
	s := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	if got := s.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING = %q, want PONG", got)
	}
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") {
		t.Errorf("URL() = %q", s.URL())
	}
	s.MustDo("SET", "k", "v1")
	s.Stop()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Restart()
	if got := s.MustDo("GET", "k"); got != "v1" {
		t.Errorf("after Stop and Restart, GET k = %q, want v1", got)
	}
	s.MustDo("SET", "k", "v2")
	s.Kill()
	s.Restart()
	if got := s.MustDo("GET", "k"); got != "v2" {
		t.Errorf("after Kill and Restart (appendfsync always), GET k = %q, want v2", got)
	}

	s.Pause()
	c, err := net.Dial("tcp", s.Addr) // the kernel still accepts
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("PING\r\n"))
	_, err = c.Read(make([]byte, 16))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("PING to a paused server: %v, want a timeout", err)
	}
	s.Resume()
	if got := s.MustDo("PING"); got != "PONG" {
		t.Errorf("PING after Resume = %q", got)
	}
}

// TestNoPersistenceByDefault: a killed default server comes back empty.
func TestNoPersistenceByDefault(t *testing.T) {
	s := redistest.Start(t)
	s.MustDo("SET", "k", "v")
	s.Kill()
	s.Restart()
	if got := s.MustDo("DBSIZE"); got != "0" {
		t.Errorf("DBSIZE after Kill and Restart = %s, want 0", got)
	}
}

// TestCleanup: the server is gone once its test has ended.
func TestCleanup(t *testing.T) {
	var pid int
	t.Run("inner", func(t *testing.T) {
		pid = redistest.Start(t).Pid()
		if pid == 0 {
			t.Fatal("Pid() = 0 for a running server")
		}
	})
	if alive(pid) {
		t.Errorf("redis-server %d still runs after its test ended", pid)
	}
}

// TestParentDeath: a test binary that dies without running its cleanups
// takes its servers with it (Pdeathsig).
func TestParentDeath(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig is Linux only")
	}
	if os.Getenv("REDISTEST_CHILD") != "" {
		s := redistest.Start(t)
		os.Stdout.WriteString("pid " + strconv.Itoa(s.Pid()) + "\n")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		return
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		redistest.Start(t) // skips or fails with the install hint
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestParentDeath$", "-test.count=1")
	// The child dies without its cleanups: its temporary directories go
	// under this test's, which this test's cleanup removes.
	cmd.Env = append(os.Environ(), "REDISTEST_CHILD=1", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	cmd.Wait()
	if pid == 0 {
		t.Fatal("the child printed no server pid")
	}
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("redis-server %d outlived its killed test binary by 5s", pid)
		}
	}
}

// TestCluster: three masters share the slots and agree the cluster is ok.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	for _, n := range c.Nodes {
		info := n.MustDo("CLUSTER", "INFO")
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"} {
			if !strings.Contains(info, want) {
				t.Errorf("node %s: CLUSTER INFO lacks %q:\n%s", n.Addr, want, info)
			}
		}
	}
	// Keys of one hash tag live on one node; the others answer MOVED.
	moved := 0
	for _, n := range c.Nodes {
		_, err := n.Do("SET", "{d:pos-1}:x", "1")
		if err != nil && strings.HasPrefix(err.Error(), "MOVED ") {
			moved++
		} else if err != nil {
			t.Errorf("SET on %s: %v", n.Addr, err)
		}
	}
	if moved != 2 {
		t.Errorf("%d nodes answered MOVED for one key, want 2", moved)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}
