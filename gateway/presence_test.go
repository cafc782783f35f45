package gateway

import (
	"context"
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

// TestPresenceWatchConfirmed: a FOCUS answer that a change overtook (here:
// "alice offline" while alice is connected, the change having happened
// between the core's read and the watch) is corrected once the gateway
// holds alice's topic; an answer that is still right gets no second frame.
func TestPresenceWatchConfirmed(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(_ *Config, d *Deps) { d.Presence = d.Registry.(routing.Presence) })
	login(t, e, "alice", "web") // online before bob's answer is made
	phone := login(t, e, "bob", "phone")
	phone.send(&wire.Focus{ConvID: 9})
	phone.ping(1)
	pid := e.connID(t, "bob", "phone")
	e.publish(t, []uint64{pid}, (&wire.Presence{ConvID: 9, User: []byte("alice"), LastSeenMS: 5}).Append(nil, 0))
	phone.expect(wire.TypePresence)
	if p := phone.dec.Presence; p.Online {
		t.Fatalf("the made-up answer %+v", p)
	}
	phone.expect(wire.TypePresence)
	if p := phone.dec.Presence; p.ConvID != 9 || string(p.User) != "alice" || !p.Online {
		t.Fatalf("confirmation %+v, want alice online in conversation 9", p)
	}

	// Carol's answer is right (offline, never seen): confirmed without a
	// frame, so the next frame is the answer to the ping after her login.
	laptop := login(t, e, "bob", "laptop")
	laptop.send(&wire.Focus{ConvID: 10})
	laptop.ping(2)
	lid := e.connID(t, "bob", "laptop")
	e.publish(t, []uint64{lid}, (&wire.Presence{ConvID: 10, User: []byte("carol")}).Append(nil, 0))
	laptop.expect(wire.TypePresence)
	eventually(t, "carol's presence topic held", func() bool {
		return e.metric("chatd_gateway_presence_topics", "", "") == 2
	})
	login(t, e, "carol", "web")
	laptop.expect(wire.TypePresence)
	if p := laptop.dec.Presence; p.ConvID != 10 || string(p.User) != "carol" || !p.Online {
		t.Fatalf("on carol's login %+v, want online (and no confirmation before it)", p)
	}
}

// heldPresence answers Presence for held users only when released, and
// then with online, whatever the registry says.
type heldPresence struct {
	called  chan struct{}
	release chan struct{}
}

func (h *heldPresence) Presence(ctx context.Context, users []string, dst []routing.Status) ([]routing.Status, error) {
	h.called <- struct{}{}
	<-h.release
	for _, u := range users {
		dst = append(dst, routing.Status{User: u, Online: true})
	}
	return dst, nil
}

// TestPresenceConfirmationOvertaken: a change that comes over the topic
// while a confirming read is in flight is newer than the read, so the read's
// answer is dropped: the watcher never gets an older state after a newer.
func TestPresenceConfirmationOvertaken(t *testing.T) {
	t.Parallel()
	hp := &heldPresence{called: make(chan struct{}, 1), release: make(chan struct{})}
	e := startGateway(t, func(_ *Config, d *Deps) { d.Presence = hp })
	phone := login(t, e, "bob", "phone")
	phone.send(&wire.Focus{ConvID: 9})
	phone.ping(1)
	e.publish(t, []uint64{e.connID(t, "bob", "phone")}, (&wire.Presence{ConvID: 9, User: []byte("alice"), LastSeenMS: 5}).Append(nil, 0))
	phone.expect(wire.TypePresence)
	<-hp.called // the confirming read is in flight
	change := (&wire.Presence{User: []byte("alice"), LastSeenMS: 7}).Append(nil, 0)
	if err := e.mem.Publish(context.Background(), routing.TopicChannel(presenceTopic("alice")), wire.AppendBatch(nil, nil, change)); err != nil {
		t.Fatal(err)
	}
	phone.expect(wire.TypePresence)
	if p := phone.dec.Presence; p.Online || p.LastSeenMS != 7 {
		t.Fatalf("the change over the topic %+v", p)
	}
	close(hp.release)
	eventually(t, "the confirming read handled", func() bool {
		return e.metric("chatd_gateway_presence_watches_confirmed_total", "result", "overtaken")+
			e.metric("chatd_gateway_presence_watches_confirmed_total", "result", "read") == 1
	})
	phone.ping(2) // the next frame: no stale "online" after the newer change
	if n := e.metric("chatd_gateway_presence_watches_confirmed_total", "result", "overtaken"); n != 1 {
		t.Fatalf("overtaken confirmations %v, want 1", n)
	}
}
