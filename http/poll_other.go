//go:build !linux

package http

import (
	"errors"
	"net"

	"github.com/tetherpush/tether/hub"
)

// poller is only implemented on Linux; elsewhere every connection has a
// reader goroutine.
type poller struct{}

func openPoller(int) (*poller, error) { return nil, errors.New("epoll is Linux only") }

func (*poller) start()                                {}
func (*poller) add(*conn, *hub.Session, []byte) error { return errors.New("no poller") }
func (*poller) count() int                            { return 0 }
func (*poller) close()                                {}

// detach is Linux only (fdconn.go).
func detach(net.Conn) (net.Conn, error) { return nil, errors.New("no poller") }
