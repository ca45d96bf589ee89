package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Limits of a worker.
const (
	maxHandshakes = 256             // first connects in flight at once
	killAfter     = 5 * time.Second // after shutdown, connections still open are reset
	stdinWait     = 5 * time.Second // for the coordinator to close stdin after the result
	gracePoll     = 100 * time.Millisecond
	ackTick       = 10 * time.Millisecond
)

// Latency histograms hold microseconds from 1 µs to 1 h with 3 significant
// digits.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// Work runs one worker process: it reads its job and then commands from
// stdin, connects its devices and writes its reports to stdout, one JSON
// object a line. It returns when stdin ends (the coordinator is done or
// gone) or the job's lifetime passes, with every connection closed.
func Work(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dec := json.NewDecoder(stdin)
	var c command
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("bench worker: read job: %w", err)
	}
	if c.Type != cmdJob || c.Job == nil {
		return fmt.Errorf("bench worker: first command is %q, want %q", c.Type, cmdJob)
	}
	w, err := newWorker(*c.Job, stdout)
	if err != nil {
		w.send(report{Type: repError, Message: err.Error()})
		return err
	}
	return w.run(ctx, dec)
}

// worker holds the devices of one worker process.
type worker struct {
	job     job
	secret  []byte
	out     reporter
	devices []*device
	count   counters
	acks    ackQueue

	conns sync.WaitGroup // device goroutines

	mu         sync.Mutex // guards following
	lat        *hdrhistogram.Histogram
	interval   *hdrhistogram.Histogram // since the last progress report
	connLat    *hdrhistogram.Histogram
	firstID    [][]string // per group, the id each sequence number first arrived with
	mismatch   int64
	lastAt     time.Time // of the last first receipt
	errKinds   map[string]int64
	errs       []string
	closeCodes map[string]int64
}

func newWorker(j job, stdout io.Writer) (*worker, error) {
	w := &worker{job: j, secret: []byte(j.TokenSecret), out: reporter{enc: json.NewEncoder(stdout)},
		lat: newHist(), interval: newHist(), connLat: newHist()}
	switch {
	case j.Count < 1 || j.Count > MaxPerWorker:
		return w, fmt.Errorf("bench worker: %d devices, want 1 to %d", j.Count, MaxPerWorker)
	case j.Groups < 1 || j.Ramp <= 0 || j.PerAddress < 1 || j.Lifetime <= 0 || len(w.secret) == 0:
		return w, errors.New("bench worker: incomplete job")
	}
	w.firstID = make([][]string, j.Groups)
	for i := range j.Count {
		n := j.First + i
		local, err := SourceAddr(n, j.PerAddress)
		if err != nil {
			return w, err
		}
		w.devices = append(w.devices, &device{w: w, index: n, id: DeviceID(n), group: GroupOf(n, j.Groups), local: local})
	}
	return w, nil
}

