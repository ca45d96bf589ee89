package fault_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
	"github.com/tetherpush/tether/redis"
)

// Scale of the suite. The defaults are the scaled-down CI run; -full (or
// TETHER_FAULT_FULL=1) is the full one, and each flag overrides it:
//
//	go test -race ./fault/                                   # scaled
//	go test -race -timeout 30m ./fault/ -args -full          # full
//	go test ./fault/ -args -devices 2000 -outage 20s         # by hand
var (
	fullFlag    = flag.Bool("full", os.Getenv("TETHER_FAULT_FULL") != "", "run at full scale (thousands of devices, 30 s faults)")
	devicesFlag = flag.Int("devices", 0, "devices held open through the Redis faults (default 300; full 3000)")
	outageFlag  = flag.Duration("outage", 0, "length of each Redis fault (default 5s; full 30s)")
	callersFlag = flag.Int("callers", 0, "pool size of the incident replay; callers are twice as many (default 50; full 300)")
)

func scaled(flagVal, small, full int) int {
	switch {
	case flagVal > 0:
		return flagVal
	case *fullFlag:
		return full
	}
	return small
}

func devicesN() int { return scaled(*devicesFlag, 300, 3000) }
func callersN() int { return scaled(*callersFlag, 50, 300) }
func outageD() time.Duration {
	return time.Duration(scaled(int(*outageFlag), int(5*time.Second), int(30*time.Second)))
}

func TestMain(m *testing.M) {
	if os.Getenv(redigoChildEnv) != "" {
		os.Exit(redigoChild(os.Getenv(redigoChildEnv)))
	}
	goleak.VerifyTestMain(m,
		// Same as http/main_test.go: rueidis refreshes and delays on
		// goroutines that outlive Close by up to their delay.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// redisOptions returns the options of a store on the Redis at url under a
// key prefix of its own.
func redisOptions(url string) redis.Options {
	return redis.Options{URL: url, Prefix: fmt.Sprintf("f%d", time.Now().UnixNano()), ConnTimeout: 2 * time.Second}
}

// openNode starts a node (package nodetest) on a Redis store opened with
// ro: the fleet setup of http/fleet_test.go with the suite's short timers,
// no logs and no admin listener; edit adjusts its configuration. It needs
// no testing.TB, so that TestChaos's monkey can restart nodes; the caller
// closes the node.
func openNode(ro redis.Options, edit func(*hub.Config, *tetherhttp.Config)) (*nodetest.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redis.Open(ctx, ro)
	if err != nil {
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	return nodetest.Open(nodetest.Options{Store: st, Edit: func(h *hub.Config, c *tetherhttp.Config) {
		h.Node, h.Heartbeat, h.AckTimeout, h.StoreTimeout, h.Workers = "fault-1", 2*time.Second, 2*time.Second, time.Second, 8
		h.Fleet, h.Logger = st.Fleet(), slog.New(slog.DiscardHandler)
		c.AdminListen, c.Logger = "-", slog.New(slog.DiscardHandler)
		if edit != nil {
			edit(h, c)
		}
	}})
}

// mustOpenNode is openNode failing the test on error; the node is closed
// when the test ends.
func mustOpenNode(tb testing.TB, ro redis.Options, edit func(*hub.Config, *tetherhttp.Config)) *nodetest.Node {
	tb.Helper()
	n, err := openNode(ro, edit)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Close)
	return n
}
