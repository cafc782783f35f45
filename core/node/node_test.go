package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/core/bus"
	"github.com/chatd-dev/chatd/core/bus/bustest"
	"github.com/chatd-dev/chatd/core/node"
	"github.com/chatd-dev/chatd/core/routing/redistest"
	"github.com/chatd-dev/chatd/core/store/scylla"
	"github.com/chatd-dev/chatd/gateway"
	"github.com/chatd-dev/chatd/wire"
)

// These tests run a whole node (gateway, kfake, Pebble, core) in process
// and drive it over real WebSockets with the raw protocol client from
// bench/, so they can assert on individual frames.

const waitFor = 20 * time.Second // generous upper bound, never asserted as a timing

func startNode(t *testing.T, dir string) *node.Node {
	t.Helper()
	return startNodeWith(t, dir, nil)
}

// startNodeWith is startNode with the config changed by edit first.
func startNodeWith(t *testing.T, dir string, edit func(*node.Config)) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := node.Config{
		DataDir:     dir,
		GatewayAddr: "127.0.0.1:0",
		APIAddr:     "127.0.0.1:0",
		AdminAddr:   "127.0.0.1:0",
		Dev:         true,
		Partitions:  4,
		// The tests pipeline thousands of frames per connection, far above
		// the per-connection flood limit meant for people.
		Gateway: gateway.Config{InboundRate: 1_000_000, InboundBurst: 1_000_000},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.Start(ctx, cfg)
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

// client is a raw protocol connection whose frames are read by a goroutine
// into a channel (copied), so tests can wait for frames with a deadline.
type client struct {
	t      *testing.T
	user   string
	conn   *bench.Conn
	frames chan []byte
	dec    wire.Decoder
}

func connect(t *testing.T, n *node.Node, user, device string) *client {
	t.Helper()
	tok, err := n.Signer().Mint(user, device, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := bench.Dial(ctx, n.GatewayURL(), tok, device)
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	cl := &client{t: t, user: user, conn: c, frames: make(chan []byte, 65536)}
	go func() {
		defer close(cl.frames)
		for {
			f, err := c.Read()
			if err != nil {
				return
			}
			cl.frames <- bytes.Clone(f)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return cl
}

func (c *client) send(frame []byte) {
	c.t.Helper()
	if err := c.conn.Write(frame); err != nil {
		c.t.Fatalf("%s: write: %v", c.user, err)
	}
}

// next returns the next frame's type, decoded into c.dec.
func (c *client) next() wire.Type {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("%s: connection closed", c.user)
		}
		t, _, err := c.dec.Decode(f)
		if err != nil {
			c.t.Fatalf("%s: bad frame from server: %v", c.user, err)
		}
		return t
	case <-time.After(waitFor):
		c.t.Fatalf("%s: no frame from the server", c.user)
	}
	return 0
}

// expect reads frames until one of type want arrives; other frames fail
// the test unless they are of a type in skip.
func (c *client) expect(want wire.Type, skip ...wire.Type) {
	c.t.Helper()
	for {
		t := c.next()
		if t == want {
			return
		}
		ok := false
		for _, s := range skip {
			ok = ok || s == t
		}
		if !ok {
			if t == wire.TypeError {
				c.t.Fatalf("%s: want %v, got ERROR %v (%s)", c.user, want, c.dec.Error.Code, c.dec.Error.Message)
			}
			c.t.Fatalf("%s: want %v, got %v", c.user, want, t)
		}
	}
}

// quiet asserts that no frame arrives for a short while. It is used only
// after a marker frame proves everything before it was delivered, so the
// pause is not a timing assertion but a "nothing more" check.
func (c *client) noMoreFrames() {
	c.t.Helper()
	select {
	case f := <-c.frames:
		t, _, _, _ := wire.ParseHeader(f)
		c.t.Fatalf("%s: unexpected frame %v", c.user, t)
	case <-time.After(200 * time.Millisecond):
	}
}

func (c *client) openDirect(peer string) uint64 {
	c.t.Helper()
	o := wire.OpenDirect{ReqID: 7, Peer: []byte(peer)}
	c.send(o.Append(nil, 0))
	c.expect(wire.TypeConv)
	if c.dec.Conv.ReqID != 7 || c.dec.Conv.Kind != wire.ConvDirect || len(c.dec.Conv.Members) != 2 {
		c.t.Fatalf("bad CONV: %+v", c.dec.Conv)
	}
	return c.dec.Conv.ConvID
}

func sendFrame(conv uint64, cmid, body string) []byte {
	s := wire.Send{ConvID: conv, ClientMsgID: []byte(cmid), Kind: wire.KindText, Body: []byte(body)}
	return s.Append(nil, 0)
}

func receiptFrame(conv uint64, kind wire.ReceiptKind, seq uint64) []byte {
	r := wire.Receipt{ConvID: conv, Kind: kind, UpToSeq: seq}
	return r.Append(nil, 0)
}

// TestChatThousandEachWay: Alice and Bob exchange 1,000 messages each way
// at once; every ACK arrives, each side gets the other's messages in send
// order with strictly increasing seqs, and delivered/read receipts sent in
// batches reach the sender up to its last message.
func TestChatThousandEachWay(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	conv := alice.openDirect("bob")
	if got := bob.openDirect("alice"); got != conv {
		t.Fatalf("bob opened %d, alice %d", got, conv)
	}
	const N = 1000
	type result struct {
		lastOwnSeq  uint64
		ownSeqs     map[uint64]bool
		peerSeqs    []uint64
		delivered   uint64
		read        uint64
		errFrames   int
		peerReceipt [3]uint64
	}
	run := func(me *client, prefix, peerPrefix string, res *result, wg *sync.WaitGroup) {
		defer wg.Done()
		res.ownSeqs = map[uint64]bool{}
		go func() {
			for i := 0; i < N; i++ {
				me.send(sendFrame(conv, fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("%s says %d", prefix, i)))
			}
		}()
		acks, msgs := 0, 0
		var highest uint64
		for acks < N || msgs < N || res.peerReceipt[wire.ReceiptRead] < res.lastOwnSeq || res.lastOwnSeq == 0 {
			switch me.next() {
			case wire.TypeAck:
				a := &me.dec.Ack
				if want := fmt.Sprintf("%s-%d", prefix, acks); string(a.ClientMsgID) != want {
					t.Errorf("%s: ACK %d for %q, want %q", me.user, acks, a.ClientMsgID, want)
				}
				if res.ownSeqs[a.Seq] {
					t.Errorf("%s: seq %d acked twice", me.user, a.Seq)
				}
				res.ownSeqs[a.Seq] = true
				res.lastOwnSeq = max(res.lastOwnSeq, a.Seq)
				highest = max(highest, a.Seq)
				acks++
			case wire.TypeMsg:
				m := &me.dec.Msg
				if want := fmt.Sprintf("%s-%d", peerPrefix, msgs); string(m.ClientMsgID) != want {
					t.Errorf("%s: message %d is %q, want %q", me.user, msgs, m.ClientMsgID, want)
				}
				if k := len(res.peerSeqs); k > 0 && m.Seq <= res.peerSeqs[k-1] {
					t.Errorf("%s: seq %d after %d", me.user, m.Seq, res.peerSeqs[k-1])
				}
				res.peerSeqs = append(res.peerSeqs, m.Seq)
				highest = max(highest, m.Seq)
				msgs++
				// Receipts batched like the SDK does: one per 100 messages,
				// and the last one.
				if msgs%100 == 0 {
					me.send(receiptFrame(conv, wire.ReceiptDelivered, m.Seq))
				}
				if msgs == N {
					me.send(receiptFrame(conv, wire.ReceiptRead, highest))
				}
			case wire.TypeReceipt:
				r := &me.dec.Receipt
				if string(r.User) == me.user {
					t.Errorf("%s: got its own receipt", me.user)
				}
				if r.UpToSeq < res.peerReceipt[r.Kind] {
					t.Errorf("%s: receipt went backwards", me.user)
				}
				res.peerReceipt[r.Kind] = r.UpToSeq
			case wire.TypeError:
				t.Errorf("%s: ERROR %v %s", me.user, me.dec.Error.Code, me.dec.Error.Message)
				return
			}
		}
		// Bob's read receipt covers everything he had seen, which includes
		// all of Alice's messages once he has read all of them.
		res.delivered, res.read = res.peerReceipt[wire.ReceiptDelivered], res.peerReceipt[wire.ReceiptRead]
	}
	var ra, rb result
	var wg sync.WaitGroup
	wg.Add(2)
	go run(alice, "a", "b", &ra, &wg)
	go run(bob, "b", "a", &rb, &wg)
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, r := range []*result{&ra, &rb} {
		if len(r.ownSeqs) != N || len(r.peerSeqs) != N {
			t.Fatalf("acks %d msgs %d", len(r.ownSeqs), len(r.peerSeqs))
		}
		if r.read < r.lastOwnSeq || r.delivered < r.lastOwnSeq {
			t.Errorf("receipts delivered=%d read=%d below last own seq %d", r.delivered, r.read, r.lastOwnSeq)
		}
	}
	// The two streams interleave into one gapless conversation log.
	last, err := n.Store().LastSeq(context.Background(), conv)
	if err != nil || last != 2*N {
		t.Fatalf("last seq %d (%v), want %d", last, err, 2*N)
	}
	all := map[uint64]bool{}
	for s := range ra.ownSeqs {
		all[s] = true
	}
	for s := range rb.ownSeqs {
		all[s] = true
	}
	for s := uint64(1); s <= 2*N; s++ {
		if !all[s] {
			t.Fatalf("seq %d missing", s)
		}
	}
	p, _ := n.Store().Pointers(context.Background(), conv, "bob")
	if p.Read < ra.lastOwnSeq {
		t.Errorf("bob's stored read pointer %d < %d", p.Read, ra.lastOwnSeq)
	}
}

// TestResumeAfterOffline: Bob goes offline, Alice sends 100, Bob comes back
// and resumes: exactly those 100, in order, once, then RESUMED.
func TestResumeAfterOffline(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := connect(t, n, "alice", "phone")
	// Alice's second device sees every message through fanout; once it has
	// one, fanout is done with it, so no live copy can reach Bob later and
	// the frame-level "exactly once" below is exact.
	alice2 := connect(t, n, "alice", "laptop")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "hello", "before"))
	alice.expect(wire.TypeAck)
	alice2.expect(wire.TypeMsg)
	bob := connect(t, n, "bob", "phone")
	bob.send((&wire.Resume{ReqID: 1}).Append(nil, 0))
	bob.expect(wire.TypeMsg)
	cursor := bob.dec.Msg.Seq
	bob.expect(wire.TypeResumed)
	bob.conn.Close()

	for i := 0; i < 100; i++ {
		alice.send(sendFrame(conv, fmt.Sprintf("m%d", i), fmt.Sprintf("offline %d", i)))
	}
	for i := 0; i < 100; i++ {
		alice.expect(wire.TypeAck)
		alice2.expect(wire.TypeMsg)
	}
	bob = connect(t, n, "bob", "laptop")
	r := wire.Resume{ReqID: 2, Cursors: []wire.Cursor{{ConvID: conv, LastSeq: cursor}}}
	bob.send(r.Append(nil, 0))
	for i := 0; i < 100; i++ {
		bob.expect(wire.TypeMsg)
		m := &bob.dec.Msg
		if m.Seq != cursor+1+uint64(i) || string(m.ClientMsgID) != fmt.Sprintf("m%d", i) {
			t.Fatalf("replay %d: seq %d cmid %q", i, m.Seq, m.ClientMsgID)
		}
	}
	bob.expect(wire.TypeResumed)
	if d := bob.dec.Resumed; d.ReqID != 2 || d.Messages != 100 || d.Conversations != 1 || d.Truncated {
		t.Fatalf("RESUMED %+v", d)
	}
	// Exactly once: a marker sent now is the next and only frame.
	alice.send(sendFrame(conv, "marker", "marker"))
	bob.expect(wire.TypeMsg)
	if string(bob.dec.Msg.ClientMsgID) != "marker" {
		t.Fatalf("after RESUMED got %q", bob.dec.Msg.ClientMsgID)
	}
	bob.noMoreFrames()
}

