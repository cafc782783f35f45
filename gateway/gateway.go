// Package gateway is chatd's connection gateway: it holds client sockets and
// nothing durable.
//
// It accepts TCP connections on a cloudwego/netpoll event loop, upgrades them
// to WebSocket (gobwas/ws) on the path /chat/v1/ws, authenticates the HELLO,
// registers device -> (gateway, connection) in the routing registry, produces
// every client request that needs the core to the bus (Kafka chat.inbound),
// and writes the pre-encoded frames the router hands it to its connections.
// A crash drops sockets, never messages: everything durable is behind the
// bus, and clients recover what they missed with RESUME.
//
// # No goroutine per connection
//
// netpoll runs OnRequest on its pool only while a connection has unread
// bytes; an idle connection is a small struct (conn), a netpoll connection
// with no buffer attached (see ConfigureNetpoll) and one slot in the timing
// wheel. Every deadline (handshake, HELLO, idle, closing) lives in one shared
// wheel swept by one goroutine; outbound queues are drained by one bounded
// ants pool; registry calls are batched by one registrar goroutine.
//
// # Connection lifecycle
//
//	state          entered when                      deadline (wheel)              on expiry
//	-------------  --------------------------------  ----------------------------  -------------------------------
//	accepted       TCP accept (netpoll OnPrepare)    HandshakeTimeout              close (no bytes: not HTTP yet)
//	upgraded       101 Switching Protocols queued    HelloTimeout                  GOAWAY hello_timeout, close
//	registering    valid HELLO, token verified       HandshakeTimeout (registry)   GOAWAY unavailable, close
//	authenticated  Register returned; WELCOME queued IdleTimeout, pushed by every  GOAWAY idle_timeout, close
//	                                                 frame from the client
//	closing        final frames queued (ERROR,       WriteTimeout (grace to        close without them
//	               GOAWAY, HTTP error, WS close)     flush them)
//	closed         socket closed by us or the peer   none (removed from the wheel)
//
//	accepted --request--> upgraded --HELLO--> registering --Register ok--> authenticated
//	    |                    |                    |                             |
//	    +--------------------+--------------------+------> closing ------------+----> closed
//	  (HTTP 404/431/400,   (ERROR/GOAWAY)      (registry error,             (GOAWAY, WS close,
//	   handshake timeout)                        shutdown)                   slow consumer, ...)
//
// Any state can jump straight to closed (peer hang-up, write error or
// timeout, slow consumer while a write is in flight). While registering,
// input is held (copied aside, never left in netpoll's buffer) and processed
// after WELCOME, so every reply follows the WELCOME. Only authenticated
// connections are in the routing table (Gateway.conns), and they enter it
// with their WELCOME already queued: a routed frame is never written before
// the WELCOME.
//
// # Locks
//
// Lock order (a lock may be taken while holding the ones above it, never the
// reverse):
//
//	conn.in       input processing of one connection (netpoll's OnRequest or
//	              the deferred processing of input held while registering)
//	conn.mu       the connection's state transitions and outbound queue
//	Gateway.connsMu   routing table (id -> authenticated conn), taken under
//	              conn.mu by the transitions that add and remove entries
//	wheel.mu      the timing wheel, taken under conn.mu by state
//	              transitions (a deadline changes with the state)
//	registrar.mu, Gateway.backlogMu   leaves: nothing is taken while
//	              holding them, and they are never taken under conn.mu
//	Gateway.lifeMu    Start against the beginning of Close only
//	connIndex.mu  the watches and pulls indexes (presence.go, pull.go)
//	topicJoiner.mu    leaf, taken under the watches index's lock by its
//	              keyChanged hook (topics.go)
//	topicJoiner.deliverMu  outermost: held while a presence change or a
//	              watch confirmation is sent to watchers (it takes the
//	              watches index, connsMu and conn.mu inside)
//
// conn.mu is never held across I/O, a registry call, a produce or a netpoll
// Close (whose close callback takes conn.mu).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/panjf2000/ants/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// Path is the only HTTP path upgraded to WebSocket; any other gets 404.
const Path = "/chat/v1/ws"

// MaxRequestHeaderBytes bounds the HTTP upgrade request (request line and
// headers); a larger one is answered 431 and closed.
const MaxRequestHeaderBytes = 4 << 10

// Authenticator verifies HELLO tokens.
type Authenticator interface {
	// Authenticate returns the user id the token names and 0, or 0 for the
	// user and the code to refuse it with: wire.CodeTokenInvalid or
	// wire.CodeTokenExpired (any other code is sent as is). It runs on the
	// connection's input path, so it must be fast and local (signature
	// check, no network call). The token is only valid during the call.
	Authenticate(token []byte, now time.Time) (user string, code wire.Code)
}

