package gateway

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// The chatd protocol at the edge: HELLO, PING, and the validation and
// produce of every request the core handles. A bad frame gets an ERROR and
// changes nothing else: what was accepted before it is already produced,
// from its own buffer.

// ref identifies a request in the ERROR that answers it.
type ref struct {
	t    wire.Type
	req  uint64
	conv uint64
	cmid []byte // aliases the frame; copied by whoever keeps it
}

// refOf returns the refs of the frame of type t just decoded into d.
func refOf(t wire.Type, d *wire.Decoder) ref {
	switch t {
	case wire.TypeSend:
		return ref{t: t, conv: d.Send.ConvID, cmid: d.Send.ClientMsgID}
	case wire.TypeReceipt:
		return ref{t: t, conv: d.Receipt.ConvID}
	case wire.TypeResume:
		return ref{t: t, req: d.Resume.ReqID}
	case wire.TypeHistory:
		return ref{t: t, req: d.History.ReqID, conv: d.History.ConvID}
	case wire.TypeOpenDirect:
		return ref{t: t, req: d.OpenDirect.ReqID}
	case wire.TypeCreateGroup:
		return ref{t: t, req: d.CreateGroup.ReqID}
	case wire.TypeGroupChange:
		return ref{t: t, req: d.GroupChange.ReqID, conv: d.GroupChange.ConvID}
	case wire.TypeTyping:
		return ref{t: t, conv: d.Typing.ConvID}
	case wire.TypeFocus:
		return ref{t: t, conv: d.Focus.ConvID}
	}
	return ref{t: t}
}

// sendError answers a request with an ERROR; the connection stays open.
func (c *conn) sendError(code wire.Code, r ref, msg string) {
	e := wire.Error{Code: code, RefType: r.t, ReqID: r.req, ConvID: r.conv, ClientMsgID: r.cmid}
	if len(msg) > wire.MaxTextLen {
		msg = msg[:wire.MaxTextLen]
	}
	e.Message = []byte(msg)
	c.g.m.errorsOut(code).Inc()
	c.send(encodeFrame(&e), wire.TypeError)
}

// reasonOf is the text of an ERROR for a decoding failure: the wire error's
// reason, which never contains payload bytes.
func reasonOf(err error) string {
	var pe *wire.ProtoError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return err.Error()
}

// message handles one complete chatd frame (a whole WebSocket message).
// c.in is held.
func (g *Gateway) message(c *conn, rx *rxScratch, frame []byte) {
	var t wire.Type
	if len(frame) > 0 {
		t = wire.Type(frame[0])
	}
	g.m.framesIn(t).Inc()
	if !c.allow(g) {
		g.rateLimited(c, rx, frame)
		return
	}
	switch c.state.Load() {
	case stateUpgraded:
		g.hello(c, rx, frame)
	case stateAuthenticated:
		g.request(c, rx, frame)
	}
}

// rateLimited drops frame and says so, with the frame's refs when it
// decodes (so that a client can resend the same client_msg_id).
func (g *Gateway) rateLimited(c *conn, rx *rxScratch, frame []byte) {
	g.m.rateLimited.Inc()
	r := ref{}
	if t, f, _, err := wire.ParseHeader(frame); err == nil {
		r.t = t
		if f&wire.FlagCompressed == 0 && wire.ClientType(t) {
			if _, _, err := rx.dec.Decode(frame); err == nil {
				r = refOf(t, &rx.dec)
			}
		}
	} else if len(frame) > 0 {
		r.t = wire.Type(frame[0])
	}
	c.sendError(wire.CodeRateLimited, r, "rate limited: frame dropped")
}

