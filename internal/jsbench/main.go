// Command jsbench drives NATS JetStream with the load of 'tether bench',
// so that the two can be compared on the same machine in the same run
// (docs/bench/jetstream.sh, docs/benchmarks.md). It is a benchmark tool
// only, in a module of its own: tether does not depend on NATS.
//
// Each device is one durable consumer with explicit acks on its own
// connection, filtering its own subject (dev.<device>) and its group's
// (grp.<group>), created before publishing with DeliverNew, so that, as
// in tether, a device gets what was published to it or its group while it
// was a member. Messages go to one stream on file storage; the server is
// started by the caller with sync_interval: always, so that an
// acknowledged publish is on disk, as in tether. Publishing follows
// tether bench: --rate messages a second round robin over the groups
// (or, with --direct, the devices), in requests of --batch messages (0:
// whatever fell due) with --publishers requests under way; a request is
// a burst of asynchronous publishes and ends when all are acknowledged.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type config struct {
	url                       string
	conns, groups             int
	direct                    bool
	rate, batch, publishers   int
	size, inflight            int
	duration, grace, setupMax time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.url, "url", "nats://127.0.0.1:4222", "NATS server (loopback only)")
	flag.IntVar(&c.conns, "conns", 1000, "devices: one connection and one durable consumer each")
	flag.IntVar(&c.groups, "groups", 10, "groups the devices are spread over")
	flag.BoolVar(&c.direct, "direct", false, "publish to the devices instead of the groups")
	flag.IntVar(&c.rate, "rate", 100, "messages published per second")
	flag.IntVar(&c.batch, "batch", 0, "messages per request; 0: whatever fell due, up to 1000")
	flag.IntVar(&c.publishers, "publishers", 8, "requests under way at once")
	flag.IntVar(&c.size, "size", 256, "bytes of each message")
	flag.IntVar(&c.inflight, "max-inflight", 256, "unacked messages per consumer (tether's --max-inflight)")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "how long to publish")
	flag.DurationVar(&c.grace, "grace", 10*time.Second, "how long to wait for what has not arrived")
	flag.DurationVar(&c.setupMax, "setup-timeout", 10*time.Minute, "longest time to create the consumers")
	flag.Parse()
	if err := checkLoopback(c.url); err != nil {
		log.Fatal(err)
	}
	rep, err := run(c)
	if err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
	if rep.Lost > 0 {
		os.Exit(1)
	}
}

func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if h := u.Hostname(); h != "localhost" && h != "::1" && !strings.HasPrefix(h, "127.") {
		return fmt.Errorf("--url %s: loopback addresses only", raw)
	}
	return nil
}

// report mirrors the fields of tether bench's report that the comparison
// uses.
type report struct {
	Devices            int         `json:"devices"`
	SetupSeconds       float64     `json:"setup_seconds"`
	Published          int64       `json:"published"`
	PublishErrors      int64       `json:"publish_errors"`
	PublishSeconds     float64     `json:"publish_seconds"`
	PublishedPerSecond float64     `json:"published_per_second"`
	Expected           int64       `json:"expected"`
	Delivered          int64       `json:"delivered"`
	Duplicates         int64       `json:"duplicates"`
	Lost               int64       `json:"lost"`
	DeliverySeconds    float64     `json:"delivery_seconds"`
	DeliveredPerSecond float64     `json:"delivered_per_second"`
	LatencyMS          percentiles `json:"latency_ms"`
	PublishLatencyMS   percentiles `json:"publish_latency_ms"`
}

type percentiles struct {
	P50, P90, P99, Max float64
}

func percentilesOf(h *hdrhistogram.Histogram) percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return percentiles{P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), Max: ms(h.Max())}
}

func run(c config) (*report, error) {
	ctx := context.Background()
	pubConn, err := nats.Connect(c.url)
	if err != nil {
		return nil, err
	}
	defer pubConn.Close()
	js, err := jetstream.New(pubConn, jetstream.WithPublishAsyncMaxPending(c.publishers*max(c.batch, 1000)))
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH", Subjects: []string{"dev.>", "grp.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: 24 * time.Hour,
		MaxConsumers: c.conns + 1, // past the server's default of 1,000 a stream
	}); err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}
	setup := time.Now()
	devs, err := connectDevices(ctx, c)
	if err != nil {
		return nil, err
	}
	defer devs.close()
	rep := &report{Devices: c.conns, SetupSeconds: time.Since(setup).Seconds()}
	log.Printf("%d consumers in %.1fs; publishing", c.conns, rep.SetupSeconds)

	p := &publisher{c: c, js: js, lat: hdrhistogram.New(1, 60_000_000, 3)}
	start := time.Now()
	devs.start.Store(start.UnixNano())
	p.run(start)
	rep.PublishSeconds = time.Since(start).Seconds()
	rep.Published, rep.PublishErrors = p.published.Load(), p.errors.Load()
	rep.PublishedPerSecond = float64(rep.Published) / rep.PublishSeconds
	rep.PublishLatencyMS = percentilesOf(p.lat)
	rep.Expected = rep.Published
	if !c.direct {
		rep.Expected = p.recipients(c)
	}
	deadline := time.Now().Add(c.grace)
	for devs.unique.Load() < rep.Expected && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	devs.report(rep, start)
	return rep, nil
}
