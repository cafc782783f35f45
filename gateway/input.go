package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// The input path. netpoll calls onRequest on its pool when a connection has
// unread bytes, and calls it again, in a tight loop, for as long as unread
// bytes remain (connection_onevent.go onProcess; measured here: ~100M calls a
// second for a half-sent request, and the loop does not stop when the peer
// hangs up). So onRequest always consumes everything netpoll holds: complete
// units (the HTTP request, WebSocket frames) are processed in place, and an
// incomplete tail is copied into conn.pend, sized to what actually arrived,
// to be completed by later reads. A slow sender therefore costs the bytes it
// has sent and no worker; netpoll's own input buffer is released (see
// ConfigureNetpoll) as soon as onRequest returns.

// maxHeldBytes bounds the input a connection may send between its HELLO and
// its WELCOME (held, unprocessed, while the route is registered).
const maxHeldBytes = 2 * (wire.MaxFrameSize + maxWSHeader)

// rxScratch is what processing a frame needs beyond the frame itself. It is
// borrowed per onRequest call, never kept by an idle connection.
type rxScratch struct {
	dec wire.Decoder
	z   []byte // decompressed frame
}

var rxPool = sync.Pool{New: func() any { return new(rxScratch) }}

func getRx() *rxScratch { return rxPool.Get().(*rxScratch) }

func putRx(rx *rxScratch) {
	if cap(rx.z) > wire.MaxFrameSize {
		rx.z = nil
	}
	rxPool.Put(rx)
}

// onPrepare runs on netpoll's poller at accept, before the connection is
// registered for reads.
func (g *Gateway) onPrepare(nc netpoll.Connection) context.Context {
	c := &conn{
		Context:  context.Background(),
		g:        g,
		nc:       nc,
		id:       g.nextConn.Add(1),
		tokens:   g.burstMilli,
		refillMS: g.nowMS(),
		slot:     -1,
		idx:      -1,
	}
	_ = nc.SetWriteTimeout(g.cfg.WriteTimeout)
	_ = nc.AddCloseCallback(c.onClosed)
	g.open.Add(1)
	g.m.open.Inc()
	g.m.accepted.Inc()
	g.wheel.set(c, g.nowTick()+g.hsTicks)
	return c
}

// onRequest is netpoll's OnRequest: consume everything buffered.
func (g *Gateway) onRequest(ctx context.Context, nc netpoll.Connection) error {
	g.onRequestCalls.Add(1)
	c, ok := ctx.(*conn)
	r := nc.Reader()
	n := r.Len()
	if n == 0 {
		return nil
	}
	if !ok { // cannot happen: onPrepare made the context
		_ = r.Skip(n)
		_ = r.Release()
		return nc.Close()
	}
	g.m.bytesIn.Add(float64(n))
	c.in.Lock()
	defer c.in.Unlock() // deferred: a panic must not leave the input locked
	// Peek returns the buffered bytes in place when they sit in one node,
	// or a copy netpoll frees at Release. Either way b is ours until Release.
	b, err := r.Peek(n)
	switch st := c.state.Load(); {
	case err != nil || st >= stateClosing:
		// Closing: nothing more is read.
	case st == stateRegistering:
		if len(c.pend)+n > maxHeldBytes {
			c.closeWith(nil, 0, ws.StatusPolicyViolation, reasonProtocol)
			break
		}
		c.pend = append(c.pend, b...)
	case c.pend != nil:
		c.pend = append(c.pend, b...)
		c.keepPend(g.process(c, c.pend))
	default:
		used := g.process(c, b)
		if used < n && c.state.Load() < stateClosing {
			c.pend = append([]byte(nil), b[used:]...)
		}
	}
	_ = r.Skip(n)
	return r.Release()
}