// TestResendSameClientMsgID: a SEND whose ACK was lost is resent with the
// same client_msg_id: one message stored, one delivered, the same ACK.
func TestResendSameClientMsgID(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "once", "hi"))
	alice.expect(wire.TypeAck)
	first := alice.dec.Ack
	first.ClientMsgID = bytes.Clone(first.ClientMsgID)
	// The "lost ACK" resend, on a new connection as a real client would.
	alice.conn.Close()
	alice = connect(t, n, "alice", "phone")
	alice.send(sendFrame(conv, "once", "hi"))
	alice.expect(wire.TypeAck)
	if a := alice.dec.Ack; a.MessageID != first.MessageID || a.Seq != first.Seq || !bytes.Equal(a.ClientMsgID, first.ClientMsgID) {
		t.Fatalf("resend ACK %+v, first %+v", a, first)
	}
	bob.expect(wire.TypeMsg)
	if bob.dec.Msg.MessageID != first.MessageID {
		t.Fatalf("bob got %d", bob.dec.Msg.MessageID)
	}
	alice.send(sendFrame(conv, "marker", "marker"))
	bob.expect(wire.TypeMsg)
	if string(bob.dec.Msg.ClientMsgID) != "marker" {
		t.Fatalf("bob got the message twice (then %q)", bob.dec.Msg.ClientMsgID)
	}
	msgs, err := n.Store().MessagesAfter(context.Background(), conv, 0, 100)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("stored %d messages (%v), want 2 (the message and the marker)", len(msgs), err)
	}
}

