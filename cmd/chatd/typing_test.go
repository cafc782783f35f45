package main

import (
	"context"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// TestTypingWithSDK, through the whole path (gateway, Kafka, core, fanout,
// gateway): typing reaches the peer's device focused on the conversation
// and no other, stops when told, and stops on its own when the typist's
// connection closes mid-typing. Nothing is stored.
func TestTypingWithSDK(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, ar := newClient(t, s, "alice", "phone", nil)
	bob, br := newClient(t, s, "bob", "phone", nil)
	_, lr := newClient(t, s, "bob", "laptop", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{ar, br, lr} {
		r.waitUntil(t, "connected", func() bool { return r.connected > 0 })
	}
	bob.Focus(conv.ID)
	// The gateway handles a connection's frames in order: once this SEND
	// is acknowledged, the FOCUS before it is in place.
	if _, err := bob.SendWait(ctx, conv.ID, wire.KindText, []byte("ready")); err != nil {
		t.Fatal(err)
	}

	alice.SetTyping(conv.ID, true)
	alice.SetTyping(conv.ID, true) // within the interval: not sent again
	br.waitUntil(t, "typing started", func() bool { return len(br.typing) >= 1 })
	alice.SetTyping(conv.ID, false)
	br.waitUntil(t, "typing stopped", func() bool { return len(br.typing) >= 2 })
	br.mu.Lock()
	got := append([]sdk.Typing(nil), br.typing...)
	br.mu.Unlock()
	if len(got) != 2 || got[0].User != "alice" || got[0].Conv != conv.ID || !got[0].Typing || got[0].Until.IsZero() || got[1].Typing {
		t.Fatalf("bob's phone saw %+v, want alice started then stopped", got)
	}

	// The laptop is not focused: a message after the typing arrives, the
	// typing never does (same partition, so it would have come first).
	if _, err := alice.SendWait(ctx, conv.ID, wire.KindText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	lr.waitUntil(t, "the laptop's message", func() bool { return len(lr.msgs) >= 2 })
	lr.mu.Lock()
	n := len(lr.typing)
	lr.mu.Unlock()
	if n != 0 {
		t.Fatalf("the unfocused laptop got %d typing events", n)
	}

	// Closing mid-typing: the gateway says stopped on alice's behalf.
	// The SDK holds a new started until a second after the last one (the
	// server's limit), so keep typing until it goes out.
	deadline := time.Now().Add(waitFor)
	for {
		alice.SetTyping(conv.ID, true)
		br.mu.Lock()
		n := len(br.typing)
		br.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("typing did not start again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	alice.Close()
	br.waitUntil(t, "typing stopped by the close", func() bool { return len(br.typing) >= 4 })
	br.mu.Lock()
	last := br.typing[len(br.typing)-1]
	br.mu.Unlock()
	if last.Typing || last.User != "alice" {
		t.Fatalf("after alice's close bob saw %+v", last)
	}
}
