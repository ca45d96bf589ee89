package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
)

// TestJoinAfterHalfLeave: a Leave whose second step (the device's
// cursors) failed leaves the cursors a member; the next Join closes that
// span where the group closed it, so that what was published to the group
// between the Leave and the Join is not addressed to the device.
func TestJoinAfterHalfLeave(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{URL: srv.URL(), Prefix: "halfleave"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	group := tether.GroupTarget("shop")
	publish := func(n int) {
		t.Helper()
		now := time.Now()
		m := &tether.Message{ID: fmt.Sprintf("01JH%d", n), Target: group, Data: json.RawMessage(`1`), PublishedAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := s.Publish(ctx, []*tether.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Join(ctx, "pos", []string{"shop"}); err != nil {
		t.Fatal(err)
	}
	publish(1)
	if _, err := s.member(ctx, "leave", "pos", []string{"shop"}, "l"); err != nil { // the first step only
		t.Fatal(err)
	}
	publish(2)
	if err := s.Join(ctx, "pos", []string{"shop"}); err != nil {
		t.Fatal(err)
	}
	publish(3)
	cs, err := s.Cursors(ctx, []string{"pos"})
	if err != nil {
		t.Fatal(err)
	}
	i := tether.FindCursor(cs[0], group)
	if i < 0 {
		t.Fatalf("no cursor of %s in %+v", group, cs[0])
	}
	if want := []tether.Span{{From: 0, To: 1}, {From: 2}}; !reflect.DeepEqual(cs[0][i].Spans, want) {
		t.Errorf("spans %+v, want %+v", cs[0][i].Spans, want)
	}
	for seq, want := range map[uint64]bool{1: true, 2: false, 3: true} {
		if got := cs[0][i].Addressed(seq); got != want {
			t.Errorf("position %d addressed: %v, want %v", seq, got, want)
		}
	}
}
