package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// connState is a connection's place in the lifecycle (see the package doc).
// It only moves forward.
type connState = uint32

const (
	stateAccepted connState = iota
	stateUpgraded
	stateRegistering
	stateAuthenticated
	stateClosing
	stateClosed
)

// Close reasons (metric label chatd_gateway_closes_total{reason}).
const (
	reasonPeer             = "peer_closed"
	reasonHandshakeTimeout = "handshake_timeout"
	reasonHandshakeFailed  = "handshake_failed"
	reasonHelloTimeout     = "hello_timeout"
	reasonAuthFailed       = "hello_refused"
	reasonRegistry         = "registry_error"
	reasonIdle             = "idle_timeout"
	reasonSlow             = "slow_consumer"
	reasonWriteTimeout     = "write_timeout"
	reasonWriteError       = "write_error"
	reasonCloseTimeout     = "close_timeout"
	reasonProtocol         = "protocol_error"
	reasonClientClose      = "client_close"
	reasonShutdown         = "shutting_down"
)

// conn is one client connection. It doubles as the context netpoll passes
// to OnRequest (the embedded Context is context.Background()), which saves a
// context.WithValue per connection.
//
// An idle authenticated connection holds this struct, its user+device
// string and nothing else: no decoder (borrowed from a pool per OnRequest),
// no read buffer (pend/frag are nil unless a frame is half-received), no
// queue slice (out is nil while empty).
type conn struct {
	context.Context
	g  *Gateway
	nc netpoll.Connection
	id uint64

	state atomic.Uint32 // connState; written under mu

	// Input side: guarded by in.
	in         sync.Mutex
	pend       []byte // bytes received but not processed yet (partial request or frame, or held while registering)
	frag       []byte // payload of a fragmented WebSocket message so far
	fragmented bool
	ulen       uint8  // user = ud[:ulen], device = ud[ulen:]
	ud         string // set once by the HELLO, before the connection is registered
	caps       uint64 // negotiated capabilities (set with ud)
	tokens     int32  // rate limiter: millitokens
	refillMS   uint32 // rate limiter: gateway clock of the last refill

	// Typing and focus: atomics, because onBatch (focus) and onClosed
	// (typing) read them outside in.
	focus      atomic.Uint64 // FOCUS: the conversation on screen (0: none)
	typingConv atomic.Uint64 // conversation of the last TYPING started, 0 after a stopped
	typingMS   atomic.Uint32 // gateway clock of that TYPING started
	focusMS    atomic.Uint32 // gateway clock of the last FOCUS on a conversation (flood limit)

	// Output side: guarded by mu.
	mu         sync.Mutex
	out        []outItem // queued frames, nil while empty
	queued     int       // bytes in out
	inflight   int       // bytes handed to the socket by the running drain, not yet flushed
	scheduled  bool      // a drain task is queued or running
	writing    bool      // the drain task is inside Flush (a hard Close is safe)
	closeAfter bool      // close the socket once out is flushed (state closing)
	resume     bool      // held input waits for the drain task to process it
	registered bool      // the route is in the registry and the conn in g.conns

	// Deadline: the tick at which the wheel expires the connection. Pushed
	// forward (atomically, without the wheel lock) by every frame.
	deadline atomic.Int64
	// Wheel position: guarded by wheel.mu.
	due       int64
	slot, idx int32
}

// outItem is one queued write: a complete WebSocket frame (header
// included) or raw HTTP bytes. b is never modified after it is queued; the
// same b may sit in many queues (a routed frame).
type outItem struct {
	b []byte
	t wire.Type // frame type for metrics; 0 for HTTP and WebSocket control frames
}

func (c *conn) user() string   { return c.ud[:c.ulen] }
func (c *conn) device() string { return c.ud[c.ulen:] }

// userBytes aliases the user id without copying; callers only read it.
func (c *conn) userBytes() []byte { return unsafe.Slice(unsafe.StringData(c.ud), int(c.ulen)) }

func (c *conn) deviceBytes() []byte {
	d := c.device()
	return unsafe.Slice(unsafe.StringData(d), len(d))
}

func (c *conn) route() routing.Route {
	return routing.Route{User: c.user(), Device: c.device(), Gateway: c.g.id, Conn: c.id, Caps: c.caps}
}

var queuePool = sync.Pool{New: func() any { s := make([]outItem, 0, 16); return &s }}

// appendOutLocked queues b. c.mu is held.
func (c *conn) appendOutLocked(b []byte, t wire.Type) {
	if c.out == nil {
		c.out = *(queuePool.Get().(*[]outItem))
	}
	c.out = append(c.out, outItem{b: b, t: t})
	c.queued += len(b)
}

func releaseQueue(q []outItem) {
	if cap(q) > 1024 {
		return
	}
	clear(q)
	q = q[:0]
	queuePool.Put(&q)
}

// scheduleLocked marks the drain task as scheduled and reports whether the
// caller must hand it to the pool (after unlocking). c.mu is held.
func (c *conn) scheduleLocked() bool {
	if c.scheduled {
		return false
	}
	c.scheduled = true
	return true
}

