package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// Client is a chatd client: one user on one device. It keeps one WebSocket
// connection open (reconnecting as needed), queues and resends messages,
// orders and deduplicates what it receives, and batches receipts. Create it
// with New, call Start, read Events, and Close it when done. All methods are
// safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	store  CursorStore // nil: in memory only
	events chan Event

	// Test hooks, set before Start.
	now   func() time.Time
	randN func(n int64) int64 // uniform in [0, n)
	sleep func(ctx context.Context, d time.Duration) bool

	mu        sync.Mutex
	started   bool
	closed    bool
	cancel    context.CancelFunc
	sess      *session // the connection past WELCOME, nil while offline
	userID    string
	nextReq   uint64
	pingSeq   uint64 // nonce of the last PING written
	stats     Stats
	convs     map[uint64]*convState
	seen      idRing // recently seen message ids
	pending   []*pendingSend
	byCMID    map[string]*pendingSend
	reqs      map[uint64]*request // OpenDirect and History calls in progress
	fills     map[uint64]*fill    // HISTORY requests of the gap filler, by req id
	resumeID  uint64              // req id of the RESUME in flight, 0 if none
	resumeGot uint64              // new messages accepted since that RESUME was sent
	rcpt      receipts
	focus     uint64 // Focus: sent again on every new connection
	// focusAt is when the last FOCUS on a conversation was written;
	// focusTimer, when armed, writes the current focus once the server's
	// gap has passed.
	focusAt    time.Time
	focusTimer *time.Timer
	// SetTyping: the conversation of the last TYPING started, and when.
	typingConv uint64
	typingAt   time.Time
	// apiToken is the token of the latest handshake, reused by the HTTP
	// calls (Inbox).
	apiToken string

	evq    []queued // events not yet received by the app
	evWake chan struct{}

	closing chan struct{}
	wg      sync.WaitGroup // run loop and event pump
}

// New validates cfg, loads the cursors from cfg.Cursors and returns a Client
// that is not connected yet: call Start. Sends made before Start are queued.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		store:   cfg.Cursors,
		events:  make(chan Event, cfg.EventBuffer),
		now:     time.Now,
		randN:   func(n int64) int64 { return mrand.Int64N(n) },
		convs:   map[uint64]*convState{},
		seen:    newIDRing(8192),
		byCMID:  map[string]*pendingSend{},
		reqs:    map[uint64]*request{},
		fills:   map[uint64]*fill{},
		evWake:  make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	c.sleep = c.defaultSleep
	c.rcpt.init()
	if c.store != nil {
		cur, err := c.store.Load()
		if err != nil {
			return nil, err
		}
		for conv, seq := range cur {
			cv := c.convLocked(conv)
			cv.cursor, cv.latest, cv.committed = seq, seq, seq
			cv.started = true
		}
	}
	c.wg.Add(1)
	go c.pump()
	return c, nil
}

// Start runs the connection loop in the background: connect, authenticate,
// resume, and reconnect with backoff whenever the connection is lost, until
// Close is called or ctx ends. It returns at once; connection progress is
// reported as Connected and Disconnected events.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.started {
		return ErrStarted
	}
	c.started = true
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go c.run(ctx)
	return nil
}

// Close stops the connection loop, closes the connection and the Events
// channel (events not yet received are dropped), fails SendWait, OpenDirect
// and History calls in progress with ErrClosed, and flushes the CursorStore
// if it has a Flush method. Unacknowledged sends are lost: they are not
// persisted. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cancel := c.cancel
	c.mu.Unlock()
	close(c.closing)
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()

	c.mu.Lock()
	for _, p := range c.pending {
		p.finish(Ack{}, ErrClosed)
	}
	c.pending, c.byCMID = nil, map[string]*pendingSend{}
	for id, r := range c.reqs {
		r.finish(ErrClosed)
		delete(c.reqs, id)
	}
	c.rcpt.stop()
	c.mu.Unlock()

	if f, ok := c.store.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// Events returns the channel of events (see Event). It is buffered
// (Config.EventBuffer); when the app falls behind, further events wait in an
// unbounded in-memory queue inside the Client, so a slow reader never stalls
// the connection, heartbeats or acknowledgements, at the cost of memory
// growing with the backlog (Stats().QueuedEvents). A cursor only moves, and
// an automatic "delivered" receipt is only sent, when the app has received
// the message from this channel. The channel is closed by Close.
func (c *Client) Events() <-chan Event { return c.events }

// UserID returns the user id the server authenticated, or "" before the
// first Connected event.
func (c *Client) UserID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userID
}

// DeviceID returns Config.DeviceID.
func (c *Client) DeviceID() string { return c.cfg.DeviceID }

