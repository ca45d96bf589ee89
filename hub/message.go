package hub

import (
	"crypto/rand"
	"encoding/json"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/tetherpush/tether"
)

// ids makes message ids: ULIDs, unique and sorting by publish time; within
// one millisecond they increase monotonically.
type ids struct {
	mu      sync.Mutex // guards following
	entropy *ulid.MonotonicEntropy
}

func (g *ids) next(now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.entropy == nil {
		g.entropy = ulid.Monotonic(rand.Reader, 0)
	}
	return ulid.MustNew(ulid.Timestamp(now), g.entropy).String()
}

// NewMessage returns a message with a fresh id, published now and expiring
// after ttl.
func (h *Hub) NewMessage(target tether.Target, data json.RawMessage, ttl time.Duration, clientID string) *tether.Message {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &tether.Message{
		ID:          h.ids.next(now),
		Target:      target,
		Data:        data,
		ClientID:    clientID,
		PublishedAt: now,
		ExpiresAt:   now.Add(ttl),
	}
}
