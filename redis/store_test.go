package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/redistest"
	"github.com/tetherpush/tether/redis"
)

// TestOpenOptions: options that cannot work are EInvalid, before any
// connection.
func TestOpenOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, opts := range []redis.Options{
		{},
		{URL: "redis://127.0.0.1:1/0", Prefix: "a{b}"},
		{URL: "http://[::1", Prefix: "p"},
		{URL: "redis://127.0.0.1:1/3", Cluster: true},
	} {
		s, err := redis.Open(ctx, opts)
		if err == nil {
			s.Close()
		}
		if tether.ErrorCode(err) != tether.EInvalid {
			t.Errorf("Open(%+v): %v, want an EInvalid error", opts, err)
		}
	}
}

// TestOpenRefusesOtherLayout: keys written with another layout version
// are not read.
func TestOpenRefusesOtherLayout(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, v := range []string{"0", "1", "3"} {
		srv.MustDo("SET", "old"+v+":layout", v)
		s, err := redis.Open(ctx, redis.Options{URL: srv.URL(), Prefix: "old" + v})
		if err == nil {
			s.Close()
			t.Errorf("Open over keys of layout version %s succeeded", v)
		} else if v == "1" && !strings.Contains(err.Error(), "earlier release") {
			t.Errorf("Open over keys of layout version 1: %v, want it to say an earlier release wrote them", err)
		}
	}
}

// TestScriptsForgotten: after the server forgets its scripts (a restart,
// a failover, SCRIPT FLUSH) every method still works.
func TestScriptsForgotten(t *testing.T) {
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	id := mustSetUp(t, s)
	srv.MustDo("SCRIPT", "FLUSH")
	for name, fn := range storeCalls(s, id) {
		if err := timedCall(t, name, 5*time.Second, fn); err != nil {
			t.Errorf("%s after SCRIPT FLUSH: %v", name, err)
		}
	}
}

// TestExpiryToTheNanosecond: Expire and the idempotency check (in Lua,
// whose numbers are doubles) compare expiry times exactly, also below the
// millisecond and before 1970.
func TestExpiryToTheNanosecond(t *testing.T) {
	srv := redistest.Start(t)
	s := MustOpen(t, redis.Options{URL: srv.URL(), Prefix: newPrefix()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, exp := range []time.Time{
		time.Date(2026, 11, 24, 10, 0, 0, 123_456_789, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
	} {
		device := "pos-" + exp.Format("2006")
		m := &tether.Message{ID: "01JT" + exp.Format("2006"), Target: tether.DeviceTarget(device), Data: []byte(`1`),
			ClientID: "k", PublishedAt: exp.Add(-time.Hour), ExpiresAt: exp}
		if _, err := s.Publish(ctx, []*tether.Message{m}); err != nil {
			t.Fatal(err)
		}
		for i, c := range []struct {
			at  time.Time
			dup bool
		}{{exp.Add(-time.Nanosecond), true}, {exp, false}} {
			again := &tether.Message{ID: fmt.Sprintf("%s-%d", m.ID, i), Target: m.Target, Data: []byte(`2`),
				ClientID: "k", PublishedAt: c.at, ExpiresAt: c.at.Add(time.Hour)}
			res, err := s.Publish(ctx, []*tether.Message{again})
			if err != nil || res[0].Duplicate != c.dup {
				t.Errorf("client id again at expiry %v %+dns: %+v, %v; want duplicate %v", exp, c.at.Sub(exp), res, err, c.dup)
			}
		}
		for _, c := range []struct {
			now  time.Time
			want int
		}{{exp.Add(-time.Nanosecond), 0}, {exp, 1}} {
			n, _, err := s.Expire(ctx, c.now, exp.Add(-time.Hour), 10)
			if err != nil || n != c.want {
				t.Errorf("Expire at expiry %v %+dns = %d, %v; want %d", exp, c.now.Sub(exp), n, err, c.want)
			}
		}
	}
}
