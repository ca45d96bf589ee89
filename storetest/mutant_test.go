package storetest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/storetest"
)

// The suite is only worth what it catches. Each mutant below wraps a
// correct store (the embedded one) and breaks one rule; TestSuiteCatches
// runs the subtest meant to notice, in a child process, and requires it to
// fail.

// mutant is a store with one rule broken: wrap breaks it, and the suite's
// subtest catcher must fail.
type mutant struct {
	name, catcher string
	wrap          func(tether.Store) tether.Store
}

var mutants = []mutant{
	{"read-reversed", "LogOrder", func(s tether.Store) tether.Store { return &readReversed{s} }},
	{"read-ignores-after", "Read", func(s tether.Store) tether.Store { return &readIgnoresAfter{s} }},
	{"read-ignores-limit", "Read", func(s tether.Store) tether.Store { return &readIgnoresLimit{s} }},
	{"read-drops-client-id", "PublishDevice", func(s tether.Store) tether.Store { return &readDropsClientID{s} }},
	{"publish-forgets-client-id", "IdempotentPublish", func(s tether.Store) tether.Store { return &publishForgetsClientID{s} }},
	{"publish-no-recipients", "PublishGroupOnce", func(s tether.Store) tether.Store { return &publishNoRecipients{s} }},
	{"publish-loses-some", "Concurrent", func(s tether.Store) tether.Store { return &publishLosesSome{s} }},
	{"cursors-from-start", "MembersAtPublishTime", func(s tether.Store) tether.Store { return &cursorsFromStart{s} }},
	{"commit-counts-marks", "Ack", func(s tether.Store) tether.Store { return &commitCountsMarks{s} }},
	{"commit-ignores-ack-ids", "AckIDs", func(s tether.Store) tether.Store { return &commitIgnoresAckIDs{s} }},
	{"commit-dead-as-acked", "Dead", func(s tether.Store) tether.Store { return &commitDeadAsAcked{s} }},
	{"commit-drops-sends", "Sent", func(s tether.Store) tether.Store { return &commitDropsSends{s} }},
	{"expire-no-purge", "Expire", func(s tether.Store) tether.Store { return &expireNoPurge{s} }},
	{"expire-ignores-limit", "ExpireLimit", func(s tether.Store) tether.Store { return &expireIgnoresLimit{s} }},
	{"message-unsorted", "MessageStatus", func(s tether.Store) tether.Store { return &messageUnsorted{s} }},
	{"device-unsorted", "Device", func(s tether.Store) tether.Store { return &deviceUnsorted{s} }},
	{"group-empty-not-found", "Group", func(s tether.Store) tether.Store { return &groupEmptyNotFound{s} }},
	{"leave-noop", "Leave", func(s tether.Store) tether.Store { return &leaveNoop{s} }},
	{"ignores-ctx", "ExpiredContext", func(s tether.Store) tether.Store { return &ignoresCtx{s} }},
	{"close-twice-fails", "Closed", func(s tether.Store) tether.Store { return &closeTwiceFails{Store: s} }},
}

// TestSuiteCatches runs each mutant's catching subtest in a child process
// and requires that subtest to fail.
func TestSuiteCatches(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "" {
		t.Skip("in a mutant child")
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			out := runChild(t, "^TestMutantChild$/^"+m.catcher+"$", m.name)
			if !strings.Contains(out, "--- FAIL: TestMutantChild/"+m.catcher) {
				t.Errorf("mutant %s: subtest %s did not fail; child output:\n%s", m.name, m.catcher, out)
			}
		})
	}
	t.Run("reopen-forgets", func(t *testing.T) {
		out := runChild(t, "^TestMutantDurableChild$", "reopen-forgets")
		if !strings.Contains(out, "--- FAIL: TestMutantDurableChild/Reopen") {
			t.Errorf("a store that forgets everything on reopen passed RunDurable; child output:\n%s", out)
		}
	})
}

// runChild runs this test binary on pattern with mutant selected and
// returns its output; the child must exit with a failure.
func runChild(t *testing.T, pattern, mutant string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+pattern, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "STORETEST_MUTANT="+mutant)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child for %s: want a failing exit, got %v; output:\n%s", mutant, err, out)
	}
	return string(out)
}

func openBolt(t *testing.T, dir string) tether.Store {
	s, err := bolt.Open(filepath.Join(dir, "tether.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMutantChild runs the suite on the mutant named by STORETEST_MUTANT.
func TestMutantChild(t *testing.T) {
	name := os.Getenv("STORETEST_MUTANT")
	i := slices.IndexFunc(mutants, func(m mutant) bool { return m.name == name })
	if i < 0 {
		t.Skip("not in a mutant child")
	}
	storetest.Run(t, func(t *testing.T) tether.Store { return mutants[i].wrap(openBolt(t, t.TempDir())) })
}

// TestMutantDurableChild runs RunDurable on a store that opens a new,
// empty directory instead of the one it is given.
func TestMutantDurableChild(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "reopen-forgets" {
		t.Skip("not in a mutant child")
	}
	storetest.RunDurable(t, func(t *testing.T, dir string) tether.Store { return openBolt(t, t.TempDir()) })
}

// TestControl runs the suite on the unbroken store: each catching subtest
// fails because of its mutant, not on its own.
func TestControl(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "" {
		t.Skip("in a mutant child")
	}
	storetest.Run(t, func(t *testing.T) tether.Store { return openBolt(t, t.TempDir()) })
	storetest.RunDurable(t, openBolt)
}

type readReversed struct{ tether.Store }

func (s *readReversed) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	out, err := s.Store.Read(ctx, reqs)
	for _, es := range out {
		slices.Reverse(es)
	}
	return out, err
}

type readIgnoresAfter struct{ tether.Store }

func (s *readIgnoresAfter) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	reqs = slices.Clone(reqs)
	for i := range reqs {
		reqs[i].After = 0
	}
	return s.Store.Read(ctx, reqs)
}

type readIgnoresLimit struct{ tether.Store }

func (s *readIgnoresLimit) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	reqs = slices.Clone(reqs)
	for i := range reqs {
		reqs[i].Limit = 100_000
	}
	return s.Store.Read(ctx, reqs)
}

