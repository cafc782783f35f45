package gateway

import (
	"testing"

	"github.com/chatd-dev/chatd/wire"
)

// decodeTyping returns the TYPING inside a produced record's envelope.
func decodeTyping(t *testing.T, r record) wire.Typing {
	t.Helper()
	var env wire.Envelope
	if err := env.Decode(r.value); err != nil {
		t.Fatal(err)
	}
	var d wire.Decoder
	if typ, _, err := d.Decode(env.Frame); err != nil || typ != wire.TypeTyping {
		t.Fatalf("produced %v %v, want TYPING", typ, err)
	}
	return d.Typing
}

// TestTypingValidatedAndRateLimited: bad TYPING frames get coded errors, a
// flood is dropped with rate_limited while the connection stays usable, and
// a stopped for a conversation the device is not typing in is a silent
// no-op; nothing invalid reaches the bus.
func TestTypingValidatedAndRateLimited(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")

	c.send(&wire.Typing{State: wire.TypingStarted})
	if got := c.expectError(wire.CodeInvalidArgument); got.RefType != wire.TypeTyping {
		t.Fatalf("conv 0: ref %v", got.RefType)
	}
	c.send(&wire.Typing{ConvID: 7, State: wire.TypingStarted, User: []byte("bob")})
	if got := c.expectError(wire.CodeInvalidArgument); got.ConvID != 7 {
		t.Fatalf("user set: conv %d", got.ConvID)
	}
	c.sendRaw([]byte{byte(wire.TypeTyping), 0, 7, 9, 0}) // state 9
	c.expectError(wire.CodeMalformedFrame)
	c.send(&wire.Typing{ConvID: 7, State: wire.TypingStopped}) // not typing: ignored
	c.ping(1)
	if n := e.prod.count(); n != 0 {
		t.Fatalf("%d records produced by invalid or no-op TYPING", n)
	}

	// A flood: the first is produced, the rest within TypingMinGap are
	// refused with a coded error.
	for range 5 {
		c.send(&wire.Typing{ConvID: 7, State: wire.TypingStarted})
	}
	for range 4 {
		if got := c.expectError(wire.CodeRateLimited); got.RefType != wire.TypeTyping || got.ConvID != 7 {
			t.Fatalf("flood: refs %v %d", got.RefType, got.ConvID)
		}
	}
	c.send(&wire.Typing{ConvID: 7, State: wire.TypingStopped})
	// Stopping does not reset the limit.
	c.send(&wire.Typing{ConvID: 7, State: wire.TypingStarted})
	c.expectError(wire.CodeRateLimited)
	c.ping(2)
	rs := e.prod.waitRecords(t, 2)
	if len(rs) != 2 {
		t.Fatalf("%d records, want started and stopped", len(rs))
	}
	if a, b := decodeTyping(t, rs[0]), decodeTyping(t, rs[1]); a.State != wire.TypingStarted || b.State != wire.TypingStopped || a.ConvID != 7 || b.ConvID != 7 {
		t.Fatalf("produced %+v then %+v", a, b)
	}
	if e.metric("chatd_gateway_typing_stopped_ignored_total", "", "") != 1 {
		t.Error("the ignored stopped was not counted")
	}
}

// TestTypingClearedOnClose: a connection that closes mid-typing produces a
// stopped on its behalf, so receivers clear it at once.
func TestTypingClearedOnClose(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Typing{ConvID: 8, State: wire.TypingStarted})
	e.prod.waitRecords(t, 1)
	c.conn.Close()
	rs := e.prod.waitRecords(t, 2)
	if got := decodeTyping(t, rs[1]); got.ConvID != 8 || got.State != wire.TypingStopped {
		t.Fatalf("on close produced %+v, want stopped in 8", got)
	}
	var env wire.Envelope
	if err := env.Decode(rs[1].value); err != nil || string(env.User) != "alice" || string(env.Device) != "phone" {
		t.Fatalf("on close: envelope %q/%q %v", env.User, env.Device, err)
	}
}

// TestTypingOnlyToFocused: a routed TYPING reaches only connections whose
// FOCUS is its conversation; other frames ignore focus.
func TestTypingOnlyToFocused(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	open := login(t, e, "bob", "phone")
	elsewhere := login(t, e, "bob", "laptop")
	none := login(t, e, "bob", "tablet")
	open.send(&wire.Focus{ConvID: 9})
	elsewhere.send(&wire.Focus{ConvID: 10})
	for i, c := range []*client{open, elsewhere, none} {
		c.ping(uint64(i)) // the FOCUS was handled
	}
	ids := []uint64{e.connID(t, "bob", "phone"), e.connID(t, "bob", "laptop"), e.connID(t, "bob", "tablet")}
	e.publish(t, ids, (&wire.Typing{ConvID: 9, State: wire.TypingStarted, User: []byte("alice")}).Append(nil, 0))
	e.publish(t, ids, (&wire.Receipt{ConvID: 9, Kind: wire.ReceiptRead, UpToSeq: 1, User: []byte("alice")}).Append(nil, 0))
	open.expect(wire.TypeTyping)
	if open.dec.Typing.ConvID != 9 || string(open.dec.Typing.User) != "alice" {
		t.Fatalf("focused got %+v", open.dec.Typing)
	}
	for _, c := range []*client{open, elsewhere, none} {
		c.expect(wire.TypeReceipt) // the next frame: no TYPING before it
	}
	if n := e.metric("chatd_gateway_typing_unfocused_total", "", ""); n != 2 {
		t.Fatalf("unfocused deliveries %v, want 2", n)
	}
	// Each FOCUS on a conversation went to the core (for PRESENCE).
	if n := e.prod.count(); n != 2 {
		t.Fatalf("%d records produced, want the 2 FOCUS", n)
	}
}
