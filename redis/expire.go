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
	"github.com/tetherpush/tether/internal/ledger"
)

// trimEvery is how far a log's oldest retained position must move before
// Expire trims the history ranges and membership spans below it: trimming
// visits every device the log was addressed to, so it is done in steps.
const trimEvery = 1024

// Expire settles as expired the unsettled deliveries of messages that
// expired at or before now, and purges messages that expired before
// purgeBefore, at most limit messages per call, the oldest expiry of each
// bucket first. EInvalid for a limit below 1. See tether.Store.
//
// Five round trips, each one pipeline (one more when the work is spread
// unevenly over the buckets, and one or two more when a purge makes a
// group's log due for trimming, once every trimEvery positions), in an
// order that a failure at any point only delays (the next call finds the
// same bucket entries and redoes the rest; every step is idempotent, and
// a delivery counts as expired only when its cursor settles it):
//
//  1. scan every expiry bucket for due messages (above the bucket's
//     watermark, or in late) and settled messages due for purging (one
//     read-only script per bucket);
//  2. their positions, from their logs' ids hashes, the membership of the
//     groups with messages to settle, and the newest position of the
//     logs with messages to purge;
//  3. settle the due ones as expired in the cursors of the devices they
//     are addressed to that have not settled them: the cursors are read
//     (but for those the store has seen settle them), and only those that
//     change are written (compare-and-set, one script per device, which
//     appends the delivery.expired events of what it settles);
//  4. purge the messages due for purging from their logs (plain commands;
//     a script for idempotency entries), and trim the logs that lost
//     enough (a script per log, then the members of a group's log);
//  5. only then drop the purged entries from their buckets and move each
//     bucket's watermark over what was settled (one script per bucket).
func (s *Store) Expire(ctx context.Context, now, purgeBefore time.Time, limit int) (int, bool, error) {
	if limit < 1 {
		return 0, false, tether.Errorf(tether.EInvalid, "expire limit %d: must be at least 1", limit)
	}
	if err := s.check(ctx, "expire"); err != nil {
		return 0, false, err
	}
	due, gc, more, err := s.scan(ctx, now.UnixNano(), purgeBefore.UnixNano(), limit)
	if err != nil {
		return 0, false, err
	}
	purgeN := purgeBefore.UnixNano()
	for i := range due {
		due[i].settle = true
		due[i].purge = due[i].expiresAt < purgeN
	}
	for i := range gc {
		gc[i].purge = true
	}
	work := append(due, gc...)
	if len(work) == 0 {
		return 0, more, nil
	}
	ls, err := s.positions(ctx, "expire", work)
	if err != nil {
		return 0, false, err
	}
	_, counts, err := s.settle(ctx, "expire", work, ls, tether.StateExpired, now, nil)
	if err != nil {
		return 0, false, err
	}
	expired := 0
	for _, n := range counts {
		expired += n
	}
	if err := s.purge(ctx, work, ls); err != nil {
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
	above     bool   // in due above the bucket's watermark (else in late, or settled)
	settle    bool   // settle it (as expired, or as Cancel does)
	purge     bool   // purge it
}

// scan is Expire's first round trip: the due entries (at most limit) and
// then, with what is left of limit, the entries due for purging, each list
// in expiry order within a bucket, and whether more work remains. Each
// bucket is asked for a share of limit; only when that leaves the call
// short of limit while some bucket had more, those buckets are asked
// again for up to limit+1 (a second round trip).
func (s *Store) scan(ctx context.Context, nowN, purgeN int64, limit int) (due, gc []entry, more bool, err error) {
	share := min(limit+1, (limit+expiryBuckets)/expiryBuckets*5/4+1)
	got := make([]scanned, expiryBuckets)
	all := make([]int, expiryBuckets)
	for i := range all {
		all[i] = i
	}
	if err := s.scanBuckets(ctx, all, timeKey(nowN+1), timeKey(purgeN), share, got); err != nil {
		return nil, nil, false, err
	}
	nDue, nGC, dueCut, gcCut := tally(got)
	if (nDue <= limit && len(dueCut) > 0) || (nDue+nGC <= limit && len(gcCut) > 0) {
		again := slices.Compact(slices.Sorted(slices.Values(append(dueCut, gcCut...))))
		if err := s.scanBuckets(ctx, again, timeKey(nowN+1), timeKey(purgeN), limit+1, got); err != nil {
			return nil, nil, false, err
		}
		nDue, nGC, dueCut, gcCut = tally(got)
	}
	for _, g := range got {
		due, gc = append(due, g.due...), append(gc, g.gc...)
	}
	byMember := func(a, b entry) int { return strings.Compare(a.member, b.member) }
	slices.SortFunc(due, byMember)
	slices.SortFunc(gc, byMember)
	left := limit - len(due)
	if left <= 0 {
		return due[:limit], nil, left < 0 || len(gc) > 0 || len(dueCut)+len(gcCut) > 0, nil
	}
	if len(gc) > left {
		return due, gc[:left], true, nil
	}
	return due, gc, len(dueCut)+len(gcCut) > 0, nil
}

// scanned is what scan found in one bucket: due entries, entries due for
// purging, and whether the bucket has more of each than it answered.
type scanned struct {
	due, gc       []entry
	dueCut, gcCut bool
}

// tally counts what scan found and lists the buckets that have more.
func tally(got []scanned) (nDue, nGC int, dueCut, gcCut []int) {
	for i, g := range got {
		nDue, nGC = nDue+len(g.due), nGC+len(g.gc)
		if g.dueCut {
			dueCut = append(dueCut, i)
		}
		if g.gcCut {
			gcCut = append(gcCut, i)
		}
	}
	return nDue, nGC, dueCut, gcCut
}

// scanBuckets runs the scan script of each of buckets, asking for n
// entries of each list, into got.
func (s *Store) scanBuckets(ctx context.Context, buckets []int, dueBound, gcBound string, n int, got []scanned) error {
	calls := make([]call, len(buckets))
	for j, i := range buckets {
		b := s.k.bucket(i)
		calls[j] = scriptCall(scriptScan, []string{b.due, b.done, b.late, b.meta}, dueBound, gcBound, strconv.Itoa(n))
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return err
	}
	for j, r := range res {
		i := buckets[j]
		lists, err := r.ToArray()
		if err != nil || len(lists) != 3 {
			return fmt.Errorf("redis expire: scan of bucket %d: unexpected answer: %v", i, err)
		}
		above, err1 := entries(i, lists[0])
		late, err2 := entries(i, lists[1])
		gc, err3 := entries(i, lists[2])
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("redis expire: scan of bucket %d: %w", i, errCorrupt)
		}
		for k := range above {
			above[k].above = true
		}
		got[i] = scanned{due: append(above, late...), gc: gc,
			dueCut: len(above) == n || len(late) == n, gcCut: len(gc) == n}
	}
	return nil
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

// positions is Expire's second round trip (and Cancel's): the position of each message
// in its log (HMGET of the log's ids), the spans of every device of each
// group with messages to settle (HGETALL of its membership index), and
// the newest position of each log with messages to purge.
func (s *Store) positions(ctx context.Context, op string, work []entry) (logs, error) {
	var ls logs
	ls.index = map[tether.Target]int{}
	for i, e := range work {
		if e.target.ID == "" {
			continue
		}
		j, ok := ls.index[e.target]
		if !ok {
			j = len(ls.all)
			ls.index[e.target] = j
			ls.all = append(ls.all, logWork{target: e.target})
		}
		l := &ls.all[j]
		l.work = append(l.work, i)
		l.settle = l.settle || e.settle
		l.purge = l.purge || e.purge
	}
	var calls []call
	for _, l := range ls.all {
		lk := s.k.log(l.target)
		ids := make([]string, len(l.work))
		for k, i := range l.work {
			ids[k] = work[i].id
		}
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hmget().Key(lk.ids).Field(ids...).Build() }))
		if l.target.Kind == tether.KindGroup && l.settle {
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hgetall().Key(lk.mem).Build() }))
		}
		if l.purge {
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Get().Key(lk.seq).Build() }))
		}
	}
	res, err := s.roundTrip(ctx, op, calls)
	if err != nil {
		return logs{}, err
	}
	for j := range ls.all {
		if res, err = ls.all[j].found(work, res); err != nil {
			return logs{}, fmt.Errorf("redis %s: %w", op, err)
		}
	}
	return ls, nil
}

