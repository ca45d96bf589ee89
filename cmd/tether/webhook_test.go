package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherpush/tether/client"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/webhook"
)

// End-to-end tests of the event log and its webhook (SPEC section 11,
// issue 10) against real node processes: the receiver is an in-process
// HTTP server on loopback that verifies every batch with the SDK's
// client.WebhookHandler and records what arrives.

const hookSecret = "hook-secret"

// hookMode is how the receiver answers.
type hookMode int

const (
	hookOK   hookMode = iota // verify, record, 204 (after Config delay)
	hookFail                 // verify, 500: the receiver is down
	hookHang                 // accept the request, never answer
)

// hookArrival is one event as it arrived, duplicates included.
type hookArrival struct {
	client.Event
	path  string
	batch int
	at    time.Time
}

// hookReceiver is a webhook receiver on loopback recording events in
// arrival order, with duplicates counted by event id.
type hookReceiver struct {
	srv     *httptest.Server
	release chan struct{} // closed at cleanup: hanging requests end

	mu       sync.Mutex // guards following
	mode     hookMode
	delay    time.Duration // hookOK: how long to take after recording a batch
	arrivals []hookArrival
	count    map[string]int             // arrivals by event id
	paths    map[string]map[string]bool // the paths each event id arrived on
	raw      map[string]map[string]any  // each event's JSON object, as first received
	batches  int
	refused  int // requests the SDK refused: bad signature or body
	failed   int // requests answered 500 on purpose
	inside   int // requests being handled now (hanging or slow)
}

// startReceiver starts a receiver; it is closed at the end of the test.
func startReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	rc := &hookReceiver{release: make(chan struct{}), count: map[string]int{},
		paths: map[string]map[string]bool{}, raw: map[string]map[string]any{}}
	rc.srv = httptest.NewServer(rc)
	t.Cleanup(rc.srv.Close)
	t.Cleanup(func() { close(rc.release) }) // runs first: hanging handlers return
	return rc
}

// url is the webhook URL for path (which names the sending node).
func (rc *hookReceiver) url(path string) string { return rc.srv.URL + path }

func (rc *hookReceiver) set(mode hookMode, delay time.Duration) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.mode, rc.delay = mode, delay
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (rc *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	mode, delay := rc.mode, rc.delay
	rc.inside++
	rc.mu.Unlock()
	defer func() { rc.mu.Lock(); rc.inside--; rc.mu.Unlock() }()
	if mode == hookHang {
		select { // no answer until the sender gives up or the test ends
		case <-r.Context().Done():
		case <-rc.release:
		}
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	path := r.URL.Path
	h := &client.WebhookHandler{Secrets: [][]byte{[]byte(hookSecret)}, Handle: func(ctx context.Context, evs []client.Event) error {
		if mode == hookFail {
			return errors.New("the receiver is down")
		}
		rc.record(path, body, evs)
		select { // recorded but not answered yet: a kill now makes a duplicate
		case <-time.After(delay):
		case <-ctx.Done():
		case <-rc.release:
		}
		return nil
	}}
	sw := &statusWriter{ResponseWriter: w}
	h.ServeHTTP(sw, r)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case mode == hookFail && sw.code == http.StatusInternalServerError:
		rc.failed++
	case sw.code != http.StatusNoContent:
		rc.refused++
	}
}

// record notes a verified batch.
func (rc *hookReceiver) record(path string, body []byte, evs []client.Event) {
	var raw struct {
		Events []map[string]any `json:"events"`
	}
	_ = json.Unmarshal(body, &raw)
	now := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.batches++
	for i, e := range evs {
		rc.arrivals = append(rc.arrivals, hookArrival{Event: e, path: path, batch: rc.batches, at: now})
		rc.count[e.ID]++
		if rc.paths[e.ID] == nil {
			rc.paths[e.ID] = map[string]bool{}
		}
		rc.paths[e.ID][path] = true
		if _, ok := rc.raw[e.ID]; !ok && i < len(raw.Events) {
			rc.raw[e.ID] = raw.Events[i]
		}
	}
}

// snapshot returns a copy of the arrivals.
func (rc *hookReceiver) snapshot() []hookArrival {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.arrivals)
}

