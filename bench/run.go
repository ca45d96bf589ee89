package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Time limits of a run beyond its phases.
const (
	readyMargin   = 30 * time.Second // connect phase, beyond conns ÷ ramp + connectTimeout
	sessionsWait  = 10 * time.Second // for the node to count every session
	resultMargin  = 30 * time.Second // for the results, beyond the grace period
	stopTimeout   = 15 * time.Second // for workers to exit once told, before they are killed
	runMargin     = time.Minute      // the whole run, beyond its phases
	workerMargin  = 2 * time.Minute  // a worker outlives the run by at most this
	progressTick  = 250 * time.Millisecond
	maxCommandErr = 3
)

// Run makes one run against the node of cfg and returns its report. It
// stops by itself: every phase has a deadline, and the whole run ends
// within its connect, settle, publish (or hold) and grace phases plus
// runMargin. Workers are stopped and waited for before Run returns. A
// failed run returns an error and no report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := newRunner(cfg)
	ctx, cancel := context.WithTimeout(ctx, r.lifetime()+runMargin)
	defer cancel()
	return r.do(ctx)
}

// runner is the coordinator of one run.
type runner struct {
	cfg  Config
	run  string
	node *node
	prog Progress
	rep  *Report

	procs   []*Proc
	readers sync.WaitGroup // one per worker's stdout

	mu       sync.Mutex // guards following
	last     []Counters // latest counters of each worker
	ready    int
	readyAt  time.Time
	done     []*workerResult // each worker's result
	failure  error           // first worker failure
	stopping bool
	tl       timeline
}

func newRunner(cfg Config) *runner {
	var b [4]byte
	_, _ = rand.Read(b[:])
	prog := cfg.Progress
	if prog == nil {
		prog = noProgress{}
	}
	return &runner{
		cfg:  cfg,
		run:  hex.EncodeToString(b[:]),
		node: newNode(cfg, newHTTPClient(cfg.Publishers+cleanupWorkers)),
		prog: prog,
	}
}

// connectBudget bounds the connect phase.
func (r *runner) connectBudget() time.Duration {
	return time.Duration(float64(r.cfg.Conns)/float64(r.cfg.Ramp)*float64(time.Second)) + connectTimeout + readyMargin
}

// lifetime bounds the phases of the run.
func (r *runner) lifetime() time.Duration {
	return r.connectBudget() + sessionsWait + 4*settle + r.cfg.Duration + r.cfg.Grace + resultMargin
}

func (r *runner) do(ctx context.Context) (*Report, error) {
	c := r.cfg
	r.rep = &Report{Run: r.run, Started: time.Now(), Mode: "publish", Settings: Settings{
		URL: c.URL, AdminURL: c.AdminURL, PublishURL: c.PublishURL, Conns: c.Conns, Groups: c.Groups, Rate: c.Rate, Size: c.Size,
		Direct: c.Direct, Batch: c.Batch, Publishers: c.Publishers,
		Duration: c.Duration.Seconds(), Ramp: c.Ramp, Grace: c.Grace.Seconds(), Idle: c.Idle,
		Workers: c.Workers, PerAddress: c.PerAddress, Sources: SourceCount(c.Conns, c.PerAddress),
	}}
	if c.Idle {
		r.rep.Mode = "idle"
	}
	if err := r.node.healthy(ctx); err != nil {
		return nil, fmt.Errorf("the node does not answer: %w", err)
	}
	before, err := r.node.sample(ctx)
	if err != nil {
		r.rep.Node.Error = err.Error()
	} else {
		r.rep.Node.Before = &before
	}
	if !c.Idle && !c.Direct {
		if _, err := r.node.cleanGroups(ctx, c.Conns, c.Groups); err != nil {
			return nil, fmt.Errorf("remove stale members of the bench groups: %w", err)
		}
	}
	r.tl.start = time.Now()
	defer r.stop()
	if err := r.startWorkers(); err != nil {
		return nil, err
	}
	if err := r.connectPhase(ctx); err != nil {
		return nil, err
	}
	r.sampleAfter(ctx)
	var pub *publisher
	if c.Idle {
		err = r.holdPhase(ctx)
	} else {
		pub, err = r.publishPhase(ctx)
	}
	if err != nil {
		return nil, err
	}
	m, err := r.waitResults(ctx)
	if err != nil {
		return nil, err
	}
	r.finishReport(ctx, m, pub)
	return r.rep, nil
}

