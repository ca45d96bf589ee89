package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/ledger"
)

// Publish appends msgs to their targets' logs and returns once Redis has
// applied every write. Two round trips whatever the batch, each one
// pipeline, in an order that keeps at-least-once (docs/notes/redis.md):
//
//  1. one intent script per expiry bucket records each message's target
//     and expiry, so that Expire will find whatever step 2 writes; an id
//     already recorded for another target is an EInvalid error;
//  2. one append script per log appends its messages: position, record,
//     id and client id entries, one log entry per message whatever the
//     size of a target group, duplicates answered from the log's ids and
//     idem hashes.
//
// An error may leave step 1 done without step 2: an intent without its log
// entry, which nobody reads and Expire drops. Malformed messages are
// EInvalid, before anything is sent. See tether.Store.
func (s *Store) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	for _, m := range msgs {
		if err := tether.CheckStorable(m); err != nil {
			return nil, err
		}
	}
	if err := s.check(ctx, "publish"); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return []tether.PublishResult{}, nil
	}
	if err := s.intend(ctx, msgs); err != nil {
		return nil, err
	}
	return s.appendLogs(ctx, msgs)
}

// intend is Publish's first round trip.
func (s *Store) intend(ctx context.Context, msgs []*tether.Message) error {
	byBucket := map[int][]int{}
	var order []int
	for i, m := range msgs {
		n := bucketOf(m.ID)
		if byBucket[n] == nil {
			order = append(order, n)
		}
		byBucket[n] = append(byBucket[n], i)
	}
	units := make([]unit, len(order))
	for c, n := range order {
		b := s.k.bucket(n)
		var args []string
		for _, i := range byBucket[n] {
			m := msgs[i]
			args = append(args, m.ID, timeKey(m.ExpiresAt.UnixNano())+m.ID, m.Target.String()+"\n"+m.ClientID)
		}
		units[c] = unit{sc: scriptIntent, keys: []string{b.due, b.meta, b.done, b.late}, args: args}
	}
	res, err := s.runUnits(ctx, "publish", units)
	if err != nil {
		return err
	}
	for c, r := range res {
		olds, err := r.AsStrSlice()
		idx := byBucket[order[c]]
		if err != nil || len(olds) != len(idx) {
			return fmt.Errorf("redis publish: intent answered %d values for %d messages: %v", len(olds), len(idx), err)
		}
		for j, old := range olds {
			if m := msgs[idx[j]]; old != "" && metaTarget(old) != m.Target.String() {
				return tether.Errorf(tether.EInvalid, "message %s: id already used for target %s", m.ID, clip(metaTarget(old)))
			}
		}
	}
	return nil
}

// appendLogs is Publish's second round trip.
func (s *Store) appendLogs(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	byLog := map[tether.Target][]int{}
	var order []tether.Target
	for i, m := range msgs {
		if byLog[m.Target] == nil {
			order = append(order, m.Target)
		}
		byLog[m.Target] = append(byLog[m.Target], i)
	}
	units := make([]unit, len(order))
	for c, t := range order {
		lk := s.k.log(t)
		kind := "d"
		if t.Kind == tether.KindGroup {
			kind = "g"
		}
		args := []string{kind}
		for _, i := range byLog[t] {
			m := msgs[i]
			pms, psub := splitMs(m.PublishedAt.UnixNano())
			ems, esub := splitMs(m.ExpiresAt.UnixNano())
			args = append(args, m.ID, m.ClientID, strconv.FormatInt(pms, 10), strconv.FormatInt(psub, 10),
				strconv.FormatInt(ems, 10)+"|"+strconv.FormatInt(esub, 10), string(ledger.EncodeMessage(m)))
		}
		units[c] = unit{sc: scriptAppend, keys: []string{lk.seq, lk.log, lk.ids, lk.idem, lk.members}, args: args}
	}
	res, err := s.runUnits(ctx, "publish", units)
	if err != nil {
		return nil, err
	}
	out := make([]tether.PublishResult, len(msgs))
	for c, r := range res {
		flat, err := r.ToArray()
		idx := byLog[order[c]]
		if err != nil || len(flat) != 4*len(idx) {
			return nil, fmt.Errorf("redis publish: append answered %d values for %d messages: %v", len(flat), len(idx), err)
		}
		for j, i := range idx {
			kind, err1 := flat[4*j].ToString()
			id, err2 := flat[4*j+1].ToString()
			seq, err3 := number(flat[4*j+2])
			n, err4 := number(flat[4*j+3])
			if err := errors.Join(err1, err2, err3, err4); err != nil {
				return nil, fmt.Errorf("redis publish: append answer: %w", errCorrupt)
			}
			out[i] = tether.PublishResult{ID: id, Seq: seq, Recipients: int(n), Duplicate: kind == "d"}
			s.ids.putOne(pos{order[c], seq}, id)
		}
	}
	return out, nil
}

