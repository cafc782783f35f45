package messages

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/snowflake"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Unit tests of the processor alone: a real Pebble store on a temp dir, the
// in-memory router, and a recording event producer standing in for Kafka
// (the end-to-end tests in core/node run it against kfake).

type recordingEvents struct {
	mu   sync.Mutex
	recs []*kgo.Record
	fail bool
	// onFail, if set, runs on each failed produce (a test cancels the
	// handler's context there to make Handle give up).
	onFail func()
}

func (r *recordingEvents) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(kgo.ProduceResults, len(rs))
	for i, rec := range rs {
		out[i].Record = rec
		if r.fail {
			out[i].Err = errors.New("broker down")
			if r.onFail != nil {
				r.onFail()
			}
			continue
		}
		r.recs = append(r.recs, rec)
	}
	return out
}

func (r *recordingEvents) msgs() (ids []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d wire.Decoder
	for _, rec := range r.recs {
		kind, body, _ := events.Split(rec.Value)
		if kind == events.KindMsg {
			if _, _, err := d.Decode(body); err == nil {
				ids = append(ids, d.Msg.MessageID)
			}
		}
	}
	return ids
}

// failingStore fails Commit while fail is set.
type failingStore struct {
	store.Store
	fail bool
}

func (f *failingStore) Commit(ctx context.Context, b *store.Batch) error {
	if f.fail {
		return errors.New("disk on fire")
	}
	return f.Store.Commit(ctx, b)
}

type harness struct {
	t      *testing.T
	st     *failingStore
	router *routing.Memory
	evs    *recordingEvents
	p      *Processor
	mu     sync.Mutex
	frames [][]byte // frames routed to gateway "gw"
}

func newHarness(t *testing.T, st store.Store) *harness {
	h := &harness{t: t, st: &failingStore{Store: st}, router: routing.NewMemory(), evs: &recordingEvents{}}
	ids, err := snowflake.New(1)
	if err != nil {
		t.Fatal(err)
	}
	h.p, err = New(Config{}, Deps{Store: h.st, Router: h.router, IDs: ids, Events: h.evs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.p.Close)
	stop, _ := h.router.Subscribe("gw", func(b []byte) {
		_, frame, err := wire.DecodeBatch(b, nil)
		if err != nil {
			t.Errorf("bad batch: %v", err)
		}
		h.mu.Lock()
		h.frames = append(h.frames, append([]byte(nil), frame...))
		h.mu.Unlock()
	})
	t.Cleanup(stop)
	return h
}

func openStore(t testing.TB, dir string) store.Store {
	st, err := store.OpenPebble(dir, store.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func record(user string, frame []byte) *kgo.Record {
	e := wire.Envelope{Gateway: []byte("gw"), Conn: 1, User: []byte(user), Device: []byte("d"), Frame: frame}
	return &kgo.Record{Value: e.Append(nil)}
}

func sendRec(user string, conv uint64, cmid string) *kgo.Record {
	s := wire.Send{ConvID: conv, ClientMsgID: []byte(cmid), Kind: wire.KindText, Body: []byte("body " + cmid)}
	return record(user, s.Append(nil, 0))
}

// acks returns the seqs of the ACK frames routed so far, in order, and
// clears the frame log.
func (h *harness) acks() (seqs []uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var d wire.Decoder
	for _, f := range h.frames {
		if t, _, err := d.Decode(f); err == nil && t == wire.TypeAck {
			seqs = append(seqs, d.Ack.Seq)
		}
	}
	h.frames = nil
	return seqs
}

func setupConv(t *testing.T, st store.Store) uint64 {
	c, err := EnsureDirect(context.Background(), st, "alice", "bob", uint64(time.Now().UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

func TestSeqContinuesAcrossProcessors(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	conv := setupConv(t, st)
	ctx := context.Background()
	h := newHarness(t, st)
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "1"), sendRec("bob", conv, "2")}); err != nil {
		t.Fatal(err)
	}
	if got := h.acks(); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("acks %v", got)
	}
	// A new owner (rebalance or restart) reads the last seq from the store.
	h2 := newHarness(t, st)
	if err := h2.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "3")}); err != nil {
		t.Fatal(err)
	}
	if got := h2.acks(); fmt.Sprint(got) != "[3]" {
		t.Fatalf("acks after takeover %v", got)
	}
}

