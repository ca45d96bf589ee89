package dashboard_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/goleak"

	"github.com/tetherpush/tether/dashboard"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mustOpenNode starts a node (package nodetest) with the dashboard on its
// admin listener and Go and process metrics in its registry, as tether
// serve has them; edit configures it. It is closed when the test ends.
func mustOpenNode(tb testing.TB, edit func(*hub.Config, *tetherhttp.Config, *dashboard.Config)) *nodetest.Node {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var dc dashboard.Config
	return nodetest.MustOpen(tb, nodetest.Options{
		Registry: reg,
		Edit: func(hc *hub.Config, sc *tetherhttp.Config) {
			sc.Registerer = nil // the screenshot registers its own tether_tcp_sockets
			dc = dashboard.Config{Node: hc.Node, Gatherer: reg, TokenSecret: sc.TokenSecret}
			if edit != nil {
				edit(hc, sc, &dc)
			}
		},
		Dashboard: func(n *nodetest.Node, apiAddr string) http.Handler {
			if dc.Online == nil {
				dc.Online = n.Hub.OnlineDevices
			}
			dc.PublicAddr = apiAddr
			return dashboard.New(dc)
		},
	})
}
