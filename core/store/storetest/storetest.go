// Package storetest is the contract suite every store.Store implementation
// runs from its tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, storetest.Options{
//			Open:   func(t *testing.T) store.Store { ... },
//			Reopen: func(t *testing.T, old store.Store) store.Store { ... },
//		})
//	}
//
// Each subtest opens its own Store. The suite does not need the Store to be
// empty: every subtest draws random conversation ids and prefixes its user
// ids with a random tag, so a ScyllaDB implementation may hand every
// subtest a new session on one shared keyspace. Run with -race: some
// subtests call the Store from several goroutines.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Options configures Run.
type Options struct {
	// Open returns a new Store handle (required). The suite closes it when
	// the subtest ends (t.Cleanup), possibly after having closed it
	// already.
	Open func(t *testing.T) store.Store
	// Reopen closes old and returns a new handle on the same data, the way
	// a restarted process would open it (optional: the durability subtest
	// is skipped when nil). The suite closes the returned Store.
	Reopen func(t *testing.T, old store.Store) store.Store
}

// Run runs the contract suite as subtests of t.
func Run(t *testing.T, o Options) {
	if o.Open == nil {
		t.Fatal("storetest: Options.Open is nil")
	}
	tests := []struct {
		name string
		f    func(*testing.T, *env)
	}{
		{"EnsureConversation", testEnsureConversation},
		{"EnsureConversationConcurrent", testEnsureConversationConcurrent},
		{"ConversationNotFound", testConversationNotFound},
		{"CommitConversations", testCommitConversations},
		{"GroupNameAndAdmins", testGroupNameAndAdmins},
		{"GroupUpdates", testGroupUpdates},
		{"GroupUpdatesInOneBatch", testGroupUpdatesInOneBatch},
		{"GroupUpdateWithMessage", testGroupUpdateWithMessage},
		{"GroupUpdateRejectsInvalid", testGroupUpdateRejectsInvalid},
		{"UserConversations", testUserConversations},
		{"CommitLastSeq", testCommitLastSeq},
		{"CommitSeqFence", testCommitSeqFence},
		{"CommitRejectsInvalid", testCommitRejectsInvalid},
		{"LookupClientMsg", testLookupClientMsg},
		{"LookupClientMsgs", testLookupClientMsgs},
		{"MessagesAfter", testMessagesAfter},
		{"MessagesBefore", testMessagesBefore},
		{"Limits", testLimits},
		{"Pointers", testPointers},
		{"PointersInOneBatch", testPointersInOneBatch},
		{"Bodies", testBodies},
		{"NoAliasing", testNoAliasing},
		{"ConcurrentReadersDuringCommits", testConcurrentReaders},
		{"ConcurrentCommits", testConcurrentCommits},
		{"ConcurrentCommitsDisjoint", testConcurrentCommitsDisjoint},
		{"UserSettings", testUserSettings},
		{"Close", testClose},
		{"Durability", testDurability},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newEnv(t, o)) })
	}
}

// env is one subtest's Store and namespace.
type env struct {
	o    Options
	s    store.Store
	ctx  context.Context
	base uint64 // conversation ids are base+1, base+2, ...
	tag  string // prefix of every user id
}

func newEnv(t *testing.T, o Options) *env {
	s := o.Open(t)
	if s == nil {
		t.Fatal("storetest: Open returned nil")
	}
	t.Cleanup(func() { _ = s.Close() })
	return &env{
		o:    o,
		s:    s,
		ctx:  context.Background(),
		base: rand.Uint64N(1<<62) << 1, // leaves room above for +i
		tag:  fmt.Sprintf("t%016x.", rand.Uint64()),
	}
}

func (e *env) conv(i uint64) uint64 { return e.base + i }
func (e *env) user(name string) string {
	return e.tag + name
}

// msg is a message with every field set from (conv, seq).
func (e *env) msg(conv, seq uint64) store.Message {
	return store.Message{
		ConvID:       conv,
		MessageID:    conv ^ seq<<20 ^ 0x5bd1e995,
		Seq:          seq,
		ServerTimeMS: 1_700_000_000_000 + seq,
		Sender:       e.user("alice"),
		SenderDevice: "phone-1",
		ClientMsgID:  fmt.Sprintf("cmid-%d", seq),
		Kind:         wire.KindText,
		Body:         fmt.Appendf(nil, "message %d of %d", seq, conv),
	}
}

func (e *env) msgs(conv, from, to uint64) []store.Message {
	var ms []store.Message
	for seq := from; seq <= to; seq++ {
		ms = append(ms, e.msg(conv, seq))
	}
	return ms
}

func (e *env) commit(t *testing.T, b *store.Batch) {
	t.Helper()
	if err := e.s.Commit(e.ctx, b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func (e *env) commitMsgs(t *testing.T, ms ...store.Message) {
	t.Helper()
	e.commit(t, &store.Batch{Messages: ms})
}

// fill commits seqs 1..n of conv in batches of 100.
func (e *env) fill(t *testing.T, conv, n uint64) {
	t.Helper()
	for from := uint64(1); from <= n; from += 100 {
		e.commitMsgs(t, e.msgs(conv, from, min(from+99, n))...)
	}
}

func (e *env) lastSeq(t *testing.T, conv uint64) uint64 {
	t.Helper()
	seq, err := e.s.LastSeq(e.ctx, conv)
	if err != nil {
		t.Fatalf("LastSeq(%d): %v", conv, err)
	}
	return seq
}

func (e *env) pointers(t *testing.T, conv uint64, user string) store.Pointers {
	t.Helper()
	p, err := e.s.Pointers(e.ctx, conv, user)
	if err != nil {
		t.Fatalf("Pointers(%d, %q): %v", conv, user, err)
	}
	return p
}

func msgEqual(a, b store.Message) bool {
	return a.ConvID == b.ConvID && a.MessageID == b.MessageID && a.Seq == b.Seq &&
		a.ServerTimeMS == b.ServerTimeMS && a.Sender == b.Sender &&
		a.SenderDevice == b.SenderDevice && a.ClientMsgID == b.ClientMsgID &&
		a.Kind == b.Kind && bytes.Equal(a.Body, b.Body)
}

func fmtMsg(m store.Message) string {
	body := m.Body
	if len(body) > 40 {
		body = body[:40]
	}
	return fmt.Sprintf("{conv %d seq %d id %d t %d %q/%q cmid %q kind %d body(%d) %q}",
		m.ConvID, m.Seq, m.MessageID, m.ServerTimeMS, m.Sender, m.SenderDevice,
		m.ClientMsgID, m.Kind, len(m.Body), body)
}

func checkMsgs(t *testing.T, what string, got, want []store.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d messages %v, want %d %v", what, len(got), seqs(got), len(want), seqs(want))
		return
	}
	for i := range got {
		if !msgEqual(got[i], want[i]) {
			t.Errorf("%s: message %d:\n got %s\nwant %s", what, i, fmtMsg(got[i]), fmtMsg(want[i]))
			return
		}
	}
}

func seqs(ms []store.Message) []uint64 {
	s := make([]uint64, len(ms))
	for i := range ms {
		s[i] = ms[i].Seq
	}
	return s
}

// convEqual compares every field; a nil and an empty list are equal.
func convEqual(a, b store.Conversation) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.CreatedMS == b.CreatedMS &&
		slices.Equal(a.Members, b.Members) && a.Name == b.Name && slices.Equal(a.Admins, b.Admins)
}

// conversation returns the stored conversation id, failing the test on any
// error.
func (e *env) conversation(t *testing.T, id uint64) store.Conversation {
	t.Helper()
	c, err := e.s.Conversation(e.ctx, id)
	if err != nil {
		t.Fatalf("Conversation(%d): %v", id, err)
	}
	return c
}

// checkConv checks that conversation want.ID is stored as want.
func (e *env) checkConv(t *testing.T, what string, want store.Conversation) {
	t.Helper()
	if got := e.conversation(t, want.ID); !convEqual(got, want) {
		t.Errorf("%s: Conversation(%d) =\n %+v\nwant %+v", what, want.ID, got, want)
	}
}

// checkIndexed checks whether UserConversations(user) lists conv.
func (e *env) checkIndexed(t *testing.T, what, user string, conv uint64, want bool) {
	t.Helper()
	ids, err := e.s.UserConversations(e.ctx, user)
	if err != nil {
		t.Fatalf("UserConversations(%s): %v", user, err)
	}
	if slices.Contains(ids, conv) != want {
		t.Errorf("%s: UserConversations(%s) = %v; lists %d: %v, want %v", what, user, ids, conv, !want, want)
	}
}