// startWorkers launches the workers and sends each its job.
func (r *runner) startWorkers() error {
	c := r.cfg
	r.last = make([]Counters, c.Workers)
	r.done = make([]*workerResult, c.Workers)
	lifetime := r.lifetime() + workerMargin
	first := 0
	for i := range c.Workers {
		n := c.Conns / c.Workers
		if i < c.Conns%c.Workers {
			n++
		}
		p, err := c.Launch(i)
		if err != nil {
			return fmt.Errorf("start worker %d: %w", i, err)
		}
		r.procs = append(r.procs, p)
		r.readers.Go(func() { r.read(i, p) })
		j := job{Worker: i, WSURL: wsURL(c.URL, "/v1/connect"), TokenSecret: string(c.TokenSecret),
			TokenTTL: lifetime + time.Hour, Run: r.run, First: first, Count: n, Groups: c.streams(), Direct: c.Direct,
			PerAddress: c.PerAddress, Ramp: float64(c.Ramp) / float64(c.Workers), Lifetime: lifetime}
		if err := r.send(i, command{Type: cmdJob, Job: &j}); err != nil {
			return err
		}
		first += n
	}
	return nil
}

// send writes a command to worker i.
func (r *runner) send(i int, c command) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := r.procs[i].Stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("worker %d: send %s: %w%s", i, c.Type, err, r.stderr(i))
	}
	return nil
}

// broadcast sends c to every worker.
func (r *runner) broadcast(c command) error {
	for i := range r.procs {
		if err := r.send(i, c); err != nil {
			return err
		}
	}
	return nil
}

// read decodes worker i's reports until its stdout ends.
func (r *runner) read(i int, p *Proc) {
	dec := json.NewDecoder(p.Stdout)
	for {
		var rep report
		if err := dec.Decode(&rep); err != nil {
			r.mu.Lock()
			if !r.stopping && r.done[i] == nil && r.failure == nil {
				r.failure = fmt.Errorf("worker %d ended early: %v", i, err)
			}
			r.mu.Unlock()
			_, _ = io.Copy(io.Discard, p.Stdout)
			return
		}
		r.handle(i, rep)
	}
}

// handle records one report of worker i.
func (r *runner) handle(i int, rep report) {
	at := time.UnixMilli(rep.At)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch rep.Type {
	case repProgress:
		lat, _ := decodeHist(rep.Latency)
		prev := r.last[i]
		r.last[i] = rep.Counters
		var open int64
		for _, c := range r.last {
			open += c.Open
		}
		r.tl.progress(at, rep.Counters.Delivered-prev.Delivered, open, lat)
	case repReady:
		r.last[i] = rep.Counters
		r.ready++
		r.readyAt = time.Now()
	case repResult:
		if rep.Result != nil {
			r.done[i] = rep.Result
			r.last[i] = rep.Result.Counters
		}
	case repError:
		if r.failure == nil {
			r.failure = fmt.Errorf("worker %d: %s", i, rep.Message)
		}
	}
}

// state returns the counters summed over workers, the number of workers
// ready and the first failure.
func (r *runner) state() (Counters, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sum Counters
	for _, c := range r.last {
		sum.add(c)
	}
	return sum, r.ready, r.failure
}

