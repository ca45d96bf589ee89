// Command receipts is a backend that learns what became of its messages
// and devices from tether's webhook (SPEC section 11): it verifies each
// request's Tether-Signature and prints one line per event, delivery
// receipts and presence alike. It is the smallest complete program using
// the SDK's webhook handler, client.WebhookHandler.
//
//	TETHER_WEBHOOK_SECRET=<secret> go run ./examples/receipts --listen 127.0.0.1:9000
//
// and run the gateway with --webhook-url http://127.0.0.1:9000/hook and the
// same --webhook-secret (see README.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tetherpush/tether/client"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	path := flag.String("path", "/hook", "path of the webhook URL")
	secret := flag.String("secret", os.Getenv("TETHER_WEBHOOK_SECRET"),
		"the gateway's --webhook-secret (default $TETHER_WEBHOOK_SECRET); while rotating, the old and new one separated by a comma")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var secrets [][]byte
	for s := range strings.SplitSeq(*secret, ",") {
		if s != "" {
			secrets = append(secrets, []byte(s))
		}
	}
	if len(secrets) == 0 {
		log.Error("a webhook secret is required: --secret or TETHER_WEBHOOK_SECRET")
		os.Exit(2)
	}

	// SIGINT or SIGTERM cancels ctx, which shuts the server down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *path, secrets, os.Stdout, log); err != nil {
		log.Error("receipts stopped", "err", err)
		os.Exit(1)
	}
}

// run serves the webhook on listen until ctx is done.
func run(ctx context.Context, listen, path string, secrets [][]byte, out io.Writer, log *slog.Logger) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(path, newHandler(secrets, out, log))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	log.Info("receipts listening", "url", "http://"+l.Addr().String()+path)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }() // owned: run waits for it
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	if e := <-served; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	log.Info("receipts closed")
	return err
}

// newHandler verifies webhook requests signed with one of secrets and
// prints their events to out.
func newHandler(secrets [][]byte, out io.Writer, log *slog.Logger) http.Handler {
	p := &printer{out: out, seen: make(map[string]bool)}
	return &client.WebhookHandler{Secrets: secrets, Handle: p.print, Logger: log}
}

// seenSize is how many event ids the printer remembers to skip repeats.
const seenSize = 10000

// printer prints events one line each, skipping those printed already:
// the webhook delivers at least once, so a batch may come again.
type printer struct {
	out io.Writer

	mu   sync.Mutex // guards following
	seen map[string]bool
	ring [seenSize]string // the ids in seen, oldest overwritten first
	next int
}

// print prints the events not seen yet. A real backend would store them
// and return an error when it could not, to have the batch sent again.
func (p *printer) print(_ context.Context, events []client.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range events {
		if p.seen[e.ID] {
			continue
		}
		delete(p.seen, p.ring[p.next])
		p.ring[p.next], p.seen[e.ID] = e.ID, true
		p.next = (p.next + 1) % seenSize
		if _, err := fmt.Fprintln(p.out, line(e)); err != nil {
			return err
		}
	}
	return nil
}

// line is one event as a line of text.
func line(e client.Event) string {
	at := e.At.UTC().Format("2006-01-02T15:04:05.000Z")
	switch e.Type {
	case client.EventOnline:
		return fmt.Sprintf("%s %s device=%s node=%s id=%s", at, e.Type, e.Device, e.Node, e.ID)
	case client.EventOffline:
		return fmt.Sprintf("%s %s device=%s node=%s code=%d id=%s", at, e.Type, e.Device, e.Node, e.Code, e.ID)
	}
	return fmt.Sprintf("%s %s message=%s target=%s device=%s attempts=%d id=%s",
		at, e.Type, e.Message, e.Target, e.Device, e.Attempts, e.ID)
}
