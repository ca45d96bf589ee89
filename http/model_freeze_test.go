package http_test

// The store freeze of TestModelDelivery: the hub's store is the bolt store
// behind a nodetest.Freezer, which the freeze action stops for a while, and
// the model's view of what a failed publish may have left behind.

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"pgregory.net/rapid"

	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/token"
)

// mStoreTimeout is the hub's StoreTimeout in the model: a frozen call fails
// by its deadline this soon.
const mStoreTimeout = 200 * time.Millisecond

// mRetryBackoff bounds how long the hub's store loops wait before they
// try a failed call again (at most a second), and how long its health
// check keeps the store marked down after it answers again (a quarter of a
// second), plus a margin for the scheduler.
const mRetryBackoff = time.Second + 300*time.Millisecond

// outage reports whether a session may hold acks it could not store: the
// store is frozen, or a call failed less than a session's retry backoff
// ago. Until then the server may answer a ping before it stored the acks
// read before it (a session backing off writes its control frames without
// touching the store).
func (m *model) outage() bool {
	return m.frozen || time.Since(m.fs.LastFailure()) < mRetryBackoff
}

// settled returns when the sessions' retries after the last failed store
// call are due, so that what they hold has been stored or sent again.
func (m *model) settled() time.Time {
	return m.fs.LastFailure().Add(mRetryBackoff)
}

// freeze freezes the store (stalled or with its answers lost), runs a few
// actions meanwhile and thaws it; then, as a backend told to retry, it
// publishes again some of the keyed messages refused, and it may wait for
// the sessions' retries to check the acks sent meanwhile. Meanwhile publishes
// and connects must fail fast with 503 and Retry-After (SPEC section 2
// rule 5, section 6), no connection may end unasked, and one the client
// closes must still be closed by the server within about a second (rule 3).
func (m *model) freeze() {
	lose := rapid.Bool().Draw(m.t, "answers lost")
	n := rapid.IntRange(0, 3).Draw(m.t, "frozen actions")
	m.t.Logf("freeze the store (answers lost: %v)", lose)
	m.st.freezes.Add(1)
	m.fs.Freeze(lose)
	m.frozen = true
	m.freezes++
	start := time.Now()
	for i := 0; i < n; i++ {
		a := rapid.SampledFrom([]string{
			"receive", "publish", "ack", "ack", "sleep", "connect", "disconnect", "publishKey", "batch",
		}).Draw(m.t, fmt.Sprintf("frozen action %d", i))
		m.pump()
		switch a {
		case "ack": // one with something to ack, if any
			if ds := m.ackable(); len(ds) > 0 {
				m.ackOn(m.devices[rapid.SampledFrom(ds).Draw(m.t, "ack")])
			}
		case "receive", "disconnect":
			if m.anyLive() {
				m.step1(a)
			}
		case "connect":
			m.connectRefused(m.drawDevice("connect"))
		default:
			m.step1(a)
		}
		m.pump()
	}
	m.fs.Unfreeze()
	m.frozen = false
	m.st.frozenNS.Add(int64(time.Since(start)))
	m.t.Logf("thaw")
	for _, l := range slices.Clone(m.limbo) {
		if l.freeze == m.freezes && l.key != "" && rapid.Bool().Draw(m.t, "retry") {
			m.retry(l)
		}
	}
	if len(m.outageAcks) > 0 && rapid.Bool().Draw(m.t, "await the retries") {
		time.Sleep(time.Until(m.settled()))
		m.pump()
		m.checkOutageAcks()
	}
}

// ackable returns the devices with a live connection and deliveries
// received and not acked.
func (m *model) ackable() []string {
	var ds []string
	for _, name := range mDevices {
		d := m.devices[name]
		for _, del := range d.ds {
			if d.conn != nil && del.received > 0 && !del.ackSent {
				ds = append(ds, name)
				break
			}
		}
	}
	return ds
}

