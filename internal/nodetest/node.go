// Package nodetest starts in-process tether nodes for tests: a hub and its
// HTTP server on real loopback :0 ports, with an admin listener serving
// /metrics from a registry of the node's own, on a bolt store in a
// temporary directory or on a store the test gives. A test then speaks to
// the node as clients do: the HTTP API with the API key (Node.API,
// Node.Publish) and devices on real WebSocket connections sending and
// reading the literal protocol frames (Node.Dial, Device).
//
// Every node shares one token secret and one API key (TokenSecret,
// APIKey), so MustToken mints tokens any node accepts. A Freezer between
// the hub and its store makes store calls hang or fail on demand.
//
// The packages http, fault and dashboard run their end-to-end tests on it;
// their TestMain keeps goleak, so every node must be closed by the end of
// its test (MustOpen sees to it).
package nodetest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/bolt"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
)

// The credentials of every node: the secret its device tokens are signed
// with and the key of its HTTP API.
const (
	TokenSecret = "test-token-secret"
	APIKey      = "test-api-key"
)

// Options configures a node. The zero value is a node named n1 on a bolt
// store in a new temporary directory, with a 5 s heartbeat and ack timeout
// and 4 workers, the server's default I/O layer, and both listeners on
// 127.0.0.1:0.
type Options struct {
	// Dir is the data directory of the bolt store (its file is tether.db);
	// "" for a new temporary directory, removed when the node closes. A
	// node opened again on the same Dir finds what the last one stored.
	// Unused with Store.
	Dir string
	// Store, when set, is the store the node runs on instead of bolt (a
	// Redis store the test opened). The node owns it: Close closes it, and
	// so does an Open that fails.
	Store tether.Store
	// Wrap, when set, puts a store between the hub and Store (a Freezer, a
	// store that answers slowly); Node.Store stays the store underneath,
	// so a test can read it past the wrapper.
	Wrap func(tether.Store) tether.Store
	// IO is the WebSocket I/O layer (http.Config.IO): "epoll",
	// "goroutine", or "" for the server's default.
	IO string
	// Registry serves /metrics and gets the hub's metrics and the server's
	// collectors; nil for a new one.
	Registry *prometheus.Registry
	// Edit, when set, adjusts the hub's and the server's configuration
	// after the defaults are filled in and before either is built.
	Edit func(*hub.Config, *tetherhttp.Config)
	// Dashboard, when set, builds the admin listener's "/" handler once
	// the API listener is bound at apiAddr (http.Config.Dashboard). It is
	// called from Open with n's Hub, Store, Registry and Metrics set, so
	// that the dashboard package's tests can attach it without this
	// package importing it.
	Dashboard func(n *Node, apiAddr string) http.Handler
}

// Node is one in-process tether node. Its fields are set by Open and must
// not be changed.
type Node struct {
	Hub    *hub.Hub           // the delivery engine
	Server *tetherhttp.Server // the API, WebSocket and admin listeners
	// Store is the store the node runs on, behind Options.Wrap if any.
	Store tether.Store
	// Metrics are the hub's metrics, registered on Registry.
	Metrics  *hub.Metrics
	Registry *prometheus.Registry
	// Client makes the node's API calls (Do, API, Publish); Close closes
	// its idle connections. Every call it makes is checked against the
	// OpenAPI document by Contract.
	Client *http.Client
	// Contract checks Client's calls against http/openapi.json; MustOpen
	// and the helpers that take a testing.TB report its mismatches.
	Contract *Contract

	URL      string // http://127.0.0.1:port, the API listener
	WSURL    string // ws://127.0.0.1:port; devices connect to WSURL + "/v1/connect"
	AdminURL string // http://127.0.0.1:port of the admin listener; "" when disabled
	Port     int    // the API listener's port
	Dir      string // the bolt store's data directory; "" on a store the test gave

	tempDir   bool // Dir was made by Open: Close removes it
	opened    bool // Server.Open succeeded
	closeOnce sync.Once
}

