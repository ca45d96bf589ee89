// Command terminal is a shop terminal: it prints every order tether pushes
// to it as one line and acks it. It is the smallest complete program using
// the Go client SDK.
//
//	TETHER_TOKEN=<device token> go run ./examples/terminal --url ws://127.0.0.1:8080
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tetherpush/tether/client"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080", "tether gateway, ws://host:port or wss://host:port")
	token := flag.String("token", os.Getenv("TETHER_TOKEN"), "device token (default $TETHER_TOKEN)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *token == "" {
		log.Error("a device token is required: --token or TETHER_TOKEN")
		os.Exit(2)
	}

	// SIGINT or SIGTERM cancels ctx, which closes the client.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *token, log); err != nil {
		log.Error("terminal stopped", "err", err)
		os.Exit(1)
	}
}

// run receives orders until ctx is done or the gateway refuses the terminal
// for good (token rejected, replaced by another terminal with its token).
func run(ctx context.Context, url, token string, log *slog.Logger) error {
	c, err := client.Dial(ctx, client.Config{
		URL:     url,
		Token:   token,
		Handler: printOrder,
		OnState: func(s client.State, err error) {
			if err != nil {
				log.Info("tether "+s.String(), "err", err)
				return
			}
			log.Info("tether " + s.String())
		},
		Logger: log, // handler failures, server error frames
	})
	if err != nil {
		return err
	}
	defer c.Close()
	<-c.Done()
	if err := c.Err(); !errors.Is(err, client.ErrClosed) {
		return err
	}
	return nil
}

// printOrder prints one order. Returning nil acks it; returning an error
// (say, the printer is out of paper) leaves it unacked and tether sends it
// again later.
func printOrder(_ context.Context, m client.Message) error {
	var data bytes.Buffer
	if err := json.Compact(&data, m.Data); err != nil {
		data.Write(m.Data)
	}
	fmt.Printf("%s order %s for %s (attempt %d): %s\n",
		m.PublishedAt.Local().Format(time.TimeOnly), m.ID, m.Target, m.Attempt, data.Bytes())
	return nil
}
