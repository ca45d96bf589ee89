package redis

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
)

// The hot scripts (intent, append, cas) work on units: each unit is what
// one hash tag needs (one expiry bucket, one log, one device), with its
// own keys and arguments, and the script runs its body once per unit. On
// a cluster every call carries one unit, so that it touches one slot. On
// a single instance one call carries the units of many tags, up to
// maxUnits: the cost of running a script (about 2 µs of Redis CPU, more
// than the few commands of a unit) is paid once per batch rather than
// once per device (docs/notes/redis.md, "Batched scripts").

// unitsLua wraps the body of a unit script (a function unit(keys, args)).
// KEYS: the keys of every unit in order. ARGV: the number of units n,
// then n pairs (number of keys, number of arguments) of the units, then
// the arguments of every unit in order. It returns the answers of the
// units, an array.
//
//go:embed lua/units.lua
var unitsLua string

// preludeLua declares, before the body, the table where units report
// events (the cas script: the deliveries it settled); the wrapper appends
// them to the event log as one stream entry per call.
//
//go:embed lua/prelude.lua
var preludeLua string

// maxUnits bounds the units of one call: a call runs at once, and other
// clients wait for it (1,024 units of cas take about 2 ms).
const maxUnits = 1024

// maxCallBytes bounds the arguments of one call as maxUnits bounds its
// units (a call may pass it by its last unit): what a unit carries grows
// with its work, the events of every ack a Commit settles for its device.
// A Commit made after the hub's commit loop had fallen behind carried the
// events of three seconds of acks of 1,000 devices, about 25 MB, and its
// XADD alone held Redis for 184 ms (docs/benchmarks.md); at 1 MiB a call
// appends about 6,000 events.
const maxCallBytes = 1 << 20

// newUnitScript returns the script made of a unit body, its prelude and
// its wrapper.
func newUnitScript(body string) *script {
	return newScript(preludeLua+"\n"+body+"\n"+unitsLua, false)
}

// unit is the work of one script for one hash tag.
type unit struct {
	sc         *script
	keys, args []string
	outbox     int // on a cluster, 1 + the slot of the outbox the unit appends events to; 0: none
}

// runUnits runs units in one round trip and returns the answer of each.
// Units of one script are packed into as few calls as s allows: one per
// unit on a cluster, up to maxUnits (and about maxCallBytes of arguments)
// per call on a single instance.
func (s *Store) runUnits(ctx context.Context, op string, units []unit) ([]rueidis.RedisMessage, error) {
	per := maxUnits
	if s.cluster {
		per = 1
	}
	byScript := map[*script][]int{}
	var order []*script
	for i, u := range units {
		if _, ok := byScript[u.sc]; !ok {
			order = append(order, u.sc)
		}
		byScript[u.sc] = append(byScript[u.sc], i)
	}
	var calls []call
	var packs [][]int // the units of each call
	for _, sc := range order {
		for idx := byScript[sc]; len(idx) > 0; {
			n := packSize(units, idx, per)
			calls, packs = append(calls, pack(sc, units, idx[:n])), append(packs, idx[:n])
			idx = idx[n:]
		}
	}
	res, err := s.roundTrip(ctx, op, calls)
	if err != nil {
		return nil, err
	}
	out := make([]rueidis.RedisMessage, len(units))
	for j, r := range res {
		answers, err := r.ToArray()
		if err != nil || len(answers) != len(packs[j]) {
			return nil, fmt.Errorf("redis %s: %d answers for %d units: %v", op, len(answers), len(packs[j]), err)
		}
		for k, i := range packs[j] {
			out[i] = answers[k]
		}
	}
	return out, nil
}

// packSize returns how many of units[idx...] the next call carries: at
// least one, at most per, and no more once their arguments reach
// maxCallBytes.
func packSize(units []unit, idx []int, per int) int {
	size := 0
	for n, i := range idx {
		if n == per || (n > 0 && size >= maxCallBytes) {
			return n
		}
		for _, a := range units[i].args {
			size += len(a)
		}
	}
	return len(idx)
}

// pack returns the call of script sc for units[idx...].
func pack(sc *script, units []unit, idx []int) call {
	c := call{sc: sc, args: make([]string, 1, 1+2*len(idx))}
	c.args[0] = strconv.Itoa(len(idx))
	for _, i := range idx {
		c.keys = append(c.keys, units[i].keys...)
		c.args = append(c.args, strconv.Itoa(len(units[i].keys)), strconv.Itoa(len(units[i].args)))
	}
	for _, i := range idx {
		c.args = append(c.args, units[i].args...)
	}
	return c
}