// Producer hands records to the bus (Kafka chat.inbound).
type Producer interface {
	// Produce sends one record asynchronously and calls done exactly once
	// with the outcome, on any goroutine, possibly before Produce returns.
	// key and value belong to the producer until done runs; the gateway
	// reuses them afterwards. Produce must not block for long: it runs on
	// the connection's input path.
	Produce(ctx context.Context, key, value []byte, done func(error))
}

// Config configures a Gateway. The zero value of every field means its
// documented default.
type Config struct {
	// Addr is the TCP address to listen on. Default ":8080".
	Addr string
	// ID names this gateway instance in routes and envelopes (at most
	// wire.MaxGatewayIDLen bytes). Default: "gw-" and 16 random hex digits,
	// unique per process start.
	ID string
	// ReusePort sets SO_REUSEPORT on the listener so that several gateway
	// processes can share one port (the kernel spreads accepts among them).
	ReusePort bool

	// HandshakeTimeout bounds the time from accept to a complete HTTP
	// upgrade request, and the time a valid HELLO may wait for its
	// registry call. Default 5s.
	HandshakeTimeout time.Duration
	// HelloTimeout bounds the time from the upgrade to the HELLO; past it
	// the connection gets GOAWAY hello_timeout. Default 10s.
	HelloTimeout time.Duration
	// HeartbeatInterval is announced in WELCOME: clients PING at least this
	// often. Default 30s. It must be below IdleTimeout.
	HeartbeatInterval time.Duration
	// IdleTimeout closes (GOAWAY idle_timeout) an authenticated connection
	// that sent no frame for that long. Default 75s.
	IdleTimeout time.Duration
	// WriteTimeout bounds one flush to a socket; a client that does not read
	// for that long is closed. It also bounds how long final frames (GOAWAY,
	// ERROR before close) may take to leave. Default 10s.
	WriteTimeout time.Duration
	// LeaseTTL is the gateway's registry lease (routing.Registry.Lease):
	// renewed every LeaseTTL/3 with one call, it keeps all of this
	// gateway's routes live; after a crash they stop being live within
	// LeaseTTL. Default 90s.
	LeaseTTL time.Duration
	// RouteTTL is the TTL of each route in the registry; every live route
	// is registered again every RouteTTL/3, in batches. It only bounds how
	// long a crashed gateway's routes take registry memory. Default 24h.
	RouteTTL time.Duration
	// ShutdownSpread: Close's GOAWAY tells each client to wait a random
	// reconnect_after_ms in [0, ShutdownSpread), so a restart's clients do
	// not all come back in the same instant. Default 5s; negative: 0 for
	// everyone.
	ShutdownSpread time.Duration

	// MaxQueueBytes bounds a connection's outbound queue, including the
	// bytes of the write in flight. Past it the connection is closed as a
	// slow consumer. Default 256 KiB; at least wire.MaxFrameSize+14.
	MaxQueueBytes int
	// InboundRate and InboundBurst are the per-connection token bucket on
	// inbound frames (frames per second, bucket size). A frame beyond it is
	// dropped and answered ERROR rate_limited. Defaults 50 and 100.
	InboundRate, InboundBurst int
	// Workers bounds the goroutines that drain outbound queues (an ants
	// pool; idle workers exit after a second). Default max(256,
	// 16*GOMAXPROCS).
	Workers int

	// Logger receives the gateway's logs. Default slog.Default().
	Logger *slog.Logger
}

// Deps are the gateway's collaborators.
type Deps struct {
	Auth     Authenticator    // required
	Producer Producer         // required
	Registry routing.Registry // required
	Router   routing.Router   // required
	// Presence, when not nil, tells whether a user whose device
	// disconnected still has another one online; without it the gateway
	// announces no offline changes (watchers learn them on their next
	// FOCUS).
	Presence routing.Presence
	// Metrics, when not nil, receives the gateway's collectors.
	Metrics *prometheus.Registry
}