// connectPhase waits until every worker has tried every first connect.
func (r *runner) connectPhase(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(r.connectBudget())
	r.prog.Start("connecting", int64(r.cfg.Conns))
	defer r.prog.Finish()
	for {
		sum, ready, failure := r.state()
		r.prog.Update(sum.Attempted, fmt.Sprintf("%d open, %d errors", sum.Open, sum.ConnectErrors))
		switch {
		case failure != nil:
			return failure
		case ready == len(r.procs):
			r.mu.Lock()
			took := r.readyAt.Sub(start)
			r.mu.Unlock()
			r.rep.Connect.Seconds = took.Seconds()
			r.phase("connect", start, start.Add(took))
			return nil
		case !time.Now().Before(deadline):
			return fmt.Errorf("connect phase: not done after %v (%d of %d tried)", r.connectBudget(), sum.Attempted, r.cfg.Conns)
		}
		if !sleepUntil(ctx, time.Now().Add(progressTick)) {
			return fmt.Errorf("connect phase: %w", context.Cause(ctx))
		}
	}
}

// phase records a phase of the run in the report.
func (r *runner) phase(name string, from, to time.Time) {
	r.rep.Phases = append(r.rep.Phases, Phase{Name: name, From: from.Sub(r.tl.start).Seconds(), To: to.Sub(r.tl.start).Seconds()})
}

// sampleAfter reads the node once it counts every session: the memory of
// the connections, before any message flows.
func (r *runner) sampleAfter(ctx context.Context) {
	n := &r.rep.Node
	if n.Before == nil {
		return
	}
	sum, _, _ := r.state()
	want := n.Before.Connections + float64(sum.Open)
	got, err := r.node.waitConnections(ctx, want, sessionsWait)
	if err == nil && got < want {
		err = fmt.Errorf("the node counts %.0f sessions, want %.0f", got, want)
	}
	after, serr := r.node.sample(ctx)
	if serr != nil {
		n.Error = serr.Error()
		return
	}
	if err != nil {
		n.Error = err.Error()
	}
	n.After = &after
	n.Conns = after.Connections - n.Before.Connections
	n.Per = perConn(*n.Before, after, n.Conns)
}

// sampleHeld reads the node at the end of the hold, the connections
// still open: what they cost once the node is idle.
func (r *runner) sampleHeld(ctx context.Context) {
	n := &r.rep.Node
	if n.Before == nil || n.Per == nil {
		return
	}
	s, err := r.node.sample(ctx)
	if err != nil {
		n.Error = err.Error()
		return
	}
	n.End = &s
	n.PerHeld = perConn(*n.Before, s, s.Connections-n.Before.Connections)
}

// holdPhase holds the connections for the duration, publishing nothing.
func (r *runner) holdPhase(ctx context.Context) error {
	d := r.cfg.Duration
	start := time.Now()
	r.prog.Start("holding", d.Milliseconds())
	defer r.prog.Finish()
	for {
		sum, _, failure := r.state()
		el := time.Since(start)
		r.prog.Update(min(el, d).Milliseconds(), fmt.Sprintf("%d open, %d ended by the node", sum.Open, sum.Disconnects))
		if failure != nil {
			return failure
		}
		if el >= d {
			r.phase("hold", start, time.Now())
			r.sampleHeld(ctx)
			return r.broadcast(command{Type: cmdEnd})
		}
		if !sleepUntil(ctx, time.Now().Add(progressTick)) {
			return fmt.Errorf("hold phase: %w", context.Cause(ctx))
		}
	}
}

