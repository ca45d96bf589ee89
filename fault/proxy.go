// Package fault holds tether's fault-injection suite (SPEC section 2, the
// incident): tests that run a real node on a real redis-server and break
// the network, the store and the peers under it. The only non-test piece
// is Proxy, a TCP proxy that passes, blackholes, delays or resets the
// traffic between a node and Redis.
package fault

import (
	"net"
	"sync"
	"time"
)

// Mode is what a Proxy does with the bytes it reads.
type Mode int

// Modes of a Proxy.
const (
	// Pass forwards bytes at once.
	Pass Mode = iota
	// Blackhole accepts connections and reads what fits in one buffer,
	// but forwards nothing until the mode changes: to both ends the peer
	// has gone silent, as when a network drops every packet. Nothing is
	// lost: what was held is forwarded once the mode changes, as TCP
	// retransmission would.
	Blackhole
	// Delay forwards every chunk after the proxy's delay.
	Delay
)

// Proxy is a TCP proxy from a loopback port to one target address. Its
// methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // accept loop and copiers

	mu      sync.Mutex // guards following
	mode    Mode
	delay   time.Duration
	changed chan struct{} // closed and replaced on every mode change
	conns   map[*net.TCPConn]struct{}
	closed  bool
}

// Listen starts a proxy to target on a free loopback port, in Pass mode.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, changed: make(chan struct{}), conns: map[*net.TCPConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Pass forwards everything again, what was held included.
func (p *Proxy) Pass() { p.set(Pass, 0) }

// Blackhole stops forwarding (see the Blackhole mode).
func (p *Proxy) Blackhole() { p.set(Blackhole, 0) }

// Delay forwards every chunk d late.
func (p *Proxy) Delay(d time.Duration) { p.set(Delay, d) }

// Reset closes every current connection with a TCP RST on both sides
// (SO_LINGER 0) and returns how many it closed. New connections are
// served in the current mode.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[*net.TCPConn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	return len(conns)
}

// Conns returns the number of open connections, both sides counted.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy, closes every connection and waits for its
// goroutines. Idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.changed) // wake held copiers; they see closed
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Reset()
	p.wg.Wait()
}

func (p *Proxy) set(m Mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

// state returns the mode, the delay, the channel closed on the next
// change, and whether the proxy is closed.
func (p *Proxy) state() (Mode, time.Duration, chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed, p.closed
}

// track registers c; it reports false (and closes c) when the proxy is
// closed.
func (p *Proxy) track(c *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c *net.TCPConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		client := c.(*net.TCPConn)
		if !p.track(client) {
			continue
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve dials the target for client and copies both ways until either
// side ends.
func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	c, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		p.untrack(client)
		return
	}
	server := c.(*net.TCPConn)
	if !p.track(server) {
		p.untrack(client)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.copy(server, client)
		p.untrack(server)
		p.untrack(client)
	}()
	p.copy(client, server)
	p.untrack(client)
	p.untrack(server)
}

// copy forwards from src to dst in the proxy's mode until either fails.
func (p *Proxy) copy(dst, src *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(dst, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// forward writes b to dst once the mode lets it through; false when the
// proxy closed or the write failed.
func (p *Proxy) forward(dst *net.TCPConn, b []byte) bool {
	for {
		mode, d, changed, closed := p.state()
		if closed {
			return false
		}
		switch mode {
		case Blackhole:
			<-changed
			continue
		case Delay:
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-changed: // a new mode decides again; the delay restarts
				t.Stop()
				continue
			}
		}
		_ = dst.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := dst.Write(b)
		return err == nil
	}
}