// number decodes a script's answer that is a number or its text.
func number(m rueidis.RedisMessage) (uint64, error) {
	if m.IsInt64() {
		v, err := m.AsInt64()
		if v < 0 {
			return 0, errCorrupt
		}
		return uint64(v), err
	}
	s, err := m.ToString()
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, 64)
}

// Read returns, for each request, up to Limit entries of its log after
// After: one ZRANGEBYSCORE per request, all in one pipeline. EInvalid for
// a malformed source or a limit below 1. See tether.Store.
func (s *Store) Read(ctx context.Context, reqs []tether.ReadRequest) ([][]tether.Entry, error) {
	for _, r := range reqs {
		if err := checkSource(r.Source); err != nil {
			return nil, err
		}
		if r.Limit < 1 {
			return nil, tether.Errorf(tether.EInvalid, "read limit %d: must be at least 1", r.Limit)
		}
	}
	if err := s.check(ctx, "read"); err != nil {
		return nil, err
	}
	calls := make([]call, len(reqs))
	for i, r := range reqs {
		key, after, limit := s.k.log(r.Source).log, "("+strconv.FormatUint(r.After, 10), int64(r.Limit)
		calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed {
			return b.Zrangebyscore().Key(key).Min(after).Max("+inf").Withscores().Limit(0, limit).Build()
		})
	}
	res, err := s.roundTrip(ctx, "read", calls)
	if err != nil {
		return nil, err
	}
	out := make([][]tether.Entry, len(reqs))
	for i, r := range res {
		if out[i], err = entriesOf(r); err != nil {
			return nil, fmt.Errorf("redis read %s: %w", reqs[i].Source, err)
		}
		s.ids.put(reqs[i].Source, out[i])
	}
	return out, nil
}

// entriesOf decodes a ZRANGEBYSCORE … WITHSCORES answer of a log.
func entriesOf(r rueidis.RedisResult) ([]tether.Entry, error) {
	zs, err := r.AsZScores()
	if err != nil {
		return nil, err
	}
	out := make([]tether.Entry, 0, len(zs))
	for _, z := range zs {
		m, err := ledger.DecodeMessage([]byte(z.Member))
		if err != nil {
			return nil, err
		}
		out = append(out, tether.Entry{Seq: uint64(z.Score), Message: m})
	}
	return out, nil
}

// checkSource returns an EInvalid error for a malformed log source.
func checkSource(t tether.Target) error {
	if t.Kind != tether.KindDevice && t.Kind != tether.KindGroup {
		return tether.Errorf(tether.EInvalid, "source %q: kind must be device or group", t.String())
	}
	return tether.CheckID(string(t.Kind), t.ID)
}

// Message returns a message with the state of its delivery to each device
// it is addressed to, sorted by device. Four round trips: the target from
// the message's bucket; the position and (for a group) the members' spans
// from its log's shard; the record; then each device's cursors and
// history from the devices' shards. ErrNotFound (wrapped) for an unknown
// or purged id. See tether.Store.
func (s *Store) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	if err := s.check(ctx, "message"); err != nil {
		return tether.MessageStatus{}, err
	}
	target, seq, m, spans, err := s.locate(ctx, id)
	if err != nil {
		return tether.MessageStatus{}, err
	}
	devices, err := addressed(target, seq, spans)
	if err != nil {
		return tether.MessageStatus{}, err
	}
	st := tether.MessageStatus{Message: *m, Deliveries: make([]tether.Delivery, 0, len(devices))}
	if len(devices) == 0 {
		return st, nil
	}
	calls := make([]call, 0, 2*len(devices))
	for _, d := range devices {
		ck, hk, min := s.k.cursors(d), s.k.hist(d, target), strconv.FormatUint(seq, 10)
		calls = append(calls,
			plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(ck).Build() }),
			plainCall(func(b rueidis.Builder) rueidis.Completed {
				return b.Zrangebyscore().Key(hk).Min(min).Max("+inf").Limit(0, 1).Build()
			}))
	}
	res, err := s.roundTrip(ctx, "message", calls)
	if err != nil {
		return tether.MessageStatus{}, err
	}
	for i, d := range devices {
		dl, err := deliveryOf(d, target, seq, res[2*i], res[2*i+1])
		if err != nil {
			return tether.MessageStatus{}, fmt.Errorf("redis message %s: %w", id, err)
		}
		st.Deliveries = append(st.Deliveries, dl)
	}
	return st, nil
}