// publishPhase publishes for the duration, then tells the workers what
// was published.
func (r *runner) publishPhase(ctx context.Context) (*publisher, error) {
	c := r.cfg
	if s, err := r.node.metrics(ctx); err == nil {
		r.rep.Node.End = &s // the start of the flow; replaced at the end
	}
	if err := r.broadcast(command{Type: cmdStart}); err != nil {
		return nil, err
	}
	pub := newPublisher(r.node, c, r.run, func(n int) {
		r.mu.Lock()
		r.tl.published(time.Now(), n)
		r.mu.Unlock()
	})
	pub.start = time.Now()
	start := pub.start
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { // joined through done on every path below
		defer close(done)
		pub.run(pctx, c.Duration)
	}()
	r.prog.Start("publishing", c.Duration.Milliseconds())
	defer r.prog.Finish()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(progressTick):
		}
		sum, _, failure := r.state()
		pub.mu.Lock()
		accepted, failed, refused := pub.accepted, pub.failed, total(pub.refused)
		pub.mu.Unlock()
		r.prog.Update(min(time.Since(start), c.Duration).Milliseconds(), fmt.Sprintf("%d published, %d refused, %d failed, %d delivered, %d dup, %d open",
			accepted, refused, failed, sum.Delivered, sum.Duplicates, sum.Open))
		if failure != nil {
			cancel()
			<-done
			return nil, failure
		}
	}
	took := time.Since(start)
	r.phase("publish", start, start.Add(took))
	m := &MessagesReport{TargetRate: c.Rate, PublishSeconds: took.Seconds()}
	r.rep.Messages = m
	return pub, r.broadcast(command{Type: cmdEnd, Published: pub.published(), Grace: c.Grace})
}

// merged is the workers' results put together.
type merged struct {
	res     *workerResult
	lat     *hdrhistogram.Histogram // delivery latency, µs
	connLat *hdrhistogram.Histogram // dial to welcome, µs
	worst   *hdrhistogram.Histogram // each device's highest latency, µs
}

// waitResults waits for every worker's result and merges them.
func (r *runner) waitResults(ctx context.Context) (*merged, error) {
	deadline := time.Now().Add(r.cfg.Grace + resultMargin)
	r.prog.Start("finishing", int64(len(r.procs)))
	defer r.prog.Finish()
	for {
		r.mu.Lock()
		n := 0
		for _, res := range r.done {
			if res != nil {
				n++
			}
		}
		failure := r.failure
		r.mu.Unlock()
		r.prog.Update(int64(n), fmt.Sprintf("%d of %d workers done (grace %v)", n, len(r.procs), r.cfg.Grace))
		switch {
		case failure != nil:
			return nil, failure
		case n == len(r.procs):
			return r.merge()
		case !time.Now().Before(deadline):
			return nil, fmt.Errorf("only %d of %d workers reported within %v", n, len(r.procs), r.cfg.Grace+resultMargin)
		}
		if !sleepUntil(ctx, time.Now().Add(progressTick)) {
			return nil, fmt.Errorf("waiting for results: %w", context.Cause(ctx))
		}
	}
}

// merge puts the workers' results together.
func (r *runner) merge() (*merged, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := &merged{res: &workerResult{}, lat: newHist(), connLat: newHist(), worst: newHist()}
	for i, res := range r.done {
		m.res.merge(res)
		for _, h := range []struct {
			enc string
			dst *hdrhistogram.Histogram
		}{{res.Latency, m.lat}, {res.ConnectLat, m.connLat}, {res.DeviceWorst, m.worst}} {
			d, err := decodeHist(h.enc)
			if err != nil {
				return nil, fmt.Errorf("worker %d: latency histogram: %w", i, err)
			}
			h.dst.Merge(d)
		}
	}
	return m, nil
}

// finishReport fills the report from the merged results, the publisher
// and a last reading of the node.
func (r *runner) finishReport(ctx context.Context, m *merged, pub *publisher) {
	rep, res := r.rep, m.res
	cn := res.Counters
	rep.Connect.Attempted, rep.Connect.Connected, rep.Connect.Errors = cn.Attempted, cn.Connected, cn.ConnectErrors
	rep.Connect.PerSecond = perSecond(cn.Connected, time.Duration(rep.Connect.Seconds*float64(time.Second)))
	rep.Connect.ErrorKinds = kindsOf(res.ErrorKinds, "connect: ")
	rep.Connect.Latency = percentiles(m.connLat)
	rep.Connections = ConnectionsReport{OpenAtEnd: cn.Open, Disconnects: cn.Disconnects, Reconnects: cn.Reconnects,
		CloseCodes: res.CloseCodes, ErrorKinds: kindsOf(res.ErrorKinds, "connection: "), Errors: res.Errors}
	if rep.Messages != nil && pub != nil {
		fillMessages(rep.Messages, m, pub)
	}
	if rep.Node.Before != nil {
		start := rep.Node.End
		if !sleepUntil(ctx, time.Now().Add(settle)) { // let the last acks reach the store
			start = nil
		}
		if end, err := r.node.metrics(ctx); err == nil {
			if start != nil && rep.Messages != nil {
				rep.Node.Flow = flow(*start, end)
			}
			rep.Node.End = &end
		}
	}
	r.mu.Lock()
	rep.Timeline = r.tl.points()
	r.mu.Unlock()
	rep.Problems = rep.problems()
	if rep.Problems == nil {
		rep.Problems = []string{} // "problems": [] for machines
	}
}