// TestHistoryFrame: HISTORY pages backwards with replay MSGs and HISTORY_END.
func TestHistoryFrame(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := connect(t, n, "alice", "phone")
	conv := alice.openDirect("bob")
	for i := 0; i < 30; i++ {
		alice.send(sendFrame(conv, fmt.Sprintf("h%d", i), "x"))
	}
	for i := 0; i < 30; i++ {
		alice.expect(wire.TypeAck)
	}
	h := wire.History{ReqID: 9, ConvID: conv, BeforeSeq: 21, Limit: 10}
	alice.send(h.Append(nil, 0))
	for s := uint64(11); s <= 20; s++ {
		alice.expect(wire.TypeMsg)
		if alice.dec.Msg.Seq != s {
			t.Fatalf("history seq %d, want %d", alice.dec.Msg.Seq, s)
		}
	}
	alice.expect(wire.TypeHistoryEnd)
	if e := alice.dec.HistoryEnd; e.ReqID != 9 || e.Count != 10 || !e.HasMore || e.ConvID != conv {
		t.Fatalf("HISTORY_END %+v", e)
	}
}

// TestRequestErrors: requests on conversations the user is not in, unknown
// conversations, receipts beyond the latest seq and bad OPEN_DIRECTs get
// their documented codes, and the connection and earlier messages survive.
func TestRequestErrors(t *testing.T) {
	n := startNode(t, t.TempDir())
	carol := connect(t, n, "carol", "phone")
	private := carol.openDirect("dave")
	alice := connect(t, n, "alice", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "kept", "accepted before the bad input"))
	alice.expect(wire.TypeAck)

	expectErr := func(name string, frame []byte, code wire.Code, ref wire.Type) {
		t.Helper()
		alice.send(frame)
		alice.expect(wire.TypeError)
		e := alice.dec.Error
		if e.Code != code || e.RefType != ref {
			t.Fatalf("%s: ERROR %v ref %v, want %v ref %v", name, e.Code, e.RefType, code, ref)
		}
	}
	expectErr("send not member", sendFrame(private, "x1", "intrude"), wire.CodeNotMember, wire.TypeSend)
	if string(alice.dec.Error.ClientMsgID) != "x1" || alice.dec.Error.ConvID != private {
		t.Fatalf("error refs %+v", alice.dec.Error)
	}
	expectErr("history not member", (&wire.History{ReqID: 3, ConvID: private}).Append(nil, 0), wire.CodeNotMember, wire.TypeHistory)
	if alice.dec.Error.ReqID != 3 {
		t.Fatalf("history error req id %d", alice.dec.Error.ReqID)
	}
	expectErr("receipt not member", receiptFrame(private, wire.ReceiptRead, 1), wire.CodeNotMember, wire.TypeReceipt)
	expectErr("send unknown conv", sendFrame(12345, "x2", "nowhere"), wire.CodeConvNotFound, wire.TypeSend)
	expectErr("receipt beyond latest", receiptFrame(conv, wire.ReceiptRead, 99), wire.CodeSeqBeyondLatest, wire.TypeReceipt)
	expectErr("open direct with self", (&wire.OpenDirect{ReqID: 4, Peer: []byte("alice")}).Append(nil, 0), wire.CodeInvalidArgument, wire.TypeOpenDirect)
	expectErr("open direct bad id", (&wire.OpenDirect{ReqID: 5, Peer: []byte("no spaces")}).Append(nil, 0), wire.CodeInvalidArgument, wire.TypeOpenDirect)

	// Still connected, nothing lost, and the stored pointer did not move.
	alice.send(sendFrame(conv, "after", "still works"))
	alice.expect(wire.TypeAck)
	if alice.dec.Ack.Seq != 2 {
		t.Fatalf("seq after errors %d, want 2", alice.dec.Ack.Seq)
	}
	p, _ := n.Store().Pointers(context.Background(), conv, "alice")
	if p.Read != 0 {
		t.Fatalf("read pointer moved to %d", p.Read)
	}
	msgs, _ := n.Store().MessagesAfter(context.Background(), private, 0, 10)
	if len(msgs) != 0 {
		t.Fatalf("intruder's message stored")
	}
}

