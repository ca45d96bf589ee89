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
)

// Helpers of the end-to-end tests of the event log and its webhook
// (webhook_test.go): a receiver that verifies and records batches, and
// node, device and publisher helpers.

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