// keepPend drops the first used bytes of c.pend. c.in is held.
func (c *conn) keepPend(used int) {
	if used >= len(c.pend) || c.state.Load() >= stateClosing {
		c.pend = nil
		return
	}
	rest := copy(c.pend, c.pend[used:])
	c.pend = c.pend[:rest]
	if cap(c.pend) > 4096 && cap(c.pend) > 4*rest {
		c.pend = append([]byte(nil), c.pend...) // do not keep a big buffer for a small tail
	}
}

// resumeInput processes the input held while c was registering; it runs on
// the pool once the WELCOME is queued.
func (g *Gateway) resumeInput(c *conn) {
	c.in.Lock()
	defer c.in.Unlock()
	if c.pend == nil || c.state.Load() != stateAuthenticated {
		return
	}
	c.keepPend(g.process(c, c.pend))
}

// process handles the complete units at the start of b and returns how many
// bytes they took. It stops early when the connection starts registering
// (the rest is held) or closing (the rest is dropped). c.in is held.
func (g *Gateway) process(c *conn, b []byte) int {
	used := 0
	if c.state.Load() == stateAccepted {
		used = g.handshake(c, b)
		if used == 0 {
			return 0
		}
	}
	var rx *rxScratch
	for used < len(b) {
		if st := c.state.Load(); st != stateUpgraded && st != stateAuthenticated {
			break
		}
		if rx == nil {
			rx = getRx()
		}
		k := g.frame(c, rx, b[used:])
		if k == 0 {
			break
		}
		used += k
	}
	if rx != nil {
		putRx(rx)
	}
	return used
}

var (
	crlfcrlf = []byte("\r\n\r\n")

	resp431 = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\nConnection: close\r\n\r\n" +
		"request headers larger than 4KiB")

	errNotFound = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusNotFound),
		ws.RejectionReason("not found: the WebSocket endpoint is "+Path),
	)

	// upgrader checks and answers the upgrade request. It reads from a
	// reader holding exactly the request's bytes, so the bytes a client
	// pipelines after its request (the HELLO) are never swallowed by its
	// buffered reader.
	upgrader = ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if string(uri) != Path {
				return errNotFound
			}
			return nil
		},
	}
)

// hsIO is the io.ReadWriter the upgrader runs on: the request bytes in, the
// response bytes out.
type hsIO struct {
	r bytes.Reader
	w []byte
}

func (h *hsIO) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h *hsIO) Write(p []byte) (int, error) { h.w = append(h.w, p...); return len(p), nil }

var _ io.ReadWriter = (*hsIO)(nil)

var hsPool = sync.Pool{New: func() any { return &hsIO{w: make([]byte, 0, 256)} }}

// handshake handles the HTTP upgrade request at the start of b. It returns
// the request's length once it is complete and upgraded, and 0 while it is
// incomplete or when it was refused (the connection is then closing).
func (g *Gateway) handshake(c *conn, b []byte) int {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 && len(b) < MaxRequestHeaderBytes {
		return 0 // wait for the rest; the handshake deadline bounds the wait
	}
	if end < 0 || end+len(crlfcrlf) > MaxRequestHeaderBytes {
		g.m.handshakeFailed("header_too_large")
		c.closeWith(resp431, 0, 0, reasonHandshakeFailed)
		return 0
	}
	n := end + len(crlfcrlf)
	hs := hsPool.Get().(*hsIO)
	hs.r.Reset(b[:n])
	hs.w = hs.w[:0]
	_, err := upgrader.Upgrade(hs)
	resp := bytes.Clone(hs.w)
	hs.r.Reset(nil)
	hsPool.Put(hs)
	if err != nil {
		reason := "bad_request"
		if rej, ok := err.(*ws.ConnectionRejectedError); ok && rej.StatusCode() == http.StatusNotFound {
			reason = "not_found"
		}
		g.m.handshakeFailed(reason)
		c.closeWith(resp, 0, 0, reasonHandshakeFailed)
		return 0
	}
	c.mu.Lock()
	if c.state.Load() != stateAccepted {
		c.mu.Unlock()
		return 0
	}
	g.wheel.set(c, g.nowTick()+g.hiTicks)
	c.state.Store(stateUpgraded)
	c.appendOutLocked(resp, 0)
	sched := c.scheduleLocked()
	c.mu.Unlock()
	if sched {
		g.schedule(c)
	}
	return n
}

