package http_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// notServedYet are operations SPEC section 6 lists and http/openapi.json
// documents before their handlers exist. While server.go registers no
// route for one, the route and exercise checks log it instead of failing;
// once it is registered it is checked like any other.
var notServedYet = map[string]bool{
	"DELETE /v1/messages/{}": true,
	"GET /v1/events":         true,
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// routeKey is "METHOD /path/{}" with every path parameter unnamed.
func routeKey(method, path string) string {
	return strings.ToUpper(method) + " " + pathParam.ReplaceAllString(path, "{}")
}

// documented returns the operations of http/openapi.json: routeKey →
// "METHOD /path/{name}" as the document spells it.
func documented(t *testing.T) map[string]string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(tetherhttp.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	ops := map[string]string{}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				ops[routeKey(method, path)] = strings.ToUpper(method) + " " + path
			}
		}
	}
	return ops
}

// served returns the routes server.go registers on the API mux, as
// routeKeys; patterns without a method (the /v1/ catch-all) are left out.
func served(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "server.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "routes" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a route whose pattern is not a literal", fset.Position(call.Pos()))
				return true
			}
			pattern, _ := strconv.Unquote(lit.Value)
			if method, path, ok := strings.Cut(pattern, " "); ok {
				routes[routeKey(method, path)] = true
			}
			return true
		})
		return false
	})
	if len(routes) == 0 {
		t.Fatal("found no route in server.go's routes()")
	}
	return routes
}

// TestOpenAPIDocument: http/openapi.json is a valid OpenAPI 3.1 document
// (checked against the 3.1 schema), each operation has a unique
// operationId, operations that need a credential document the 401, and
// every object an answer can hold allows no undocumented property.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := libopenapi.NewDocument(tetherhttp.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetSpecInfo().Version; v != "3.1.0" {
		t.Errorf("openapi version %q, want 3.1.0", v)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		t.Fatalf("build model: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("not a valid OpenAPI 3.1 document: %v", e)
		}
	}

	var raw map[string]any
	if err := json.Unmarshal(tetherhttp.OpenAPI(), &raw); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for path, item := range raw["paths"].(map[string]any) {
		for method, o := range item.(map[string]any) {
			op, ok := o.(map[string]any)
			if !ok || method == "parameters" {
				continue
			}
			name := strings.ToUpper(method) + " " + path
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", name)
			} else if other, dup := ids[id]; dup {
				t.Errorf("%s: operationId %s is also %s's", name, id, other)
			}
			ids[id] = name
			responses := op["responses"].(map[string]any)
			if sec, ok := op["security"].([]any); (!ok || len(sec) > 0) && responses["401"] == nil {
				t.Errorf("%s needs a credential but documents no 401", name)
			}
			for status, r := range responses {
				closedSchemas(t, raw, fmt.Sprintf("%s %s", name, status), r, map[string]bool{})
			}
		}
	}
}

// closedSchemas fails t for each object schema under node (a response, a
// media type, a schema) that does not set additionalProperties: false;
// the schema of the OpenAPI document itself is let be.
func closedSchemas(t *testing.T, root map[string]any, where string, node any, seen map[string]bool) {
	t.Helper()
	switch n := node.(type) {
	case []any:
		for _, x := range n {
			closedSchemas(t, root, where, x, seen)
		}
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok {
			if seen[ref] {
				return
			}
			seen[ref] = true
			closedSchemas(t, root, where+" → "+ref, resolve(t, root, ref), seen)
			return
		}
		if _, ok := n["properties"]; ok && !strings.HasPrefix(where, "GET /v1/openapi.json") {
			if n["additionalProperties"] != false {
				t.Errorf("%s: an object of an answer without additionalProperties: false", where)
			}
		}
		for k, x := range n {
			if k != "example" && k != "examples" {
				closedSchemas(t, root, where, x, seen)
			}
		}
	}
}

func resolve(t *testing.T, root map[string]any, ref string) any {
	t.Helper()
	var node any = root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := node.(map[string]any)
		if !ok || m[part] == nil {
			t.Fatalf("unresolved $ref %s", ref)
		}
		node = m[part]
	}
	return node
}

