package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// Publish stores msgs and one pending delivery per addressed device, and
// returns once every write has been acknowledged by Redis. See
// tether.Store.
//
// On a cluster the devices of a group live on many shards, so Publish
// cannot be one script. It is up to four round trips, each one pipeline,
// in an order that keeps at-least-once (docs/notes/redis.md):
//
//  1. read the members of target groups and the idempotency entries of
//     client ids (only when a message has a group target or a client id);
//  2. record each new message in its expiry bucket: meta (target, client
//     id, recipients), expiry index entry and record, in one script per
//     bucket — from then on Expire can find every delivery written later;
//  3. write the deliveries, one script per device with the message
//     copied, so that Pending reads them from the device's shard alone;
//  4. only then write the idempotency entries (messages with a client id).
//
// An error may leave a prefix of this done: never an idempotency entry
// whose deliveries are missing, so a retry with the same client id is
// stored again rather than answered as a duplicate of a partial message.
// A message id already recorded for the same target (a retried call) is
// completed and answered as a duplicate of itself; for another target it
// is an EInvalid error. Malformed messages are EInvalid, before anything
// is sent.
func (s *Store) Publish(ctx context.Context, msgs []*tether.Message) ([]tether.PublishResult, error) {
	for _, m := range msgs {
		if err := tether.CheckStorable(m); err != nil {
			return nil, err
		}
	}
	if err := s.check(ctx, "publish"); err != nil {
		return nil, err
	}
	p := &publish{s: s, msgs: msgs, results: make([]tether.PublishResult, len(msgs)), rcpt: make([][]string, len(msgs))}
	steps := []func(context.Context) error{p.read, p.intend, p.deliver, p.commit}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return p.results, nil
}

// publish is one Publish call in progress.
type publish struct {
	s       *Store
	msgs    []*tether.Message
	results []tether.PublishResult
	rcpt    [][]string // recipients of each message written
	write   []int      // indexes of the messages to write
	recs    map[int]string

	members map[string][]string // group → members, sorted (step 1)
	idems   map[idemKey]string  // target and client id → stored entry or "" (step 1)
}

type idemKey struct {
	target   tether.Target
	clientID string
}

// idemHash returns the key of the hash holding target's idempotency
// entries, under target's hash tag.
func (k keys) idemHash(t tether.Target) string {
	if t.Kind == tether.KindGroup {
		return k.groupIdem(t.ID)
	}
	return k.device(t.ID).idem
}

// read is step 1: members and idempotency entries, one pipeline; then it
// decides which messages are duplicates.
func (p *publish) read(ctx context.Context) error {
	p.members, p.idems = map[string][]string{}, map[idemKey]string{}
	var calls []call
	var apply []func(rueidis.RedisResult)
	for _, m := range p.msgs {
		if g := m.Target.ID; m.Target.Kind == tether.KindGroup && p.members[g] == nil {
			p.members[g] = []string{}
			key := p.s.k.members(g)
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Smembers().Key(key).Build() }))
			apply = append(apply, func(r rueidis.RedisResult) {
				ms, _ := r.AsStrSlice()
				slices.Sort(ms)
				p.members[g] = append(p.members[g], ms...)
			})
		}
		ik := idemKey{m.Target, m.ClientID}
		if _, seen := p.idems[ik]; m.ClientID != "" && !seen {
			p.idems[ik] = ""
			key, field := p.s.k.idemHash(m.Target), m.ClientID
			calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed { return b.Hget().Key(key).Field(field).Build() }))
			apply = append(apply, func(r rueidis.RedisResult) { p.idems[ik], _ = r.ToString() })
		}
	}
	res, err := p.s.roundTrip(ctx, "publish", calls)
	if err != nil {
		return err
	}
	for i, r := range res {
		apply[i](r)
	}
	return p.decide()
}

