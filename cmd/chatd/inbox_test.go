package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// TestInboxWithSDK: the SDK's Inbox through chatd's API. A read on Bob's
// phone reaches his laptop at once as his own read receipt (the badge
// clears live) and lowers the unread count every device's inbox shows.
func TestInboxWithSDK(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, _ := newClient(t, s, "alice", "phone", nil)
	phone, pr := newClient(t, s, "bob", "phone", nil)
	laptop, lr := newClient(t, s, "bob", "laptop", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := alice.SendWait(ctx, conv.ID, wire.KindText, fmt.Appendf(nil, "hi %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A later server millisecond for the group keeps the recency order
	// unambiguous; the pause orders events, it asserts no timing.
	time.Sleep(3 * time.Millisecond)
	g, err := alice.CreateGroup(ctx, "hikers", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	pr.waitUntil(t, "the phone's messages", func() bool { return len(pr.msgs) >= 4 })

	inbox := func(c *sdk.Client) string {
		t.Helper()
		var out string
		for cursor := ""; ; {
			page, err := c.Inbox(ctx, cursor, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				out += fmt.Sprintf("[%d %s%s unread %d last %s]", e.Conv, e.Name, e.Peer, e.Unread, e.Last.Sender)
			}
			if cursor = page.Next; cursor == "" {
				return out
			}
		}
	}
	want := fmt.Sprintf("[%d hikers unread 1 last alice][%d alice unread 3 last alice]", g.ID, conv.ID)
	if got := inbox(laptop); got != want {
		t.Fatalf("laptop inbox %s, want %s", got, want)
	}

	phone.MarkRead(conv.ID, 3)
	lr.waitUntil(t, "the phone's read on the laptop", func() bool { return lr.receipts[wire.ReceiptRead] == 3 })
	want = fmt.Sprintf("[%d hikers unread 1 last alice][%d alice unread 0 last alice]", g.ID, conv.ID)
	for _, c := range []*sdk.Client{phone, laptop} {
		if got := inbox(c); got != want {
			t.Fatalf("inbox after the read %s, want %s", got, want)
		}
	}
	// Bob replies in the group from the laptop: his own message moves the
	// group to the top without counting as unread.
	if _, err := laptop.SendWait(ctx, g.ID, wire.KindText, []byte("count me in")); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprintf("[%d hikers unread 0 last bob][%d alice unread 0 last alice]", g.ID, conv.ID)
	if got := inbox(phone); got != want {
		t.Fatalf("inbox after the reply %s, want %s", got, want)
	}
	if _, err := phone.Inbox(ctx, "not-a-cursor", 0); !isCode(err, wire.CodeInvalidArgument) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func isCode(err error, code wire.Code) bool {
	var se *sdk.ServerError
	return errors.As(err, &se) && se.Code == code
}
