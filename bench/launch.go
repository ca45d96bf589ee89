package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
)

// A Launcher starts worker i (0-based). The coordinator writes the job and
// commands to the worker's Stdin and reads its reports from Stdout.
type Launcher func(i int) (*Proc, error)

// Proc is a running worker.
type Proc struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	// Wait waits for the worker to end; call it once, after closing Stdin.
	Wait func() error
	// Kill ends the worker at once; safe to call any time.
	Kill func()
	// Stderr returns what the worker wrote to its standard error, for the
	// report when it fails.
	Stderr func() string
}

// maxStderr bounds what is kept of a worker's standard error.
const maxStderr = 16 << 10

// ExecLauncher runs path with args as each worker: the program itself,
// re-executed in its worker mode (`tether bench worker`). The children die
// with the parent (Linux: parent-death signal) and, anywhere, stop when
// their stdin ends.
func ExecLauncher(path string, args ...string) Launcher {
	return func(i int) (*Proc, error) {
		cmd := exec.Command(path, args...)
		setDeathSignal(cmd)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		stderr := &capped{max: maxStderr}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start worker %d: %w", i, err)
		}
		return &Proc{
			Stdin:  stdin,
			Stdout: stdout,
			Wait:   cmd.Wait,
			Kill:   func() { _ = cmd.Process.Kill() },
			Stderr: stderr.String,
		}, nil
	}
}

// InProcess runs each worker as a goroutine of this process (tests, and
// small runs where one process is enough). Wait joins the goroutine.
func InProcess() Launcher {
	return func(i int) (*Proc, error) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { // joined by Wait
			err := Work(ctx, inR, outW)
			_ = outW.CloseWithError(io.EOF)
			_ = inR.Close()
			done <- err
		}()
		var once sync.Once
		var werr error
		return &Proc{
			Stdin:  inW,
			Stdout: outR,
			Wait: func() error {
				once.Do(func() { werr = <-done; cancel() })
				return werr
			},
			Kill: func() {
				cancel()
				_ = inW.CloseWithError(errors.New("killed"))
				_ = outR.CloseWithError(errors.New("killed"))
			},
			Stderr: func() string { return "" },
		}, nil
	}
}

// capped is a buffer that keeps the first max bytes written to it.
type capped struct {
	mu  sync.Mutex // guards following
	buf bytes.Buffer
	max int
}

// Write keeps what fits under max and drops the rest; it always reports
// len(p), nil so the process writing to it never fails.
func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// String returns the bytes kept so far.
func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
