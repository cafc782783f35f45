package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

func msgFrame(seq uint64, body []byte) []byte {
	return (&wire.Msg{ConvID: 1, MessageID: 1000 + seq, Seq: seq, ServerTimeMS: 1, Sender: []byte("bob"),
		SenderDevice: []byte("d"), ClientMsgID: []byte("x"), Kind: wire.KindText, Body: body}).Append(nil, 0)
}

func TestRoutedBatchToSeveralConns(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	users := []string{"u1", "u2", "u3"}
	clients := make([]*client, len(users))
	ids := make([]uint64, 0, len(users)+1)
	for i, u := range users {
		clients[i] = login(t, e, u, "phone")
		ids = append(ids, e.connID(t, u, "phone"))
	}
	ids = append(ids, 999_999) // not (or no longer) ours: ignored
	frame := msgFrame(1, []byte("to everyone"))
	e.publish(t, ids, frame)
	for i, c := range clients {
		if got := c.read(); !bytes.Equal(got, frame) {
			t.Errorf("client %d got %x, want %x", i, got, frame)
		}
	}
	if v := e.metric("chatd_gateway_routed_unknown_conns_total", "", ""); v != 1 {
		t.Errorf("routed_unknown = %v", v)
	}
	// Nothing else was queued for them.
	for _, c := range clients {
		c.ping(5)
	}
}

func TestRoutedOrderPreserved(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	id := e.connID(t, "alice", "phone")
	const n = 2000
	done := make(chan struct{})
	go func() { // publish while the client reads
		defer close(done)
		var body [8]byte
		for i := uint64(1); i <= n; i++ {
			binary.BigEndian.PutUint64(body[:], i)
			e.publish(t, []uint64{id}, msgFrame(i, body[:]))
		}
	}()
	for i := uint64(1); i <= n; i++ {
		c.expect(wire.TypeMsg)
		if c.dec.Msg.Seq != i || binary.BigEndian.Uint64(c.dec.Msg.Body) != i {
			t.Fatalf("frame %d: got seq %d", i, c.dec.Msg.Seq)
		}
	}
	<-done
}

// Replies and routed frames share one queue: a PONG never overtakes a MSG
// queued before it.
func TestRepliesAndRoutedFramesInterleave(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	id := e.connID(t, "alice", "phone")
	e.publish(t, []uint64{id}, msgFrame(1, []byte("a")))
	c.send(&wire.Ping{Nonce: 2})
	c.expect(wire.TypeMsg)
	c.expect(wire.TypePong)
}

// smallRcvBuf dials with a tiny receive buffer, so that a client that stops
// reading fills up quickly.
func smallRcvBuf(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return d.DialContext(ctx, network, addr)
}

func TestSlowConsumerClosed(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.MaxQueueBytes = 128 << 10 })
	slow := dialWith(t, e.url, ws.Dialer{Timeout: 5 * time.Second, NetDial: smallRcvBuf})
	slow.hello("slow", "phone", 0)
	healthy := login(t, e, "fast", "phone")
	slowID, fastID := e.connID(t, "slow", "phone"), e.connID(t, "fast", "phone")

	big := msgFrame(1, bytes.Repeat([]byte("b"), 60<<10))
	small := msgFrame(2, []byte("hi"))
	// The slow client reads nothing from here on. Publish until the
	// gateway gives up on it (its socket buffers fill first).
	for i := 0; e.metric("chatd_gateway_closes_total", "reason", "slow_consumer") == 0; i++ {
		if i == 2000 {
			t.Fatal("slow consumer never closed")
		}
		e.publish(t, []uint64{slowID}, big)
		if i%50 == 0 {
			e.publish(t, []uint64{fastID}, small)
			healthy.expect(wire.TypeMsg) // the healthy connection keeps flowing
		}
		time.Sleep(time.Millisecond)
	}
	eventually(t, "slow route gone", func() bool {
		routes, _ := e.mem.Lookup(context.Background(), []string{"slow"}, nil)
		return len(routes) == 0
	})
	eventually(t, "one connection left", func() bool { return e.g.Conns() == 1 })
	e.publish(t, []uint64{fastID}, small)
	healthy.expect(wire.TypeMsg)
	healthy.ping(1)
	if v := e.metric("chatd_gateway_queue_dropped_frames_total", "reason", "slow_consumer"); v < 1 {
		t.Fatalf("dropped{slow_consumer} = %v", v)
	}
}

func TestCloseSendsGoawayShuttingDown(t *testing.T) {
	e := startGateway(t, nil)
	a := login(t, e, "alice", "phone")
	b := login(t, e, "bob", "laptop")
	pre := dial(t, e.url) // upgraded, no HELLO yet
	eventually(t, "three connections", func() bool { return e.g.Conns() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b, pre} {
		c.expectGoaway(wire.CodeShuttingDown)
		// Spread over [0, ShutdownSpread) so clients do not return at once.
		if ms := c.dec.Goaway.ReconnectAfterMS; ms >= uint64((5 * time.Second).Milliseconds()) {
			t.Errorf("reconnect_after_ms %d beyond the 5s spread", ms)
		}
		if st := c.expectClosed(); st != ws.StatusGoingAway {
			t.Errorf("close status %d", st)
		}
	}
	if e.g.Conns() != 0 {
		t.Fatalf("Conns() = %d after Close", e.g.Conns())
	}
	routes, _ := e.mem.Lookup(context.Background(), []string{"alice", "bob"}, nil)
	if len(routes) != 0 {
		t.Fatalf("routes left after Close: %v", routes)
	}
	// New connections are refused.
	if c, err := net.DialTimeout("tcp", e.g.Addr().String(), time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Fatal("a new connection was served after Close")
		}
		c.Close()
	}
}

// TestBlockedFlushResumes fills a client's socket until the gateway's write
// blocks in netpoll (more than the kernel's send and receive buffers can
// hold, under the queue bound), then reads: every frame arrives, in order.
// It covers netpoll's wait for a writable socket, whose wake-up channel the
// patched netpoll (third_party/netpoll) makes only when a flush first waits.
func TestBlockedFlushResumes(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.MaxQueueBytes = 16 << 20 })
	slow := dialWith(t, e.url, ws.Dialer{Timeout: 5 * time.Second, NetDial: smallRcvBuf})
	slow.hello("slow", "phone", 0)
	id := e.connID(t, "slow", "phone")

	const n = 120 // 120 x 60 KiB: 7 MiB, over tcp_wmem's 4 MiB ceiling
	body := bytes.Repeat([]byte("b"), 60<<10)
	for i := 1; i <= n; i++ {
		e.publish(t, []uint64{id}, msgFrame(uint64(i), body))
	}
	for i := 1; i <= n; i++ {
		slow.expect(wire.TypeMsg)
		if got := slow.dec.Msg.Seq; got != uint64(i) {
			t.Fatalf("frame %d has seq %d", i, got)
		}
	}
	slow.ping(7)
	if v := e.metric("chatd_gateway_closes_total", "reason", "slow_consumer"); v != 0 {
		t.Fatalf("closed as slow: %v", v)
	}
}