// fillMessages fills the message figures.
func fillMessages(mr *MessagesReport, m *merged, pub *publisher) {
	res, cn := m.res, m.res.Counters
	pub.mu.Lock()
	mr.Published, mr.PublishErrors, mr.Recipients = pub.accepted, pub.failed, pub.recipients
	mr.PublishRefused, mr.PublishRefusedKinds, mr.RefusedNoRetryAfter = total(pub.refused), cloneCounts(pub.refused), pub.noRetry
	mr.PublishErrorKinds, mr.PublishErrorSample = cloneCounts(pub.errKinds), append([]string(nil), pub.errs...)
	mr.PublishLatency = percentiles(pub.lat)
	pub.mu.Unlock()
	publishTook := time.Duration(mr.PublishSeconds * float64(time.Second))
	mr.PublishedPerSecond = perSecond(mr.Published, publishTook)
	mr.Addressed, mr.Expected, mr.Lost, mr.LostSample = res.Addressed, res.Expected, res.Lost, res.LostSample
	mr.Unconfirmed, mr.Mismatch = res.Unconfirm, res.Mismatch
	mr.Delivered, mr.Received, mr.Duplicates, mr.Redelivered = cn.Delivered, cn.Received, cn.Duplicates, cn.Redelivered
	mr.Acked, mr.AckFrames, mr.Stale, mr.Foreign = cn.Acked, cn.AckFrames, cn.Stale, cn.Foreign
	mr.Latency = percentiles(m.lat)
	mr.DeviceWorst = percentiles(m.worst)
	// Deliveries run from the first publish to the last first receipt,
	// which may fall in the grace period when the node lags.
	took := publishTook
	if res.LastDelivery > 0 && !pub.start.IsZero() {
		took = max(took, time.UnixMilli(res.LastDelivery).Sub(pub.start))
	}
	mr.DeliverySeconds = took.Seconds()
	mr.DeliveredPerSecond = perSecond(mr.Delivered, took)
}

// total returns the sum of the counts of m.
func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// kindsOf returns the counts of m whose key starts with prefix, without it.
func kindsOf(m map[string]int64, prefix string) map[string]int64 {
	var out map[string]int64
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if out == nil {
				out = make(map[string]int64)
			}
			out[rest] += v
		}
	}
	return out
}

// stderr returns what worker i wrote to its standard error, for an error
// message.
func (r *runner) stderr(i int) string {
	if i >= len(r.procs) || r.procs[i].Stderr == nil {
		return ""
	}
	if s := strings.TrimSpace(r.procs[i].Stderr()); s != "" {
		return "; its stderr: " + clip(s, 2000)
	}
	return ""
}

// stop ends every worker: stdin closes, which tells it to close its
// connections and exit; one that has not exited after stopTimeout is
// killed. It returns once every worker and reader has ended.
func (r *runner) stop() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	for _, p := range r.procs {
		_ = p.Stdin.Close()
	}
	done := make(chan struct{})
	go func() { r.readers.Wait(); close(done) }() // ends with the readers
	select {
	case <-done:
	case <-time.After(stopTimeout):
		for _, p := range r.procs {
			p.Kill()
		}
		<-done
	}
	for _, p := range r.procs {
		_ = p.Wait()
	}
}
