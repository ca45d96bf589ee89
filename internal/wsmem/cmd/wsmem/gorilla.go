package main

import (
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// serveGorilla is the usual gorilla/websocket design (its chat example, and
// what most gateways do): a default Upgrader, one reader goroutine and one
// writer goroutine per connection, joined by a bounded send channel.
func serveGorilla(ln net.Listener, h *hub) error {
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s := h.add(r.URL.Query().Get("device"), c)
		send := make(chan []byte, 16)
		go func() { // writer: owns all writes; ends when the reader closes send
			for msg := range send {
				_ = c.SetWriteDeadline(time.Now().Add(writeWait))
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					_ = c.Close() // the reader sees the error and closes send
					continue
				}
				s.sent(len(msg))
			}
		}()
		go func() { // reader
			defer func() {
				close(send)
				h.remove(s)
				_ = c.Close()
			}()
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				s.received(len(msg))
				select {
				case send <- msg:
				default:
					return // slow consumer
				}
			}
		}()
	})}
	go func() { _ = srv.Serve(ln) }() // lives until the process exits
	return nil
}
