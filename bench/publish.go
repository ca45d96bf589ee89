package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Publishing. Config.Publishers bounds the publish requests under way:
// when the node is slower than --rate, messages that fall due meanwhile go
// in the next batch, and the achieved rate shows the shortfall.
const (
	maxBatch  = 1000 // messages per POST /v1/messages/batch (tether.MaxBatch)
	ttlMargin = 10 * time.Minute
)

// publisher publishes bench messages to the streams (groups, or devices)
// at a fixed rate, round robin, and remembers the id the node gave each.
type publisher struct {
	n          *node
	cfg        Config
	runID      string
	streams    int
	size       int
	rate       int
	batch      int // messages per request; 0: whatever fell due
	publishers int
	ttl        time.Duration

	mu         sync.Mutex // guards following
	next       int        // global sequence number; stream next%streams, sequence next/streams
	ids        [][]string // per stream, by sequence number; "" until accepted
	accepted   int64
	recipients int64
	failed     int64
	refused    map[string]int64 // messages refused with 503, by error code
	noRetry    int64            // 503 answers without Retry-After
	errKinds   map[string]int64
	errs       []string
	lat        *hdrhistogram.Histogram // request durations, µs
	onAccepted func(n int)             // called with each batch's accepted count
	start      time.Time               // of publishing; set by run before any request
}

func newPublisher(n *node, cfg Config, run string, onAccepted func(int)) *publisher {
	return &publisher{n: n, cfg: cfg, runID: run, streams: cfg.streams(), size: cfg.Size, rate: cfg.Rate,
		batch: cfg.Batch, publishers: cfg.Publishers, ttl: cfg.Duration + cfg.Grace + ttlMargin,
		ids: make([][]string, cfg.streams()), lat: newHist(), onAccepted: onAccepted}
}

