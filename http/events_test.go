package http_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
)

// eventsPage is the answer of GET /v1/events.
type eventsPage struct {
	Events []tether.LogEvent `json:"events"`
	Next   string            `json:"next"`
}

// summary returns the events as "type device [message]" lines.
func summary(evs []tether.LogEvent) []string {
	var out []string
	for _, e := range evs {
		s := string(e.Type) + " " + e.Device
		if e.Message != "" {
			s += " " + e.Message
		}
		if e.Type == tether.EventOffline {
			s += fmt.Sprintf(" code=%d", e.Code)
		}
		out = append(out, s)
	}
	return out
}

// TestCancel: DELETE /v1/messages/{id} cancels the deliveries not acked:
// the one in flight on a connected device is never sent again (past its
// ack timeout), the pending one of an offline member is never sent, the
// acked one stays acked; the answer counts the cancelled; a second cancel
// cancels nothing; an unknown id is 404.
func TestCancel(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.AckTimeout = 200 * time.Millisecond })
	for _, d := range []string{"pos-2", "pos-3"} {
		if code := n.API(t, "PUT", "/v1/groups/shop/devices/"+d, nil, nil); code != 204 {
			t.Fatalf("add member: %d", code)
		}
	}
	on := n.Connect(t, "pos-1", "shop")
	acker := n.Connect(t, "pos-2", "shop")
	id := n.Publish(t, "group:shop", 1)
	if m := on.MustNext("message"); m.ID != id {
		t.Fatalf("got %+v", m)
	}
	acker.MustNext("message")
	acker.Ack(id)
	waitFor(t, 5*time.Second, "the ack stored", func() bool { return n.DeliveryState(t, id, "pos-2") == "acked" })

	var out struct {
		ID        string `json:"id"`
		Cancelled int    `json:"cancelled"`
	}
	if code := n.API(t, "DELETE", "/v1/messages/"+id, nil, &out); code != 200 || out.ID != id || out.Cancelled != 2 {
		t.Fatalf("cancel: %d %+v, want 200 with 2 cancelled (pos-1 in flight, pos-3 pending)", code, out)
	}
	for d, want := range map[string]string{"pos-1": "cancelled", "pos-2": "acked", "pos-3": "cancelled"} {
		if got := n.DeliveryState(t, id, d); got != want {
			t.Errorf("%s: %s, want %s", d, got, want)
		}
	}
	if f, err := on.Next(time.Second); err == nil {
		t.Errorf("the cancelled message came again: %+v", f)
	}
	late := n.Connect(t, "pos-3", "shop")
	if f, err := late.Next(500 * time.Millisecond); err == nil {
		t.Errorf("an offline member got the cancelled message when it connected: %+v", f)
	}
	on.Ack(id) // an ack of what was on the wire is harmless
	if code := n.API(t, "DELETE", "/v1/messages/"+id, nil, &out); code != 200 || out.Cancelled != 0 {
		t.Errorf("second cancel: %d %+v, want 200 with 0", code, out)
	}
	if code := n.API(t, "DELETE", "/v1/messages/no-such-message", nil, nil); code != 404 {
		t.Errorf("cancel of an unknown message: %d, want 404", code)
	}
	next := n.Publish(t, "group:shop", 2)
	if m := on.MustNext("message"); m.ID != next {
		t.Errorf("after the cancel got %+v, want the next message %s", m, next)
	}
}