// MustOpen starts a node and closes it when the test ends; it fails the
// test if the node does not start. Without Options.Dir the bolt store is
// in a directory of tb.TempDir.
func MustOpen(tb testing.TB, o Options) *Node {
	tb.Helper()
	if o.Dir == "" && o.Store == nil {
		o.Dir = tb.TempDir()
	}
	n, err := Open(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Contract.Report(tb) }) // runs after Close
	tb.Cleanup(n.Close)
	return n
}

// Open starts a node: the store, the hub, then the server, whose listeners
// are bound when Open returns. It needs no testing.TB, for property tests
// (rapid) and for nodes started from other goroutines; the caller must
// Close the node. On error everything opened is closed again, the store
// the test gave included.
func Open(o Options) (n *Node, err error) {
	n = &Node{Store: o.Store, Dir: o.Dir, Registry: o.Registry}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	if n.Store == nil {
		if n.Dir == "" {
			if n.Dir, err = os.MkdirTemp("", "tether-node-"); err != nil {
				return n, fmt.Errorf("open node: %w", err)
			}
			n.tempDir = true
		}
		st, err := bolt.Open(filepath.Join(n.Dir, "tether.db"), bolt.Options{})
		if err != nil {
			return n, fmt.Errorf("open store: %w", err)
		}
		n.Store = st
	} else {
		n.Dir = ""
	}
	if n.Registry == nil {
		n.Registry = prometheus.NewRegistry()
	}
	hc := hub.Config{Node: "n1", Heartbeat: 5 * time.Second, AckTimeout: 5 * time.Second,
		Metrics: hub.NewMetrics(n.Registry), Workers: 4}
	sc := tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		TokenSecret: []byte(TokenSecret), APIKey: APIKey,
		Gatherer: n.Registry, Registerer: n.Registry, IO: o.IO}
	if o.Edit != nil {
		o.Edit(&hc, &sc)
	}
	n.Metrics = hc.Metrics
	st := n.Store
	if o.Wrap != nil {
		st = o.Wrap(st)
	}
	h := hub.New(st, hc)
	if err := h.Open(); err != nil {
		return n, fmt.Errorf("open hub: %w", err)
	}
	n.Hub = h
	if o.Dashboard != nil {
		sc.Dashboard = func(apiAddr string) http.Handler { return o.Dashboard(n, apiAddr) }
	}
	n.Server = tetherhttp.NewServer(h, sc)
	if err := n.Server.Open(); err != nil {
		return n, fmt.Errorf("open server: %w", err)
	}
	n.opened = true
	addr := n.Server.Addr()
	n.URL, n.WSURL = "http://"+addr, "ws://"+addr
	if a := n.Server.AdminAddr(); a != "" {
		n.AdminURL = "http://" + a
	}
	_, port, _ := net.SplitHostPort(addr)
	n.Port, _ = strconv.Atoi(port)
	if n.Contract, err = newContract(); err != nil {
		return n, err
	}
	n.Client = &http.Client{Transport: n.Contract.Transport(&http.Transport{MaxIdleConnsPerHost: 64}), Timeout: 30 * time.Second}
	return n, nil
}

// Close stops the node at once, as a crash would: the hub, the server,
// then the store, and removes a temporary data directory. It is
// idempotent; a store the test closed first (a node losing its store) is
// closed again, which stores allow.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		if n.Hub != nil {
			n.Hub.Close()
		}
		if n.opened {
			n.Server.Close()
		}
		if n.Store != nil {
			n.Store.Close()
		}
		if n.Client != nil {
			n.Client.CloseIdleConnections()
		}
		if n.tempDir {
			os.RemoveAll(n.Dir)
		}
	})
}

// MustToken mints a device token for device in groups, valid for an hour,
// signed with TokenSecret.
func MustToken(tb testing.TB, device string, groups ...string) string {
	tb.Helper()
	tok, err := token.Sign([]byte(TokenSecret), token.Claims{Device: device, Groups: groups, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// Eventually polls cond every 10 ms until it holds, and fails the test
// naming what it waited for if timeout passes first.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