// decide answers the duplicates, in call order (a client id accepted
// earlier in the call counts), and lists the messages to write with their
// recipients.
func (p *publish) decide() error {
	accepted := map[idemKey]idem{}
	for i, m := range p.msgs {
		ik := idemKey{m.Target, m.ClientID}
		if m.ClientID != "" {
			e, ok := accepted[ik]
			if !ok && p.idems[ik] != "" {
				var err error
				if e, err = decodeIdem(p.idems[ik]); err != nil {
					return fmt.Errorf("redis publish: %w", err)
				}
				ok = true
			}
			if ok && e.expiresAt > m.PublishedAt.UnixNano() {
				p.results[i] = tether.PublishResult{ID: e.id, Recipients: e.recipients, Duplicate: true}
				continue
			}
		}
		rcpt := []string{m.Target.ID}
		if m.Target.Kind == tether.KindGroup {
			rcpt = p.members[m.Target.ID]
		}
		p.rcpt[i] = rcpt
		p.results[i] = tether.PublishResult{ID: m.ID, Recipients: len(rcpt), Devices: rcpt}
		p.write = append(p.write, i)
		if m.ClientID != "" {
			accepted[ik] = idem{expiresAt: m.ExpiresAt.UnixNano(), recipients: len(rcpt), id: m.ID}
		}
	}
	return nil
}

