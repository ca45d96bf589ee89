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
