package bench

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows a run while it runs: one phase at a time, each with a
// total (devices to connect, milliseconds to publish) and a status line.
// Calls come from one goroutine.
type Progress interface {
	Start(phase string, total int64)
	Update(done int64, status string)
	Finish()
}

// NewBar returns a Progress that draws a progress bar on a terminal.
func NewBar(w io.Writer) Progress { return &bar{w: w} }

type bar struct {
	w io.Writer
	b *progressbar.ProgressBar
}

// Start finishes the bar of the previous phase and draws a new one for
// total steps of phase.
func (p *bar) Start(phase string, total int64) {
	p.Finish()
	p.b = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%-10s", phase)),
		progressbar.OptionSetWidth(24),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
	)
}

// Update moves the bar to done and shows status beside it.
func (p *bar) Update(done int64, status string) {
	if p.b == nil {
		return
	}
	p.b.Describe(status)
	_ = p.b.Set64(done)
}

// Finish completes the bar and ends its line; it does nothing without one.
func (p *bar) Finish() {
	if p.b == nil {
		return
	}
	_ = p.b.Finish()
	fmt.Fprintln(p.w)
	p.b = nil
}

// NewLines returns a Progress that writes a plain line at most every
// interval: for logs and terminals that are not.
func NewLines(w io.Writer, every time.Duration) Progress { return &lines{w: w, every: every} }

type lines struct {
	mu    sync.Mutex // guards following
	w     io.Writer
	every time.Duration
	phase string
	total int64
	last  time.Time
	done  int64
	text  string
}

// Start writes the name of the phase and starts counting its total steps.
func (p *lines) Start(phase string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.total, p.last = phase, total, time.Now()
	fmt.Fprintf(p.w, "%s…\n", phase)
}

// Update records done and status, and writes them as a line when the last
// line is at least every old.
func (p *lines) Update(done int64, status string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.text = done, status
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "%s %d/%d: %s\n", p.phase, done, p.total, status)
}

// Finish writes the phase's last status, if any, and forgets the phase.
func (p *lines) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != "" && p.text != "" {
		fmt.Fprintf(p.w, "%s done: %s\n", p.phase, p.text)
	}
	p.phase, p.text = "", ""
}

// noProgress shows nothing.
type noProgress struct{}

// Start does nothing.
func (noProgress) Start(string, int64) {}

// Update does nothing.
func (noProgress) Update(int64, string) {}

// Finish does nothing.
func (noProgress) Finish() {}
