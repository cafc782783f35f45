package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/node"
	"github.com/chatd-dev/chatd/sdk"
)

// The group and inbox commands run against a whole chatd node in process
// (gateway, kfake, Pebble, core, API): the fake server in sdktest speaks
// neither groups nor the HTTP inbox.

func startNode(t *testing.T) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir: t.TempDir(), GatewayAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", AdminAddr: "off",
		Dev: true, Partitions: 2,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return n
}

// nodeTerminal runs the UI for user on n, showing the inbox at start.
func nodeTerminal(t *testing.T, n *node.Node, user string) *terminal {
	t.Helper()
	c, err := sdk.New(sdk.Config{
		URL: n.GatewayURL(), APIURL: n.APIURL(), DeviceID: "laptop",
		Token:           func(ctx context.Context) (string, error) { return sdk.DevToken(ctx, n.APIURL(), user, "laptop") },
		ReceiptInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pr, pw := io.Pipe()
	tm := &terminal{in: pw, out: &screen{}, done: make(chan error, 1), client: c}
	go func() {
		tm.done <- run(context.Background(), c, pr, tm.out, uiOptions{User: user, Location: time.UTC, Inbox: true})
	}()
	t.Cleanup(func() { pw.Close() })
	return tm
}

// TestGroupsAndInbox: a group made, changed and left from the terminal;
// the inbox shows conversations latest first with unread counts, and /go
// switches to one of them.
func TestGroupsAndInbox(t *testing.T) {
	n := startNode(t)
	alice := nodeTerminal(t, n, "alice")
	a := alice.out
	a.expect(t, `\* connected`)
	a.expect(t, `\* inbox: no conversations yet; .*`)
	bob := nodeTerminal(t, n, "bob")
	b := bob.out
	b.expect(t, `\* connected`)

	alice.typeLine(t, "/group hikers bob carol")
	a.expect(t, `\* in group "hikers" \(conversation \d+, 3 members\)`)
	a.expect(t, clock+` you: \* alice created "hikers" with bob, carol`)
	b.expect(t, clock+` \(in hikers\) alice: \* alice created "hikers" with bob, carol`)
	alice.typeLine(t, "/who")
	a.expect(t, `\* in group "hikers" \(conversation \d+\): 3 members: alice, bob, carol; admins: alice`)
	alice.typeLine(t, "hello hikers")
	a.expect(t, `  ✓ sent: "hello hikers"`)
	b.expect(t, clock+` \(in hikers\) alice: hello hikers`)

	// Bob is no admin: his add is refused with the server's code.
	bob.typeLine(t, "/inbox")
	b.expect(t, `\* inbox:`)
	b.expect(t, `\*  1\. hikers \(group, 3 members\) \(2 unread\) `+clock+` alice: "hello hikers"`)
	bob.typeLine(t, "/go 1")
	b.expect(t, `\* in group "hikers" \(conversation \d+\)`)
	bob.typeLine(t, "/add dave")
	b.expect(t, `\* group change refused: .*not_admin.*`)
	bob.typeLine(t, "count me in")
	b.expect(t, `  ✓ sent: "count me in"`)
	a.expect(t, clock+` bob: count me in`)

	alice.typeLine(t, "/rename hikers 2026")
	a.expect(t, `\* in group "hikers 2026" \(conversation \d+, 3 members\)`)
	b.expect(t, clock+` alice: \* alice renamed the group to "hikers 2026"`)
	alice.typeLine(t, "/promote bob")
	a.expect(t, clock+` you: \* alice made bob admin`)

	// Alice turns to a direct conversation; bob, now an admin, adds dave
	// meanwhile. Alice's inbox lists the direct conversation first (its
	// message is later) and the group with the add unread.
	alice.typeLine(t, "/open carol")
	a.expect(t, `\* talking to carol \(conversation \d+\)`)
	bob.typeLine(t, "/add dave")
	b.expect(t, `\* in group "hikers 2026" \(conversation \d+, 4 members\)`)
	a.expect(t, clock+` \(in hikers 2026\) bob: \* bob added dave`)
	time.Sleep(3 * time.Millisecond) // a later server millisecond: orders, asserts nothing
	alice.typeLine(t, "are you coming?")
	a.expect(t, `  ✓ sent: "are you coming\?"`)
	alice.typeLine(t, "/inbox")
	a.expect(t, `\* inbox:`)
	a.expect(t, `\*  1\. carol `+clock+` you: "are you coming\?"`)
	a.expect(t, `\*  2\. hikers 2026 \(group, 4 members\) \(1 unread\) `+clock+` bob: "\* bob added dave"`)

	bob.typeLine(t, "/leave")
	b.expect(t, `\* you left "hikers 2026"`)
	a.expect(t, clock+` \(in hikers 2026\) bob: \* bob left`)
	bob.typeLine(t, "/leave")
	b.expect(t, `\* not in a group; .*`)
	bob.typeLine(t, "/go 7")
	b.expect(t, `\* no conversation 7; /inbox lists them`)
	alice.typeLine(t, "/go 2")
	a.expect(t, `\* in group "hikers 2026" \(conversation \d+\)`)
	alice.typeLine(t, "still here")
	a.expect(t, `  ✓ sent: "still here"`)
}
