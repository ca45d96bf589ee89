package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/tetherpush/tether"
)

// loop is the state of a sender's goroutine; nothing else touches it.
type loop struct {
	*Sender
	holding   bool
	renewed   time.Time         // start of the last Lease call that answered held
	renewAt   time.Time         // when to call Lease next
	cursor    string            // the last event sent, as the store records it
	pending   []tether.LogEvent // the batch of the last failed attempt
	failures  int               // failed attempts in a row
	retryAt   time.Time         // no attempt before, after a failure
	leaseErrs int               // failed Lease calls in a row
}

// run works until ctx is done, then hands the lease over.
func (l *loop) run(ctx context.Context) {
	defer l.release()
	for ctx.Err() == nil {
		d, wakeable := l.step(ctx)
		l.sleep(ctx, d, wakeable)
	}
}

// ttl is the lease's duration.
func (l *loop) ttl() time.Duration { return 3 * l.cfg.Heartbeat }

// step takes or renews the lease when due and, holding it and not backing
// off, reads the next batch and sends it. It returns how long to wait
// before the next step and whether Notify may cut the wait short.
func (l *loop) step(ctx context.Context) (wait time.Duration, wakeable bool) {
	if !time.Now().Before(l.renewAt) {
		l.lease(ctx)
	}
	if !l.holding || ctx.Err() != nil {
		return time.Until(l.renewAt), false
	}
	if until := time.Until(l.retryAt); until > 0 {
		return min(until, time.Until(l.renewAt)), false
	}
	evs, err := l.read(ctx)
	switch {
	case ctx.Err() != nil:
		return 0, false
	case err != nil:
		return l.backoff("webhook: reading the event log failed", "err", err), false
	case len(evs) == 0:
		l.m.setOldest(time.Time{})
		return min(l.cfg.Poll, time.Until(l.renewAt)), true
	}
	l.m.setOldest(evs[0].At)
	return l.deliver(ctx, evs), false
}

// lease takes the lease, or renews it, and sets when to call again.
func (l *loop) lease(ctx context.Context) {
	start := time.Now()
	sctx, cancel := l.storeCtx(ctx)
	held, sent, err := l.store.Lease(sctx, l.cfg.Holder, l.ttl())
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		l.leaseErrs++
		retry := l.cfg.Heartbeat
		if l.holding {
			retry /= 2 // several tries before the lease runs out
		}
		if l.leaseErrs == 1 {
			l.log.Warn("webhook lease: the store did not answer; retrying", "err", err, "holding", l.holding, "retry_in", retry)
		}
		if l.holding && time.Since(l.renewed) >= l.ttl() {
			l.lose("the lease ran out while the store did not answer")
		}
		l.renewAt = time.Now().Add(retry)
		return
	}
	if l.leaseErrs > 0 {
		l.log.Info("webhook lease: the store answers again", "failed_calls", l.leaseErrs)
		l.leaseErrs = 0
	}
	l.renewAt = start.Add(l.cfg.Heartbeat)
	switch {
	case !held:
		if l.holding {
			l.lose("another node took the lease")
		}
	case !l.holding:
		l.holding, l.renewed, l.cursor = true, start, sent
		l.resetFailures()
		l.m.LeaseHeld.Set(1)
		l.log.Info("webhook lease taken: this node sends the event log", "holder", l.cfg.Holder, "after", sent)
	default:
		l.renewed = start
		if sent != l.cursor {
			// Only Sent moves the progress; ours did not, so the lease ran
			// out and another node sent in between.
			l.log.Info("webhook lease: another node sent events meanwhile; going on after them", "after", sent)
			l.cursor = sent
			l.resetFailures()
		}
	}
}

// lose stops sending: the lease is someone else's or may be.
func (l *loop) lose(why string) {
	l.holding = false
	l.resetFailures()
	l.renewAt = time.Now().Add(l.cfg.Heartbeat)
	l.m.LeaseHeld.Set(0)
	l.m.setOldest(time.Time{})
	l.log.Warn("webhook lease lost: this node stops sending", "reason", why)
}

// release hands the lease over when the sender stops, by renewing it for
// a millisecond: the next node takes it at its next try instead of three
// heartbeats later.
func (l *loop) release() {
	l.m.LeaseHeld.Set(0)
	l.m.setOldest(time.Time{})
	if !l.holding {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(l.cfg.StoreTimeout, time.Second))
	defer cancel()
	if _, _, err := l.store.Lease(ctx, l.cfg.Holder, time.Millisecond); err != nil {
		l.log.Warn("webhook lease: handing it over failed; another node takes it when it runs out", "err", err, "within", l.ttl())
		return
	}
	l.log.Info("webhook lease handed over", "after", l.cursor)
}