func testEnsureConversation(t *testing.T, e *env) {
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	in := store.Conversation{
		ID:        e.conv(1),
		Kind:      wire.ConvGroup,
		Members:   []string{carol, alice, bob, alice},
		CreatedMS: 1_700_000_000_123,
	}
	inMembers := slices.Clone(in.Members)
	want := store.Conversation{ID: in.ID, Kind: in.Kind, Members: []string{alice, bob, carol}, CreatedMS: in.CreatedMS}

	got, err := e.s.EnsureConversation(e.ctx, in)
	if err != nil {
		t.Fatalf("EnsureConversation: %v", err)
	}
	if !convEqual(got, want) {
		t.Fatalf("EnsureConversation = %+v, want %+v (members sorted, deduped)", got, want)
	}
	if !slices.Equal(in.Members, inMembers) {
		t.Errorf("EnsureConversation modified the caller's Members: %v", in.Members)
	}
	got.Members[0] = "mutated" // must not reach the store

	again, err := e.s.EnsureConversation(e.ctx, store.Conversation{
		ID: in.ID, Kind: wire.ConvDirect, Members: []string{dave, bob}, CreatedMS: 42,
	})
	if err != nil {
		t.Fatalf("EnsureConversation again: %v", err)
	}
	if !convEqual(again, want) {
		t.Errorf("EnsureConversation on an existing id = %+v, want the stored %+v", again, want)
	}
	stored, err := e.s.Conversation(e.ctx, in.ID)
	if err != nil {
		t.Fatalf("Conversation: %v", err)
	}
	if !convEqual(stored, want) {
		t.Errorf("Conversation = %+v, want %+v", stored, want)
	}
	for _, u := range []string{alice, bob, carol} {
		ids, err := e.s.UserConversations(e.ctx, u)
		if err != nil {
			t.Fatalf("UserConversations(%s): %v", u, err)
		}
		if !slices.Equal(ids, []uint64{in.ID}) {
			t.Errorf("UserConversations(%s) = %v, want [%d]", u, ids, in.ID)
		}
	}
	if ids, err := e.s.UserConversations(e.ctx, dave); err != nil || len(ids) != 0 {
		t.Errorf("UserConversations(dave, rejected by the second Ensure) = %v, %v; want none", ids, err)
	}

	// No members; a 1:1 conversation.
	empty := store.Conversation{ID: e.conv(2), Kind: wire.ConvDirect, CreatedMS: 7}
	got, err = e.s.EnsureConversation(e.ctx, empty)
	if err != nil {
		t.Fatalf("EnsureConversation(no members): %v", err)
	}
	if got.ID != empty.ID || got.Kind != empty.Kind || got.CreatedMS != 7 || len(got.Members) != 0 {
		t.Errorf("EnsureConversation(no members) = %+v", got)
	}
	if got, err = e.s.Conversation(e.ctx, empty.ID); err != nil || got.Kind != wire.ConvDirect || len(got.Members) != 0 {
		t.Errorf("Conversation(no members) = %+v, %v", got, err)
	}
}

func testEnsureConversationConcurrent(t *testing.T, e *env) {
	const n = 8
	id := e.conv(1)
	results := make([]store.Conversation, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := e.s.EnsureConversation(e.ctx, store.Conversation{
				ID: id, Kind: wire.ConvGroup, CreatedMS: uint64(i),
				Members: []string{e.user(fmt.Sprintf("u%d", i)), e.user("common")},
			})
			if err != nil {
				t.Errorf("EnsureConversation #%d: %v", i, err)
			}
			results[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range results {
		if !convEqual(results[i], results[0]) {
			t.Fatalf("concurrent EnsureConversation returned different conversations: %+v and %+v", results[0], results[i])
		}
	}
	winner := results[0].CreatedMS
	ids, err := e.s.UserConversations(e.ctx, e.user(fmt.Sprintf("u%d", winner)))
	if err != nil || !slices.Equal(ids, []uint64{id}) {
		t.Errorf("UserConversations(winner) = %v, %v", ids, err)
	}
	for i := range uint64(n) {
		if i == winner {
			continue
		}
		if ids, err := e.s.UserConversations(e.ctx, e.user(fmt.Sprintf("u%d", i))); err != nil || len(ids) != 0 {
			t.Errorf("UserConversations(loser u%d) = %v, %v; want none", i, ids, err)
		}
	}
}

// testCommitConversations: Batch.Conversations creates conversations in
// the same commit as messages to them, never changes an existing one, and
// the first of two with the same id in one batch wins.
func testCommitConversations(t *testing.T, e *env) {
	a, b, c := e.user("a"), e.user("b"), e.user("c")
	existing := store.Conversation{ID: e.conv(1), Kind: wire.ConvDirect, Members: []string{a, b}}
	if _, err := e.s.EnsureConversation(e.ctx, existing); err != nil {
		t.Fatal(err)
	}
	batch := &store.Batch{
		Conversations: []store.Conversation{
			{ID: e.conv(1), Kind: wire.ConvGroup, Members: []string{c}},     // exists: unchanged
			{ID: e.conv(2), Kind: wire.ConvDirect, Members: []string{c, a}}, // new (members sorted)
			{ID: e.conv(2), Kind: wire.ConvGroup, Members: []string{b}},     // same id again: ignored
		},
		Messages: []store.Message{e.msg(e.conv(2), 1)},
	}
	if err := e.s.Commit(e.ctx, batch); err != nil {
		t.Fatal(err)
	}
	got1, err := e.s.Conversation(e.ctx, e.conv(1))
	if err != nil || got1.Kind != wire.ConvDirect || !slices.Equal(got1.Members, []string{a, b}) {
		t.Fatalf("existing conversation changed: %+v %v", got1, err)
	}
	got2, err := e.s.Conversation(e.ctx, e.conv(2))
	want := []string{a, c}
	slices.Sort(want)
	if err != nil || got2.Kind != wire.ConvDirect || !slices.Equal(got2.Members, want) {
		t.Fatalf("new conversation %+v %v, want members %v", got2, err, want)
	}
	if ids, _ := e.s.UserConversations(e.ctx, c); !slices.Contains(ids, e.conv(2)) || slices.Contains(ids, e.conv(1)) {
		t.Fatalf("c's conversations %v", ids)
	}
	if last, _ := e.s.LastSeq(e.ctx, e.conv(2)); last != 1 {
		t.Fatalf("last seq %d", last)
	}
	// A batch holding only conversations commits too.
	if err := e.s.Commit(e.ctx, &store.Batch{Conversations: []store.Conversation{{ID: e.conv(3), Kind: wire.ConvDirect, Members: []string{a, b}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Conversation(e.ctx, e.conv(3)); err != nil {
		t.Fatalf("conversation-only batch: %v", err)
	}
}

// testGroupNameAndAdmins: a group's name and admins are stored as given
// (admins sorted and deduped, like members) whether it is created by
// EnsureConversation or by Batch.Conversations; a direct conversation has
// neither.
func testGroupNameAndAdmins(t *testing.T, e *env) {
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
	in := store.Conversation{
		ID: e.conv(1), Kind: wire.ConvGroup, CreatedMS: 11,
		Members: []string{carol, alice, bob},
		Name:    "Hikers — Sunday ⛰",
		Admins:  []string{carol, alice, carol},
	}
	inAdmins := slices.Clone(in.Admins)
	want := store.Conversation{
		ID: in.ID, Kind: wire.ConvGroup, CreatedMS: 11,
		Members: []string{alice, bob, carol}, Name: in.Name, Admins: []string{alice, carol},
	}
	got, err := e.s.EnsureConversation(e.ctx, in)
	if err != nil {
		t.Fatalf("EnsureConversation: %v", err)
	}
	if !convEqual(got, want) {
		t.Errorf("EnsureConversation =\n %+v\nwant %+v", got, want)
	}
	if !slices.Equal(in.Admins, inAdmins) {
		t.Errorf("EnsureConversation modified the caller's Admins: %v", in.Admins)
	}
	got.Admins[0] = "mutated" // must not reach the store
	e.checkConv(t, "created by EnsureConversation", want)
	// An existing group keeps its name and admins.
	again, err := e.s.EnsureConversation(e.ctx, store.Conversation{ID: in.ID, Kind: wire.ConvGroup, Name: "other", Admins: []string{bob}})
	if err != nil || !convEqual(again, want) {
		t.Errorf("EnsureConversation(existing) = %+v, %v; want %+v", again, err, want)
	}

	// Through Batch.Conversations, with a direct conversation beside it.
	batched := store.Conversation{
		ID: e.conv(2), Kind: wire.ConvGroup, CreatedMS: 22,
		Members: []string{bob, alice}, Name: "batched", Admins: []string{bob, bob},
	}
	direct := store.Conversation{ID: e.conv(3), Kind: wire.ConvDirect, CreatedMS: 33, Members: []string{bob, alice}}
	e.commit(t, &store.Batch{Conversations: []store.Conversation{batched, direct}})
	e.checkConv(t, "created by Batch.Conversations", store.Conversation{
		ID: batched.ID, Kind: wire.ConvGroup, CreatedMS: 22,
		Members: []string{alice, bob}, Name: "batched", Admins: []string{bob},
	})
	if c := e.conversation(t, direct.ID); c.Name != "" || len(c.Admins) != 0 || c.Kind != wire.ConvDirect {
		t.Errorf("direct conversation = %+v, want no name and no admins", c)
	}
	// A group without name and admins reads back without them.
	bare := store.Conversation{ID: e.conv(4), Kind: wire.ConvGroup, CreatedMS: 44, Members: []string{alice}}
	if got, err := e.s.EnsureConversation(e.ctx, bare); err != nil || !convEqual(got, bare) {
		t.Errorf("EnsureConversation(bare group) = %+v, %v", got, err)
	}
	e.checkConv(t, "bare group", bare)
}

// newGroup creates a group conversation and returns it as stored.
func (e *env) newGroup(t *testing.T, i uint64, name string, admins []string, members ...string) store.Conversation {
	t.Helper()
	c, err := e.s.EnsureConversation(e.ctx, store.Conversation{
		ID: e.conv(i), Kind: wire.ConvGroup, CreatedMS: 1000 + i, Members: members, Name: name, Admins: admins,
	})
	if err != nil {
		t.Fatalf("EnsureConversation(%d): %v", i, err)
	}
	return c
}

// testGroupUpdates: an update replaces the name, members and admins (kind
// and creation time stay), indexes Added and unindexes Removed.
func testGroupUpdates(t *testing.T, e *env) {
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	g := e.newGroup(t, 1, "first", []string{alice}, alice, bob, carol)
	other := e.newGroup(t, 2, "other", nil, carol) // carol stays in this one

	// Add dave, remove carol, rename, make dave an admin. Kind and
	// CreatedMS in the update are ignored; lists arrive unsorted.
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{{
		Conv: store.Conversation{
			ID: g.ID, Kind: wire.ConvDirect, CreatedMS: 1,
			Name: "second", Members: []string{dave, bob, alice, dave}, Admins: []string{dave, alice},
		},
		Added:   []string{dave},
		Removed: []string{carol},
	}}})
	want := store.Conversation{
		ID: g.ID, Kind: wire.ConvGroup, CreatedMS: g.CreatedMS,
		Members: []string{alice, bob, dave}, Name: "second", Admins: []string{alice, dave},
	}
	e.checkConv(t, "after add, remove, rename, admin", want)
	e.checkIndexed(t, "added", dave, g.ID, true)
	e.checkIndexed(t, "removed", carol, g.ID, false)
	e.checkIndexed(t, "removed, other group", carol, other.ID, true)
	e.checkIndexed(t, "kept", alice, g.ID, true)
	e.checkIndexed(t, "kept", bob, g.ID, true)
	e.checkConv(t, "other group", other)

	// Rename only, then admins only: members and the index stay.
	want.Name = ""
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{{Conv: store.Conversation{
		ID: g.ID, Members: want.Members, Admins: want.Admins,
	}}}})
	e.checkConv(t, "after clearing the name", want)
	want.Name, want.Admins = "third", nil
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{{Conv: store.Conversation{
		ID: g.ID, Name: "third", Members: want.Members,
	}}}})
	e.checkConv(t, "after removing every admin", want)
	for _, u := range []string{alice, bob, dave} {
		e.checkIndexed(t, "after rename and admin changes", u, g.ID, true)
	}
	// Removing a user who never was indexed, adding one again: no error.
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{{
		Conv:    store.Conversation{ID: g.ID, Name: "third", Members: want.Members},
		Added:   []string{alice},
		Removed: []string{e.user("stranger")},
	}}})
	e.checkIndexed(t, "added twice", alice, g.ID, true)
	e.checkConv(t, "after a no-op index change", want)
}

