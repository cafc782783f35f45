package main

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// bodies returns what r's app saw in conv: texts as is, system messages
// as "op actor users".
func bodies(t *testing.T, r *recorder, conv uint64) []string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if m.Conv != conv {
			continue
		}
		if m.Kind != wire.KindSystem {
			out = append(out, string(m.Body))
			continue
		}
		var ev wire.GroupEvent
		if err := ev.Decode(m.Body); err != nil {
			t.Fatalf("system message %d: %v", m.Seq, err)
		}
		out = append(out, fmt.Sprintf("%d %s %s", ev.Op, ev.Actor, ev.Users))
	}
	return out
}

func wantCode(t *testing.T, err error, code wire.Code) {
	t.Helper()
	var se *sdk.ServerError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("error %v, want %v", err, code)
	}
}

// TestGroupChatWithSDK: a group through the whole path (SDK, gateway,
// Kafka, core, store, fanout): every member's app sees the membership
// changes in order with the messages, a removed member stops receiving and
// cannot send, only admins change members.
func TestGroupChatWithSDK(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, ar := newClient(t, s, "alice", "phone", nil)
	bob, br := newClient(t, s, "bob", "phone", nil)
	carol, cr := newClient(t, s, "carol", "phone", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	g, err := alice.CreateGroup(ctx, "hikers", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Kind != wire.ConvGroup || g.Name != "hikers" || g.MemberTotal != 3 || fmt.Sprint(g.Admins) != "[alice]" || g.LastSeq != 1 {
		t.Fatalf("created %+v", g)
	}
	if _, err := alice.SendWait(ctx, g.ID, wire.KindText, []byte("trail at 9")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendWait(ctx, g.ID, wire.KindText, []byte("in")); err != nil {
		t.Fatal(err)
	}
	_, err = bob.ChangeGroup(ctx, g.ID, wire.GroupAdd, "", []string{"dave"})
	wantCode(t, err, wire.CodeNotAdmin)
	after, err := alice.ChangeGroup(ctx, g.ID, wire.GroupRemove, "", []string{"carol"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.Members) != "[alice bob]" || after.LastSeq != 4 {
		t.Fatalf("after remove %+v", after)
	}
	if _, err := alice.SendWait(ctx, g.ID, wire.KindText, []byte("carol is out")); err != nil {
		t.Fatal(err)
	}
	cr.mu.Lock()
	cr.failOK = true
	cr.mu.Unlock()
	_, err = carol.SendWait(ctx, g.ID, wire.KindText, []byte("wait"))
	wantCode(t, err, wire.CodeNotMember)

	created := "7 alice [bob carol]"
	wantBob := []string{created, "trail at 9", "2 alice [carol]", "carol is out"}
	// A device gets an ACK, not a MSG, for its own messages.
	br.waitUntil(t, "bob's 4 messages", func() bool { return len(br.msgs) >= 4 })
	if got := bodies(t, br, g.ID); fmt.Sprint(got) != fmt.Sprint(wantBob) {
		t.Fatalf("bob saw %q, want %q", got, wantBob)
	}
	// System messages reach the actor's device too.
	ar.waitUntil(t, "alice's", func() bool { return len(ar.msgs) >= 3 })
	if got := bodies(t, ar, g.ID); fmt.Sprint(got) != fmt.Sprint([]string{created, "in", "2 alice [carol]"}) {
		t.Fatalf("alice saw %q", got)
	}
	// Carol hears of her removal and nothing after it.
	cr.waitUntil(t, "carol's removal", func() bool { return len(cr.msgs) >= 4 })
	if _, err := bob.SendWait(ctx, g.ID, wire.KindText, []byte("bye carol")); err != nil {
		t.Fatal(err)
	}
	br.waitUntil(t, "bob's own send", func() bool { return len(br.acks) >= 2 })
	ar.waitUntil(t, "alice gets bob's bye", func() bool { return len(ar.msgs) >= 4 })
	if got := bodies(t, cr, g.ID); fmt.Sprint(got) != fmt.Sprint([]string{created, "trail at 9", "in", "2 alice [carol]"}) {
		t.Fatalf("carol saw %q", got)
	}
}
