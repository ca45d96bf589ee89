package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Expire marks expired the open deliveries of messages that expired at or
// before now, and purges messages (with their deliveries, record and
// idempotency entry) that expired before purgeBefore, at most limit
// messages per call, oldest expiry first. EInvalid for a limit below 1.
// See tether.Store.
//
// Three round trips, each one pipeline, in an order that a failure at any
// point only delays (the next call finds the same entries and redoes the
// rest; every step is idempotent, and a delivery counts as expired only
// when it leaves the open state):
//
//  1. scan every expiry bucket for due messages and messages due for
//     purging, with their meta (one read-only script per bucket);
//  2. settle or delete the deliveries on the devices' shards (one script
//     per device) and delete idempotency entries that still point to a
//     purged message;
//  3. only then move the bucket entries to gc, or drop them with meta and
//     record (one script per bucket).
func (s *Store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (int, bool, error) {
	if limit < 1 {
		return 0, false, tether.Errorf(tether.EInvalid, "expire limit %d: must be at least 1", limit)
	}
	if err := s.check(ctx, "expire"); err != nil {
		return 0, false, err
	}
	due, gc, err := s.scan(ctx, now.UnixNano(), purgeBefore.UnixNano(), limit)
	if err != nil {
		return 0, false, err
	}
	more := false
	if len(due) > limit {
		due, gc, more = due[:limit], nil, true
	} else if left := limit - len(due); len(gc) > left {
		gc, more = gc[:left], true
	}
	purgeN := purgeBefore.UnixNano()
	for i := range due {
		due[i].purge = due[i].expiresAt < purgeN
	}
	for i := range gc {
		gc[i].purge = true
	}
	work := append(due, gc...)
	if len(work) == 0 {
		return 0, more, nil
	}
	expired, err := s.expireDeliveries(ctx, work)
	if err != nil {
		return 0, false, err
	}
	if err := s.finish(ctx, work); err != nil {
		return 0, false, err
	}
	return expired, more, nil
}

// entry is one message of an expiry bucket that Expire handles.
type entry struct {
	bucket    int
	member    string // timeKey(expiresAt) + id
	id        string
	expiresAt int64
	meta      string // "" when missing: a publish that stopped half-way
	purge     bool   // purge the message, or else only expire it
}

// scan is Expire's first round trip: the first limit+1 due entries and
// entries due for purging of every bucket, each list merged in expiry
// order.
func (s *Store) scan(ctx context.Context, nowN, purgeN int64, limit int) (due, gc []entry, err error) {
	calls := make([]call, expiryBuckets)
	dueBound, gcBound, n := timeKey(nowN+1), timeKey(purgeN), strconv.Itoa(limit+1)
	for i := range calls {
		b := s.k.bucket(i)
		calls[i] = scriptCall(scriptScan, []string{b.due, b.gc, b.meta}, dueBound, gcBound, n)
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return nil, nil, err
	}
	for i, r := range res {
		lists, err := r.ToArray()
		if err != nil || len(lists) != 2 {
			return nil, nil, fmt.Errorf("redis expire: scan of bucket %d: unexpected answer: %v", i, err)
		}
		d, err1 := entries(i, lists[0])
		g, err2 := entries(i, lists[1])
		if err1 != nil || err2 != nil {
			return nil, nil, fmt.Errorf("redis expire: scan of bucket %d: %w", i, errCorrupt)
		}
		due, gc = append(due, d...), append(gc, g...)
	}
	byMember := func(a, b entry) int {
		if a.member < b.member {
			return -1
		}
		if a.member > b.member {
			return 1
		}
		return 0
	}
	slices.SortFunc(due, byMember)
	slices.SortFunc(gc, byMember)
	return due, gc, nil
}

// entries decodes a flat list of member, meta.
func entries(bucket int, m rueidis.RedisMessage) ([]entry, error) {
	flat, err := m.AsStrSlice()
	if err != nil || len(flat)%2 != 0 {
		return nil, errCorrupt
	}
	out := make([]entry, 0, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		member := flat[i]
		exp, ok := parseTimeKey(member[:min(len(member), timeKeyLen)])
		if !ok || len(member) == timeKeyLen {
			return nil, errCorrupt
		}
		out = append(out, entry{bucket: bucket, member: member, id: member[timeKeyLen:], expiresAt: exp, meta: flat[i+1]})
	}
	return out, nil
}

// expireDeliveries is Expire's second round trip: per device, one settle
// script for the deliveries to expire and one purge script for those to
// delete; per target, one script deleting the idempotency entries of
// purged messages. It returns how many deliveries were open.
func (s *Store) expireDeliveries(ctx context.Context, work []entry) (int, error) {
	expire, purge := map[string][]string{}, map[string][]string{}
	unidem := map[string][]string{}
	var devices, hashes []string
	for _, e := range work {
		if e.meta == "" {
			continue // no deliveries were written
		}
		mt, err := decodeMeta(e.meta)
		if err != nil {
			return 0, fmt.Errorf("redis expire %s: %w", e.id, err)
		}
		for _, d := range mt.recipients {
			if expire[d] == nil && purge[d] == nil {
				devices = append(devices, d)
			}
			if e.purge {
				purge[d] = append(purge[d], e.id)
			} else {
				expire[d] = append(expire[d], e.id)
			}
		}
		if e.purge && mt.clientID != "" {
			h := s.k.idemHash(mt.target)
			if unidem[h] == nil {
				hashes = append(hashes, h)
			}
			v := idem{expiresAt: e.expiresAt, recipients: len(mt.recipients), id: e.id}.encode()
			unidem[h] = append(unidem[h], mt.clientID, v)
		}
	}
	var calls []call
	for _, d := range devices {
		dk := s.k.device(d)
		ks := []string{dk.open, dk.dlv, dk.msg}
		if ids := expire[d]; len(ids) > 0 {
			calls = append(calls, scriptCall(scriptSettle, ks, append([]string{string(stExpired), ""}, ids...)...))
		}
		if ids := purge[d]; len(ids) > 0 {
			calls = append(calls, scriptCall(scriptPurge, ks, ids...))
		}
	}
	counted := len(calls)
	for _, h := range hashes {
		calls = append(calls, scriptCall(scriptUnidem, []string{h}, unidem[h]...))
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res[:counted] {
		v, err := r.AsInt64()
		if err != nil {
			return 0, fmt.Errorf("redis expire: %w", err)
		}
		n += int(v)
	}
	return n, nil
}

// finish is Expire's third round trip: one finish script per bucket moves
// expired entries to gc and drops purged ones with their meta and record.
func (s *Store) finish(ctx context.Context, work []entry) error {
	type ops struct{ args, records []string }
	byBucket := map[int]*ops{}
	var order []int
	for _, e := range work {
		o := byBucket[e.bucket]
		if o == nil {
			o = &ops{}
			byBucket[e.bucket] = o
			order = append(order, e.bucket)
		}
		if e.purge {
			o.args = append(o.args, "p", e.member)
			o.records = append(o.records, s.k.bucket(e.bucket).record(e.id))
		} else {
			o.args = append(o.args, "g", e.member)
		}
	}
	calls := make([]call, 0, len(order))
	for _, n := range order {
		b, o := s.k.bucket(n), byBucket[n]
		calls = append(calls, scriptCall(scriptFinish, append([]string{b.due, b.gc, b.meta}, o.records...), o.args...))
	}
	_, err := s.roundTrip(ctx, "expire", calls)
	return err
}
