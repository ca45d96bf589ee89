package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// publishScript is shaped like a publish to one device: it reads the
// delivery, adds it to the unacked index and writes the delivery and the
// copy of the message, all keys under the device's hash tag.
const publishScript = `
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
`

// payload is the message copy the script writes (about a small JSON
// message with its metadata).
var payload = string(make([]byte, 256))

// client is one Redis client library under test, with the three workloads.
type client interface {
	// script runs publishScript (EVALSHA) for device dev and id.
	script(ctx context.Context, dev string, id int) error
	// pipeline sends 10 commands about device dev in one pipeline.
	pipeline(ctx context.Context, dev string, id int) error
	// get reads one small string.
	get(ctx context.Context) error
	// nested holds a connection of its own (go-redis Conn, rueidis
	// Dedicated) and, while holding it, runs GET on another one: the
	// shape of the incident.
	nested(ctx context.Context) error
	close()
}

func deviceKeys(dev string) []string {
	tag := "{d:" + dev + "}"
	return []string{tag + ":open", tag + ":dlv", tag + ":rec"}
}

// clientSpec names a configuration of a library.
type clientSpec struct {
	name string
	open func(addr, clientName string) (client, error)
}

// poolSize is go-redis's connection limit in every scenario: far fewer
// connections than callers, as in the incident (300 connections, thousands
// of goroutines).
const poolSize = 8

// goRedisOptions is go-redis configured as tether needs it: a hard limit
// of poolSize connections (the dedicated pipeline pool is turned off so
// that pipelines share the same limit), a long PoolTimeout so that only the
// caller's ctx bounds the wait for a connection, and ContextTimeoutEnabled
// so that the ctx deadline also bounds socket reads and writes.
func goRedisOptions(addr, clientName string) *goredis.Options {
	return &goredis.Options{
		Addr:                  addr,
		ClientName:            clientName,
		PoolSize:              poolSize,
		MaxActiveConns:        poolSize,
		PipelinePoolSize:      -1,
		PoolTimeout:           30 * time.Second,
		ContextTimeoutEnabled: true,
	}
}

// rueidisOptions is rueidis configured as tether's store does: no
// client-side caching, pipelining from the first command (so that a lone
// command's timeout does not close its connection), no retries of
// read-only commands. Its pool of dedicated connections, used only by
// Dedicated and blocking commands, has poolSize connections.
func rueidisOptions(addr, clientName string) rueidis.ClientOption {
	return rueidis.ClientOption{InitAddress: []string{addr}, ClientName: clientName, DisableCache: true,
		BlockingPoolSize: poolSize, AlwaysPipelining: true, DisableRetry: true}
}

// clients are the two libraries as tether would configure them.
var clients = []clientSpec{
	{"go-redis v9", func(addr, name string) (client, error) { return newGoRedis(goRedisOptions(addr, name)), nil }},
	{"rueidis", func(addr, name string) (client, error) { return newRueidis(rueidisOptions(addr, name)) }},
}

// goRedis is go-redis v9 on one server.
type goRedis struct {
	c   *goredis.Client
	scr *goredis.Script
}

func newGoRedis(o *goredis.Options) *goRedis {
	return &goRedis{c: goredis.NewClient(o), scr: goredis.NewScript(publishScript)}
}

func (g *goRedis) script(ctx context.Context, dev string, id int) error {
	return g.scr.Run(ctx, g.c, deviceKeys(dev), strconv.Itoa(id), "p|0", payload).Err()
}

func (g *goRedis) pipeline(ctx context.Context, dev string, id int) error {
	k := deviceKeys(dev)
	f := strconv.Itoa(id)
	cmds, err := g.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := 0; i < 3; i++ {
			p.HSet(ctx, k[1], f+"-"+strconv.Itoa(i), "i|1")
		}
		for i := 0; i < 5; i++ {
			p.HGet(ctx, k[1], f+"-"+strconv.Itoa(i))
		}
		p.ZRangeByLex(ctx, k[0], &goredis.ZRangeBy{Min: "-", Max: "+", Count: 10})
		p.ZCard(ctx, k[0])
		return nil
	})
	if errors.Is(err, goredis.Nil) {
		err = nil
	}
	_ = cmds
	return err
}

func (g *goRedis) get(ctx context.Context) error {
	return g.c.Get(ctx, "bench:get").Err()
}

func (g *goRedis) nested(ctx context.Context) error {
	conn := g.c.Conn()
	defer conn.Close()
	if err := conn.Ping(ctx).Err(); err != nil { // takes a pool connection
		return err
	}
	return g.get(ctx)
}

func (g *goRedis) close() { g.c.Close() }

// rueidisClient is rueidis on one server (multiplexed connections, auto
// pipelining).
type rueidisClient struct {
	c   rueidis.Client
	scr *rueidis.Lua
}

func newRueidis(o rueidis.ClientOption) (*rueidisClient, error) {
	c, err := rueidis.NewClient(o)
	if err != nil {
		return nil, err
	}
	return &rueidisClient{c: c, scr: rueidis.NewLuaScript(publishScript)}, nil
}

func (r *rueidisClient) script(ctx context.Context, dev string, id int) error {
	return r.scr.Exec(ctx, r.c, deviceKeys(dev), []string{strconv.Itoa(id), "p|0", payload}).Error()
}

func (r *rueidisClient) pipeline(ctx context.Context, dev string, id int) error {
	k := deviceKeys(dev)
	f := strconv.Itoa(id)
	b := r.c.B()
	cmds := make(rueidis.Commands, 0, 10)
	for i := 0; i < 3; i++ {
		cmds = append(cmds, b.Hset().Key(k[1]).FieldValue().FieldValue(f+"-"+strconv.Itoa(i), "i|1").Build())
	}
	for i := 0; i < 5; i++ {
		cmds = append(cmds, b.Hget().Key(k[1]).Field(f+"-"+strconv.Itoa(i)).Build())
	}
	cmds = append(cmds, b.Zrangebylex().Key(k[0]).Min("-").Max("+").Limit(0, 10).Build())
	cmds = append(cmds, b.Zcard().Key(k[0]).Build())
	for _, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
	}
	return nil
}

func (r *rueidisClient) get(ctx context.Context) error {
	err := r.c.Do(ctx, r.c.B().Get().Key("bench:get").Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil
	}
	return err
}

// nested uses Dedicated, rueidis's only way to hold a connection; it takes
// no ctx. The inner call is Dedicated too: a plain Do is multiplexed and
// never waits for a connection.
func (r *rueidisClient) nested(ctx context.Context) error {
	return r.c.Dedicated(func(outer rueidis.DedicatedClient) error {
		if err := outer.Do(ctx, outer.B().Ping().Build()).Error(); err != nil {
			return err
		}
		return r.c.Dedicated(func(inner rueidis.DedicatedClient) error {
			return inner.Do(ctx, inner.B().Get().Key("bench:get").Build()).Error()
		})
	})
}

func (r *rueidisClient) close() { r.c.Close() }