// has reports whether every id arrived.
func (rc *hookReceiver) has(ids []string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		if rc.count[id] == 0 {
			return false
		}
	}
	return true
}

// waitAll waits until every event of log arrived.
func (rc *hookReceiver) waitAll(t *testing.T, timeout time.Duration, log []client.Event) {
	t.Helper()
	ids := eventIDs(log)
	deadline := time.Now().Add(timeout)
	for !rc.has(ids) {
		if time.Now().After(deadline) {
			rc.mu.Lock()
			var missing []string
			for _, id := range ids {
				if rc.count[id] == 0 {
					missing = append(missing, id)
				}
			}
			rc.mu.Unlock()
			t.Fatalf("after %v, %d of the %d events of the log never reached the receiver, first %v", timeout, len(missing), len(ids), missing[:min(5, len(missing))])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// find returns the first arrival matching match, and whether there is one.
func (rc *hookReceiver) find(match func(client.Event) bool) (hookArrival, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, a := range rc.arrivals {
		if match(a.Event) {
			return a, true
		}
	}
	return hookArrival{}, false
}

// checkLog checks what arrived against the log: nothing missing, nothing
// invented, each batch and the first arrivals in log order (ids
// ascending). It returns the number of duplicate arrivals.
func (rc *hookReceiver) checkLog(t *testing.T, log []client.Event) int {
	t.Helper()
	arr := rc.snapshot()
	inLog := map[string]bool{}
	for _, e := range log {
		inLog[e.ID] = true
	}
	seen := map[string]bool{}
	var first []string
	dups := 0
	for i, a := range arr {
		if !inLog[a.ID] {
			t.Errorf("event %s (%s) arrived but is not in the log", a.ID, a.Type)
		}
		if i > 0 && arr[i-1].batch == a.batch && arr[i-1].ID >= a.ID {
			t.Errorf("batch %d is out of log order: %s after %s", a.batch, a.ID, arr[i-1].ID)
		}
		if seen[a.ID] {
			dups++
			continue
		}
		seen[a.ID] = true
		first = append(first, a.ID)
	}
	if !slices.IsSorted(first) {
		for i := 1; i < len(first); i++ {
			if first[i] < first[i-1] {
				t.Errorf("event %s first arrived after %s: not in log order", first[i], first[i-1])
				break
			}
		}
	}
	for _, e := range log {
		if !seen[e.ID] {
			t.Errorf("event %s (%s %s) of the log never arrived", e.ID, e.Type, e.Device)
		}
	}
	rc.mu.Lock()
	refused := rc.refused
	rc.mu.Unlock()
	if refused > 0 {
		t.Errorf("the SDK refused %d webhook requests (signature or body)", refused)
	}
	return dups
}

// logDuplicates logs the events that arrived more than once.
func (rc *hookReceiver) logDuplicates(t *testing.T) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var ids []string
	for id, n := range rc.count {
		if n > 1 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		t.Logf("no duplicates in %d batches", rc.batches)
		return
	}
	t.Logf("%d events arrived more than once (%d batches), from %s to %s", len(ids), rc.batches, ids[0], ids[len(ids)-1])
	for _, id := range ids[:min(5, len(ids))] {
		t.Logf("  %s arrived %d times", id, rc.count[id])
	}
}

func eventIDs(evs []client.Event) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// apiClient is the tests' HTTP client; its idle connections are closed
// at the end of each test (goleak).
var apiClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}

// api makes an authorized request to the node and decodes the answer
// into out (when not nil); it returns the status.
func (c *child) api(t *testing.T, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+c.addr+path, body)
	req.Header.Set("Authorization", "Bearer "+childKey)
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: status %d, decoding: %v", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}

// events is one GET /v1/events.
func (c *child) events(t *testing.T, after string, wait time.Duration) ([]client.Event, string) {
	t.Helper()
	evs, next, err := c.getEvents(after, wait)
	if err != nil {
		t.Fatal(err)
	}
	return evs, next
}

// getEvents is GET /v1/events?after=after&wait=wait, for any goroutine.
func (c *child) getEvents(after string, wait time.Duration) ([]client.Event, string, error) {
	path := "/v1/events?after=" + after + "&wait=" + wait.String()
	req, _ := http.NewRequest("GET", "http://"+c.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+childKey)
	resp, err := apiClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	var page struct {
		Events []client.Event `json:"events"`
		Next   string         `json:"next"`
	}
	if resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", path, err)
	}
	return page.Events, page.Next, nil
}

