package redis

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/tetherpush/tether"
)

// The Lua scripts, one file each in lua/; each file's header says its keys,
// arguments and answer. Every script touches the keys of one hash tag
// only, given in KEYS.
var (
	//go:embed lua/intent.lua
	intentLua string
	//go:embed lua/append.lua
	appendLua string
	//go:embed lua/member.lua
	memberLua string
	//go:embed lua/cas.lua
	casLua string
	//go:embed lua/unidem.lua
	unidemLua string
	//go:embed lua/trim.lua
	trimLua string
	//go:embed lua/scan.lua
	scanLua string
	//go:embed lua/finish.lua
	finishLua string
)

var (
	scriptIntent = newUnitScript(intentLua)
	scriptAppend = newUnitScript(appendLua)
	scriptMember = newScript(memberLua, false)
	scriptCAS    = newUnitScript(casLua)
	scriptUnidem = newScript(unidemLua, false)
	scriptTrim   = newScript(trimLua, false)
	scriptScan   = newScript(scanLua, true)
	scriptFinish = newScript(finishLua, false)
)

// scripts are all the scripts, loaded on every node by Open.
var scripts = []*script{
	scriptIntent, scriptAppend, scriptMember, scriptCAS, scriptUnidem, scriptTrim, scriptScan, scriptFinish,
	scriptConnect, scriptDisconnect, scriptEvents, scriptLease, scriptSent,
}

// loadScripts loads every script on every node the client knows (one
// pipeline per node, one node after the other), so that the first calls
// find them cached. A node that restarts or fails over later forgets them:
// roundTrip then sends them again.
func (s *Store) loadScripts(ctx context.Context) error {
	for addr, n := range s.c.Nodes() {
		cmds := make(rueidis.Commands, len(scripts))
		for i, sc := range scripts {
			cmds[i] = n.B().ScriptLoad().Script(sc.src).Build()
		}
		for _, r := range n.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("%s: %w", addr, s.wrap(ctx, "open", err))
			}
		}
	}
	return nil
}

// script is a Lua script, sent as EVALSHA (EVALSHA_RO when it only
// reads).
type script struct {
	src, sha string
	readOnly bool
}

func newScript(src string, readOnly bool) *script {
	sum := sha1.Sum([]byte(src))
	return &script{src: src, sha: hex.EncodeToString(sum[:]), readOnly: readOnly}
}

// call is one command of a round trip: a script with its keys and
// arguments, or a plain command.
type call struct {
	sc         *script
	keys, args []string
	plain      func(b rueidis.Builder) rueidis.Completed
}

func scriptCall(sc *script, keys []string, args ...string) call {
	return call{sc: sc, keys: keys, args: args}
}

func plainCall(build func(b rueidis.Builder) rueidis.Completed) call {
	return call{plain: build}
}

// build returns the command; eval asks for EVAL with the source instead
// of EVALSHA.
func (c call) build(b rueidis.Builder, eval bool) rueidis.Completed {
	switch {
	case c.plain != nil:
		return c.plain(b)
	case eval && c.sc.readOnly:
		return b.EvalRo().Script(c.sc.src).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
	case eval:
		return b.Eval().Script(c.sc.src).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
	case c.sc.readOnly:
		return b.EvalshaRo().Sha1(c.sc.sha).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
	}
	return b.Evalsha().Sha1(c.sc.sha).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build()
}

// roundTrip sends calls as one pipeline and returns their results in
// order. On a cluster rueidis sends each shard its part at once, on the
// connections it multiplexes; the calls of one shard run in order, the
// shards independently. A script the server does not have cached (after a
// restart or failover: NOSCRIPT, nothing ran) is sent again as EVAL in a
// second pipeline. The first failure of any call fails the round trip; a
// nil reply is not a failure.
func (s *Store) roundTrip(ctx context.Context, op string, calls []call) ([]rueidis.RedisResult, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	b := s.c.B()
	wait := s.waits(calls)
	cmds := make(rueidis.Commands, len(calls), len(calls)+1)
	for i, c := range calls {
		cmds[i] = c.build(b, false)
	}
	res, acked := s.doMulti(ctx, cmds, wait)
	var again []int
	for i, r := range res {
		if re, ok := rueidis.IsRedisErr(r.Error()); ok && re.IsNoScript() && calls[i].sc != nil {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		cmds = cmds[:0]
		for _, i := range again {
			cmds = append(cmds, calls[i].build(b, true))
		}
		res2, acked2 := s.doMulti(ctx, cmds, wait)
		for j, r := range res2 {
			res[again[j]] = r
		}
		acked = acked2
	}
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return nil, s.wrap(ctx, op, err)
		}
	}
	if wait {
		n, err := acked.AsInt64()
		if err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		if n < int64(s.minReplicas) {
			return nil, fmt.Errorf("redis %s: %w: %d of %d replicas have the write after %v", op, tether.ErrUnavailable, n, s.minReplicas, s.replicaTimeout)
		}
	}
	return res, nil
}

// waits reports whether calls write (a script that is not read-only) and
// must therefore wait for s.minReplicas replicas.
func (s *Store) waits(calls []call) bool {
	if s.minReplicas == 0 {
		return false
	}
	for _, c := range calls {
		if c.sc != nil && !c.sc.readOnly {
			return true
		}
	}
	return false
}

// doMulti sends cmds as one pipeline, followed by WAIT when wait is set:
// WAIT is a blocking command, so rueidis sends the whole pipeline on one
// dedicated connection, and WAIT counts the replicas that have its writes.
// It returns the answers of cmds and WAIT's.
func (s *Store) doMulti(ctx context.Context, cmds rueidis.Commands, wait bool) ([]rueidis.RedisResult, rueidis.RedisResult) {
	if !wait {
		return s.c.DoMulti(ctx, cmds...), rueidis.RedisResult{}
	}
	cmds = append(cmds, s.c.B().Wait().Numreplicas(int64(s.minReplicas)).Timeout(s.replicaTimeout.Milliseconds()).Build())
	res := s.c.DoMulti(ctx, cmds...)
	return res[:len(res)-1], res[len(res)-1]
}
