package routing_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/routing/redistest"
	"github.com/chatd-dev/chatd/core/routing/routingtest"
)

func TestMemoryMembers(t *testing.T) {
	routingtest.RunMembers(t, func(t *testing.T) routing.MemberCache { return routing.NewMemory() })
}

func TestRedisMembers(t *testing.T) {
	addr, _ := redistest.Start(t)
	routingtest.RunMembers(t, func(t *testing.T) routing.MemberCache { return newRedis(t, addr) })
}

// newRedisPrefix returns a Redis on addr with the given key prefix: two of
// them with the same prefix are two processes of one deployment.
func newRedisPrefix(t testing.TB, addr, prefix string, ttl time.Duration) *routing.Redis {
	t.Helper()
	r, err := routing.NewRedis(routing.RedisConfig{Addrs: []string{addr}, KeyPrefix: prefix, MembersTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func membersKey(prefix string, conv uint64) string {
	return prefix + "m:" + strconv.FormatUint(conv, 10)
}

func mustMembers(t testing.TB, r *routing.Redis, conv uint64) ([]string, bool) {
	t.Helper()
	ms, ok, err := r.Members(context.Background(), conv)
	if err != nil {
		t.Fatal(err)
	}
	return ms, ok
}

// waitMembers polls r until conv's members are want (nil: a miss), for up
// to 10s. It asserts no timing: invalidations arrive "soon", and this only
// proves they arrive.
func waitMembers(t *testing.T, r *routing.Redis, conv uint64, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms, ok := mustMembers(t, r, conv)
		if ok == (want != nil) && slices.Equal(ms, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("conv %d: still %q (cached %v) after 10s, want %q", conv, ms, ok, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// getCalls returns how many GETs redis-server executed (INFO commandstats).
func getCalls(t testing.TB, raw rueidis.Client) int64 {
	t.Helper()
	info, err := raw.Do(context.Background(), raw.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		if err != nil {
			t.Fatalf("INFO commandstats %q: %v", line, err)
		}
		return n
	}
	return 0 // no GET yet
}

// TestRedisMembersInvalidation: two processes on one Redis. A caches an
// entry; B changes it; A sees the change without anyone telling A, because
// Redis invalidates A's local copy.
func TestRedisMembersInvalidation(t *testing.T) {
	addr, _ := redistest.Start(t)
	a := newRedisPrefix(t, addr, "inv:", 0)
	b := newRedisPrefix(t, addr, "inv:", 0)
	ctx := context.Background()
	const conv = 42

	if err := b.FillMembers(ctx, conv, []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, conv, []string{"alice", "bob"})
	before := a.MemberStats()
	mustMembers(t, a, conv)
	if after := a.MemberStats(); after.LocalHits != before.LocalHits+1 {
		t.Fatalf("A's second read was not a local hit: %+v -> %+v", before, after)
	}

	if err := b.SetMembers(ctx, conv, []string{"alice", "carol"}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, conv, []string{"alice", "carol"})

	if err := b.DeleteMembers(ctx, conv); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, conv, nil)

	// A cached the miss; B's fill invalidates that too.
	if err := b.FillMembers(ctx, conv, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, conv, []string{"dave"})

	// And the other way round: A writes, B had it cached.
	waitMembers(t, b, conv, []string{"dave"})
	if err := a.SetMembers(ctx, conv, nil); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, b, conv, []string{})
}

// TestRedisMembersClientSideCaching: repeated reads of an unchanged entry
// are answered by the process, not by Redis: redis-server's GET count does
// not move.
func TestRedisMembersClientSideCaching(t *testing.T) {
	addr, _ := redistest.Start(t) // a server of its own: no one else's GETs
	r := newRedis(t, addr)
	raw := rawClient(t, addr)
	ctx := context.Background()
	for conv := range uint64(10) {
		if err := r.SetMembers(ctx, conv, []string{"alice", "bob", fmt.Sprint(conv)}); err != nil {
			t.Fatal(err)
		}
		mustMembers(t, r, conv) // the first read fetches
	}
	gets := getCalls(t, raw)
	stats := r.MemberStats()
	for range 100 {
		for conv := range uint64(10) {
			if ms, ok := mustMembers(t, r, conv); !ok || len(ms) != 3 {
				t.Fatalf("conv %d: %q, %v", conv, ms, ok)
			}
		}
	}
	if got := getCalls(t, raw); got != gets {
		t.Fatalf("1,000 reads of cached entries ran %d GETs on the server, want 0", got-gets)
	}
	if after := r.MemberStats(); after.LocalHits-stats.LocalHits != 1000 || after.Reads-stats.Reads != 1000 {
		t.Fatalf("stats: %+v -> %+v, want 1,000 more reads, all local hits", stats, after)
	}

	// A change is fetched once, then cached again.
	if err := r.SetMembers(ctx, 3, []string{"carol"}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if ms, _ := mustMembers(t, r, 3); !slices.Equal(ms, []string{"carol"}) {
			t.Fatalf("after set: %q", ms)
		}
	}
	if got := getCalls(t, raw); got != gets+1 {
		t.Fatalf("10 reads after a change ran %d GETs on the server, want 1", got-gets)
	}
}

// TestRedisMembersReadYourWrites: a read right after this process's own
// write never returns the copy it had cached before. Without the fence in
// redisMembers.write, about one such read in a thousand returns the old
// list (the invalidation of a connection's own write comes after the
// write's reply).
func TestRedisMembersReadYourWrites(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	ctx := context.Background()
	const conv = 9
	for i := range 5000 {
		mustMembers(t, r, conv) // cached (or a cached miss)
		want := []string{strconv.Itoa(i)}
		var err error
		switch i % 10 {
		case 0:
			err = r.DeleteMembers(ctx, conv)
			want = nil
		case 1: // after the delete: the fill takes
			err = r.FillMembers(ctx, conv, want)
		default:
			err = r.SetMembers(ctx, conv, want)
		}
		if err != nil {
			t.Fatal(err)
		}
		if ms, ok := mustMembers(t, r, conv); ok != (want != nil) || !slices.Equal(ms, want) {
			t.Fatalf("write %d: read back %q (cached %v), want %q", i, ms, ok, want)
		}
	}
}

// TestRedisMembersTTL: every write gives the entry MembersTTL; an entry
// that expires is a miss for a process that had it cached.
func TestRedisMembersTTL(t *testing.T) {
	addr, _ := redistest.Start(t)
	raw := rawClient(t, addr)
	ctx := context.Background()
	pttl := func(prefix string, conv uint64) time.Duration {
		t.Helper()
		ms, err := raw.Do(ctx, raw.B().Pttl().Key(membersKey(prefix, conv)).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(ms) * time.Millisecond
	}

	def := newRedisPrefix(t, addr, "ttl-default:", 0)
	if err := def.SetMembers(ctx, 1, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if err := def.FillMembers(ctx, 2, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	for conv := range uint64(2) {
		if d := pttl("ttl-default:", conv+1); d <= 23*time.Hour || d > 24*time.Hour {
			t.Fatalf("conv %d: PTTL %v, want the default 24h", conv+1, d)
		}
	}

	short := newRedisPrefix(t, addr, "ttl-short:", 300*time.Millisecond)
	if err := short.SetMembers(ctx, 1, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if d := pttl("ttl-short:", 1); d <= 0 || d > 300*time.Millisecond {
		t.Fatalf("PTTL %v, want within the configured 300ms", d)
	}
	if ms, ok := mustMembers(t, short, 1); !ok || !slices.Equal(ms, []string{"alice"}) {
		t.Fatalf("before expiry: %q, %v", ms, ok)
	}
	waitMembers(t, short, 1, nil) // expired: gone from the process too
}

// TestRedisMembersMalformed: a value that does not decode is a miss, is
// counted, is not replaced by a fill and is replaced by a set.
func TestRedisMembersMalformed(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedisPrefix(t, addr, "bad:", 0)
	raw := rawClient(t, addr)
	ctx := context.Background()
	for conv, v := range []string{"", "\x02future", "\x01\x05ab", "\x01\x01b\x01a", "\x01\x01a\x01a"} {
		key := membersKey("bad:", uint64(conv))
		if err := raw.Do(ctx, raw.B().Set().Key(key).Value(v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		before := r.MemberStats().Malformed
		if ms, ok := mustMembers(t, r, uint64(conv)); ok {
			t.Fatalf("value %q: decoded as %q", v, ms)
		}
		if got := r.MemberStats().Malformed; got != before+1 {
			t.Fatalf("value %q: Malformed %d -> %d", v, before, got)
		}
		if err := r.FillMembers(ctx, uint64(conv), []string{"alice"}); err != nil {
			t.Fatal(err)
		}
		if got, err := raw.Do(ctx, raw.B().Get().Key(key).Build()).ToString(); err != nil || got != v {
			t.Fatalf("fill replaced a malformed value: %q, %v", got, err)
		}
		if err := r.SetMembers(ctx, uint64(conv), []string{"alice"}); err != nil {
			t.Fatal(err)
		}
		if ms, ok := mustMembers(t, r, uint64(conv)); !ok || !slices.Equal(ms, []string{"alice"}) {
			t.Fatalf("after set: %q, %v", ms, ok)
		}
	}
}

// BenchmarkRedisMembersCached: the per-message membership read of a
// 100-member group whose list this process has cached.
func BenchmarkRedisMembersCached(b *testing.B) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	ms := make([]string, 100)
	for i := range ms {
		ms[i] = fmt.Sprintf("user-%07d", i)
	}
	if err := r.SetMembers(ctx, 1, ms); err != nil {
		b.Fatal(err)
	}
	if _, ok, err := r.Members(ctx, 1); err != nil || !ok {
		b.Fatal(ok, err)
	}
	gets := getCalls(b, raw)
	b.ReportAllocs()
	var got []string
	for b.Loop() {
		var err error
		if got, _, err = r.Members(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(getCalls(b, raw)-gets)/float64(b.N), "redis-gets/op")
	if len(got) != 100 {
		b.Fatalf("%d members", len(got))
	}
}
