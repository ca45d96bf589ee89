package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tetherpush/tether"
)

// pendingScanExtra is how many index entries beyond limit one Pending
// looks at: the deliveries whose message expired but that Expire has not
// settled yet are skipped, and this bounds the time the script holds the
// shard when a device has very many of them (Pending then answers fewer
// than limit; the next Expire settles them).
const pendingScanExtra = 1024

// Pending returns up to limit open deliveries of device with message ids
// after after, in id order, skipping messages expired at now. One
// read-only script on the device's shard, which holds a copy of each open
// delivery's message. EInvalid for a bad device id or a limit below 1. See
// tether.Store.
func (s *Store) Pending(ctx context.Context, device, after string, limit int, now time.Time) ([]tether.Delivery, error) {
	if err := tether.CheckID("device", device); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, tether.Errorf(tether.EInvalid, "pending limit %d: must be at least 1", limit)
	}
	if err := s.check(ctx, "pending"); err != nil {
		return nil, err
	}
	dk := s.k.device(device)
	ms, sub := splitMs(now.UnixNano())
	res, err := s.roundTrip(ctx, "pending", []call{scriptCall(scriptPending, []string{dk.open, dk.dlv, dk.msg},
		after, strconv.Itoa(limit), strconv.FormatInt(ms, 10), strconv.FormatInt(sub, 10),
		strconv.Itoa(limit+pendingScanExtra))})
	if err != nil {
		return nil, err
	}
	flat, err := res[0].AsStrSlice()
	if err != nil || len(flat)%4 != 0 {
		return nil, fmt.Errorf("redis pending: answer of %d values: %v", len(flat), err)
	}
	out := make([]tether.Delivery, 0, len(flat)/4)
	for i := 0; i < len(flat); i += 4 {
		id, st, att, rec := flat[i], flat[i+1], flat[i+2], flat[i+3]
		d, err := decodeDelivery(device, st+"|"+att+"|0|0|")
		if err != nil {
			return nil, fmt.Errorf("redis pending %s: %w", device, err)
		}
		if d.Message, err = decodeMessage(id, rec); err != nil {
			return nil, fmt.Errorf("redis pending %s: %w", device, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Sent records one more attempt for each open delivery of device in ids
// and returns the attempt numbers, 0 for an id that is not open. One
// script on the device's shard. EInvalid for a bad device id. See
// tether.Store.
func (s *Store) Sent(ctx context.Context, device string, ids []string) ([]int, error) {
	if err := tether.CheckID("device", device); err != nil {
		return nil, err
	}
	if err := s.check(ctx, "sent"); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return []int{}, nil
	}
	res, err := s.roundTrip(ctx, "sent", []call{scriptCall(scriptSent, []string{s.k.device(device).dlv}, ids...)})
	if err != nil {
		return nil, err
	}
	n, err := res[0].AsIntSlice()
	if err != nil || len(n) != len(ids) {
		return nil, fmt.Errorf("redis sent: %d attempts for %d ids: %v", len(n), len(ids), err)
	}
	out := make([]int, len(n))
	for i, v := range n {
		out[i] = int(v)
	}
	return out, nil
}

// Ack marks device's open deliveries in ids acked at now and returns how
// many were open. One script on the device's shard. EInvalid for a bad
// device id. See tether.Store.
func (s *Store) Ack(ctx context.Context, device string, ids []string, now time.Time) (int, error) {
	return s.settle(ctx, "ack", device, ids, stAcked, strconv.FormatInt(now.UnixNano(), 10))
}

// Kill marks device's open deliveries in ids dead and returns how many
// were open. One script on the device's shard. EInvalid for a bad device
// id. See tether.Store.
func (s *Store) Kill(ctx context.Context, device string, ids []string) (int, error) {
	return s.settle(ctx, "kill", device, ids, stDead, "")
}

// settle runs the settle script: device's open deliveries in ids get state
// and ackedAt and leave the open index.
func (s *Store) settle(ctx context.Context, op, device string, ids []string, state byte, ackedAt string) (int, error) {
	if err := tether.CheckID("device", device); err != nil {
		return 0, err
	}
	if err := s.check(ctx, op); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	dk := s.k.device(device)
	args := append([]string{string(state), ackedAt}, ids...)
	res, err := s.roundTrip(ctx, op, []call{scriptCall(scriptSettle, []string{dk.open, dk.dlv, dk.msg}, args...)})
	if err != nil {
		return 0, err
	}
	n, err := res[0].AsInt64()
	if err != nil {
		return 0, fmt.Errorf("redis %s: %w", op, err)
	}
	return int(n), nil
}
