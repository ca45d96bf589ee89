package bench

import (
	"maps"
	"slices"
	"time"
)

// The coordinator and its workers speak JSON lines: commands on the
// worker's stdin, reports on its stdout. A worker whose stdin ends stops:
// it closes its connections and exits.

// Commands, coordinator → worker.
const (
	cmdJob   = "job"   // first line: what to do
	cmdStart = "start" // publishing begins: the connected devices are addressed
	cmdEnd   = "end"   // publishing ended: wait for what is missing, then report
)

// Reports, worker → coordinator.
const (
	repProgress = "progress" // counters so far, every progressEvery
	repReady    = "ready"    // every device tried its first connect
	repResult   = "result"   // the final figures
	repError    = "error"    // the worker cannot go on
)

// progressEvery is how often a worker reports its counters.
const progressEvery = 250 * time.Millisecond

// job is what one worker is asked to do.
type job struct {
	Worker      int           `json:"worker"`
	WSURL       string        `json:"ws_url"`
	TokenSecret string        `json:"token_secret"` // on stdin, never on the command line
	TokenTTL    time.Duration `json:"token_ttl"`
	Run         string        `json:"run"`   // id of the run; messages of other runs are stale
	First       int           `json:"first"` // devices First … First+Count-1
	Count       int           `json:"count"`
	Groups      int           `json:"groups"` // streams: groups, or devices with Direct
	Direct      bool          `json:"direct,omitempty"`
	PerAddress  int           `json:"per_address"`
	Ramp        float64       `json:"ramp"` // connects per second of this worker
	// Lifetime bounds the worker: it stops by itself after it.
	Lifetime time.Duration `json:"lifetime"`
}

// command is one line on a worker's stdin.
type command struct {
	Type string `json:"type"`
	Job  *job   `json:"job,omitempty"`
	// Published holds, for cmdEnd, the id of every message of each group
	// by its sequence number; "" where the publish was not accepted.
	Published [][]string    `json:"published,omitempty"`
	Grace     time.Duration `json:"grace,omitempty"`
}

// report is one line on a worker's stdout.
type report struct {
	Type     string   `json:"type"`
	At       int64    `json:"at"` // unix milliseconds
	Counters Counters `json:"counters"`
	// Latency holds, for repProgress, the delivery latencies recorded since
	// the previous report (encoded HdrHistogram); nothing when none were.
	Latency string        `json:"latency,omitempty"`
	Result  *workerResult `json:"result,omitempty"`
	Message string        `json:"message,omitempty"` // repError
}

// Counters are what the devices of a worker, or of all workers, have seen.
type Counters struct {
	Attempted     int64 `json:"attempted"`      // first connect attempts made
	Open          int64 `json:"open"`           // connections open now
	Connected     int64 `json:"connected"`      // devices whose first connect succeeded
	ConnectErrors int64 `json:"connect_errors"` // first connects that failed
	Disconnects   int64 `json:"disconnects"`    // connections that ended before the bench closed them
	Reconnects    int64 `json:"reconnects"`     // successful connects after a disconnect
	Received      int64 `json:"received"`       // message frames, duplicates included
	Delivered     int64 `json:"delivered"`      // first receipts of this run's messages
	Duplicates    int64 `json:"duplicates"`     // receipts of a message the device already had
	Redelivered   int64 `json:"redelivered"`    // message frames with attempt > 1
	Acked         int64 `json:"acked"`          // ids sent in ack frames
	AckFrames     int64 `json:"ack_frames"`     // ack frames written
	Stale         int64 `json:"stale"`          // messages of an earlier run, acked and ignored
	Foreign       int64 `json:"foreign"`        // messages whose data is not the bench's, acked and ignored
}

// add adds o to c.
func (c *Counters) add(o Counters) {
	c.Attempted += o.Attempted
	c.Open += o.Open
	c.Connected += o.Connected
	c.ConnectErrors += o.ConnectErrors
	c.Disconnects += o.Disconnects
	c.Reconnects += o.Reconnects
	c.Received += o.Received
	c.Delivered += o.Delivered
	c.Duplicates += o.Duplicates
	c.Redelivered += o.Redelivered
	c.Acked += o.Acked
	c.AckFrames += o.AckFrames
	c.Stale += o.Stale
	c.Foreign += o.Foreign
}

// workerResult is a worker's final report.
type workerResult struct {
	Counters Counters `json:"counters"`
	// Addressed is the number of devices connected when publishing began:
	// every message of their group must reach them.
	Addressed int64 `json:"addressed"`
	Expected  int64 `json:"expected"`  // (device, message) pairs that must arrive
	Lost      int64 `json:"lost"`      // of Expected, never received by the end of the grace period
	Mismatch  int64 `json:"mismatch"`  // sequence numbers received under an id the publish did not return
	Unconfirm int64 `json:"unconfirm"` // deliveries of messages whose publish failed or was not answered
	// LastDelivery is when the last first receipt arrived, unix ms.
	LastDelivery int64 `json:"last_delivery,omitempty"`
	// LostSample lists a few lost (device, id) pairs for a person to look up.
	LostSample []string         `json:"lost_sample,omitempty"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"` // connect and connection errors by kind
	Errors     []string         `json:"errors,omitempty"`      // the first few, verbatim
	CloseCodes map[string]int64 `json:"close_codes,omitempty"` // close codes of connections the node ended
	Latency    string           `json:"latency,omitempty"`     // encoded HdrHistogram, microseconds
	ConnectLat string           `json:"connect_latency,omitempty"`
	// DeviceWorst holds each addressed device's highest latency: its
	// spread shows whether some devices wait far longer than others.
	DeviceWorst string `json:"device_worst,omitempty"`
}

// merge adds the figures of o to r.
func (r *workerResult) merge(o *workerResult) {
	r.Counters.add(o.Counters)
	r.Addressed += o.Addressed
	r.Expected += o.Expected
	r.Lost += o.Lost
	r.Mismatch += o.Mismatch
	r.Unconfirm += o.Unconfirm
	r.LastDelivery = max(r.LastDelivery, o.LastDelivery)
	r.LostSample = appendCapped(r.LostSample, o.LostSample, maxSamples)
	r.Errors = appendCapped(r.Errors, o.Errors, maxSamples)
	r.ErrorKinds = addCounts(r.ErrorKinds, o.ErrorKinds)
	r.CloseCodes = addCounts(r.CloseCodes, o.CloseCodes)
}

// maxSamples bounds the verbatim errors and lost ids carried in reports.
const maxSamples = 10

// appendCapped appends the strings of src not in dst yet, up to n in all.
func appendCapped(dst, src []string, n int) []string {
	for _, s := range src {
		if len(dst) >= n {
			break
		}
		if !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

func addCounts(dst, src map[string]int64) map[string]int64 {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]int64, len(src))
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// cloneCounts copies m.
func cloneCounts(m map[string]int64) map[string]int64 {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
