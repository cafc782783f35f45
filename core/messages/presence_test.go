package messages

import (
	"context"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

func TestViewPresence(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ago := func(d time.Duration) routing.Status { return routing.Status{LastSeenMS: now.Add(-d).UnixMilli()} }
	online := routing.Status{Online: true, LastSeenMS: now.UnixMilli()}
	day := 24 * time.Hour
	for _, tc := range []struct {
		name         string
		st           routing.Status
		vis          store.Visibility
		self, shares bool
		want         PresenceView
	}{
		{"self sees itself whatever the setting", online, store.VisibilityNobody, true, false, PresenceView{Online: true, LastSeenMS: now.UnixMilli()}},
		{"contacts: sharer exact", ago(time.Hour), store.VisibilityContacts, false, true, PresenceView{LastSeenMS: now.Add(-time.Hour).UnixMilli()}},
		{"contacts: stranger hidden", online, store.VisibilityContacts, false, false, PresenceView{Hidden: true}},
		{"everyone: stranger exact", online, store.VisibilityEveryone, false, false, PresenceView{Online: true, LastSeenMS: now.UnixMilli()}},
		{"nobody: stranger hidden", online, store.VisibilityNobody, false, false, PresenceView{Hidden: true}},
		{"nobody: online reads recently", online, store.VisibilityNobody, false, true, PresenceView{Approx: ApproxRecently}},
		{"nobody: 3 days is recently", ago(3 * day), store.VisibilityNobody, false, true, PresenceView{Approx: ApproxRecently}},
		{"nobody: 4 days is within a week", ago(4 * day), store.VisibilityNobody, false, true, PresenceView{Approx: ApproxWithinWeek}},
		{"nobody: 8 days is within a month", ago(8 * day), store.VisibilityNobody, false, true, PresenceView{Approx: ApproxWithinMonth}},
		{"nobody: 31 days is long ago", ago(31 * day), store.VisibilityNobody, false, true, PresenceView{Approx: ApproxLongAgo}},
		{"nobody: never seen is long ago", routing.Status{}, store.VisibilityNobody, false, true, PresenceView{Approx: ApproxLongAgo}},
	} {
		if got := ViewPresence(tc.st, tc.vis, tc.self, tc.shares, now); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestSharesConversation(t *testing.T) {
	st := openStore(t, t.TempDir())
	ctx := context.Background()
	if _, err := EnsureDirect(ctx, st, "alice", "bob", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnsureConversation(ctx, store.Conversation{ID: 77, Kind: wire.ConvGroup, Members: []string{"alice", "carol", "zed"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnsureConversation(ctx, store.Conversation{ID: 78, Kind: wire.ConvGroup, Members: []string{"dave", "erin"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"alice", "bob", true}, {"bob", "alice", true}, {"alice", "carol", true}, {"zed", "alice", true},
		{"alice", "alice", true}, {"bob", "carol", false}, {"alice", "dave", false}, {"nobody", "alice", false},
	} {
		got, err := SharesConversation(ctx, st, tc.a, tc.b, nil)
		if err != nil || got != tc.want {
			t.Errorf("SharesConversation(%s, %s) = %v, %v; want %v", tc.a, tc.b, got, err, tc.want)
		}
	}
}
