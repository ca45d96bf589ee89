package redis

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tetherpush/tether"
)

// Cancel settles message id as cancelled for every device it is addressed
// to and has not settled, and returns those devices, sorted. Four round
// trips, the steps of Expire that settle a message: its target from its
// expiry bucket's meta; its position (and for a group, the members'
// spans) from its log's shard; the cursors of the devices addressed (but
// those the store has seen settle it); then one compare-and-set script
// per device that changes, which appends its delivery.cancelled event
// (on a Redis Cluster, to its slot's outbox: relay.go). A second Cancel
// changes nothing and returns no device. ErrNotFound (wrapped) for an
// unknown or purged id. See tether.Store.
func (s *Store) Cancel(ctx context.Context, id string, at time.Time, sent map[string]int) ([]string, error) {
	if err := s.check(ctx, "cancel"); err != nil {
		return nil, err
	}
	if id == "" || len(id) > tether.MaxMessageIDLength {
		return nil, fmt.Errorf("redis cancel %q: %w", clip(id), tether.ErrNotFound)
	}
	target, err := s.targetOf(ctx, "cancel", id)
	if err != nil {
		return nil, err
	}
	work := []entry{{id: id, target: target, settle: true}}
	ls, err := s.positions(ctx, "cancel", work)
	if err != nil {
		return nil, err
	}
	if work[0].seq == 0 {
		return nil, fmt.Errorf("redis cancel %s: %w", id, tether.ErrNotFound)
	}
	devices, counts, err := s.settle(ctx, "cancel", work, ls, tether.StateCancelled, at, sent)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for i, d := range devices {
		if counts[i] > 0 {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out, nil
}
