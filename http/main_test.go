package http_test

import (
	"flag"
	"testing"

	"go.uber.org/goleak"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// ioMode runs the suite on either I/O layer: go test ./http -args -io=goroutine
var ioMode = flag.String("io", "epoll", "WebSocket I/O layer under test: epoll or goroutine")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's cluster client refreshes its slot map on a goroutine
		// that outlives Close by up to its refresh delay (see redis tests).
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// mustOpenNode starts a node (package nodetest) on the I/O layer of -io;
// edit configures it. The node is closed when the test ends.
func mustOpenNode(tb testing.TB, edit func(*hub.Config, *tetherhttp.Config)) *nodetest.Node {
	tb.Helper()
	return nodetest.MustOpen(tb, nodetest.Options{IO: *ioMode, Edit: edit})
}