// TestEventsLongPoll: GET /v1/events reports presence and receipts in
// order; a long poll waiting for an event answers as soon as the ack is
// stored; next resumes after what was read; a bad wait is 400.
func TestEventsLongPoll(t *testing.T) {
	n := mustOpenNode(t, nil)
	var page eventsPage
	if code := n.API(t, "GET", "/v1/events", nil, &page); code != 200 || len(page.Events) != 0 || page.Next != "" {
		t.Fatalf("empty log: %d %+v", code, page)
	}
	d := n.Connect(t, "pos-1")
	waitFor(t, 5*time.Second, "device.online", func() bool {
		n.API(t, "GET", "/v1/events", nil, &page)
		return len(page.Events) == 1
	})
	after := page.Next
	id := n.Publish(t, "device:pos-1", 1)
	d.MustNext("message")

	type answer struct {
		page eventsPage
		took time.Duration
	}
	got := make(chan answer, 1)
	start := time.Now()
	go func() {
		var p eventsPage
		n.API(t, "GET", "/v1/events?wait=10s&after="+after, nil, &p)
		got <- answer{p, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond) // the poll is waiting
	acked := time.Now()
	d.Ack(id)
	var a answer
	select {
	case a = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not answer")
	}
	if s := summary(a.page.Events); len(s) != 1 || s[0] != "delivery.acked pos-1 "+id {
		t.Fatalf("long poll answered %v, want the ack", s)
	}
	if a.took < 200*time.Millisecond {
		t.Errorf("the long poll answered after %v, before the event", a.took)
	}
	t.Logf("long poll answered %v after the ack was sent", time.Since(acked)-(time.Since(start)-a.took))
	ev := a.page.Events[0]
	if ev.Target != "device:pos-1" || ev.Attempts != 1 || ev.At.IsZero() || ev.ID != a.page.Next {
		t.Errorf("event %+v, next %q", ev, a.page.Next)
	}

	d.Conn.Close()
	waitFor(t, 5*time.Second, "device.offline", func() bool {
		n.API(t, "GET", "/v1/events?after="+a.page.Next, nil, &page)
		return len(page.Events) == 1
	})
	if s := summary(page.Events); s[0] != "device.offline pos-1 code=0" || page.Events[0].Node != "n1" {
		t.Errorf("after a close: %v (node %q), want device.offline of pos-1 on n1", s, page.Events[0].Node)
	}
	n.API(t, "GET", "/v1/events", nil, &page)
	if s := strings.Join(summary(page.Events), "; "); s != "device.online pos-1; delivery.acked pos-1 "+id+"; device.offline pos-1 code=0" {
		t.Errorf("the whole log: %s", s)
	}
	if code := n.API(t, "GET", "/v1/events?wait=forever", nil, nil); code != 400 {
		t.Errorf("wait=forever: %d, want 400", code)
	}
	if code := n.API(t, "GET", "/v1/events?after=nonsense", nil, nil); code != 400 {
		t.Errorf("after=nonsense: %d, want 400", code)
	}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestExpiredCountsItsSend: a first send is recorded lazily, with the
// session's next commit; one whose message expires before its redelivery
// is due, on a device that never acks it, is recorded before it expires,
// so delivery.expired counts it (attempts 1, not 0). A message acked in
// time is acked with attempts 1.
func TestExpiredCountsItsSend(t *testing.T) {
	n := mustOpenNode(t, func(h *hub.Config, _ *tetherhttp.Config) { h.AckTimeout = 30 * time.Second })
	silent := n.Connect(t, "pos-1")
	acker := n.Connect(t, "pos-2")
	publish := func(target string) string {
		var out struct{ ID string }
		body := map[string]any{"target": target, "data": 1, "ttl_s": 2.5}
		if code := n.API(t, "POST", "/v1/messages", body, &out); code != 202 {
			t.Fatalf("publish to %s: %d", target, code)
		}
		return out.ID
	}
	expired, acked := publish("device:pos-1"), publish("device:pos-2")
	if m := silent.MustNext("message"); m.ID != expired {
		t.Fatalf("got %+v", m)
	}
	if m := acker.MustNext("message"); m.ID != acked {
		t.Fatalf("got %+v", m)
	}
	acker.Ack(acked)
	want := map[string]tether.EventType{expired: tether.EventExpired, acked: tether.EventAcked}
	got := map[string]tether.LogEvent{}
	waitFor(t, 10*time.Second, "delivery.expired and delivery.acked", func() bool {
		var page eventsPage
		n.API(t, "GET", "/v1/events", nil, &page)
		for _, e := range page.Events {
			if want[e.Message] == e.Type {
				got[e.Message] = e
			}
		}
		return len(got) == 2
	})
	for id, e := range got {
		if e.Attempts != 1 {
			t.Errorf("%s of message %s to %s: attempts %d, want 1", e.Type, id, e.Device, e.Attempts)
		}
	}
}