// intend is step 2: one intent script per expiry bucket records meta,
// expiry index entry and record of each message to write. A message whose
// id is already recorded is a retry (same target: its stored recipients
// are completed below) or a conflict (EInvalid).
func (p *publish) intend(ctx context.Context) error {
	if len(p.write) == 0 {
		return nil
	}
	p.recs = make(map[int]string, len(p.write))
	byBucket := map[int][]int{}
	for _, i := range p.write {
		n := bucketOf(p.msgs[i].ID)
		byBucket[n] = append(byBucket[n], i)
		p.recs[i] = encodeMessage(p.msgs[i])
	}
	var calls []call
	var order [][]int
	for n, idx := range byBucket {
		b := p.s.k.bucket(n)
		ks := []string{b.due, b.meta}
		var args, recs []string
		for _, i := range idx {
			m := p.msgs[i]
			ks = append(ks, b.record(m.ID))
			mt := meta{target: m.Target, clientID: m.ClientID, recipients: p.rcpt[i]}
			args = append(args, m.ID, timeKey(m.ExpiresAt.UnixNano())+m.ID, mt.encode())
			recs = append(recs, p.recs[i])
		}
		calls = append(calls, scriptCall(scriptIntent, ks, append(args, recs...)...))
		order = append(order, idx)
	}
	res, err := p.s.roundTrip(ctx, "publish", calls)
	if err != nil {
		return err
	}
	for c, r := range res {
		olds, err := r.AsStrSlice()
		if err != nil || len(olds) != len(order[c]) {
			return fmt.Errorf("redis publish: intent answered %d values for %d messages: %v", len(olds), len(order[c]), err)
		}
		for j, old := range olds {
			if old != "" {
				if err := p.retried(order[c][j], old); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// retried handles message i whose id was already recorded with meta old.
func (p *publish) retried(i int, old string) error {
	m := p.msgs[i]
	if t := metaTarget(old); t != m.Target.String() {
		return tether.Errorf(tether.EInvalid, "message %s: id already used for target %s", m.ID, clip(t))
	}
	mt, err := decodeMeta(old)
	if err != nil {
		return fmt.Errorf("redis publish: %w", err)
	}
	p.rcpt[i] = mt.recipients
	p.results[i] = tether.PublishResult{ID: m.ID, Recipients: len(mt.recipients), Duplicate: true}
	return nil
}

// deliver is step 3: one deliver script per recipient device, for all its
// messages of the call.
func (p *publish) deliver(ctx context.Context) error {
	byDevice := map[string][]string{}
	var devices []string
	for _, i := range p.write {
		m := p.msgs[i]
		ms, sub := splitMs(m.ExpiresAt.UnixNano())
		for _, d := range p.rcpt[i] {
			if byDevice[d] == nil {
				devices = append(devices, d)
			}
			byDevice[d] = append(byDevice[d], m.ID, strconv.FormatInt(ms, 10), strconv.FormatInt(sub, 10), p.recs[i])
		}
	}
	calls := make([]call, 0, len(devices))
	for _, d := range devices {
		dk := p.s.k.device(d)
		calls = append(calls, scriptCall(scriptDeliver, []string{dk.open, dk.dlv, dk.msg}, byDevice[d]...))
	}
	_, err := p.s.roundTrip(ctx, "publish", calls)
	return err
}

// commit is step 4: the idempotency entries of the messages written, one
// HSET per target.
func (p *publish) commit(ctx context.Context) error {
	byHash := map[string][]string{}
	var hashes []string
	for _, i := range p.write {
		m := p.msgs[i]
		if m.ClientID == "" {
			continue
		}
		h := p.s.k.idemHash(m.Target)
		if byHash[h] == nil {
			hashes = append(hashes, h)
		}
		e := idem{expiresAt: m.ExpiresAt.UnixNano(), recipients: len(p.rcpt[i]), id: m.ID}
		byHash[h] = append(byHash[h], m.ClientID, e.encode())
	}
	calls := make([]call, 0, len(hashes))
	for _, h := range hashes {
		fv := byHash[h]
		calls = append(calls, plainCall(func(b rueidis.Builder) rueidis.Completed {
			c := b.Hset().Key(h).FieldValue()
			for j := 0; j < len(fv); j += 2 {
				c = c.FieldValue(fv[j], fv[j+1])
			}
			return c.Build()
		}))
	}
	_, err := p.s.roundTrip(ctx, "publish", calls)
	return err
}

// Message returns a message with the state of each of its deliveries,
// sorted by device. Two round trips: the record and meta from the
// message's bucket, then the deliveries from the recipients' shards (one
// pipeline). A delivery missing from its shard (a publish that failed
// half-way) is left out. ErrNotFound (wrapped) for an unknown or purged
// id. See tether.Store.
func (s *Store) Message(ctx context.Context, id string) (tether.MessageStatus, error) {
	if err := s.check(ctx, "message"); err != nil {
		return tether.MessageStatus{}, err
	}
	b := s.k.bucket(bucketOf(id))
	res, err := s.roundTrip(ctx, "message", []call{
		plainCall(func(bl rueidis.Builder) rueidis.Completed { return bl.Get().Key(b.record(id)).Build() }),
		plainCall(func(bl rueidis.Builder) rueidis.Completed { return bl.Hget().Key(b.meta).Field(id).Build() }),
	})
	if err != nil {
		return tether.MessageStatus{}, err
	}
	rec, err1 := res[0].ToString()
	mt, err2 := res[1].ToString()
	if rueidis.IsRedisNil(err1) || rueidis.IsRedisNil(err2) {
		return tether.MessageStatus{}, fmt.Errorf("redis message %s: %w", id, tether.ErrNotFound)
	}
	m, err := decodeMessage(id, rec)
	if err != nil {
		return tether.MessageStatus{}, fmt.Errorf("redis message: %w", err)
	}
	meta, err := decodeMeta(mt)
	if err != nil {
		return tether.MessageStatus{}, fmt.Errorf("redis message: %w", err)
	}
	calls := make([]call, len(meta.recipients))
	for i, d := range meta.recipients {
		key := s.k.device(d).dlv
		calls[i] = plainCall(func(bl rueidis.Builder) rueidis.Completed { return bl.Hget().Key(key).Field(id).Build() })
	}
	if res, err = s.roundTrip(ctx, "message", calls); err != nil {
		return tether.MessageStatus{}, err
	}
	st := tether.MessageStatus{Message: *m, Deliveries: make([]tether.Delivery, 0, len(calls))}
	for i, r := range res {
		v, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		d, err := decodeDelivery(meta.recipients[i], v)
		if err != nil {
			return tether.MessageStatus{}, fmt.Errorf("redis message %s: %w", id, err)
		}
		st.Deliveries = append(st.Deliveries, d)
	}
	return st, nil
}
