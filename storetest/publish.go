package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tetherpush/tether"
)

func testPing(t *testing.T, e *env) {
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// testPublishDevice: a device message comes back from Pending with every
// field intact, and the store does not keep the caller's bytes.
func testPublishDevice(t *testing.T, e *env) {
	m := e.msg(dev("pos-1"))
	m.ClientID = "order-42"
	m.Data = json.RawMessage(`{"total": 12.5, "items": ["a", "b"], "note": "caf\u00e9 ☕"}`)
	m.PublishedAt = t0.In(time.FixedZone("CET", 3600))
	m.ExpiresAt = t0.Add(36*time.Hour + 7*time.Millisecond)
	want := *m
	want.Data = bytes.Clone(m.Data)

	e.publishOne(m, "pos-1")
	m.Data[0] = 'X' // the store must have copied the data

	ds := e.checkPending("pos-1", want.ID)
	if len(ds) != 1 {
		return
	}
	d := ds[0]
	if d.Device != "pos-1" || d.State != tether.StatePending || d.Attempts != 0 || !d.AckedAt.IsZero() {
		t.Errorf("delivery = {%s %s attempts %d acked %v}, want {pos-1 pending attempts 0 acked zero}",
			d.Device, d.State, d.Attempts, d.AckedAt)
	}
	checkMessage(t, d.Message, &want)
	e.checkPending("pos-2")
}

// testPublishGroupFanOut: a group message is addressed to the members at
// publish time only.
func testPublishGroupFanOut(t *testing.T, e *env) {
	e.join("a", "shop-1")
	e.join("b", "shop-1", "shop-2")
	m1 := e.msg(group("shop-1"))
	e.publishOne(m1, "a", "b")

	e.join("c", "shop-1")  // joins after m1
	e.leave("shop-1", "b") // leaves before m2
	m2 := e.msg(group("shop-1"))
	e.publishOne(m2, "a", "c")
	m3 := e.msg(group("shop-2"))
	e.publishOne(m3, "b")

	ds := e.checkPending("a", m1.ID, m2.ID)
	if len(ds) > 0 {
		checkMessage(t, ds[0].Message, m1)
	}
	e.checkPending("b", m1.ID, m3.ID)
	e.checkPending("c", m2.ID)
}

// testPublishEmptyGroup: a message to a group without members is stored
// with no deliveries.
func testPublishEmptyGroup(t *testing.T, e *env) {
	m := e.msg(group("nobody"))
	r := e.publish(m)[0]
	if r.ID != m.ID || r.Recipients != 0 || len(r.Devices) != 0 || r.Duplicate {
		t.Errorf("publish to empty group = %+v, want id %s, 0 recipients, no devices", r, m.ID)
	}
	st := e.message(m.ID)
	checkMessage(t, &st.Message, m)
	e.checkDeliveries(m.ID)
}

// testPublishBatch: one call with many messages to several targets.
func testPublishBatch(t *testing.T, e *env) {
	e.join("a", "g")
	e.join("b", "g")
	var msgs []*tether.Message
	wantA, wantB := []string{}, []string{}
	for i := 0; i < 50; i++ {
		var m *tether.Message
		switch i % 3 {
		case 0:
			m = e.msg(dev("a"))
			wantA = append(wantA, m.ID)
		case 1:
			m = e.msg(dev("b"))
			wantB = append(wantB, m.ID)
		default:
			m = e.msg(group("g"))
			wantA, wantB = append(wantA, m.ID), append(wantB, m.ID)
		}
		msgs = append(msgs, m)
	}
	res := e.publish(msgs...)
	for i, r := range res {
		want := tether.PublishResult{ID: msgs[i].ID, Recipients: 1, Devices: []string{msgs[i].Target.ID}}
		if msgs[i].Target.Kind == tether.KindGroup {
			want = tether.PublishResult{ID: msgs[i].ID, Recipients: 2, Devices: []string{"a", "b"}}
		}
		checkResult(t, msgs[i].ID, r, want)
	}
	e.checkPending("a", wantA...)
	e.checkPending("b", wantB...)
}

// testPendingOrder: Pending answers in message id order whatever the order
// and grouping of the Publish calls, mixing targets.
func testPendingOrder(t *testing.T, e *env) {
	e.join("d", "g")
	m := make([]*tether.Message, 6)
	for i := range m {
		target := dev("d")
		if i == 2 {
			target = group("g")
		}
		m[i] = e.msg(target)
	}
	e.publish(m[1], m[0])
	e.publish(m[3])
	e.publish(m[2])
	e.publish(m[5], m[4])
	e.checkPending("d", m[0].ID, m[1].ID, m[2].ID, m[3].ID, m[4].ID, m[5].ID)
}

// testPendingCursor: after is exclusive, limit is exact, and settled
// deliveries do not count.
func testPendingCursor(t *testing.T, e *env) {
	var id []string
	for i := 0; i < 5; i++ {
		m := e.msg(dev("d"))
		e.publish(m)
		id = append(id, m.ID)
	}
	pages := []struct {
		after string
		limit int
		want  []string
	}{
		{"", 2, id[0:2]},
		{id[1], 2, id[2:4]},
		{id[3], 2, id[4:5]},
		{id[4], 2, nil},
		{"", 1, id[0:1]},
		{"", 10, id},
		{id[1] + "x", 2, id[2:4]}, // an id between two stored ones
		{"0", 3, id[0:3]},         // an id before all of them
	}
	for _, p := range pages {
		if got := ids(e.pending("d", p.after, p.limit, t0)); !slices.Equal(got, p.want) {
			t.Errorf("Pending(d, after %q, limit %d) = %q, want %q", p.after, p.limit, got, p.want)
		}
	}
	e.checkAck("d", []string{id[2]}, t0, 1)
	if got := ids(e.pending("d", id[1], 2, t0)); !slices.Equal(got, []string{id[3], id[4]}) {
		t.Errorf("after acking %s: Pending(d, after %q, limit 2) = %q, want %q", id[2], id[1], got, id[3:5])
	}
}

// testIdempotentPublish: a client id is a duplicate for the same target
// only, across calls and within one call.
func testIdempotentPublish(t *testing.T, e *env) {
	e.join("a", "g")
	e.join("b", "g")
	withClient := func(target tether.Target, clientID string, at time.Duration) *tether.Message {
		m := e.msg(target)
		m.ClientID, m.PublishedAt = clientID, t0.Add(at)
		m.ExpiresAt = m.PublishedAt.Add(time.Hour)
		return m
	}
	m1 := withClient(dev("d"), "k1", 0)
	e.publishOne(m1, "d")
	m2 := withClient(dev("d"), "k1", time.Minute)
	checkResult(t, "same client id, same device", e.publish(m2)[0],
		tether.PublishResult{ID: m1.ID, Recipients: 1, Duplicate: true})
	e.checkNotFound(m2.ID)

	e.publishOne(withClient(dev("e"), "k1", time.Minute), "e")
	m4 := withClient(group("g"), "k1", time.Minute)
	e.publishOne(m4, "a", "b")
	checkResult(t, "same client id, same group", e.publish(withClient(group("g"), "k1", 2*time.Minute))[0],
		tether.PublishResult{ID: m4.ID, Recipients: 2, Duplicate: true})

	m6, m7, m8 := withClient(dev("d"), "k2", 0), withClient(dev("d"), "k2", 0), withClient(dev("d"), "", 0)
	m9 := withClient(dev("d"), "", 0)
	res := e.publish(m6, m7, m8, m9)
	checkResult(t, "first of a call", res[0], tether.PublishResult{ID: m6.ID, Recipients: 1, Devices: []string{"d"}})
	checkResult(t, "duplicate within a call", res[1], tether.PublishResult{ID: m6.ID, Recipients: 1, Duplicate: true})
	checkResult(t, "no client id", res[2], tether.PublishResult{ID: m8.ID, Recipients: 1, Devices: []string{"d"}})
	checkResult(t, "no client id again", res[3], tether.PublishResult{ID: m9.ID, Recipients: 1, Devices: []string{"d"}})
	e.checkPending("d", m1.ID, m6.ID, m8.ID, m9.ID)
	e.checkPending("a", m4.ID)
}

// testIdempotentAfterExpiry: once the original has expired at the new
// message's publish time, the client id is accepted again, and purging the
// old message keeps the new key.
func testIdempotentAfterExpiry(t *testing.T, e *env) {
	at := func(d time.Duration) *tether.Message {
		m := e.msg(dev("d"))
		m.ClientID, m.PublishedAt, m.ExpiresAt = "k", t0.Add(d), t0.Add(d+time.Hour)
		return m
	}
	m1 := at(0)
	e.publishOne(m1, "d")
	checkResult(t, "before expiry", e.publish(at(59 * time.Minute))[0],
		tether.PublishResult{ID: m1.ID, Recipients: 1, Duplicate: true})
	m3 := at(time.Hour) // m1 expired at exactly this instant
	e.publishOne(m3, "d")
	checkResult(t, "duplicate of the new one", e.publish(at(61 * time.Minute))[0],
		tether.PublishResult{ID: m3.ID, Recipients: 1, Duplicate: true})

	// Purge m1 (expired at t0+1h); the key now belongs to m3.
	e.checkExpire(t0.Add(90*time.Minute), t0.Add(90*time.Minute), 100, 1, false)
	e.checkNotFound(m1.ID)
	checkResult(t, "after purging the old one", e.publish(at(62 * time.Minute))[0],
		tether.PublishResult{ID: m3.ID, Recipients: 1, Duplicate: true})
}

// testMessageNotFound: an unknown id is ErrNotFound.
func testMessageNotFound(t *testing.T, e *env) {
	_, err := e.s.Message(e.ctx, "01JT-never-published")
	if !errors.Is(err, tether.ErrNotFound) {
		t.Errorf("Message(unknown) error = %v, want ErrNotFound", err)
	}
	if code := tether.ErrorCode(err); code != tether.ENotFound {
		t.Errorf("Message(unknown) error code = %q, want %q", code, tether.ENotFound)
	}
}

// testInvalidArguments: malformed ids are EInvalid errors.
func testInvalidArguments(t *testing.T, e *env) {
	good := e.msg(dev("d"))
	badTarget := e.msg(tether.Target{Kind: tether.KindDevice, ID: "no spaces"})
	emptyGroup := e.msg(tether.Target{Kind: tether.KindGroup, ID: ""})
	badKind := e.msg(tether.Target{Kind: "shop", ID: "s1"})
	calls := []struct {
		name string
		call func() error
	}{
		{"Join(bad device)", func() error { return e.s.Join(e.ctx, "bad id", nil) }},
		{"Join(bad group)", func() error { return e.s.Join(e.ctx, "d", []string{"bad/group"}) }},
		{"Leave(bad device)", func() error { return e.s.Leave(e.ctx, "g", "bad id") }},
		{"Publish(bad device target)", func() error { _, err := e.s.Publish(e.ctx, []*tether.Message{good, badTarget}); return err }},
		{"Publish(empty group id)", func() error { _, err := e.s.Publish(e.ctx, []*tether.Message{emptyGroup}); return err }},
		{"Publish(bad target kind)", func() error { _, err := e.s.Publish(e.ctx, []*tether.Message{badKind}); return err }},
	}
	for _, c := range calls {
		if err := c.call(); tether.ErrorCode(err) != tether.EInvalid {
			t.Errorf("%s: error %v (code %q), want code %q", c.name, err, tether.ErrorCode(err), tether.EInvalid)
		}
	}
}
