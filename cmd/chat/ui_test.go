package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/sdk/sdktest"
	"github.com/chatd-dev/chatd/wire"
)

// patience bounds waits; it is a safety net, not an assertion about speed.
const patience = 10 * time.Second

// screen is the terminal's output, safe to read while the UI writes.
type screen struct {
	mu  sync.Mutex
	b   bytes.Buffer
	pos int // expect() looks after this offset
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// expect waits for a line matching re after the previous match.
func (s *screen) expect(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile("(?m)^" + re + "$")
	deadline := time.Now().Add(patience)
	for {
		s.mu.Lock()
		rest := s.b.String()[s.pos:]
		if loc := rx.FindStringIndex(rest); loc != nil {
			s.pos += loc[1]
			s.mu.Unlock()
			return rest[loc[0]:loc[1]]
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %q after:\n%s\nfull output:\n%s", re, rest, s.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type terminal struct {
	in     *io.PipeWriter
	out    *screen
	done   chan error
	client *sdk.Client
}

func (tm *terminal) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(tm.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, srv *sdktest.Server, user, device string, store sdk.CursorStore) *sdk.Client {
	t.Helper()
	c, err := sdk.New(sdk.Config{
		Cursors:    store,
		URL:        srv.URL(),
		Token:      func(ctx context.Context) (string, error) { return sdk.DevToken(ctx, srv.APIURL(), user, device) },
		DeviceID:   device,
		BackoffMin: time.Millisecond,
		BackoffMax: 10 * time.Millisecond,
		// Receipts move quickly so the tests do not wait for the default 1s.
		ReceiptInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startTerminal runs the UI for user against srv.
func startTerminal(t *testing.T, srv *sdktest.Server, user, peer string, store sdk.CursorStore) *terminal {
	t.Helper()
	c := newClient(t, srv, user, "laptop", store)
	pr, pw := io.Pipe()
	tm := &terminal{in: pw, out: &screen{}, done: make(chan error, 1), client: c}
	go func() {
		tm.done <- run(context.Background(), c, pr, tm.out, uiOptions{User: user, Peer: peer, Location: time.UTC})
	}()
	t.Cleanup(func() { pw.Close() })
	return tm
}

const clock = `\[\d\d:\d\d\]`

func TestChatSession(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	srv.Store(conv, "bob", "phone", "", wire.KindText, []byte("are you there?"))

	alice := startTerminal(t, srv, "alice", "bob", nil)
	out := alice.out
	out.expect(t, `\* connected`)
	out.expect(t, `\* talking to bob \(conversation 1\)`)
	// What bob wrote while alice was away is shown, and marked read.
	out.expect(t, clock+` bob: are you there\?`)
	waitFor(t, "alice's read pointer 1", func() bool { return srv.Pointer(conv, "alice", wire.ReceiptRead) == 1 })

	bob := newClient(t, srv, "bob", "phone", nil)
	alice.typeLine(t, "hi")
	out.expect(t, `… you: hi`)
	out.expect(t, `  ✓ sent: "hi"`)
	// Bob's client receives it and marks it delivered by itself...
	out.expect(t, `  ✓✓ delivered: "hi"`)
	// ...and once bob reads it, alice sees that too.
	bob.MarkRead(conv, 2)
	out.expect(t, `  ✓✓ read: "hi"`)

	if _, err := bob.SendWait(ctxT(t), conv, wire.KindText, []byte("hello alice")); err != nil {
		t.Fatal(err)
	}
	out.expect(t, clock+` bob: hello alice`)
	waitFor(t, "alice's read pointer 3", func() bool { return srv.Pointer(conv, "alice", wire.ReceiptRead) == 3 })

	alice.typeLine(t, "/who")
	out.expect(t, `\* talking to bob \(conversation 1\)`)
	alice.typeLine(t, "/history 5")
	out.expect(t, `\* no older messages`)
	alice.typeLine(t, "//slash")
	out.expect(t, `… you: /slash`)
	out.expect(t, `  ✓ sent: "/slash"`)
	alice.typeLine(t, "/nope")
	out.expect(t, `\* unknown command /nope; try /help`)

	// The connection drops; the UI says so and recovers.
	for _, c := range srv.Conns() {
		if c.User() == "alice" {
			c.Close()
		}
	}
	out.expect(t, `\* reconnecting… .*`)
	out.expect(t, `\* connected`)

	alice.typeLine(t, "/quit")
	select {
	case err := <-alice.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(patience):
		t.Fatal("/quit did not return")
	}
	if s := out.String(); strings.Count(s, "hello alice") != 1 || strings.Count(s, "are you there") != 1 {
		t.Fatalf("messages shown more than once:\n%s", s)
	}
}

func TestHistoryAndOtherConversations(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	other := srv.Direct("alice", "carol")
	alice := startTerminal(t, srv, "alice", "", nil)
	out := alice.out
	out.expect(t, `\* connected`)

	alice.typeLine(t, "no one to talk to")
	out.expect(t, `\* no conversation open; use /open <user>`)
	alice.typeLine(t, "/open bob")
	out.expect(t, `\* talking to bob \(conversation 1\)`)

	for i := range 30 {
		srv.Post(conv, "bob", "phone", wire.KindText, []byte("b"+string(rune('A'+i%26))))
	}
	srv.Post(other, "carol", "phone", wire.KindText, []byte("psst"))
	out.expect(t, clock+` \(with carol\) carol: psst`)
	waitFor(t, "30 messages shown", func() bool { return strings.Count(out.String(), "] bob: ") == 30 })
	// Carol's message was not in the current conversation: not marked read.
	waitFor(t, "bob's messages read", func() bool { return srv.Pointer(conv, "alice", wire.ReceiptRead) == 30 })
	if p := srv.Pointer(other, "alice", wire.ReceiptRead); p != 0 {
		t.Fatalf("carol's conversation marked read up to %d", p)
	}

	// All 30 were shown live, so history has nothing older.
	alice.typeLine(t, "/history")
	out.expect(t, `\* no older messages`)

	// A terminal started later shows everything it missed.
	late := startTerminal(t, srv, "bob", "alice", nil)
	late.out.expect(t, `\* talking to alice \(conversation 1\)`)
	waitFor(t, "bob's backlog", func() bool { return strings.Count(late.out.String(), "] you (phone): ") == 30 })

	alice.typeLine(t, "/open carol")
	out.expect(t, `\* talking to carol \(conversation 2\)`)
	waitFor(t, "carol's message read on /open", func() bool { return srv.Pointer(other, "alice", wire.ReceiptRead) == 1 })
}

func TestHistoryAfterRestart(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	conv := srv.Direct("alice", "bob")
	for i := range 12 {
		srv.Store(conv, "bob", "phone", "", wire.KindText, []byte{'a' + byte(i)})
	}
	dir := t.TempDir()

	first := startTerminal(t, srv, "alice", "bob", sdk.FileCursorStore(dir+"/cursors.json"))
	first.out.expect(t, clock+` bob: l`)
	first.typeLine(t, "/quit")
	<-first.done
	if err := first.client.Close(); err != nil {
		t.Fatal(err)
	}

	// Restarted, it shows nothing old, but can page back.
	second := startTerminal(t, srv, "alice", "bob", sdk.FileCursorStore(dir+"/cursors.json"))
	out := second.out
	out.expect(t, `\* talking to bob \(conversation 1\)`)
	second.typeLine(t, "/history 5")
	out.expect(t, `\* 5 earlier message\(s\):`)
	for _, want := range "hijkl" {
		out.expect(t, clock+" bob: "+string(want))
	}
	second.typeLine(t, "/history 5")
	out.expect(t, `\* 5 earlier message\(s\):`)
	out.expect(t, clock+" bob: c")
	second.typeLine(t, "/history 5")
	out.expect(t, `\* 2 earlier message\(s\):`)
	out.expect(t, clock+" bob: a")
	out.expect(t, clock+" bob: b")
	out.expect(t, `\* \(start of the conversation\)`)
	second.typeLine(t, "/history")
	out.expect(t, `\* no older messages`)
}

func TestTypeAheadWaitsForPeer(t *testing.T) {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	alice := startTerminal(t, srv, "alice", "bob", nil)
	alice.typeLine(t, "early bird") // before the conversation is open
	out := alice.out
	out.expect(t, `\* connected`)
	out.expect(t, `\* talking to bob \(conversation 1\)`)
	out.expect(t, `… you: early bird`)
	out.expect(t, `  ✓ sent: "early bird"`)
	if strings.Contains(out.String(), "no conversation open") {
		t.Fatalf("typed-ahead line refused:\n%s", out.String())
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSystemText(t *testing.T) {
	ev := func(op wire.GroupOp, name string, users ...string) []byte {
		e := wire.GroupEvent{Op: op, Actor: []byte("alice"), Name: []byte(name)}
		for _, u := range users {
			e.Users = append(e.Users, []byte(u))
		}
		return e.Append(nil)
	}
	for _, tc := range []struct {
		body []byte
		want string
	}{
		{ev(wire.GroupCreated, "hikers", "bob", "carol"), `alice created "hikers" with bob, carol`},
		{ev(wire.GroupAdd, "", "dave"), "alice added dave"},
		{ev(wire.GroupLeave, "", "bob"), "alice left; bob is now an admin"},
		{ev(wire.GroupLeave, ""), "alice left"},
		{ev(wire.GroupRename, "x"), `alice renamed the group to "x"`},
		{[]byte("not an event"), "not an event"},
	} {
		if got := systemText(tc.body); got != tc.want {
			t.Errorf("systemText = %q, want %q", got, tc.want)
		}
	}
}