// TestAuthAtTheGateway: real tokens from the node's key: a bad and an
// expired token are refused with their codes, a good one is welcomed.
func TestAuthAtTheGateway(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	expired, err := n.Signer().MintAt("alice", "", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		token string
		code  wire.Code
	}{
		{"not-a-token", wire.CodeTokenInvalid},
		{expired, wire.CodeTokenExpired},
	} {
		_, err := bench.Dial(ctx, n.GatewayURL(), c.token, "phone")
		if err == nil || !strings.Contains(err.Error(), c.code.String()) {
			t.Fatalf("token %.10q: %v, want %v", c.token, err, c.code)
		}
	}
	connect(t, n, "alice", "phone")
}

// TestMetricsEndpoint: the admin listener serves the metrics operators
// need: connections, frames, queue drops, Kafka lag, store latency.
func TestMetricsEndpoint(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := connect(t, n, "alice", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "m", "x"))
	alice.expect(wire.TypeAck)
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, name := range []string{
		"chatd_gateway_connections_open", "chatd_gateway_frames_in_total", "chatd_gateway_frames_out_total",
		"chatd_kafka_lag", "chatd_store_op_seconds", "chatd_store_commit_seconds", "chatd_messages_acked_total",
		"chatd_fanout_deliveries_total", "go_goroutines",
	} {
		if !strings.Contains(string(body), name) {
			t.Errorf("metric %s missing", name)
		}
	}
	if resp, err := http.Get("http://" + n.AdminAddr() + "/debug/pprof/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pprof: %v", err)
	}
}