type readDropsClientID struct{ tether.Store }

func (s *readDropsClientID) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	out, err := s.Store.Read(ctx, reqs)
	for _, es := range out {
		for _, e := range es {
			e.Message.ClientID = ""
		}
	}
	return out, err
}

type publishForgetsClientID struct{ tether.Store }

func (s *publishForgetsClientID) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	for _, m := range msgs {
		c := *m
		c.ClientID = ""
		*m = c
	}
	return s.Store.Publish(ctx, msgs)
}

type publishNoRecipients struct{ tether.Store }

func (s *publishNoRecipients) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	res, err := s.Store.Publish(ctx, msgs)
	for i := range res {
		res[i].Recipients = 0
	}
	return res, err
}

// publishLosesSome loses about one device message in ten after reporting
// it stored: it settles it as acked behind the device's back.
type publishLosesSome struct{ tether.Store }

func (s *publishLosesSome) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	res, err := s.Store.Publish(ctx, msgs)
	if err == nil && len(msgs) == 1 && strings.HasSuffix(msgs[0].ID, "7") && msgs[0].Target.Kind == tether.KindDevice {
		s.Store.Commit(ctx, []tether.Change{{Device: msgs[0].Target.ID, At: time.Now(), AckIDs: []string{msgs[0].ID}}})
	}
	return res, err
}

// cursorsFromStart answers group cursors as if the device had always been
// a member.
type cursorsFromStart struct{ tether.Store }

func (s *cursorsFromStart) Cursors(ctx context.Context, devices []string) ([][]tether.Cursor, error) {
	out, err := s.Store.Cursors(ctx, devices)
	for _, cs := range out {
		for i := range cs {
			if cs[i].Source.Kind == tether.KindGroup {
				cs[i].Floor, cs[i].Spans = 0, []tether.Span{{From: 0}}
			}
		}
	}
	return out, err
}

type commitCountsMarks struct{ tether.Store }

func (s *commitCountsMarks) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	out, err := s.Store.Commit(ctx, changes)
	for i := range out {
		out[i].Acked = len(changes[i].Marks)
	}
	return out, err
}

type commitIgnoresAckIDs struct{ tether.Store }

func (s *commitIgnoresAckIDs) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	changes = slices.Clone(changes)
	for i := range changes {
		changes[i].AckIDs = nil
	}
	return s.Store.Commit(ctx, changes)
}

type commitDeadAsAcked struct{ tether.Store }

func (s *commitDeadAsAcked) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	for _, ch := range changes {
		for i := range ch.Marks {
			if ch.Marks[i].State == tether.StateDead {
				ch.Marks[i].State = tether.StateAcked
			}
		}
	}
	return s.Store.Commit(ctx, changes)
}

type commitDropsSends struct{ tether.Store }

func (s *commitDropsSends) Commit(ctx context.Context, changes []tether.Change) ([]tether.Committed, error) {
	changes = slices.Clone(changes)
	for i := range changes {
		changes[i].Marks = slices.DeleteFunc(slices.Clone(changes[i].Marks), func(m tether.Mark) bool { return m.State == tether.StateInflight })
	}
	return s.Store.Commit(ctx, changes)
}

type expireNoPurge struct{ tether.Store }

func (s *expireNoPurge) Expire(ctx context.Context, now, _ time.Time, limit int) (int, bool, error) {
	return s.Store.Expire(ctx, now, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), limit)
}

type expireIgnoresLimit struct{ tether.Store }

func (s *expireIgnoresLimit) Expire(ctx context.Context, now, purge time.Time, _ int) (int, bool, error) {
	return s.Store.Expire(ctx, now, purge, 1000)
}

type messageUnsorted struct{ tether.Store }

func (s *messageUnsorted) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	st, err := s.Store.Message(ctx, id)
	slices.Reverse(st.Deliveries)
	return st, err
}

type deviceUnsorted struct{ tether.Store }

func (s *deviceUnsorted) Device(ctx context.Context, id string) (tether.DeviceInfo, error) {
	info, err := s.Store.Device(ctx, id)
	slices.Reverse(info.Groups)
	return info, err
}

type groupEmptyNotFound struct{ tether.Store }

func (s *groupEmptyNotFound) Group(ctx context.Context, id string) (tether.GroupInfo, error) {
	info, err := s.Store.Group(ctx, id)
	if err == nil && len(info.Devices) == 0 {
		return tether.GroupInfo{}, tether.ErrNotFound
	}
	return info, err
}

type leaveNoop struct{ tether.Store }

func (s *leaveNoop) Leave(context.Context, string, string) error { return nil }

// ignoresCtx calls the store with a context that never ends.
type ignoresCtx struct{ tether.Store }

func (s *ignoresCtx) Publish(_ context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	return s.Store.Publish(context.Background(), msgs)
}

func (s *ignoresCtx) Read(_ context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	return s.Store.Read(context.Background(), reqs)
}

type closeTwiceFails struct {
	tether.Store
	closed bool
}

func (s *closeTwiceFails) Close() error {
	if s.closed {
		return errors.New("already closed")
	}
	s.closed = true
	return s.Store.Close()
}
