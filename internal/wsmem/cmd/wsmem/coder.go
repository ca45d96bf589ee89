package main

import (
	"context"
	"net"
	"net/http"

	"github.com/coder/websocket"
)

// serveCoder is coder/websocket (formerly nhooyr.io/websocket): the HTTP
// handler goroutine stays as the connection's reader; writes are inline.
func serveCoder(ln net.Listener, h *hub) error {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s := h.add(r.URL.Query().Get("device"), closerFunc(c.CloseNow))
		defer h.remove(s)
		defer c.CloseNow()
		ctx := context.Background()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			s.received(len(msg))
			wctx, cancel := context.WithTimeout(ctx, writeWait)
			err = c.Write(wctx, typ, msg)
			cancel()
			if err != nil {
				return
			}
			s.sent(len(msg))
		}
	})}
	go func() { _ = srv.Serve(ln) }() // lives until the process exits
	return nil
}
