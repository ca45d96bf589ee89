package redis

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"fmt"

	"github.com/redis/rueidis"
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
// nil reply is not a failure. With MinReplicas, each pipeline that runs a
// writing script ends with WAIT (wait.go), and every WAIT must answer
// MinReplicas or more.
func (s *Store) roundTrip(ctx context.Context, op string, calls []call) ([]rueidis.RedisResult, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	b := s.c.B()
	cmds := make(rueidis.Commands, len(calls))
	for i, c := range calls {
		cmds[i] = c.build(b, false)
	}
	res, waits := s.doMulti(ctx, cmds, calls)
	var again []int
	for i, r := range res {
		if re, ok := rueidis.IsRedisErr(r.Error()); ok && re.IsNoScript() && calls[i].sc != nil {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		cmds = cmds[:0]
		calls2 := make([]call, len(again))
		for j, i := range again {
			calls2[j] = calls[i]
			cmds = append(cmds, calls[i].build(b, true))
		}
		res2, waits2 := s.doMulti(ctx, cmds, calls2)
		for j, r := range res2 {
			res[again[j]] = r
		}
		waits = append(waits, waits2...)
	}
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return nil, s.wrap(ctx, op, err)
		}
	}
	if err := s.checkWaits(ctx, op, waits); err != nil {
		return nil, err
	}
	return res, nil
}

// doMulti sends cmds, built from calls, as one pipeline, followed by the
// WAITs of waitFor when calls write: WAIT is a blocking command, so
// rueidis sends its node's part of the pipeline on one dedicated
// connection, and WAIT counts the replicas that have the writes of that
// part. It returns the answers of cmds and of the WAITs.
func (s *Store) doMulti(ctx context.Context, cmds rueidis.Commands, calls []call) ([]rueidis.RedisResult, []rueidis.RedisResult) {
	waits := s.waitFor(cmds, calls)
	if len(waits) == 0 {
		return s.c.DoMulti(ctx, cmds...), nil
	}
	n := len(cmds)
	res := s.c.DoMulti(ctx, append(cmds, waits...)...)
	return res[:n], res[n:]
}
