package routing_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/routing/redistest"
)

// redisMark is where a benchmark's timed loop started: the client's
// counters and redis-server's own CPU time.
type redisMark struct {
	stats routing.RedisStats
	cpu   float64 // seconds, user+sys, from INFO cpu
}

func markRedis(b *testing.B, r *routing.Redis, raw rueidis.Client) redisMark {
	return redisMark{stats: r.Stats(), cpu: serverCPU(b, raw)}
}

// serverCPU returns redis-server's user+sys CPU seconds.
func serverCPU(b *testing.B, raw rueidis.Client) float64 {
	info, err := raw.Do(context.Background(), raw.B().Info().Section("cpu").Build()).ToString()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %q: %v", line, err)
			}
			sum += f
		}
	}
	return sum
}

// reportRedis reports, per operation of the timed loop: Redis round trips
// and commands (from Stats) and the CPU time redis-server spent (from INFO
// cpu: what the operation costs the shared Redis).
func reportRedis(b *testing.B, r *routing.Redis, raw rueidis.Client, m redisMark) {
	after := r.Stats()
	cpu := serverCPU(b, raw)
	n := float64(b.N)
	b.ReportMetric(float64(after.RoundTrips-m.stats.RoundTrips)/n, "roundtrips/op")
	b.ReportMetric(float64(after.Commands-m.stats.Commands)/n, "cmds/op")
	b.ReportMetric((cpu-m.cpu)*1e6/n, "redis-cpu-us/op")
}

func benchRoutes(n int) ([]routing.Route, []string) {
	routes := make([]routing.Route, 0, 2*n)
	users := make([]string, n)
	for i := range n {
		users[i] = fmt.Sprintf("user-%07d", i)
		routes = append(routes,
			routing.Route{User: users[i], Device: "phone-1", Gateway: fmt.Sprintf("gw-%02d", i%50), Conn: uint64(i) << 20, Caps: 7},
			routing.Route{User: users[i], Device: "desktop-1", Gateway: fmt.Sprintf("gw-%02d", (i+7)%50), Conn: uint64(i)<<20 + 1, Caps: 7})
	}
	return routes, users
}

// BenchmarkRedisLookup100Users: the per-message lookup of a 100-member
// group, every member with two online devices (200 routes back).
func BenchmarkRedisLookup100Users(b *testing.B) {
	r, raw, users := benchRegistered(b, 100)
	ctx := context.Background()
	dst := make([]routing.Route, 0, 256)
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	for b.Loop() {
		var err error
		if dst, err = r.Lookup(ctx, users, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
	reportRedis(b, r, raw, before)
	if len(dst) != 200 {
		b.Fatalf("found %d routes", len(dst))
	}
}

// benchRegistered starts a redis-server with the routes of benchRoutes(n)
// registered under live leases, and returns a Redis on it, a raw client and
// the users.
func benchRegistered(b *testing.B, n int) (*routing.Redis, rueidis.Client, []string) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	routes, users := benchRoutes(n)
	for _, rt := range routes {
		if err := r.Lease(ctx, rt.Gateway, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	if err := r.Register(ctx, routes, time.Hour); err != nil {
		b.Fatal(err)
	}
	return r, raw, users
}

// BenchmarkRedisPresence100Users: the presence of 100 online users with two
// devices each (one round trip: HVALS and ZSCORE per user).
func BenchmarkRedisPresence100Users(b *testing.B) {
	r, raw, users := benchRegistered(b, 100)
	ctx := context.Background()
	dst := make([]routing.Status, 0, 100)
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	for b.Loop() {
		var err error
		if dst, err = r.Presence(ctx, users, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
	reportRedis(b, r, raw, before)
	if len(dst) != 100 || !dst[99].Online {
		b.Fatalf("statuses %v", dst)
	}
}

// BenchmarkRedisRegister1000Routes: one refresh batch of a gateway with
// 1,000 connections (chunks of RegisterChunk).
func BenchmarkRedisRegister1000Routes(b *testing.B) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	routes, _ := benchRoutes(500)
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	for b.Loop() {
		if err := r.Register(ctx, routes, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	reportRedis(b, r, raw, before)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(routes)), "ns/route")
}

// BenchmarkRedisUnregister1000Routes: a gateway closing 1,000 connections.
func BenchmarkRedisUnregister1000Routes(b *testing.B) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	routes, _ := benchRoutes(500)
	if err := r.Unregister(ctx, routes[:1]); err != nil { // load the script
		b.Fatal(err)
	}
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	for b.Loop() {
		if err := r.Unregister(ctx, routes); err != nil {
			b.Fatal(err)
		}
	}
	reportRedis(b, r, raw, before)
}

// BenchmarkRedisPublish: one routed batch (about a text message to a few
// connections) to a gateway that is subscribed, from one goroutine, so
// each op is a full round trip.
func BenchmarkRedisPublish(b *testing.B) {
	benchPublish(b, false)
}

// BenchmarkRedisPublishParallel: the same from GOMAXPROCS*8 goroutines,
// which rueidis pipelines onto shared connections (fan-out workers).
func BenchmarkRedisPublishParallel(b *testing.B) {
	benchPublish(b, true)
}

func benchPublish(b *testing.B, parallel bool) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	stop, err := r.Subscribe("gw-01", func([]byte) {})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	batch := make([]byte, 200)
	for i := range batch {
		batch[i] = byte(i)
	}
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	if parallel {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := r.Publish(ctx, "gw-01", batch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if err := r.Publish(ctx, "gw-01", batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportRedis(b, r, raw, before)
}

// TestRedisPublishAllocs pins Publish's allocations: none of its own (the
// channel name is cached, the batch is not copied); what is left is
// rueidis'.
func TestRedisPublishAllocs(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	ctx := context.Background()
	batch := []byte("batch")
	allocs := testing.AllocsPerRun(1000, func() {
		if err := r.Publish(ctx, "gw-01", batch); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Publish: %.1f allocs/op", allocs)
	if allocs > 1 {
		t.Fatalf("Publish allocates %.1f times per call", allocs)
	}
}