// Cursors returns, per conversation, the highest seq up to which every
// message has been received by the app from Events (own messages count
// once acknowledged). These are the values saved to the CursorStore.
func (c *Client) Cursors() map[uint64]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint64]uint64, len(c.convs))
	for id, cv := range c.convs {
		if cv.committed > 0 {
			out[id] = cv.committed
		}
	}
	return out
}

// Stats returns a snapshot of the Client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	for _, cv := range c.convs {
		s.Buffered += len(cv.buf)
	}
	s.QueuedEvents = len(c.evq)
	s.PendingSends = len(c.pending)
	return s
}

// run is the connection loop.
func (c *Client) run(ctx context.Context) {
	defer c.wg.Done()
	attempt := 0
	token := ""
	for {
		s, err := c.connect(ctx, &token)
		var floor time.Duration
		if err == nil {
			attempt = 0
			err = c.serve(ctx, s)
		}
		if ctx.Err() != nil {
			return
		}
		if ge, ok := err.(*GoawayError); ok {
			floor = ge.ReconnectAfter
		}
		if isAuthError(err) {
			token = "" // ask Config.Token for a new one
		}
		delay := max(c.backoff(attempt), floor)
		attempt++
		c.log.Info("chatd: disconnected", "err", err, "retry_in", delay)
		c.mu.Lock()
		c.emitLocked(Disconnected{Err: err, RetryIn: delay})
		c.mu.Unlock()
		if !c.sleep(ctx, delay) {
			return
		}
	}
}

// serve runs an established session until it ends and returns the reason.
func (c *Client) serve(ctx context.Context, s *session) error {
	c.activate(s)
	s.start()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.fail(ErrClosed)
	}
	s.wg.Wait()
	c.deactivate(s)
	return s.err
}

// backoff returns the full-jitter delay before reconnect attempt n (from 0).
func (c *Client) backoff(n int) time.Duration {
	ceil := c.cfg.BackoffMax
	if n < 32 {
		if d := c.cfg.BackoffMin << n; d > 0 && d < ceil {
			ceil = d
		}
	}
	return time.Duration(c.randN(int64(ceil) + 1))
}

func (c *Client) defaultSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// activate makes s the current session: announce it, resume, resend what
// is pending.
func (c *Client) activate(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = s
	c.userID = s.userID
	c.stats.Connects++
	c.emitLocked(Connected{
		UserID: s.userID, DeviceID: c.cfg.DeviceID, Heartbeat: s.heartbeat,
		Compression: s.zstd, ServerTime: s.serverTime,
	})
	c.sendResumeLocked()
	for _, p := range c.pending {
		c.writeSendLocked(p)
	}
	for _, r := range c.sortedReqsLocked() {
		s.send(r.frame)
		r.sent = true
	}
	c.flushReceiptsLocked()
	if c.focus != 0 {
		// A new connection has its own limit.
		c.focusAt = time.Time{}
		c.sendFocusLocked()
	}
}

// deactivate forgets the session's in-flight state after it ended.
func (c *Client) deactivate(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s {
		return
	}
	c.sess = nil
	c.resumeID = 0
	for id, f := range c.fills {
		if cv := c.convs[f.conv]; cv != nil {
			cv.fillReq = 0
		}
		delete(c.fills, id)
	}
	for _, p := range c.pending {
		p.disarm()
	}
	// A group request written on this connection may have been applied:
	// writing it again would create a second group or fail as a repeat,
	// so its caller learns the connection was lost instead.
	for id, r := range c.reqs {
		if r.once && r.sent {
			delete(c.reqs, id)
			r.finish(ErrMaybeApplied)
		}
	}
	c.rcpt.connectionLost()
	c.typingConv, c.typingAt = 0, time.Time{} // that connection's typing ended with it
}

// handleLocked dispatches one decoded frame of s.
func (c *Client) handleLocked(s *session, t wire.Type, f wire.Flags) {
	d := &s.dec
	switch t {
	case wire.TypeMsg:
		c.onMsgLocked(&d.Msg, f&wire.FlagReplay != 0)
	case wire.TypeAck:
		c.onAckLocked(&d.Ack)
	case wire.TypeReceipt:
		r := &d.Receipt
		c.emitLocked(Receipt{Conv: r.ConvID, User: string(r.User), Kind: r.Kind, UpToSeq: r.UpToSeq})
	case wire.TypeTyping:
		ty := &d.Typing
		ev := Typing{Conv: ty.ConvID, User: string(ty.User), Typing: ty.State == wire.TypingStarted}
		if ev.Typing {
			ev.Until = c.now().Add(wire.TypingTTL)
		}
		c.emitLocked(ev)
	case wire.TypePresence:
		pr := &d.Presence
		ev := Presence{Conv: pr.ConvID, User: string(pr.User), Online: pr.Online, Approx: approxNames[pr.Approx]}
		if pr.LastSeenMS != 0 {
			ev.LastSeen = time.UnixMilli(int64(pr.LastSeenMS))
		}
		c.emitLocked(ev)
	case wire.TypeResumed:
		c.onResumedLocked(&d.Resumed)
	case wire.TypeHistoryEnd:
		c.onHistoryEndLocked(&d.HistoryEnd)
	case wire.TypeConv:
		c.onConvLocked(&d.Conv)
	case wire.TypePong:
		c.rcpt.pong(d.Pong.Nonce)
	case wire.TypeError:
		c.onErrorLocked(s, &d.Error)
	case wire.TypeGoaway:
		g := &d.Goaway
		s.fail(&GoawayError{
			Code: g.Code, ReconnectAfter: time.Duration(g.ReconnectAfterMS) * time.Millisecond,
			Message: string(g.Message),
		})
	default:
		c.log.Debug("chatd: ignoring frame", "type", t)
	}
}