// run publishes rate × d messages, message k falling due k/rate seconds
// after p.start, then waits for the requests under way. It issues nothing
// after d: when the node is slower than the rate, what it could not take
// in d is left out (and the achieved rate shows it), so that publishing
// never runs past its time.
func (p *publisher) run(ctx context.Context, d time.Duration) {
	total := int(float64(p.rate) * d.Seconds())
	due := func() int { // messages due by now
		return min(total, int(float64(p.rate)*time.Since(p.start).Seconds())+1)
	}
	sem := make(chan struct{}, p.publishers)
	var wg sync.WaitGroup
	defer wg.Wait()
	end := p.start.Add(d)
	for issued := 0; issued < total && time.Now().Before(end); {
		// With a fixed batch, wait until a whole one is due (or the last).
		want := issued + 1
		if p.batch > 0 {
			want = min(total, issued+p.batch)
		}
		if due() < want {
			next := p.start.Add(time.Duration(float64(want-1) / float64(p.rate) * float64(time.Second)))
			if !sleepUntil(ctx, next) {
				return
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if !time.Now().Before(end) {
			<-sem
			return
		}
		// Messages that fell due while waiting for a slot join this batch.
		n := min(due()-issued, maxBatch)
		if p.batch > 0 {
			n = min(n, p.batch)
		}
		first := p.reserve(n)
		issued += n
		wg.Go(func() {
			defer func() { <-sem }()
			p.publish(ctx, first, n)
		})
	}
}

// reserve takes n global sequence numbers and returns the first.
func (p *publisher) reserve(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.next
	p.next += n
	return first
}

// item is one message of a publish request.
type item struct {
	Target string          `json:"target"`
	Data   json.RawMessage `json:"data"`
	TTLS   int64           `json:"ttl_s"`
}

// answer is the node's answer for one message.
type answer struct {
	ID         string `json:"id"`
	Recipients int64  `json:"recipients"`
	Error      *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// publish sends messages first … first+n-1: one through POST /v1/messages,
// more through POST /v1/messages/batch.
func (p *publisher) publish(ctx context.Context, first, n int) {
	items := make([]item, n)
	for i := range items {
		k := first + i
		g, s := k%p.streams, k/p.streams
		items[i] = item{Target: p.cfg.target(g), Data: appendPayload(nil, p.runID, g, s, p.size), TTLS: int64(p.ttl / time.Second)}
	}
	start := time.Now()
	answers, err := p.post(ctx, items)
	took := time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.lat.RecordValue(max(took.Microseconds(), histMin))
	if err != nil {
		if code, noRetry := refusal(err); code != "" {
			p.refuseLocked(n, code, noRetry)
			return
		}
		p.failLocked(n, errorKindHTTP(err), err.Error())
		return
	}
	ok := 0
	for i, a := range answers {
		k := first + i
		g, s := k%p.streams, k/p.streams
		if a.Error != nil && (a.Error.Code == "overloaded" || a.Error.Code == "unavailable") {
			p.refuseLocked(1, a.Error.Code, false)
			continue
		}
		if a.Error != nil || a.ID == "" {
			msg := "no id in the answer"
			if a.Error != nil {
				msg = a.Error.Code + ": " + a.Error.Message
			}
			p.failLocked(1, "rejected", msg)
			continue
		}
		ids := p.ids[g]
		if s >= len(ids) {
			ids = append(ids, make([]string, s+1-len(ids))...)
			p.ids[g] = ids
		}
		ids[s] = a.ID
		ok++
		p.accepted++
		p.recipients += a.Recipients
	}
	if p.onAccepted != nil && ok > 0 {
		p.onAccepted(ok)
	}
}

// post sends items and returns one answer per item.
func (p *publisher) post(ctx context.Context, items []item) ([]answer, error) {
	if len(items) == 1 {
		body, _ := json.Marshal(items[0])
		b, err := p.n.do(ctx, http.MethodPost, p.n.pub+"/v1/messages", body, http.StatusAccepted)
		if err != nil {
			return nil, err
		}
		var a answer
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("POST /v1/messages: %w", err)
		}
		return []answer{a}, nil
	}
	body, _ := json.Marshal(map[string][]item{"messages": items})
	b, err := p.n.do(ctx, http.MethodPost, p.n.pub+"/v1/messages/batch", body, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var res struct {
		Results []answer `json:"results"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("POST /v1/messages/batch: %w", err)
	}
	if len(res.Results) != len(items) {
		return nil, fmt.Errorf("POST /v1/messages/batch: %d results for %d messages", len(res.Results), len(items))
	}
	return res.Results, nil
}

// refuseLocked counts n messages refused with 503 and code.
func (p *publisher) refuseLocked(n int, code string, noRetryAfter bool) {
	if p.refused == nil {
		p.refused = make(map[string]int64)
	}
	p.refused[code] += int64(n)
	if noRetryAfter {
		p.noRetry++
	}
}

// refusal returns the error code of a 503 answer (the node refused the
// request: overloaded, unavailable) and whether it lacked Retry-After; ""
// for any other error.
func refusal(err error) (code string, noRetryAfter bool) {
	var se *statusError
	if !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
		return "", false
	}
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	code = "unavailable"
	if json.Unmarshal([]byte(se.Body), &body) == nil && body.Error.Code != "" {
		code = body.Error.Code
	}
	return code, se.RetryAfter == ""
}

func (p *publisher) failLocked(n int, kind, msg string) {
	p.failed += int64(n)
	if p.errKinds == nil {
		p.errKinds = make(map[string]int64)
	}
	p.errKinds[kind] += int64(n)
	if len(p.errs) < maxSamples && !slices.Contains(p.errs, msg) {
		p.errs = append(p.errs, msg)
	}
}

// published returns the ids by stream and sequence number.
func (p *publisher) published() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]string, len(p.ids))
	for g, ids := range p.ids {
		out[g] = append([]string(nil), ids...)
	}
	return out
}

// errorKindHTTP names a failed publish request: the status, or the
// transport error's kind.
func errorKindHTTP(err error) string {
	var se *statusError
	if errors.As(err, &se) {
		return fmt.Sprintf("http %d", se.Status)
	}
	return errorKind(err)
}
