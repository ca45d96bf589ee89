package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tetherpush/tether/wire"
)

// Bounds on what a receiver can make the sender hold or wait for.
const (
	// maxAnswer is the most of an answer's body the sender reads; a longer
	// answer closes its connection.
	maxAnswer = 4 << 10
	// answerReadTimeout bounds reading those bytes after the headers.
	answerReadTimeout = time.Second
	// maxAnswerHeader bounds an answer's headers.
	maxAnswerHeader = 16 << 10
	// maxLoggedAnswer is how much of a refusal's body goes into the log.
	maxLoggedAnswer = 200
)

// result is the outcome of one POST.
type result struct {
	outcome  string // OutcomeOK, OutcomeError, OutcomeTimeout
	status   int    // 0 without an answer
	location string // of a redirect, which is not followed
	answer   []byte // the start of the body
	err      error  // no answer
}

// logArgs describes r for a log line.
func (r result) logArgs() []any {
	args := []any{"outcome", r.outcome}
	if r.err != nil {
		args = append(args, "err", r.err)
	}
	if r.status != 0 {
		args = append(args, "status", r.status)
	}
	if r.location != "" {
		args = append(args, "location", r.location, "hint", "redirects are not followed: set the final URL")
	}
	if len(r.answer) > 0 {
		args = append(args, "answer", string(r.answer[:min(len(r.answer), maxLoggedAnswer)]))
	}
	return args
}

// post sends one signed batch and reads at most maxAnswer bytes of the
// answer. It gives up at Config.Timeout or at leaseEnd, whichever comes
// first, and at once when ctx is done.
func (s *Sender) post(ctx context.Context, body []byte, leaseEnd time.Time) result {
	deadline := time.Now().Add(s.cfg.Timeout)
	if leaseEnd.Before(deadline) {
		deadline = leaseEnd
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return result{outcome: OutcomeError, err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tether-webhook")
	req.Header.Set(wire.SignatureHeader, wire.SignWebhook(s.cfg.Secret, time.Now(), body))
	resp, err := s.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return result{outcome: OutcomeTimeout, err: err}
		}
		return result{outcome: OutcomeError, err: err}
	}
	// A few KiB of the answer, for the log and so that a short answer
	// leaves the connection reusable; closing the body before its end
	// closes the connection, so a huge, endless or slow answer costs
	// nothing more.
	stop := time.AfterFunc(answerReadTimeout, cancel)
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	stop.Stop()
	resp.Body.Close()
	r := result{outcome: OutcomeError, status: resp.StatusCode, answer: answer}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		r.outcome = OutcomeOK
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		r.location = resp.Header.Get("Location")
	}
	return r
}

// newTransport is the sender's HTTP transport: one request at a time to
// one host, every phase bounded.
func newTransport(timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxAnswerHeader,
		MaxIdleConns:           1,
		MaxIdleConnsPerHost:    1,
		MaxConnsPerHost:        2,
		IdleConnTimeout:        time.Minute,
		DisableCompression:     true, // no gzip bomb in an answer
	}
}

// noRedirect makes the client return a redirect as the answer: a failed
// attempt, never a POST of the events to another URL.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
