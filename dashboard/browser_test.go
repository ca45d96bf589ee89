package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tetherpush/tether/internal/nodetest"
)

// browserLife bounds everything one test does in the browser.
const browserLife = 2 * time.Minute

// Browser is a headless Chromium tab; it records the page's errors.
type Browser struct {
	ctx context.Context

	mu   sync.Mutex // guards following
	errs []string
}

// findChromium returns the path of Debian's chromium, or "".
func findChromium() string {
	if p := os.Getenv("TETHER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// MustBrowser starts a headless Chromium with a fresh profile and opens a
// tab. Without chromium the test is skipped, or fails when CI is set. The
// browser is stopped, and its goroutines ended, when the test ends.
func MustBrowser(t *testing.T) *Browser {
	t.Helper()
	path := findChromium()
	if path == "" {
		const how = "chromium is not installed: apt-get update && apt-get install -y chromium (or set TETHER_CHROMIUM to a Chromium binary)"
		if os.Getenv("CI") != "" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Without these, chromium reaches for the network, which is closed
		// on build machines.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	}
	b := &Browser{}
	life, cancelLife := context.WithTimeout(context.Background(), browserLife)
	actx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process
		cancelLife()
	})
	b.ctx = ctx
	// The first Do starts the browser; it must use the tab's own context
	// (a derived one would stop the browser when it ends). life bounds it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return b
}

// listen records exceptions, console errors and failed loads.
func (b *Browser) listen(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + e.ExceptionDetails.Text
		if ex := e.ExceptionDetails.Exception; ex != nil {
			msg += " " + ex.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var args []string
		for _, a := range e.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		msg = "console.error: " + strings.Join(args, " ")
	case *cdplog.EventEntryAdded:
		if e.Entry.Level != cdplog.EntryLevelError {
			return
		}
		msg = "log: " + e.Entry.Text + " " + e.Entry.URL
	default:
		return
	}
	b.mu.Lock()
	b.errs = append(b.errs, msg)
	b.mu.Unlock()
}

// MustHaveNoErrors fails the test if the page reported errors.
func (b *Browser) MustHaveNoErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Errorf("page error: %s", e)
	}
}

