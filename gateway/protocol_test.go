package gateway

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// Each bad input gets its own test: the exact ERROR/GOAWAY code, and
// whether the connection survives (a PING still gets its PONG).

func TestFrameBeforeHello(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.send(&wire.Ping{Nonce: 1})
	if got := c.expectError(wire.CodeHelloRequired); got.RefType != wire.TypePing {
		t.Errorf("ref type %v", got.RefType)
	}
	c.expectClosed()
}

func TestBadToken(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	h := helloFrame("alice", "phone", 0)
	h.Token = []byte("forged")
	c.send(h)
	c.expectError(wire.CodeTokenInvalid)
	c.expectClosed()
	if v := e.metric("chatd_gateway_handshakes_failed_total", "reason", "token_invalid"); v != 1 {
		t.Fatalf("handshakes_failed{token_invalid} = %v", v)
	}
}

func TestExpiredToken(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	h := helloFrame("alice", "phone", 0)
	h.Token = []byte("expired")
	c.send(h)
	c.expectError(wire.CodeTokenExpired)
	c.expectClosed()
}

func TestUnsupportedVersion(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	h := helloFrame("alice", "phone", 0)
	h.MinVersion, h.MaxVersion = 2, 5
	c.send(h)
	c.expectError(wire.CodeUnsupportedVers)
	c.expectClosed()
}

// A client range that includes version 1 negotiates version 1.
func TestVersionRangeNegotiated(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	h := helloFrame("alice", "phone", 0)
	h.MinVersion, h.MaxVersion = 1, 9
	c.send(h)
	c.expect(wire.TypeWelcome)
	if c.dec.Welcome.Version != 1 {
		t.Fatalf("version %d", c.dec.Welcome.Version)
	}
}

func TestDuplicateHello(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(helloFrame("alice", "phone", 0))
	c.expectError(wire.CodeDuplicateHello)
	c.ping(1)
}

// A HELLO that does not decode is an ERROR, and the connection still waits
// for a good HELLO.
func TestMalformedHello(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.sendRaw([]byte{byte(wire.TypeHello), 0, 1}) // max_version missing
	c.expectError(wire.CodeMalformedFrame)
	c.hello("alice", "phone", 0)
}

func TestMalformedFrame(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.sendRaw([]byte{byte(wire.TypeSend), 0, 0xff, 0xff}) // conv_id varint never ends
	if got := c.expectError(wire.CodeMalformedFrame); got.RefType != wire.TypeSend {
		t.Errorf("ref type %v", got.RefType)
	}
	c.ping(1)
	if e.prod.count() != 0 {
		t.Fatal("a malformed frame was produced")
	}
}

// A SEND whose body is cut short.
func TestTruncatedFrame(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	f := (&wire.Send{ConvID: 7, ClientMsgID: []byte("m1"), Kind: wire.KindText, Body: []byte("hello world")}).Append(nil, 0)
	c.sendRaw(f[:len(f)-4])
	c.expectError(wire.CodeMalformedFrame)
	c.ping(1)
}

// A message shorter than the 2-byte header.
func TestShorterThanHeader(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.sendRaw([]byte{byte(wire.TypePing)})
	c.expectError(wire.CodeMalformedFrame)
	c.ping(1)
}

func TestUnknownType(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.sendRaw([]byte{0x7f, 0, 1, 2, 3})
	if got := c.expectError(wire.CodeUnknownType); got.RefType != 0x7f {
		t.Errorf("ref type %v", got.RefType)
	}
	c.ping(1)
}

func TestServerOnlyType(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Msg{ConvID: 1, MessageID: 2, Seq: 3, Kind: wire.KindText, Body: []byte("x")})
	if got := c.expectError(wire.CodeUnexpectedType); got.RefType != wire.TypeMsg {
		t.Errorf("ref type %v", got.RefType)
	}
	c.send(&wire.Welcome{Version: 1})
	c.expectError(wire.CodeUnexpectedType)
	c.ping(1)
}

// A WebSocket header announcing more than wire.MaxFrameSize: ERROR
// frame_too_large and close, without waiting for the payload (the test
// never sends it).
func TestOversizeFrame(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	hdr := make([]byte, 0, 14)
	hdr = append(hdr, 0x80|byte(ws.OpBinary), 0x80|127)
	hdr = binary.BigEndian.AppendUint64(hdr, 1<<20)
	hdr = append(hdr, 1, 2, 3, 4) // mask
	hdr = append(hdr, bytes.Repeat([]byte{0xaa}, 100)...)
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	c.expectError(wire.CodeFrameTooLarge)
	if st := c.expectClosed(); st != ws.StatusMessageTooBig {
		t.Fatalf("close status %d", st)
	}
}