// TestZombieCoreFenced: a core that lost its partition without knowing it
// (paused, or cut off from the broker) still holds a stale seq cache and a
// batch. Meanwhile the new owner stored messages. The zombie's commit must
// be refused, not overwrite them; its retry continues after them and
// answers a record both cores handled with the stored message.
func TestZombieCoreFenced(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	zombie, owner := newHarness(t, st), newHarness(t, st)
	if err := zombie.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "a")}); err != nil {
		t.Fatal(err)
	}
	zombie.acks()
	// The partition moved: the new owner re-reads from the last committed
	// offset and handles "b" and "c".
	shared := sendRec("alice", conv, "b")
	if err := owner.p.Handle(ctx, []*kgo.Record{shared, sendRec("bob", conv, "c")}); err != nil {
		t.Fatal(err)
	}
	if got := owner.acks(); fmt.Sprint(got) != "[2 3]" {
		t.Fatalf("owner acks %v", got)
	}
	stored, err := st.MessagesAfter(ctx, conv, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The zombie wakes up with its cache at seq 1 and a batch of its own.
	batch := []*kgo.Record{shared, sendRec("alice", conv, "d")}
	err = zombie.p.Handle(ctx, batch)
	if !errors.Is(err, store.ErrSeqConflict) {
		t.Fatalf("zombie's Handle = %v, want ErrSeqConflict", err)
	}
	if n := testutil.ToFloat64(zombie.p.cfg.Metrics.SeqConflicts); n != 1 {
		t.Errorf("seq conflicts = %v, want 1", n)
	}
	if got := zombie.acks(); len(got) != 0 {
		t.Fatalf("refused batch acknowledged %v", got)
	}
	after, err := st.MessagesAfter(ctx, conv, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(stored) {
		t.Fatalf("the refused batch changed the store:\n%v\nwant\n%v", after, stored)
	}
	// consume.Run retries the batch: "b" is the owner's message, re-ACKed
	// with its seq and id; "d" follows the owner's messages.
	if err := zombie.p.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := zombie.acks(); fmt.Sprint(got) != "[2 4]" {
		t.Fatalf("zombie acks after reload %v, want [2 4]", got)
	}
	m, ok, err := st.LookupClientMsg(ctx, conv, "alice", "b")
	if err != nil || !ok || m.MessageID != stored[1].MessageID {
		t.Fatalf("b is %v %v %v, want the owner's message %d", m, ok, err, stored[1].MessageID)
	}
	final, err := st.MessagesAfter(ctx, conv, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var cmids []string
	for i, m := range final {
		if m.Seq != uint64(i+1) {
			t.Fatalf("seq %d at position %d", m.Seq, i)
		}
		cmids = append(cmids, m.ClientMsgID)
	}
	if fmt.Sprint(cmids) != "[a b c d]" {
		t.Fatalf("stored %v, want [a b c d]", cmids)
	}
}

func TestFailedCommitReusesNoSeq(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	h := newHarness(t, st)
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "a")}); err != nil {
		t.Fatal(err)
	}
	h.st.fail = true
	batch := []*kgo.Record{sendRec("alice", conv, "b"), sendRec("alice", conv, "c")}
	if err := h.p.Handle(ctx, batch); err == nil {
		t.Fatal("commit failure not reported")
	}
	h.st.fail = false
	// consume.Run retries the same batch: the seqs are 2 and 3, not 4 and 5.
	if err := h.p.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := h.acks(); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("acks %v", got)
	}
	last, _ := st.LastSeq(ctx, conv)
	if last != 3 {
		t.Fatalf("last seq %d", last)
	}
}

func TestDedupeInBatchAndAcrossBatches(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	h := newHarness(t, st)
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "x"), sendRec("alice", conv, "x"), sendRec("bob", conv, "x")}); err != nil {
		t.Fatal(err)
	}
	// Same client_msg_id from another sender is another message.
	if got := h.acks(); fmt.Sprint(got) != "[1 1 2]" {
		t.Fatalf("acks %v", got)
	}
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "x")}); err != nil {
		t.Fatal(err)
	}
	if got := h.acks(); fmt.Sprint(got) != "[1]" {
		t.Fatalf("resend acks %v", got)
	}
	// Emitted once per message while this process runs.
	if got := h.evs.msgs(); len(got) != 2 {
		t.Fatalf("emitted %d message events, want 2", len(got))
	}
	// A new process (after a crash between commit and emit, say) re-emits
	// on the first resend it sees.
	h2 := newHarness(t, st)
	if err := h2.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "x")}); err != nil {
		t.Fatal(err)
	}
	if got := h2.evs.msgs(); len(got) != 1 {
		t.Fatalf("re-emitted %d, want 1", len(got))
	}
}

func TestEventFailureRetriesWithoutDuplicates(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	h := newHarness(t, st)
	h.evs.fail = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "e")}) }()
	// The processor keeps retrying the produce; it gives up only when its
	// context ends (shutdown), and the batch is then re-delivered.
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("expected an error after cancel")
	}
	h.evs.fail = false
	if err := h.p.Handle(context.Background(), []*kgo.Record{sendRec("alice", conv, "e")}); err != nil {
		t.Fatal(err)
	}
	last, _ := st.LastSeq(context.Background(), conv)
	if last != 1 {
		t.Fatalf("stored %d messages, want 1", last)
	}
	if got := h.evs.msgs(); len(got) != 1 {
		t.Fatalf("emitted %d events, want 1", len(got))
	}
}

