package check_test

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/bolt"
	"github.com/tetherpush/tether/check"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/token"
	"github.com/tetherpush/tether/wire"
)

const tetherSecret = "check-test-secret"

// MustOpenNode starts an in-process tether node on a real embedded store,
// a loopback :0 port and the WebSocket I/O layer ioLayer, and returns its WebSocket URL. The node is closed when the test
// ends.
func MustOpenNode(tb testing.TB, ioLayer string) string {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(tb.TempDir(), "tether.db"), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := hub.New(st, hub.Config{Node: "n1", Heartbeat: 5 * time.Second, Metrics: hub.NewMetrics(reg), Workers: 4, Logger: log})
	if err := h.Open(); err != nil {
		tb.Fatalf("open hub: %v", err)
	}
	srv := tetherhttp.NewServer(h, tetherhttp.Config{Listen: "127.0.0.1:0", AdminListen: "-",
		TokenSecret: []byte(tetherSecret), APIKey: "k", Logger: log, IO: ioLayer})
	if err := srv.Open(); err != nil {
		tb.Fatalf("open server: %v", err)
	}
	tb.Cleanup(func() {
		h.Close()
		srv.Close()
		st.Close()
	})
	return "ws://" + srv.Addr() + wire.Path
}

// MustTokens mints a token for each of n devices.
func MustTokens(tb testing.TB, n int) []string {
	tb.Helper()
	toks := make([]string, n)
	for i := range toks {
		tok, err := token.Sign([]byte(tetherSecret), token.Claims{Device: fmt.Sprintf("check-%d", i), ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			tb.Fatal(err)
		}
		toks[i] = tok
	}
	return toks
}

// nodeIO is the I/O layer of the tether nodes under test:
// go test ./check -args -io=epoll. The default is the goroutine layer
// while http/poll.go's wait loop panics when epoll_wait returns EINTR
// (n = -1 reaches make); the check passes on both layers otherwise.
var nodeIO = flag.String("io", "goroutine", "WebSocket I/O layer of the tether node under test: epoll or goroutine")

// TestTetherNodePasses checks a real tether node, one token per
// connection.
func TestTetherNodePasses(t *testing.T) {
	t.Parallel()
	url := MustOpenNode(t, *nodeIO)
	rep := MustRun(t, check.Config{URL: url, Tokens: MustTokens(t, 5), Subprotocols: []string{wire.Subprotocol}})
	wantStatus(t, rep, check.Pass, check.Pass, check.Pass, check.Pass, check.Pass, check.Info)
	c := rep.Checks
	if c.Connect.Subprotocol != wire.Subprotocol {
		t.Errorf("subprotocol %q, want %q", c.Connect.Subprotocol, wire.Subprotocol)
	}
	if c.HalfClose.Probed != 3 || c.HalfClose.Closed != 3 || c.HalfClose.ClosedAfter.Max > 1000 {
		t.Errorf("half-close %+v, want 3 closed within the 1s of SPEC rule 3", c.HalfClose)
	}
	if tn := c.ServerPings.Tether; tn == nil || tn.Node != "n1" || tn.HeartbeatMS != 5000 {
		t.Errorf("tether node %+v, want n1 with heartbeat 5000 ms", tn)
	}
	if c.ServerPings.DataFrames != 5 {
		t.Errorf("data frames %d, want the 5 welcomes", c.ServerPings.DataFrames)
	}
}

// TestTetherNodeHeaderAuth passes one token in --header's way.
func TestTetherNodeHeaderAuth(t *testing.T) {
	t.Parallel()
	url := MustOpenNode(t, *nodeIO)
	tok := MustTokens(t, 1)[0]
	rep := MustRun(t, check.Config{URL: url, Conns: 1, Hold: time.Second, Header: http.Header{"Authorization": {"Bearer " + tok}}})
	// One connection: the FIN probe runs, the close probe has none left.
	wantStatus(t, rep, check.Pass, check.Pass, check.Pass, check.Skip, check.Pass, check.Info)
}

// TestTetherNodeSharedToken shows what one device's token on several
// connections does: each new session replaces the previous one (4409).
func TestTetherNodeSharedToken(t *testing.T) {
	t.Parallel()
	url := MustOpenNode(t, *nodeIO)
	tok := MustTokens(t, 1)[0]
	rep := MustRun(t, check.Config{URL: url, Conns: 3, Hold: time.Second, Parallel: 1,
		Header: http.Header{"Authorization": {"Bearer " + tok}}})
	ih := rep.Checks.IdleHold
	if ih.Status != check.Fail || ih.Closed != 2 || ih.Held != 1 {
		t.Fatalf("idle hold %+v, want 2 of 3 closed", ih)
	}
	if len(ih.Codes) != 1 || ih.Codes[0].Code != wire.CloseReplaced || !strings.Contains(ih.Summary, "--tokens") {
		t.Errorf("idle hold %+v, want 4409 and the --tokens hint", ih)
	}
}