// Gateway is one gateway instance. Create it with New, then Start it.
type Gateway struct {
	cfg  Config
	deps Deps
	id   string
	idb  []byte // id as bytes, for envelopes (never modified)
	log  *slog.Logger
	m    *metrics

	start      time.Time // base of the wheel's clock and of the rate limiter
	tickDur    time.Duration
	tick       atomic.Int64 // wheel ticks since start (written by the sweeper)
	wheel      wheel
	hsTicks    int64 // HandshakeTimeout in ticks
	hiTicks    int64 // HelloTimeout
	idTicks    int64 // IdleTimeout
	wrTicks    int64 // WriteTimeout (closing grace)
	rateMilli  int32 // InboundRate: tokens per second = millitokens per millisecond
	burstMilli int32

	nextConn atomic.Uint64
	open     atomic.Int64

	connsMu sync.RWMutex
	conns   map[uint64]*conn // authenticated connections by id (the routing table)

	reg registrar
	// refreshRetry is set while a retry of a failed refresh is scheduled.
	refreshRetry atomic.Bool
	// leasedAt is when the registry last accepted the lease (unix ns).
	leasedAt atomic.Int64

	pool        *ants.PoolWithFuncGeneric[*conn]
	backlogMu   sync.Mutex
	backlog     []*conn // connections whose drain the pool refused (overloaded)
	backlogWake chan struct{}

	ln          netpoll.Listener
	evl         netpoll.EventLoop
	unsubscribe func()
	watches     watches      // presence.go
	topics      *topicJoiner // topics.go; nil when the Router has no Topics
	pulls       pulls        // pull.go

	lifeMu  sync.Mutex      // serializes Start with the beginning of Close
	ctx     context.Context // cancelled when Close finishes
	cancel  context.CancelFunc
	stop    chan struct{} // closed by Close: stops the background goroutines
	wg      sync.WaitGroup
	started atomic.Bool
	closing atomic.Bool
	closed  chan struct{}

	onRequestCalls atomic.Int64 // OnRequest invocations (tests assert no spinning)
}

