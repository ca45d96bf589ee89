package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// trimEvery is how far a log's oldest retained position must move before
// Expire trims the history ranges and membership spans below it: trimming
// visits every device the log was addressed to, so it is done in steps.
const trimEvery = 1024

// Expire settles as expired the unsettled deliveries of messages that
// expired at or before now, and purges messages that expired before
// purgeBefore, at most limit messages per call, oldest expiry first.
// EInvalid for a limit below 1. See tether.Store.
//
// Five round trips, each one pipeline, in an order that a failure at any
// point only delays (the next call finds the same bucket entries and
// redoes the rest; every step is idempotent, and a delivery counts as
// expired only when its cursor settles it):
//
//  1. scan every expiry bucket for due messages and messages due for
//     purging (one read-only script per bucket);
//  2. their positions, from their logs' ids hashes, and the membership
//     of their groups;
//  3. settle the due ones as expired in the cursors of the devices they
//     are addressed to (compare-and-set, one script per device);
//  4. purge the messages due for purging from their logs (one script per
//     log), and trim history and spans where enough was purged;
//  5. only then move the bucket entries to gc, or drop them (one script
//     per bucket).
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
		due[i].expire = true
		due[i].purge = due[i].expiresAt < purgeN
	}
	for i := range gc {
		gc[i].purge = true
	}
	work := append(due, gc...)
	if len(work) == 0 {
		return 0, more, nil
	}
	members, err := s.positions(ctx, work)
	if err != nil {
		return 0, false, err
	}
	expired, err := s.expireCursors(ctx, work, members, now)
	if err != nil {
		return 0, false, err
	}
	if err := s.purge(ctx, work, members); err != nil {
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
	target    tether.Target
	clientID  string
	seq       uint64 // its position; 0 when its log does not hold it (a publish that stopped half-way)
	expire    bool   // settle it as expired
	purge     bool   // purge it
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
	byMember := func(a, b entry) int { return strings.Compare(a.member, b.member) }
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
		e := entry{bucket: bucket, member: member, id: member[timeKeyLen:], expiresAt: exp}
		if meta := flat[i+1]; meta != "" {
			t, err := tether.ParseTarget(metaTarget(meta))
			if err != nil {
				return nil, errCorrupt
			}
			e.target, e.clientID = t, metaClientID(meta)
		}
		out = append(out, e)
	}
	return out, nil
}

// positions is Expire's second round trip: the position of each message
// in its log (HMGET of the log's ids) and the spans of every device of
// each group concerned (HGETALL of its membership index).
func (s *Store) positions(ctx context.Context, work []entry) (map[string]map[string]string, error) {
	byLog := map[tether.Target][]int{}
	var logs []tether.Target
	for i, e := range work {
		if e.target.ID == "" {
			continue
		}
		if byLog[e.target] == nil {
			logs = append(logs, e.target)
		}
		byLog[e.target] = append(byLog[e.target], i)
	}
	var calls []call
	var groups []string
	for _, t := range logs {
		lk := s.k.log(t)
		var ids []string
		for _, i := range byLog[t] {
			ids = append(ids, work[i].id)
		}
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hmget().Key(lk.ids).Field(ids...).Build() }))
		if t.Kind == tether.KindGroup {
			groups = append(groups, t.ID)
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hgetall().Key(lk.mem).Build() }))
		}
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return nil, err
	}
	members := map[string]map[string]string{}
	j := 0
	for _, t := range logs {
		vals, err := res[j].ToArray()
		j++
		if err != nil {
			return nil, fmt.Errorf("redis expire: %w", err)
		}
		for k, i := range byLog[t] {
			if v, err := vals[k].ToString(); err == nil {
				if work[i].seq, _, err = parseIDs(v); err != nil {
					return nil, fmt.Errorf("redis expire: %w", err)
				}
			}
		}
		if t.Kind == tether.KindGroup {
			if members[t.ID], err = res[j].AsStrMap(); err != nil {
				return nil, fmt.Errorf("redis expire: %w", err)
			}
			j++
		}
	}
	return members, nil
}