// logs is what Expire knows of the logs of its work.
type logs struct {
	all   []logWork
	index map[tether.Target]int
}

// members returns the spans of each device in group t, as positions read
// them (nil when they were not read).
func (ls logs) members(t tether.Target) map[string]string {
	if j, ok := ls.index[t]; ok {
		return ls.all[j].members
	}
	return nil
}

// logWork is one log of Expire's work.
type logWork struct {
	target        tether.Target
	work          []int // indexes of its entries in the work
	settle, purge bool  // some of them to settle, to purge
	members       map[string]string
	last          uint64
}

// found takes the answers positions asked about l off the front of res
// and returns the rest: the entries' positions go into work.
func (l *logWork) found(work []entry, res []rueidis.RedisResult) ([]rueidis.RedisResult, error) {
	vals, err := res[0].ToArray()
	if err != nil {
		return nil, err
	}
	res = res[1:]
	for k, i := range l.work {
		if v, err := vals[k].ToString(); err == nil {
			if work[i].seq, _, err = parseIDs(v); err != nil {
				return nil, err
			}
		}
	}
	if l.target.Kind == tether.KindGroup && l.settle {
		if l.members, err = res[0].AsStrMap(); err != nil {
			return nil, err
		}
		res = res[1:]
	}
	if l.purge {
		if l.last, err = lastOf(res[0]); err != nil {
			return nil, err
		}
		res = res[1:]
	}
	return res, nil
}