// run connects the devices and obeys commands until stdin ends or the
// lifetime passes, then closes every connection.
func (w *worker) run(parent context.Context, dec *json.Decoder) error {
	ctx, cancel := context.WithTimeout(parent, w.job.Lifetime)
	defer cancel()
	bg, stopBG := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	loops.Go(func() { w.flushLoop(bg) })
	loops.Go(func() { w.progressLoop(bg) })

	cmds := make(chan command)
	stdinDone := make(chan struct{})
	go func() { // ends when stdin does; joined below, within stdinWait
		defer close(stdinDone)
		defer close(cmds)
		for {
			var c command
			if err := dec.Decode(&c); err != nil {
				return
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	var ramp sync.WaitGroup
	ramp.Go(func() {
		pprof.Do(ctx, pprof.Labels("bench", "ramp"), w.ramp)
		w.send(report{Type: repReady, Counters: w.count.snapshot()})
	})
	w.obey(ctx, cmds)

	cancel()
	ramp.Wait()
	w.closeAll()
	stopBG()
	loops.Wait()
	select {
	case <-stdinDone:
	case <-time.After(stdinWait):
	}
	return w.out.failed()
}

// obey handles commands until stdin ends or ctx does.
func (w *worker) obey(ctx context.Context, cmds <-chan command) {
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-cmds:
			if !ok {
				return
			}
			switch c.Type {
			case cmdStart:
				w.markAddressed()
			case cmdEnd:
				w.finish(ctx, c.Published, c.Grace)
			}
		}
	}
}

// ramp starts the devices at the job's connect rate, at most maxHandshakes
// first connects at a time, and returns once every first connect was tried.
func (w *worker) ramp(ctx context.Context) {
	sem := make(chan struct{}, maxHandshakes)
	var first sync.WaitGroup
	t0 := time.Now()
	defer first.Wait()
	for i, d := range w.devices {
		at := t0.Add(time.Duration(float64(i) / w.job.Ramp * float64(time.Second)))
		if !sleepUntil(ctx, at) {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		first.Add(1)
		w.count.attempted.Add(1)
		w.conns.Go(func() {
			pprof.Do(ctx, pprof.Labels("bench", "device"), func(ctx context.Context) {
				d.run(ctx, func(bool) { <-sem; first.Done() })
			})
		})
	}
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// closeAll closes every connection: a close frame first, a reset for
// those still open after killAfter; then waits for every device.
func (w *worker) closeAll() {
	for _, d := range w.devices {
		d.shutdown()
	}
	done := make(chan struct{})
	go func() { w.conns.Wait(); close(done) }() // ends with the devices
	select {
	case <-done:
		return
	case <-time.After(killAfter):
	}
	for _, d := range w.devices {
		d.kill()
	}
	<-done
}

// markAddressed records which devices are online as publishing begins:
// every message of their group must reach them.
func (w *worker) markAddressed() {
	for _, d := range w.devices {
		d.mu.Lock()
		d.addressed = d.online
		d.mu.Unlock()
	}
}

// finish waits up to grace until every addressed device has every
// accepted message, flushes the acks and reports the result.
func (w *worker) finish(ctx context.Context, published [][]string, grace time.Duration) {
	accepted := make([]int, len(published))
	for g, ids := range published {
		for _, id := range ids {
			if id != "" {
				accepted[g]++
			}
		}
	}
	deadline := time.Now().Add(grace)
	for w.missingEstimate(accepted) > 0 || w.missingExact(published) > 0 {
		next := time.Now().Add(gracePoll)
		if deadline.Before(next) {
			next = deadline
		}
		if !sleepUntil(ctx, next) || !time.Now().Before(deadline) {
			break
		}
	}
	for _, d := range w.devices {
		d.flushAcks()
	}
	w.send(report{Type: repResult, Result: w.result(published)})
}

// missingEstimate is a cheap lower bound of the messages addressed devices
// still miss: accepted messages of its group minus those it received.
func (w *worker) missingEstimate(accepted []int) int {
	n := 0
	for _, d := range w.devices {
		d.mu.Lock()
		if d.addressed && d.group < len(accepted) {
			n += max(0, accepted[d.group]-d.seen.len())
		}
		d.mu.Unlock()
	}
	return n
}

// missingExact counts the accepted messages addressed devices miss.
func (w *worker) missingExact(published [][]string) int {
	n := 0
	for _, d := range w.devices {
		d.mu.Lock()
		if d.addressed && d.group < len(published) {
			m, _ := d.seen.missing(published[d.group])
			n += m
		}
		d.mu.Unlock()
	}
	return n
}

// result computes the worker's final figures against what was published.
func (w *worker) result(published [][]string) *workerResult {
	r := &workerResult{Counters: w.count.snapshot()}
	worst := newHist()
	for _, d := range w.devices {
		var ids []string
		if d.group < len(published) {
			ids = published[d.group]
		}
		d.mu.Lock()
		if d.addressed {
			r.Addressed++
			for _, id := range ids {
				if id != "" {
					r.Expected++
				}
			}
			n, first := d.seen.missing(ids)
			r.Lost += int64(n)
			if n > 0 && len(r.LostSample) < maxSamples {
				r.LostSample = append(r.LostSample, d.id+" "+first)
			}
		}
		r.Unconfirm += int64(d.seen.unconfirmed(ids))
		if d.addressed && d.worst > 0 {
			_ = worst.RecordValue(max(d.worst.Microseconds(), histMin))
		}
		d.mu.Unlock()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r.Mismatch = w.mismatch
	if !w.lastAt.IsZero() {
		r.LastDelivery = w.lastAt.UnixMilli()
	}
	for g, ids := range published {
		for s, id := range ids {
			if g < len(w.firstID) && s < len(w.firstID[g]) && id != "" && w.firstID[g][s] != "" && w.firstID[g][s] != id {
				r.Mismatch++
			}
		}
	}
	r.ErrorKinds, r.CloseCodes = cloneCounts(w.errKinds), cloneCounts(w.closeCodes)
	r.Errors = append([]string(nil), w.errs...)
	r.Latency, r.ConnectLat, r.DeviceWorst = encodeHist(w.lat), encodeHist(w.connLat), encodeHist(worst)
	return r
}

// delivered records the first receipt of message s of group g with id
// after latency.
func (w *worker) delivered(g, s int, id string, latency time.Duration) {
	us := max(latency.Microseconds(), histMin)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastAt = time.Now()
	_ = w.lat.RecordValue(us)
	_ = w.interval.RecordValue(us)
	if g >= len(w.firstID) {
		return
	}
	ids := w.firstID[g]
	if s >= len(ids) {
		ids = append(ids, make([]string, s+1-len(ids))...)
		w.firstID[g] = ids
	}
	switch ids[s] {
	case "":
		ids[s] = id
	case id:
	default:
		w.mismatch++
	}
}

func (w *worker) connected(took time.Duration) {
	w.count.connected.Add(1)
	w.mu.Lock()
	_ = w.connLat.RecordValue(max(took.Microseconds(), histMin))
	w.mu.Unlock()
}

func (w *worker) reconnected() { w.count.reconnects.Add(1) }

func (w *worker) connectFailed(err error) {
	w.count.connectErrors.Add(1)
	w.noteError("connect", err)
}

func (w *worker) connectionError(err error) { w.noteError("connection", err) }

// disconnected counts a connection the node ended (code 0: without a close
// frame).
func (w *worker) disconnected(code int, err error) {
	w.count.disconnects.Add(1)
	key := strconv.Itoa(code)
	if code == 0 {
		key = "no close frame: " + errorKind(err)
	}
	w.mu.Lock()
	if w.closeCodes == nil {
		w.closeCodes = make(map[string]int64)
	}
	w.closeCodes[key]++
	w.mu.Unlock()
}

func (w *worker) noteError(phase string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.errKinds == nil {
		w.errKinds = make(map[string]int64)
	}
	w.errKinds[phase+": "+errorKind(err)]++
	if msg := phase + ": " + err.Error(); len(w.errs) < maxSamples && !slices.Contains(w.errs, msg) {
		w.errs = append(w.errs, msg)
	}
}

// progressLoop reports the counters every progressEvery until ctx ends.
func (w *worker) progressLoop(ctx context.Context) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		var lat string
		if w.interval.TotalCount() > 0 {
			lat = encodeHist(w.interval)
			w.interval.Reset()
		}
		w.mu.Unlock()
		w.send(report{Type: repProgress, Counters: w.count.snapshot(), Latency: lat})
	}
}

// flushLoop writes the acks that have waited AckDelay, until ctx ends.
func (w *worker) flushLoop(ctx context.Context) {
	t := time.NewTicker(ackTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, d := range w.acks.due(now.Add(-AckDelay)) {
				d.flushAcks()
			}
		}
	}
}

func (w *worker) send(r report) {
	r.At = time.Now().UnixMilli()
	w.out.send(r)
}

// reporter writes reports, one JSON object a line.
type reporter struct {
	mu  sync.Mutex // guards following
	enc *json.Encoder
	err error
}

func (r *reporter) send(rep report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = r.enc.Encode(rep)
	}
}