// Fragments adding up to more than wire.MaxFrameSize are refused the same
// way.
func TestOversizeFragmentedMessage(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	chunk := bytes.Repeat([]byte{1}, 40<<10)
	c.writeWS(ws.OpBinary, false, chunk)
	c.writeWS(ws.OpContinuation, false, chunk)
	c.expectError(wire.CodeFrameTooLarge)
	c.expectClosed()
}

func TestTextMessage(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.writeWS(ws.OpText, true, []byte("hello"))
	c.expectGoaway(wire.CodeNotBinary)
	if st := c.expectClosed(); st != ws.StatusUnsupportedData {
		t.Fatalf("close status %d", st)
	}
}

// RFC 6455 5.1: a server closes on an unmasked client frame.
func TestUnmaskedFrame(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	b, _ := ws.CompileFrame(ws.NewBinaryFrame((&wire.Ping{Nonce: 1}).Append(nil, 0)))
	if _, err := c.conn.Write(b); err != nil {
		t.Fatal(err)
	}
	if st := c.expectClosed(); st != ws.StatusProtocolError {
		t.Fatalf("close status %d", st)
	}
}

func TestBadCompression(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.hello("alice", "phone", wire.CapZstd)
	f := []byte{byte(wire.TypeSend), byte(wire.FlagCompressed), 0xde, 0xad, 0xbe, 0xef}
	c.sendRaw(f)
	if got := c.expectError(wire.CodeBadCompression); got.RefType != wire.TypeSend {
		t.Errorf("ref type %v", got.RefType)
	}
	c.ping(1)
}

// Compression without CapZstd in the HELLO is refused even when valid.
func TestCompressionNotNegotiated(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	s := &wire.Send{ConvID: 9, ClientMsgID: []byte("m1"), Kind: wire.KindText, Body: bytes.Repeat([]byte("abc"), 400)}
	z := wire.Compress(nil, s.Append(nil, 0))
	if wire.Flags(z[1])&wire.FlagCompressed == 0 {
		t.Fatal("test frame did not compress")
	}
	c.sendRaw(z)
	c.expectError(wire.CodeBadCompression)
	c.ping(1)
}

func TestSendEmptyClientMsgID(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Send{ConvID: 42, Kind: wire.KindText, Body: []byte("hi")})
	got := c.expectError(wire.CodeInvalidArgument)
	if got.RefType != wire.TypeSend || got.ConvID != 42 || len(got.ClientMsgID) != 0 {
		t.Errorf("refs %v conv %d cmid %q", got.RefType, got.ConvID, got.ClientMsgID)
	}
	c.ping(1)
}

func TestSendZeroConv(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Send{ConvID: 0, ClientMsgID: []byte("m-1"), Kind: wire.KindText, Body: []byte("hi")})
	got := c.expectError(wire.CodeInvalidArgument)
	if got.RefType != wire.TypeSend || string(got.ClientMsgID) != "m-1" {
		t.Errorf("refs %v cmid %q", got.RefType, got.ClientMsgID)
	}
	c.ping(1)
}

func TestSendBadKind(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Send{ConvID: 1, ClientMsgID: []byte("m"), Kind: 9, Body: []byte("hi")})
	c.expectError(wire.CodeInvalidArgument)
	// System messages are the server's.
	c.send(&wire.Send{ConvID: 1, ClientMsgID: []byte("m"), Kind: wire.KindSystem, Body: []byte("alice left")})
	c.expectError(wire.CodeInvalidArgument)
	c.ping(1)
}

