package main

import (
	"net"
	"net/http"
	"os"

	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// serveNbio is lesismal/nbio: nbhttp's epoll engine with its defaults
// (IOModNonBlocking, NumCPU/4 pollers, 120 s keepalive read deadline) and
// its websocket upgrader; the message callback echoes inline.
func serveNbio(ln net.Listener, h *hub) error {
	logging.Output = os.Stderr
	logging.SetLevel(logging.LevelError)
	up := websocket.NewUpgrader()
	up.OnMessage(func(c *websocket.Conn, typ websocket.MessageType, msg []byte) {
		s, _ := c.Session().(*session)
		if s != nil {
			s.received(len(msg))
		}
		if c.WriteMessage(typ, msg) == nil && s != nil {
			s.sent(len(msg))
		}
	})
	up.OnClose(func(c *websocket.Conn, _ error) {
		if s, ok := c.Session().(*session); ok {
			h.remove(s)
		}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.SetSession(h.add(r.URL.Query().Get("device"), c))
	})
	e := nbhttp.NewEngine(nbhttp.Config{
		Network: "tcp",
		Addrs:   []string{ln.Addr().String()},
		Listen:  func(string, string) (net.Listener, error) { return ln, nil },
		Handler: mux,
	})
	return e.Start()
}