// expireCursors is Expire's third round trip: each due message is settled
// as expired in the cursors of the devices it is addressed to. It returns
// how many deliveries became expired.
func (s *Store) expireCursors(ctx context.Context, work []entry, members map[string]map[string]string, now time.Time) (int, error) {
	marks := map[string][]tether.Mark{}
	var devices []string
	for _, e := range work {
		if !e.expire || e.seq == 0 {
			continue
		}
		ds, err := addressed(e.target, e.seq, members[e.target.ID])
		if err != nil {
			return 0, fmt.Errorf("redis expire: %w", err)
		}
		for _, d := range ds {
			if marks[d] == nil {
				devices = append(devices, d)
			}
			marks[d] = append(marks[d], tether.Mark{Source: e.target, Seq: e.seq, State: tether.StateExpired})
		}
	}
	if len(devices) == 0 {
		return 0, nil
	}
	counts := make([]int, len(devices))
	_, err := s.update(ctx, "expire", devices, true, func(i int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, error) {
		cs, out, hist := tether.ApplyMarks(cs, devices[i], marks[devices[i]], now)
		counts[i] = out.Expired
		return cs, hist, nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	return n, nil
}

// purge is Expire's fourth round trip: the messages due for purging leave
// their logs, with their ids and idempotency entries; then the logs that
// lost enough are trimmed.
func (s *Store) purge(ctx context.Context, work []entry, members map[string]map[string]string) error {
	byLog := map[tether.Target][]string{}
	var logs []tether.Target
	for _, e := range work {
		if !e.purge || e.seq == 0 {
			continue
		}
		if byLog[e.target] == nil {
			logs = append(logs, e.target)
		}
		byLog[e.target] = append(byLog[e.target], strconv.FormatUint(e.seq, 10), e.id, e.clientID)
	}
	if len(logs) == 0 {
		return nil
	}
	calls := make([]call, 0, len(logs))
	for _, t := range logs {
		lk := s.k.log(t)
		calls = append(calls, scriptCall(scriptPurge, []string{lk.log, lk.ids, lk.idem}, byLog[t]...))
	}
	if _, err := s.roundTrip(ctx, "expire", calls); err != nil {
		return err
	}
	return s.trim(ctx, logs, members)
}

// trim drops, for each log, the history ranges and membership spans that
// only purged messages needed, once its oldest retained position moved
// trimEvery past the last trim (or the log is empty): two round trips.
func (s *Store) trim(ctx context.Context, logs []tether.Target, members map[string]map[string]string) error {
	calls := make([]call, 0, 3*len(logs))
	for _, t := range logs {
		lk := s.k.log(t)
		calls = append(calls,
			plainCall(func(b rueidis.Builder) rueidis.Completed {
				return b.Zrange().Key(lk.log).Min("0").Max("0").Withscores().Build()
			}),
			plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(lk.seq).Build() }),
			plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(lk.trim).Build() }))
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return err
	}
	calls = calls[:0]
	for i, t := range logs {
		last, err1 := lastOf(res[3*i+1])
		trimmed, err2 := lastOf(res[3*i+2])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("redis expire: trim of %s: %w", t, errCorrupt)
		}
		oldest := last + 1
		if zs, err := res[3*i].AsZScores(); err == nil && len(zs) == 1 {
			oldest = uint64(zs[0].Score)
		}
		if oldest-min(trimmed, oldest) < trimEvery && oldest <= last {
			continue
		}
		calls = append(calls, s.trimCalls(t, oldest, members[t.ID])...)
	}
	_, err = s.roundTrip(ctx, "expire", calls)
	return err
}

// trimCalls returns the commands that trim log t below oldest.
func (s *Store) trimCalls(t tether.Target, oldest uint64, members map[string]string) []call {
	lk := s.k.log(t)
	below, at := "("+strconv.FormatUint(oldest, 10), strconv.FormatUint(oldest, 10)
	devices := []string{t.ID}
	if t.Kind == tether.KindGroup {
		devices = devices[:0]
		for d := range members {
			devices = append(devices, d)
		}
	}
	var calls []call
	for _, d := range devices {
		hk := s.k.hist(d, t)
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Zremrangebyscore().Key(hk).Min("-inf").Max(below).Build()
		}))
		if t.Kind == tether.KindGroup {
			calls = append(calls, scriptCall(scriptMember, []string{lk.seq, lk.mem, lk.members}, d, "t", at))
		}
	}
	return append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Set().Key(lk.trim).Value(at).Build() }))
}

// finish is Expire's last round trip: one finish script per bucket moves
// expired entries to gc and drops purged ones with their meta.
func (s *Store) finish(ctx context.Context, work []entry) error {
	byBucket := map[int][]string{}
	var order []int
	for _, e := range work {
		if byBucket[e.bucket] == nil {
			order = append(order, e.bucket)
		}
		op := "g"
		if e.purge {
			op = "p"
		}
		byBucket[e.bucket] = append(byBucket[e.bucket], op, e.member)
	}
	calls := make([]call, 0, len(order))
	for _, n := range order {
		b := s.k.bucket(n)
		calls = append(calls, scriptCall(scriptFinish, []string{b.due, b.gc, b.meta}, byBucket[n]...))
	}
	_, err := s.roundTrip(ctx, "expire", calls)
	return err
}