// connectRefused dials d during a freeze with a token naming some of the
// groups d is already in (recording them again changes nothing, whatever the
// store did with it): the node cannot record them before the welcome, so it
// must refuse with 503 and Retry-After.
func (m *model) connectRefused(d *mdev) {
	var groups []string
	for _, g := range mGroups {
		if m.members[g][d.name] && rapid.Bool().Draw(m.t, "name "+g) {
			groups = append(groups, g)
		}
	}
	m.t.Logf("connect %s groups %v while frozen", d.name, groups)
	start := time.Now()
	dev, status, hdr, err := m.dial(d.name, groups)
	if err == nil {
		dev.Conn.Close()
		m.t.Fatalf("%s: connected while the store was frozen, want 503", d.name)
	}
	m.checkRefusal("connect "+d.name, status, hdr, time.Since(start))
}

// dial opens a WebSocket connection of device with a token naming groups;
// a refused upgrade returns its status and headers.
func (m *model) dial(device string, groups []string) (*nodetest.Device, int, http.Header, error) {
	tok, err := token.Sign([]byte(nodetest.TokenSecret), token.Claims{Device: device, Groups: groups, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		m.t.Fatal(err)
	}
	dev, err := nodetest.Dial(m.node.WSURL+"/v1/connect", tok, nil, mWait)
	if de, ok := err.(*nodetest.DialError); ok {
		return nil, de.Status, de.Header, err
	}
	if err != nil {
		return nil, 0, nil, err
	}
	return dev, http.StatusSwitchingProtocols, nil, nil
}

// checkRefusal checks an answer to a request the store could not serve:
// 503 with Retry-After, within about the store timeout while frozen.
func (m *model) checkRefusal(what string, status int, hdr http.Header, took time.Duration) {
	m.st.refused.Add(1)
	ra, err := strconv.Atoi(hdr.Get("Retry-After"))
	if status != http.StatusServiceUnavailable || err != nil || ra < 1 {
		m.t.Fatalf("%s: status %d, Retry-After %q; want 503 with Retry-After in seconds", what, status, hdr.Get("Retry-After"))
	}
	if limit := mStoreTimeout + 2*time.Second; m.frozen && took > limit {
		m.t.Fatalf("%s: refused after %v, want within %v (store timeout %v)", what, took, limit, mStoreTimeout)
	}
}

// ---- publishes that answered 503

// mlimbo is a message whose publish answered 503: the store may hold it or
// not. It may arrive, never must; finish still wants every device's store
// empty, so if it is there it must be delivered. Its publish order is that
// of the request, unless a retry refused too made it uncertain.
type mlimbo struct {
	freeze     int // the model's freeze that refused it; 0: none
	req        map[string]any
	target     string
	key        string
	data       string
	seq        int
	unordered  bool
	recipients map[string]bool
}

// refusedPublish checks a 503 answer (error e) to a publish of reqs and
// keeps them in limbo. Outside a freeze a 503 is allowed only when a store
// call failed or answered late meanwhile (a slow disk) or shortly before
// (the node refuses at once while its health check still finds the store
// down), or as overloaded: a machine starved of CPU can hold the node's
// work past a quarter of --max-delivery-lag (counted in the summary).
func (m *model) refusedPublish(what string, reqs []map[string]any, hdr http.Header, e *apiError, fails int64, took time.Duration) {
	if !m.frozen && !m.outage() && m.fs.Failures() == fails {
		if e == nil || e.Code != "overloaded" {
			m.t.Fatalf("%s: 503 %+v while the store answered every call", what, e)
		}
		m.st.overloaded.Add(1)
		m.t.Logf("%s: 503 overloaded (%s) while the store answered every call", what, e.Message)
	}
	m.checkRefusal(what, http.StatusServiceUnavailable, hdr, took)
	for _, req := range reqs {
		m.seq++
		target := req["target"].(string)
		key, _ := req["id"].(string)
		if key != "" && m.idem[target+" "+key] != nil {
			continue // a repeat of an accepted message: nothing new to store
		}
		data := dataOf(req)
		if l := m.limboKeyed(target, key); l != nil {
			if l.data == data { // a retry refused again: stored then or now
				l.seq, l.unordered = m.seq, true
			}
			continue // else a later one of a batch: a duplicate if stored
		}
		freeze := 0
		if m.frozen {
			freeze = m.freezes
		}
		l := &mlimbo{freeze: freeze, req: req, target: target, key: key, data: data, seq: m.seq, recipients: m.recipientsOf(target)}
		m.limbo = append(m.limbo, l)
		m.st.limbo.Add(1)
		m.t.Logf("publish %s key %q data %s refused: in limbo to %v", target, key, data, keys(l.recipients))
	}
}

// limboKeyed returns the message in limbo published to target with client
// id key, if any.
func (m *model) limboKeyed(target, key string) *mlimbo {
	for _, l := range m.limbo {
		if key != "" && l.target == target && l.key == key {
			return l
		}
	}
	return nil
}

// retry publishes l's request again, as a backend does after a 503: the
// answer tells whether the first publish was stored (200, duplicate) or
// not (202).
func (m *model) retry(l *mlimbo) {
	m.t.Logf("retry publish %s key %q data %s", l.target, l.key, l.data)
	m.publishReq(l.req)
}

// adopt makes l a message of the model with id: the store holds it. The
// hub woke nobody when it was stored (its publish failed, or a repeat found
// it), so live sessions may not fetch it (see drain).
func (m *model) adopt(l *mlimbo, id, how string) *mmsg {
	if m.byID[id] != nil {
		m.t.Fatalf("message %s (%s data %s, refused) has the id of message #%d", id, l.target, l.data, m.byID[id].seq)
	}
	m.limbo = slices.DeleteFunc(m.limbo, func(x *mlimbo) bool { return x == l })
	mm := &mmsg{id: id, target: l.target, data: l.data, seq: l.seq, recipients: l.recipients, unordered: l.unordered, quiet: true}
	m.msgs = append(m.msgs, mm)
	m.byID[id] = mm
	if l.key != "" {
		m.idem[l.target+" "+l.key] = mm
	}
	for d := range l.recipients {
		m.devices[d].ds[id] = &mdel{msg: mm, attempts: map[int]bool{}}
	}
	m.st.limboStored.Add(1)
	m.t.Logf("refused publish #%d %s data %s was stored: %s to %v (%s)", l.seq, l.target, l.data, id, keys(l.recipients), how)
	return mm
}

// adoptArrival finds the message in limbo that f, received by d, is.
func (m *model) adoptArrival(d *mdev, f nodetest.Frame) *mdel {
	for _, l := range m.limbo {
		if l.target == f.Target && l.data == string(f.Data) && l.recipients[d.name] {
			m.adopt(l, f.ID, "it reached "+d.name)
			return d.ds[f.ID]
		}
	}
	return nil
}

// resolveKeyed settles the message in limbo with target and key, if any,
// by the answer to a later publish with the same client id: 200 duplicate
// names the stored message, 202 says it was not stored. It reports
// whether the answer was the limbo message's.
func (m *model) resolveKeyed(target, key string, code int, out publishOut) bool {
	l := m.limboKeyed(target, key)
	if l == nil {
		return false
	}
	if code == http.StatusOK && out.Duplicate {
		mm := m.adopt(l, out.ID, "a repeat was its duplicate")
		mm.accepted = true
		m.st.duplicates.Add(1)
		if *out.Recipients != len(l.recipients) {
			m.t.Fatalf("repeat of %s %q: duplicate of %s with %d recipients, want %d %v", target, key, out.ID, *out.Recipients, len(l.recipients), keys(l.recipients))
		}
		return true
	}
	m.limbo = slices.DeleteFunc(m.limbo, func(x *mlimbo) bool { return x == l })
	m.st.limboAbsent.Add(1)
	m.t.Logf("refused publish #%d %s key %q was not stored: a repeat was new", l.seq, target, key)
	return false
}

// limboFor reports whether a message in limbo is addressed to d.
func (m *model) limboFor(d *mdev) bool {
	for _, l := range m.limbo {
		if l.recipients[d.name] {
			return true
		}
	}
	return false
}

// recipientsOf returns the devices target addresses now.
func (m *model) recipientsOf(target string) map[string]bool {
	rcpt := map[string]bool{}
	if name, ok := strings.CutPrefix(target, "device:"); ok {
		rcpt[name] = true
		return rcpt
	}
	for d := range m.members[strings.TrimPrefix(target, "group:")] {
		rcpt[d] = true
	}
	return rcpt
}