func TestReceiptPointers(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	h := newHarness(t, st)
	rc := func(seq uint64, kind wire.ReceiptKind) *kgo.Record {
		r := wire.Receipt{ConvID: conv, Kind: kind, UpToSeq: seq}
		return record("bob", r.Append(nil, 0))
	}
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "1"), sendRec("alice", conv, "2"), rc(2, wire.ReceiptRead), rc(1, wire.ReceiptRead)}); err != nil {
		t.Fatal(err)
	}
	p, _ := st.Pointers(ctx, conv, "bob")
	if p.Read != 2 || p.Delivered != 2 {
		t.Fatalf("pointers %+v, want read 2 delivered 2 (read implies delivered, never lowered)", p)
	}
	// Receipt events: delivered and read advanced once each.
	h.evs.mu.Lock()
	n := 0
	for _, r := range h.evs.recs {
		if k, _, _ := events.Split(r.Value); k == events.KindReceipt {
			n++
		}
	}
	h.evs.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d receipt events, want 2", n)
	}
}

// TestSendImpliesRead: a sender's Seen pointer moves up to its own message
// in the same commit, without a receipt event and without counting as a
// receipt write; the read pointer is untouched, so a later read receipt for
// earlier messages still advances it and is announced.
func TestSendImpliesRead(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	h := newHarness(t, st)
	receipts := func() (out []events.Receipt) {
		h.evs.mu.Lock()
		defer h.evs.mu.Unlock()
		for _, r := range h.evs.recs {
			if k, body, _ := events.Split(r.Value); k == events.KindReceipt {
				var e events.Receipt
				if err := e.Decode(body); err != nil {
					t.Fatal(err)
				}
				out = append(out, e)
			}
		}
		h.evs.recs = nil
		return out
	}
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "1"), sendRec("bob", conv, "2"), sendRec("alice", conv, "3")}); err != nil {
		t.Fatal(err)
	}
	pa, _ := st.Pointers(ctx, conv, "alice")
	pb, _ := st.Pointers(ctx, conv, "bob")
	if pa != (store.Pointers{Seen: 3}) || pb != (store.Pointers{Seen: 2}) {
		t.Fatalf("alice %+v bob %+v, want seen 3 and 2, nothing else", pa, pb)
	}
	if r := receipts(); len(r) != 0 {
		t.Fatalf("implied reads produced receipt events %+v", r)
	}
	if w, i := testutil.ToFloat64(h.p.cfg.Metrics.ReceiptWrites), testutil.ToFloat64(h.p.cfg.Metrics.ImpliedReads); w != 0 || i != 2 {
		t.Fatalf("receipt writes %v implied %v, want 0 and 2", w, i)
	}
	// Bob reads alice's first message after having written seq 2: the
	// read pointer still moves, and alice hears of it.
	rd := wire.Receipt{ConvID: conv, Kind: wire.ReceiptRead, UpToSeq: 1}
	if err := h.p.Handle(ctx, []*kgo.Record{record("bob", rd.Append(nil, 0)), sendRec("bob", conv, "4")}); err != nil {
		t.Fatal(err)
	}
	pb, _ = st.Pointers(ctx, conv, "bob")
	if pb != (store.Pointers{Delivered: 1, Read: 1, Seen: 4}) {
		t.Fatalf("bob %+v, want delivered 1 read 1 seen 4", pb)
	}
	var reads []uint64
	for _, e := range receipts() {
		if e.Kind == wire.ReceiptRead {
			reads = append(reads, e.Seq)
		}
	}
	if len(reads) != 1 || reads[0] != 1 {
		t.Fatalf("read events %v, want one at 1", reads)
	}
}

