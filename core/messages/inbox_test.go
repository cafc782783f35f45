package messages

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// fillInbox gives alice n direct conversations (peer i sent i%5+1
// messages to conversation i, at time i) and reads up to 1 in each.
func fillInbox(tb testing.TB, st store.Store, n int) {
	ctx := context.Background()
	var b store.Batch
	for i := range n {
		c := DirectConversation("alice", fmt.Sprintf("peer%04d", i), 1)
		b.Conversations = append(b.Conversations, c)
		for s := range i%5 + 1 {
			b.Messages = append(b.Messages, store.Message{
				ConvID: c.ID, MessageID: uint64(i*10 + s + 1), Seq: uint64(s + 1), ServerTimeMS: uint64(1000 + i),
				Sender: fmt.Sprintf("peer%04d", i), SenderDevice: "d", Kind: wire.KindText, Body: []byte("hello"),
			})
		}
		b.Pointers = append(b.Pointers, store.PointerUpdate{ConvID: c.ID, User: "alice", Kind: wire.ReceiptRead, Seq: 1})
	}
	if err := st.Commit(ctx, &b); err != nil {
		tb.Fatal(err)
	}
}

func TestInboxOrderAndUnread(t *testing.T) {
	st := openStore(t, t.TempDir())
	fillInbox(t, st, 20)
	in, err := Inbox(context.Background(), st, nil, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 20 {
		t.Fatalf("%d entries", len(in))
	}
	for k, e := range in {
		i := 19 - k // latest first: peer 19 wrote last
		if want := uint64(i%5 + 1); e.LastSeq != want || e.Unread != want-1 || e.ReadSeq != 1 ||
			e.Last == nil || e.Last.Seq != want || e.ActivityMS != uint64(1000+i) || e.Conv.Members[1] != fmt.Sprintf("peer%04d", i) {
			t.Fatalf("entry %d: %+v", k, e)
		}
		if k > 0 && InboxAfter(&in[k-1], e.ActivityMS, e.Conv.ID) {
			t.Fatalf("entry %d sorts before its predecessor", k)
		}
	}
	if empty, err := Inbox(context.Background(), st, nil, "nobody"); err != nil || len(empty) != 0 {
		t.Fatalf("stranger's inbox %v %v", empty, err)
	}
}

// TestInboxGroupReadFromCounters: a group read held back from the store
// (write-behind) already counts in the inbox through the receipt counters;
// direct conversations and a failing counter keep the store's pointers.
func TestInboxGroupReadFromCounters(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	g := newGroupHarness(t, st, Config{})
	grp := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob")})))
	for i := range 3 {
		one[*wire.Ack](t, g.handle(g.rec("alice", sendFrame(grp.ConvID, fmt.Sprint("m", i)))))
	}
	g.handle(g.rec("bob", &wire.Receipt{ConvID: grp.ConvID, Kind: wire.ReceiptRead, UpToSeq: 3}))
	unread := func(rc routing.ReceiptCounter) uint64 {
		t.Helper()
		in, err := Inbox(ctx, st, rc, "bob")
		if err != nil || len(in) != 1 {
			t.Fatalf("inbox %v, %v", in, err)
		}
		return in[0].Unread
	}
	// Held: the store still has bob just before the group's creation
	// message (seq 1), so all four messages count.
	if n := unread(nil); n != 4 {
		t.Fatalf("unread from the store alone %d, want 4", n)
	}
	counters := routing.NewMemory()
	if err := counters.AdvanceReceipts(ctx, []routing.ReceiptAdvance{{Conv: grp.ConvID, User: "bob", Kind: routing.ReceiptRead, Seq: 3}}); err != nil {
		t.Fatal(err)
	}
	if n := unread(counters); n != 1 {
		t.Fatalf("unread with the counters %d, want 1 (seq 4 after bob's read 3)", n)
	}
	if n := unread(failingCounter{counters}); n != 4 {
		t.Fatalf("unread with failing counters %d, want the store's 4", n)
	}
}

type failingCounter struct{ routing.ReceiptCounter }

func (failingCounter) ReceiptPointers(context.Context, string, routing.ReceiptKind, []uint64, []uint64) ([]uint64, error) {
	return nil, errors.New("redis down")
}

// BenchmarkInbox1000: the inbox of a user with 1,000 conversations, read
// whole from Pebble (three rows per conversation) and sorted.
func BenchmarkInbox1000(b *testing.B) {
	st, err := store.OpenPebble(b.TempDir(), store.PebbleOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fillInbox(b, st, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if in, err := Inbox(ctx, st, nil, "alice"); err != nil || len(in) != 1000 {
			b.Fatal(len(in), err)
		}
	}
}