func (c *Client) onErrorLocked(s *session, e *wire.Error) {
	se := &ServerError{Code: e.Code, RefType: e.RefType, ConvID: e.ConvID, Message: string(e.Message)}
	c.log.Debug("chatd: server error", "err", se, "req_id", e.ReqID, "client_msg_id", string(e.ClientMsgID))
	switch e.RefType {
	case wire.TypeSend:
		if p := c.byCMID[string(e.ClientMsgID)]; p != nil {
			c.sendErrorLocked(p, se)
		}
	case wire.TypeHistory:
		if f := c.fills[e.ReqID]; f != nil {
			c.fillErrorLocked(e.ReqID, f, se)
		} else if r := c.reqs[e.ReqID]; r != nil {
			delete(c.reqs, e.ReqID)
			r.finish(se)
		}
	case wire.TypeOpenDirect, wire.TypeCreateGroup, wire.TypeGroupChange:
		if r := c.reqs[e.ReqID]; r != nil {
			delete(c.reqs, e.ReqID)
			r.finish(se)
		}
	case wire.TypeResume:
		if e.ReqID == c.resumeID {
			c.resumeErrorLocked(s, se)
		}
	case wire.TypeReceipt:
		c.rcpt.refused(e.ConvID, se.Retryable())
		c.flushReceiptsLocked()
	default:
		c.log.Warn("chatd: server error", "err", se)
	}
	if e.Code.Fatal() {
		s.fail(se)
	}
}

// emitLocked queues an event for the app.
func (c *Client) emitLocked(ev Event) {
	c.queueLocked(queued{ev: ev})
}

func (c *Client) queueLocked(q queued) {
	c.evq = append(c.evq, q)
	select {
	case c.evWake <- struct{}{}:
	default:
	}
}

// queued is one entry of the event queue. An entry with conv != 0 moves
// that conversation's committed cursor to seq once the app has the event
// (ev may be nil: an own message or a skipped seq only moves the cursor).
type queued struct {
	ev        Event
	conv, seq uint64
}

// pump hands queued events to the app and commits cursors behind them.
func (c *Client) pump() {
	defer c.wg.Done()
	defer close(c.events)
	for {
		select {
		case <-c.evWake:
		case <-c.closing:
			return
		}
		for {
			c.mu.Lock()
			if len(c.evq) == 0 {
				c.evq = nil // let a large backlog's array go
				c.mu.Unlock()
				break
			}
			q := c.evq[0]
			c.evq[0] = queued{}
			c.evq = c.evq[1:]
			c.mu.Unlock()
			if q.ev != nil {
				select {
				case c.events <- q.ev:
				case <-c.closing:
					return
				}
			}
			if q.conv != 0 {
				c.commit(q.conv, q.seq, q.ev != nil)
			}
		}
	}
}

// commit records that the app holds conv up to seq.
func (c *Client) commit(conv, seq uint64, message bool) {
	c.mu.Lock()
	cv := c.convLocked(conv)
	if seq > cv.committed {
		cv.committed = seq
	}
	if message && !c.cfg.DisableAutoDelivered {
		c.markLocked(conv, wire.ReceiptDelivered, seq)
	}
	c.mu.Unlock()
	if c.store != nil {
		if err := c.store.Save(conv, seq); err != nil {
			c.log.Warn("chatd: saving cursor", "conv", conv, "seq", seq, "err", err)
		}
	}
}

func (c *Client) newReqLocked() uint64 {
	c.nextReq++
	return c.nextReq
}

// newClientMsgID returns 128 random bits in hex.
func newClientMsgID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// idRing remembers the last n message ids.
type idRing struct {
	set  map[uint64]struct{}
	ring []uint64
	next int
}

func newIDRing(n int) idRing {
	return idRing{set: make(map[uint64]struct{}, n), ring: make([]uint64, n)}
}

func (r *idRing) has(id uint64) bool {
	_, ok := r.set[id]
	return ok
}

func (r *idRing) add(id uint64) {
	if id == 0 || r.has(id) {
		return
	}
	if old := r.ring[r.next]; old != 0 {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
