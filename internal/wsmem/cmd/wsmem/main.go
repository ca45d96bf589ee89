// Command wsmem measures gateway memory per idle WebSocket connection for
// several server designs. It is a measurement tool, not product code.
//
//	go run ./cmd/wsmem -conns 15000 -runs 3
//
// The same binary plays three roles. With no -role it is the orchestrator:
// for every design and run it starts a server child and client children,
// reads the server's VmRSS before and after the clients connect, and prints
// a table of medians. Children die with the orchestrator (Pdeathsig) and
// every step is bounded by -timeout.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// designs in the order they are measured; each names a server in server.go.
var designs = []string{"gorilla", "coder", "gobwas", "epoll", "nbio"}

func main() {
	role := flag.String("role", "", "internal: server or client (empty: orchestrate)")
	design := flag.String("design", "", "server: design to serve; orchestrator: comma-separated subset (empty: all)")
	conns := flag.Int("conns", 15000, "idle connections per run")
	runs := flag.Int("runs", 3, "runs per design; the table reports the median")
	perClient := flag.Int("per-client", 5000, "connections per client process")
	settle := flag.Duration("settle", time.Second, "wait after GC + FreeOSMemory before reading memory")
	timeout := flag.Duration("timeout", 20*time.Minute, "bound on the whole invocation")
	addr := flag.String("addr", "", "client: server address")
	first := flag.Int("first", 0, "client: global index of its first connection")
	count := flag.Int("n", 0, "client: connections to open")
	net2 := flag.Int("net", 1, "client: second octet of its source addresses 127.NET.x.y")
	flag.Parse()

	var err error
	switch *role {
	case "server":
		err = runServer(*design, *settle)
	case "client":
		err = runClient(*addr, *first, *count, *net2, *timeout)
	case "":
		list := designs
		if *design != "" {
			list = strings.Split(*design, ",")
		}
		err = orchestrate(config{
			designs: list, conns: *conns, runs: *runs, perClient: *perClient,
			settle: *settle, timeout: *timeout,
		})
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsmem %s: %v\n", *role, err)
		os.Exit(1)
	}
}