// eventLog reads the whole log, from the oldest retained event.
func (c *child) eventLog(t *testing.T) []client.Event {
	t.Helper()
	var all []client.Event
	after := ""
	for {
		evs, next := c.events(t, after, 0)
		if len(evs) == 0 {
			return all
		}
		all, after = append(all, evs...), next
	}
}

// waitLog waits until the log holds an event matching match and returns
// the log.
func (c *child) waitLog(t *testing.T, what string, match func(client.Event) bool) []client.Event {
	t.Helper()
	var log []client.Event
	waitFor(t, 10*time.Second, what+" in the event log", func() bool {
		log = c.eventLog(t)
		return slices.ContainsFunc(log, match)
	})
	return log
}

// publishTTL publishes data to target with ttl_s (0: the default).
func (c *child) publishTTL(t *testing.T, target string, ttl float64) string {
	t.Helper()
	msg := map[string]any{"target": target, "data": map[string]string{"k": "v"}}
	if ttl > 0 {
		msg["ttl_s"] = ttl
	}
	var out struct{ ID string }
	if code := c.api(t, "POST", "/v1/messages", msg, &out); code != 202 {
		t.Fatalf("publish: status %d", code)
	}
	return out.ID
}

// kill9 kills the node with SIGKILL and waits for it.
func (c *child) kill9() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

// closeNormally sends a close frame with code 1000 and waits for the
// node's echo.
func (d *wsDevice) closeNormally() {
	d.t.Helper()
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteFrame(d.conn, ws.MaskFrame(ws.NewCloseFrame(body))); err != nil {
		d.t.Fatalf("close: %v", err)
	}
	for {
		if typ, _, _, _ := d.next(5 * time.Second); typ == "close" {
			return
		}
	}
}

// nextMessage returns the id and attempt of the next message frame.
func (d *wsDevice) nextMessage() (string, int) {
	d.t.Helper()
	for {
		typ, id, attempt, code := d.next(10 * time.Second)
		switch typ {
		case "message":
			return id, attempt
		case "close":
			d.t.Fatalf("closed with %d while waiting for a message", code)
		}
	}
}

func isType(typ, device string) func(client.Event) bool {
	return func(e client.Event) bool { return e.Type == typ && e.Device == device }
}

func isDelivery(typ, message string) func(client.Event) bool {
	return func(e client.Event) bool { return e.Type == typ && e.Message == message }
}

// TestMain's goleak check runs after all tests; the API client's idle
// connections would count as leaks.
func closeAPIClient(t *testing.T) {
	t.Cleanup(apiClient.CloseIdleConnections)
}

// streamDevice is a device that acks every message as it arrives, on its
// own goroutine, counting deliveries; it stops when its connection ends.
type streamDevice struct {
	wsDevice
	delivered atomic.Int64
	done      chan struct{}
}

func startStream(t *testing.T, addr, device string) *streamDevice {
	t.Helper()
	s := &streamDevice{wsDevice: *dialDevice(t, addr, device), done: make(chan struct{})}
	go s.run()
	t.Cleanup(func() { s.conn.Close(); <-s.done })
	return s
}

func (s *streamDevice) run() {
	defer close(s.done)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
		f, err := ws.ReadFrame(s.r)
		if err != nil {
			return
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = ws.WriteFrame(s.conn, ws.MaskFrame(ws.NewPongFrame(f.Payload)))
			continue
		case ws.OpClose:
			return
		}
		var fr struct{ Type, ID string }
		if json.Unmarshal(f.Payload, &fr) != nil || fr.Type != "message" {
			continue
		}
		s.delivered.Add(1)
		b, _ := json.Marshal(map[string]any{"type": "ack", "ids": []string{fr.ID}})
		_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if ws.WriteFrame(s.conn, ws.MaskFrame(ws.NewTextFrame(b))) != nil {
			return
		}
	}
}