// settle is Expire's third round trip, and Cancel's: each message of
// work to settle is settled as state at at in the cursors of the devices
// it is addressed to, with the delivery events of what that settles.
// Devices whose cursors the store has seen settle all of
// their marks are skipped (a settled position stays settled, or becomes
// one its cursor no longer addresses); the others' cursors are read and
// written when they change. It returns the devices it looked at and how
// many deliveries each settled. sent, when set, gives by device the sends
// the caller knows of; a larger count than the cursor's is recorded.
func (s *Store) settle(ctx context.Context, op string, work []entry, ls logs, state tether.DeliveryState, at time.Time, sent map[string]int) ([]string, []int, error) {
	marks := map[string][]tether.Mark{}
	ids := map[pos]string{}
	var devices []string
	for _, e := range work {
		if !e.settle || e.seq == 0 {
			continue
		}
		ds, err := addressed(e.target, e.seq, ls.members(e.target))
		if err != nil {
			return nil, nil, fmt.Errorf("redis %s: %w", op, err)
		}
		ids[pos{e.target, e.seq}] = e.id
		for _, d := range ds {
			if marks[d] == nil {
				devices = append(devices, d)
			}
			marks[d] = append(marks[d], tether.Mark{Source: e.target, Seq: e.seq, State: state, Attempts: sent[d]})
		}
	}
	devices = slices.DeleteFunc(devices, func(d string) bool { return s.settledInCache(d, marks[d]) })
	if len(devices) == 0 {
		return nil, nil, nil
	}
	idOf := func(m tether.Mark) string { return ids[pos{m.Source, m.Seq}] }
	counts := make([]int, len(devices))
	_, err := s.update(ctx, op, devices, true, func(i int, cs []tether.Cursor) ([]tether.Cursor, []tether.HistOp, []tether.LogEvent, error) {
		cs, out, hist := tether.ApplyMarks(cs, devices[i], marks[devices[i]], at)
		counts[i] = len(out.Settled)
		return cs, hist, tether.DeliveryEvents(devices[i], out.Settled, at, idOf), nil
	})
	if err != nil {
		return nil, nil, err
	}
	return devices, counts, nil
}

// settledInCache reports whether the cached cursors of device settle
// every position of marks. A cursor the cache lacks proves nothing: the
// device may have joined the group since.
func (s *Store) settledInCache(device string, marks []tether.Mark) bool {
	blob, ok := s.cache.get(device)
	if !ok || blob == "" {
		return false
	}
	cs, err := ledger.DecodeCursors([]byte(blob))
	if err != nil {
		return false
	}
	for _, m := range marks {
		i := tether.FindCursor(cs, m.Source)
		if i < 0 || !cs[i].IsSettled(m.Seq) {
			return false
		}
	}
	return true
}

// purge is Expire's fourth round trip: the messages due for purging leave
// their logs with their ids, by plain commands (one ZREMRANGEBYSCORE per
// run of consecutive positions, one HDEL per log), and their idempotency
// entries when these still point to them (the unidem script, for messages
// with a client id). A log whose purge passed a multiple of trimEvery or
// its newest position is checked for trimming (the trim script, which
// trims a device's history itself); then the members of the group logs it
// trimmed are trimmed too (see trimGroups).
func (s *Store) purge(ctx context.Context, work []entry, ls logs) error {
	var calls []call
	var checked []int // index in calls of each trim script, by log
	var trimmed []tether.Target
	for _, l := range ls.all {
		var seqs []uint64
		var ids, idem []string
		check := false
		for _, i := range l.work {
			e := work[i]
			if !e.purge || e.seq == 0 {
				continue
			}
			seqs, ids = append(seqs, e.seq), append(ids, e.id)
			if e.clientID != "" {
				idem = append(idem, e.clientID, e.id)
			}
			check = check || e.seq%trimEvery == 0 || e.seq >= l.last
		}
		if len(seqs) == 0 {
			continue
		}
		lk := s.k.log(l.target)
		for _, r := range runs(seqs) {
			from, to := strconv.FormatUint(r.From, 10), strconv.FormatUint(r.To, 10)
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed {
				return b.Zremrangebyscore().Key(lk.log).Min(from).Max(to).Build()
			}))
		}
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hdel().Key(lk.ids).Field(ids...).Build() }))
		if len(idem) > 0 {
			calls = append(calls, scriptCall(scriptUnidem, []string{lk.idem}, idem...))
		}
		if check {
			keys := []string{lk.log, lk.seq, lk.trim}
			if l.target.Kind == tether.KindDevice {
				keys = append(keys, s.k.hist(l.target.ID, l.target))
			}
			checked, trimmed = append(checked, len(calls)), append(trimmed, l.target)
			calls = append(calls, scriptCall(scriptTrim, keys, strconv.Itoa(trimEvery)))
		}
	}
	res, err := s.roundTrip(ctx, "expire", calls)
	if err != nil {
		return err
	}
	oldest := map[tether.Target]uint64{}
	for j, c := range checked {
		v, _ := res[c].ToString()
		at, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("redis expire: trim of %s answered %q: %w", trimmed[j], clip(v), errCorrupt)
		}
		if at != 0 {
			oldest[trimmed[j]] = at
		}
	}
	return s.trimGroups(ctx, oldest, ls)
}

