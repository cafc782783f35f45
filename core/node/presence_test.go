package node_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/gateway"
	"github.com/chatd-dev/chatd/wire"
)

// TestPresenceFrames, through the whole node: a FOCUS on a direct
// conversation is answered with the peer's PRESENCE; while focused, the
// peer going offline and online again arrives as it happens; a peer whose
// setting is "nobody" is answered coarsely and its changes are not sent;
// FOCUS on a conversation one is not in, or that does not exist, gets a
// coded ERROR.
func TestPresenceFrames(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	alice := connect(t, n, "alice", "phone")
	conv := alice.openDirect("bob")
	bob := connect(t, n, "bob", "phone")
	// FOCUS on a conversation is limited to one per FocusMinGap; the
	// pause respects the limit, it asserts no timing.
	focus := func(c *client, conv uint64) {
		time.Sleep(gateway.FocusMinGap + 50*time.Millisecond)
		c.send((&wire.Focus{ConvID: conv}).Append(nil, 0))
	}
	presence := func(c *client) wire.Presence {
		t.Helper()
		c.expect(wire.TypePresence, wire.TypeConv, wire.TypeMsg)
		return c.dec.Presence
	}
	focus(bob, conv)
	if p := presence(bob); p.ConvID != conv || string(p.User) != "alice" || !p.Online || p.Approx != wire.ApproxExact {
		t.Fatalf("on FOCUS: %+v", p)
	}
	before := time.Now().UnixMilli()
	alice.conn.Close()
	if p := presence(bob); p.Online || int64(p.LastSeenMS) < before {
		t.Fatalf("alice left: %+v", p)
	}
	alice = connect(t, n, "alice", "phone")
	if p := presence(bob); !p.Online {
		t.Fatalf("alice back: %+v", p)
	}

	// Alice hides her presence: bob's next FOCUS gets "recently", and her
	// leaving is not told.
	tokA, err := bench.DevToken(ctx, n.APIURL(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := do(t, http.MethodPut, n.APIURL()+"/api/v1/settings", tokA, `{"presence_visibility":"nobody"}`); status != http.StatusOK {
		t.Fatalf("PUT settings: %d %s", status, body)
	}
	focus(bob, conv)
	if p := presence(bob); p.Online || p.LastSeenMS != 0 || p.Approx != wire.ApproxRecently {
		t.Fatalf("nobody: %+v", p)
	}
	alice.conn.Close()

	carol := connect(t, n, "carol", "phone")
	focus(carol, conv)
	carol.expect(wire.TypeError)
	if e := carol.dec.Error; e.Code != wire.CodeNotMember || e.RefType != wire.TypeFocus || e.ConvID != conv {
		t.Fatalf("stranger's FOCUS: %+v", e)
	}
	focus(carol, 12345)
	carol.expect(wire.TypeError)
	if e := carol.dec.Error; e.Code != wire.CodeConvNotFound {
		t.Fatalf("FOCUS on nothing: %+v", e)
	}
	// Nothing more for bob: a PING's PONG is the next frame.
	bob.send((&wire.Ping{Nonce: 7}).Append(nil, 0))
	bob.expect(wire.TypePong)
}