// testGroupUpdatesInOneBatch: updates of one group in one batch apply in
// order; each sees the group as the previous one left it, including a
// group that the batch's Conversations create.
func testGroupUpdatesInOneBatch(t *testing.T, e *env) {
	alice, bob, carol, dave, erin := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave"), e.user("erin")
	g := e.newGroup(t, 1, "g", []string{alice}, alice, bob, erin)
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{
		{ // dave in, erin out
			Conv:  store.Conversation{ID: g.ID, Name: "one", Members: []string{alice, bob, dave}, Admins: []string{alice}},
			Added: []string{dave}, Removed: []string{erin},
		},
		{ // dave out again, erin back, carol in
			Conv:  store.Conversation{ID: g.ID, Name: "two", Members: []string{alice, bob, carol, erin}, Admins: []string{bob}},
			Added: []string{erin, carol}, Removed: []string{dave},
		},
	}})
	e.checkConv(t, "after two updates", store.Conversation{
		ID: g.ID, Kind: wire.ConvGroup, CreatedMS: g.CreatedMS,
		Members: []string{alice, bob, carol, erin}, Name: "two", Admins: []string{bob},
	})
	e.checkIndexed(t, "added then removed", dave, g.ID, false)
	e.checkIndexed(t, "removed then added", erin, g.ID, true)
	e.checkIndexed(t, "added by the second", carol, g.ID, true)

	// Created by this batch's Conversations, then updated twice: the
	// updates see the new group (its kind and creation time survive).
	n := store.Conversation{ID: e.conv(2), Kind: wire.ConvGroup, CreatedMS: 77, Members: []string{alice, bob}, Name: "new"}
	e.commit(t, &store.Batch{
		Conversations: []store.Conversation{n},
		GroupUpdates: []store.GroupUpdate{
			{Conv: store.Conversation{ID: n.ID, Name: "renamed", Members: []string{alice, bob, carol}}, Added: []string{carol}},
			{Conv: store.Conversation{ID: n.ID, Name: "renamed", Members: []string{alice, carol}, Admins: []string{carol}}, Removed: []string{bob}},
		},
	})
	e.checkConv(t, "created and updated in one batch", store.Conversation{
		ID: n.ID, Kind: wire.ConvGroup, CreatedMS: 77, Members: []string{alice, carol}, Name: "renamed", Admins: []string{carol},
	})
	e.checkIndexed(t, "created then removed", bob, n.ID, false)
	e.checkIndexed(t, "created then added", carol, n.ID, true)
	e.checkIndexed(t, "created", alice, n.ID, true)
}

// testGroupUpdateWithMessage: the update and the system message that
// announces it land in one Commit, pointers too.
func testGroupUpdateWithMessage(t *testing.T, e *env) {
	alice, bob := e.user("alice"), e.user("bob")
	g := e.newGroup(t, 1, "g", []string{alice}, alice)
	e.commitMsgs(t, e.msgs(g.ID, 1, 3)...)
	sys := e.msg(g.ID, 4)
	sys.Kind, sys.Body = wire.KindSystem, []byte("alice added bob")
	b := &store.Batch{
		GroupUpdates: []store.GroupUpdate{{
			Conv:  store.Conversation{ID: g.ID, Name: "g", Members: []string{alice, bob}, Admins: []string{alice}},
			Added: []string{bob},
		}},
		Messages: []store.Message{sys},
		Pointers: []store.PointerUpdate{ptrUpdate(g.ID, alice, wire.ReceiptRead, 4)},
	}
	e.commit(t, b)
	if !b.Pointers[0].Advanced {
		t.Error("pointer beside a group update did not advance")
	}
	e.checkConv(t, "after update with message", store.Conversation{
		ID: g.ID, Kind: wire.ConvGroup, CreatedMS: g.CreatedMS, Members: []string{alice, bob}, Name: "g", Admins: []string{alice},
	})
	e.checkIndexed(t, "added with a message", bob, g.ID, true)
	if got := e.lastSeq(t, g.ID); got != 4 {
		t.Errorf("LastSeq = %d, want 4", got)
	}
	ms, err := e.s.MessagesAfter(e.ctx, g.ID, 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "the system message", ms, []store.Message{sys})
	if p := e.pointers(t, g.ID, alice); p.Read != 4 {
		t.Errorf("read pointer = %d, want 4", p.Read)
	}
}

// testGroupUpdateRejectsInvalid: an update of a missing conversation or of
// a direct one fails the whole Commit with ErrInvalid: no conversation,
// update, message, dedupe entry, last seq or pointer of the batch lands.
func testGroupUpdateRejectsInvalid(t *testing.T, e *env) {
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
	g := e.newGroup(t, 1, "g", []string{alice}, alice, bob)
	direct, err := e.s.EnsureConversation(e.ctx, store.Conversation{ID: e.conv(2), Kind: wire.ConvDirect, CreatedMS: 5, Members: []string{alice, bob}})
	if err != nil {
		t.Fatal(err)
	}
	e.commitMsgs(t, e.msg(g.ID, 1))
	newConv := store.Conversation{ID: e.conv(4), Kind: wire.ConvGroup, Members: []string{carol}, Name: "never"}
	goodUpdate := store.GroupUpdate{
		Conv:  store.Conversation{ID: g.ID, Name: "changed", Members: []string{alice, carol}, Admins: []string{carol}},
		Added: []string{carol}, Removed: []string{bob},
	}
	for _, tc := range []struct {
		name   string
		target store.Conversation
		conv   []store.Conversation // the batch's Conversations besides newConv
	}{
		{"missing conversation", store.Conversation{ID: e.conv(3)}, nil},
		{"direct conversation", store.Conversation{ID: direct.ID, Kind: wire.ConvGroup}, nil},
		{"direct conversation created by the batch", store.Conversation{ID: e.conv(5)}, []store.Conversation{{ID: e.conv(5), Kind: wire.ConvDirect, Members: []string{carol}}}},
	} {
		bad := store.GroupUpdate{
			Conv:  store.Conversation{ID: tc.target.ID, Kind: tc.target.Kind, Name: "x", Members: []string{carol}, Admins: []string{carol}},
			Added: []string{carol},
		}
		b := &store.Batch{
			Conversations: append([]store.Conversation{newConv}, tc.conv...),
			GroupUpdates:  []store.GroupUpdate{goodUpdate, bad, goodUpdate},
			Messages:      []store.Message{e.msg(g.ID, 2), e.msg(newConv.ID, 1)},
			Pointers:      []store.PointerUpdate{ptrUpdate(g.ID, alice, wire.ReceiptRead, 2)},
		}
		if err := e.s.Commit(e.ctx, b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: Commit = %v, want ErrInvalid", tc.name, err)
		}
		if b.Pointers[0].Advanced {
			t.Errorf("%s: rejected Commit set Advanced", tc.name)
		}
		// Nothing of the batch landed.
		e.checkConv(t, tc.name+": group of the valid update", g)
		e.checkConv(t, tc.name+": direct conversation", direct)
		e.checkIndexed(t, tc.name+": valid update's added user", carol, g.ID, false)
		e.checkIndexed(t, tc.name+": valid update's removed user", bob, g.ID, true)
		e.checkIndexed(t, tc.name+": invalid update's added user", carol, tc.target.ID, false)
		for _, c := range append([]store.Conversation{newConv, {ID: e.conv(3)}}, tc.conv...) {
			if _, err := e.s.Conversation(e.ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: the batch's conversation %d: Conversation = %v, want ErrNotFound", tc.name, c.ID, err)
			}
		}
		if ids, err := e.s.UserConversations(e.ctx, carol); err != nil || len(ids) != 0 {
			t.Errorf("%s: UserConversations(carol) = %v, %v; want none", tc.name, ids, err)
		}
		if got := e.lastSeq(t, g.ID); got != 1 {
			t.Errorf("%s: LastSeq = %d, want 1", tc.name, got)
		}
		if got := e.lastSeq(t, newConv.ID); got != 0 {
			t.Errorf("%s: LastSeq(new conversation) = %d, want 0", tc.name, got)
		}
		if ms, err := e.s.MessagesAfter(e.ctx, g.ID, 1, 10); err != nil || len(ms) != 0 {
			t.Errorf("%s: MessagesAfter = %v, %v; want none", tc.name, seqs(ms), err)
		}
		if _, ok, err := e.s.LookupClientMsg(e.ctx, g.ID, alice, e.msg(g.ID, 2).ClientMsgID); err != nil || ok {
			t.Errorf("%s: LookupClientMsg = %v, %v; want a miss", tc.name, ok, err)
		}
		if p := e.pointers(t, g.ID, alice); p.Read != 0 {
			t.Errorf("%s: read pointer = %d, want 0", tc.name, p.Read)
		}
	}
	// The same batch without the invalid update commits.
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{goodUpdate}, Messages: []store.Message{e.msg(g.ID, 2)}})
	e.checkIndexed(t, "valid update alone", carol, g.ID, true)
	e.checkIndexed(t, "valid update alone", bob, g.ID, false)
}

