package routing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/routing/redistest"
	"github.com/chatd-dev/chatd/core/routing/routingtest"
)

func TestMemoryReceipts(t *testing.T) {
	routingtest.RunReceipts(t, func(t *testing.T) routing.ReceiptCounter { return routing.NewMemory() })
}

func TestRedisReceipts(t *testing.T) {
	addr, _ := redistest.Start(t)
	routingtest.RunReceipts(t, func(t *testing.T) routing.ReceiptCounter { return newRedis(t, addr) })
}

func newRedisConfig(t testing.TB, cfg routing.RedisConfig) *routing.Redis {
	t.Helper()
	r, err := routing.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func pttl(t *testing.T, raw rueidis.Client, key string) time.Duration {
	t.Helper()
	ms, err := raw.Do(context.Background(), raw.B().Pttl().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	if ms < 0 {
		return time.Duration(ms) // -2: no key, -1: no TTL
	}
	return time.Duration(ms) * time.Millisecond
}

// TestRedisReceiptTTL: every key an advance writes gets ReceiptTTL (90 days
// by default) again, whether or not the advance raised a pointer; keys it
// does not write keep theirs.
func TestRedisReceiptTTL(t *testing.T) {
	addr, _ := redistest.Start(t)
	raw := rawClient(t, addr)
	ctx := context.Background()
	near := func(key string, want time.Duration) {
		t.Helper()
		if got := pttl(t, raw, key); got > want || got < want-time.Minute {
			t.Errorf("PTTL %s = %v, want about %v", key, got, want)
		}
	}

	def := newRedisConfig(t, routing.RedisConfig{Addrs: []string{addr}, KeyPrefix: "def:"})
	if err := def.AdvanceReceipts(ctx, []routing.ReceiptAdvance{
		{Conv: 42, User: "alice", Kind: routing.ReceiptRead, Seq: 3},
		{Conv: 43, User: "bob", Kind: routing.ReceiptDelivered, Seq: 1},
	}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"def:rc:42:d", "def:rc:42:r", "def:rc:43:d"} {
		near(key, 90*24*time.Hour)
	}
	if got := pttl(t, raw, "def:rc:43:r"); got != -2 {
		t.Errorf("a delivered advance wrote the read set: PTTL def:rc:43:r = %v", got)
	}

	r := newRedisConfig(t, routing.RedisConfig{Addrs: []string{addr}, KeyPrefix: "cfg:", ReceiptTTL: time.Hour})
	advance := func(adv ...routing.ReceiptAdvance) {
		t.Helper()
		if err := r.AdvanceReceipts(ctx, adv); err != nil {
			t.Fatal(err)
		}
	}
	shorten := func(keys ...string) {
		t.Helper()
		for _, key := range keys {
			if err := raw.Do(ctx, raw.B().Pexpire().Key(key).Milliseconds(10_000).Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	advance(routing.ReceiptAdvance{Conv: 7, User: "alice", Kind: routing.ReceiptRead, Seq: 5})
	near("cfg:rc:7:d", time.Hour)
	near("cfg:rc:7:r", time.Hour)
	// A redelivered, older receipt raises nothing but still refreshes.
	shorten("cfg:rc:7:d", "cfg:rc:7:r")
	advance(routing.ReceiptAdvance{Conv: 7, User: "alice", Kind: routing.ReceiptRead, Seq: 2})
	near("cfg:rc:7:d", time.Hour)
	near("cfg:rc:7:r", time.Hour)
	// A delivered advance refreshes the delivered set only.
	shorten("cfg:rc:7:d", "cfg:rc:7:r")
	advance(routing.ReceiptAdvance{Conv: 7, User: "bob", Kind: routing.ReceiptDelivered, Seq: 9})
	near("cfg:rc:7:d", time.Hour)
	if got := pttl(t, raw, "cfg:rc:7:r"); got > 10*time.Second || got <= 0 {
		t.Errorf("PTTL cfg:rc:7:r = %v after a delivered advance, want <= 10s", got)
	}
	got, err := r.ReceiptCounts(ctx, 7, "sam", []uint64{5, 9}, nil)
	if want := []routing.ReceiptCount{{Delivered: 2, Read: 1}, {Delivered: 1}}; err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ReceiptCounts = %v, %v; want %v", got, err, want)
	}
}

// TestRedisReceiptRoundTrips pins the round trips and commands of each
// operation: advances are grouped per conversation (a ZADD and a PEXPIRE
// per set written), at most 1,000 advances and under 2,000 commands per
// round trip.
func TestRedisReceiptRoundTrips(t *testing.T) {
	addr, _ := redistest.Start(t)
	r := newRedis(t, addr)
	ctx := context.Background()
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
	batch := func(n, convs int, kind routing.ReceiptKind) []routing.ReceiptAdvance {
		adv := make([]routing.ReceiptAdvance, n)
		for i := range adv {
			adv[i] = routing.ReceiptAdvance{Conv: uint64(1 + i%convs), User: fmt.Sprintf("u%d", i), Kind: kind, Seq: uint64(1 + i%7)}
		}
		return adv
	}
	advance := func(adv []routing.ReceiptAdvance) func() error {
		return func() error { return r.AdvanceReceipts(ctx, adv) }
	}
	check("1,000 reads in 10 convs", 1, 40, advance(batch(1000, 10, routing.ReceiptRead)))
	check("1,000 delivered in 10 convs", 1, 20, advance(batch(1000, 10, routing.ReceiptDelivered)))
	check("2,500 reads in 10 convs", 3, 120, advance(batch(2500, 10, routing.ReceiptRead)))
	// 4 commands per conversation: 499 conversations (1,996 commands) per
	// round trip.
	check("1,000 reads in 1,000 convs", 3, 4000, advance(batch(1000, 1000, routing.ReceiptRead)))
	check("seq 0 only", 0, 0, advance([]routing.ReceiptAdvance{{Conv: 1, User: "a", Kind: routing.ReceiptRead}}))
	check("none", 0, 0, advance(nil))

	seqs := make([]uint64, 50)
	for i := range seqs {
		seqs[i] = uint64(i + 1)
	}
	check("counts of 50 seqs", 1, 102, func() error { _, err := r.ReceiptCounts(ctx, 1, "u0", seqs, nil); return err })
	check("counts of seq 0", 0, 0, func() error { _, err := r.ReceiptCounts(ctx, 1, "u0", []uint64{0}, nil); return err })
	check("readers", 1, 1, func() error { _, err := r.ReceiptReaders(ctx, 1, "u0", 3, 10, nil); return err })
}

// BenchmarkRedisAdvanceReceipts: one consumer batch of 1,000 receipts, 100
// conversations of 10 members each, half of them reads, every one raising
// a pointer.
func BenchmarkRedisAdvanceReceipts(b *testing.B) {
	addr, _ := redistest.Start(b)
	r := newRedis(b, addr)
	raw := rawClient(b, addr)
	ctx := context.Background()
	adv := make([]routing.ReceiptAdvance, 1000)
	for i := range adv {
		kind := routing.ReceiptDelivered
		if i%2 == 0 {
			kind = routing.ReceiptRead
		}
		adv[i] = routing.ReceiptAdvance{Conv: uint64(1_000_000 + i%100), User: fmt.Sprintf("user-%07d", i), Kind: kind}
	}
	b.ReportAllocs()
	before := markRedis(b, r, raw)
	seq := uint64(0)
	for b.Loop() {
		seq++
		for i := range adv {
			adv[i].Seq = seq
		}
		if err := r.AdvanceReceipts(ctx, adv); err != nil {
			b.Fatal(err)
		}
	}
	reportRedis(b, r, raw, before)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(adv)), "ns/advance")
}
