package redis

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strconv"
)

// Key layout (docs/notes/redis.md explains the reasons). P is
// Options.Prefix. The part in braces is the hash tag: every key of one tag
// lives in one Redis Cluster slot, so a script that touches only keys of
// one tag runs on one shard. Device and group ids never contain braces
// (tether.ValidID).
//
// Per device, tag {d:<device>}:
//
//	P:{d:D}:open    zset, all scores 0   message ids of the open (pending or inflight) deliveries, in id order
//	P:{d:D}:dlv     hash  msgID → delivery "state|attempts|expMs|expSub|ackedAt"
//	P:{d:D}:msg     hash  msgID → copy of the message record, while the delivery is open
//	P:{d:D}:groups  set   groups of the device
//	P:{d:D}:joined  string "1" once the device joined
//	P:{d:D}:idem    hash  clientID → idempotency entry of a device-target message
//
// Per group, tag {g:<group>}:
//
//	P:{g:G}:members set   devices of the group
//	P:{g:G}:idem    hash  clientID → idempotency entry of a group-target message
//
// Per expiry bucket, tag {x:<n>}, n = fnv32a(msgID) mod expiryBuckets:
//
//	P:{x:n}:due     zset, all scores 0   timeKey(expiresAt)+msgID of messages not yet expired by Expire
//	P:{x:n}:gc      zset, all scores 0   timeKey(expiresAt)+msgID of expired messages waiting to be purged
//	P:{x:n}:meta    hash  msgID → "target\nclientID\ndevice\ndevice…" (recipients sorted)
//	P:{x:n}:m:<id>  string the message record
//
//	P:layout        string layout version
//
// States in a delivery: p pending, i inflight, a acked, e expired, d dead.
// expMs and expSub are the message's expiry in whole milliseconds (floor)
// and the nanoseconds past them, so that Lua, whose numbers are doubles,
// compares times exactly; ackedAt is Unix nanoseconds in decimal, or empty.

// expiryBuckets is the number of expiry buckets: enough to spread the
// message records over the shards of a cluster, few enough for Expire to
// look at all of them in one pipeline. Part of the layout.
const expiryBuckets = 16

// layoutVersion is stored under P:layout; Open refuses another.
const layoutVersion = "1"

// keys builds the keys of one store's prefix.
type keys struct{ prefix string }

func (k keys) layout() string { return k.prefix + ":layout" }

// device holds the keys of one device.
type device struct{ open, dlv, msg, groups, joined, idem string }

func (k keys) device(id string) device {
	t := k.prefix + ":{d:" + id + "}:"
	return device{open: t + "open", dlv: t + "dlv", msg: t + "msg", groups: t + "groups", joined: t + "joined", idem: t + "idem"}
}

func (k keys) members(group string) string { return k.prefix + ":{g:" + group + "}:members" }

func (k keys) groupIdem(group string) string { return k.prefix + ":{g:" + group + "}:idem" }

// bucket holds the keys of one expiry bucket.
type bucket struct{ tag, due, gc, meta string }

func (k keys) bucket(n int) bucket {
	t := k.prefix + ":{x:" + strconv.Itoa(n) + "}:"
	return bucket{tag: t, due: t + "due", gc: t + "gc", meta: t + "meta"}
}

// record returns the key of message id's record in bucket b.
func (b bucket) record(id string) string { return b.tag + "m:" + id }

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
