package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeNode is an httptest server standing in for POST /v1/messages. It
// records the last request and answers with status and answer.
type fakeNode struct {
	srv    *httptest.Server
	status int
	answer string
	header http.Header

	// last request; read after the command returned
	method, path, auth, contentType string
	body                            map[string]json.RawMessage
}

func newFakeNode(t *testing.T, status int, answer string) *fakeNode {
	t.Helper()
	n := &fakeNode{status: status, answer: answer, header: http.Header{}}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.method, n.path, n.auth, n.contentType = r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		n.body = nil
		_ = json.Unmarshal(b, &n.body)
		for k, v := range n.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(n.status)
		io.WriteString(w, n.answer)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func TestPublish(t *testing.T) {
	n := newFakeNode(t, http.StatusAccepted, `{"id":"01J","recipients":3}`+"\n")
	r := runTether(t, nil, "", "publish", "--url", n.srv.URL+"/", "--api-key", "k1",
		"--target", "group:shop-1", "--data", ` {"order": 1} `, "--ttl", "1h", "--id", "order-1")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != `{"id":"01J","recipients":3}`+"\n" {
		t.Errorf("stdout %q, want the answer", r.stdout)
	}
	if n.method != "POST" || n.path != "/v1/messages" || n.auth != "Bearer k1" || n.contentType != "application/json" {
		t.Errorf("request %s %s, Authorization %q, Content-Type %q", n.method, n.path, n.auth, n.contentType)
	}
	want := map[string]string{"target": `"group:shop-1"`, "data": `{"order":1}`, "ttl_s": "3600", "id": `"order-1"`}
	if len(n.body) != len(want) {
		t.Errorf("body has %d fields, want %d: %v", len(n.body), len(want), n.body)
	}
	for k, v := range want {
		if string(n.body[k]) != v {
			t.Errorf("body %s = %s, want %s", k, n.body[k], v)
		}
	}
}

func TestPublishOmitsOptionalFields(t *testing.T) {
	n := newFakeNode(t, http.StatusAccepted, `{"id":"01J","recipients":1}`)
	r := runTether(t, map[string]string{"TETHER_API_KEY": "env-key", "TETHER_URL": n.srv.URL}, `"from stdin"`,
		"publish", "--target", "device:pos-1", "--data", "-")
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if _, ok := n.body["ttl_s"]; ok {
		t.Error("body has ttl_s although --ttl was not given")
	}
	if _, ok := n.body["id"]; ok {
		t.Error("body has id although --id was not given")
	}
	if string(n.body["data"]) != `"from stdin"` || n.auth != "Bearer env-key" {
		t.Errorf("data %s, Authorization %q", n.body["data"], n.auth)
	}
}

func TestPublishAPIKeyFromDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api-key"), []byte("file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newFakeNode(t, http.StatusOK, `{"id":"01J","recipients":1,"duplicate":true}`)
	r := runTether(t, nil, "", "publish", "--url", n.srv.URL, "--data-dir", dir, "--target", "device:d", "--data", "1")
	if r.code != 0 || n.auth != "Bearer file-key" {
		t.Fatalf("code %d, stderr %q, Authorization %q", r.code, r.stderr, n.auth)
	}

	empty := t.TempDir()
	r = runTether(t, nil, "", "publish", "--url", n.srv.URL, "--data-dir", empty, "--target", "device:d", "--data", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "no API key: pass --api-key, set TETHER_API_KEY, or point --data-dir at a node's data dir") {
		t.Fatalf("without a key: code %d, stderr %q", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Error("publish created files in the data dir")
	}
}

func TestPublishServerError(t *testing.T) {
	n := newFakeNode(t, http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"the store did not answer in time; retry later"}}`)
	n.header.Set("Retry-After", "2")
	r := runTether(t, nil, "", "publish", "--url", n.srv.URL, "--api-key", "k", "--target", "device:d", "--data", "{}")
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("code %d, stdout %q; want 1 and nothing", r.code, r.stdout)
	}
	for _, want := range []string{"503", "the store did not answer in time; retry later", "(unavailable)", "retry after 2 s"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}

	n = newFakeNode(t, http.StatusUnauthorized, `{"error":{"code":"unauthorized","message":"wrong API key"}}`)
	r = runTether(t, nil, "", "publish", "--url", n.srv.URL, "--api-key", "k", "--target", "device:d", "--data", "{}")
	if r.code != 1 || !strings.Contains(r.stderr, "wrong API key") || !strings.Contains(r.stderr, "check --api-key") {
		t.Errorf("401: code %d, stderr %q", r.code, r.stderr)
	}

	n = newFakeNode(t, http.StatusBadGateway, "<html>bad gateway</html>")
	r = runTether(t, nil, "", "publish", "--url", n.srv.URL, "--api-key", "k", "--target", "device:d", "--data", "{}")
	if r.code != 1 || !strings.Contains(r.stderr, "502") || !strings.Contains(r.stderr, "bad gateway") {
		t.Errorf("502: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestPublishTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	r := runTether(t, nil, "", "publish", "--url", srv.URL, "--api-key", "k", "--target", "device:d", "--data", "{}", "--timeout", "200ms")
	if r.code != 1 || !strings.Contains(r.stderr, "no answer within 200ms") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v with --timeout 200ms", el)
	}
}

func TestPublishUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	r := runTether(t, nil, "", "publish", "--url", url, "--api-key", "k", "--target", "device:d", "--data", "{}")
	if r.code != 1 || !strings.Contains(r.stderr, "POST "+url+"/v1/messages") {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
}

// TestPublishValidatesBeforeSending checks that bad input is refused with
// exit code 2 and no request.
func TestPublishValidatesBeforeSending(t *testing.T) {
	n := newFakeNode(t, http.StatusAccepted, `{}`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", "{}"}, "--target is required"},
		{[]string{"--target", "shop-1", "--data", "{}"}, "--target"},
		{[]string{"--target", "store:shop-1", "--data", "{}"}, "kind must be device or group"},
		{[]string{"--target", "group:a b", "--data", "{}"}, "--target"},
		{[]string{"--target", "group:g"}, "--data is required"},
		{[]string{"--target", "group:g", "--data", "{order:1}"}, "not valid JSON"},
		{[]string{"--target", "group:g", "--data", "hello"}, "not valid JSON"},
		{[]string{"--target", "group:g", "--data", "1 2"}, "not valid JSON"},
		{[]string{"--target", "group:g", "--data", "{}", "--ttl", "1500ms"}, "whole seconds"},
		{[]string{"--target", "group:g", "--data", "{}", "--ttl", "-1s"}, "whole seconds"},
		{[]string{"--target", "group:g", "--data", "{}", "--id", "a/b"}, `--id "a/b"`},
		{[]string{"--target", "group:g", "--data", "{}", "--url", "ftp://x"}, "--url"},
		{[]string{"--target", "group:g", "--data", "{}", "--timeout", "0s"}, "--timeout"},
	} {
		n.method = ""
		args := append([]string{"publish", "--url", n.srv.URL, "--api-key", "k"}, tc.args...)
		r := runTether(t, nil, "", args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("publish %q: code %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
		if n.method != "" {
			t.Errorf("publish %q sent a request", tc.args)
		}
	}
}
