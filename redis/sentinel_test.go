package redis

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
)

// TestSentinelFollowsFailover opens the store through three real Sentinels,
// kills the primary with SIGKILL and checks that the same store, without
// reopening, writes to the promoted replica and still reads what it wrote
// before (replicated before the kill: WAIT), within the failover.
func TestSentinelFollowsFailover(t *testing.T) {
	ss := redistest.StartSentinelSet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := Open(ctx, Options{URL: "redis://" + ss.Name + "/0", Sentinels: ss.SentinelAddrs()})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now()
	msg := func(id string) *tether.Message {
		return &tether.Message{ID: id, Target: tether.DeviceTarget("pos-1"), Data: json.RawMessage(`{}`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	before := "01JB00000000000000000000S1"
	must(t, "publish before", func(ctx context.Context) ([]tether.PublishResult, error) {
		return s.Publish(ctx, []*tether.Message{msg(before)})
	})
	if n, err := ss.Primary.Do("WAIT", "1", "2000"); err != nil || n != "1" {
		t.Fatalf("WAIT 1: %q, %v", n, err)
	}
	from := ss.MasterAddr()
	if from != ss.Primary.Addr {
		t.Fatalf("Sentinels name %s, want the primary %s", from, ss.Primary.Addr)
	}
	ss.Primary.Kill()
	to := ss.WaitFailover(from, 30*time.Second)
	if to != ss.Replica.Addr {
		t.Fatalf("promoted %s, want the replica %s", to, ss.Replica.Addr)
	}
	after := "01JB00000000000000000000S2"
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.Publish(ctx, []*tether.Message{msg(after)})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write accepted within 15 s of the failover to %s: %v", to, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range []string{before, after} {
		st := must(t, "message "+id, func(ctx context.Context) (tether.MessageStatus, error) { return s.Message(ctx, id) })
		if len(st.Deliveries) != 1 || st.Deliveries[0].Device != "pos-1" {
			t.Errorf("message %s after the failover: %+v", id, st)
		}
	}
	if role, err := ss.Replica.Do("ROLE"); err != nil || role[:6] != "master" {
		t.Errorf("the promoted replica says ROLE %q, %v", role, err)
	}
}

// TestMinReplicasWaits: with MinReplicas 1 a publish succeeds while the
// replica follows, fails with ErrUnavailable after ReplicaTimeout while the
// replica is stopped (SIGSTOP), and succeeds again once it resumes.
func TestMinReplicasWaits(t *testing.T) {
	p := redistest.Start(t)
	_, port, _ := strings.Cut(p.Addr, ":")
	r := redistest.Start(t, "--replicaof", "127.0.0.1", port)
	waitUntil(t, "the replica to follow", func() bool {
		info, err := r.Do("INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	const timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := Open(ctx, Options{URL: p.URL(), MinReplicas: 1, ReplicaTimeout: timeout})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now()
	publish := func(id string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := s.Publish(ctx, []*tether.Message{{ID: id, Target: tether.DeviceTarget("pos-1"), Data: json.RawMessage(`{}`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}})
		return time.Since(start), err
	}
	if _, err := publish("01JB00000000000000000000W1"); err != nil {
		t.Fatalf("publish with the replica following: %v", err)
	}
	r.Pause()
	took, err := publish("01JB00000000000000000000W2")
	if !errors.Is(err, tether.ErrUnavailable) || took < timeout || took > timeout+2*time.Second {
		t.Fatalf("publish with the replica stopped: %v after %v, want ErrUnavailable after about %v", err, took, timeout)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	r.Resume()
	waitUntil(t, "a publish accepted once the replica resumed", func() bool {
		_, err := publish("01JB00000000000000000000W3")
		return err == nil
	})

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	two, err := Open(ctx, Options{URL: p.URL(), MinReplicas: 2, ReplicaTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	_, err = two.Publish(ctx, []*tether.Message{{ID: "01JB00000000000000000000W4", Target: tether.DeviceTarget("pos-1"), Data: json.RawMessage(`{}`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}})
	if !errors.Is(err, tether.ErrUnavailable) || !strings.Contains(err.Error(), "1 of 2 replicas") {
		t.Fatalf("MinReplicas 2 with one replica: %v, want ErrUnavailable naming 1 of 2", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
