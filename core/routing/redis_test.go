package routing_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/routing/redistest"
)

// rawClient is a plain rueidis client for looking at what Redis holds.
func rawClient(t testing.TB, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// collector records batches and checks that the handler is never running
// twice at once.
type collector struct {
	mu         sync.Mutex
	got        []string
	inflight   atomic.Int32
	concurrent atomic.Bool
}

func (c *collector) h(b []byte) {
	if c.inflight.Add(1) > 1 {
		c.concurrent.Store(true)
	}
	c.mu.Lock()
	c.got = append(c.got, string(b))
	c.mu.Unlock()
	c.inflight.Add(-1)
}

func (c *collector) has(pred func(string) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.got {
		if pred(s) {
			return true
		}
	}
	return false
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisRestart kills redis-server under a live Redis: every operation
// fails fast while it is down, and once it is back (empty, on the same
// port) the same Redis value works again without being recreated, its
// subscription included.
func TestRedisRestart(t *testing.T) {
	srv := redistest.StartServer(t)
	resubscribed := make(chan string, 10)
	r, err := routing.NewRedis(routing.RedisConfig{
		Addrs:         []string{srv.Addr},
		OnResubscribe: func(gw string) { resubscribed <- gw },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	ctx := context.Background()
	var c collector
	stop, err := r.Subscribe("g1", c.h)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	route := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	if err := r.Lease(ctx, "g1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, []routing.Route{route}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, "g1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "batch before the restart", func() bool { return c.count() == 1 })

	srv.Kill()
	// Down: errors, and fast (DialTimeout and Timeout are 1s each; a
	// refused connection fails at once).
	for name, op := range map[string]func() error{
		"Register":   func() error { return r.Register(ctx, []routing.Route{route}, time.Minute) },
		"Lookup":     func() error { _, err := r.Lookup(ctx, []string{"alice"}, nil); return err },
		"Unregister": func() error { return r.Unregister(ctx, []routing.Route{route}) },
		"Publish":    func() error { return r.Publish(ctx, "g1", []byte("lost")) },
	} {
		start := time.Now()
		err := op()
		d := time.Since(start)
		t.Logf("%s with redis down: error after %v", name, d.Round(time.Microsecond))
		if err == nil {
			t.Errorf("%s with redis down: no error", name)
		}
		if d > 5*time.Second {
			t.Errorf("%s with redis down took %v", name, d)
		}
	}

	srv.Restart()
	restarted := time.Now()
	// Publishes after the restart reach the subscriber once it has
	// resubscribed by itself; until then they go nowhere (at-most-once).
	i := 0
	waitUntil(t, 15*time.Second, "a batch published after the restart", func() bool {
		i++
		_ = r.Publish(ctx, "g1", []byte(fmt.Sprintf("after-%d", i)))
		return c.has(func(s string) bool { return strings.HasPrefix(s, "after-") })
	})
	t.Logf("first batch after the restart delivered %v after redis was back", time.Since(restarted).Round(time.Millisecond))
	if c.has(func(s string) bool { return s == "lost" }) {
		t.Fatal("a batch published while redis was down arrived")
	}
	if c.concurrent.Load() {
		t.Fatal("handler ran concurrently")
	}
	if got := r.Stats().Resubscribes; got < 1 {
		t.Fatalf("Resubscribes = %d, want >= 1", got)
	}
	select {
	case gw := <-resubscribed:
		if gw != "g1" {
			t.Fatalf("OnResubscribe(%q), want g1", gw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnResubscribe not called")
	}

	// The registry works again; the new server is empty, so lease and
	// re-register (as the gateway's OnResubscribe refresh does). Unregister
	// meets an empty script cache and falls back to EVAL.
	if err := r.Lease(ctx, "g1", time.Minute); err != nil {
		t.Fatalf("Lease after restart: %v", err)
	}
	if err := r.Register(ctx, []routing.Route{route}, time.Minute); err != nil {
		t.Fatalf("Register after restart: %v", err)
	}
	got, err := r.Lookup(ctx, []string{"alice"}, nil)
	if err != nil || len(got) != 1 || got[0] != route {
		t.Fatalf("Lookup after restart: %v, %v", got, err)
	}
	if err := r.Unregister(ctx, []routing.Route{route}); err != nil {
		t.Fatalf("Unregister after restart: %v", err)
	}
	if got, err = r.Lookup(ctx, []string{"alice"}, nil); err != nil || len(got) != 0 {
		t.Fatalf("Lookup after Unregister: %v, %v", got, err)
	}
}

// TestRedisHang: a Redis that stops answering (SIGSTOP: connections open,
// no replies) makes operations fail within about Timeout plus the 1s ping
// interval, and everything works again once it answers.
func TestRedisHang(t *testing.T) {
	srv := redistest.StartServer(t)
	r := newRedis(t, srv.Addr)
	ctx := context.Background()
	var c collector
	stop, err := r.Subscribe("g1", c.h)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	route := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}

	srv.Pause()
	var wg sync.WaitGroup
	for name, op := range map[string]func() error{
		"Register": func() error { return r.Register(ctx, []routing.Route{route}, time.Minute) },
		"Lookup":   func() error { _, err := r.Lookup(ctx, []string{"alice"}, nil); return err },
		"Publish":  func() error { return r.Publish(ctx, "g1", []byte("lost")) },
	} {
		wg.Go(func() {
			start := time.Now()
			err := op()
			d := time.Since(start)
			t.Logf("%s with redis hung: %v after %v", name, err, d.Round(time.Millisecond))
			if err == nil {
				t.Errorf("%s with redis hung: no error", name)
			}
			if d > 8*time.Second {
				t.Errorf("%s with redis hung took %v", name, d)
			}
		})
	}
	wg.Wait()
	srv.Resume()

	waitUntil(t, 15*time.Second, "registry answers again", func() bool {
		return r.Register(ctx, []routing.Route{route}, time.Minute) == nil
	})
	i := 0
	waitUntil(t, 15*time.Second, "a batch published after the hang", func() bool {
		i++
		_ = r.Publish(ctx, "g1", []byte(fmt.Sprintf("after-%d", i)))
		return c.has(func(s string) bool { return strings.HasPrefix(s, "after-") })
	})
}

func TestRedisNewFailsWhenDown(t *testing.T) {
	srv := redistest.StartServer(t)
	srv.Kill()
	start := time.Now()
	r, err := routing.NewRedis(routing.RedisConfig{Addrs: []string{srv.Addr}})
	if err == nil {
		r.Close()
		t.Fatal("NewRedis succeeded with redis down")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("NewRedis with redis down took %v", d)
	}
	if _, err := routing.NewRedis(routing.RedisConfig{}); err == nil {
		t.Fatal("NewRedis without Addrs succeeded")
	}
}

// TestRedisRoundTrips pins the number of round trips and commands each
// operation costs; docs/routing.md quotes them.
func TestRedisRoundTrips(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	ctx := context.Background()
	routes := make([]routing.Route, 1000)
	users := make([]string, 100)
	for i := range routes {
		routes[i] = routing.Route{User: fmt.Sprintf("u%d", i), Device: "d", Gateway: "g1", Conn: uint64(i)}
	}
	for i := range users {
		users[i] = routes[i].User
	}
	check0 := r.Stats()
	if err := r.Lease(ctx, "g1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.RoundTrips-check0.RoundTrips != 1 || s.Commands-check0.Commands != 2 {
		t.Errorf("Lease: %d round trips, %d commands; want 1, 2", s.RoundTrips-check0.RoundTrips, s.Commands-check0.Commands)
	}
	stop, err := r.Subscribe("g1", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	check := func(name string, wantRT, wantCmds uint64, op func() error) {
		t.Helper()
		before := r.Stats()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		after := r.Stats()
		if rt, cmds := after.RoundTrips-before.RoundTrips, after.Commands-before.Commands; rt != wantRT || cmds != wantCmds {
			t.Errorf("%s: %d round trips, %d commands; want %d, %d", name, rt, cmds, wantRT, wantCmds)
		}
	}
	// Per route: HSET, 2 PEXPIRE, and the last-seen ZADD and PEXPIRE.
	check("Register 100 routes", 1, 500, func() error { return r.Register(ctx, routes[:100], time.Minute) })
	check("Register 1000 routes", 3, 5000, func() error { return r.Register(ctx, routes, time.Minute) })
	var dst []routing.Route
	// A lease read within routing.LeaseCacheTTL is not read again: renew it
	// here so the check below cannot straddle the cache's expiry.
	if err := r.Lease(ctx, "g1", time.Minute); err != nil {
		t.Fatal(err)
	}
	check("Lookup 100 users", 1, 100, func() error {
		var err error
		dst, err = r.Lookup(ctx, users, dst[:0])
		return err
	})
	if len(dst) != 100 {
		t.Fatalf("Lookup found %d routes", len(dst))
	}
	check("Presence of 100 users", 1, 200, func() error {
		st, err := r.Presence(ctx, users, nil)
		if err == nil && (len(st) != 100 || !st[99].Online) {
			err = fmt.Errorf("statuses %v", st)
		}
		return err
	})
	// Once the cached lease is older than LeaseCacheTTL, Lookup reads it
	// again: one round trip of GETs, one per gateway its answer names.
	time.Sleep(routing.LeaseCacheTTL + 50*time.Millisecond)
	check("Lookup 100 users, lease re-read", 2, 101, func() error {
		_, err := r.Lookup(ctx, users, nil)
		return err
	})
	check("Lookup 0 users", 0, 0, func() error { _, err := r.Lookup(ctx, nil, nil); return err })
	check("Publish", 1, 1, func() error { return r.Publish(ctx, "g1", []byte("x")) })
	// The first Unregister after start may load the script (one more
	// round trip); warm it first.
	if err := r.Unregister(ctx, routes[999:]); err != nil {
		t.Fatal(err)
	}
	// Per route: EVALSHA, and the last-seen ZADD and PEXPIRE.
	check("Unregister 100 routes", 1, 300, func() error { return r.Unregister(ctx, routes[:100]) })
}

// TestRedisExpiredFieldsReaped: an expired device inside a user's live hash
// is skipped by Lookup and then deleted in the background, leaving the live
// device and the key's TTL alone.
func TestRedisExpiredFieldsReaped(t *testing.T) {
	addr, _ := redistest.Start(t)
	r, err := routing.NewRedis(routing.RedisConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	raw := rawClient(t, addr)
	ctx := context.Background()
	live := routing.Route{User: "alice", Device: "laptop", Gateway: "g1", Conn: 1}
	dead := routing.Route{User: "alice", Device: "phone", Gateway: "g2", Conn: 2}
	for _, gw := range []string{"g1", "g2"} {
		if err := r.Lease(ctx, gw, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Register(ctx, []routing.Route{live}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, []routing.Route{dead}, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "expired field reaped", func() bool {
		got, err := r.Lookup(ctx, []string{"alice"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 {
			return false
		}
		if len(got) != 1 || got[0] != live {
			t.Fatalf("Lookup: %v", got)
		}
		return r.Stats().Reaped == 1
	})
	fields, err := raw.Do(ctx, raw.B().Hkeys().Key("chatd:u:alice").Build()).AsStrSlice()
	if err != nil || len(fields) != 1 || fields[0] != "laptop" {
		t.Fatalf("fields left: %v, %v", fields, err)
	}
	pttl, err := raw.Do(ctx, raw.B().Pttl().Key("chatd:u:alice").Build()).AsInt64()
	if err != nil || pttl < 30_000 {
		t.Fatalf("key TTL %dms, %v: want the live device's minute", pttl, err)
	}
}

// TestRedisBadValueSkipped: a field Lookup cannot decode (another writer,
// a future format) is not routed to and is no error.
func TestRedisBadValueSkipped(t *testing.T) {
	ok := routing.Route{User: "bob", Device: "phone", Gateway: "g1", Conn: 5}
	r, raw := redisWithRoute(t, routing.RedisConfig{KeyPrefix: "bad:"}, ok)
	ctx := context.Background()
	const prefix = "bad:"
	for _, v := range []string{"", "x", "\x01short", "\x02" + strings.Repeat("\xff", 20), "\x01\xff\xff\xff\xff\xff\xff\xff\xff\x80"} {
		if err := raw.Do(ctx, raw.B().Hset().Key(prefix+"u:bob").FieldValue().FieldValue("junk", v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		got, err := r.Lookup(ctx, []string{"bob"}, nil)
		if err != nil || len(got) != 1 || got[0] != ok {
			t.Fatalf("value %q: Lookup %v, %v", v, got, err)
		}
	}
	// A key of the wrong type is an error, not a silent miss.
	if err := raw.Do(ctx, raw.B().Set().Key(prefix+"u:carol").Value("x").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lookup(ctx, []string{"bob", "carol"}, nil); err == nil {
		t.Fatal("Lookup of a non-hash key: no error")
	}
}

// TestRedisSubscribeOneGoroutine: with many concurrent publishers the
// handler still runs on one goroutine at a time, and sees every batch.
func TestRedisSubscribeOneGoroutine(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	var c collector
	stop, err := r.Subscribe("g1", c.h)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const pubs, per = 8, 200
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Go(func() {
			for i := range per {
				if err := r.Publish(context.Background(), "g1", fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitUntil(t, 10*time.Second, "all batches", func() bool { return c.count() == pubs*per })
	if c.concurrent.Load() {
		t.Fatal("handler ran concurrently")
	}
	stop()
	n := r.Stats().Received
	if err := r.Publish(context.Background(), "g1", []byte("late")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if r.Stats().Received != n {
		t.Fatal("handler called after stop returned")
	}
}

func TestRedisCloseStopsSubscriptions(t *testing.T) {
	addr, _ := redistest.Start(t)
	r, err := routing.NewRedis(routing.RedisConfig{Addrs: []string{addr}, KeyPrefix: "close:"})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := r.Subscribe("g1", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	stop() // after Close: no-op
	r.Close()
	if _, err := r.Subscribe("g1", func([]byte) {}); err == nil {
		t.Fatal("Subscribe after Close succeeded")
	}
	if err := r.Publish(context.Background(), "g1", []byte("x")); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
}

func TestRedisGatewayIDTooLong(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	long := strings.Repeat("g", 256)
	if err := r.Register(context.Background(), []routing.Route{{User: "u", Device: "d", Gateway: long}}, time.Minute); err == nil {
		t.Fatal("Register with a 256-byte gateway id succeeded")
	}
	if err := r.Unregister(context.Background(), []routing.Route{{User: "u", Device: "d", Gateway: long}}); err != nil {
		t.Fatalf("Unregister with a 256-byte gateway id: %v", err)
	}
}

// TestRedisMemoryPerRoute measures what a route costs in Redis memory
// (used_memory after registering 50,000 users with one device each, over
// the empty server), as quoted in docs/routing.md: run with -v.
func TestRedisMemoryPerRoute(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	raw := rawClient(t, addr)
	ctx := context.Background()
	used := func() int64 {
		info, err := raw.Do(ctx, raw.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no used_memory in INFO memory")
		return 0
	}
	const n = 50_000
	routes := make([]routing.Route, n)
	for i := range routes {
		// Realistic sizes: 16-byte user ids, 8-byte device ids, 12-byte
		// gateway ids, 4-byte conn ids.
		routes[i] = routing.Route{User: fmt.Sprintf("u%015d", i), Device: fmt.Sprintf("d%07d", i%3), Gateway: fmt.Sprintf("gw-%08d", i%50), Conn: uint64(1<<24 + i), Caps: 7}
	}
	before := used()
	if err := r.Register(ctx, routes, time.Hour); err != nil {
		t.Fatal(err)
	}
	per := float64(used()-before) / n
	t.Logf("redis memory per route (one device per user): %.0f bytes", per)
	if per > 400 {
		t.Fatalf("%.0f bytes per route", per)
	}
	// A second device per user costs only its field.
	for i := range routes {
		routes[i].Device += "b"
	}
	before = used()
	if err := r.Register(ctx, routes, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Logf("redis memory per additional device of a user: %.0f bytes", float64(used()-before)/n)
}

// TestRedisRestartWrites: after a Redis restart, the first writes succeed
// even though each pipelined connection rueidis held was broken while idle
// (it learns that only when a command fails on it): the idempotent writes
// are sent once more on a fresh connection instead of failing with EOF.
func TestRedisRestartWrites(t *testing.T) {
	srv := redistest.StartServer(t)
	r := newRedis(t, srv.Addr)
	ctx := context.Background()
	route := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	// Open every pipelined connection, one command at a time: a connection
	// used by one caller at a time stays in rueidis' synchronous mode, with
	// no reader that would notice the server going away.
	for i := range 64 {
		if err := r.Register(ctx, []routing.Route{route}, time.Minute); err != nil {
			t.Fatalf("Register %d: %v", i, err)
		}
	}
	srv.Kill()
	srv.Restart()
	// Redis is back before any command notices it was gone.
	for i := range 16 {
		if err := r.Lease(ctx, "g1", time.Minute); err != nil {
			t.Fatalf("Lease %d after restart: %v", i, err)
		}
		if err := r.Register(ctx, []routing.Route{route}, time.Minute); err != nil {
			t.Fatalf("Register %d after restart: %v", i, err)
		}
		if err := r.Unregister(ctx, []routing.Route{route}); err != nil {
			t.Fatalf("Unregister %d after restart: %v", i, err)
		}
	}
	got, err := r.Lookup(ctx, []string{"alice"}, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("Lookup after Unregister: %v, %v", got, err)
	}
}

// TestRedisPresenceKeys: the last-seen keys carry PresenceRetention as their
// TTL, and a last-seen time never moves back.
func TestRedisPresenceKeys(t *testing.T) {
	rt := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	r, raw := redisWithRoute(t, routing.RedisConfig{PresenceRetention: time.Hour}, rt)
	ctx := context.Background()
	if err := r.Unregister(ctx, []routing.Route{rt}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"chatd:s:alice", "chatd:gs:g1"} {
		pttl, err := raw.Do(ctx, raw.B().Pttl().Key(key).Build()).AsInt64()
		if err != nil || pttl <= 0 || pttl > time.Hour.Milliseconds() {
			t.Fatalf("%s: PTTL %d, %v: want within the hour's retention", key, pttl, err)
		}
	}
	// A later time written by another gateway (its clock ahead) is not
	// moved back by this one's writes.
	later := time.Now().Add(time.Minute).UnixMilli()
	if err := raw.Do(ctx, raw.B().Zadd().Key("chatd:s:alice").ScoreMember().ScoreMember(float64(later), "t").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, []routing.Route{rt}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister(ctx, []routing.Route{rt}); err != nil {
		t.Fatal(err)
	}
	st, err := r.Presence(ctx, []string{"alice"}, nil)
	if err != nil || st[0].Online || st[0].LastSeenMS != later {
		t.Fatalf("after earlier writes: %+v, %v; want last seen %d", st, err, later)
	}
}

// redisWithRoute starts a redis-server, opens a Redis on it with cfg (Addrs
// filled in), leases rt's gateway and registers rt, each for a minute. It
// returns the Redis and a raw client on the same server.
func redisWithRoute(t *testing.T, cfg routing.RedisConfig, rt routing.Route) (*routing.Redis, rueidis.Client) {
	t.Helper()
	addr, _ := redistest.Start(t)
	cfg.Addrs = []string{addr}
	r, err := routing.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	ctx := context.Background()
	if err := r.Lease(ctx, rt.Gateway, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, []routing.Route{rt}, time.Minute); err != nil {
		t.Fatal(err)
	}
	return r, rawClient(t, addr)
}

// TestRedisTopicsAfterRestart: a topic subscription outlives a Redis
// restart on its own: the topics it held are held again (the ones it left
// are not), and a Join while Redis is down fails fast and still counts.
func TestRedisTopicsAfterRestart(t *testing.T) {
	srv := redistest.StartServer(t)
	r, err := routing.NewRedis(routing.RedisConfig{Addrs: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	ctx := context.Background()
	var c collector
	ts, err := r.SubscribeTopics(c.h)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if err := ts.Join(ctx, []string{"p:alice", "p:bob"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.Leave(ctx, []string{"p:bob"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Publish(ctx, routing.TopicChannel("p:alice"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "a batch before the restart", func() bool { return c.count() == 1 })

	srv.Kill()
	start := time.Now()
	if err := ts.Join(ctx, []string{"p:carol"}); err == nil {
		t.Fatal("Join with redis down: no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Join with redis down took %v", d)
	}
	srv.Restart()
	i := 0
	waitUntil(t, 15*time.Second, "alice's and carol's topics held again", func() bool {
		i++
		_ = r.Publish(ctx, routing.TopicChannel("p:alice"), []byte(fmt.Sprintf("alice-%d", i)))
		_ = r.Publish(ctx, routing.TopicChannel("p:carol"), []byte(fmt.Sprintf("carol-%d", i)))
		_ = r.Publish(ctx, routing.TopicChannel("p:bob"), []byte("bob"))
		return c.has(func(s string) bool { return strings.HasPrefix(s, "alice-") }) &&
			c.has(func(s string) bool { return strings.HasPrefix(s, "carol-") })
	})
	if c.has(func(s string) bool { return s == "bob" }) {
		t.Fatal("a topic left before the restart was delivered after it")
	}
	if c.concurrent.Load() {
		t.Fatal("handler ran concurrently")
	}
}
