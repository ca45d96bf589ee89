package nodetest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	valerrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	tetherhttp "github.com/tetherpush/tether/http"
)

// Every API call a node's Client makes goes through a Contract check: the
// request and the answer are validated against the OpenAPI 3.1 document
// the node serves at /v1/openapi.json (tetherhttp.OpenAPI), with
// libopenapi-validator. A mismatch fails the test that opened the node
// (MustOpen) or that made the call (API, Publish, DeliveryState...).
//
// The rules, so that tests may still send hostile requests on purpose:
//   - an answer to a documented operation must match the document: its
//     status listed, its Content-Type and body schema (answers' objects
//     allow no undocumented property) and its required headers, such as
//     Retry-After on 503;
//   - a request that does not match the document must not be accepted:
//     it is reported only when the node answered it 2xx or 101;
//   - a path or method the document does not describe must not answer
//     2xx or 101.

// contractModel is the document, parsed once per test binary.
type contractModel struct {
	model *v3.Document
	v     validator.Validator
}

var loadContract = sync.OnceValues(func() (*contractModel, error) {
	doc, err := libopenapi.NewDocument(tetherhttp.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapi model: %w", err)
	}
	v := validator.NewValidatorFromV3Model(&m.Model, config.WithFormatAssertions())
	return &contractModel{model: &m.Model, v: v}, nil
})

// Contract records what a node's API calls did against the document.
type Contract struct {
	m *contractModel

	mu    sync.Mutex             // guards following
	calls map[string]map[int]int // "GET /v1/messages/{id}" → status → count
	errs  []string               // mismatches not reported yet
}

func newContract() (*Contract, error) {
	m, err := loadContract()
	if err != nil {
		return nil, err
	}
	return &Contract{m: m, calls: map[string]map[int]int{}}, nil
}

// Calls returns, for each operation of the document that was called
// ("GET /v1/messages/{id}"), how many answers of each status it got.
// Calls to paths or methods the document does not describe are under
// "undocumented".
func (c *Contract) Calls() map[string]map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[int]int, len(c.calls))
	for op, st := range c.calls {
		out[op] = make(map[int]int, len(st))
		for s, k := range st {
			out[op][s] = k
		}
	}
	return out
}

// Report fails tb with every mismatch seen since the last Report.
func (c *Contract) Report(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	errs := c.errs
	c.errs = nil
	c.mu.Unlock()
	for _, e := range errs {
		tb.Errorf("OpenAPI contract (http/openapi.json): %s", e)
	}
}

// Transport returns a RoundTripper that makes calls with next and checks
// each against the document. A 101 answer is checked at once; any other
// answer is read whole and checked when its body is closed, so that the
// check does not count in the caller's timing.
func (c *Contract) Transport(next http.RoundTripper) http.RoundTripper {
	return &contractTransport{c: c, next: next}
}

type contractTransport struct {
	c    *Contract
	next http.RoundTripper
}

// RoundTrip sends req and checks the request and its answer against the
// document once the answer's body is read.
func (t *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
		req = r
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.c.check(req, reqBody, resp, nil)
		return resp, nil
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = &checkedBody{Reader: bytes.NewReader(raw), check: func() { t.c.check(req, reqBody, resp, raw) }}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// checkedBody is a read answer body whose Close runs the contract check.
type checkedBody struct {
	*bytes.Reader
	once  sync.Once
	check func()
}

// Close closes the body and runs the check of its answer once.
func (b *checkedBody) Close() error {
	b.once.Do(b.check)
	return nil
}

// check validates one call; raw is the answer's body (nil for a 101).
func (c *Contract) check(req *http.Request, reqBody []byte, resp *http.Response, raw []byte) {
	status := resp.StatusCode
	accepted := status == http.StatusSwitchingProtocols || (status >= 200 && status < 300)
	call := fmt.Sprintf("%s %s", req.Method, req.URL.RequestURI())
	answer := *resp
	answer.Body = io.NopCloser(bytes.NewReader(raw))
	_, answerErrs := c.m.v.ValidateHttpResponse(fresh(req, reqBody), &answer)
	item, pathErrs, path := paths.FindPath(fresh(req, reqBody), c.m.model, nil)
	if item == nil || len(pathErrs) > 0 || unmatched(answerErrs) {
		// No operation of the document: a concrete path wins over a
		// template, so GET /v1/messages/batch is not GET /v1/messages/{id}.
		c.record("undocumented", status)
		if accepted {
			c.fail("%s: not in the document, yet answered %d", call, status)
		}
		return
	}
	c.record(req.Method+" "+path, status)
	var problems []string
	if accepted {
		if ok, errs := c.m.v.ValidateHttpRequestSync(fresh(req, reqBody)); !ok {
			problems = append(problems, "request: "+describe(errs))
		}
	}
	if len(answerErrs) > 0 {
		problems = append(problems, "answer: "+describe(answerErrs))
	}
	if len(problems) > 0 {
		c.fail("%s (%s) → %d %s: %s", call, path, status, clip(raw), strings.Join(problems, "; "))
	}
}

// unmatched reports whether the validator found no operation for a call.
func unmatched(errs []*valerrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation {
			return true
		}
	}
	return false
}

// checkRefusal checks the answer of an upgrade to url that Dial saw
// refused, as if the handshake had gone through Transport.
func (c *Contract) checkRefusal(url, tok string, header http.Header, de *DialError) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil || de.Header == nil {
		return
	}
	if header != nil {
		req.Header = header.Clone()
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Protocol", "tether.v1")
	resp := &http.Response{StatusCode: de.Status, Header: de.Header, Request: req}
	c.check(req, nil, resp, de.Body)
}

// fresh is req with its body readable from the start again.
func fresh(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		r.Body = http.NoBody
	}
	return r
}

func (c *Contract) record(op string, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls[op] == nil {
		c.calls[op] = map[int]int{}
	}
	c.calls[op][status]++
}

func (c *Contract) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// describe lists the validator's findings, most specific first.
func describe(errs []*valerrors.ValidationError) string {
	var out []string
	for _, e := range errs {
		s := e.Message
		if e.Reason != "" {
			s += ": " + e.Reason
		}
		for _, f := range e.SchemaValidationErrors {
			where := f.FieldPath
			if where == "" {
				where = f.KeywordLocation
			}
			s += fmt.Sprintf(" [%s: %s]", where, f.Reason)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// clip shortens an answer body for a failure message.
func clip(b []byte) string {
	const max = 300
	if len(b) > max {
		return fmt.Sprintf("%q…", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
