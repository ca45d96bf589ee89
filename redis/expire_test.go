package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
)

// TestExpireWritesOnlyUnsettled: expiring a group message writes the
// cursors of the members that have not settled it, and no others: the
// cost of an expiry does not grow with the members that acked.
func TestExpireWritesOnlyUnsettled(t *testing.T) {
	const members = 20
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "lazy"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for d := range members {
		if err := s.Join(ctx, fmt.Sprintf("pos-%d", d), []string{"shop"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	m := &tether.Message{ID: "01JX1", Target: tether.GroupTarget("shop"), Data: json.RawMessage(`1`), PublishedAt: now, ExpiresAt: now.Add(time.Minute)}
	res, err := s.Publish(ctx, []*tether.Message{m})
	if err != nil {
		t.Fatal(err)
	}
	changes := make([]tether.Change, members-1) // pos-0 does not ack
	for i := range changes {
		changes[i] = tether.Change{Device: fmt.Sprintf("pos-%d", i+1), At: now,
			Marks: []tether.Mark{{Source: m.Target, Seq: res[0].Seq, State: tether.StateAcked, Attempts: 1}}}
	}
	if _, err := s.Commit(ctx, changes); err != nil {
		t.Fatal(err)
	}
	srv.MustDo("CONFIG", "RESETSTAT")
	n, _, err := s.Expire(ctx, m.ExpiresAt, now.Add(-time.Hour), 100)
	if err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	stats := srv.MustDo("INFO", "commandstats")
	if sets := calls(stats, "set"); sets != 1 {
		t.Errorf("Expire wrote %d cursors, want 1 (the member that had not acked)", sets)
	}
	// Scripts: the compare-and-set of that member and the bucket's
	// finish; the bucket scans are read-only (evalsha_ro).
	if n := calls(stats, "evalsha"); n != 2 {
		t.Errorf("Expire ran %d scripts, want 2", n)
	}
	st, err := s.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Deliveries {
		want := tether.StateAcked
		if d.Device == "pos-0" {
			want = tether.StateExpired
		}
		if d.State != want {
			t.Errorf("delivery to %s: %s, want %s", d.Device, d.State, want)
		}
	}
}

// calls returns the calls of command in an INFO commandstats answer.
func calls(stats, command string) int {
	n := 0
	for _, line := range strings.Split(stats, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls="); ok {
			fmt.Sscanf(v, "%d", &n)
		}
	}
	return n
}

// TestPurgeTrims: once a log is purged empty, the history the devices
// kept of it and the closed membership spans of its group are dropped.
func TestPurgeTrims(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "trim"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range []string{"a", "b"} {
		if err := s.Join(ctx, d, []string{"shop"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	group, own := tether.GroupTarget("shop"), tether.DeviceTarget("a")
	var marks []tether.Mark
	for i, target := range []tether.Target{group, group, own, own} {
		m := &tether.Message{ID: fmt.Sprintf("01JT%d", i), Target: target, Data: json.RawMessage(`1`), PublishedAt: now, ExpiresAt: now.Add(time.Minute)}
		res, err := s.Publish(ctx, []*tether.Message{m})
		if err != nil {
			t.Fatal(err)
		}
		// Attempts 1 then 2: two ranges, the first of which goes to history.
		marks = append(marks, tether.Mark{Source: target, Seq: res[0].Seq, State: tether.StateAcked, Attempts: 1 + i%2})
	}
	if _, err := s.Commit(ctx, []tether.Change{{Device: "a", At: now, Marks: marks}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(ctx, "shop", "b"); err != nil {
		t.Fatal(err)
	}
	hists := []string{s.k.hist("a", group), s.k.hist("a", own)}
	for _, k := range hists {
		if n := srv.MustDo("ZCARD", k); n != "1" {
			t.Fatalf("history %s holds %s ranges before the purge, want 1", k, n)
		}
	}
	later := now.Add(2 * time.Minute)
	if _, more, err := s.Expire(ctx, later, later, 100); err != nil || more {
		t.Fatalf("Expire: more %v, %v", more, err)
	}
	for _, k := range hists {
		if n := srv.MustDo("EXISTS", k); n != "0" {
			t.Errorf("history %s still there after its log was purged", k)
		}
	}
	mem := s.k.log(group).mem
	if v := srv.MustDo("HGET", mem, "b"); v != "" {
		t.Errorf("spans of b, who left, after the purge: %q, want none", v)
	}
	if v := srv.MustDo("HGET", mem, "a"); v != "0:0" {
		t.Errorf("spans of a, a member, after the purge: %q, want 0:0", v)
	}
}

// TestExpireUnevenBuckets: when the due messages are all in one expiry
// bucket, Expire still handles limit of them per call.
func TestExpireUnevenBuckets(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "uneven"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	var msgs []*tether.Message
	for i := 0; len(msgs) < 40; i++ {
		id := fmt.Sprintf("01JU%d", i)
		if bucketOf(id) != 3 {
			continue
		}
		msgs = append(msgs, &tether.Message{ID: id, Target: tether.DeviceTarget("pos"), Data: json.RawMessage(`1`),
			PublishedAt: now, ExpiresAt: now.Add(time.Duration(len(msgs)+1) * time.Second)})
	}
	if _, err := s.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Hour)
	for _, want := range []struct {
		n    int
		more bool
	}{{30, true}, {10, false}} {
		n, more, err := s.Expire(ctx, later, now, 30)
		if err != nil || n != want.n || more != want.more {
			t.Errorf("Expire(limit 30) = %d, %v, %v; want %d, %v", n, more, err, want.n, want.more)
		}
	}
}
