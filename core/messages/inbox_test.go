package messages

import (
	"context"
	"fmt"
	"testing"

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
	in, err := Inbox(context.Background(), st, "alice")
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
	if empty, err := Inbox(context.Background(), st, "nobody"); err != nil || len(empty) != 0 {
		t.Fatalf("stranger's inbox %v %v", empty, err)
	}
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
		if in, err := Inbox(ctx, st, "alice"); err != nil || len(in) != 1000 {
			b.Fatal(len(in), err)
		}
	}
}