// TestOpenAPIRoutes: every route server.go registers is documented, and
// every documented operation is registered (those of notServedYet are
// logged until they are).
func TestOpenAPIRoutes(t *testing.T) {
	docs, routes := documented(t), served(t)
	for r := range routes {
		if _, ok := docs[r]; !ok {
			t.Errorf("server.go serves %s; http/openapi.json does not document it", r)
		}
	}
	for k, op := range docs {
		switch {
		case routes[k]:
		case notServedYet[k]:
			t.Logf("%s is documented and not served yet (SPEC section 6 lists it)", op)
		default:
			t.Errorf("http/openapi.json documents %s; server.go serves no such route", op)
		}
	}
}

// TestOpenAPIOperations calls every documented operation that is served,
// with its success and error answers, through the node's contract-checked
// client (nodetest.Contract): a call or answer that differs from
// http/openapi.json fails the test.
func TestOpenAPIOperations(t *testing.T) {
	fz := &nodetest.Freezer{}
	n := nodetest.MustOpen(t, nodetest.Options{IO: *ioMode, Wrap: fz.Wrap, Edit: func(h *hub.Config, c *tetherhttp.Config) {
		h.StoreTimeout = 300 * time.Millisecond
		c.AdminListen = "-"
		c.AllowedOrigins = []string{"https://app.example"}
		c.MaxConnections = 2
		c.MaxMessageBytes = 1024
	}})
	t.Cleanup(fz.Unfreeze) // runs first: the node closes on a thawed store
	routes := served(t)

	exerciseHealth(t, n)
	id := exerciseMessages(t, n)
	exerciseDevices(t, n)
	exerciseConnect(t, n)
	if routes["DELETE /v1/messages/{}"] {
		var out map[string]any
		if code := n.API(t, http.MethodDelete, "/v1/messages/"+id, nil, &out); code != http.StatusOK {
			t.Errorf("DELETE /v1/messages/%s: %d %v, want 200", id, code, out)
		}
		n.API(t, http.MethodDelete, "/v1/messages/no-such-message", nil, nil)
	}
	if routes["GET /v1/events"] {
		var out map[string]any
		if code := n.API(t, http.MethodGet, "/v1/events", nil, &out); code != http.StatusOK {
			t.Errorf("GET /v1/events: %d %v, want 200", code, out)
		}
		n.API(t, http.MethodGet, "/v1/events?wait=forever", nil, nil)
	}
	exerciseUnavailable(t, n, fz)

	calls := n.Contract.Calls()
	seen := map[int]bool{}
	for _, op := range sortedKeys(calls) {
		t.Logf("%-40s %v", op, calls[op])
		for s := range calls[op] {
			seen[s] = true
		}
	}
	for k, op := range documented(t) {
		switch {
		case calls[op] != nil:
		case notServedYet[k] && !routes[k]:
			t.Logf("%s: not exercised, not served yet", op)
		default:
			t.Errorf("%s: documented and served, but this test did not call it", op)
		}
	}
	for _, s := range []int{101, 200, 202, 204, 400, 401, 403, 404, 413, 426, 503} {
		if !seen[s] {
			t.Errorf("no documented operation answered %d in this test", s)
		}
	}
	if calls["undocumented"] != nil {
		t.Errorf("this test called undocumented endpoints: %v", calls["undocumented"])
	}
}

// want calls the API with key ("" for none) and fails t unless the status
// is want; the node's Contract checks the answer.
func want(t *testing.T, n *nodetest.Node, key, method, path string, body any, want int) []byte {
	t.Helper()
	var raw json.RawMessage
	if got := n.APIWithKey(t, key, method, path, body, &raw); got != want {
		t.Errorf("%s %s: status %d %s, want %d", method, path, got, raw, want)
	}
	return raw
}