// hello handles the first frame of a connection.
func (g *Gateway) hello(c *conn, rx *rxScratch, frame []byte) {
	if len(frame) == 0 || wire.Type(frame[0]) != wire.TypeHello {
		var t wire.Type
		if len(frame) > 0 {
			t = wire.Type(frame[0])
		}
		g.m.handshakeFailed("hello_required")
		e := wire.Error{Code: wire.CodeHelloRequired, RefType: t, Message: []byte("the first frame must be HELLO")}
		c.fail(&e, ws.StatusPolicyViolation, reasonAuthFailed)
		return
	}
	helloRef := ref{t: wire.TypeHello}
	_, f, payload, err := wire.ParseHeader(frame)
	if err == nil && f&wire.FlagCompressed != 0 {
		c.sendError(wire.CodeBadCompression, helloRef, "hello: compression is not negotiated yet")
		return
	}
	if err == nil {
		err = rx.dec.Hello.Decode(payload)
	}
	if err != nil {
		c.sendError(wire.CodeOf(err), helloRef, reasonOf(err)) // still waiting for a HELLO
		return
	}
	h := &rx.dec.Hello
	// The server speaks wire.Version only: it is the highest common version
	// when the client's range holds it.
	if h.MinVersion > h.MaxVersion || h.MinVersion > wire.Version || h.MaxVersion < wire.Version {
		g.m.handshakeFailed("unsupported_version")
		e := wire.Error{Code: wire.CodeUnsupportedVers, RefType: wire.TypeHello, Message: []byte("this server speaks protocol version 1")}
		c.fail(&e, ws.StatusPolicyViolation, reasonAuthFailed)
		return
	}
	user, code := g.deps.Auth.Authenticate(h.Token, time.Now())
	if code == 0 && (user == "" || len(user) > wire.MaxIDLen) {
		code = wire.CodeTokenInvalid
	}
	if code != 0 {
		g.m.handshakeFailed(code.String())
		e := wire.Error{Code: code, RefType: wire.TypeHello, Message: []byte(code.String())}
		c.fail(&e, ws.StatusPolicyViolation, reasonAuthFailed)
		return
	}
	c.ud = user + string(h.DeviceID)
	c.ulen = uint8(len(user))
	c.caps = h.Caps & wire.CapZstd
	c.mu.Lock()
	ok := c.state.Load() == stateUpgraded
	if ok {
		g.wheel.set(c, g.nowTick()+g.hsTicks) // the registry call's deadline
		c.state.Store(stateRegistering)
	}
	c.mu.Unlock()
	if ok {
		g.reg.add(g, c)
	}
}

// request handles a frame from an authenticated connection.
func (g *Gateway) request(c *conn, rx *rxScratch, frame []byte) {
	t, f, _, err := wire.ParseHeader(frame)
	if err != nil {
		c.sendError(wire.CodeOf(err), ref{t: t}, reasonOf(err))
		return
	}
	switch {
	case !wire.KnownType(t):
		c.sendError(wire.CodeUnknownType, ref{t: t}, "unknown frame type")
		return
	case t == wire.TypeHello:
		c.sendError(wire.CodeDuplicateHello, ref{t: t}, "HELLO after WELCOME")
		return
	case !wire.ClientType(t):
		c.sendError(wire.CodeUnexpectedType, ref{t: t}, t.String()+" is a server-to-client frame")
		return
	}
	if f&wire.FlagCompressed != 0 {
		if c.caps&wire.CapZstd == 0 {
			c.sendError(wire.CodeBadCompression, ref{t: t}, "compression was not negotiated")
			return
		}
		rx.z, err = wire.Decompress(rx.z[:0], frame)
		if err != nil {
			c.sendError(wire.CodeOf(err), ref{t: t}, reasonOf(err))
			return
		}
		frame = rx.z // produced decompressed: the core never sees FlagCompressed
	}
	if _, _, err := rx.dec.Decode(frame); err != nil {
		c.sendError(wire.CodeOf(err), ref{t: t}, reasonOf(err))
		return
	}
	d := &rx.dec
	r := refOf(t, d)
	switch t {
	case wire.TypePing:
		c.send(encodeFrame(&wire.Pong{Nonce: d.Ping.Nonce}), wire.TypePong)
	case wire.TypeSend:
		s := &d.Send
		switch {
		case s.ConvID == 0:
			g.invalid(c, r, "send: conv_id is 0")
		case len(s.ClientMsgID) == 0:
			g.invalid(c, r, "send: client_msg_id is empty")
		case s.Kind < wire.KindText || s.Kind > wire.KindBinary:
			g.invalid(c, r, "send: kind out of range")
		case s.Kind == wire.KindSystem:
			// System messages are the server's (group changes): one from a
			// client would be taken for one by every receiver.
			g.invalid(c, r, "send: kind 2 (system) is written by the server only")
		case len(s.Body) > wire.MaxBodySize:
			g.invalid(c, r, "send: body too long")
		default:
			g.produce(c, r, false, frame)
		}
	case wire.TypeReceipt:
		switch {
		case d.Receipt.ConvID == 0:
			g.invalid(c, r, "receipt: conv_id is 0")
		case len(d.Receipt.User) != 0:
			g.invalid(c, r, "receipt: user must be empty from a client")
		default:
			g.produce(c, r, false, frame)
		}
	case wire.TypeHistory:
		if d.History.ConvID == 0 {
			g.invalid(c, r, "history: conv_id is 0")
			return
		}
		g.produce(c, r, false, frame)
	case wire.TypeResume:
		g.produce(c, r, true, frame)
	case wire.TypeOpenDirect:
		if len(d.OpenDirect.Peer) == 0 {
			g.invalid(c, r, "open_direct: peer is empty")
			return
		}
		g.produce(c, r, true, frame)
	case wire.TypeCreateGroup:
		// Keyed by the creator: the group has no id yet.
		g.produce(c, r, true, frame)
	case wire.TypeGroupChange:
		if d.GroupChange.ConvID == 0 {
			g.invalid(c, r, "group_change: conv_id is 0")
			return
		}
		// Keyed by the group, so its owner applies the change in order
		// with the group's messages.
		g.produce(c, r, false, frame)
	case wire.TypeTyping:
		g.typing(c, r, &d.Typing, frame)
	case wire.TypeFocus:
		// The gateway filters TYPING and PRESENCE by it (onBatch); the
		// core answers a focused direct conversation with the peer's
		// PRESENCE (presence.go).
		g.focusFrame(c, r, d.Focus.ConvID, frame)
	}
}