// locate finds message id: its log and position, its record and, for a
// group, the spans of every device of the group's membership index.
func (s *Store) locate(ctx context.Context, id string) (tether.Target, uint64, *tether.Message, map[string]string, error) {
	target, err := s.targetOf(ctx, "message", id)
	if err != nil {
		return tether.Target{}, 0, nil, nil, err
	}
	lk := s.k.log(target)
	calls := []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hget().Key(lk.ids).Field(id).Build() }),
	}
	if target.Kind == tether.KindGroup {
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hgetall().Key(lk.mem).Build() }))
	}
	res, err := s.roundTrip(ctx, "message", calls)
	if err != nil {
		return tether.Target{}, 0, nil, nil, err
	}
	v, err := res[0].ToString()
	if rueidis.IsRedisNil(err) {
		return tether.Target{}, 0, nil, nil, fmt.Errorf("redis message %s: %w", id, tether.ErrNotFound)
	}
	seq, _, err := parseIDs(v)
	if err != nil {
		return tether.Target{}, 0, nil, nil, fmt.Errorf("redis message %s: %w", id, err)
	}
	var spans map[string]string
	if len(res) > 1 {
		if spans, err = res[1].AsStrMap(); err != nil {
			return tether.Target{}, 0, nil, nil, fmt.Errorf("redis message %s: %w", id, err)
		}
	}
	es, err := s.Read(ctx, []tether.ReadRequest{{Source: target, After: seq - 1, Limit: 1}})
	if err != nil {
		return tether.Target{}, 0, nil, nil, err
	}
	if len(es[0]) == 0 || es[0][0].Seq != seq {
		return tether.Target{}, 0, nil, nil, fmt.Errorf("redis message %s: %w", id, tether.ErrNotFound)
	}
	return target, seq, es[0][0].Message, spans, nil
}

// targetOf returns the target of message id, from its expiry bucket's
// meta (one command); ErrNotFound (wrapped) when it has none.
func (s *Store) targetOf(ctx context.Context, op, id string) (tether.Target, error) {
	metaKey := s.k.bucket(bucketOf(id)).meta
	res, err := s.roundTrip(ctx, op, []call{
		plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hget().Key(metaKey).Field(id).Build() }),
	})
	if err != nil {
		return tether.Target{}, err
	}
	ts, err := res[0].ToString()
	if rueidis.IsRedisNil(err) {
		return tether.Target{}, fmt.Errorf("redis %s %s: %w", op, id, tether.ErrNotFound)
	}
	ts = metaTarget(ts)
	target, perr := tether.ParseTarget(ts)
	if err != nil || perr != nil {
		return tether.Target{}, fmt.Errorf("redis %s %s: target %q: %w", op, id, clip(ts), errCorrupt)
	}
	return target, nil
}

// addressed returns the devices position seq of target's log is addressed
// to, sorted: the device, or the devices whose spans hold it.
func addressed(target tether.Target, seq uint64, spans map[string]string) ([]string, error) {
	if target.Kind == tether.KindDevice {
		return []string{target.ID}, nil
	}
	var out []string
	for d, sp := range spans {
		ss, err := decodeSpans(sp)
		if err != nil {
			return nil, err
		}
		if (&tether.Cursor{Source: target, Spans: ss}).Addressed(seq) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out, nil
}

// deliveryOf answers the state of position seq of source for device from
// its cursors (cur: GET of them) or its history (hist: the first range
// ending at or after seq).
func deliveryOf(device string, source tether.Target, seq uint64, cur, hist rueidis.RedisResult) (tether.Delivery, error) {
	blob, err := cur.ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return tether.Delivery{}, err
	}
	cs, err := ledger.DecodeCursors([]byte(blob))
	if err != nil {
		return tether.Delivery{}, err
	}
	r, ok := tether.StateIn(cs, source, seq)
	if !ok {
		ms, err := hist.AsStrSlice()
		if err != nil {
			return tether.Delivery{}, err
		}
		if len(ms) == 1 {
			if h, err := decodeHist(ms[0]); err == nil && h.From <= seq {
				r, ok = h, true
			}
		}
	}
	if !ok { // settled, but its record is gone: it can only have expired
		r = tether.Range{State: tether.StateExpired}
	}
	d := tether.Delivery{Device: device, State: r.State, Attempts: r.Attempts}
	if r.State == tether.StateAcked {
		d.AckedAt = r.At.UTC()
	}
	return d, nil
}
