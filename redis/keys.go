package redis

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strconv"

	"github.com/tetherpush/tether"
)

// Key layout (docs/notes/redis.md explains the reasons). P is
// Options.Prefix. The part in braces is the hash tag: every key of one tag
// lives in one Redis Cluster slot, so a script that touches only keys of
// one tag runs on one shard. Device and group ids never contain braces
// (tether.ValidID).
//
// Per log, tag {d:<device>} for a device's own log, {g:<group>} for a
// group's:
//
//	P:{t}:seq      string the newest position of the log (INCR)
//	P:{t}:log      zset   score position, member the message record (ledger.EncodeMessage, unique by its id)
//	P:{t}:ids      hash   msgID → "seq|recipients"
//	P:{t}:idem     hash   clientID → "expMs|expSub|recipients|seq|id"
//	P:{t}:trim     string the position below which history and spans were last trimmed
//
// Per device, tag {d:D}, besides its log:
//
//	P:{d:D}:c           string the device's cursors (ledger.EncodeCursors)
//	P:{d:D}:h:<source>  zset   score Range.To, member To(8) + ledger.EncodeRange: the history
//	P:{d:D}:presence    hash   presence (fleet.go)
//
// Per group, tag {g:G}, besides its log:
//
//	P:{g:G}:mem      hash device → "from:to,from:to" its spans (every membership until trimmed)
//	P:{g:G}:members  set  the current members
//
// Per expiry bucket, tag {x:n}, n = fnv32a(msgID) mod expiryBuckets:
//
//	P:{x:n}:due   zset, all scores 0   timeKey(expiresAt)+msgID of every message not purged
//	P:{x:n}:done  string               the member of due up to which Expire has settled every
//	                                   message (but those in late)
//	P:{x:n}:late  zset, all scores 0   members recorded at or below done: not settled yet
//	P:{x:n}:meta  hash  msgID → target ("device:D" or "group:G") and client id, "target\nclientID"
//
// The event log (SPEC section 11; events.go), tag {e}:
//
//	P:{e}:log    stream one entry per Append, and per script call that settled deliveries
//	                    (Commit, Expire, Cancel; on a cluster, per move of the relay):
//	                    field n the number of its events, then fields e (one per Append,
//	                    per device in a script) holding their JSON lines, without id; an
//	                    event's ID is the entry's id and its index in the entry,
//	                    zero-padded (eventID)
//	P:{e}:lease  string the webhook sender holding the lease, expiring with it (PX)
//	P:{e}:sent   string the ID of the last event the lease holders sent
//	P:{e}:moved  hash   on a cluster: slot → id of the newest entry of its outbox moved to
//	                    the log (relay.go)
//
// On a cluster, per slot N, tag {oN'} where oN' is the first of "o0",
// "o1", … in slot N (outboxTags):
//
//	P:{oN'}:out  stream the events the scripts of slot N settled, in the log's entry
//	                    format, until the relay moves them to the log
//
//	P:layout      string layout version

// expiryBuckets is the number of expiry buckets: enough to spread the
// expiry index over the shards of a cluster, few enough for Expire to
// look at all of them in one pipeline. Part of the layout.
const expiryBuckets = 16

// layoutVersion is stored under P:layout; Open refuses another. Version 1
// (one record per delivery) was the first release's.
const layoutVersion = "2"

// keys builds the keys of one store's prefix.
type keys struct{ prefix string }

func (k keys) layout() string { return k.prefix + ":layout" }

// tag returns the key prefix of the hash tag of a log.
func (k keys) tag(t tether.Target) string {
	if t.Kind == tether.KindGroup {
		return k.prefix + ":{g:" + t.ID + "}:"
	}
	return k.prefix + ":{d:" + t.ID + "}:"
}

// logKeys holds the keys of one log.
type logKeys struct{ seq, log, ids, idem, trim, mem, members string }

func (k keys) log(t tether.Target) logKeys {
	p := k.tag(t)
	return logKeys{seq: p + "seq", log: p + "log", ids: p + "ids", idem: p + "idem", trim: p + "trim",
		mem: p + "mem", members: p + "members"}
}

// cursors returns the key of device's cursors.
func (k keys) cursors(device string) string { return k.tag(tether.DeviceTarget(device)) + "c" }

// hist returns the key of device's history in the log of source.
func (k keys) hist(device string, source tether.Target) string {
	return k.tag(tether.DeviceTarget(device)) + "h:" + source.String()
}

// eventKeys holds the keys of the event log.
type eventKeys struct{ log, lease, sent, moved string }

func (k keys) eventLog() eventKeys {
	t := k.prefix + ":{e}:"
	return eventKeys{log: t + "log", lease: t + "lease", sent: t + "sent", moved: t + "moved"}
}

// outbox returns the key of the outbox of slot (relay.go).
func (k keys) outbox(slot uint16) string { return k.prefix + ":{" + outboxTags()[slot] + "}:out" }

// bucket holds the keys of one expiry bucket.
type bucket struct{ due, done, late, meta string }

func (k keys) bucket(n int) bucket {
	t := k.prefix + ":{x:" + strconv.Itoa(n) + "}:"
	return bucket{due: t + "due", done: t + "done", late: t + "late", meta: t + "meta"}
}

// bucketOf returns the expiry bucket of message id.
func bucketOf(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % expiryBuckets)
}

// timeKeyLen is the length of a timeKey.
const timeKeyLen = 16

// timeKey encodes Unix nanoseconds as 16 hex digits whose byte order is
// time order (the sign bit flipped), the prefix of expiry index members.
func timeKey(ns int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(ns)^(1<<63))
	return hex.EncodeToString(b[:])
}

// parseTimeKey decodes a timeKey.
func parseTimeKey(s string) (int64, bool) {
	if len(s) != timeKeyLen {
		return 0, false
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b[:]) ^ (1 << 63)), true
}

// splitMs splits Unix nanoseconds into whole milliseconds (floor) and the
// nanoseconds past them, both exact as Lua numbers.
func splitMs(ns int64) (ms, sub int64) {
	ms, sub = ns/1e6, ns%1e6
	if sub < 0 {
		ms, sub = ms-1, sub+1e6
	}
	return ms, sub
}