// TypingMinGap is the shortest time between two TYPING started a
// connection may send; a client follows wire.TypingInterval (3 s), so only
// a flood hits it.
const TypingMinGap = time.Second

// typing validates, rate-limits and produces a TYPING. A started within
// TypingMinGap of the previous one is dropped with ERROR rate_limited; a
// stopped for a conversation this connection is not typing in changes
// nothing and is dropped without an answer (like a receipt below the
// pointer).
func (g *Gateway) typing(c *conn, r ref, t *wire.Typing, frame []byte) {
	switch {
	case t.ConvID == 0:
		g.invalid(c, r, "typing: conv_id is 0")
		return
	case len(t.User) != 0:
		g.invalid(c, r, "typing: user must be empty from a client")
		return
	}
	now := g.nowMS()
	if t.State == wire.TypingStopped {
		if !c.typingConv.CompareAndSwap(t.ConvID, 0) {
			g.m.typingDropped.Inc()
			return
		}
		g.produce(c, r, false, frame)
		return
	}
	// Measured from the last started whatever came since, so alternating
	// started and stopped is no way around it.
	// int32: the clock is stored as max(now, 1), so last may be 1 ms
	// ahead of now; differences are small and signed.
	if last := c.typingMS.Load(); last != 0 && int32(now-last) < int32(TypingMinGap/time.Millisecond) {
		g.m.rateLimited.Inc()
		c.sendError(wire.CodeRateLimited, r, "rate limited: one TYPING started a second at most")
		return
	}
	c.typingConv.Store(t.ConvID)
	c.typingMS.Store(max(now, 1)) // 0 means never
	g.produce(c, r, false, frame)
}

// typingGone clears a closed connection's typing, so receivers stop
// showing it at once instead of after wire.TypingTTL.
func (g *Gateway) typingGone(c *conn) {
	conv := c.typingConv.Swap(0)
	if conv == 0 || c.ud == "" || int32(g.nowMS()-c.typingMS.Load()) >= int32(wire.TypingTTL/time.Millisecond) {
		return
	}
	var buf [24]byte
	stop := wire.Typing{ConvID: conv, State: wire.TypingStopped}
	g.produce(c, ref{t: wire.TypeTyping, conv: conv}, false, stop.Append(buf[:0], 0))
}

func (g *Gateway) invalid(c *conn, r ref, msg string) {
	c.sendError(wire.CodeInvalidArgument, r, msg)
}

// produceReq is one record in flight to the bus: its key and value (one
// buffer, untouched until done) and the refs of an ERROR unavailable. It is
// pooled with its done callback bound once, so a produce allocates nothing.
type produceReq struct {
	g       *Gateway
	c       *conn
	buf     []byte
	t       wire.Type
	req     uint64
	conv    uint64
	cmidLen int
	cmid    [wire.MaxIDLen]byte
	done    func(error)
	large   bool
	start   time.Time // handed to the producer
}

