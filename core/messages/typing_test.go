package messages

import (
	"context"
	"testing"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/wire"
)

// TestTyping: a member's TYPING becomes one typing event carrying the
// user and device; a non-member, an unknown conversation and a bad frame
// get coded errors and no event; nothing is stored either way.
func TestTyping(t *testing.T) {
	st := openStore(t, t.TempDir())
	g := newGroupHarness(t, st, Config{})
	grp := one[*wire.Conv](t, g.handle(g.rec("alice", &wire.CreateGroup{Name: []byte("g"), Members: users("bob")})))
	last, err := st.LastSeq(context.Background(), grp.ConvID)
	if err != nil {
		t.Fatal(err)
	}
	before := len(g.evs.recs)

	if fs := g.handle(g.rec("bob", &wire.Typing{ConvID: grp.ConvID, State: wire.TypingStarted})); len(fs) != 0 {
		t.Fatalf("a member's TYPING was answered: %v", fs)
	}
	if n := len(g.evs.recs) - before; n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	kind, body, _ := events.Split(g.evs.recs[before].Value)
	frame, dev, err := events.DecodeTyping(body)
	if kind != events.KindTyping || err != nil || string(dev) != "d" {
		t.Fatalf("event kind %v device %q err %v", kind, dev, err)
	}
	var d wire.Decoder
	if typ, _, err := d.Decode(frame); err != nil || typ != wire.TypeTyping ||
		d.Typing.ConvID != grp.ConvID || d.Typing.State != wire.TypingStarted || string(d.Typing.User) != "bob" {
		t.Fatalf("event frame %v %+v %v", typ, d.Typing, err)
	}

	wantError(t, g.handle(g.rec("mallory", &wire.Typing{ConvID: grp.ConvID, State: wire.TypingStarted})), wire.CodeNotMember)
	wantError(t, g.handle(g.rec("bob", &wire.Typing{ConvID: 999, State: wire.TypingStarted})), wire.CodeConvNotFound)
	wantError(t, g.handle(g.rec("bob", &wire.Typing{ConvID: grp.ConvID, State: wire.TypingStarted, User: []byte("alice")})), wire.CodeInvalidArgument)
	if n := len(g.evs.recs) - before; n != 1 {
		t.Fatalf("%d events after refused TYPING, want still 1", n)
	}
	if now, _ := st.LastSeq(context.Background(), grp.ConvID); now != last {
		t.Fatalf("TYPING stored something: last seq %d -> %d", last, now)
	}
}