// send queues one complete frame for the client, in order with everything
// queued before. It reports false if the frame was dropped: the connection
// is closing, or this frame pushed it past MaxQueueBytes and it is now
// closed as a slow consumer.
func (c *conn) send(b []byte, t wire.Type) bool {
	c.mu.Lock()
	if c.state.Load() >= stateClosing {
		c.mu.Unlock()
		c.g.m.drops.WithLabelValues(reasonClosedConn).Inc()
		return false
	}
	if c.queued+c.inflight+len(b) > c.g.cfg.MaxQueueBytes {
		c.mu.Unlock()
		c.slowConsumer()
		return false
	}
	c.appendOutLocked(b, t)
	sched := c.scheduleLocked()
	c.mu.Unlock()
	if sched {
		c.g.schedule(c)
	}
	return true
}

const reasonClosedConn = "closed"

// closeWith queues final (raw bytes: an ERROR or GOAWAY frame, or an HTTP
// response; may be nil) and, when status is not 0, a WebSocket close frame
// with it, then closes the socket once they are flushed. The connection
// stops reading at once. reason labels the close metric.
func (c *conn) closeWith(final []byte, t wire.Type, status ws.StatusCode, reason string) {
	c.mu.Lock()
	if c.state.Load() >= stateClosing {
		c.mu.Unlock()
		return
	}
	c.state.Store(stateClosing)
	if final != nil {
		c.appendOutLocked(final, t)
	}
	if status != 0 {
		c.appendOutLocked(wsCloseFrame(status), 0)
	}
	c.closeAfter = true
	c.g.wheel.set(c, c.g.nowTick()+c.g.wrTicks) // grace to flush the final frames
	sched := c.scheduleLocked()
	c.mu.Unlock()
	c.g.m.closes.WithLabelValues(reason).Inc()
	if sched {
		c.g.schedule(c)
	}
}

// goaway closes the connection with a GOAWAY frame carrying code.
func (c *conn) goaway(code wire.Code, reconnectMS uint64, status ws.StatusCode, reason string) {
	f := wire.Goaway{Code: code, ReconnectAfterMS: reconnectMS, Message: []byte(code.String())}
	c.closeWith(encodeFrame(&f), wire.TypeGoaway, status, reason)
}

// fail closes the connection with an ERROR frame (a fatal request error).
func (c *conn) fail(e *wire.Error, status ws.StatusCode, reason string) {
	c.closeWith(encodeFrame(e), wire.TypeError, status, reason)
}

// slowConsumer closes a connection whose queue passed MaxQueueBytes. Its
// queued frames are dropped (the client recovers them with RESUME). If no
// write is in flight, GOAWAY slow_consumer is queued and flushed best
// effort; if one is (the socket is full), the socket is closed at once,
// which also frees the worker blocked in Flush.
func (c *conn) slowConsumer() {
	c.mu.Lock()
	if c.state.Load() >= stateClosing {
		c.mu.Unlock()
		return
	}
	dropped := len(c.out)
	if c.out != nil {
		releaseQueue(c.out)
		c.out = nil
	}
	c.queued = 0
	hard := c.writing
	if hard {
		c.state.Store(stateClosed)
	} else {
		c.state.Store(stateClosing)
		f := wire.Goaway{Code: wire.CodeSlowConsumer, Message: []byte("slow_consumer")}
		c.appendOutLocked(encodeFrame(&f), wire.TypeGoaway)
		c.appendOutLocked(wsCloseFrame(ws.StatusPolicyViolation), 0)
		c.closeAfter = true
		c.g.wheel.set(c, c.g.nowTick()+c.g.wrTicks)
	}
	sched := !hard && c.scheduleLocked()
	c.mu.Unlock()
	g := c.g
	g.m.drops.WithLabelValues(reasonSlow).Add(float64(dropped + 1))
	g.m.closes.WithLabelValues(reasonSlow).Inc()
	g.log.Debug("gateway: slow consumer", "conn", c.id)
	if hard {
		c.nc.Close()
		return
	}
	if sched {
		g.schedule(c)
	}
}

// terminate closes the socket now, dropping anything queued. reason labels
// the close metric ("" when it was counted already, by closeWith).
func (c *conn) terminate(reason string) {
	c.mu.Lock()
	if c.state.Load() == stateClosed {
		c.mu.Unlock()
		return
	}
	c.state.Store(stateClosed)
	if c.out != nil {
		c.g.m.drops.WithLabelValues(reasonClosedConn).Add(float64(len(c.out)))
		releaseQueue(c.out)
		c.out = nil
	}
	c.queued = 0
	c.mu.Unlock()
	if reason != "" {
		c.g.m.closes.WithLabelValues(reason).Inc()
	}
	// Safe while a drain is in Flush: netpoll's close waits for the flush
	// (locker.stop(flushing)) and wakes it with an error. The drain never
	// touches the output buffer outside Flush without holding c.mu and
	// seeing a live state first.
	c.nc.Close()
}