func (r *reporter) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return fmt.Errorf("bench worker: write report: %w", r.err)
	}
	return nil
}

// ackQueue holds the devices with acks waiting, oldest first.
type ackQueue struct {
	mu sync.Mutex // guards following
	q  []queuedAck
}

type queuedAck struct {
	d  *device
	at time.Time
}

// push queues d; called with d.wmu held.
func (q *ackQueue) push(d *device) {
	q.mu.Lock()
	q.q = append(q.q, queuedAck{d, time.Now()})
	q.mu.Unlock()
}

// due removes and returns the devices queued at or before t.
func (q *ackQueue) due(t time.Time) []*device {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(q.q) && !q.q[n].at.After(t) {
		n++
	}
	if n == 0 {
		return nil
	}
	out := make([]*device, n)
	for i := range n {
		out[i] = q.q[i].d
	}
	q.q = append(q.q[:0], q.q[n:]...)
	return out
}

// counters are a worker's Counters, updated atomically.
type counters struct {
	attempted, open, connected, connectErrors, disconnects, reconnects atomic.Int64
	received, delivered, duplicates, redelivered, acked, ackFrames     atomic.Int64
	stale, foreign                                                     atomic.Int64
}

func (c *counters) snapshot() Counters {
	return Counters{
		Attempted: c.attempted.Load(), Open: c.open.Load(), Connected: c.connected.Load(),
		ConnectErrors: c.connectErrors.Load(), Disconnects: c.disconnects.Load(), Reconnects: c.reconnects.Load(),
		Received: c.received.Load(), Delivered: c.delivered.Load(), Duplicates: c.duplicates.Load(),
		Redelivered: c.redelivered.Load(), Acked: c.acked.Load(), AckFrames: c.ackFrames.Load(),
		Stale: c.stale.Load(), Foreign: c.foreign.Load(),
	}
}

// encodeHist returns h in the compressed HdrHistogram encoding ("" if it
// cannot be encoded).
func encodeHist(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}

// decodeHist reverses encodeHist; "" gives an empty histogram.
func decodeHist(s string) (*hdrhistogram.Histogram, error) {
	if s == "" {
		return newHist(), nil
	}
	return hdrhistogram.Decode([]byte(s))
}