func testConversationNotFound(t *testing.T, e *env) {
	_, err := e.s.Conversation(e.ctx, e.conv(1))
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Conversation(missing) error = %v, want ErrNotFound", err)
	}
	// Messages and pointers do not create a conversation.
	e.commit(t, &store.Batch{
		Messages: []store.Message{e.msg(e.conv(1), 1)},
		Pointers: []store.PointerUpdate{{ConvID: e.conv(1), User: e.user("a"), Kind: wire.ReceiptRead, Seq: 1}},
	})
	if _, err = e.s.Conversation(e.ctx, e.conv(1)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Conversation(only messages) error = %v, want ErrNotFound", err)
	}
}

func testUserConversations(t *testing.T, e *env) {
	a, ab, b, bc := e.user("a"), e.user("ab"), e.user("b"), e.user("bc")
	create := func(i uint64, members ...string) {
		t.Helper()
		if _, err := e.s.EnsureConversation(e.ctx, store.Conversation{
			ID: e.conv(i), Kind: wire.ConvGroup, Members: members, CreatedMS: i,
		}); err != nil {
			t.Fatalf("EnsureConversation(%d): %v", i, err)
		}
	}
	// Created out of order; users whose ids are prefixes of each other.
	create(9, a, b)
	create(2, a)
	create(300, ab)
	create(5, a, ab, bc)
	create(1, bc)
	create(1<<40, a)
	for _, tc := range []struct {
		user string
		want []uint64
	}{
		{a, []uint64{e.conv(2), e.conv(5), e.conv(9), e.conv(1 << 40)}},
		{ab, []uint64{e.conv(5), e.conv(300)}},
		{b, []uint64{e.conv(9)}},
		{bc, []uint64{e.conv(1), e.conv(5)}},
		{e.user(""), nil},
		{e.user("nobody"), nil},
	} {
		got, err := e.s.UserConversations(e.ctx, tc.user)
		if err != nil {
			t.Fatalf("UserConversations(%q): %v", tc.user, err)
		}
		if len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("UserConversations(%q) = %v, want %v", tc.user, got, tc.want)
		}
	}
}

func testCommitLastSeq(t *testing.T, e *env) {
	c1, c2, c3 := e.conv(1), e.conv(2), e.conv(3)
	if got := e.lastSeq(t, c1); got != 0 {
		t.Errorf("LastSeq(no messages) = %d, want 0", got)
	}
	if err := e.s.Commit(e.ctx, &store.Batch{}); err != nil {
		t.Errorf("Commit(empty batch): %v", err)
	}
	e.commitMsgs(t, e.msgs(c1, 1, 3)...)
	if got := e.lastSeq(t, c1); got != 3 {
		t.Errorf("LastSeq = %d, want 3", got)
	}
	// Seqs need not be contiguous: the caller assigns them.
	e.commitMsgs(t, e.msg(c1, 10))
	if got := e.lastSeq(t, c1); got != 10 {
		t.Errorf("LastSeq = %d, want 10", got)
	}
	ms, err := e.s.MessagesAfter(e.ctx, c1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "MessagesAfter(c1, 0)", ms, []store.Message{
		e.msg(c1, 1), e.msg(c1, 2), e.msg(c1, 3), e.msg(c1, 10),
	})

	// Several conversations, seqs unordered within the batch.
	e.commitMsgs(t, e.msg(c2, 3), e.msg(c3, 7), e.msg(c2, 1), e.msg(c2, 2), e.msg(c3, 6))
	if got := e.lastSeq(t, c2); got != 3 {
		t.Errorf("LastSeq(c2) = %d, want 3", got)
	}
	if got := e.lastSeq(t, c3); got != 7 {
		t.Errorf("LastSeq(c3) = %d, want 7", got)
	}
	if got := e.lastSeq(t, c1); got != 10 {
		t.Errorf("LastSeq(c1) = %d, want 10", got)
	}
	if got := e.lastSeq(t, e.conv(4)); got != 0 {
		t.Errorf("LastSeq(c4) = %d, want 0", got)
	}
}

// testCommitSeqFence: a batch with a seq at or below its conversation's
// last seq is refused whole (ErrSeqConflict), so a stored message is never
// overwritten, whoever writes.
func testCommitSeqFence(t *testing.T, e *env) {
	c1, c2 := e.conv(1), e.conv(2)
	alice := e.user("alice")
	e.commitMsgs(t, e.msgs(c1, 1, 5)...)
	e.commitMsgs(t, e.msgs(c2, 1, 2)...)
	for _, tc := range []struct {
		name string
		ms   []store.Message
	}{
		{"the last seq again", []store.Message{e.msg(c1, 5)}},
		{"a lower seq", []store.Message{e.msg(c1, 2)}},
		{"stale then new", []store.Message{e.msg(c1, 5), e.msg(c1, 6)}},
		{"new conversation fine, another stale", []store.Message{e.msg(c2, 3), e.msg(c1, 4)}},
	} {
		other := tc.ms[0]
		other.MessageID++
		other.ClientMsgID = "zombie-" + tc.name
		other.Body = []byte("from a writer with a stale last seq")
		ms := append([]store.Message{other}, tc.ms[1:]...)
		b := &store.Batch{
			Messages: ms,
			Pointers: []store.PointerUpdate{ptrUpdate(c1, alice, wire.ReceiptRead, 5)},
		}
		if err := e.s.Commit(e.ctx, b); !errors.Is(err, store.ErrSeqConflict) {
			t.Errorf("%s: Commit = %v, want ErrSeqConflict", tc.name, err)
		}
		if b.Pointers[0].Advanced {
			t.Errorf("%s: refused Commit set Advanced", tc.name)
		}
		if _, ok, err := e.s.LookupClientMsg(e.ctx, other.ConvID, other.Sender, other.ClientMsgID); err != nil || ok {
			t.Errorf("%s: refused message's dedupe entry: found %v, %v", tc.name, ok, err)
		}
	}
	got, err := e.s.MessagesAfter(e.ctx, c1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "c1 after refused batches", got, e.msgs(c1, 1, 5))
	if got := e.lastSeq(t, c2); got != 2 {
		t.Errorf("LastSeq(c2) = %d after a refused batch, want 2", got)
	}
	if p := e.pointers(t, c1, alice); p.Read != 0 {
		t.Errorf("read pointer = %d after refused batches, want 0", p.Read)
	}
	// The writer that reloads the last seq goes on.
	e.commitMsgs(t, e.msg(c1, 6))
	if got := e.lastSeq(t, c1); got != 6 {
		t.Errorf("LastSeq = %d, want 6", got)
	}
}