// TestSplitRoles runs the scaled-out topology in one test process: a core
// (embedded kfake, Pebble) and two gateway-only nodes sharing its broker,
// data dir key and a real redis-server for registry and routing. Alice on
// gateway 1 and Bob on gateway 2 chat; receipts cross gateways too.
func TestSplitRoles(t *testing.T) {
	redisAddr, stop := redistest.Start(t)
	t.Cleanup(stop)
	dir := t.TempDir()
	core := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleCore}})
	gw1 := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleGateway}, Brokers: core.Brokers()})
	gw2 := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleGateway}, Brokers: core.Brokers()})
	if core.GatewayURL() != "" || gw1.APIURL() != "" {
		t.Fatalf("roles leaked: core gateway %q, gateway api %q", core.GatewayURL(), gw1.APIURL())
	}
	alice := connect(t, gw1, "alice", "phone")
	bob := connect(t, gw2, "bob", "phone")
	conv := alice.openDirect("bob")
	for i := 0; i < 50; i++ {
		alice.send(sendFrame(conv, fmt.Sprintf("x%d", i), "across gateways"))
	}
	for i := 0; i < 50; i++ {
		alice.expect(wire.TypeAck)
		bob.expect(wire.TypeMsg)
		if string(bob.dec.Msg.ClientMsgID) != fmt.Sprintf("x%d", i) {
			t.Fatalf("bob got %q at %d", bob.dec.Msg.ClientMsgID, i)
		}
	}
	bob.send(receiptFrame(conv, wire.ReceiptRead, 50))
	alice.expect(wire.TypeReceipt)
	if r := alice.dec.Receipt; string(r.User) != "bob" || r.UpToSeq != 50 {
		t.Fatalf("receipt %+v", r)
	}
	// Every process that talks to Redis counts its round trips and
	// commands on /metrics (chatbench divides them by messages).
	for name, n := range map[string]*node.Node{"core": core, "gateway 1": gw1, "gateway 2": gw2} {
		rt := metricValue(t, n, "chatd_redis_round_trips_total")
		cmds := metricValue(t, n, "chatd_redis_commands_total")
		if rt < 1 || cmds < rt {
			t.Errorf("%s: %v Redis round trips, %v commands; want at least one, and at least as many commands", name, rt, cmds)
		}
	}
	if pub := metricValue(t, core, "chatd_redis_published_total"); pub < 50 {
		t.Errorf("core published %v batches for 50 messages and their ACKs", pub)
	}
}