// publishBatch publishes n messages to target in one request and
// returns their ids; an error for anything but 200.
func (c *child) publishBatch(target string, n int) ([]string, error) {
	msgs := make([]map[string]any, n)
	for i := range msgs {
		msgs[i] = map[string]any{"target": target, "data": map[string]int{"n": i}}
	}
	b, _ := json.Marshal(map[string]any{"messages": msgs})
	req, _ := http.NewRequest("POST", "http://"+c.addr+"/v1/messages/batch", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+childKey)
	resp, err := apiClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct{ ID string } `json:"results"`
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("batch publish: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	ids := make([]string, 0, n)
	for _, r := range out.Results {
		if r.ID != "" {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}

// publisher keeps a backlog of 500 to 600 messages for a stream device.
type publisher struct {
	cancel context.CancelFunc
	done   chan error

	mu  sync.Mutex // guards following
	ids []string
}

func startPublisher(c *child, target string, s *streamDevice) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{cancel: cancel, done: make(chan error, 1)}
	go func() {
		for ctx.Err() == nil {
			p.mu.Lock()
			backlog := int64(len(p.ids)) - s.delivered.Load()
			p.mu.Unlock()
			if backlog > 500 {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			ids, err := c.publishBatch(target, 100)
			if err != nil && !strings.Contains(err.Error(), "status 503") {
				p.done <- err
				return
			}
			p.mu.Lock()
			p.ids = append(p.ids, ids...)
			p.mu.Unlock()
		}
		p.done <- nil
	}()
	return p
}

// stop stops the publisher and returns the ids it published.
func (p *publisher) stop(t *testing.T) []string {
	t.Helper()
	p.cancel()
	if err := <-p.done; err != nil {
		t.Errorf("publisher: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids
}

// goroutines reads the node's goroutine count from its admin listener.
func goroutines(t *testing.T, admin string) int {
	t.Helper()
	resp, err := apiClient.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	if err != nil {
		t.Fatalf("goroutine profile starts %q", line)
	}
	return n
}

// checkFields checks that the event's JSON object has exactly the keys
// SPEC section 11 names for its type.
func (rc *hookReceiver) checkFields(t *testing.T, a hookArrival) {
	t.Helper()
	want := []string{"at", "attempts", "device", "id", "message", "target", "type"}
	switch a.Type {
	case client.EventOnline:
		want = []string{"at", "device", "id", "node", "type"}
	case client.EventOffline:
		want = []string{"at", "code", "device", "id", "node", "type"}
	}
	rc.mu.Lock()
	obj := rc.raw[a.ID]
	rc.mu.Unlock()
	var got []string
	for k := range obj {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s %s has fields %v, want %v", a.Type, a.ID, got, want)
	}
	if a.At.IsZero() || time.Since(a.At) > time.Minute {
		t.Errorf("%s %s: at %v, want a moment ago", a.Type, a.ID, a.At)
	}
}

// TestWebhookEveryEventType makes one event of each type on a node on the
// embedded store and checks that each reaches the receiver, signed (the
// SDK verifies), with the fields SPEC section 11 names.
func TestWebhookEveryEventType(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret,
		"--max-attempts", "1", "--ack-timeout", "1s")
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome

	acked := c.publishTTL(t, "device:pos-1", 0)
	if id, _ := d.nextMessage(); id != acked {
		t.Fatalf("got message %s, want %s", id, acked)
	}
	d.ack(acked)
	// The ack committed first, so no commit of the session carries the
	// first send of the next message before it is cancelled.
	waitFor(t, 5*time.Second, "the ack stored", func() bool { return c.state(t, acked) == "acked" })
	cancelled := c.publishTTL(t, "device:pos-1", 0)
	if id, _ := d.nextMessage(); id != cancelled {
		t.Fatalf("got message %s, want %s", id, cancelled)
	}
	var msg struct {
		Deliveries []struct {
			State    string
			Attempts int
		}
	}
	c.api(t, "GET", "/v1/messages/"+cancelled, nil, &msg)
	t.Logf("before DELETE, GET /v1/messages/%s answers deliveries %+v", cancelled, msg.Deliveries)
	var out struct{ Cancelled int }
	if code := c.api(t, "DELETE", "/v1/messages/"+cancelled, nil, &out); code != 200 || out.Cancelled != 1 {
		t.Fatalf("DELETE /v1/messages/%s: status %d, cancelled %d; want 200 and 1", cancelled, code, out.Cancelled)
	}
	dead := c.publishTTL(t, "device:pos-1", 0) // sent once, never acked: dead after --ack-timeout
	if id, _ := d.nextMessage(); id != dead {
		t.Fatalf("got message %s, want %s", id, dead)
	}
	expired := c.publishTTL(t, "device:pos-2", 0.5) // pos-2 never connects
	waitFor(t, 10*time.Second, "the dead and the expired delivery", func() bool {
		return c.state(t, dead) == "dead" && c.state(t, expired) == "expired"
	})
	d.closeNormally()
	log := c.waitLog(t, "device.offline", isType(client.EventOffline, "pos-1"))
	rc.waitAll(t, 10*time.Second, log)

	for _, w := range []struct {
		typ, message, target, device string
		attempts                     int
	}{
		{client.EventAcked, acked, "device:pos-1", "pos-1", 1},
		{client.EventCancelled, cancelled, "device:pos-1", "pos-1", 1},
		{client.EventDead, dead, "device:pos-1", "pos-1", 1},
		{client.EventExpired, expired, "device:pos-2", "pos-2", 0},
	} {
		a, ok := rc.find(isDelivery(w.typ, w.message))
		if !ok {
			t.Errorf("no %s for message %s arrived", w.typ, w.message)
			continue
		}
		if a.Target != w.target || a.Device != w.device || a.Attempts != w.attempts {
			t.Errorf("%s: target %q device %q attempts %d, want %q %q %d", w.typ, a.Target, a.Device, a.Attempts, w.target, w.device, w.attempts)
		}
		rc.checkFields(t, a)
	}
	on, ok := rc.find(isType(client.EventOnline, "pos-1"))
	if !ok || on.Node != "n1" {
		t.Errorf("device.online of pos-1: arrived %v, node %q; want node n1", ok, on.Node)
	}
	rc.checkFields(t, on)
	off, ok := rc.find(isType(client.EventOffline, "pos-1"))
	if !ok || off.Node != "n1" {
		t.Errorf("device.offline of pos-1: arrived %v, node %q; want node n1", ok, off.Node)
	}
	rc.checkFields(t, off)
	t.Logf("device.offline after the device closed with 1000: code %d", off.Code)
	if off.Code != int(ws.StatusNormalClosure) {
		t.Errorf("device.offline after the device closed with 1000 reports code %d, want 1000 (SPEC section 11: the close code, 0 only when the connection just went away)", off.Code)
	}
	dups := rc.checkLog(t, log)
	t.Logf("%d events in the log, %d duplicate arrivals", len(log), dups)
}

// TestWebhookReceiverDown keeps the receiver answering 500 for 30 s while
// events happen, then brings it back: every event arrives, in log order,
// none missing; duplicates are allowed and counted.
func TestWebhookReceiverDown(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps the receiver down for 30 s")
	}
	closeAPIClient(t)
	rc := startReceiver(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret)
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome
	rc.waitAll(t, 10*time.Second, c.waitLog(t, "device.online", isType(client.EventOnline, "pos-1")))

	const outage = 30 * time.Second
	rc.set(hookFail, 0)
	down := time.Now()
	var last string
	cycles := 0
	for i := 0; time.Since(down) < outage-3*time.Second; i++ {
		last = c.publishTTL(t, "device:pos-1", 0)
		if id, _ := d.nextMessage(); id != last {
			t.Fatalf("got message %s, want %s", id, last)
		}
		d.ack(last)
		if i%5 == 0 { // presence events too
			d2 := dialDevice(t, c.addr, "pos-2")
			d2.next(5 * time.Second) // welcome
			d2.closeNormally()
			cycles++
		}
		time.Sleep(time.Second)
	}
	var log []client.Event
	waitFor(t, 10*time.Second, "the last events in the log", func() bool {
		log = c.eventLog(t)
		offline := 0
		for _, e := range log {
			if e.Type == client.EventOffline && e.Device == "pos-2" {
				offline++
			}
		}
		return offline == cycles && slices.ContainsFunc(log, isDelivery(client.EventAcked, last))
	})
	time.Sleep(time.Until(down.Add(outage)))
	rc.set(hookOK, 0)
	up := time.Now()
	rc.waitAll(t, 60*time.Second, log) // the sender backs off 1, 2, 4, 8, 16 s
	rc.mu.Lock()
	failed := rc.failed
	rc.mu.Unlock()
	if failed == 0 {
		t.Fatal("the receiver answered no 500 during the outage: the test did not test it")
	}
	log = c.eventLog(t) // with what happened since, such as pos-1 timing out
	rc.waitAll(t, 10*time.Second, log)
	dups := rc.checkLog(t, log)
	t.Logf("%d events in the log, made during a %v outage; %d batches answered 500; all arrived %v after the receiver came back; %d duplicate arrivals",
		len(log), outage, failed, time.Since(up).Round(time.Millisecond), dups)
	rc.logDuplicates(t)
}

// TestWebhookNodeKill9 kills the node with SIGKILL while the receiver is
// slow, so that a batch is in flight, restarts it on the same data dir and
// checks that every event of the log (GET /v1/events) arrives.
func TestWebhookNodeKill9(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	rc.set(hookOK, 300*time.Millisecond)
	dir := t.TempDir()
	args := []string{"--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret}
	c := startChild(t, dir, args...)
	s := startStream(t, c.addr, "pos-1")
	p := startPublisher(c, "device:pos-1", s)
	waitFor(t, 20*time.Second, "three batches received and a fourth in flight", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.batches >= 3 && rc.inside > 0
	})
	ids := p.stop(t) // the device goes on acking the backlog while the node is killed
	delivered := s.delivered.Load()
	c.kill9()
	killed := time.Now()
	before := len(rc.snapshot())

	c = startChild(t, dir, args...)
	rc.set(hookOK, 0)
	log := c.eventLog(t)
	rc.waitAll(t, 30*time.Second, log)
	dups := rc.checkLog(t, log)
	acked := 0
	for _, e := range log {
		if e.Type == client.EventAcked {
			acked++
		}
	}
	inState := 0
	for _, id := range ids {
		if c.state(t, id) == "acked" {
			inState++
		}
	}
	if acked != inState {
		t.Errorf("the log holds %d delivery.acked, but %d messages are acked", acked, inState)
	}
	t.Logf("killed with %d of %d messages delivered and %d events received; after the restart the log holds %d events (%d acked), all arrived within %v of the kill, %d duplicate arrivals",
		delivered, len(ids), before, len(log), acked, time.Since(killed).Round(time.Millisecond), dups)
	rc.logDuplicates(t)
}

// TestWebhookFleetOneSender runs two nodes on one redis-server, each with
// its own webhook path on one receiver: no event arrives from both. The
// node holding the sender's lease is killed with SIGKILL; the other takes
// over and new events arrive.
//
// The sender's lease does not follow --heartbeat: serve leaves
// webhook.Config.Heartbeat zero, so the lease lasts 3 ×
// webhook.DefaultHeartbeat (15 s) and the other node tries to take it every
// DefaultHeartbeat (5 s). After a kill -9 the takeover takes between
// about 10 and 20 s; the bound asserted is 3 × DefaultHeartbeat plus the
// lease's ttl (30 s) and the figure is logged.
func TestWebhookFleetOneSender(t *testing.T) {
	closeAPIClient(t)
	r := redistest.Start(t)
	rc := startReceiver(t)
	fleet := []string{"--store", "redis", "--redis-url", r.URL(), "--heartbeat", "1s", "--webhook-secret", hookSecret}
	nodes := map[string]*child{
		"/hook/a": startChild(t, t.TempDir(), append(fleet, "--node-id", "node-a", "--webhook-url", rc.url("/hook/a"))...),
		"/hook/b": startChild(t, t.TempDir(), append(fleet, "--node-id", "node-b", "--webhook-url", rc.url("/hook/b"))...),
	}
	devices := map[string]*wsDevice{}
	for path, c := range nodes {
		devices[path] = dialDevice(t, c.addr, "pos-"+path[len(path)-1:])
		devices[path].next(5 * time.Second) // welcome
	}
	var last string
	for i := 0; i < 10; i++ {
		for path, c := range nodes {
			d := devices[path]
			last = c.publishTTL(t, "device:pos-"+path[len(path)-1:], 0)
			if id, _ := d.nextMessage(); id != last {
				t.Fatalf("got message %s, want %s", id, last)
			}
			d.ack(last)
		}
	}
	log := nodes["/hook/a"].waitLog(t, "the last ack", isDelivery(client.EventAcked, last))
	rc.waitAll(t, 20*time.Second, log)
	rc.mu.Lock()
	for id, paths := range rc.paths {
		if len(paths) > 1 {
			t.Errorf("event %s arrived from both nodes: %v", id, paths)
		}
	}
	holder := rc.arrivals[len(rc.arrivals)-1].path
	rc.mu.Unlock()
	survivor := "/hook/a"
	if holder == survivor {
		survivor = "/hook/b"
	}

	nodes[holder].kill9()
	killed := time.Now()
	c, d := nodes[survivor], devices[survivor]
	after := c.publishTTL(t, "device:pos-"+survivor[len(survivor)-1:], 0)
	if id, _ := d.nextMessage(); id != after {
		t.Fatalf("got message %s, want %s", id, after)
	}
	d.ack(after)
	bound := 3*webhook.DefaultHeartbeat + 3*webhook.DefaultHeartbeat // heartbeats + the lease's ttl
	var took time.Duration
	waitFor(t, bound+10*time.Second, "an event made after the kill from the other node", func() bool {
		a, ok := rc.find(isDelivery(client.EventAcked, after))
		took = a.at.Sub(killed)
		return ok && a.path == survivor
	})
	t.Logf("%s held the lease; killed; %s sent an event made after the kill %v later (lease ttl %v, the sender's heartbeat %v; expected 10-20 s)",
		holder, survivor, took.Round(time.Millisecond), 3*webhook.DefaultHeartbeat, webhook.DefaultHeartbeat)
	if took > bound {
		t.Errorf("the other node took over after %v, more than 3 × heartbeat + lease ttl = %v", took, bound)
	}
	log = c.eventLog(t)
	rc.waitAll(t, 10*time.Second, log)
	dups := rc.checkLog(t, log)
	resent := 0
	rc.mu.Lock()
	for id, paths := range rc.paths {
		if len(paths) < 2 {
			continue
		}
		// Only a batch the killed node POSTed but did not record may come
		// again from the other node.
		if a := rc.firstArrival(id); a.at.After(killed) {
			t.Errorf("event %s arrived from both nodes, first after the kill", id)
		}
		resent++
	}
	rc.mu.Unlock()
	t.Logf("%d events in the log, %d duplicate arrivals, %d sent again by the node that took over", len(log), dups, resent)
}

// firstArrival returns the first arrival of id; rc.mu must be held.
func (rc *hookReceiver) firstArrival(id string) hookArrival {
	for _, a := range rc.arrivals {
		if a.ID == id {
			return a
		}
	}
	return hookArrival{}
}

// TestWebhookHangingReceiver measures the deliveries per second of a
// device acking a steady stream with a healthy receiver and then with one
// that accepts requests and never answers: the hanging receiver must not
// slow delivery down, nor grow the node's goroutines.
func TestWebhookHangingReceiver(t *testing.T) {
	closeAPIClient(t)
	rc := startReceiver(t)
	admin := freeAddr(t)
	c := startChild(t, t.TempDir(), "--node-id", "n1", "--webhook-url", rc.url("/hook"), "--webhook-secret", hookSecret,
		"--admin-listen", admin)
	s := startStream(t, c.addr, "pos-1")

	p := startPublisher(c, "device:pos-1", s)
	defer p.stop(t)
	rate := func(d time.Duration) float64 {
		n0, t0 := s.delivered.Load(), time.Now()
		time.Sleep(d)
		return float64(s.delivered.Load()-n0) / time.Since(t0).Seconds()
	}
	waitFor(t, 10*time.Second, "the stream to flow", func() bool { return s.delivered.Load() > 500 })
	g0 := goroutines(t, admin)
	healthy := rate(4 * time.Second)
	rc.mu.Lock()
	healthyBatches := rc.batches
	rc.mu.Unlock()

	rc.set(hookHang, 0)
	waitFor(t, 10*time.Second, "a webhook request hanging", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.inside > 0
	})
	hanging := rate(4 * time.Second)
	g1 := goroutines(t, admin)
	t.Logf("deliveries/s: %.0f with a healthy receiver (%d batches), %.0f with a hanging one (%.0f %%); node goroutines %d before, %d during",
		healthy, healthyBatches, hanging, 100*hanging/healthy, g0, g1)
	if healthyBatches == 0 {
		t.Error("no batch reached the healthy receiver")
	}
	if hanging < 0.8*healthy {
		t.Errorf("a hanging receiver slowed delivery from %.0f/s to %.0f/s, want at least 80 %%", healthy, hanging)
	}
	if g1 > g0+10 {
		t.Errorf("the node's goroutines grew from %d to %d while the receiver hung", g0, g1)
	}
}

// TestEventsLongPoll measures how soon GET /v1/events answers after an
// event on a node process (from the device's ack to the answer), and
// checks that its cursor resumes across a kill -9 and restart.
func TestEventsLongPoll(t *testing.T) {
	closeAPIClient(t)
	dir := t.TempDir()
	c := startChild(t, dir, "--node-id", "n1")
	d := dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome
	log := c.waitLog(t, "device.online", isType(client.EventOnline, "pos-1"))
	cursor := log[len(log)-1].ID

	var took []time.Duration
	for i := 0; i < 5; i++ {
		id := c.publishTTL(t, "device:pos-1", 0)
		if got, _ := d.nextMessage(); got != id {
			t.Fatalf("got message %s, want %s", got, id)
		}
		type answer struct {
			evs  []client.Event
			next string
			err  error
			at   time.Time
		}
		ch := make(chan answer, 1)
		go func() {
			evs, next, err := c.getEvents(cursor, 10*time.Second)
			ch <- answer{evs, next, err, time.Now()}
		}()
		time.Sleep(200 * time.Millisecond) // the poll is waiting
		acked := time.Now()
		d.ack(id)
		a := <-ch // within wait + the server's slack
		if a.err != nil {
			t.Fatal(a.err)
		}
		if !slices.ContainsFunc(a.evs, isDelivery(client.EventAcked, id)) {
			t.Fatalf("the long poll answered %v, want the delivery.acked of %s", a.evs, id)
		}
		took = append(took, a.at.Sub(acked))
		cursor = a.next
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	t.Logf("ack to long-poll answer: %v (median %v)", took, sorted[len(sorted)/2])
	if sorted[len(sorted)/2] > 500*time.Millisecond {
		t.Errorf("the long poll answered a median %v after the ack, want well within 500ms (50ms on an idle machine)", sorted[len(sorted)/2])
	}

	c.kill9()
	c = startChild(t, dir, "--node-id", "n1")
	d = dialDevice(t, c.addr, "pos-1")
	d.next(5 * time.Second) // welcome: a new device.online
	evs, next := c.events(t, cursor, 10*time.Second)
	var want []client.Event
	for _, e := range c.eventLog(t) {
		if e.ID > cursor {
			want = append(want, e)
		}
	}
	if len(evs) == 0 || len(evs) > len(want) || !slices.Equal(eventIDs(evs), eventIDs(want[:len(evs)])) {
		t.Fatalf("after the restart, events after %s: %v; want the start of %v", cursor, eventIDs(evs), eventIDs(want))
	}
	if !slices.ContainsFunc(evs, isType(client.EventOnline, "pos-1")) {
		t.Errorf("after the restart the cursor read %v, want the new device.online", evs)
	}
	id := c.publishTTL(t, "device:pos-1", 0)
	for {
		got, _ := d.nextMessage()
		if got == id {
			break
		}
		d.ack(got) // unacked before the kill, sent again
	}
	d.ack(id)
	waitFor(t, 10*time.Second, "the ack after the restart", func() bool {
		evs, n := c.events(t, next, time.Second)
		if slices.ContainsFunc(evs, isDelivery(client.EventAcked, id)) {
			return true
		}
		next = n
		return false
	})
}
