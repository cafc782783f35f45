package messages

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/consume"
	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// groupHarness feeds group requests with distinct Kafka positions, as the
// consumer would.
type groupHarness struct {
	*harness
	offset int64
}

func newGroupHarness(t *testing.T, st store.Store, cfg Config) *groupHarness {
	h := newHarness(t, st)
	if cfg.MaxGroupSize != 0 || cfg.ReceiptWriteBehind != 0 || cfg.Now != nil {
		h.p.Close()
		var err error
		h.p, err = New(cfg, Deps{Store: h.st, Router: h.router, IDs: h.p.deps.IDs, Events: h.evs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.p.Close)
	}
	return &groupHarness{harness: h}
}

// rec stamps a record with the next offset.
func (g *groupHarness) rec(user string, f wire.Frame) *kgo.Record {
	r := record(user, f.Append(nil, 0))
	g.offset++
	r.Topic, r.Partition, r.Offset, r.Timestamp = "chat.inbound", 3, g.offset, time.UnixMilli(1_767_225_600_000+g.offset)
	return r
}

// handle runs one batch and returns the frames it routed.
func (g *groupHarness) handle(recs ...*kgo.Record) []wire.Frame {
	g.t.Helper()
	if err := g.p.Handle(context.Background(), recs); err != nil {
		g.t.Fatalf("Handle: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []wire.Frame
	for _, b := range g.frames {
		var d wire.Decoder
		t, _, err := d.Decode(b)
		if err != nil {
			g.t.Fatalf("routed frame does not decode: %v", err)
		}
		f := d.Frame(t)
		// Keep a copy that owns its memory.
		var c wire.Decoder
		if _, _, err := c.Decode(append([]byte(nil), b...)); err != nil {
			g.t.Fatal(err)
		}
		out = append(out, c.Frame(f.Type()))
	}
	g.frames = nil
	return out
}

// one asserts that frames is a single frame of type T and returns it.
func one[T wire.Frame](t *testing.T, frames []wire.Frame) T {
	t.Helper()
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1: %v", len(frames), frames)
	}
	f, ok := frames[0].(T)
	if !ok {
		if e, isErr := frames[0].(*wire.Error); isErr {
			t.Fatalf("got ERROR %v %q", e.Code, e.Message)
		}
		t.Fatalf("got %T", frames[0])
	}
	return f
}

func wantError(t *testing.T, frames []wire.Frame, code wire.Code) {
	t.Helper()
	e := one[*wire.Error](t, frames)
	if e.Code != code {
		t.Fatalf("ERROR %v %q, want %v", e.Code, e.Message, code)
	}
}

func membersOf(c *wire.Conv) string {
	var s []string
	for i, m := range c.Members {
		if c.Roles[i] == wire.RoleAdmin {
			s = append(s, string(m)+"*")
		} else {
			s = append(s, string(m))
		}
	}
	return fmt.Sprint(s)
}

func users(us ...string) [][]byte {
	out := make([][]byte, len(us))
	for i, u := range us {
		out[i] = []byte(u)
	}
	return out
}

// groupLog returns the group's messages, system messages decoded.
func groupLog(t *testing.T, st store.Store, conv uint64) []string {
	t.Helper()
	ms, err := st.MessagesAfter(context.Background(), conv, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, m := range ms {
		if m.Seq != uint64(i+1) {
			t.Fatalf("seq %d at position %d", m.Seq, i)
		}
		if m.Kind != wire.KindSystem {
			out = append(out, m.Sender+": "+string(m.Body))
			continue
		}
		var ev wire.GroupEvent
		if err := ev.Decode(m.Body); err != nil {
			t.Fatalf("system message %d: %v", m.Seq, err)
		}
		out = append(out, fmt.Sprintf("%s %d %s %q %s", m.Sender, ev.Op, ev.Actor, ev.Name, ev.Users))
	}
	return out
}

func sendFrame(conv uint64, cmid string) *wire.Send {
	return &wire.Send{ConvID: conv, ClientMsgID: []byte(cmid), Kind: wire.KindText, Body: []byte(cmid)}
}

func TestGroupLifecycle(t *testing.T) {
	st := openStore(t, t.TempDir())
	g := newGroupHarness(t, st, Config{})
	ctx := context.Background()

	c := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{ReqID: 7, Name: []byte("hikers"), Members: users("carol", "bob", "bob")})))
	conv := c.ConvID
	if c.ReqID != 7 || c.Kind != wire.ConvGroup || string(c.Name) != "hikers" || c.LastSeq != 1 || c.MemberTotal != 3 || membersOf(c) != "[alice* bob carol]" {
		t.Fatalf("CONV after create: %+v %s", c, membersOf(c))
	}
	if ids, _ := st.UserConversations(ctx, "bob"); !slices.Contains(ids, conv) {
		t.Fatalf("bob's conversations %v lack the group", ids)
	}
	// Members send; the new member list applies from the change's seq on,
	// also inside one batch.
	if got := one[*wire.Ack](t, g.handle(g.rec("bob", sendFrame(conv, "b1")))); got.Seq != 2 {
		t.Fatalf("bob's ACK seq %d", got.Seq)
	}
	c = one[*wire.Conv](t, g.handle(g.rec("alice", &wire.GroupChange{ReqID: 8, ConvID: conv, Op: wire.GroupAdd, Users: users("dave")})))
	if c.LastSeq != 3 || membersOf(c) != "[alice* bob carol dave]" {
		t.Fatalf("after add: seq %d %s", c.LastSeq, membersOf(c))
	}
	// Unread starts at the change for a newcomer; writing implies having
	// seen; read pointers move only by receipts.
	for u, want := range map[string]uint64{"dave": 2, "alice": 3, "bob": 2, "carol": 0} {
		if p, _ := st.Pointers(ctx, conv, u); p.Seen != want || p.Read != 0 {
			t.Fatalf("%s's pointers %+v, want seen %d, read 0", u, p, want)
		}
	}
	frames := g.handle(
		g.rec("alice", &wire.GroupChange{ReqID: 9, ConvID: conv, Op: wire.GroupRemove, Users: users("bob")}),
		g.rec("bob", sendFrame(conv, "b2")),
	)
	if len(frames) != 2 {
		t.Fatalf("frames %v", frames)
	}
	wantError(t, frames[1:], wire.CodeNotMember)
	if c := one[*wire.Conv](t, frames[:1]); membersOf(c) != "[alice* carol dave]" {
		t.Fatalf("after remove: %s", membersOf(c))
	}
	if ids, _ := st.UserConversations(ctx, "bob"); slices.Contains(ids, conv) {
		t.Fatal("bob's conversations still list the group")
	}
	wantError(t, g.handle(g.rec("bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupRename, Name: []byte("x")})), wire.CodeNotMember)
	c = one[*wire.Conv](t, g.handle(g.rec("alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupPromote, Users: users("carol")})))
	if membersOf(c) != "[alice* carol* dave]" {
		t.Fatalf("after promote: %s", membersOf(c))
	}
	// Any member renames.
	if c = one[*wire.Conv](t, g.handle(g.rec("dave", &wire.GroupChange{ConvID: conv, Op: wire.GroupRename, Name: []byte("hikers 2026")}))); string(c.Name) != "hikers 2026" {
		t.Fatalf("name %q", c.Name)
	}
	// Adding members who are members changes nothing and writes nothing.
	if c = one[*wire.Conv](t, g.handle(g.rec("alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupAdd, Users: users("dave")}))); c.LastSeq != 6 {
		t.Fatalf("no-op add moved the log to %d", c.LastSeq)
	}
	one[*wire.Conv](t, g.handle(g.rec("alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupLeave})))
	// The last admin leaves: the first remaining member takes over.
	c = one[*wire.Conv](t, g.handle(g.rec("carol", &wire.GroupChange{ConvID: conv, Op: wire.GroupLeave})))
	if membersOf(c) != "[dave*]" || c.LastSeq != 8 {
		t.Fatalf("after the last admin left: seq %d %s", c.LastSeq, membersOf(c))
	}
	want := []string{
		`alice 7 alice "hikers" [bob carol]`,
		`bob: b1`,
		`alice 1 alice "" [dave]`,
		`alice 2 alice "" [bob]`,
		`alice 5 alice "" [carol]`,
		`dave 4 dave "hikers 2026" []`,
		`alice 3 alice "" []`,
		`carol 3 carol "" [dave]`,
	}
	if got := groupLog(t, st, conv); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log:\n%q\nwant\n%q", got, want)
	}
	// Every system message went to chat.events; no ACK for them.
	if n := len(g.evs.msgs()); n != 8 {
		t.Fatalf("%d messages emitted, want 8", n)
	}
	stored, err := st.Conversation(ctx, conv)
	if err != nil || stored.Name != "hikers 2026" || fmt.Sprint(stored.Members) != "[dave]" || fmt.Sprint(stored.Admins) != "[dave]" {
		t.Fatalf("stored %+v %v", stored, err)
	}
}

// TestGroupBadInput: every refused request is a coded ERROR and writes
// nothing.
func TestGroupBadInput(t *testing.T) {
	st := openStore(t, t.TempDir())
	g := newGroupHarness(t, st, Config{MaxGroupSize: 4})
	c := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob", "carol")})))
	conv := c.ConvID
	direct := setupConv(t, st)
	for _, tc := range []struct {
		name string
		user string
		f    wire.Frame
		code wire.Code
	}{
		{"name not UTF-8", "alice", &wire.CreateGroup{Name: []byte{0xff, 0xfe}}, wire.CodeInvalidArgument},
		{"bad member id", "alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob", "no spaces")}, wire.CodeInvalidArgument},
		{"create past the cap", "alice", &wire.CreateGroup{Name: []byte("g"), Members: users("b", "c", "d", "e")}, wire.CodeGroupFull},
		{"add past the cap", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupAdd, Users: users("dave", "erin")}, wire.CodeGroupFull},
		{"non-admin adds", "bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupAdd, Users: users("dave")}, wire.CodeNotAdmin},
		{"non-admin removes", "bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupRemove, Users: users("carol")}, wire.CodeNotAdmin},
		{"non-admin promotes", "bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupPromote, Users: users("bob")}, wire.CodeNotAdmin},
		{"remove an unknown member", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupRemove, Users: users("carol", "zed")}, wire.CodeUnknownMember},
		{"promote an unknown member", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupPromote, Users: users("zed")}, wire.CodeUnknownMember},
		{"demote the last admin", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupDemote, Users: users("alice")}, wire.CodeInvalidArgument},
		{"remove yourself", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupRemove, Users: users("alice")}, wire.CodeInvalidArgument},
		{"add nobody", "alice", &wire.GroupChange{ConvID: conv, Op: wire.GroupAdd}, wire.CodeInvalidArgument},
		{"leave naming users", "bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupLeave, Users: users("carol")}, wire.CodeInvalidArgument},
		{"rename to nothing", "bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupRename}, wire.CodeInvalidArgument},
		{"a non-member renames", "zed", &wire.GroupChange{ConvID: conv, Op: wire.GroupRename, Name: []byte("x")}, wire.CodeNotMember},
		{"a direct conversation", "alice", &wire.GroupChange{ConvID: direct, Op: wire.GroupRename, Name: []byte("x")}, wire.CodeInvalidArgument},
		{"no such group", "alice", &wire.GroupChange{ConvID: 12345, Op: wire.GroupLeave}, wire.CodeConvNotFound},
		{"a reserved client_msg_id", "alice", sendFrame(conv, "~g/3/1"), wire.CodeInvalidArgument},
		{"a system-kind SEND", "alice", &wire.Send{ConvID: conv, ClientMsgID: []byte("s"), Kind: wire.KindSystem, Body: []byte("x")}, wire.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, g.handle(g.rec(tc.user, tc.f)), tc.code)
		})
	}
	if got := groupLog(t, st, conv); len(got) != 1 {
		t.Fatalf("refused requests wrote %q", got)
	}
	stored, err := st.Conversation(context.Background(), conv)
	if err != nil || fmt.Sprint(stored.Members) != "[alice bob carol]" || fmt.Sprint(stored.Admins) != "[alice]" {
		t.Fatalf("stored %+v %v", stored, err)
	}
	// Acting on a group one has left.
	one[*wire.Conv](t, g.handle(g.rec("bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupLeave})))
	wantError(t, g.handle(g.rec("bob", sendFrame(conv, "after leaving"))), wire.CodeNotMember)
	wantError(t, g.handle(g.rec("bob", &wire.GroupChange{ConvID: conv, Op: wire.GroupLeave})), wire.CodeNotMember)
}

// TestGroupRequestsRedelivered: a request handled again (a crash before the
// offset commit) is answered, not applied twice, even after later changes.
func TestGroupRequestsRedelivered(t *testing.T) {
	st := openStore(t, t.TempDir())
	g := newGroupHarness(t, st, Config{})
	create := g.rec("alice", &wire.CreateGroup{ReqID: 1, Name: []byte("g"), Members: users("bob", "carol")})
	c1 := one[*wire.Conv](t, g.handle(create))
	remove := g.rec("alice", &wire.GroupChange{ReqID: 2, ConvID: c1.ConvID, Op: wire.GroupRemove, Users: users("bob")})
	one[*wire.Conv](t, g.handle(remove))
	add := g.rec("alice", &wire.GroupChange{ReqID: 3, ConvID: c1.ConvID, Op: wire.GroupAdd, Users: users("bob")})
	one[*wire.Conv](t, g.handle(add))

	// A new owner (fresh processor) handles the same records again.
	again := newGroupHarness(t, st, Config{})
	c2 := one[*wire.Conv](t, again.handle(create))
	if c2.ConvID != c1.ConvID || c2.ReqID != 1 {
		t.Fatalf("re-created %d (req %d), want the group %d", c2.ConvID, c2.ReqID, c1.ConvID)
	}
	c3 := one[*wire.Conv](t, again.handle(remove))
	if c3.ReqID != 2 || membersOf(c3) != "[alice* bob carol]" {
		t.Fatalf("re-delivered remove answered %s (req %d): applied again?", membersOf(c3), c3.ReqID)
	}
	if got := groupLog(t, st, c1.ConvID); len(got) != 3 {
		t.Fatalf("log after re-delivery: %q", got)
	}
	// The new owner never emitted these system messages itself, so it
	// re-emits them (the first owner's emit may have been lost).
	if n := len(again.evs.msgs()); n != 2 {
		t.Fatalf("re-emitted %d, want 2", n)
	}
}

// TestReceiptsCoalescedAndBigGroups: updates of one pointer in one batch
// are one store write and one event; groups over DeliveredMaxGroup members
// keep no "delivered" (read does not imply it there either). Group
// pointers are written behind: announced at once, stored a window later.
func TestReceiptsCoalescedAndBigGroups(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	clock := time.UnixMilli(1_767_225_600_000)
	g := newGroupHarness(t, st, Config{Now: func() time.Time { return clock }})
	small := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("small"), Members: users("bob")})))
	var many [][]byte
	for i := range DeliveredMaxGroup {
		many = append(many, fmt.Appendf(nil, "m%03d", i))
	}
	big := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("big"), Members: many})))
	if big.MemberTotal != DeliveredMaxGroup+1 {
		t.Fatalf("big group has %d members", big.MemberTotal)
	}
	for _, c := range []uint64{small.ConvID, big.ConvID} {
		for i := range 3 {
			one[*wire.Ack](t, g.handle(g.rec("alice", sendFrame(c, fmt.Sprint("m", i)))))
		}
	}
	before := len(g.evs.recs)
	coalesced := testutil.ToFloat64(g.p.cfg.Metrics.ReceiptsCoalesced)
	rcpt := func(user string, conv uint64, kind wire.ReceiptKind, seq uint64) *kgo.Record {
		return g.rec(user, &wire.Receipt{ConvID: conv, Kind: kind, UpToSeq: seq})
	}
	first := rcpt("bob", small.ConvID, wire.ReceiptRead, 2)
	if fs := g.handle(
		first,
		rcpt("bob", small.ConvID, wire.ReceiptRead, 4),
		rcpt("bob", small.ConvID, wire.ReceiptRead, 3),
		rcpt("m001", big.ConvID, wire.ReceiptDelivered, 4),
		rcpt("m001", big.ConvID, wire.ReceiptRead, 3),
	); len(fs) != 0 {
		t.Fatalf("receipts answered %v", fs)
	}
	ptrs := func() (bob, m001 store.Pointers) {
		bob, _ = st.Pointers(ctx, small.ConvID, "bob")
		m001, _ = st.Pointers(ctx, big.ConvID, "m001")
		return bob, m001
	}
	// Announced at once...
	if n := len(g.evs.recs) - before; n != 3 {
		t.Errorf("%d receipt events, want 3 (one per pointer)", n)
	}
	// ...held, not written, and holding the commit at the first receipt.
	if b, m := ptrs(); b.Read != 0 || b.Delivered != 0 || m.Read != 0 {
		t.Errorf("held pointers already written: bob %+v, m001 %+v", b, m)
	}
	floors := map[consume.TopicPartition]kgo.EpochOffset{}
	g.p.Floors(floors)
	if f := floors[consume.TopicPartition{Topic: "chat.inbound", Partition: 3}]; len(floors) != 1 || f.Offset != first.Offset {
		t.Errorf("floors %v, want the first receipt's offset %d", floors, first.Offset)
	}
	if held, err := g.p.Flush(ctx, false); err != nil || !held {
		t.Fatalf("flush before the window: held %v, %v", held, err)
	}
	if b, _ := ptrs(); b.Read != 0 {
		t.Errorf("flushed before the window: bob %+v", b)
	}
	clock = clock.Add(DefaultReceiptWriteBehind)
	if held, err := g.p.Flush(ctx, false); err != nil || held {
		t.Fatalf("flush after the window: held %v, %v", held, err)
	}
	// Small group: read 4 and the delivered it implies, coalesced from
	// three updates each. Big group: read 3 only.
	b, m := ptrs()
	if b != (store.Pointers{Delivered: 4, Read: 4}) {
		t.Errorf("bob's pointers %+v", b)
	}
	if m != (store.Pointers{Read: 3}) {
		t.Errorf("m001's pointers %+v, want read 3 and no delivered", m)
	}
	clear(floors)
	if g.p.Floors(floors); len(floors) != 0 {
		t.Errorf("floors %v after the flush", floors)
	}
	// Every one is marked as a group's, so the fanout sends it to the
	// reader's own devices only.
	for _, rec := range g.evs.recs[before:] {
		var ev events.Receipt
		if k, body, _ := events.Split(rec.Value); k != events.KindReceipt || ev.Decode(body) != nil || !ev.Group {
			t.Errorf("receipt event %x not marked as a group's", rec.Value)
		}
	}
	if n := testutil.ToFloat64(g.p.cfg.Metrics.ReceiptsCoalesced) - coalesced; n != 4 {
		t.Errorf("%v updates coalesced, want 4", n)
	}
	if n := testutil.ToFloat64(g.p.cfg.Metrics.ReceiptWrites); n != 3 {
		t.Errorf("%v receipt pointer writes counted, want 3", n)
	}
	if n := testutil.ToFloat64(g.p.cfg.Metrics.ReceiptsSkipped); n != 1 {
		t.Errorf("%v delivered receipts skipped, want 1", n)
	}
}

// TestGroupReceiptsWrittenBehind: within a window, a member's successive
// reads are one store write at the highest seq, each advance announced; a
// repeated or lower receipt is neither announced nor held; a new owner
// that never saw the held updates (a crash before the flush) re-delivers
// them from the uncommitted records and announces them again; a failed
// announcement holds nothing, so the retried batch announces again.
func TestGroupReceiptsWrittenBehind(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	clock := time.UnixMilli(1_767_225_600_000)
	now := func() time.Time { return clock }
	g := newGroupHarness(t, st, Config{Now: now})
	grp := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob", "carol")})))
	for i := range 5 {
		one[*wire.Ack](t, g.handle(g.rec("alice", sendFrame(grp.ConvID, fmt.Sprint("m", i)))))
	}
	read := func(user string, seq uint64) *kgo.Record {
		return g.rec(user, &wire.Receipt{ConvID: grp.ConvID, Kind: wire.ReceiptRead, UpToSeq: seq})
	}
	announced := func() (n int) {
		for _, r := range g.evs.recs {
			if k, _, _ := events.Split(r.Value); k == events.KindReceipt {
				n++
			}
		}
		return n
	}
	base := announced()
	var recs []*kgo.Record
	for _, seq := range []uint64{2, 3, 3, 1, 6} {
		r := read("bob", seq)
		recs = append(recs, r)
		g.handle(r)
	}
	// 2 and 3 advance read (and delivered, implied): 2 events each; 3
	// again and 1 do nothing; 6 is the latest.
	if n := announced() - base; n != 6 {
		t.Fatalf("%d receipt events, want 6", n)
	}
	if p, _ := st.Pointers(ctx, grp.ConvID, "bob"); p.Read != 0 {
		t.Fatalf("written before the window: %+v", p)
	}

	// A crash now: a new processor on the same store gets the records
	// again from the floor (the first receipt) and announces them again.
	again := newGroupHarness(t, st, Config{Now: now})
	again.handle(recs...)
	if n := len(again.evs.recs); n != 2 {
		t.Fatalf("new owner announced %d receipts, want 2 (read and delivered at 6)", n)
	}
	clock = clock.Add(DefaultReceiptWriteBehind)
	for _, p := range []*Processor{g.p, again.p} {
		if held, err := p.Flush(ctx, false); err != nil || held {
			t.Fatalf("flush: held %v, %v", held, err)
		}
	}
	if p, _ := st.Pointers(ctx, grp.ConvID, "bob"); p.Read != 6 || p.Delivered != 6 {
		t.Fatalf("bob's pointers %+v after the flush, want read and delivered 6", p)
	}
	// Each processor wrote read and delivered once.
	if n := testutil.ToFloat64(g.p.cfg.Metrics.ReceiptWrites); n != 2 {
		t.Errorf("%v pointer writes, want 2", n)
	}

	// The announcement fails: nothing is held; the retry announces.
	fctx, cancel := context.WithCancel(ctx)
	g.evs.fail, g.evs.onFail = true, cancel
	r := read("carol", 4)
	if err := g.p.Handle(fctx, []*kgo.Record{r}); err == nil {
		t.Fatal("Handle succeeded with the events producer down")
	}
	g.evs.fail = false
	floors := map[consume.TopicPartition]kgo.EpochOffset{}
	if g.p.Floors(floors); len(floors) != 0 {
		t.Fatalf("a receipt whose event failed is held: floors %v", floors)
	}
	before := announced()
	g.handle(r)
	if n := announced() - before; n != 2 {
		t.Fatalf("retry announced %d receipts, want 2", n)
	}
	if g.p.Floors(floors); floors[consume.TopicPartition{Topic: "chat.inbound", Partition: 3}].Offset != r.Offset {
		t.Fatalf("floors %v, want carol's receipt at %d", floors, r.Offset)
	}
}

// TestGroupReceiptsWriteThrough: with the write-behind off, group pointers
// are written in the batch's commit.
func TestGroupReceiptsWriteThrough(t *testing.T) {
	st := openStore(t, t.TempDir())
	g := newGroupHarness(t, st, Config{ReceiptWriteBehind: -1})
	grp := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob")})))
	one[*wire.Ack](t, g.handle(g.rec("alice", sendFrame(grp.ConvID, "m"))))
	g.handle(g.rec("bob", &wire.Receipt{ConvID: grp.ConvID, Kind: wire.ReceiptRead, UpToSeq: 2}))
	if p, _ := st.Pointers(context.Background(), grp.ConvID, "bob"); p.Read != 2 {
		t.Fatalf("bob's pointers %+v, want read 2 at once", p)
	}
}

// TestFlushNothingDueAllocatesNothing: consume.Run calls Flush after every
// batch; while no held pointer is due it must cost no allocation (and it
// reads only the oldest held key, not all of them).
func TestFlushNothingDueAllocatesNothing(t *testing.T) {
	p, now := heldProcessor(t, 10_000)
	ctx := context.Background()
	if a := testing.AllocsPerRun(100, func() {
		if held, err := p.Flush(ctx, false); err != nil || !held {
			t.Fatalf("held %v, %v", held, err)
		}
	}); a != 0 {
		t.Fatalf("Flush with nothing due: %v allocations", a)
	}
	*now = now.Add(DefaultReceiptWriteBehind)
	if held, err := p.Flush(ctx, false); err != nil || held {
		t.Fatalf("after the window: held %v, %v", held, err)
	}
}

// BenchmarkFlushNothingDue: the per-batch Flush with 10,000 pointers held
// and none due.
func BenchmarkFlushNothingDue(b *testing.B) {
	p, _ := heldProcessor(b, 10_000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Flush(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
}

// heldProcessor returns a processor holding n group read pointers, and its
// clock.
func heldProcessor(tb testing.TB, n int) (*Processor, *time.Time) {
	clock := time.UnixMilli(1_767_225_600_000)
	p, err := New(Config{Now: func() time.Time { return clock }}, Deps{Store: openStore(tb, tb.TempDir())})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	rec := &kgo.Record{Topic: "chat.inbound", Partition: 1}
	for i := range n {
		rec.Offset = int64(i)
		p.held.hold(&store.PointerUpdate{ConvID: 7, User: fmt.Sprintf("u%05d", i), Kind: wire.ReceiptRead, Seq: 3}, rec, clock)
	}
	return p, &clock
}