// metricValue reads one unlabelled metric from n's admin listener.
func metricValue(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// TestGatewayOnlyNeedsItsCore: a gateway-only node refuses to start
// without brokers and Redis, and never creates a token key of its own.
func TestGatewayOnlyNeedsItsCore(t *testing.T) {
	dir := t.TempDir()
	_, err := node.Start(context.Background(), node.Config{Roles: []string{node.RoleGateway}, DataDir: dir})
	if err == nil {
		t.Fatal("gateway-only without brokers started")
	}
	_, err = node.Start(context.Background(), node.Config{Roles: []string{node.RoleGateway}, DataDir: dir,
		Brokers: []string{"127.0.0.1:1"}, Redis: []string{"127.0.0.1:1"}, AdminAddr: "off"})
	if err == nil || !strings.Contains(err.Error(), "token key") {
		t.Fatalf("gateway-only without a key: %v", err)
	}
	if _, err := os.Stat(dir + "/keys/token.key"); err == nil {
		t.Fatal("gateway-only node created a key")
	}
}

// TestRedisRestart: with the registry and router in Redis, Redis is
// killed and started again empty. Sends are still accepted and persisted
// meanwhile (the ACK travels through Redis too, so it may be lost: the
// client resends with the same client_msg_id); once Redis is back, the
// gateways re-register their connections at once and live delivery
// resumes without restarting anything. The periodic refresh is pushed far
// out (LeaseTTL and RouteTTL 30 min) so it cannot be what restores
// delivery.
func TestRedisRestart(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	core := startRole(t, dir, srv.Addr, node.Config{Roles: []string{node.RoleCore}})
	gw := startRole(t, dir, srv.Addr, node.Config{Roles: []string{node.RoleGateway}, Brokers: core.Brokers(),
		Gateway: gateway.Config{LeaseTTL: 30 * time.Minute, RouteTTL: 30 * time.Minute}})
	alice := connect(t, gw, "alice", "phone")
	bob := connect(t, gw, "bob", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "before", "before"))
	alice.expect(wire.TypeAck)
	bob.expect(wire.TypeMsg)

	srv.Kill()
	// Accepted and persisted while Redis is down.
	alice.send(sendFrame(conv, "during", "during"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if last, _ := core.Store().LastSeq(ctx, conv); last == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the send made while Redis was down was not persisted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Restart()
	// Live delivery comes back: probe until Bob gets a live MSG.
	for k := 0; ; k++ {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("live delivery did not resume after Redis came back")
		}
		alice.send(sendFrame(conv, fmt.Sprintf("probe-%d", k), "probe"))
		got := false
		timeout := time.After(300 * time.Millisecond)
	wait:
		for {
			select {
			case f := <-bob.frames:
				if typ, _, err := bob.dec.Decode(f); err == nil && typ == wire.TypeMsg {
					got = true
					break wait
				}
			case <-timeout:
				break wait
			}
		}
		if got {
			break
		}
	}
	// Bob catches up on what he missed by RESUME.
	bob.send((&wire.Resume{ReqID: 1, Cursors: []wire.Cursor{{ConvID: conv, LastSeq: 1}}}).Append(nil, 0))
	for {
		bob.expect(wire.TypeMsg, wire.TypeMsg)
		if bob.dec.Msg.Seq == 2 && string(bob.dec.Msg.ClientMsgID) == "during" {
			break
		}
	}
}

// startRole starts a node of a split topology on dir, with Redis at
// redisAddr for registry and routing.
func startRole(t *testing.T, dir, redisAddr string, cfg node.Config) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg.DataDir, cfg.APIAddr, cfg.AdminAddr, cfg.GatewayAddr = dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if redisAddr != "" {
		cfg.Redis = []string{redisAddr}
	}
	cfg.Partitions = 4
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start %v: %v", cfg.Roles, err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

// TestStoreAndBrokerRoles runs the local-cluster topology in one test
// process: a broker node, a store node, two cores sharing that store and
// two gateways. Alice on gateway 1 and Bob on gateway 2 chat; then one core
// leaves and the other takes its partitions over from the shared store:
// seqs continue without a gap or a reuse.
func TestStoreAndBrokerRoles(t *testing.T) {
	redisAddr, stop := redistest.Start(t)
	t.Cleanup(stop)
	dir := t.TempDir()
	broker := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleBroker}})
	st := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleStore}, StoreAddr: "127.0.0.1:0"})
	if len(broker.Brokers()) == 0 || st.StoreAddr() == "" || broker.StoreAddr() != "" || st.GatewayURL() != "" || st.APIURL() != "" {
		t.Fatalf("roles: broker %v store %q; broker's store %q, store's gateway %q api %q",
			broker.Brokers(), st.StoreAddr(), broker.StoreAddr(), st.GatewayURL(), st.APIURL())
	}
	coreCfg := node.Config{Roles: []string{node.RoleCore}, Brokers: broker.Brokers(), Store: st.StoreAddr()}
	core1 := startRole(t, dir, redisAddr, coreCfg)
	core2 := startRole(t, dir, redisAddr, coreCfg)
	gw1 := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleGateway}, Brokers: broker.Brokers()})
	gw2 := startRole(t, dir, redisAddr, node.Config{Roles: []string{node.RoleGateway}, Brokers: broker.Brokers()})

	alice := connect(t, gw1, "alice", "phone")
	bob := connect(t, gw2, "bob", "phone")
	conv := alice.openDirect("bob")
	var seqs []uint64
	exchange := func(from, to int) {
		for i := from; i < to; i++ {
			alice.send(sendFrame(conv, fmt.Sprintf("x%d", i), "via the shared store"))
		}
		for i := from; i < to; i++ {
			alice.expect(wire.TypeAck)
		}
		for i := from; i < to; i++ {
			bob.expect(wire.TypeMsg)
			// Delivery is at least once: when the partitions move, the
			// new owner re-emits what the old one handled but had not
			// committed yet (a commit refused mid-rebalance). A client
			// drops a seq it already holds, as the SDK does.
			for len(seqs) > 0 && bob.dec.Msg.Seq <= seqs[len(seqs)-1] {
				bob.expect(wire.TypeMsg)
			}
			if string(bob.dec.Msg.ClientMsgID) != fmt.Sprintf("x%d", i) {
				t.Fatalf("bob got %q (seq %d) at %d", bob.dec.Msg.ClientMsgID, bob.dec.Msg.Seq, i)
			}
			seqs = append(seqs, bob.dec.Msg.Seq)
		}
	}
	exchange(0, 20)
	core1.Close(context.Background()) // its partitions move to core2
	exchange(20, 40)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seqs %v: want 1..40 without gaps or reuse", seqs)
		}
	}
	if last, err := core2.Store().LastSeq(context.Background(), conv); err != nil || last != 40 {
		t.Fatalf("shared store LastSeq = %d, %v; want 40", last, err)
	}
}

