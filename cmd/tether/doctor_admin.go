package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tetherpush/tether/doctor"
)

// doctorAdminMain runs `tether doctor --admin URL`: it fetches the node's
// /debug/doctor report and prints it.
func doctorAdminMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor --admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "", "`URL` of the node's admin listener, e.g. http://127.0.0.1:8081")
	asJSON := fs.Bool("json", false, "print the report as JSON (schema "+doctor.NodeSchema+")")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the node")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, "doctor --admin", err)
	}
	if *admin == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tether doctor --admin: want one URL, e.g. --admin http://127.0.0.1:8081")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := strings.TrimSuffix(*admin, "/") + "/debug/doctor"
	rep, raw, err := fetchNodeReport(ctx, url)
	if err != nil {
		fmt.Fprintf(stderr, "tether doctor --admin: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		_, _ = stdout.Write(raw)
	} else if err := rep.WriteText(stdout); err != nil {
		return exitFailure
	}
	if rep.Verdict.Severity == doctor.SeverityCritical {
		return exitFailure
	}
	return exitOK
}

func fetchNodeReport(ctx context.Context, url string) (*doctor.NodeReport, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var rep doctor.NodeReport
	if err := json.Unmarshal(raw, &rep); err != nil || rep.Schema != doctor.NodeSchema {
		return nil, nil, fmt.Errorf("GET %s: not a tether doctor report (is this a tether admin listener?)", url)
	}
	return &rep, raw, nil
}