func exerciseHealth(t *testing.T, n *nodetest.Node) {
	resp, err := n.Client.Get(n.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != string(tetherhttp.OpenAPI()) {
		t.Errorf("GET /v1/openapi.json without a key: %d, %d bytes, %v; want 200 and the document", resp.StatusCode, len(body), err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /v1/openapi.json: Content-Type %q, want application/json", ct)
	}
	want(t, n, "", http.MethodGet, "/healthz", nil, http.StatusOK)
	want(t, n, "", http.MethodGet, "/readyz", nil, http.StatusOK)
}

// exerciseMessages publishes, acks, reads and refuses messages; it returns
// the id of a message to group:shop-1 nobody acked.
func exerciseMessages(t *testing.T, n *nodetest.Node) string {
	d := n.Connect(t, "pos-1", "shop-1")
	key := nodetest.APIKey
	var first struct {
		ID string `json:"id"`
	}
	json.Unmarshal(want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": map[string]int{"order": 1}, "ttl_s": 60, "id": "order-1"}, http.StatusAccepted), &first)
	want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": map[string]int{"order": 1}, "ttl_s": 60, "id": "order-1"}, http.StatusOK)
	d.MustNext("message")
	d.Ack(first.ID)
	nodetest.Eventually(t, 5*time.Second, "the ack stored", func() bool { return n.DeliveryState(t, first.ID, "pos-1") == "acked" })
	want(t, n, key, http.MethodGet, "/v1/messages/"+first.ID, nil, http.StatusOK)

	var group struct {
		ID string `json:"id"`
	}
	json.Unmarshal(want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "group:shop-1", "data": nil}, http.StatusAccepted), &group)
	want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "shop-1", "data": 1}, http.StatusBadRequest)
	want(t, n, key, http.MethodPost, "/v1/messages", `{"target":`, http.StatusBadRequest)
	want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": strings.Repeat("x", 2000)}, http.StatusRequestEntityTooLarge)
	want(t, n, "", http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 1}, http.StatusUnauthorized)
	want(t, n, "wrong-key", http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 1}, http.StatusUnauthorized)

	batch := map[string]any{"messages": []any{
		map[string]any{"target": "group:shop-1", "data": "a", "ttl_s": 30},
		map[string]any{"target": "nobody", "data": "b"},
		map[string]any{"target": "device:pos-2"},
	}}
	want(t, n, key, http.MethodPost, "/v1/messages/batch", batch, http.StatusOK)
	want(t, n, key, http.MethodPost, "/v1/messages/batch", map[string]any{"messages": []any{}}, http.StatusBadRequest)
	want(t, n, key, http.MethodPost, "/v1/messages/batch", map[string]any{"messages": []any{map[string]any{"target": "device:pos-1", "data": strings.Repeat("x", 2000)}}}, http.StatusOK)
	want(t, n, "", http.MethodPost, "/v1/messages/batch", batch, http.StatusUnauthorized)

	want(t, n, key, http.MethodGet, "/v1/messages/no-such-message", nil, http.StatusNotFound)
	want(t, n, "", http.MethodGet, "/v1/messages/"+first.ID, nil, http.StatusUnauthorized)
	return group.ID
}

func exerciseDevices(t *testing.T, n *nodetest.Node) {
	key := nodetest.APIKey
	want(t, n, key, http.MethodGet, "/v1/devices/pos-1", nil, http.StatusOK)
	want(t, n, key, http.MethodGet, "/v1/devices/nobody", nil, http.StatusNotFound)
	want(t, n, key, http.MethodGet, "/v1/devices/bad%20id", nil, http.StatusBadRequest)
	want(t, n, "", http.MethodGet, "/v1/devices/pos-1", nil, http.StatusUnauthorized)
	want(t, n, key, http.MethodPut, "/v1/groups/shop-2/devices/pos-9", nil, http.StatusNoContent)
	want(t, n, key, http.MethodGet, "/v1/devices/pos-9", nil, http.StatusOK) // offline: null times
	want(t, n, key, http.MethodGet, "/v1/groups/shop-2", nil, http.StatusOK)
	want(t, n, key, http.MethodGet, "/v1/groups/shop-1", nil, http.StatusOK)
	want(t, n, key, http.MethodGet, "/v1/groups/nobody-here", nil, http.StatusOK)
	want(t, n, key, http.MethodGet, "/v1/groups/bad%20id", nil, http.StatusBadRequest)
	want(t, n, "", http.MethodGet, "/v1/groups/shop-1", nil, http.StatusUnauthorized)
	want(t, n, key, http.MethodDelete, "/v1/groups/shop-2/devices/pos-9", nil, http.StatusNoContent)
	want(t, n, key, http.MethodDelete, "/v1/groups/shop-2/devices/pos-9", nil, http.StatusNoContent)
	want(t, n, key, http.MethodPut, "/v1/groups/bad%20id/devices/pos-9", nil, http.StatusBadRequest)
	want(t, n, key, http.MethodDelete, "/v1/groups/shop-2/devices/bad%20id", nil, http.StatusBadRequest)
	want(t, n, "", http.MethodPut, "/v1/groups/shop-2/devices/pos-9", nil, http.StatusUnauthorized)
	want(t, n, "", http.MethodDelete, "/v1/groups/shop-2/devices/pos-9", nil, http.StatusUnauthorized)
}

