package fanout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Unit test of fanout alone: a real Pebble store and the in-memory
// registry/router; records are built by hand instead of read from Kafka.

// openStore opens a Pebble store in a temporary dir, closed at the end of
// the test.
func openStore(tb testing.TB) *store.Pebble {
	tb.Helper()
	st, err := store.OpenPebble(tb.TempDir(), store.PebbleOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

type sink struct {
	mu      sync.Mutex
	batches map[string][][]byte // gateway -> batches
}

func (s *sink) subscribe(t *testing.T, r *routing.Memory, gw string) {
	stop, _ := r.Subscribe(gw, func(b []byte) {
		s.mu.Lock()
		s.batches[gw] = append(s.batches[gw], append([]byte(nil), b...))
		s.mu.Unlock()
	})
	t.Cleanup(stop)
}

func TestFanoutEncodesOncePerGatewayAndVariant(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	conv := store.Conversation{ID: 42, Kind: wire.ConvDirect, Members: []string{"alice", "bob"}}
	if _, err := st.EnsureConversation(ctx, conv); err != nil {
		t.Fatal(err)
	}
	mem := routing.NewMemory()
	_ = mem.Lease(ctx, "g1", time.Minute)
	_ = mem.Lease(ctx, "g2", time.Minute)
	_ = mem.Register(ctx, []routing.Route{
		{User: "alice", Device: "phone", Gateway: "g1", Conn: 1},                   // the sender: skipped
		{User: "alice", Device: "laptop", Gateway: "g1", Conn: 2},                  // sender's other device
		{User: "bob", Device: "phone", Gateway: "g1", Conn: 3, Caps: wire.CapZstd}, // compressed variant
		{User: "bob", Device: "tablet", Gateway: "g2", Conn: 4},                    // another gateway
		{User: "carol", Device: "phone", Gateway: "g2", Conn: 5},                   // not a member
	}, time.Minute)
	s := &sink{batches: map[string][][]byte{}}
	s.subscribe(t, mem, "g1")
	s.subscribe(t, mem, "g2")
	f := New(Config{}, Deps{Store: st, Registry: mem, Router: mem})

	body := []byte(strings.Repeat("compressible text ", 100))
	m := wire.Msg{ConvID: 42, MessageID: 7, Seq: 1, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: body}
	frame := m.Append(nil, 0)
	r := events.Receipt{Conv: 42, Kind: wire.ReceiptRead, Seq: 1, User: []byte("bob"), Device: []byte("phone")}
	recs := []*kgo.Record{{Value: events.AppendMsg(nil, frame)}, {Value: r.Append(nil)}}
	if err := f.Handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	type got struct {
		conns      []uint64
		compressed bool
		typ        wire.Type
	}
	decode := func(gw string) []got {
		var out []got
		for _, b := range s.batches[gw] {
			conns, fr, err := wire.DecodeBatch(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			typ, flags, _, _ := wire.ParseHeader(fr)
			if typ == wire.TypeMsg && flags&wire.FlagCompressed == 0 && !slices.Equal(fr, frame) {
				t.Fatalf("plain MSG was re-encoded")
			}
			slices.Sort(conns)
			out = append(out, got{conns, flags&wire.FlagCompressed != 0, typ})
		}
		return out
	}
	g1, g2 := decode("g1"), decode("g2")
	// MSG: g1 gets one plain batch (alice's laptop) and one zstd batch
	// (bob's phone); g2 one plain batch (bob's tablet). RECEIPT: everyone
	// but bob's phone, which sent it.
	want1 := []got{{[]uint64{2}, false, wire.TypeMsg}, {[]uint64{3}, true, wire.TypeMsg}, {[]uint64{1, 2}, false, wire.TypeReceipt}}
	want2 := []got{{[]uint64{4}, false, wire.TypeMsg}, {[]uint64{4}, false, wire.TypeReceipt}}
	eq := func(a, b []got) bool {
		return slices.EqualFunc(a, b, func(x, y got) bool {
			return slices.Equal(x.conns, y.conns) && x.compressed == y.compressed && x.typ == y.typ
		})
	}
	if !eq(g1, want1) || !eq(g2, want2) {
		t.Fatalf("g1 %+v\ng2 %+v", g1, g2)
	}
}

// TestFanoutSharedCaches: with Deps.Members the fanout fills the shared
// membership cache on a miss and then delivers by the cache (a change set
// there is followed); with Deps.Receipts every receipt event advances the
// counters.
func TestFanoutSharedCaches(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	if _, err := st.EnsureConversation(ctx, store.Conversation{ID: 42, Kind: wire.ConvDirect, Members: []string{"alice", "bob"}}); err != nil {
		t.Fatal(err)
	}
	mem := routing.NewMemory()
	_ = mem.Lease(ctx, "g1", time.Minute)
	_ = mem.Register(ctx, []routing.Route{
		{User: "bob", Device: "phone", Gateway: "g1", Conn: 3},
		{User: "carol", Device: "phone", Gateway: "g1", Conn: 5},
	}, time.Minute)
	s := &sink{batches: map[string][][]byte{}}
	s.subscribe(t, mem, "g1")
	f := New(Config{}, Deps{Store: st, Registry: mem, Router: mem, Members: mem, Receipts: mem})

	msg := func(seq uint64) *kgo.Record {
		m := wire.Msg{ConvID: 42, MessageID: seq, Seq: seq, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: []byte("hi")}
		return &kgo.Record{Value: events.AppendMsg(nil, m.Append(nil, 0))}
	}
	deliveredTo := func() []uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		var all []uint64
		for _, b := range s.batches["g1"] {
			conns, _, err := wire.DecodeBatch(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, conns...)
		}
		s.batches["g1"] = nil
		slices.Sort(all)
		return all
	}
	r := events.Receipt{Conv: 42, Kind: wire.ReceiptRead, Seq: 1, User: []byte("bob"), Device: []byte("phone")}
	if err := f.Handle(ctx, []*kgo.Record{msg(1), {Value: r.Append(nil)}}); err != nil {
		t.Fatal(err)
	}
	if got := deliveredTo(); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("delivered to %v, want bob's conn 3", got)
	}
	if m, ok, err := mem.Members(ctx, 42); err != nil || !ok || !slices.Equal(m, []string{"alice", "bob"}) {
		t.Fatalf("cache after a miss: %v %v %v", m, ok, err)
	}
	counts, err := mem.ReceiptCounts(ctx, 42, "alice", []uint64{1, 2}, nil)
	if err != nil || !slices.Equal(counts, []routing.ReceiptCount{{Delivered: 1, Read: 1}, {}}) {
		t.Fatalf("receipt counts %v, %v", counts, err)
	}
	// A membership change written to the cache is what the next message
	// follows (the store still says alice and bob).
	if err := mem.SetMembers(ctx, 42, []string{"alice", "bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Handle(ctx, []*kgo.Record{msg(2)}); err != nil {
		t.Fatal(err)
	}
	if got := deliveredTo(); !slices.Equal(got, []uint64{3, 5}) {
		t.Fatalf("delivered to %v, want bob's and carol's conns", got)
	}
}

// TestFanoutGroupChange: a group's system message refreshes the member
// lists (own cache and the shared one), so the messages after it go to the
// new members only, and it reaches the member it removed and the device
// that made the change.
func TestFanoutGroupChange(t *testing.T) {
	for _, shared := range []bool{false, true} {
		ctx := context.Background()
		st := openStore(t)
		group := store.Conversation{ID: 43, Kind: wire.ConvGroup, Members: []string{"alice", "bob", "carol"}, Name: "g", Admins: []string{"alice"}}
		if _, err := st.EnsureConversation(ctx, group); err != nil {
			t.Fatal(err)
		}
		mem := routing.NewMemory()
		_ = mem.Lease(ctx, "g1", time.Minute)
		_ = mem.Register(ctx, []routing.Route{
			{User: "alice", Device: "phone", Gateway: "g1", Conn: 1},
			{User: "bob", Device: "phone", Gateway: "g1", Conn: 2},
			{User: "carol", Device: "phone", Gateway: "g1", Conn: 3},
			{User: "dave", Device: "phone", Gateway: "g1", Conn: 4},
		}, time.Minute)
		s := &sink{batches: map[string][][]byte{}}
		s.subscribe(t, mem, "g1")
		deps := Deps{Store: st, Registry: mem, Router: mem}
		var cache *routing.Memory
		if shared {
			cache = routing.NewMemory()
			deps.Members = cache
		}
		f := New(Config{}, deps)
		msg := func(seq uint64, kind wire.MsgKind, body []byte) *kgo.Record {
			m := wire.Msg{ConvID: 43, MessageID: seq, Seq: seq, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: kind, Body: body}
			if kind == wire.KindSystem {
				m.ClientMsgID = fmt.Appendf(nil, "~g/0/%d", seq) // as the core writes them
			}
			return &kgo.Record{Value: events.AppendMsg(nil, m.Append(nil, 0))}
		}
		// Seq 1 is delivered by the cached list (alice, bob, carol).
		if err := f.Handle(ctx, []*kgo.Record{msg(1, wire.KindText, []byte("hi"))}); err != nil {
			t.Fatal(err)
		}
		// The core commits "remove bob, add dave", then emits it.
		next := group
		next.Members = []string{"alice", "carol", "dave"}
		if err := st.Commit(ctx, &store.Batch{GroupUpdates: []store.GroupUpdate{{Conv: next, Added: []string{"dave"}, Removed: []string{"bob"}}}}); err != nil {
			t.Fatal(err)
		}
		remove := wire.GroupEvent{Op: wire.GroupRemove, Actor: []byte("alice"), Users: [][]byte{[]byte("bob")}}
		// A system-kind message without the core's client_msg_id (none
		// can pass SEND, but the fanout does not rely on it) is an
		// ordinary message: delivered to the cached members, naming
		// nobody else.
		forged := msg(9, wire.KindSystem, (&wire.GroupEvent{Op: wire.GroupRemove, Actor: []byte("alice"), Users: [][]byte{[]byte("dave")}}).Append(nil))
		_, body, _ := events.Split(forged.Value)
		var d0 wire.Decoder
		if _, _, err := d0.Decode(body); err != nil {
			t.Fatal(err)
		}
		d0.Msg.ClientMsgID = []byte("client-chosen")
		forged.Value = events.AppendMsg(nil, d0.Msg.Append(nil, 0))
		if err := f.Handle(ctx, []*kgo.Record{forged}); err != nil {
			t.Fatal(err)
		}
		if err := f.Handle(ctx, []*kgo.Record{msg(2, wire.KindSystem, remove.Append(nil)), msg(3, wire.KindText, []byte("after"))}); err != nil {
			t.Fatal(err)
		}
		got := map[uint64][]uint64{} // seq -> conns
		var d wire.Decoder
		for _, b := range s.batches["g1"] {
			conns, fr, err := wire.DecodeBatch(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.Decode(fr); err != nil {
				t.Fatal(err)
			}
			got[d.Msg.Seq] = append(got[d.Msg.Seq], conns...)
		}
		for seq := range got {
			slices.Sort(got[seq])
		}
		// The system message also reaches the actor's own device (1).
		want := map[uint64][]uint64{1: {2, 3}, 9: {2, 3}, 2: {1, 2, 3, 4}, 3: {3, 4}}
		for seq, w := range want {
			if !slices.Equal(got[seq], w) {
				t.Errorf("shared cache %v: seq %d went to %v, want %v", shared, seq, got[seq], w)
			}
		}
		if shared {
			if m, ok, _ := cache.Members(ctx, 43); !ok || !slices.Equal(m, next.Members) {
				t.Errorf("shared cache holds %v %v, want %v", m, ok, next.Members)
			}
		}
	}
}

// groupOnG1 is a fanout for group conv (alice, bob and carol; alice admin)
// with routes on gateway g1 and the in-memory registry, router and receipt
// counters. handle runs recs and returns the connections each routed frame
// went to, after check approved the frame.
type groupOnG1 struct {
	f   *Fanout
	mem *routing.Memory
	s   *sink
}

func newGroupOnG1(t *testing.T, conv uint64, routes []routing.Route) *groupOnG1 {
	t.Helper()
	ctx := context.Background()
	st := openStore(t)
	c := store.Conversation{ID: conv, Kind: wire.ConvGroup, Members: []string{"alice", "bob", "carol"}, Admins: []string{"alice"}}
	if _, err := st.EnsureConversation(ctx, c); err != nil {
		t.Fatal(err)
	}
	mem := routing.NewMemory()
	_ = mem.Lease(ctx, "g1", time.Minute)
	_ = mem.Register(ctx, routes, time.Minute)
	s := &sink{batches: map[string][][]byte{}}
	s.subscribe(t, mem, "g1")
	return &groupOnG1{f: New(Config{}, Deps{Store: st, Registry: mem, Router: mem, Receipts: mem}), mem: mem, s: s}
}

func (g *groupOnG1) handle(t *testing.T, check func(frame []byte) bool, recs ...*kgo.Record) []uint64 {
	t.Helper()
	if err := g.f.Handle(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	var conns []uint64
	for _, b := range g.s.batches["g1"] {
		c, fr, err := wire.DecodeBatch(b, nil)
		if err != nil || !check(fr) {
			t.Fatalf("routed frame %x: %v", fr, err)
		}
		conns = append(conns, c...)
	}
	slices.Sort(conns)
	return conns
}

// TestFanoutGroupReceiptsToOwnDevices: a group's receipt reaches only the
// reader's other devices (badge sync), never the other members, and still
// advances the counters the senders read.
func TestFanoutGroupReceiptsToOwnDevices(t *testing.T) {
	g := newGroupOnG1(t, 43, []routing.Route{
		{User: "alice", Device: "phone", Gateway: "g1", Conn: 1},
		{User: "bob", Device: "phone", Gateway: "g1", Conn: 2}, // sends the receipt
		{User: "bob", Device: "laptop", Gateway: "g1", Conn: 3},
		{User: "carol", Device: "phone", Gateway: "g1", Conn: 4},
	})
	r := events.Receipt{Conv: 43, Kind: wire.ReceiptRead, Seq: 1, User: []byte("bob"), Device: []byte("phone"), Group: true}
	isReceipt := func(fr []byte) bool { typ, _, _, _ := wire.ParseHeader(fr); return typ == wire.TypeReceipt }
	if conns := g.handle(t, isReceipt, &kgo.Record{Value: r.Append(nil)}); !slices.Equal(conns, []uint64{3}) {
		t.Fatalf("group receipt went to conns %v, want only bob's laptop [3]", conns)
	}
	counts, err := g.mem.ReceiptCounts(context.Background(), 43, "alice", []uint64{1}, nil)
	if err != nil || len(counts) != 1 || counts[0].Read != 1 {
		t.Fatalf("counters: %+v %v", counts, err)
	}
}

// TestFanoutTyping: a typing event reaches every member's devices except
// all of the typist's own.
func TestFanoutTyping(t *testing.T) {
	g := newGroupOnG1(t, 44, []routing.Route{
		{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}, // types
		{User: "alice", Device: "laptop", Gateway: "g1", Conn: 2},
		{User: "bob", Device: "phone", Gateway: "g1", Conn: 3},
		{User: "carol", Device: "phone", Gateway: "g1", Conn: 4},
		{User: "dave", Device: "phone", Gateway: "g1", Conn: 5}, // not a member
	})
	frame := (&wire.Typing{ConvID: 44, State: wire.TypingStarted, User: []byte("alice")}).Append(nil, 0)
	same := func(fr []byte) bool { return slices.Equal(fr, frame) }
	conns := g.handle(t, same, &kgo.Record{Value: events.AppendTyping(nil, frame, []byte("phone"))})
	if !slices.Equal(conns, []uint64{3, 4}) {
		t.Fatalf("typing went to %v, want bob's and carol's [3 4]", conns)
	}
}

// TestFanoutChannel: in a group above PullAbove, MSG and TYPING go out
// once, to every gateway, with no connection list (each gateway picks its
// focused connections); nothing goes to the members' own gateways.
func TestFanoutChannel(t *testing.T) {
	g := newGroupOnG1(t, 45, []routing.Route{
		{User: "alice", Device: "phone", Gateway: "g1", Conn: 1},
		{User: "bob", Device: "phone", Gateway: "g1", Conn: 2},
		{User: "carol", Device: "phone", Gateway: "g1", Conn: 3},
	})
	g.f = New(Config{PullAbove: 2}, g.f.deps)
	all := &sink{batches: map[string][][]byte{}}
	all.subscribe(t, g.mem, routing.AllGateways)
	msg := (&wire.Msg{ConvID: 45, MessageID: 9, Seq: 2, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: []byte("hi")}).Append(nil, 0)
	typing := (&wire.Typing{ConvID: 45, State: wire.TypingStarted, User: []byte("bob")}).Append(nil, 0)
	if err := g.f.Handle(context.Background(), []*kgo.Record{
		{Value: events.AppendMsg(nil, msg)},
		{Value: events.AppendTyping(nil, typing, []byte("phone"))},
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(g.s.batches["g1"]); n != 0 {
		t.Fatalf("%d batches to the members' gateway", n)
	}
	got := all.batches[routing.AllGateways]
	if len(got) != 2 {
		t.Fatalf("%d batches to every gateway, want 2", len(got))
	}
	for i, want := range [][]byte{msg, typing} {
		conns, fr, err := wire.DecodeBatch(got[i], nil)
		if err != nil || len(conns) != 0 || !slices.Equal(fr, want) {
			t.Fatalf("batch %d: conns %v frame %x err %v", i, conns, fr, err)
		}
	}
}

// countingMembers counts how the fanout reads and fills the member cache.
type countingMembers struct {
	*routing.Memory
	single, multi, fills, multiFills, multiConvs int
}

func (c *countingMembers) Members(ctx context.Context, conv uint64) ([]string, bool, error) {
	c.single++
	return c.Memory.Members(ctx, conv)
}

func (c *countingMembers) FillMembers(ctx context.Context, conv uint64, ms []string) error {
	c.fills++
	return c.Memory.FillMembers(ctx, conv, ms)
}

func (c *countingMembers) MembersMulti(ctx context.Context, convs []uint64, out [][]string, found []bool) error {
	c.multi++
	c.multiConvs += len(convs)
	return c.Memory.MembersMulti(ctx, convs, out, found)
}

func (c *countingMembers) FillMembersMulti(ctx context.Context, convs []uint64, ms [][]string) error {
	c.multiFills++
	return c.Memory.FillMembersMulti(ctx, convs, ms)
}

// TestFanoutPrefetchesMembers: a batch of events in conversations the cache
// has never seen costs one multi-read and one multi-fill of the member
// cache, not a read and a fill per conversation, and delivers every event.
func TestFanoutPrefetchesMembers(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	mem := routing.NewMemory()
	_ = mem.Lease(ctx, "g1", time.Minute)
	const n = 50
	var recs []*kgo.Record
	for i := range n {
		conv := uint64(100 + i)
		peer := fmt.Sprintf("peer%d", i)
		if _, err := st.EnsureConversation(ctx, store.Conversation{ID: conv, Kind: wire.ConvDirect, Members: []string{"alice", peer}}); err != nil {
			t.Fatal(err)
		}
		_ = mem.Register(ctx, []routing.Route{{User: peer, Device: "phone", Gateway: "g1", Conn: conv}}, time.Minute)
		m := wire.Msg{ConvID: conv, MessageID: conv, Seq: 1, Sender: []byte("alice"), SenderDevice: []byte("phone"), Kind: wire.KindText, Body: []byte("hi")}
		recs = append(recs, &kgo.Record{Value: events.AppendMsg(nil, m.Append(nil, 0))})
	}
	// The peers' receipts ride in the same batch: their conversations are
	// already in it.
	for i := range n {
		r := events.Receipt{Conv: uint64(100 + i), Kind: wire.ReceiptDelivered, Seq: 1, User: []byte(fmt.Sprintf("peer%d", i)), Device: []byte("phone")}
		recs = append(recs, &kgo.Record{Value: r.Append(nil)})
	}
	s := &sink{batches: map[string][][]byte{}}
	s.subscribe(t, mem, "g1")
	cm := &countingMembers{Memory: mem}
	f := New(Config{}, Deps{Store: st, Registry: mem, Router: mem, Members: cm})
	if err := f.Handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if cm.multi != 1 || cm.multiConvs != n || cm.multiFills != 1 || cm.single != 0 || cm.fills != 0 {
		t.Fatalf("cache calls: %+v, want one multi-read of %d conversations and one multi-fill", *cm, n)
	}
	var got []uint64
	for _, b := range s.batches["g1"] {
		conns, fr, err := wire.DecodeBatch(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if wire.Type(fr[0]) == wire.TypeMsg {
			got = append(got, conns...)
		}
	}
	slices.Sort(got)
	if len(got) != n || got[0] != 100 || got[n-1] != 100+n-1 {
		t.Fatalf("MSG delivered to %v", got)
	}
	// The next batch finds them all cached: one multi-read, no fill.
	if err := f.Handle(ctx, recs[:n]); err != nil {
		t.Fatal(err)
	}
	if cm.multi != 2 || cm.multiFills != 1 {
		t.Fatalf("cache calls after a warm batch: %+v", *cm)
	}
}
