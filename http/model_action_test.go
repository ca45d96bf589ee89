package http_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"pgregory.net/rapid"
)

// ---- actions

// receive reads what a live connection gets within a short time.
func (m *model) receive() {
	d := m.drawLive("receive")
	wait := time.Duration(rapid.IntRange(0, 80).Draw(m.t, "receive ms")) * time.Millisecond
	select {
	case <-d.conn.arrived:
	case <-time.After(wait):
	}
	m.pumpConn(d.conn, false)
}

// publish sends one message to a device or a group, with a client id from a
// small set when keyed, so that repeats (duplicates) are common.
func (m *model) publish(keyed bool) {
	m.publishReq(m.drawRequest(keyed))
}

// publishReq publishes req: it must be accepted, or refused with 503 in a
// store outage (see refusedPublish).
func (m *model) publishReq(req map[string]any) {
	var out publishOut
	fails, start := m.fs.Failures(), time.Now()
	code, hdr := m.call("POST", "/v1/messages", req, &out)
	if code == http.StatusServiceUnavailable {
		m.refusedPublish("publish", []map[string]any{req}, hdr, out.Error, fails, time.Since(start))
		return
	}
	if m.frozen {
		m.t.Fatalf("publish %v: status %d while the store was frozen, want 503", req, code)
	}
	m.accept(req, code, out)
}

// batch publishes one to three messages in one request.
func (m *model) batch() {
	n := rapid.IntRange(1, 3).Draw(m.t, "batch size")
	reqs := make([]map[string]any, n)
	for i := range reqs {
		reqs[i] = m.drawRequest(rapid.Bool().Draw(m.t, "keyed"))
	}
	var out struct {
		Results []publishOut
		Error   *apiError
	}
	fails, start := m.fs.Failures(), time.Now()
	code, hdr := m.call("POST", "/v1/messages/batch", map[string]any{"messages": reqs}, &out)
	if code == http.StatusServiceUnavailable {
		m.refusedPublish(fmt.Sprintf("batch of %d", n), reqs, hdr, out.Error, fails, time.Since(start))
		return
	}
	if m.frozen || code != 200 || len(out.Results) != n {
		m.t.Fatalf("batch of %d: status %d, %d results (store frozen: %v)", n, code, len(out.Results), m.frozen)
	}
	for i, r := range out.Results {
		code := 202
		if r.Duplicate {
			code = 200
		}
		m.accept(reqs[i], code, r)
	}
}

type publishOut struct {
	ID         string    `json:"id"`
	Recipients *int      `json:"recipients"`
	Duplicate  bool      `json:"duplicate"`
	Error      *apiError `json:"error"`
}

// apiError is the error of an API answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (m *model) drawRequest(keyed bool) map[string]any {
	if keyed && len(m.idem) > 0 && rapid.Bool().Draw(m.t, "repeat") {
		k := rapid.SampledFrom(sortedKeys(m.idem)).Draw(m.t, "repeated")
		target, key, _ := strings.Cut(k, " ")
		m.data++
		return map[string]any{"target": target, "data": map[string]int{"n": m.data}, "id": key}
	}
	target := "device:" + rapid.SampledFrom(mDevices).Draw(m.t, "device")
	if rapid.IntRange(0, 2).Draw(m.t, "to group") == 0 {
		target = "group:" + rapid.SampledFrom(mGroups).Draw(m.t, "group")
	}
	m.data++
	req := map[string]any{"target": target, "data": map[string]int{"n": m.data}}
	if keyed {
		key := rapid.SampledFrom([]string{"k0", "k1", "k2"}).Draw(m.t, "client id")
		// Only a retry (same data) reuses the client id of a message in
		// limbo: whether one of two stored it could not be told.
		if m.limboKeyed(target, key) == nil {
			req["id"] = key
		}
	}
	return req
}

// dataOf returns the JSON of req's data as the node sends it.
func dataOf(req map[string]any) string {
	data, _ := json.Marshal(req["data"])
	return string(data)
}

