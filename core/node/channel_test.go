package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/core/node"
	"github.com/chatd-dev/chatd/gateway"
	"github.com/chatd-dev/chatd/wire"
)

// TestChannelPull: a group above the pull threshold is a channel. Its
// messages and typing reach only member connections focused on it (after
// the core's CONV proves membership); an unfocused member gets nothing
// live but the message is in the channel's log; a non-member's FOCUS is
// refused and gets nothing; a member removed while focused stops getting
// them; group changes still reach every member.
func TestChannelPull(t *testing.T) {
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.Messages.PullAbove = 2 })
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	carol := connect(t, n, "carol", "phone")
	dave := connect(t, n, "dave", "phone")
	erin := connect(t, n, "erin", "phone") // a member who never looks
	// FOCUS is limited to one per FocusMinGap per connection; the pause
	// respects the limit, it asserts no timing.
	focus := func(c *client, conv uint64) {
		time.Sleep(gateway.FocusMinGap + 50*time.Millisecond)
		c.send((&wire.Focus{ConvID: conv}).Append(nil, 0))
	}
	alice.send((&wire.CreateGroup{ReqID: 1, Name: []byte("news"), Members: [][]byte{[]byte("bob"), []byte("carol"), []byte("erin")}}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)
	ch := alice.dec.Conv.ConvID
	bob.expect(wire.TypeMsg) // the creation is pushed to every member
	carol.expect(wire.TypeMsg)
	erin.expect(wire.TypeMsg)

	focus(bob, ch)
	bob.expect(wire.TypeConv)
	if c := bob.dec.Conv; c.ConvID != ch || c.ReqID != 0 || c.LastSeq != 1 || c.MemberTotal != 4 {
		t.Fatalf("bob's FOCUS answered %+v", c)
	}
	focus(dave, ch)
	dave.expect(wire.TypeError)
	if e := dave.dec.Error; e.Code != wire.CodeNotMember || e.ConvID != ch {
		t.Fatalf("dave's FOCUS answered %+v", e)
	}

	alice.send(sendFrame(ch, "m1", "hello channel"))
	alice.expect(wire.TypeAck, wire.TypeMsg, wire.TypeConv)
	bob.expect(wire.TypeMsg)
	if m := bob.dec.Msg; m.ConvID != ch || m.Seq != 2 || string(m.Body) != "hello channel" {
		t.Fatalf("bob got %+v", m)
	}
	carol.noMoreFrames()
	dave.noMoreFrames()
	alice.noMoreFrames()

	// Carol opens it too; bob's typing reaches her, not bob.
	focus(carol, ch)
	carol.expect(wire.TypeConv)
	if carol.dec.Conv.LastSeq != 2 {
		t.Fatalf("carol's CONV says last seq %d, want 2 (she fetches what she missed)", carol.dec.Conv.LastSeq)
	}
	bob.send((&wire.Typing{ConvID: ch, State: wire.TypingStarted}).Append(nil, 0))
	carol.expect(wire.TypeTyping)
	if string(carol.dec.Typing.User) != "bob" {
		t.Fatalf("typing from %q", carol.dec.Typing.User)
	}
	bob.noMoreFrames()

	// Alice removes carol while she is focused: carol hears of it (a
	// group change, pushed), and nothing of the channel after it.
	alice.send((&wire.GroupChange{ReqID: 2, ConvID: ch, Op: wire.GroupRemove, Users: [][]byte{[]byte("carol")}}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)
	carol.expect(wire.TypeMsg)
	bob.expect(wire.TypeMsg)
	erin.expect(wire.TypeMsg)
	alice.send(sendFrame(ch, "m2", "after carol"))
	alice.expect(wire.TypeAck, wire.TypeMsg)
	bob.expect(wire.TypeMsg)
	if string(bob.dec.Msg.Body) != "after carol" {
		t.Fatalf("bob got %q", bob.dec.Msg.Body)
	}
	carol.noMoreFrames()

	// Bob looks elsewhere: nothing more reaches him live.
	focus(bob, 0)
	alice.send(sendFrame(ch, "m3", "unseen"))
	alice.expect(wire.TypeAck, wire.TypeMsg)
	bob.noMoreFrames()
	erin.noMoreFrames()

	// Erin, who never looked, finds every message in the channel's log.
	tok, err := bench.DevToken(context.Background(), n.APIURL(), "erin", "web")
	if err != nil {
		t.Fatal(err)
	}
	status, body := get(t, fmt.Sprintf("%s/api/v1/conversations/%d/messages", n.APIURL(), ch), tok)
	if status != http.StatusOK {
		t.Fatalf("history: %d %s", status, body)
	}
	for _, want := range []string{"hello channel", "after carol", "unseen"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("erin's history lacks %q: %s", want, body)
		}
	}
}