// TestOpenDirectBatched: OPEN_DIRECTs create their conversations in the
// batch's one commit; a SEND later in the same batch already finds it; the
// same pair twice gets the same conversation.
func TestOpenDirectBatched(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	h := newHarness(t, st)
	od := func(user, peer string, req uint64) *kgo.Record {
		o := wire.OpenDirect{ReqID: req, Peer: []byte(peer)}
		return record(user, o.Append(nil, 0))
	}
	conv := DirectID("alice", "bob")
	if err := h.p.Handle(ctx, []*kgo.Record{od("alice", "bob", 1), od("bob", "alice", 2), sendRec("alice", conv, "m1")}); err != nil {
		t.Fatal(err)
	}
	var d wire.Decoder
	var convs, acks int
	h.mu.Lock()
	for _, f := range h.frames {
		switch typ, _, _ := d.Decode(f); typ {
		case wire.TypeConv:
			convs++
			if d.Conv.ConvID != conv || len(d.Conv.Members) != 2 {
				t.Fatalf("CONV %+v", d.Conv)
			}
		case wire.TypeAck:
			acks++
		case wire.TypeError:
			t.Fatalf("ERROR %v", d.Error.Code)
		}
	}
	h.mu.Unlock()
	if convs != 2 || acks != 1 {
		t.Fatalf("%d CONV, %d ACK", convs, acks)
	}
	c, err := st.Conversation(ctx, conv)
	if err != nil || c.Members[0] != "alice" || c.Members[1] != "bob" {
		t.Fatalf("stored %+v %v", c, err)
	}
}

// TestBatchAcrossPartitions feeds one batch interleaving several
// partitions and conversations: every conversation gets gapless seqs in its
// records' order, every SEND one ACK, every message one event, and an
// in-batch resend is answered once.
func TestBatchAcrossPartitions(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	h := newHarness(t, st)
	const convs, perConv = 6, 20
	ids := make([]uint64, convs)
	for i := range ids {
		c, err := EnsureDirect(ctx, st, "alice", fmt.Sprintf("bob%d", i), 1)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = c.ID
	}
	var recs []*kgo.Record
	for k := range perConv {
		for i, id := range ids {
			r := sendRec("alice", id, fmt.Sprintf("c%d-%d", i, k))
			r.Partition = int32(i % 3)
			recs = append(recs, r)
		}
	}
	dup := sendRec("alice", ids[0], "c0-0") // resent in the same batch
	dup.Partition = 0
	recs = append(recs, dup)
	if err := h.p.Handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if got := len(h.acks()); got != convs*perConv+1 {
		t.Errorf("%d ACKs, want %d", got, convs*perConv+1)
	}
	if got := len(h.evs.msgs()); got != convs*perConv {
		t.Errorf("%d message events, want %d", got, convs*perConv)
	}
	for i, id := range ids {
		ms, err := st.MessagesAfter(ctx, id, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != perConv {
			t.Fatalf("conv %d: %d messages stored, want %d", i, len(ms), perConv)
		}
		for k, m := range ms {
			if want := fmt.Sprintf("c%d-%d", i, k); m.Seq != uint64(k+1) || m.ClientMsgID != want {
				t.Errorf("conv %d: message %d has seq %d cmid %q, want seq %d cmid %q", i, k, m.Seq, m.ClientMsgID, k+1, want)
			}
		}
	}
}

// countingStore counts the dedupe lookups the processor makes.
type countingStore struct {
	store.Store
	one, many atomic.Int64
}

func (c *countingStore) LookupClientMsg(ctx context.Context, conv uint64, sender, cmid string) (store.Message, bool, error) {
	c.one.Add(1)
	return c.Store.LookupClientMsg(ctx, conv, sender, cmid)
}

func (c *countingStore) LookupClientMsgs(ctx context.Context, keys []store.ClientMsgKey) ([]store.ClientMsgResult, error) {
	c.many.Add(1)
	return c.Store.LookupClientMsgs(ctx, keys)
}

// TestSendsOfABatchLookedUpTogether: the SENDs of one polled batch are
// checked against the dedupe entries with one store call (a remote store
// answers it in one round trip), and the answers are the ones a lookup per
// SEND gave: a resend gets its stored seq, a repeat within the batch the
// first one's, a new id a new seq.
func TestSendsOfABatchLookedUpTogether(t *testing.T) {
	st := openStore(t, t.TempDir())
	conv := setupConv(t, st)
	ctx := context.Background()
	cs := &countingStore{Store: st}
	h := newHarness(t, cs)
	if err := h.p.Handle(ctx, []*kgo.Record{sendRec("alice", conv, "x")}); err != nil {
		t.Fatal(err)
	}
	h.acks()
	cs.one.Store(0)
	cs.many.Store(0)
	batch := []*kgo.Record{
		sendRec("alice", conv, "y"),
		sendRec("alice", conv, "x"), // a resend of seq 1
		sendRec("alice", conv, "y"), // a repeat within the batch
		sendRec("alice", conv, "z"),
		sendRec("bob", conv, "x"), // another sender's id
	}
	if err := h.p.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := h.acks(); fmt.Sprint(got) != "[2 1 2 3 4]" {
		t.Fatalf("acks %v, want [2 1 2 3 4]", got)
	}
	if one, many := cs.one.Load(), cs.many.Load(); one != 0 || many != 1 {
		t.Errorf("%d single and %d batch lookups for one batch of SENDs, want 0 and 1", one, many)
	}
}
