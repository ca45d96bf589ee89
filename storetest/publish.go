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

// testPublishDevice: a device message comes back from its log with every
// field intact, at position 1, and the store does not keep the caller's
// bytes.
func testPublishDevice(t *testing.T, e *env) {
	m := e.msg(dev("pos-1"))
	m.ClientID = "order-42"
	m.Data = json.RawMessage(`{"total": 12.5, "items": ["a", "b"], "note": "caf\u00e9 ☕"}`)
	m.PublishedAt = t0.In(time.FixedZone("CET", 3600))
	m.ExpiresAt = t0.Add(36*time.Hour + 7*time.Millisecond)
	orig := *m
	orig.Data = bytes.Clone(m.Data)

	e.publishOne(m, 1, 1)
	m.Data[0] = 'X' // the store must have copied the data

	got := e.checkOwed("pos-1", orig.ID)
	if len(got) == 1 {
		checkMessage(t, got[0], &orig)
	}
	e.checkOwed("pos-2")
	e.checkDeliveries(orig.ID, want{"pos-1", tether.StatePending, 0, time.Time{}})
}

// testPublishGroupOnce: a group message is one entry of the group's log,
// not a copy per member, and is owed to every member.
func testPublishGroupOnce(t *testing.T, e *env) {
	for _, d := range []string{"a", "b", "c"} {
		e.join(d, "shop")
	}
	m := e.msg(group("shop"))
	e.publishOne(m, 1, 3)
	if got := e.read(group("shop"), 0, 10); len(got) != 1 || got[0].Seq != 1 {
		t.Errorf("group log = %+v, want one entry at 1", got)
	} else {
		checkMessage(t, got[0].Message, m)
	}
	for _, d := range []string{"a", "b", "c"} {
		e.checkOwed(d, m.ID)
		if got := e.read(dev(d), 0, 10); len(got) != 0 {
			t.Errorf("device %s's own log holds %d entries after a group publish, want 0", d, len(got))
		}
	}
}

// testPublishEmptyGroup: a message to a group without members is stored
// with no deliveries.
func testPublishEmptyGroup(t *testing.T, e *env) {
	m := e.msg(group("nobody"))
	e.publishOne(m, 1, 0)
	st := e.message(m.ID)
	checkMessage(t, &st.Message, m)
	e.checkDeliveries(m.ID)
}

// testPublishBatch: one call with many messages to several targets numbers
// each log from 1 in call order.
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
	next := map[tether.Target]uint64{}
	for i, r := range res {
		next[msgs[i].Target]++
		want := tether.PublishResult{ID: msgs[i].ID, Seq: next[msgs[i].Target], Recipients: 1}
		if msgs[i].Target.Kind == tether.KindGroup {
			want.Recipients = 2
		}
		checkResult(t, msgs[i].ID, r, want)
	}
	e.checkOwed("a", wantA...)
	e.checkOwed("b", wantB...)
}

// testLogOrder: positions follow the order of the Publish calls, whatever
// the message ids; Read answers in position order.
func testLogOrder(t *testing.T, e *env) {
	m := make([]*tether.Message, 5)
	for i := range m {
		m[i] = e.msg(dev("d"))
	}
	e.publish(m[1], m[0])
	e.publish(m[3])
	e.publish(m[2], m[4])
	var got []string
	for i, en := range e.read(dev("d"), 0, 10) {
		if en.Seq != uint64(i+1) {
			t.Errorf("entry %d at position %d, want %d", i, en.Seq, i+1)
		}
		got = append(got, en.Message.ID)
	}
	if want := []string{m[1].ID, m[0].ID, m[3].ID, m[2].ID, m[4].ID}; !slices.Equal(got, want) {
		t.Errorf("log of d = %q, want %q (the order of the calls)", got, want)
	}
}

// testRead: After is exclusive, Limit is exact, several requests are
// answered in order, an unknown log is empty.
func testRead(t *testing.T, e *env) {
	id := e.publishTo(dev("d"), 5)
	other := e.publishTo(dev("e"), 1)
	pages := []struct {
		after uint64
		limit int
		want  []string
	}{
		{0, 2, id[0:2]}, {2, 2, id[2:4]}, {4, 2, id[4:5]}, {5, 2, nil}, {0, 10, id}, {3, 1, id[3:4]},
	}
	for _, p := range pages {
		var got []string
		for _, en := range e.read(dev("d"), p.after, p.limit) {
			got = append(got, en.Message.ID)
		}
		if !slices.Equal(got, p.want) {
			t.Errorf("Read(d after %d, limit %d) = %q, want %q", p.after, p.limit, got, p.want)
		}
	}
	res, err := e.s.Read(e.ctx, []tether.ReadRequest{
		{Source: dev("e"), Limit: 5}, {Source: group("none"), Limit: 5}, {Source: dev("d"), After: 4, Limit: 5},
	})
	if err != nil {
		t.Fatalf("Read of three logs: %v", err)
	}
	if len(res) != 3 || len(res[0]) != 1 || res[0][0].Message.ID != other[0] || len(res[1]) != 0 ||
		len(res[2]) != 1 || res[2][0].Message.ID != id[4] {
		t.Errorf("Read of three logs = %+v", res)
	}
}