// accept checks a publish answer against the model and records the
// message: a client id already used for the target is a duplicate (200,
// the original id and recipients); anything else is new (202), addressed
// to the target's members now.
func (m *model) accept(req map[string]any, code int, out publishOut) {
	target := req["target"].(string)
	key, _ := req["id"].(string)
	if out.Error != nil || out.Recipients == nil {
		m.t.Fatalf("publish %v: status %d, answer %+v", req, code, out)
	}
	if key != "" && m.idem[target+" "+key] == nil && m.resolveKeyed(target, key, code, out) {
		return
	}
	if orig := m.idem[target+" "+key]; key != "" && orig != nil {
		m.st.duplicates.Add(1)
		if code != 200 || !out.Duplicate || out.ID != orig.id || *out.Recipients != len(orig.recipients) {
			m.t.Fatalf("repeat of %s %q: status %d %+v, want 200 duplicate of %s with %d recipients", target, key, code, out, orig.id, len(orig.recipients))
		}
		m.t.Logf("publish %s key %q: duplicate of %s", target, key, orig.id)
		return
	}
	rcpt := m.recipientsOf(target)
	if code != 202 || out.Duplicate || out.ID == "" || *out.Recipients != len(rcpt) || m.byID[out.ID] != nil {
		m.t.Fatalf("publish %v: status %d %+v, want 202 with %d recipients %v and a new id", req, code, out, len(rcpt), keys(rcpt))
	}
	data := dataOf(req)
	m.seq++
	mm := &mmsg{id: out.ID, target: target, data: data, seq: m.seq, recipients: rcpt}
	m.msgs = append(m.msgs, mm)
	m.byID[mm.id] = mm
	if key != "" {
		m.idem[target+" "+key] = mm
	}
	for d := range rcpt {
		m.devices[d].ds[mm.id] = &mdel{msg: mm, attempts: map[int]bool{}}
	}
	m.st.published.Add(1)
	m.t.Logf("publish #%d %s key %q data %s: %s to %v", mm.seq, target, key, data, mm.id, keys(rcpt))
}

// member adds or removes a device through the API.
func (m *model) member() {
	g := rapid.SampledFrom(mGroups).Draw(m.t, "group")
	d := rapid.SampledFrom(mDevices).Draw(m.t, "device")
	method := rapid.SampledFrom([]string{"PUT", "DELETE"}).Draw(m.t, "method")
	if code := m.api(method, "/v1/groups/"+g+"/devices/"+d, nil, nil); code != 204 {
		m.t.Fatalf("%s %s in %s: status %d, want 204", method, d, g, code)
	}
	if method == "PUT" {
		m.members[g][d] = true
	} else {
		delete(m.members[g], d)
	}
	m.t.Logf("%s %s in %s", method, d, g)
}

// ack acks some received ids on a live connection, sometimes with ids of
// other devices, unknown ids and repeats; then it does nothing more, or
// waits for a pong (the server processed the ack), or also waits for the
// store to show the acks.
func (m *model) ack() {
	m.ackOn(m.drawLive("ack"))
}