// frame handles the WebSocket frame at the start of b and returns its
// length, or 0 if it is incomplete or the connection is now closing.
// Everything that can be decided from the header (protocol violations, a
// message too large) is decided before waiting for the payload.
func (g *Gateway) frame(c *conn, rx *rxScratch, b []byte) int {
	h, hl, err := parseHeader(b)
	if err == nil && hl == 0 {
		return 0
	}
	if err == nil {
		st := ws.StateServerSide
		if c.fragmented {
			st = st.Set(ws.StateFragmented)
		}
		// Reserved opcodes and bits, unmasked client frames, oversized or
		// fragmented control frames, bad continuations.
		err = ws.CheckHeader(h, st)
	}
	if err != nil {
		g.m.protocolErrors.Inc()
		c.closeWith(nil, 0, ws.StatusProtocolError, reasonProtocol)
		return 0
	}
	if h.OpCode == ws.OpText {
		c.goaway(wire.CodeNotBinary, 0, ws.StatusUnsupportedData, reasonProtocol)
		return 0
	}
	if !h.OpCode.IsControl() && int64(len(c.frag))+h.Length > wire.MaxFrameSize {
		// Refused on the header: the payload is never read.
		e := wire.Error{Code: wire.CodeFrameTooLarge, Message: []byte("message larger than 65536 bytes")}
		c.fail(&e, ws.StatusMessageTooBig, reasonProtocol)
		return 0
	}
	if int64(len(b)-hl) < h.Length {
		return 0
	}
	end := hl + int(h.Length)
	p := b[hl:end]
	ws.Cipher(p, h.Mask, 0)
	if c.state.Load() == stateAuthenticated {
		c.deadline.Store(g.nowTick() + g.idTicks) // any frame refreshes the idle deadline
	}
	switch h.OpCode {
	case ws.OpPing:
		if c.allow(g) {
			c.send(wsFrame(ws.OpPong, p), 0)
		}
	case ws.OpPong:
	case ws.OpClose:
		g.peerClose(c, p)
	default: // binary or continuation
		if !h.Fin {
			c.frag = append(c.frag, p...)
			c.fragmented = true
			break
		}
		msg := p
		if c.fragmented {
			msg = append(c.frag, p...)
		}
		g.message(c, rx, msg)
		c.frag, c.fragmented = nil, false
	}
	return end
}

// peerClose answers a WebSocket close frame by echoing its status and
// closing.
func (g *Gateway) peerClose(c *conn, p []byte) {
	status := ws.StatusNormalClosure
	if len(p) >= 2 {
		code, reason := ws.ParseCloseFrameDataUnsafe(p)
		if ws.CheckCloseFrameData(code, reason) == nil {
			status = code
		} else {
			status = ws.StatusProtocolError
		}
	} else if len(p) == 1 {
		status = ws.StatusProtocolError
	}
	c.closeWith(nil, 0, status, reasonClientClose)
}

// allow takes one token from c's bucket: InboundRate tokens a second, at
// most InboundBurst. Counted in millitokens so the refill is exact at any
// rate. c.in is held.
func (c *conn) allow(g *Gateway) bool {
	now := g.nowMS()
	if el := now - c.refillMS; el > 0 { // wraps correctly every 49 days
		t := int64(c.tokens) + int64(el)*int64(g.rateMilli)
		c.tokens = int32(min(t, int64(g.burstMilli)))
		c.refillMS = now
	}
	if c.tokens < 1000 {
		return false
	}
	c.tokens -= 1000
	return true
}