// Records are at most a frame plus the envelope's fields (ids of at most
// wire.MaxIDLen bytes, uvarints).
const (
	envelopeOverhead = 1 + 3*(2+wire.MaxIDLen) + 4*10 + 2 + wire.MaxIDLen // + key
	smallRecord      = 1 << 10
	largeRecord      = wire.MaxFrameSize + envelopeOverhead
)

var produceSmall, produceLarge sync.Pool

func getProduceReq(frameLen int) *produceReq {
	pool, large, size := &produceSmall, false, smallRecord
	if frameLen+envelopeOverhead > smallRecord {
		pool, large, size = &produceLarge, true, largeRecord
	}
	if p, _ := pool.Get().(*produceReq); p != nil {
		return p
	}
	p := &produceReq{buf: make([]byte, 0, size), large: large}
	p.done = p.complete
	return p
}

// produce wraps frame (decompressed) in an Envelope and hands it to the
// producer, keyed by the conversation or by the user.
func (g *Gateway) produce(c *conn, r ref, byUser bool, frame []byte) {
	p := getProduceReq(len(frame))
	p.g, p.c, p.t, p.req, p.conv = g, c, r.t, r.req, r.conv
	p.cmidLen = copy(p.cmid[:], r.cmid)
	b := p.buf[:0]
	if byUser {
		b = wire.UserKey(b, c.userBytes())
	} else {
		b = wire.ConvKey(b, r.conv)
	}
	kl := len(b)
	now := time.Now()
	env := wire.Envelope{
		Gateway:    g.idb,
		Conn:       c.id,
		User:       c.userBytes(),
		Device:     c.deviceBytes(),
		Caps:       c.caps,
		ReceivedMS: uint64(now.UnixMilli()),
		Frame:      frame,
	}
	b = env.Append(b)
	p.buf = b
	g.m.produced.Inc()
	p.start = now
	g.deps.Producer.Produce(g.ctx, b[:kl:kl], b[kl:], p.done)
}

// complete is the producer's done callback.
func (p *produceReq) complete(err error) {
	p.g.m.produceSeconds.Observe(time.Since(p.start).Seconds())
	if err != nil {
		p.g.m.produceErrors.Inc()
		p.c.sendError(wire.CodeUnavailable, ref{t: p.t, req: p.req, conv: p.conv, cmid: p.cmid[:p.cmidLen]},
			"unavailable: retry the same request later")
	}
	pool := &produceSmall
	if p.large {
		pool = &produceLarge
	}
	p.g, p.c, p.buf = nil, nil, p.buf[:0]
	pool.Put(p)
}

// expire handles a connection whose wheel deadline passed.
func (g *Gateway) expire(c *conn, now int64) {
	c.mu.Lock()
	st := c.state.Load()
	if d := c.deadline.Load(); d > now && st != stateClosed {
		g.wheel.set(c, d) // pushed forward after the sweep looked
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	switch st {
	case stateAccepted:
		g.m.handshakeFailed("timeout")
		c.terminate(reasonHandshakeTimeout)
	case stateUpgraded:
		g.m.handshakeFailed("hello_timeout")
		c.goaway(wire.CodeHelloTimeout, 0, ws.StatusPolicyViolation, reasonHelloTimeout)
	case stateRegistering:
		g.m.handshakeFailed("registry_timeout")
		c.goaway(wire.CodeUnavailable, 1000, ws.StatusGoingAway, reasonRegistry)
	case stateAuthenticated:
		c.goaway(wire.CodeIdleTimeout, 0, ws.StatusNormalClosure, reasonIdle)
	case stateClosing:
		c.terminate(reasonCloseTimeout)
	}
}

// shutdownConn tells c the gateway is stopping.
func (g *Gateway) shutdownConn(c *conn) {
	switch c.state.Load() {
	case stateAccepted:
		c.terminate(reasonShutdown)
	case stateUpgraded, stateRegistering, stateAuthenticated:
		var after uint64
		if spread := g.cfg.ShutdownSpread.Milliseconds(); spread > 0 {
			after = uint64(rand.Int64N(spread))
		}
		c.goaway(wire.CodeShuttingDown, after, ws.StatusGoingAway, reasonShutdown)
	}
}