// New validates cfg, applies defaults and returns a Gateway that is not yet
// listening. It configures netpoll's process-wide buffers with
// DefaultNetpollBuffers unless ConfigureNetpoll was called before.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if deps.Auth == nil || deps.Producer == nil || deps.Registry == nil || deps.Router == nil {
		return nil, errors.New("gateway: Deps.Auth, Producer, Registry and Router are required")
	}
	setDefault(&cfg.Addr, ":8080")
	setDefault(&cfg.HandshakeTimeout, 5*time.Second)
	setDefault(&cfg.HelloTimeout, 10*time.Second)
	setDefault(&cfg.HeartbeatInterval, 30*time.Second)
	setDefault(&cfg.IdleTimeout, 75*time.Second)
	if cfg.ShutdownSpread == 0 {
		cfg.ShutdownSpread = 5 * time.Second
	}
	setDefault(&cfg.WriteTimeout, 10*time.Second)
	setDefault(&cfg.LeaseTTL, 90*time.Second)
	setDefault(&cfg.RouteTTL, 24*time.Hour)
	setDefault(&cfg.MaxQueueBytes, 256<<10)
	setDefault(&cfg.InboundRate, 50)
	setDefault(&cfg.InboundBurst, 100)
	setDefault(&cfg.Workers, max(256, 16*runtime.GOMAXPROCS(0)))
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.HandshakeTimeout < 0 || cfg.HelloTimeout < 0 || cfg.HeartbeatInterval < 0 ||
		cfg.IdleTimeout < 0 || cfg.WriteTimeout < 0 || cfg.LeaseTTL < 0 || cfg.RouteTTL < 0:
		return nil, errors.New("gateway: negative timeout")
	case cfg.HeartbeatInterval >= cfg.IdleTimeout:
		return nil, fmt.Errorf("gateway: HeartbeatInterval %v must be below IdleTimeout %v",
			cfg.HeartbeatInterval, cfg.IdleTimeout)
	case cfg.MaxQueueBytes < wire.MaxFrameSize+maxWSHeader:
		return nil, fmt.Errorf("gateway: MaxQueueBytes %d is below one maximal frame (%d)",
			cfg.MaxQueueBytes, wire.MaxFrameSize+maxWSHeader)
	case cfg.InboundRate <= 0 || cfg.InboundBurst <= 0 || cfg.InboundBurst > 1_000_000 || cfg.InboundRate > 1_000_000:
		return nil, errors.New("gateway: InboundRate and InboundBurst must be in 1..1000000")
	case cfg.Workers < 0:
		return nil, errors.New("gateway: negative Workers")
	}
	if cfg.ID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("gateway: generate id: %w", err)
		}
		cfg.ID = "gw-" + hex.EncodeToString(b[:])
	}
	if cfg.ID == routing.AllGateways || routing.IsTopicChannel(cfg.ID) {
		return nil, fmt.Errorf("gateway: ID %q is reserved (routing.AllGateways and topic channels)", cfg.ID)
	}
	if len(cfg.ID) > wire.MaxGatewayIDLen {
		return nil, fmt.Errorf("gateway: ID longer than %d bytes", wire.MaxGatewayIDLen)
	}
	if err := ConfigureNetpoll(DefaultNetpollBuffers); err != nil && !errors.Is(err, errNetpollConfigured) {
		return nil, err
	}

	g := &Gateway{
		cfg:         cfg,
		deps:        deps,
		id:          cfg.ID,
		idb:         []byte(cfg.ID),
		log:         cfg.Logger.With("gateway", cfg.ID),
		m:           newMetrics(),
		start:       time.Now(),
		conns:       make(map[uint64]*conn),
		backlogWake: make(chan struct{}, 1),
		stop:        make(chan struct{}),
		closed:      make(chan struct{}),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.reg.init()

	// The wheel's tick: 1s, finer when a timeout is short (tests), so that a
	// deadline fires within a quarter of its length.
	shortest := min(cfg.HandshakeTimeout, cfg.HelloTimeout, cfg.IdleTimeout, cfg.WriteTimeout)
	g.tickDur = min(time.Second, max(10*time.Millisecond, shortest/4))
	g.hsTicks = g.ticks(cfg.HandshakeTimeout)
	g.hiTicks = g.ticks(cfg.HelloTimeout)
	g.idTicks = g.ticks(cfg.IdleTimeout)
	g.wrTicks = g.ticks(cfg.WriteTimeout)
	g.wheel.init(max(g.hsTicks, g.hiTicks, g.idTicks, g.wrTicks) + 2)
	g.rateMilli = int32(cfg.InboundRate)
	g.burstMilli = int32(cfg.InboundBurst) * 1000

	pool, err := ants.NewPoolWithFuncGeneric(cfg.Workers, g.runConn,
		ants.WithNonblocking(true),
		ants.WithPanicHandler(func(p any) { g.log.Error("gateway: panic in writer", "panic", p) }))
	if err != nil {
		return nil, fmt.Errorf("gateway: worker pool: %w", err)
	}
	g.pool = pool

	if deps.Metrics != nil {
		if err := g.m.register(deps.Metrics); err != nil {
			pool.Release()
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return g, nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// ticks converts a duration to wheel ticks: rounded up, plus one because
// the wheel's clock (the last tick) may be up to a tick behind real time. A
// deadline therefore fires between d and d+2 ticks after it was set.
func (g *Gateway) ticks(d time.Duration) int64 {
	return int64((d+g.tickDur-1)/g.tickDur) + 1
}

// Start listens on Config.Addr, subscribes to the router and serves in the
// background. It returns once the listener is bound.
func (g *Gateway) Start() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: already started")
	}
	if g.closing.Load() {
		return errors.New("gateway: closed")
	}
	fail := func(err error) error {
		g.started.Store(false)
		return err
	}
	ln, err := listen(g.cfg.Addr, g.cfg.ReusePort)
	if err != nil {
		return fail(fmt.Errorf("gateway: listen %s: %w", g.cfg.Addr, err))
	}
	evl, err := netpoll.NewEventLoop(g.onRequest, netpoll.WithOnPrepare(g.onPrepare))
	if err != nil {
		ln.Close()
		return fail(fmt.Errorf("gateway: event loop: %w", err))
	}
	// Routes registered before the lease exists are not live (and the
	// registry may drop them), so the lease comes first.
	lctx, cancel := g.registryCtx()
	err = g.deps.Registry.Lease(lctx, g.id, g.cfg.LeaseTTL)
	cancel()
	if err != nil {
		ln.Close()
		return fail(fmt.Errorf("gateway: registry lease: %w", err))
	}
	g.leasedAt.Store(time.Now().UnixNano())
	unsub, err := g.deps.Router.Subscribe(g.id, g.onBatch)
	if err != nil {
		ln.Close()
		return fail(fmt.Errorf("gateway: router subscribe: %w", err))
	}
	unsubAll, err := g.deps.Router.Subscribe(routing.AllGateways, g.onAll)
	if err != nil {
		unsub()
		ln.Close()
		return fail(fmt.Errorf("gateway: router subscribe %s: %w", routing.AllGateways, err))
	}
	g.ln, g.evl = ln, evl
	g.unsubscribe = func() { unsubAll(); unsub() }
	if tr, ok := g.deps.Router.(routing.Topics); ok {
		ts, err := tr.SubscribeTopics(g.onTopic)
		if err != nil {
			g.unsubscribe()
			ln.Close()
			return fail(fmt.Errorf("gateway: router topics: %w", err))
		}
		g.topics = newTopicJoiner(ts)
		g.watches.keyChanged = g.topics.mark // no connection exists yet
		g.unsubscribe = func() { ts.Close(); unsubAll(); unsub() }
		g.wg.Add(1)
		go g.runTopics()
	}

	g.wg.Add(4)
	go func() {
		defer g.wg.Done()
		if err := evl.Serve(&gatedListener{Listener: ln, g: g}); err != nil && !g.closing.Load() {
			g.log.Error("gateway: serve", "err", err)
		}
	}()
	go g.runWheel()
	go g.runRegistrar()
	go g.runBacklog()
	g.log.Info("gateway: listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the address the gateway listens on (nil before Start).
func (g *Gateway) Addr() net.Addr {
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

// ID returns the gateway's instance id, as used in routes and envelopes.
func (g *Gateway) ID() string { return g.id }

// Conns returns the number of open connections, in any state.
func (g *Gateway) Conns() int { return int(g.open.Load()) }

// Close stops accepting connections, sends GOAWAY shutting_down to every
// connection and closes them once it is flushed (or when ctx expires),
// unsubscribes from the router, unregisters the routes and stops the
// workers. It returns ctx's error if ctx expired first; the gateway is
// stopped either way.
func (g *Gateway) Close(ctx context.Context) error {
	if !g.closing.CompareAndSwap(false, true) {
		<-g.closed
		return nil
	}
	defer close(g.closed)
	var firstErr error
	g.lifeMu.Lock() // wait for a Start in progress; none can begin now
	started := g.started.Load()
	g.lifeMu.Unlock()
	if started {
		// New connections are now accepted and closed at once by
		// gatedListener. Tell everyone else to go away.
		for _, c := range g.wheel.all(nil) {
			g.shutdownConn(c)
		}
		for g.open.Load() > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			firstErr = ctx.Err()
			for _, c := range g.wheel.all(nil) {
				c.terminate(reasonShutdown)
			}
		}
		shutCtx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			shutCtx, cancel = context.WithTimeout(context.Background(), time.Second)
			defer cancel()
		}
		if err := g.evl.Shutdown(shutCtx); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("gateway: shutdown event loop: %w", err)
		}
		g.unsubscribe()
	}
	close(g.stop) // the registrar flushes its unregistrations before exiting
	g.wg.Wait()
	if started {
		// Every connection is gone: end the lease so no route of this
		// gateway stays live for the rest of LeaseTTL.
		lctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := g.deps.Registry.Lease(lctx, g.id, 0); err != nil {
			g.log.Warn("gateway: end registry lease", "err", err)
		}
		cancel()
	}
	relCtx := ctx
	if ctx.Err() != nil {
		relCtx = nil // do not wait for the workers: the deadline has passed
	}
	if err := g.pool.ReleaseContext(relCtx); err != nil && relCtx != nil && firstErr == nil && !errors.Is(err, ants.ErrPoolClosed) {
		firstErr = fmt.Errorf("gateway: stop workers: %w", err)
	}
	g.cancel()
	if g.deps.Metrics != nil {
		g.m.unregister(g.deps.Metrics)
	}
	return firstErr
}

// nowTick is the wheel's clock.
func (g *Gateway) nowTick() int64 { return g.tick.Load() }

// nowMS is milliseconds since the gateway was created (rate limiter clock).
func (g *Gateway) nowMS() uint32 { return uint32(time.Since(g.start).Milliseconds()) }

// runWheel advances the timing wheel and expires deadlines.
func (g *Gateway) runWheel() {
	defer g.wg.Done()
	t := time.NewTicker(g.tickDur)
	defer t.Stop()
	var expired []*conn
	for {
		select {
		case <-g.stop:
			return
		case now := <-t.C:
			tick := int64(now.Sub(g.start) / g.tickDur)
			if tick <= g.tick.Load() {
				continue
			}
			g.tick.Store(tick)
			expired = g.wheel.advance(tick, expired[:0])
			for i, c := range expired {
				g.expire(c, tick)
				expired[i] = nil
			}
			g.kickBacklog()
		}
	}
}

// gatedListener accepts and immediately closes new connections once the
// gateway is closing: netpoll offers no way to pause its accept loop short
// of Shutdown, which would also close the open connections without a
// GOAWAY. Returning (nil, nil) is netpoll's "nothing to accept" (EAGAIN);
// its level-triggered poller calls again while connections are pending.
type gatedListener struct {
	netpoll.Listener
	g *Gateway
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if c != nil && l.g.closing.Load() {
		c.Close()
		return nil, nil
	}
	return c, err
}