// upgrader is a client for handshakes, checked by n's Contract like
// n.Client, that never sends a request on a connection used before: the
// server leaves the connection of a refused upgrade open and unread.
func upgrader(n *nodetest.Node) *http.Client {
	return &http.Client{Transport: n.Contract.Transport(&http.Transport{DisableKeepAlives: true}), Timeout: 10 * time.Second}
}

// upgrade sends a WebSocket handshake to /v1/connect+query with c; header
// adds or (with "") removes handshake headers. The caller closes the
// answer's body (for a 101, the connection).
func upgrade(t *testing.T, n *nodetest.Node, c *http.Client, query string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+"/v1/connect"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Protocol", "tether.v1")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	return resp
}

// wantUpgrade fails t unless a handshake is answered want, and returns
// the answer; the caller closes its body. A 503 for --max-connections is
// tried again for a while: the slot of a refused upgrade is released just
// after its answer.
func wantUpgrade(t *testing.T, n *nodetest.Node, c *http.Client, query string, header map[string]string, want int) *http.Response {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := upgrade(t, n, c, query, header)
		if resp.StatusCode == want {
			return resp
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.Fatalf("upgrade %s with %q: status %d %s, want %d", query, slices.Sorted(maps.Keys(header)), resp.StatusCode, body, want)
	}
}

// exerciseConnect has /v1/connect answer each documented status. The node
// allows 2 connections, one of which pos-1 holds: the refusals come first,
// while there is room.
func exerciseConnect(t *testing.T, n *nodetest.Node) {
	tok := nodetest.MustToken(t, "pos-2", "shop-1")
	c := upgrader(n)
	bearer := "Bearer " + tok
	for _, h := range []struct {
		query  string
		header map[string]string
		want   int
	}{
		{"", nil, http.StatusUnauthorized},
		{"?token=not-a-token", nil, http.StatusUnauthorized},
		{"", map[string]string{"Authorization": bearer, "Origin": "https://evil.example"}, http.StatusForbidden},
		{"", map[string]string{"Authorization": bearer, "Sec-WebSocket-Version": "8"}, http.StatusUpgradeRequired},
		{"", map[string]string{"Authorization": bearer, "Upgrade": ""}, http.StatusBadRequest},
	} {
		wantUpgrade(t, n, c, h.query, h.header, h.want).Body.Close()
	}
	// The same refusals through the WebSocket dialer the other tests use.
	if _, status, _ := n.TryDial("", nil); status != http.StatusUnauthorized {
		t.Errorf("dial without a token: status %d, want 401", status)
	}
	if _, status, _ := n.TryDial(tok, http.Header{"Origin": {"https://evil.example"}}); status != http.StatusForbidden {
		t.Errorf("dial from another origin: status %d, want 403", status)
	}

	open := wantUpgrade(t, n, c, "", map[string]string{"Authorization": bearer, "Origin": "https://app.example"}, http.StatusSwitchingProtocols)
	wantUpgrade(t, n, c, "?token="+tok, nil, http.StatusServiceUnavailable).Body.Close() // at --max-connections
	open.Body.Close()
	wantUpgrade(t, n, c, "?token="+tok, nil, http.StatusSwitchingProtocols).Body.Close()
}

// exerciseUnavailable freezes the store: publishes and readiness answer
// 503 with Retry-After.
func exerciseUnavailable(t *testing.T, n *nodetest.Node, fz *nodetest.Freezer) {
	fz.Freeze(false)
	defer fz.Unfreeze()
	key := nodetest.APIKey
	want(t, n, key, http.MethodPost, "/v1/messages", map[string]any{"target": "device:pos-1", "data": 1}, http.StatusServiceUnavailable)
	want(t, n, key, http.MethodGet, "/v1/devices/pos-1", nil, http.StatusServiceUnavailable)
	nodetest.Eventually(t, 5*time.Second, "readyz 503", func() bool {
		a, err := n.Do(t.Context(), http.MethodGet, "/readyz", nil)
		return err == nil && a.Status == http.StatusServiceUnavailable
	})
	want(t, n, key, http.MethodPost, "/v1/messages/batch", map[string]any{"messages": []any{map[string]any{"target": "device:pos-1", "data": 1}}}, http.StatusServiceUnavailable)
}
