package dashboard

import (
	"io/fs"
	"time"
)

// SetNow replaces the handler's clock.
func SetNow(h *Handler, now func() time.Time) { h.now = now }

// Static returns the embedded files the handler serves under /static/.
func Static() fs.FS {
	site, _ := fs.Sub(static, "static")
	return site
}