// testRetriedID: publishing a stored id again for the same target is a
// duplicate of itself; for another target it is EInvalid.
func testRetriedID(t *testing.T, e *env) {
	m := e.msg(dev("d"))
	e.publishOne(m, 1, 1)
	again := *m
	checkResult(t, "retried id", e.publish(&again)[0], tether.PublishResult{ID: m.ID, Seq: 1, Recipients: 1, Duplicate: true})
	other := *m
	other.Target = dev("e")
	if _, err := e.s.Publish(e.ctx, []*tether.Message{&other}); tether.ErrorCode(err) != tether.EInvalid {
		t.Errorf("id reused for another target: error %v, want EInvalid", err)
	}
	if got := e.read(dev("d"), 0, 10); len(got) != 1 {
		t.Errorf("log of d holds %d entries, want 1", len(got))
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
	e.publishOne(m1, 1, 1)
	m2 := withClient(dev("d"), "k1", time.Minute)
	checkResult(t, "same client id, same device", e.publish(m2)[0],
		tether.PublishResult{ID: m1.ID, Seq: 1, Recipients: 1, Duplicate: true})
	e.checkNotFound(m2.ID)

	e.publishOne(withClient(dev("e"), "k1", time.Minute), 1, 1)
	m4 := withClient(group("g"), "k1", time.Minute)
	e.publishOne(m4, 1, 2)
	checkResult(t, "same client id, same group", e.publish(withClient(group("g"), "k1", 2*time.Minute))[0],
		tether.PublishResult{ID: m4.ID, Seq: 1, Recipients: 2, Duplicate: true})

	m6, m7, m8 := withClient(dev("d"), "k2", 0), withClient(dev("d"), "k2", 0), withClient(dev("d"), "", 0)
	m9 := withClient(dev("d"), "", 0)
	res := e.publish(m6, m7, m8, m9)
	checkResult(t, "first of a call", res[0], tether.PublishResult{ID: m6.ID, Seq: 2, Recipients: 1})
	checkResult(t, "duplicate within a call", res[1], tether.PublishResult{ID: m6.ID, Seq: 2, Recipients: 1, Duplicate: true})
	checkResult(t, "no client id", res[2], tether.PublishResult{ID: m8.ID, Seq: 3, Recipients: 1})
	checkResult(t, "no client id again", res[3], tether.PublishResult{ID: m9.ID, Seq: 4, Recipients: 1})
	e.checkOwed("d", m1.ID, m6.ID, m8.ID, m9.ID)
	e.checkOwed("a", m4.ID)
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
	e.publishOne(m1, 1, 1)
	checkResult(t, "before expiry", e.publish(at(59 * time.Minute))[0],
		tether.PublishResult{ID: m1.ID, Seq: 1, Recipients: 1, Duplicate: true})
	m3 := at(time.Hour) // m1 expired at exactly this instant
	e.publishOne(m3, 2, 1)
	checkResult(t, "duplicate of the new one", e.publish(at(61 * time.Minute))[0],
		tether.PublishResult{ID: m3.ID, Seq: 2, Recipients: 1, Duplicate: true})

	// Purge m1 (expired at t0+1h); the key now belongs to m3.
	e.checkExpire(t0.Add(90*time.Minute), t0.Add(90*time.Minute), 100, 1, false)
	e.checkNotFound(m1.ID)
	checkResult(t, "after purging the old one", e.publish(at(62 * time.Minute))[0],
		tether.PublishResult{ID: m3.ID, Seq: 2, Recipients: 1, Duplicate: true})
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

// testInvalidArguments: malformed ids and limits are EInvalid errors.
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
		{"Cursors(bad device)", func() error { _, err := e.s.Cursors(e.ctx, []string{"d", "bad id"}); return err }},
		{"Read(bad source)", func() error {
			_, err := e.s.Read(e.ctx, []tether.ReadRequest{{Source: tether.Target{Kind: "shop", ID: "s"}, Limit: 1}})
			return err
		}},
		{"Read(limit 0)", func() error { _, err := e.s.Read(e.ctx, []tether.ReadRequest{{Source: dev("d")}}); return err }},
		{"Commit(bad device)", func() error { _, err := e.s.Commit(e.ctx, []tether.Change{{Device: "bad id"}}); return err }},
		{"Expire(limit 0)", func() error { _, _, err := e.s.Expire(e.ctx, t0, t0, 0); return err }},
	}
	for _, c := range calls {
		if err := c.call(); tether.ErrorCode(err) != tether.EInvalid {
			t.Errorf("%s: error %v (code %q), want code %q", c.name, err, tether.ErrorCode(err), tether.EInvalid)
		}
	}
}