// Do runs steps within timeout.
func (b *Browser) Do(t *testing.T, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression in the page.
func Eval[T any](t *testing.T, b *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Text returns the text of the first element matching the CSS selector,
// or "" when there is none.
func (b *Browser) Text(t *testing.T, selector string) string {
	t.Helper()
	return Eval[string](t, b, fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, selector))
}

// WaitJS polls a JavaScript boolean expression until it holds.
func (b *Browser) WaitJS(t *testing.T, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if Eval[bool](t, b, "Boolean("+expr+")") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (%s)", timeout, what, expr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitText polls until the element's text is want.
func (b *Browser) WaitText(t *testing.T, timeout time.Duration, selector, want string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := b.Text(t, selector)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s shows %q, want %q", timeout, selector, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBrowserDashboardShowsLiveNumbers(t *testing.T) {
	b := MustBrowser(t)
	n := mustOpenNode(t, nil)

	b.Do(t, 15*time.Second, chromedp.Navigate(n.AdminURL+"/"), chromedp.WaitVisible(chromedp.ID("connections")))
	b.WaitText(t, 10*time.Second, "#connections", "0")
	b.WaitText(t, 5*time.Second, "#node", "node n1")

	d1 := n.Connect(t, "pos-1", "shop-1")
	n.Connect(t, "pos-2", "shop-1")
	b.WaitText(t, 10*time.Second, "#connections", "2")
	b.WaitJS(t, 10*time.Second, "both devices listed",
		`document.querySelectorAll('#devices tr[data-device]').length === 2 && document.querySelector('#devices tr[data-device="pos-1"]') !== null`)
	b.WaitText(t, 5*time.Second, "#devices-total", "2")

	for i := range 3 {
		n.Publish(t, "group:shop-1", map[string]int{"order": i})
	}
	b.WaitText(t, 10*time.Second, "#total-published", "3")
	b.WaitText(t, 10*time.Second, "#total-delivered", "6")
	b.WaitJS(t, 10*time.Second, "a delivery latency", `document.querySelector('#lat-p50').textContent.endsWith('s')`)
	b.WaitJS(t, 10*time.Second, "store calls listed", `document.querySelectorAll('#store-ops tr td.num').length > 0`)
	if g := b.Text(t, "#goroutines"); g == "—" || g == "" {
		t.Errorf("goroutines shows %q", g)
	}
	if r := b.Text(t, "#resident"); !strings.HasSuffix(r, "iB") {
		t.Errorf("resident memory shows %q", r)
	}

	// The numbers keep updating: a new sample every second.
	seq := Eval[string](t, b, `document.body.dataset.seq`)
	b.WaitJS(t, 5*time.Second, "a newer sample", fmt.Sprintf(`Number(document.body.dataset.seq) > %s`, seq))

	d1.Conn.Close()
	b.WaitText(t, 10*time.Second, "#connections", "1")
	b.WaitText(t, 10*time.Second, "#devices-total", "1")

	// The filter asks the node for a prefix.
	b.Do(t, 5*time.Second, chromedp.SendKeys(chromedp.ID("device-filter"), "nobody"))
	b.WaitJS(t, 5*time.Second, "an empty filtered list", `document.querySelector('#devices').textContent.includes('no device id starts with nobody')`)
	b.MustHaveNoErrors(t)
}

func TestBrowserDemoDeviceReceivesAndAcks(t *testing.T) {
	b := MustBrowser(t)
	n := mustOpenNode(t, nil)

	b.Do(t, 15*time.Second,
		chromedp.Navigate(n.AdminURL+"/demo"),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.SetValue(chromedp.ID("device"), "demo-1"),
		chromedp.SetValue(chromedp.ID("groups"), "shop-1, shop-2"),
		chromedp.Click(chromedp.ID("connect")),
	)
	b.WaitText(t, 10*time.Second, "#state", "connected")
	b.WaitText(t, 5*time.Second, "#welcome-node", "n1")
	if got, want := b.Text(t, "#gateway"), n.WSURL+"/v1/connect"; got != want {
		t.Errorf("gateway %q, want %q", got, want)
	}

	id := n.Publish(t, "device:demo-1", map[string]string{"hello": "browser"})
	row := fmt.Sprintf(`li[data-id=%q]`, id)
	b.WaitJS(t, 10*time.Second, "the message acked on the page", `document.querySelector('`+row+`.acked') !== null`)
	if got := b.Text(t, row+" pre"); !strings.Contains(got, `"hello": "browser"`) {
		t.Errorf("message shows %q", got)
	}
	if got := b.Text(t, row+" .target"); got != "device:demo-1" {
		t.Errorf("target shows %q", got)
	}
	nodetest.Eventually(t, 10*time.Second, "the message acked in the store", func() bool { return n.DeliveryState(t, id, "demo-1") == "acked" })

	// A group named in the demo token delivers too; acks are batched.
	var ids []string
	for i := range 5 {
		ids = append(ids, n.Publish(t, "group:shop-2", map[string]int{"n": i}))
	}
	for _, id := range ids {
		nodetest.Eventually(t, 10*time.Second, "group message "+id+" acked", func() bool { return n.DeliveryState(t, id, "demo-1") == "acked" })
	}
	b.WaitText(t, 5*time.Second, "#acked", "6")
	stats := Eval[struct{ Received, Duplicates, Failed int }](t, b, `window.demoClient.stats`)
	if stats.Received != 6 || stats.Duplicates != 0 || stats.Failed != 0 {
		t.Errorf("client stats %+v, want 6 received", stats)
	}

	// A newer connection of the same device replaces the page's (4409),
	// and the client does not fight back.
	n.Connect(t, "demo-1")
	b.WaitText(t, 10*time.Second, "#state", "closed")
	if got := b.Text(t, "#state-info"); !strings.HasPrefix(got, "4409") {
		t.Errorf("state info %q, want the 4409 close", got)
	}
	b.MustHaveNoErrors(t)
}

func TestBrowserClientDedupsRedeliveries(t *testing.T) {
	b := MustBrowser(t)
	n := mustOpenNode(t, nil)
	b.Do(t, 15*time.Second, chromedp.Navigate(n.AdminURL+"/demo"), chromedp.WaitReady(chromedp.ID("connect")))

	// A client whose handler fails once: the message is not acked, comes
	// back on the next connection with attempt 2, and is handled then; an
	// id seen again after it was handled is acked without the handler.
	tok := nodetest.MustToken(t, "dedup-1")
	script := fmt.Sprintf(`(() => {
	  window.calls = [];
	  let failed = false;
	  window.c = new TetherClient({
	    url: %q, token: %q, minBackoffMs: 50, maxBackoffMs: 200,
	    onMessage: (m) => {
	      window.calls.push(m.id + "#" + m.attempt);
	      if (!failed) { failed = true; throw new Error("first try fails"); }
	    },
	  });
	  window.c.connect();
	  return true;
	})()`, n.WSURL+"/v1/connect", tok)
	Eval[bool](t, b, script)
	b.WaitJS(t, 10*time.Second, "the client connected", `window.c.state === 'connected'`)

	id := n.Publish(t, "device:dedup-1", "x")
	b.WaitJS(t, 10*time.Second, "the failed first try", `window.calls.length === 1`)
	// Drop the connection from the page: the unacked message is sent again
	// on the next session.
	Eval[bool](t, b, `window.c._ws.close(); true`)
	b.WaitJS(t, 10*time.Second, "the redelivery handled", `window.calls.length === 2`)
	nodetest.Eventually(t, 10*time.Second, "the message acked", func() bool { return n.DeliveryState(t, id, "dedup-1") == "acked" })

	calls := Eval[[]string](t, b, `window.calls`)
	if len(calls) != 2 || calls[0] != id+"#1" || !strings.HasPrefix(calls[1], id+"#") || calls[1] == id+"#1" {
		t.Errorf("handler calls %q, want %s#1 then a later attempt", calls, id)
	}

	// The same id once more (as after a lost ack) is acked, not handled.
	Eval[bool](t, b, fmt.Sprintf(`window.c._onMessage({id: %q, target: "device:dedup-1", data: "x", attempt: 9}); true`, id))
	stats := Eval[struct{ Duplicates, Handled int }](t, b, `window.c.stats`)
	calls = Eval[[]string](t, b, `window.calls`)
	if stats.Duplicates != 1 || stats.Handled != 1 || len(calls) != 2 {
		t.Errorf("after a repeated id: stats %+v, calls %q", stats, calls)
	}
	if !Eval[bool](t, b, `window.c.close(); window.c.state === 'closed'`) {
		t.Error("close() did not close the client")
	}
	// A console.warn for the failed handler is expected; errors are not.
	b.MustHaveNoErrors(t)
}