// ackOn is ack on d's live connection.
func (m *model) ackOn(d *mdev) {
	c := d.conn
	var cand, again []string
	for _, id := range sortedKeys(d.ds) {
		del := d.ds[id]
		switch {
		case del.received > 0 && !del.ackSent:
			cand = append(cand, id)
		case del.ackSent:
			again = append(again, id)
		}
	}
	all := rapid.Bool().Draw(m.t, "ack all")
	var ids []string
	for _, id := range cand {
		if all || rapid.Bool().Draw(m.t, "ack it") {
			ids = append(ids, id)
		}
	}
	if len(again) > 0 && rapid.IntRange(0, 3).Draw(m.t, "re-ack") == 0 {
		ids = append(ids, rapid.SampledFrom(again).Draw(m.t, "re-acked"))
	}
	extra := append([]string{}, ids...) // never null: an ack needs "ids"
	switch rapid.IntRange(0, 5).Draw(m.t, "foreign") {
	case 0: // an id unknown to the node
		extra = append(extra, "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
	case 1: // a message of another device only
		for _, mm := range m.msgs {
			if !mm.recipients[d.name] {
				extra = append(extra, mm.id)
				break
			}
		}
	}
	modes := []string{"none", "barrier", "stored"}
	if m.frozen { // GET cannot show it stored
		modes = modes[:2]
	}
	mode := rapid.SampledFrom(modes).Draw(m.t, "settle")
	m.t.Logf("ack %s on connection %d: %v (sent %v), settle %s", d.name, c.id, ids, extra, mode)
	m.send(c, map[string]any{"type": "ack", "ids": extra})
	m.acked(c, ids)
	if mode == "none" {
		return
	}
	m.barrier(c, ids)
	if mode == "stored" {
		for _, id := range ids {
			m.awaitAcked(d, id, mWait)
		}
	}
}

// bounce acks everything a live device received, waits until the server
// processed the acks (pong), and reconnects at once: by takeover, or after
// a client-side close of any kind. The acked messages should not come back
// on the new connection (-model.strict; see checkMessage).
func (m *model) bounce() {
	d := m.drawLive("bounce")
	c := d.conn
	m.t.Logf("bounce %s: ack all on connection %d and reconnect", d.name, c.id)
	m.ackProcessed(d)
	if !rapid.Bool().Draw(m.t, "takeover") {
		m.disconnectConn(c, m.drawHow())
	}
	m.connect(d, nil)
}

// ackProcessed acks everything d received and never acked on its live
// connection and waits until the server processed the ack (pong).
func (m *model) ackProcessed(d *mdev) {
	c := d.conn
	ids := []string{}
	for _, id := range sortedKeys(d.ds) {
		if del := d.ds[id]; del.received > 0 && !del.ackSent {
			ids = append(ids, id)
		}
	}
	m.t.Logf("ack %s on connection %d: %v, settle barrier", d.name, c.id, ids)
	m.send(c, map[string]any{"type": "ack", "ids": ids})
	m.acked(c, ids)
	m.barrier(c, ids)
}

// acked records that the client acked ids on c. An ack sent in a store
// outage is checked once the outage is over (see checkOutageAcks).
func (m *model) acked(c *mconn, ids []string) {
	outage := m.outage()
	for _, id := range ids {
		c.dev.ds[id].ackSent = true
		c.ackedHere[id] = true
		if outage {
			m.outageAcks = append(m.outageAcks, outageAck{c, id})
		}
	}
}

// outageAck is an ack sent on a connection in a store outage.
type outageAck struct {
	c  *mconn
	id string
}

// checkOutageAcks requires the acks sent in a store outage on a connection
// still open to be stored once the sessions' retries after the outage are
// due: a session keeps the acks it could not store and retries them.
func (m *model) checkOutageAcks() {
	if len(m.outageAcks) == 0 || m.outage() {
		return
	}
	for _, a := range m.outageAcks {
		d := a.c.dev
		if d.conn == a.c && !a.c.ended() && d.ds[a.id].storedEp == 0 {
			m.t.Logf("%s: ack of %s sent in the store outage on connection %d, still open: stored?", d.name, a.id, a.c.id)
			m.awaitAcked(d, a.id, mWait)
			m.st.outageAcks.Add(1)
		}
	}
	m.outageAcks = nil
}

// barrier sends an application ping and checks frames up to its pong:
// the server processed every frame sent before, so ids was read on c (and
// is committed unless the node crashes first).
func (m *model) barrier(c *mconn, ids []string) {
	outage, fails := m.outage(), m.fs.Failures()
	before := c.pongs
	m.send(c, map[string]any{"type": "ping"})
	deadline := time.Now().Add(mWait)
	for c.pongs == before {
		if m.pumpConn(c, true) {
			break
		}
		if c.ended() || time.Now().After(deadline) {
			m.t.Fatalf("%s: no pong on connection %d within %v (ended %v)", c.dev.name, c.id, mWait, c.ended())
		}
		select {
		case <-c.arrived:
		case <-time.After(20 * time.Millisecond):
		}
	}
	ep := m.tick()
	for _, id := range ids {
		del := c.dev.ds[id]
		del.processedOn, del.processedAt = c, c.lastPong
		if del.readEp == 0 {
			del.readEp, del.readFails, del.readOutage = ep, fails, outage || m.outage()
		}
	}
}

// deliveryState returns the state and attempts GET /v1/messages/{id}
// gives for device.
func (m *model) deliveryState(device, id string) (string, int) {
	var out struct {
		Deliveries []struct {
			Device   string `json:"device"`
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		} `json:"deliveries"`
	}
	if code := m.api("GET", "/v1/messages/"+id, nil, &out); code != 200 {
		m.t.Fatalf("GET message %s: status %d", id, code)
	}
	for _, dl := range out.Deliveries {
		if dl.Device == device {
			return dl.State, dl.Attempts
		}
	}
	return "", 0
}

// awaitAcked waits until the store shows d's delivery of id acked.
func (m *model) awaitAcked(d *mdev, id string, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for {
		state, _ := m.deliveryState(d.name, id)
		if state == "acked" {
			d.ds[id].durable(m.tick(), "GET showed it acked")
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: message %s is %q %v after its ack was processed, want acked", d.name, id, state, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// redelivery picks a delivery received on a live connection and never
// acked, and requires it sent again on that connection within its backoff
// (ack timeout × 2^(attempt-1)) plus a generous margin.
func (m *model) redelivery() {
	d := m.drawLive("redelivery")
	c := d.conn
	var ids []string
	for _, id := range sortedKeys(c.lastAttempt) {
		if !d.ds[id].ackSent && c.lastAttempt[id] <= 3 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	id := rapid.SampledFrom(ids).Draw(m.t, "awaited")
	n := c.lastAttempt[id]
	backoff := mAckTimeout << (n - 1)
	m.t.Logf("await redelivery of %s to %s after attempt %d on connection %d", id, d.name, n, c.id)
	limit := backoff + 2500*time.Millisecond
	// After a failed store call the session waits a while before it sends.
	deadline := c.recvAt[id].Add(limit)
	if after := m.settled().Add(limit); after.After(deadline) {
		deadline = after
	}
	for c.lastAttempt[id] == n {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: message %s not redelivered on connection %d within %v of attempt %d (backoff %v)", d.name, id, c.id, limit, n, backoff)
		}
		select {
		case <-c.arrived:
		case <-time.After(20 * time.Millisecond):
		}
		m.pumpConn(c, false)
		if c.ended() {
			m.pump()
		}
	}
}

// drain acks everything on d's live connection until the store shows every
// delivery addressed to d acked: whatever is unacked must arrive. When a
// publish refused with 503 may have reached d, the store must also show
// nothing pending for d.
func (m *model) drain(d *mdev) {
	c := d.conn
	m.t.Logf("drain %s on connection %d", d.name, c.id)
	deadline := time.Now().Add(2*mWait + time.Duration(len(d.ds))*50*time.Millisecond)
	progress := time.Now()
	for {
		if n := c.next; m.pumpConn(c, false) || c.next != n {
			progress = time.Now()
		}
		var ids []string
		for _, id := range sortedKeys(c.lastAttempt) {
			if !c.ackedHere[id] && d.ds[id].storedEp == 0 {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			m.send(c, map[string]any{"type": "ack", "ids": ids})
			m.acked(c, ids)
		}
		missing := m.missing(d)
		if len(missing) == 0 && (!m.limboFor(d) || m.pending(d) == 0) {
			return
		}
		if m.unwoken(d, missing, progress) {
			c, progress = d.conn, time.Now()
			continue
		}
		if c.ended() {
			m.pump()
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: lost: after draining connection %d, the store still has %s (%d pending)", d.name, c.id, m.describe(d, missing), m.pending(d))
		}
		select {
		case <-c.arrived:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// missing returns the deliveries to d not known acked in the store.
func (m *model) missing(d *mdev) []string {
	var missing []string
	for _, id := range sortedKeys(d.ds) {
		del := d.ds[id]
		if del.storedEp > 0 {
			continue
		}
		if del.ackSent {
			if state, _ := m.deliveryState(d.name, id); state == "acked" {
				del.durable(m.tick(), "GET showed it acked")
				continue
			}
		}
		missing = append(missing, id)
	}
	return missing
}

// pending returns how many deliveries the store has pending for d.
func (m *model) pending(d *mdev) int {
	var dev struct {
		Pending int `json:"pending"`
	}
	if code := m.api("GET", "/v1/devices/"+d.name, nil, &dev); code != 200 {
		m.t.Fatalf("GET device %s: status %d", d.name, code)
	}
	return dev.Pending
}

// unwoken reconnects d, and reports it, when what d still misses was all
// stored without waking its session (see adopt), has not come on its live
// connection, and nothing came for a second after the store's last
// failure was retried: a session reads the store only when told something
// is there, so it comes on the next connection. For a message a repeat
// accepted (200, duplicate), that fails with -model.strict.
func (m *model) unwoken(d *mdev, missing []string, progress time.Time) bool {
	if time.Since(progress) < time.Second || time.Since(m.settled()) < time.Second {
		return false
	}
	var accepted []string
	for _, id := range missing {
		del := d.ds[id]
		if !del.msg.quiet || d.conn.lastAttempt[id] > 0 {
			return false
		}
		if del.msg.accepted {
			accepted = append(accepted, id)
		}
	}
	if *modelStrict && len(accepted) > 0 {
		m.t.Fatalf("%s: connection %d never got %s: accepted by a repeat (200, duplicate), but the node woke no session", d.name, d.conn.id, m.describe(d, accepted))
	}
	m.st.quiet.Add(1)
	m.t.Logf("%s: reconnect: connection %d was never woken for %v or a refused publish", d.name, d.conn.id, missing)
	m.connect(d, nil)
	return true
}

func (m *model) describe(d *mdev, ids []string) string {
	var b strings.Builder
	for _, id := range ids {
		del := d.ds[id]
		state, attempts := m.deliveryState(d.name, id)
		fmt.Fprintf(&b, "\n  #%d %s (%s): store %q attempts %d; received %d times, attempts %v, ack sent %v, acked on the live connection %v",
			del.msg.seq, id, del.msg.target, state, attempts, del.received, sortedKeys(del.attempts), del.ackSent, d.conn != nil && d.conn.ackedHere[id])
	}
	return b.String()
}
