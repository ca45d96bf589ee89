package nodetest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestContractCatches: the contract check reports answers and accepted
// requests that differ from http/openapi.json, and lets refused hostile
// requests be. A fake server gives the answers.
func TestContractCatches(t *testing.T) {
	c, err := newContract()
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		status int
		header map[string]string
		body   string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for k, v := range answer.header {
			w.Header().Set(k, v)
		}
		if answer.body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(answer.status)
		io.WriteString(w, answer.body)
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: c.Transport(tr)}

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		header                   map[string]string
		answer                   string
		wantErr                  string // "" for none
	}{
		{"health", "GET", "/healthz", "", 200, nil, `{"status":"ok"}`, ""},
		{"undocumented field", "GET", "/healthz", "", 200, nil, `{"status":"ok","extra":1}`, "additional properties 'extra'"},
		{"undocumented status", "GET", "/v1/devices/d1", "", 418, nil, `{"error":{"code":"invalid","message":"x"}}`, "418"},
		{"undocumented error code", "GET", "/v1/devices/d1", "", 404, nil, `{"error":{"code":"gone","message":"x"}}`, "response body"},
		{"503 without Retry-After", "GET", "/readyz", "", 503, nil, `{"status":"unavailable","reason":"x"}`, "Retry-After"},
		{"503 with Retry-After", "GET", "/readyz", "", 503, map[string]string{"Retry-After": "2"}, `{"status":"unavailable","reason":"x"}`, ""},
		{"undocumented path refused", "GET", "/v1/nope", "", 404, nil, `{"error":{"code":"not_found","message":"x"}}`, ""},
		{"undocumented path served", "GET", "/v1/nope", "", 200, nil, `{}`, "not in the document"},
		{"bad request refused", "POST", "/v1/messages", `{"target":"nobody","data":1}`, 400, nil, `{"error":{"code":"invalid","message":"x"}}`, ""},
		{"bad request accepted", "POST", "/v1/messages", `{"target":"nobody","data":1}`, 202, nil, `{"id":"m1","recipients":1}`, "request"},
	} {
		answer.status, answer.header, answer.body = tc.status, tc.header, tc.answer
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+APIKey)
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.mu.Lock()
		errs := c.errs
		c.errs = nil
		c.mu.Unlock()
		got := strings.Join(errs, "\n")
		switch {
		case tc.wantErr == "" && len(errs) > 0:
			t.Errorf("%s: reported %s; want nothing", tc.name, got)
		case tc.wantErr != "" && !strings.Contains(got, tc.wantErr):
			t.Errorf("%s: reported %q; want a mismatch naming %q", tc.name, got, tc.wantErr)
		}
	}
}
