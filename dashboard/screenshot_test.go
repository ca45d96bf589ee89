package dashboard_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherpush/tether/dashboard"
	tetherhttp "github.com/tetherpush/tether/http"
	"github.com/tetherpush/tether/hub"
	"github.com/tetherpush/tether/internal/nodetest"
)

// TestDashboardScreenshot drives a node with live traffic for half a minute
// and saves a screenshot of its dashboard to the PNG file that
// TETHER_DASHBOARD_SCREENSHOT names (relative to this directory):
//
//	TETHER_DASHBOARD_SCREENSHOT=../docs/dashboard.png go test -run Screenshot -count=1 ./dashboard
func TestDashboardScreenshot(t *testing.T) {
	out := os.Getenv("TETHER_DASHBOARD_SCREENSHOT")
	if out == "" {
		t.Skip("set TETHER_DASHBOARD_SCREENSHOT=FILE.png to take a screenshot of the dashboard")
	}
	b := MustBrowser(t)
	n := mustOpenNode(t, func(hc *hub.Config, _ *tetherhttp.Config, dc *dashboard.Config) {
		hc.Node, dc.Node = "tether-1", "tether-1"
		hc.AckTimeout = 2 * time.Second
	})
	n.Registry.MustRegister(socketCollector{port: n.Port, desc: prometheus.NewDesc("tether_tcp_sockets",
		"Sockets of the listen port by TCP state.", []string{"state"}, nil)})

	b.Do(t, 15*time.Second, chromedp.EmulateViewport(1440, 900), chromedp.Navigate(n.AdminURL+"/"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range 24 {
		d := n.Connect(t, fmt.Sprintf("pos-%02d", i), fmt.Sprintf("shop-%d", i%4))
		lazy := i%8 == 7 // never acks: redeliveries, then expiry
		wg.Go(func() { runDevice(ctx, d, lazy) })
	}
	wg.Go(func() { publishLoop(ctx, t, n) })

	// Now and then a device's session is replaced (close code 4409) by one
	// that then stays silent (4408 later).
	deadline := time.Now().Add(time.Minute)
	for k := 0; Eval[float64](t, b, `Number(document.body.dataset.seq || 0)`) < 30; k++ {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for half a minute of samples")
		}
		time.Sleep(time.Second)
		if k%4 == 3 {
			n.Connect(t, fmt.Sprintf("pos-%02d", 3+k%2*8), "shop-3")
		}
	}
	png := Run(t, b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d KiB)", out, len(png)>>10)
	if len(png) > 300<<10 {
		t.Errorf("screenshot is %d KiB, want < 300 KiB", len(png)>>10)
	}
	b.MustHaveNoErrors(t)
}

// Run runs an action that returns a value.
func Run[T any](t *testing.T, b *Browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// runDevice reads d's frames until ctx ends, acking messages unless lazy.
func runDevice(ctx context.Context, d *nodetest.Device, lazy bool) {
	stop := context.AfterFunc(ctx, func() { d.Conn.Close() })
	defer func() {
		stop()
		d.Conn.Close()
	}()
	for {
		f, err := d.Next(time.Minute)
		if err != nil {
			return
		}
		if f.Type == "message" && !lazy {
			if d.SendJSON(map[string]any{"type": "ack", "ids": []string{f.ID}}) != nil {
				return
			}
		}
	}
}

// publishLoop publishes to groups and devices at a rate that swells and
// ebbs, some messages with a short TTL.
func publishLoop(ctx context.Context, t *testing.T, n *nodetest.Node) {
	start := time.Now()
	for k := 0; ctx.Err() == nil; k++ {
		target := fmt.Sprintf("group:shop-%d", k%4)
		if k%3 == 0 {
			target = fmt.Sprintf("device:pos-%02d", k%24)
		}
		body := map[string]any{"target": target, "data": map[string]any{"order": k, "total": 12.5 + float64(k%40)}}
		if k%5 == 0 {
			body["ttl_s"] = 4
		}
		if err := post(ctx, n, body); err != nil {
			if ctx.Err() == nil {
				t.Errorf("publish: %v", err)
			}
			return
		}
		phase := time.Since(start).Seconds() / 8
		rate := 30 + 25*math.Sin(phase) // messages per second
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(float64(time.Second) / rate)):
		}
	}
}

// post publishes body without failing the test from another goroutine.
func post(ctx context.Context, n *nodetest.Node, body map[string]any) error {
	a, err := n.Do(ctx, http.MethodPost, "/v1/messages", body)
	if err != nil {
		return err
	}
	if a.Status != http.StatusAccepted {
		return fmt.Errorf("status %d", a.Status)
	}
	return nil
}

// socketCollector exports tether_tcp_sockets{state} for the screenshot,
// counted from /proc/net/tcp like `ss`.
type socketCollector struct {
	port int
	desc *prometheus.Desc
}

func (c socketCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c socketCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := countSockets(c.port)
	if err != nil {
		return
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

var tcpStates = []string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

func countSockets(port int) (map[string]int, error) {
	counts := make(map[string]int)
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[0] == "sl" {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			lp, _ := strconv.ParseInt(hexPort, 16, 32)
			st, _ := strconv.ParseInt(fields[3], 16, 32)
			if int(lp) == port && int(st) < len(tcpStates) {
				counts[tcpStates[st]]++
			}
		}
		f.Close()
	}
	return counts, nil
}