func testCommitRejectsInvalid(t *testing.T, e *env) {
	c := e.conv(1)
	zero := e.msg(c, 0)
	bad := &store.Batch{
		Messages: []store.Message{e.msg(c, 1), zero},
		Pointers: []store.PointerUpdate{{ConvID: c, User: e.user("a"), Kind: wire.ReceiptRead, Seq: 1}},
	}
	if err := e.s.Commit(e.ctx, bad); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Commit(message with seq 0) = %v, want ErrInvalid", err)
	}
	if bad.Pointers[0].Advanced {
		t.Error("rejected Commit set Advanced")
	}
	bad = &store.Batch{
		Messages: []store.Message{e.msg(c, 1)},
		Pointers: []store.PointerUpdate{{ConvID: c, User: e.user("a"), Kind: 0, Seq: 1}},
	}
	if err := e.s.Commit(e.ctx, bad); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Commit(pointer kind 0) = %v, want ErrInvalid", err)
	}
	bad.Pointers[0].Kind = store.PointerSeen + 1
	if err := e.s.Commit(e.ctx, bad); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Commit(pointer kind 4) = %v, want ErrInvalid", err)
	}
	if got := e.lastSeq(t, c); got != 0 {
		t.Errorf("LastSeq after rejected batches = %d, want 0", got)
	}
	if ms, err := e.s.MessagesAfter(e.ctx, c, 0, 10); err != nil || len(ms) != 0 {
		t.Errorf("MessagesAfter after rejected batches = %v, %v; want none", seqs(ms), err)
	}
	if _, ok, err := e.s.LookupClientMsg(e.ctx, c, zero.Sender, e.msg(c, 1).ClientMsgID); err != nil || ok {
		t.Errorf("LookupClientMsg after rejected batches = %v, %v; want a miss", ok, err)
	}
	if p := e.pointers(t, c, e.user("a")); p != (store.Pointers{}) {
		t.Errorf("Pointers after rejected batches = %+v, want zero", p)
	}
}

func testLookupClientMsg(t *testing.T, e *env) {
	c1, c2 := e.conv(1), e.conv(2)
	alice, bob := e.user("alice"), e.user("bob")
	m1 := e.msg(c1, 1) // alice, cmid-1
	m2 := e.msg(c1, 2)
	m2.Sender, m2.ClientMsgID = bob, "same"
	m3 := e.msg(c1, 3)
	m3.ClientMsgID = "same" // alice, same id as bob's
	sys := e.msg(c1, 4)
	sys.Sender, sys.SenderDevice, sys.ClientMsgID, sys.Kind = "", "", "", wire.KindSystem
	e.commitMsgs(t, m1, m2, m3, sys)

	lookup := func(conv uint64, sender, cmid string) (store.Message, bool) {
		t.Helper()
		m, ok, err := e.s.LookupClientMsg(e.ctx, conv, sender, cmid)
		if err != nil {
			t.Fatalf("LookupClientMsg(%d, %q, %q): %v", conv, sender, cmid, err)
		}
		return m, ok
	}
	hit := func(conv uint64, sender, cmid string, want store.Message) {
		t.Helper()
		m, ok := lookup(conv, sender, cmid)
		if !ok {
			t.Errorf("LookupClientMsg(%d, %q, %q): miss, want seq %d", conv, sender, cmid, want.Seq)
		} else if !msgEqual(m, want) {
			t.Errorf("LookupClientMsg(%d, %q, %q) =\n %s\nwant %s", conv, sender, cmid, fmtMsg(m), fmtMsg(want))
		}
	}
	miss := func(conv uint64, sender, cmid string) {
		t.Helper()
		if m, ok := lookup(conv, sender, cmid); ok {
			t.Errorf("LookupClientMsg(%d, %q, %q) = seq %d, want a miss", conv, sender, cmid, m.Seq)
		}
	}
	hit(c1, alice, "cmid-1", m1)
	hit(c1, bob, "same", m2)
	hit(c1, alice, "same", m3)
	miss(c1, alice, "cmid-2")     // unknown id
	miss(c1, bob, "cmid-1")       // another sender's id
	miss(c2, alice, "cmid-1")     // another conversation
	miss(c1+1<<32, alice, "same") // far conversation
	miss(c1, "", "")              // empty client_msg_id is not indexed
	miss(c1, e.user("nobody"), "same")

	// (sender "ab", id "c") and (sender "a", id "bc") are different entries.
	ab := e.msg(c2, 1)
	ab.Sender, ab.ClientMsgID = e.user("ab"), "c"
	e.commitMsgs(t, ab)
	miss(c2, e.user("a"), "bc")
	a := e.msg(c2, 2)
	a.Sender, a.ClientMsgID = e.user("a"), "bc"
	e.commitMsgs(t, a)
	hit(c2, e.user("ab"), "c", ab)
	hit(c2, e.user("a"), "bc", a)
}

// testLookupClientMsgs: a batch lookup answers each key as LookupClientMsg
// does, in the keys' order, hits, misses, repeats and empty ids mixed.
func testLookupClientMsgs(t *testing.T, e *env) {
	c1, c2 := e.conv(1), e.conv(2)
	alice, bob := e.user("alice"), e.user("bob")
	m2 := e.msg(c1, 2)
	m2.Sender, m2.ClientMsgID = bob, "same"
	m3 := e.msg(c1, 3)
	m3.ClientMsgID = "same"
	e.commitMsgs(t, e.msg(c1, 1), m2, m3, e.msg(c2, 1))

	if res, err := e.s.LookupClientMsgs(e.ctx, nil); err != nil || len(res) != 0 {
		t.Fatalf("LookupClientMsgs(no keys) = %v, %v; want nothing", res, err)
	}
	keys := []store.ClientMsgKey{
		{ConvID: c1, Sender: bob, ClientMsgID: "same"},
		{ConvID: c1, Sender: alice, ClientMsgID: "cmid-9"}, // unknown id
		{ConvID: c1, Sender: alice, ClientMsgID: "cmid-1"},
		{ConvID: c2, Sender: alice, ClientMsgID: "cmid-1"},
		{ConvID: c1, Sender: alice, ClientMsgID: ""}, // never indexed
		{ConvID: c1, Sender: alice, ClientMsgID: "same"},
		{ConvID: c1, Sender: bob, ClientMsgID: "same"},             // a repeat
		{ConvID: c2 + 1<<32, Sender: alice, ClientMsgID: "cmid-1"}, // no such conversation
	}
	res, err := e.s.LookupClientMsgs(e.ctx, keys)
	if err != nil {
		t.Fatalf("LookupClientMsgs: %v", err)
	}
	if len(res) != len(keys) {
		t.Fatalf("LookupClientMsgs: %d results for %d keys", len(res), len(keys))
	}
	hits := 0
	for i, k := range keys {
		m, ok, err := e.s.LookupClientMsg(e.ctx, k.ConvID, k.Sender, k.ClientMsgID)
		if err != nil {
			t.Fatal(err)
		}
		if res[i].Found != ok || (ok && !msgEqual(res[i].Message, m)) {
			t.Errorf("key %d %+v: LookupClientMsgs = %v %s, LookupClientMsg = %v %s", i, k, res[i].Found, fmtMsg(res[i].Message), ok, fmtMsg(m))
		}
		if ok {
			hits++
		}
	}
	if hits != 5 {
		t.Errorf("%d of the keys found, want 5", hits)
	}
}

func testMessagesAfter(t *testing.T, e *env) {
	c := e.conv(2)
	e.commitMsgs(t, e.msgs(c, 1, 10)...)
	// Neighbours must not leak into c's range.
	e.commitMsgs(t, e.msgs(e.conv(1), 1, 20)...)
	e.commitMsgs(t, e.msgs(e.conv(3), 1, 5)...)

	for _, tc := range []struct {
		after    uint64
		limit    int
		from, to uint64 // want seqs from..to (none when from > to)
	}{
		{0, 3, 1, 3},
		{0, 10, 1, 10},
		{0, 11, 1, 10},
		{0, 100, 1, 10},
		{3, 100, 4, 10},
		{3, 2, 4, 5},
		{9, 1, 10, 10},
		{9, 5, 10, 10},
		{10, 5, 1, 0},
		{11, 5, 1, 0},
		{^uint64(0) - 1, 5, 1, 0},
		{^uint64(0), 5, 1, 0},
	} {
		got, err := e.s.MessagesAfter(e.ctx, c, tc.after, tc.limit)
		if err != nil {
			t.Fatalf("MessagesAfter(after %d, limit %d): %v", tc.after, tc.limit, err)
		}
		checkMsgs(t, fmt.Sprintf("MessagesAfter(after %d, limit %d)", tc.after, tc.limit), got, e.msgs(c, tc.from, tc.to))
	}
	got, err := e.s.MessagesAfter(e.ctx, e.conv(4), 0, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("MessagesAfter(empty conversation) = %v, %v; want none", seqs(got), err)
	}
}

func testMessagesBefore(t *testing.T, e *env) {
	c := e.conv(2)
	e.commitMsgs(t, e.msgs(c, 1, 10)...)
	e.commitMsgs(t, e.msgs(e.conv(1), 1, 20)...)
	e.commitMsgs(t, e.msgs(e.conv(3), 1, 5)...)

	for _, tc := range []struct {
		before   uint64
		limit    int
		from, to uint64
		more     bool
	}{
		{0, 3, 8, 10, true},
		{0, 9, 2, 10, true},
		{0, 10, 1, 10, false},
		{0, 11, 1, 10, false},
		{11, 3, 8, 10, true},
		{100, 10, 1, 10, false},
		{^uint64(0), 3, 8, 10, true},
		{10, 3, 7, 9, true},
		{5, 3, 2, 4, true},
		{4, 3, 1, 3, false},
		{4, 10, 1, 3, false},
		{2, 1, 1, 1, false},
		{3, 1, 2, 2, true},
		{1, 10, 1, 0, false},
	} {
		got, more, err := e.s.MessagesBefore(e.ctx, c, tc.before, tc.limit)
		if err != nil {
			t.Fatalf("MessagesBefore(before %d, limit %d): %v", tc.before, tc.limit, err)
		}
		what := fmt.Sprintf("MessagesBefore(before %d, limit %d)", tc.before, tc.limit)
		checkMsgs(t, what, got, e.msgs(c, tc.from, tc.to))
		if more != tc.more {
			t.Errorf("%s: hasMore = %v, want %v", what, more, tc.more)
		}
	}
	got, more, err := e.s.MessagesBefore(e.ctx, e.conv(4), 0, 10)
	if err != nil || len(got) != 0 || more {
		t.Errorf("MessagesBefore(empty conversation) = %v, %v, %v; want none", seqs(got), more, err)
	}
}