// runs returns seqs, sorted, as runs of consecutive positions.
func runs(seqs []uint64) []tether.Span {
	slices.Sort(seqs)
	var out []tether.Span
	for _, q := range seqs {
		if n := len(out); n > 0 && out[n-1].To+1 >= q {
			out[n-1].To = max(out[n-1].To, q)
			continue
		}
		out = append(out, tether.Span{From: q, To: q})
	}
	return out
}

// trimGroups trims the members of each group log of oldest below its
// position there: their history ranges and their spans in the group. One
// round trip, after one more for the groups whose membership positions did
// not read; once every trimEvery positions of a group's log.
func (s *Store) trimGroups(ctx context.Context, oldest map[tether.Target]uint64, ls logs) error {
	if len(oldest) == 0 {
		return nil
	}
	members := map[tether.Target]map[string]string{}
	var unread []tether.Target
	for t := range oldest {
		if members[t] = ls.members(t); members[t] == nil {
			unread = append(unread, t)
		}
	}
	if len(unread) > 0 {
		calls := make([]call, len(unread))
		for i, t := range unread {
			key := s.k.log(t).mem
			calls[i] = plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hgetall().Key(key).Build() })
		}
		res, err := s.roundTrip(ctx, "expire", calls)
		if err != nil {
			return err
		}
		for i, t := range unread {
			if members[t], err = res[i].AsStrMap(); err != nil {
				return fmt.Errorf("redis expire: members of %s: %w", t, err)
			}
		}
	}
	var calls []call
	for t, at := range oldest {
		calls = append(calls, s.trimCalls(t, at, members[t])...)
	}
	_, err := s.roundTrip(ctx, "expire", calls)
	return err
}

// trimCalls returns the commands that trim the members of group log t
// below oldest: their history ranges and their spans in the group.
func (s *Store) trimCalls(t tether.Target, oldest uint64, members map[string]string) []call {
	lk := s.k.log(t)
	below, at := "("+strconv.FormatUint(oldest, 10), strconv.FormatUint(oldest, 10)
	calls := make([]call, 0, 2*len(members))
	for d := range members {
		hk := s.k.hist(d, t)
		calls = append(calls,
			plainCall(func(b rueidis.Builder) rueidis.Completed {
				return b.Zremrangebyscore().Key(hk).Min("-inf").Max(below).Build()
			}),
			scriptCall(scriptMember, []string{lk.seq, lk.mem, lk.members}, d, "t", at))
	}
	return calls
}

// finish is Expire's last round trip: one finish script per bucket drops
// the purged entries with their meta, takes the settled ones out of late,
// puts in late those whose log does not hold them (yet: an append may be
// under way, or may have failed; then they leave with their purge), and
// moves the bucket's watermark up to the highest entry above it that this
// Expire handled.
func (s *Store) finish(ctx context.Context, work []entry) error {
	byBucket := map[int][]string{}
	var order []int
	for _, e := range work {
		if byBucket[e.bucket] == nil {
			order = append(order, e.bucket)
			byBucket[e.bucket] = []string{""}
		}
		args := byBucket[e.bucket]
		if e.above && e.member > args[0] {
			args[0] = e.member
		}
		op := "s"
		switch {
		case e.purge:
			op = "p"
		case e.settle && e.seq == 0:
			op = "l" // no log entry yet: its append may still come
		}
		byBucket[e.bucket] = append(args, op, e.member)
	}
	calls := make([]call, 0, len(order))
	for _, n := range order {
		b := s.k.bucket(n)
		calls = append(calls, scriptCall(scriptFinish, []string{b.due, b.done, b.late, b.meta}, byBucket[n]...))
	}
	_, err := s.roundTrip(ctx, "expire", calls)
	return err
}
