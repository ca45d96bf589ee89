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
	// SETs: the cursors of the member that had not acked, and the
	// bucket's watermark.
	if sets := calls(stats, "set"); sets != 2 {
		t.Errorf("Expire made %d SETs, want 2: one device's cursors and the watermark", sets)
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

// TestExpireLateMessage: a message recorded below the watermark of its
// bucket (published already expired, say by a node whose clock is
// behind) is still settled by the next Expire.
func TestExpireLateMessage(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "late"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; len(ids) < 2; i++ {
		if id := fmt.Sprintf("01JL%d", i); bucketOf(id) == 5 {
			ids = append(ids, id)
		}
	}
	publish := func(id string, exp time.Time) {
		t.Helper()
		m := &tether.Message{ID: id, Target: tether.DeviceTarget("pos"), Data: json.RawMessage(`1`), PublishedAt: t0, ExpiresAt: exp}
		if _, err := s.Publish(ctx, []*tether.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	publish(ids[0], t0.Add(time.Minute))
	if n, _, err := s.Expire(ctx, t0.Add(2*time.Minute), t0, 10); err != nil || n != 1 {
		t.Fatalf("first Expire = %d, %v; want 1", n, err)
	}
	publish(ids[1], t0.Add(30*time.Second)) // below the watermark
	if n, _, err := s.Expire(ctx, t0.Add(2*time.Minute), t0, 10); err != nil || n != 1 {
		t.Errorf("Expire after a message recorded below the watermark = %d, %v; want 1", n, err)
	}
	if n, _, err := s.Expire(ctx, t0.Add(2*time.Minute), t0, 10); err != nil || n != 0 {
		t.Errorf("Expire again = %d, %v; want 0", n, err)
	}
	// Both are purged in time, and nothing of them is left in the bucket.
	if _, _, err := s.Expire(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	b := s.k.bucket(5)
	for _, k := range []string{b.due, b.late, b.meta} {
		if n := srv.MustDo("EXISTS", k); n != "0" {
			t.Errorf("%s still there after the purge", k)
		}
	}
}

// TestWatermarkStopsAtUnknown: the finish script moves a bucket's
// watermark over the members this Expire handled and stops before one it
// did not (recorded after its scan).
func TestWatermarkStopsAtUnknown(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "mark"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := s.k.bucket(0)
	member := func(sec int64, id string) string { return timeKey(sec*1e9) + id }
	a, x, c := member(1, "a"), member(2, "x"), member(3, "c")
	for _, m := range []string{a, x, c} {
		srv.MustDo("ZADD", b.due, "0", m)
	}
	// This Expire settled a and c; x was recorded after its scan.
	if _, err := s.roundTrip(ctx, "test", []call{scriptCall(scriptFinish, []string{b.due, b.done, b.late, b.meta}, c, "s", a, "s", c)}); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustDo("GET", b.done); got != a {
		t.Errorf("watermark %q, want %q (before the member not handled)", got, a)
	}
}

// TestExpireAppendLate: a message whose append reaches its log after
// Expire passed its expiry (a publish held up by a stopped shard) is
// still settled as expired by a later Expire.
func TestExpireAppendLate(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "appendlate"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	m := &tether.Message{ID: "01JA1", Target: tether.DeviceTarget("pos"), Data: json.RawMessage(`1`), PublishedAt: t0, ExpiresAt: t0.Add(time.Minute)}
	msgs := []*tether.Message{m}
	if err := s.intend(ctx, msgs); err != nil { // Publish's first step only
		t.Fatal(err)
	}
	now := t0.Add(2 * time.Minute)
	if n, _, err := s.Expire(ctx, now, t0, 10); err != nil || n != 0 {
		t.Fatalf("Expire before the append = %d, %v; want 0", n, err)
	}
	if _, err := s.appendLogs(ctx, msgs); err != nil { // its second step, late
		t.Fatal(err)
	}
	if n, _, err := s.Expire(ctx, now, t0, 10); err != nil || n != 1 {
		t.Errorf("Expire after the append = %d, %v; want 1", n, err)
	}
	if _, _, err := s.Expire(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustDo("ZCARD", s.k.log(m.Target).log); got != "0" {
		t.Errorf("log holds %s entries after the purge, want 0", got)
	}
}