// onClosed is netpoll's close callback: the socket is gone, whoever closed
// it. It runs once, before netpoll frees the connection's buffers.
func (c *conn) onClosed(netpoll.Connection) error {
	g := c.g
	c.mu.Lock()
	prev := c.state.Swap(stateClosed)
	if c.out != nil {
		releaseQueue(c.out)
		c.out = nil
	}
	c.queued = 0
	registered := c.registered
	if registered {
		c.registered = false
		g.connsMu.Lock()
		delete(g.conns, c.id)
		g.connsMu.Unlock()
	}
	c.mu.Unlock()
	if prev != stateClosed {
		g.m.closes.WithLabelValues(reasonPeer).Inc()
	}
	g.wheel.remove(c)
	if registered {
		g.reg.unregister(g, c.route())
	}
	g.typingGone(c)
	g.watches.remove(c.id)
	g.pulls.remove(c.id)
	g.open.Add(-1)
	g.m.open.Dec()
	return nil
}

// schedule hands c's drain to the worker pool. The pool does not block:
// when every worker is busy, c waits in the backlog for runBacklog.
func (g *Gateway) schedule(c *conn) {
	err := g.pool.Invoke(c)
	if err == nil {
		return
	}
	g.backlogMu.Lock()
	g.backlog = append(g.backlog, c)
	g.backlogMu.Unlock()
	select {
	case g.backlogWake <- struct{}{}:
	default:
	}
}

// kickBacklog wakes runBacklog if connections wait (called every tick, in
// case a wake-up was missed).
func (g *Gateway) kickBacklog() {
	g.backlogMu.Lock()
	n := len(g.backlog)
	g.backlogMu.Unlock()
	if n > 0 {
		select {
		case g.backlogWake <- struct{}{}:
		default:
		}
	}
}

// runBacklog hands the connections the pool refused back to it, waiting
// for a free worker. Connections keep their order; each is in the backlog
// at most once because it is scheduled at most once at a time.
func (g *Gateway) runBacklog() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.backlogWake:
		}
		for {
			g.backlogMu.Lock()
			if len(g.backlog) == 0 {
				g.backlog = nil
				g.backlogMu.Unlock()
				break
			}
			c := g.backlog[0]
			g.backlog[0] = nil
			g.backlog = g.backlog[1:]
			g.backlogMu.Unlock()
			for {
				err := g.pool.Invoke(c)
				if err == nil {
					break
				}
				if errors.Is(err, ants.ErrPoolClosed) {
					return
				}
				// Overloaded: every worker is flushing. Poll; this only
				// happens under overload, never per connection.
				select {
				case <-g.stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	}
}

// runConn is the pool's task: drain c's queue ("drain, then flush once"),
// and process input held while c was registering.
func (g *Gateway) runConn(c *conn) {
	defer func() {
		if p := recover(); p != nil { // a bug: drop the connection, keep the gateway
			g.log.Error("gateway: panic in writer", "conn", c.id, "panic", p)
			c.mu.Lock()
			c.scheduled, c.writing = false, false
			c.mu.Unlock()
			c.terminate("internal_error")
		}
	}()
	w := c.nc.Writer()
	for {
		n, last, resume, more, err := c.fill(w)
		if resume {
			g.resumeInput(c)
			continue
		}
		if !more {
			return
		}
		if err == nil {
			err = w.Flush()
		}
		c.mu.Lock()
		c.writing = false
		c.inflight = 0
		c.mu.Unlock()
		if err != nil {
			reason := reasonWriteError
			if errors.Is(err, netpoll.ErrWriteTimeout) {
				reason = reasonWriteTimeout
			}
			c.terminate(reason)
			continue
		}
		g.m.bytesOut.Add(float64(n))
		if last {
			c.terminate("")
		}
	}
}

// fill takes c's queue and copies it into netpoll's output buffer (n
// bytes), marking a write in flight. It does so under c.mu: a concurrent
// close waits for the lock, so the buffer cannot be freed under the copy.
// more is false when there is nothing to write (the task then ends);
// resume asks the caller to process held input first; last says the
// socket closes after this write.
func (c *conn) fill(w netpoll.Writer) (n int, last, resume, more bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resume {
		c.resume = false
		return 0, false, true, true, nil
	}
	if len(c.out) == 0 || c.state.Load() == stateClosed {
		c.scheduled = false
		return 0, false, false, false, nil
	}
	q := c.out
	c.out = nil
	n = c.queued
	c.queued = 0
	c.inflight = n
	var buf []byte
	buf, err = w.Malloc(n)
	if err == nil {
		off := 0
		for _, it := range q {
			off += copy(buf[off:], it.b)
			if it.t != 0 {
				c.g.m.framesOut(it.t).Inc()
			}
		}
	}
	releaseQueue(q)
	c.writing = true
	return n, c.closeAfter, false, true, err
}
