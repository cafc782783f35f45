package sdk_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/sdk/sdktest"
	"github.com/chatd-dev/chatd/wire"
)

// Alice opens a conversation with Bob and sends him a message; Bob reads it
// and Alice sees the read receipt. The fake server from package sdktest
// stands in for chatd here; against a real dev server, use its URLs.
func Example() {
	srv := sdktest.NewServer(sdktest.Options{})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	connect := func(user, device string) *sdk.Client {
		c, err := sdk.New(sdk.Config{
			URL:      srv.URL(), // e.g. "ws://127.0.0.1:8080/chat/v1/ws"
			DeviceID: device,
			Token: func(ctx context.Context) (string, error) {
				return sdk.DevToken(ctx, srv.APIURL(), user, device)
			},
			// Cursors: sdk.FileCursorStore("/var/lib/myapp/cursors.json"),
		})
		if err != nil {
			log.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			log.Fatal(err)
		}
		return c
	}
	alice := connect("alice", "laptop")
	defer alice.Close()
	bob := connect("bob", "phone")
	defer bob.Close()

	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		log.Fatal(err)
	}
	ack, err := alice.SendWait(ctx, conv.ID, wire.KindText, []byte("hi bob"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice: stored at seq", ack.Seq)

	// Bob's app: show messages, mark them read.
	for ev := range bob.Events() {
		if m, ok := ev.(sdk.Message); ok {
			fmt.Printf("bob: %s says %q\n", m.Sender, m.Body)
			bob.MarkRead(m.Conv, m.Seq)
			break
		}
	}
	// Alice's app: wait for the read receipt.
	for ev := range alice.Events() {
		if r, ok := ev.(sdk.Receipt); ok && r.Kind == wire.ReceiptRead {
			fmt.Printf("alice: %s read up to seq %d\n", r.User, r.UpToSeq)
			break
		}
	}
	// Output:
	// alice: stored at seq 1
	// bob: alice says "hi bob"
	// alice: bob read up to seq 1
}
