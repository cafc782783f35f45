package gateway

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// TestFocusFloodLimited: FOCUS on a conversation goes to the core at most
// once per FocusMinGap per connection; more get rate_limited (the focus
// stays), FOCUS 0 is never limited nor produced.
func TestFocusFloodLimited(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "bob", "phone")
	for conv := uint64(1); conv <= 5; conv++ {
		c.send(&wire.Focus{ConvID: conv})
	}
	for range 4 {
		if got := c.expectError(wire.CodeRateLimited); got.RefType != wire.TypeFocus || got.ConvID < 2 {
			t.Fatalf("flood: %+v", got)
		}
	}
	c.send(&wire.Focus{})
	c.send(&wire.Focus{})
	c.ping(1) // no ERROR before the PONG
	if n := e.prod.count(); n != 1 {
		t.Fatalf("%d FOCUS produced, want 1", n)
	}
}

// TestPresenceToFocusedWatchers: an exact PRESENCE answering a FOCUS makes
// the connection a watcher; the peer's connecting and disconnecting then
// reach it while it stays focused, and nothing reaches a connection that
// got a coarse answer, unfocused, or focuses elsewhere.
func TestPresenceToFocusedWatchers(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(_ *Config, d *Deps) { d.Presence = d.Registry.(routing.Presence) })
	phone := login(t, e, "bob", "phone")
	laptop := login(t, e, "bob", "laptop")
	phone.send(&wire.Focus{ConvID: 9})
	laptop.send(&wire.Focus{ConvID: 9})
	phone.ping(1)
	laptop.ping(2)
	// The core's answers (made up here): exact for the phone, coarse for
	// the laptop, and one for a conversation the phone left already.
	pid, lid := e.connID(t, "bob", "phone"), e.connID(t, "bob", "laptop")
	e.publish(t, []uint64{pid}, (&wire.Presence{ConvID: 8, User: []byte("carol")}).Append(nil, 0))
	e.publish(t, []uint64{pid}, (&wire.Presence{ConvID: 9, User: []byte("alice"), LastSeenMS: 5}).Append(nil, 0))
	e.publish(t, []uint64{lid}, (&wire.Presence{ConvID: 9, User: []byte("alice"), Approx: wire.ApproxRecently}).Append(nil, 0))
	phone.expect(wire.TypePresence) // the stale carol answer was dropped
	if p := phone.dec.Presence; p.ConvID != 9 || string(p.User) != "alice" || p.Online {
		t.Fatalf("phone's first PRESENCE %+v", p)
	}
	laptop.expect(wire.TypePresence)
	// The phone watches alice: the gateway holds alice's presence topic
	// (joined by runTopics, after the answer), and announcements go there,
	// not to every gateway.
	eventually(t, "alice's presence topic held", func() bool {
		return e.metric("chatd_gateway_presence_topics", "", "") == 1
	})
	var broadcasts atomic.Int32
	stopSpy, _ := e.mem.Subscribe(routing.AllGateways, func([]byte) { broadcasts.Add(1) })
	defer stopSpy()

	alice := login(t, e, "alice", "web")
	phone.expect(wire.TypePresence)
	if p := phone.dec.Presence; p.ConvID != 9 || string(p.User) != "alice" || !p.Online {
		t.Fatalf("on alice's login %+v", p)
	}
	before := time.Now().UnixMilli()
	alice.conn.Close()
	phone.expect(wire.TypePresence)
	if p := phone.dec.Presence; p.Online || int64(p.LastSeenMS) < before {
		t.Fatalf("on alice's logout %+v, want offline, last seen after %d", p, before)
	}
	laptop.ping(3) // the next frame: the coarse watcher got no change

	// Unfocused: no more changes, and the topic is left.
	phone.send(&wire.Focus{})
	phone.ping(4)
	eventually(t, "alice's presence topic left", func() bool {
		return e.metric("chatd_gateway_presence_topics", "", "") == 0
	})
	login(t, e, "alice", "web")
	phone.ping(5)
	if n := e.metric("chatd_gateway_presence_changes_sent_total", "", ""); n != 2 {
		t.Fatalf("presence changes sent %v, want 2", n)
	}
	if n := broadcasts.Load(); n != 0 {
		t.Fatalf("%d presence announcements went to every gateway", n)
	}
}