func (l *loop) resetFailures() {
	l.pending, l.failures, l.retryAt = nil, 0, time.Time{}
}

// read returns the next batch after the cursor.
func (l *loop) read(ctx context.Context) ([]tether.LogEvent, error) {
	sctx, cancel := l.storeCtx(ctx)
	defer cancel()
	evs, err := l.store.Events(sctx, l.cursor, l.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	evs = evs[:min(len(evs), l.cfg.BatchSize)]
	l.checkTrimmed(evs)
	return evs, nil
}

// checkTrimmed compares the batch read for a retry with the one that
// failed: events of the failed batch that no longer come first left the
// retention window unsent. The store reads from the oldest retained event
// then; this says so once, with how many were skipped.
func (l *loop) checkTrimmed(evs []tether.LogEvent) {
	if len(l.pending) == 0 {
		return
	}
	skipped := len(l.pending) // all of them, unless the batch starts inside
	if len(evs) > 0 {
		if i := slices.IndexFunc(l.pending, func(e tether.LogEvent) bool { return e.ID == evs[0].ID }); i >= 0 {
			skipped = i
		}
	}
	if skipped == 0 {
		return
	}
	args := []any{"skipped_at_least", skipped, "first_skipped", l.pending[0].ID, "oldest_skipped_at", l.pending[0].At}
	if len(evs) > 0 {
		args = append(args, "going_on_at", evs[0].ID)
	}
	l.log.Warn("webhook: events left the retention window before the receiver accepted them; going on from the oldest retained event", args...)
	l.m.Trimmed.Add(float64(skipped))
	l.pending = nil
}

// deliver POSTs one batch and records it as sent when the receiver
// accepts it. It returns how long to wait before the next step.
func (l *loop) deliver(ctx context.Context, evs []tether.LogEvent) time.Duration {
	body, err := json.Marshal(struct {
		Events []tether.LogEvent `json:"events"`
	}{evs})
	if err != nil { // LogEvent always marshals; never retry a batch that cannot
		l.log.Error("webhook: encoding a batch failed", "err", err, "first", evs[0].ID)
		return l.backoff("webhook: batch not sent", "events", len(evs), "first", evs[0].ID)
	}
	// A POST never outlives the lease: once it runs out another node may
	// send the same events.
	r := l.post(ctx, body, l.renewed.Add(l.ttl()))
	if ctx.Err() != nil {
		return 0
	}
	l.m.Batches.WithLabelValues(r.outcome).Inc()
	if r.outcome != OutcomeOK {
		l.pending = evs
		return l.backoff("webhook batch failed", append(r.logArgs(), "events", len(evs), "first", evs[0].ID)...)
	}
	l.m.Events.Add(float64(len(evs)))
	last := evs[len(evs)-1].ID
	sctx, cancel := l.storeCtx(ctx)
	err = l.store.Sent(sctx, l.cfg.Holder, last)
	cancel()
	switch {
	case ctx.Err() != nil:
		return 0
	case errors.Is(err, tether.ErrLeaseLost):
		l.lose("another node took the lease while a batch was sent; it sends the batch again")
		return time.Until(l.renewAt)
	case err != nil:
		l.pending = nil
		return l.backoff("webhook: recording a delivered batch failed; it will be sent again", "err", err, "events", len(evs), "first", evs[0].ID)
	}
	if l.failures > 0 {
		l.log.Info("webhook delivers again", "failed_attempts", l.failures)
	}
	l.resetFailures()
	l.cursor = last
	return 0
}

// backoff counts a failed attempt, logs it in one line with msg, args and
// the wait, and returns the wait before the next step: MinBackoff doubling
// with each failure in a row, up to MaxBackoff.
func (l *loop) backoff(msg string, args ...any) time.Duration {
	l.failures++
	d := l.cfg.MinBackoff
	for i := 1; i < l.failures && d < l.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, l.cfg.MaxBackoff)
	l.retryAt = time.Now().Add(d)
	l.log.Warn(msg, append(args, "attempt", l.failures, "retry_in", d)...)
	return min(d, time.Until(l.renewAt))
}
