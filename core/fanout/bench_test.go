package fanout

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// BenchmarkFanoutGroup1024 is the fanout's work for one message to a
// 1,024-member group, every member online on one of 4 gateways: the member
// list (cached), one registry lookup for all members, one batch per
// gateway with the frame encoded once, one PublishMany. The in-memory
// registry and router stand in for Redis, so this is the fanout's own CPU.
func BenchmarkFanoutGroup1024(b *testing.B) { benchGroup(b, 0) }

// BenchmarkFanoutChannel1024 is the same message with the group a channel
// (PullAbove 1,000): no registry lookup, one publish to every gateway; the
// gateways' writes to focused connections are not in it.
func BenchmarkFanoutChannel1024(b *testing.B) { benchGroup(b, 1000) }

func benchGroup(b *testing.B, pullAbove int) {
	ctx := context.Background()
	st := openStore(b)
	members := make([]string, 1024)
	routes := make([]routing.Route, 1024)
	for i := range members {
		members[i] = fmt.Sprintf("u%04d", i)
		routes[i] = routing.Route{User: members[i], Device: "phone", Gateway: fmt.Sprintf("g%d", i%4), Conn: uint64(i + 1)}
	}
	if _, err := st.EnsureConversation(ctx, store.Conversation{ID: 43, Kind: wire.ConvGroup, Members: members, Name: "g", Admins: members[:1]}); err != nil {
		b.Fatal(err)
	}
	mem := routing.NewMemory()
	for g := range 4 {
		_ = mem.Lease(ctx, fmt.Sprintf("g%d", g), time.Hour)
		stop, _ := mem.Subscribe(fmt.Sprintf("g%d", g), func([]byte) {})
		defer stop()
	}
	if err := mem.Register(ctx, routes, time.Hour); err != nil {
		b.Fatal(err)
	}
	all, _ := mem.Subscribe(routing.AllGateways, func([]byte) {})
	defer all()
	f := New(Config{PullAbove: pullAbove}, Deps{Store: st, Registry: mem, Router: mem})
	m := wire.Msg{ConvID: 43, MessageID: 1, Seq: 1, Sender: []byte("u0000"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: []byte("see you at the trailhead at nine")}
	recs := []*kgo.Record{{Value: events.AppendMsg(nil, m.Append(nil, 0))}}
	if err := f.Handle(ctx, recs); err != nil { // warm the member cache
		b.Fatal(err)
	}
	before, pulledBefore := delivered(f), testutil.ToFloat64(f.pulled)
	handleLoop(b, f, recs)
	if pullAbove > 0 {
		if got := testutil.ToFloat64(f.pulled) - pulledBefore; got != float64(b.N) || delivered(f) != before {
			b.Fatalf("published %v channel events, want %d, and no deliveries", got, b.N)
		}
		return
	}
	if got := delivered(f) - before; got != float64(1023*b.N) {
		b.Fatalf("delivered %v, want %d", got, 1023*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1023, "ns/delivery")
}

// handleLoop times Handle of recs, once per benchmark iteration.
func handleLoop(b *testing.B, f *Fanout, recs []*kgo.Record) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := f.Handle(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

func delivered(f *Fanout) float64 { return testutil.ToFloat64(f.delivered) }

// BenchmarkFanoutDirectBatch100 is one polled batch of 100 MSG events in
// 100 direct conversations, with a shared member cache (the in-process one
// standing in for Redis): the batch's member lists are read in one
// MembersMulti (prefetchMembers), then one registry lookup and one
// PublishMany. Per op: one batch.
func BenchmarkFanoutDirectBatch100(b *testing.B) {
	ctx := context.Background()
	st := openStore(b)
	mem := routing.NewMemory()
	_ = mem.Lease(ctx, "g1", time.Hour)
	stop, _ := mem.Subscribe("g1", func([]byte) {})
	defer stop()
	var recs []*kgo.Record
	for i := range 100 {
		conv, peer := uint64(1000+i), fmt.Sprintf("peer%03d", i)
		if _, err := st.EnsureConversation(ctx, store.Conversation{ID: conv, Kind: wire.ConvDirect, Members: []string{"alice", peer}}); err != nil {
			b.Fatal(err)
		}
		_ = mem.Register(ctx, []routing.Route{{User: peer, Device: "phone", Gateway: "g1", Conn: conv}}, time.Hour)
		m := wire.Msg{ConvID: conv, MessageID: conv, Seq: 1, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: []byte("hi")}
		recs = append(recs, &kgo.Record{Value: events.AppendMsg(nil, m.Append(nil, 0))})
	}
	f := New(Config{}, Deps{Store: st, Registry: mem, Router: mem, Members: mem})
	if err := f.Handle(ctx, recs); err != nil { // fills the member cache
		b.Fatal(err)
	}
	before := delivered(f)
	handleLoop(b, f, recs)
	if got := delivered(f) - before; got != float64(100*b.N) {
		b.Fatalf("delivered %v, want %d", got, 100*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100, "ns/event")
}