func testLimits(t *testing.T, e *env) {
	const n = store.MaxLimit + 100
	c := e.conv(1)
	e.fill(t, c, n)
	for _, tc := range []struct {
		limit int
		want  int
	}{
		{0, store.DefaultLimit},
		{-1, store.DefaultLimit},
		{1, 1},
		{store.MaxLimit, store.MaxLimit},
		{store.MaxLimit + 1, store.MaxLimit},
		{1 << 40, store.MaxLimit},
	} {
		if got := store.ClampLimit(tc.limit); got != tc.want {
			t.Errorf("ClampLimit(%d) = %d, want %d", tc.limit, got, tc.want)
		}
		after, err := e.s.MessagesAfter(e.ctx, c, 0, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != tc.want || after[0].Seq != 1 || after[len(after)-1].Seq != uint64(tc.want) {
			t.Errorf("MessagesAfter(limit %d): got %d messages, want seqs 1..%d", tc.limit, len(after), tc.want)
		}
		before, more, err := e.s.MessagesBefore(e.ctx, c, 0, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(before) != tc.want || before[0].Seq != n-uint64(tc.want)+1 || before[len(before)-1].Seq != n || !more {
			t.Errorf("MessagesBefore(limit %d): got %d messages (more %v), want seqs %d..%d and more",
				tc.limit, len(before), more, n-tc.want+1, n)
		}
	}
	// Paging with MessagesAfter visits every seq once.
	var next uint64
	for {
		page, err := e.s.MessagesAfter(e.ctx, c, next, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			if m.Seq != next+1 {
				t.Fatalf("paging after: got seq %d after %d", m.Seq, next)
			}
			next = m.Seq
		}
	}
	if next != n {
		t.Errorf("paging after ended at %d, want %d", next, n)
	}
	// Paging back with MessagesBefore too.
	before, pages := uint64(0), 0
	for {
		page, more, err := e.s.MessagesBefore(e.ctx, c, before, 333)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page) == 0 {
			t.Fatalf("paging before %d: empty page", before)
		}
		want := page[len(page)-1].Seq
		if before != 0 && want != before-1 {
			t.Fatalf("paging before %d: page ends at %d", before, want)
		}
		for i, m := range page {
			if m.Seq != page[0].Seq+uint64(i) {
				t.Fatalf("paging before %d: seqs %v not contiguous", before, seqs(page))
			}
		}
		before = page[0].Seq
		if !more {
			break
		}
	}
	if before != 1 || pages != 4 {
		t.Errorf("paging before ended at %d after %d pages, want 1 after 4", before, pages)
	}
}

func ptrUpdate(conv uint64, user string, kind wire.ReceiptKind, seq uint64) store.PointerUpdate {
	return store.PointerUpdate{ConvID: conv, User: user, Kind: kind, Seq: seq}
}

func testPointers(t *testing.T, e *env) {
	c, c2 := e.conv(1), e.conv(2)
	alice, bob := e.user("alice"), e.user("bob")
	const D, R = wire.ReceiptDelivered, wire.ReceiptRead
	if p := e.pointers(t, c, alice); p != (store.Pointers{}) {
		t.Errorf("Pointers(never set) = %+v, want zero", p)
	}
	step := func(u store.PointerUpdate, advanced bool, want store.Pointers) {
		t.Helper()
		u.Advanced = !advanced // Commit must overwrite it
		b := &store.Batch{Pointers: []store.PointerUpdate{u}}
		e.commit(t, b)
		if b.Pointers[0].Advanced != advanced {
			t.Errorf("update %s %d to %d: Advanced = %v, want %v", u.User, u.Kind, u.Seq, b.Pointers[0].Advanced, advanced)
		}
		if p := e.pointers(t, u.ConvID, u.User); p != want {
			t.Errorf("after update %s %d to %d: Pointers = %+v, want %+v", u.User, u.Kind, u.Seq, p, want)
		}
	}
	step(ptrUpdate(c, alice, D, 5), true, store.Pointers{Delivered: 5})
	step(ptrUpdate(c, alice, D, 3), false, store.Pointers{Delivered: 5})
	step(ptrUpdate(c, alice, D, 5), false, store.Pointers{Delivered: 5})
	step(ptrUpdate(c, alice, D, 0), false, store.Pointers{Delivered: 5})
	step(ptrUpdate(c, alice, R, 4), true, store.Pointers{Delivered: 5, Read: 4})
	step(ptrUpdate(c, alice, R, 2), false, store.Pointers{Delivered: 5, Read: 4})
	step(ptrUpdate(c, alice, D, 6), true, store.Pointers{Delivered: 6, Read: 4})
	// Seen is a pointer of its own, forward-only like the others.
	step(ptrUpdate(c, alice, store.PointerSeen, 9), true, store.Pointers{Delivered: 6, Read: 4, Seen: 9})
	step(ptrUpdate(c, alice, store.PointerSeen, 8), false, store.Pointers{Delivered: 6, Read: 4, Seen: 9})
	step(ptrUpdate(c, alice, R, 5), true, store.Pointers{Delivered: 6, Read: 5, Seen: 9})
	// Per user and per conversation.
	step(ptrUpdate(c, bob, R, 1), true, store.Pointers{Read: 1})
	step(ptrUpdate(c2, alice, D, 2), true, store.Pointers{Delivered: 2})
	if p := e.pointers(t, c, alice); p != (store.Pointers{Delivered: 6, Read: 5, Seen: 9}) {
		t.Errorf("Pointers(c, alice) = %+v after other users' updates", p)
	}
	if p := e.pointers(t, c, e.user("alic")); p != (store.Pointers{}) {
		t.Errorf("Pointers(c, alic) = %+v, want zero", p)
	}
	step(ptrUpdate(c, alice, R, ^uint64(0)), true, store.Pointers{Delivered: 6, Read: ^uint64(0), Seen: 9})
}

func testPointersInOneBatch(t *testing.T, e *env) {
	c := e.conv(1)
	alice, bob := e.user("alice"), e.user("bob")
	const D, R = wire.ReceiptDelivered, wire.ReceiptRead
	e.commit(t, &store.Batch{Pointers: []store.PointerUpdate{ptrUpdate(c, alice, R, 4)}})
	b := &store.Batch{
		Messages: e.msgs(c, 1, 12),
		Pointers: []store.PointerUpdate{
			ptrUpdate(c, alice, R, 3),  // below stored 4
			ptrUpdate(c, alice, R, 10), // advances
			ptrUpdate(c, alice, R, 8),  // below the 10 earlier in this batch
			ptrUpdate(c, alice, R, 10), // equal to it
			ptrUpdate(c, alice, D, 9),  // other kind
			ptrUpdate(c, bob, R, 2),    // other user
			ptrUpdate(c, alice, R, 12), // advances again
			ptrUpdate(c, bob, R, 1),
		},
	}
	e.commit(t, b)
	want := []bool{false, true, false, false, true, true, true, false}
	for i, u := range b.Pointers {
		if u.Advanced != want[i] {
			t.Errorf("update %d (%s kind %d to %d): Advanced = %v, want %v", i, u.User, u.Kind, u.Seq, u.Advanced, want[i])
		}
	}
	if p := e.pointers(t, c, alice); p != (store.Pointers{Delivered: 9, Read: 12}) {
		t.Errorf("Pointers(alice) = %+v, want {9 12}", p)
	}
	if p := e.pointers(t, c, bob); p != (store.Pointers{Read: 2}) {
		t.Errorf("Pointers(bob) = %+v, want {0 2}", p)
	}
	if got := e.lastSeq(t, c); got != 12 {
		t.Errorf("LastSeq = %d, want 12", got)
	}
}

func testBodies(t *testing.T, e *env) {
	c := e.conv(1)
	big := make([]byte, wire.MaxBodySize)
	for i := range big {
		big[i] = byte(rand.Uint32())
	}
	all := make([]byte, 0, 512)
	for i := range 512 {
		all = append(all, byte(i), byte(255-i%256))
	}
	bodies := [][]byte{
		nil,
		{},
		{0},
		{0xff, 0xff, 0xff},
		[]byte("héllo, 世界 \x00 \r\n"),
		all,
		big,
	}
	var want []store.Message
	for i, body := range bodies {
		m := e.msg(c, uint64(i+1))
		m.Body = body
		m.Kind = wire.KindBinary
		want = append(want, m)
	}
	odd := e.msg(c, uint64(len(bodies)+1)) // extreme field values
	odd.MessageID, odd.ServerTimeMS, odd.Kind = ^uint64(0), ^uint64(0), wire.MsgKind(^uint64(0))
	odd.Sender = e.user("ünï\x00cødé")
	odd.SenderDevice = string(bytes.Repeat([]byte{'d'}, wire.MaxIDLen))
	odd.ClientMsgID = strings.Repeat("é", wire.MaxIDLen/2) // ids stay valid UTF-8 (CQL text)
	want = append(want, odd)
	plain := e.msg(c, uint64(len(bodies)+2)) // zero values
	plain.MessageID, plain.ServerTimeMS, plain.Kind, plain.SenderDevice = 0, 0, 0, ""
	want = append(want, plain)
	e.commitMsgs(t, want...)

	got, err := e.s.MessagesAfter(e.ctx, c, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "MessagesAfter", got, want)
	got, _, err = e.s.MessagesBefore(e.ctx, c, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "MessagesBefore", got, want)
	for _, w := range want {
		m, ok, err := e.s.LookupClientMsg(e.ctx, c, w.Sender, w.ClientMsgID)
		if err != nil || !ok || !msgEqual(m, w) {
			t.Errorf("LookupClientMsg(seq %d) = %s, %v, %v", w.Seq, fmtMsg(m), ok, err)
		}
	}
}

func testNoAliasing(t *testing.T, e *env) {
	c := e.conv(1)
	e.fill(t, c, 200)
	var pages [][]store.Message
	for after := uint64(0); after < 200; after += 20 {
		p, err := e.s.MessagesAfter(e.ctx, c, after, 20)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
		p, _, err = e.s.MessagesBefore(e.ctx, c, after+21, 20)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
	hit, _, err := e.s.LookupClientMsg(e.ctx, c, e.user("alice"), "cmid-7")
	if err != nil {
		t.Fatal(err)
	}
	// More reads and writes, which might reuse buffers.
	e.fill(t, e.conv(2), 200)
	for range 5 {
		if _, err := e.s.MessagesAfter(e.ctx, e.conv(2), 0, 200); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range pages {
		from := uint64(i/2)*20 + 1
		checkMsgs(t, fmt.Sprintf("page %d, read earlier", i), p, e.msgs(c, from, from+19))
	}
	if !msgEqual(hit, e.msg(c, 7)) {
		t.Errorf("LookupClientMsg result changed: %s", fmtMsg(hit))
	}
	// Writing into returned bodies does not change the store.
	for _, m := range pages[0] {
		for i := range m.Body {
			m.Body[i] = 'X'
		}
		_ = append(m.Body, "appended"...)
	}
	for i := range hit.Body {
		hit.Body[i] = 'Y'
	}
	again, err := e.s.MessagesAfter(e.ctx, c, 0, 20)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "MessagesAfter after mutating results", again, e.msgs(c, 1, 20))
	checkMsgs(t, "page 1 after mutating page 0", pages[1], e.msgs(c, 1, 20))
	// The caller's batch may be reused after Commit.
	b := &store.Batch{Messages: []store.Message{e.msg(e.conv(3), 1)}}
	e.commit(t, b)
	b.Messages[0].Body[0] = 'Z'
	b.Messages[0].Seq = 99
	b.Reset()
	got, err := e.s.MessagesAfter(e.ctx, e.conv(3), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "message after mutating the committed batch", got, []store.Message{e.msg(e.conv(3), 1)})
}

func testConcurrentReaders(t *testing.T, e *env) {
	const (
		total   = 400
		readers = 4
	)
	c := e.conv(1)
	alice := e.user("alice")
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	wg.Go(func() { // the writer: batches of 1..5 messages, and alice's read pointer at the batch's last seq
		defer close(done)
		for next := uint64(1); next <= total; {
			n := min(1+rand.Uint64N(5), total-next+1)
			b := &store.Batch{
				Messages: e.msgs(c, next, next+n-1),
				Pointers: []store.PointerUpdate{ptrUpdate(c, alice, wire.ReceiptRead, next+n-1)},
			}
			if err := e.s.Commit(e.ctx, b); err != nil {
				t.Errorf("Commit: %v", err)
				return
			}
			if !b.Pointers[0].Advanced {
				t.Errorf("Commit(%d..%d): pointer did not advance", next, next+n-1)
			}
			next += n
		}
	})
	for r := range readers {
		wg.Go(func() {
			var lastSeen, lastPtr uint64
			for i := 0; ; i++ {
				select {
				case <-done:
					if i > 0 {
						return
					}
				default:
				}
				last, err := e.s.LastSeq(e.ctx, c)
				if err != nil {
					t.Errorf("reader %d: LastSeq: %v", r, err)
					return
				}
				if last < lastSeen {
					t.Errorf("reader %d: LastSeq went from %d to %d", r, lastSeen, last)
					return
				}
				lastSeen = last
				ptr, err := e.s.Pointers(e.ctx, c, alice)
				if err != nil {
					t.Errorf("reader %d: Pointers: %v", r, err)
					return
				}
				if ptr.Read < lastPtr {
					t.Errorf("reader %d: read pointer went from %d to %d", r, lastPtr, ptr.Read)
					return
				}
				lastPtr = ptr.Read
				if ptr.Read < last { // committed in the same batch as LastSeq
					t.Errorf("reader %d: read pointer %d below LastSeq %d read before it", r, ptr.Read, last)
					return
				}
				ms, err := e.s.MessagesAfter(e.ctx, c, 0, store.MaxLimit)
				if err != nil {
					t.Errorf("reader %d: MessagesAfter: %v", r, err)
					return
				}
				if uint64(len(ms)) < last {
					t.Errorf("reader %d: MessagesAfter returned %d messages, LastSeq was %d", r, len(ms), last)
					return
				}
				for j, m := range ms {
					if want := e.msg(c, uint64(j+1)); !msgEqual(m, want) {
						t.Errorf("reader %d: MessagesAfter[%d] = %s, want %s", r, j, fmtMsg(m), fmtMsg(want))
						return
					}
				}
				tail, _, err := e.s.MessagesBefore(e.ctx, c, 0, 7)
				if err != nil {
					t.Errorf("reader %d: MessagesBefore: %v", r, err)
					return
				}
				bad := last > 0 && (len(tail) == 0 || tail[len(tail)-1].Seq < last)
				for j := 1; j < len(tail); j++ {
					bad = bad || tail[j].Seq != tail[j-1].Seq+1
				}
				if bad {
					t.Errorf("reader %d: MessagesBefore(0, 7) = %v, LastSeq was %d", r, seqs(tail), last)
					return
				}
				if last > 0 {
					m, ok, err := e.s.LookupClientMsg(e.ctx, c, alice, fmt.Sprintf("cmid-%d", last))
					if err != nil || !ok || !msgEqual(m, e.msg(c, last)) {
						t.Errorf("reader %d: LookupClientMsg(seq %d) = %s, %v, %v", r, last, fmtMsg(m), ok, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if got := e.lastSeq(t, c); got != total {
		t.Errorf("LastSeq = %d, want %d", got, total)
	}
}

func testConcurrentCommits(t *testing.T, e *env) {
	const (
		writers = 4
		rounds  = 40
	)
	c := e.conv(1)
	alice := e.user("alice")
	// Every writer behaves like a core that believes it owns c: it reads the
	// last seq, commits a message of its own at the next seq and moves
	// alice's read pointer there; refused (ErrSeqConflict), it reads again.
	// The fence must leave every seq with exactly one message, each writer's
	// messages findable by their client_msg_id, nothing overwritten.
	var wg sync.WaitGroup
	conflicts := make([]int, writers)
	for w := range writers {
		wg.Go(func() {
			var prev uint64
			for i := range rounds {
				for {
					last, err := e.s.LastSeq(e.ctx, c)
					if err != nil {
						t.Errorf("writer %d: LastSeq: %v", w, err)
						return
					}
					m := e.msg(c, last+1)
					m.MessageID = uint64(w)<<32 | uint64(i)
					m.ClientMsgID = fmt.Sprintf("w%d-%d", w, i)
					b := &store.Batch{
						Messages: []store.Message{m},
						Pointers: []store.PointerUpdate{ptrUpdate(c, alice, wire.ReceiptRead, m.Seq)},
					}
					err = e.s.Commit(e.ctx, b)
					if errors.Is(err, store.ErrSeqConflict) {
						conflicts[w]++
						continue
					}
					if err != nil {
						t.Errorf("writer %d: Commit: %v", w, err)
						return
					}
					if !b.Pointers[0].Advanced || m.Seq <= prev {
						t.Errorf("writer %d: seq %d after %d, advanced %v", w, m.Seq, prev, b.Pointers[0].Advanced)
					}
					prev = m.Seq
					break
				}
			}
		})
	}
	wg.Wait()
	const top = writers * rounds
	if p := e.pointers(t, c, alice); p.Read != top {
		t.Errorf("read pointer = %d, want %d", p.Read, top)
	}
	if got := e.lastSeq(t, c); got != top {
		t.Errorf("LastSeq = %d, want %d", got, top)
	}
	ms, err := e.s.MessagesAfter(e.ctx, c, 0, top)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != top {
		t.Fatalf("MessagesAfter: %d messages, want %d", len(ms), top)
	}
	for i, m := range ms {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
		got, ok, err := e.s.LookupClientMsg(e.ctx, c, alice, m.ClientMsgID)
		if err != nil || !ok || !msgEqual(got, m) {
			t.Errorf("LookupClientMsg(%s) = %v, %v, %v; stored at seq %d: %v", m.ClientMsgID, got, ok, err, m.Seq, m)
		}
	}
	for w := range writers {
		for i := range rounds {
			if _, ok, err := e.s.LookupClientMsg(e.ctx, c, alice, fmt.Sprintf("w%d-%d", w, i)); err != nil || !ok {
				t.Errorf("writer %d message %d: found %v, %v", w, i, ok, err)
			}
		}
	}
	t.Logf("refused commits per writer: %v", conflicts)
}

// testConcurrentCommitsDisjoint runs writers on conversations of their own
// that also all move one shared conversation's pointer: commits that share
// no conversation may run together, those that share one must not lose an
// update.
func testConcurrentCommitsDisjoint(t *testing.T, e *env) {
	const (
		writers = 8
		rounds  = 30
	)
	shared := e.conv(100)
	bob := e.user("bob")
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			c := e.conv(uint64(w + 1))
			for i := range rounds {
				seq := uint64(i + 1)
				b := &store.Batch{
					Messages: []store.Message{e.msg(c, seq)},
					Pointers: []store.PointerUpdate{
						ptrUpdate(c, bob, wire.ReceiptDelivered, seq),
						ptrUpdate(shared, bob, wire.ReceiptRead, uint64(i*writers+w+1)),
					},
				}
				if err := e.s.Commit(e.ctx, b); err != nil {
					t.Errorf("writer %d: Commit: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for w := range writers {
		c := e.conv(uint64(w + 1))
		if got := e.lastSeq(t, c); got != rounds {
			t.Errorf("conv %d: LastSeq = %d, want %d", w+1, got, rounds)
		}
		if p := e.pointers(t, c, bob); p.Delivered != rounds {
			t.Errorf("conv %d: delivered pointer = %d, want %d", w+1, p.Delivered, rounds)
		}
		ms, err := e.s.MessagesAfter(e.ctx, c, 0, rounds)
		if err != nil {
			t.Fatal(err)
		}
		checkMsgs(t, "MessagesAfter", ms, e.msgs(c, 1, rounds))
	}
	if p := e.pointers(t, shared, bob); p.Read != writers*rounds {
		t.Errorf("shared read pointer = %d, want %d", p.Read, writers*rounds)
	}
}

func testClose(t *testing.T, e *env) {
	c := e.conv(1)
	e.commitMsgs(t, e.msg(c, 1))
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	ctx := e.ctx
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: error %v, want ErrClosed", what, err)
		}
	}
	_, err := e.s.EnsureConversation(ctx, store.Conversation{ID: c, Kind: wire.ConvGroup})
	check("EnsureConversation", err)
	_, err = e.s.Conversation(ctx, c)
	check("Conversation", err)
	_, err = e.s.UserConversations(ctx, e.user("alice"))
	check("UserConversations", err)
	_, err = e.s.LastSeq(ctx, c)
	check("LastSeq", err)
	b := &store.Batch{
		Messages: []store.Message{e.msg(c, 2)},
		Pointers: []store.PointerUpdate{ptrUpdate(c, e.user("alice"), wire.ReceiptRead, 2)},
	}
	check("Commit", e.s.Commit(ctx, b))
	if b.Pointers[0].Advanced {
		t.Error("Commit after Close set Advanced")
	}
	check("Commit(empty)", e.s.Commit(ctx, &store.Batch{}))
	_, _, err = e.s.LookupClientMsg(ctx, c, e.user("alice"), "cmid-1")
	check("LookupClientMsg", err)
	_, err = e.s.LookupClientMsgs(ctx, []store.ClientMsgKey{{ConvID: c, Sender: e.user("alice"), ClientMsgID: "cmid-1"}})
	check("LookupClientMsgs", err)
	_, err = e.s.LookupClientMsgs(ctx, nil)
	check("LookupClientMsgs(none)", err)
	_, err = e.s.MessagesAfter(ctx, c, 0, 10)
	check("MessagesAfter", err)
	_, _, err = e.s.MessagesBefore(ctx, c, 0, 10)
	check("MessagesBefore", err)
	_, err = e.s.Pointers(ctx, c, e.user("alice"))
	check("Pointers", err)
	_, err = e.s.UserSettings(ctx, e.user("alice"))
	check("UserSettings", err)
	check("SetUserSettings", e.s.SetUserSettings(ctx, e.user("alice"), store.Settings{}))
}

func testUserSettings(t *testing.T, e *env) {
	alice, bob := e.user("alice"), e.user("bob")
	get := func(user string) store.Settings {
		t.Helper()
		st, err := e.s.UserSettings(e.ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := get(alice); st != (store.Settings{}) {
		t.Fatalf("never-set settings %+v, want zero", st)
	}
	for _, v := range []store.Visibility{store.VisibilityNobody, store.VisibilityEveryone, store.VisibilityContacts} {
		if err := e.s.SetUserSettings(e.ctx, alice, store.Settings{PresenceVisibility: v}); err != nil {
			t.Fatal(err)
		}
		if st := get(alice); st.PresenceVisibility != v {
			t.Fatalf("after setting %d: %+v", v, st)
		}
	}
	if err := e.s.SetUserSettings(e.ctx, bob, store.Settings{PresenceVisibility: store.VisibilityNobody}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetUserSettings(e.ctx, bob, store.Settings{PresenceVisibility: 3}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("visibility 3: %v, want ErrInvalid", err)
	}
	if st := get(bob); st.PresenceVisibility != store.VisibilityNobody {
		t.Fatalf("bob after a refused write %+v", st)
	}
	if st := get(alice); st.PresenceVisibility != store.VisibilityContacts {
		t.Fatalf("alice changed by bob's write: %+v", st)
	}
}

func testDurability(t *testing.T, e *env) {
	if e.o.Reopen == nil {
		t.Skip("no Options.Reopen")
	}
	c, c2 := e.conv(1), e.conv(2)
	alice, bob := e.user("alice"), e.user("bob")
	conv := store.Conversation{ID: c, Kind: wire.ConvDirect, Members: []string{alice, bob}, CreatedMS: 99}
	if _, err := e.s.EnsureConversation(e.ctx, conv); err != nil {
		t.Fatal(err)
	}
	carol := e.user("carol")
	group := e.newGroup(t, 3, "before", []string{alice}, alice, bob)
	e.commit(t, &store.Batch{GroupUpdates: []store.GroupUpdate{{
		Conv:  store.Conversation{ID: group.ID, Name: "after", Members: []string{alice, carol}, Admins: []string{carol}},
		Added: []string{carol}, Removed: []string{bob},
	}}})
	group.Name, group.Members, group.Admins = "after", []string{alice, carol}, []string{carol}
	e.fill(t, c, 250)
	e.commitMsgs(t, e.msg(c2, 3))
	e.commit(t, &store.Batch{Pointers: []store.PointerUpdate{
		ptrUpdate(c, alice, wire.ReceiptRead, 200),
		ptrUpdate(c, bob, wire.ReceiptDelivered, 250),
	}})
	if err := e.s.SetUserSettings(e.ctx, carol, store.Settings{PresenceVisibility: store.VisibilityNobody}); err != nil {
		t.Fatal(err)
	}

	s := e.o.Reopen(t, e.s)
	if s == nil {
		t.Fatal("Reopen returned nil")
	}
	t.Cleanup(func() { _ = s.Close() })
	e.s = s

	got, err := s.Conversation(e.ctx, c)
	if err != nil || !convEqual(got, conv) {
		t.Errorf("Conversation after reopen = %+v, %v; want %+v", got, err, conv)
	}
	if ids, err := s.UserConversations(e.ctx, bob); err != nil || !slices.Equal(ids, []uint64{c}) {
		t.Errorf("UserConversations(bob) after reopen = %v, %v", ids, err)
	}
	e.checkConv(t, "updated group after reopen", group)
	if st, err := s.UserSettings(e.ctx, carol); err != nil || st.PresenceVisibility != store.VisibilityNobody {
		t.Errorf("UserSettings(carol) after reopen = %+v, %v", st, err)
	}
	if ids, err := s.UserConversations(e.ctx, carol); err != nil || !slices.Equal(ids, []uint64{group.ID}) {
		t.Errorf("UserConversations(carol) after reopen = %v, %v", ids, err)
	}
	if got := e.lastSeq(t, c); got != 250 {
		t.Errorf("LastSeq after reopen = %d, want 250", got)
	}
	if got := e.lastSeq(t, c2); got != 3 {
		t.Errorf("LastSeq(c2) after reopen = %d, want 3", got)
	}
	ms, err := s.MessagesAfter(e.ctx, c, 0, store.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	checkMsgs(t, "MessagesAfter after reopen", ms, e.msgs(c, 1, 250))
	if m, ok, err := s.LookupClientMsg(e.ctx, c, alice, "cmid-17"); err != nil || !ok || !msgEqual(m, e.msg(c, 17)) {
		t.Errorf("LookupClientMsg after reopen = %s, %v, %v", fmtMsg(m), ok, err)
	}
	if p := e.pointers(t, c, alice); p != (store.Pointers{Read: 200}) {
		t.Errorf("Pointers(alice) after reopen = %+v", p)
	}
	if p := e.pointers(t, c, bob); p != (store.Pointers{Delivered: 250}) {
		t.Errorf("Pointers(bob) after reopen = %+v", p)
	}
	// The reopened store keeps going: monotonic pointers, last seq.
	b := &store.Batch{
		Messages: e.msgs(c, 251, 251),
		Pointers: []store.PointerUpdate{ptrUpdate(c, alice, wire.ReceiptRead, 150), ptrUpdate(c, alice, wire.ReceiptRead, 251)},
	}
	e.commit(t, b)
	if b.Pointers[0].Advanced || !b.Pointers[1].Advanced {
		t.Errorf("pointer updates after reopen: Advanced = %v, %v; want false, true", b.Pointers[0].Advanced, b.Pointers[1].Advanced)
	}
	if got := e.lastSeq(t, c); got != 251 {
		t.Errorf("LastSeq = %d, want 251", got)
	}
}
