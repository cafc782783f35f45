package main

import (
	"context"
	"testing"

	"github.com/chatd-dev/chatd/sdk"
)

// TestPresenceWithSDK, through chatd: the SDK's Focus on a direct
// conversation brings the peer's presence, then its changes; switching
// focus faster than the server's limit is smoothed by the SDK (the last
// focus wins, no request is refused); Focus(0) stops the changes.
func TestPresenceWithSDK(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, ar := newClient(t, s, "alice", "phone", nil)
	bob, br := newClient(t, s, "bob", "phone", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	carolConv, err := bob.OpenDirect(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	ar.waitUntil(t, "alice connected", func() bool { return ar.connected > 0 })
	// Two switches in a row: the server would refuse the second within
	// 250 ms, leaving bob on carol; the SDK holds it and sends it after
	// the gap.
	bob.Focus(carolConv.ID)
	bob.Focus(conv.ID)
	last := func() sdk.Presence { return br.presence[len(br.presence)-1] }
	br.waitUntil(t, "alice online", func() bool {
		return len(br.presence) > 0 && last().Conv == conv.ID && last().User == "alice" && last().Online
	})
	alice.Close()
	br.waitUntil(t, "alice offline", func() bool {
		return last().User == "alice" && !last().Online && !last().LastSeen.IsZero()
	})
	bob.Focus(0)
	alice2, a2 := newClient(t, s, "alice", "laptop", nil)
	a2.waitUntil(t, "alice's laptop connected", func() bool { return a2.connected > 0 })
	// A message after alice's return: when bob has it, a presence change
	// sent before it would have arrived too.
	if _, err := alice2.SendWait(ctx, conv.ID, 1, []byte("back")); err != nil {
		t.Fatal(err)
	}
	br.waitUntil(t, "alice's message", func() bool { return len(br.msgs) > 0 })
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, p := range br.presence {
		if (p.Conv != conv.ID || p.User != "alice") && (p.Conv != carolConv.ID || p.User != "carol") {
			t.Fatalf("presence about %d/%s: only a focused conversation's peer is told", p.Conv, p.User)
		}
	}
	if p := br.presence[len(br.presence)-1]; p.Online {
		t.Fatalf("unfocused bob was told alice is back: %+v", br.presence)
	}
}
