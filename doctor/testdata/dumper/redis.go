package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// newPool returns the pool of the incident: dial, read and write have
// timeouts, the wait for a free connection has none.
func newPool(c config) (*redis.Pool, error) {
	if c.redis == "" {
		return nil, errors.New("-redis is required")
	}
	return &redis.Pool{
		MaxActive: c.maxActive,
		MaxIdle:   c.maxActive,
		Wait:      true,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", c.redis,
				redis.DialConnectTimeout(2*time.Second),
				redis.DialReadTimeout(time.Minute),
				redis.DialWriteTimeout(5*time.Second))
		},
	}, nil
}

// store is the code of the incident's service.
type store struct {
	pool      *redis.Pool
	completed atomic.Int64 // refreshDevice calls that returned
	resends   atomic.Int64 // resend rounds
}

// refreshDevice holds a pooled connection while markOnline gets a second
// one: the bug. When every connection is held by a refreshDevice call
// waiting in markOnline, nothing moves again.
func (s *store) refreshDevice(device string) error {
	c := s.pool.Get()
	defer c.Close()
	if _, err := c.Do("SET", "device:"+device, "1", "EX", 60); err != nil {
		return err
	}
	return s.markOnline(device)
}

func (s *store) markOnline(device string) error {
	c := s.pool.Get()
	defer c.Close()
	_, err := c.Do("SADD", "online", device)
	return err
}

// resendLoop reads a shop's message list now and then, with one
// connection at a time.
func (s *store) resendLoop(shop string) {
	for {
		c := s.pool.Get()
		_, err := c.Do("LRANGE", "shop:"+shop, 0, 99)
		c.Close()
		if err != nil {
			return
		}
		s.resends.Add(1)
		time.Sleep(10 * time.Millisecond)
	}
}

// reader stands for a connection's reader goroutine: it refreshes the
// device on every frame.
func (s *store) reader(device string) {
	for {
		if err := s.refreshDevice(device); err != nil {
			return
		}
		s.completed.Add(1)
	}
}

func deadlock(ctx context.Context, c config) error {
	pool, err := newPool(c)
	if err != nil {
		return err
	}
	s := &store{pool: pool}
	for i := range c.workers {
		go s.reader(fmt.Sprintf("pos-%d", i))
	}
	go s.resendLoop("shop-1")
	// Settled: every connection is out, and neither the readers nor the
	// resend loop make progress.
	var lastDone, lastResends int64 = -1, -1
	return settled(ctx, func() bool {
		done, resends := s.completed.Load(), s.resends.Load()
		still := done == lastDone && resends == lastResends
		lastDone, lastResends = done, resends
		return still && pool.ActiveCount() == c.maxActive
	})
}

// busy runs -workers goroutines that each get one connection at a time
// and wait on it in BLPOP for up to a second: the pool is exhausted and
// many goroutines wait for it, but every connection is in use and the
// work moves on.
func busy(ctx context.Context, c config) error {
	pool, err := newPool(c)
	if err != nil {
		return err
	}
	var attempts, rounds atomic.Int64
	for i := range c.workers {
		go func() {
			for {
				attempts.Add(1)
				if err := popJob(pool, fmt.Sprintf("jobs:%d", i)); err != nil {
					return
				}
				rounds.Add(1)
			}
		}()
	}
	return settled(ctx, func() bool {
		return pool.ActiveCount() == c.maxActive && attempts.Load()-rounds.Load() == int64(c.workers)
	})
}

// popJob waits up to a second for a job on its list.
func popJob(pool *redis.Pool, list string) error {
	c := pool.Get()
	defer c.Close()
	_, err := c.Do("BLPOP", list, 1)
	if errors.Is(err, redis.ErrNil) {
		return nil
	}
	return err
}