// TestRoleCombinations: the roles refuse configurations that cannot work.
func TestRoleCombinations(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  node.Config
		want string
	}{
		{"unknown role", node.Config{Roles: []string{"kitchen"}}, "unknown role"},
		{"broker with brokers", node.Config{Roles: []string{node.RoleBroker}, Brokers: []string{"127.0.0.1:1"}}, "takes no Brokers"},
		{"store with a remote store", node.Config{Roles: []string{node.RoleStore}, Store: "127.0.0.1:1"}, "takes no remote Store"},
		{"two stores", node.Config{Roles: []string{node.RoleCore}, Store: "127.0.0.1:1", Scylla: scylla.Options{Hosts: []string{"127.0.0.1"}},
			Redis: []string{"127.0.0.1:1"}}, "two stores"},
		{"remote store without core", node.Config{Roles: []string{node.RoleGateway}, Store: "127.0.0.1:1",
			Brokers: []string{"127.0.0.1:1"}, Redis: []string{"127.0.0.1:1"}}, "for the core role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir, tc.cfg.AdminAddr = dir, "off"
			_, err := node.Start(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestExternalSecureKafka: a node on an external broker that requires TLS
// and SASL SCRAM creates its topics there (with the replication asked) and
// carries a chat end to end through it.
func TestExternalSecureKafka(t *testing.T) {
	addrs, caFile := bustest.StartSecureBroker(t, "chatd", "s3cret", 4, "unrelated")
	tc, mech, err := bus.Security{CAFile: caFile, SASL: "scram-sha-256", User: "chatd", Password: "s3cret"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	n := startRole(t, t.TempDir(), "", node.Config{Roles: []string{node.RoleGateway, node.RoleCore},
		Brokers: addrs, KafkaTLS: tc, KafkaSASL: mech, Replication: 1})
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "tls-1", "over TLS and SCRAM"))
	alice.expect(wire.TypeAck)
	bob.expect(wire.TypeMsg)
	if string(bob.dec.Msg.Body) != "over TLS and SCRAM" {
		t.Fatalf("bob got %q", bob.dec.Msg.Body)
	}

	// Without the credentials the node cannot start.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = node.Start(ctx, node.Config{DataDir: t.TempDir(), Brokers: addrs, KafkaTLS: tc,
		AdminAddr: "off", APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("a node without SASL credentials started on a broker that requires them")
	}
}

// TestRedisAuth: with requirepass set, a node given the password runs on
// that Redis, and one without it refuses to start.
func TestRedisAuth(t *testing.T) {
	addr, stop := redistest.Start(t)
	t.Cleanup(stop)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$6\r\ns3cret\r\n")
	reply := make([]byte, 16)
	if n, err := conn.Read(reply); err != nil || !strings.HasPrefix(string(reply[:n]), "+OK") {
		t.Fatalf("CONFIG SET requirepass: %q %v", reply[:n], err)
	}
	conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = node.Start(ctx, node.Config{DataDir: t.TempDir(), Redis: []string{addr}, AdminAddr: "off",
		APIAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("a node without the Redis password started")
	}
	n := startRole(t, t.TempDir(), addr, node.Config{Roles: []string{node.RoleGateway, node.RoleCore}, RedisPassword: "s3cret"})
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	conv := alice.openDirect("bob")
	alice.send(sendFrame(conv, "auth-1", "through an authenticated Redis"))
	alice.expect(wire.TypeAck)
	bob.expect(wire.TypeMsg)
}