func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	cases := []struct {
		name string
		f    wire.Frame
		req  uint64
		conv uint64
	}{
		{name: "receipt zero conv", f: &wire.Receipt{Kind: wire.ReceiptRead, UpToSeq: 3}},
		{name: "receipt for another user", f: &wire.Receipt{ConvID: 5, Kind: wire.ReceiptRead, UpToSeq: 3, User: []byte("bob")}, conv: 5},
		{name: "history zero conv", f: &wire.History{ReqID: 11, Limit: 10}, req: 11},
		{name: "open_direct empty peer", f: &wire.OpenDirect{ReqID: 12}, req: 12},
		{name: "group_change zero conv", f: &wire.GroupChange{ReqID: 13, Op: wire.GroupLeave}, req: 13},
	}
	for _, tc := range cases {
		c.send(tc.f)
		got := c.expectError(wire.CodeInvalidArgument)
		if got.RefType != tc.f.Type() || got.ReqID != tc.req || got.ConvID != tc.conv {
			t.Errorf("%s: refs %v req %d conv %d", tc.name, got.RefType, got.ReqID, got.ConvID)
		}
	}
	c.ping(1)
	if e.prod.count() != 0 {
		t.Fatal("an invalid request was produced")
	}
}

func TestFloodRateLimited(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) {
		c.InboundRate = 10
		c.InboundBurst = 5
	})
	c := login(t, e, "alice", "phone") // the HELLO took one token
	const n = 30
	var buf []byte
	for i := uint64(0); i < n; i++ {
		buf = append(buf, maskedFrame(t, ws.OpBinary, (&wire.Send{ConvID: 3, ClientMsgID: []byte{'m', byte('a' + i)}, Kind: wire.KindText, Body: []byte("x")}).Append(nil, 0))...)
	}
	if _, err := c.conn.Write(buf); err != nil { // one burst
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // refill a few tokens
	c.send(&wire.Ping{Nonce: 99})
	limited := 0
	for {
		f := c.read()
		if wire.Type(f[0]) == wire.TypePong {
			break // the connection stayed usable
		}
		if _, _, err := c.dec.Decode(f); err != nil || c.dec.Error.Code != wire.CodeRateLimited {
			t.Fatalf("got %v %v, want ERROR rate_limited", wire.Type(f[0]), c.dec.Error.Code)
		}
		if c.dec.Error.RefType != wire.TypeSend || c.dec.Error.ConvID != 3 || len(c.dec.Error.ClientMsgID) != 2 {
			t.Fatalf("rate_limited refs %v %d %q", c.dec.Error.RefType, c.dec.Error.ConvID, c.dec.Error.ClientMsgID)
		}
		limited++
	}
	produced := len(e.prod.waitRecords(t, n-limited))
	if produced+limited != n || produced > 8 {
		t.Fatalf("%d produced, %d rate limited, of %d (bucket 5, 10/s)", produced, limited, n)
	}
}

// A message in fragments, with a control frame between them, is
// reassembled.
func TestFragmentedMessage(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	f := (&wire.Send{ConvID: 5, ClientMsgID: []byte("frag"), Kind: wire.KindText, Body: bytes.Repeat([]byte("z"), 3000)}).Append(nil, 0)
	c.writeWS(ws.OpBinary, false, f[:1000])
	c.writeWS(ws.OpPing, true, []byte("p"))
	c.writeWS(ws.OpContinuation, false, f[1000:2000])
	c.writeWS(ws.OpContinuation, true, f[2000:])
	op, _, err := c.readWS()
	if err != nil || op != ws.OpPong {
		t.Fatalf("pong: %v %v", op, err)
	}
	rs := e.prod.waitRecords(t, 1)
	var env wire.Envelope
	if err := env.Decode(rs[0].value); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Frame, f) {
		t.Fatal("reassembled frame differs")
	}
}

// A frame split across TCP writes (a partial frame waits, copied aside).
func TestFrameSplitAcrossWrites(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	f := (&wire.Send{ConvID: 5, ClientMsgID: []byte("split"), Kind: wire.KindText, Body: bytes.Repeat([]byte("y"), 20000)}).Append(nil, 0)
	b := maskedFrame(t, ws.OpBinary, f)
	for _, cut := range [][2]int{{0, 1}, {1, 5}, {5, 9000}, {9000, len(b)}} {
		if _, err := c.conn.Write(b[cut[0]:cut[1]]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rs := e.prod.waitRecords(t, 1)
	var env wire.Envelope
	if err := env.Decode(rs[0].value); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Frame, f) {
		t.Fatal("frame differs")
	}
	c.ping(1)
}

func TestClientCloseIsEchoed(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.writeWS(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
	if st := c.expectClosed(); st != ws.StatusNormalClosure {
		t.Fatalf("close status %d", st)
	}
	eventually(t, "connection closed", func() bool { return e.g.Conns() == 0 })
}
