package gateway

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// registryBatch is the most routes one Register or Unregister call carries.
const registryBatch = 1000

// Retries of failed Unregister calls: the first after unregisterRetryMin,
// doubling to unregisterRetryMax while calls keep failing. At most
// maxUnregisterRetry routes wait (about 100 bytes each); beyond that the
// oldest are dropped and left to their RouteTTL.
const (
	unregisterRetryMin = time.Second
	unregisterRetryMax = 30 * time.Second
	maxUnregisterRetry = 1 << 20
)

// registrar batches every registry call of the gateway in one goroutine:
//
//   - new connections: a HELLO queues its connection; whatever queued while
//     the previous call ran goes out in the next Register (so under load
//     there is one call per batch of connecting clients, never one per
//     connection). Only after Register returns is the WELCOME queued: what
//     is persisted after the client sees WELCOME is routed to it live, what
//     was persisted before is in the store for its RESUME.
//   - closed connections: their routes go out in batched Unregister calls.
//     A failed call is retried with backoff (unregisterRetryMin..Max):
//     while the gateway holds its lease, a route left behind would keep
//     its user online (presence reads the registry) until its RouteTTL,
//     24 h by default, and its watchers would never hear "offline".
//   - lease: every LeaseTTL/3 one Lease call keeps all the gateway's
//     routes live, whatever their number. A failed renewal is retried
//     after 1s; a renewal that succeeds after the lease may have lapsed
//     starts a full refresh, since the registry may have dropped routes
//     of a gateway without a lease.
//   - refresh: every RouteTTL/3 (and on RefreshRoutes) every live route is
//     registered again, in chunks of registryBatch, interleaved with the
//     two queues above so that a refresh of many routes does not delay new
//     connections.
//
// One goroutine keeps the calls ordered: an Unregister always follows the
// Register it undoes, because a connection is unregistered only after it
// was registered (conn.registered) and by the same goroutine.
type registrar struct {
	mu      sync.Mutex
	pending []*conn         // HELLO accepted, waiting for Register
	gone    []routing.Route // closed, waiting for Unregister
	// retry holds the routes of failed Unregister calls until the retry
	// timer moves them back to gone; backoff is the next delay.
	retry   []routing.Route
	backoff time.Duration
	wake    chan struct{}
	// refreshNow asks for a refresh round at once (RefreshRoutes).
	refreshNow chan struct{}
}

func (r *registrar) init() {
	r.wake = make(chan struct{}, 1)
	r.refreshNow = make(chan struct{}, 1)
}

// RefreshRoutes renews the lease and registers every live route again now
// instead of at the next periodic refresh, in batches, off the caller's
// goroutine. Call it when the registry may have lost its entries, e.g.
// after a Redis restart (routing.RedisConfig.OnResubscribe).
func (g *Gateway) RefreshRoutes() {
	select {
	case g.reg.refreshNow <- struct{}{}:
	default:
	}
}

func (r *registrar) add(g *Gateway, c *conn) {
	r.mu.Lock()
	r.pending = append(r.pending, c)
	r.mu.Unlock()
	r.signal()
}

func (r *registrar) unregister(g *Gateway, rt routing.Route) {
	r.mu.Lock()
	r.gone = append(r.gone, rt)
	r.mu.Unlock()
	r.signal()
}

// requeue keeps routes whose Unregister failed for a retry.
func (r *registrar) requeue(g *Gateway, routes []routing.Route) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retry = append(r.retry, routes...)
	if over := len(r.retry) - maxUnregisterRetry; over > 0 {
		g.log.Warn("gateway: too many routes waiting to unregister; dropping the oldest, left to their RouteTTL", "dropped", over)
		r.retry = slices.Delete(r.retry, 0, over)
	}
}

// nextRetry returns the delay before the next retry: unregisterRetryMin,
// doubling at each retry armed without a success in between (see
// unregistered), up to unregisterRetryMax.
func (r *registrar) nextRetry() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := max(r.backoff, unregisterRetryMin)
	r.backoff = min(2*d, unregisterRetryMax)
	return d
}

// unregistered records an Unregister that succeeded: the next failure
// waits unregisterRetryMin again.
func (r *registrar) unregistered() {
	r.mu.Lock()
	r.backoff = 0
	r.mu.Unlock()
}

// retryDue moves the routes waiting for a retry to gone.
func (r *registrar) retryDue() {
	r.mu.Lock()
	r.gone = append(r.gone, r.retry...)
	r.retry = nil
	r.mu.Unlock()
}

func (r *registrar) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *registrar) take() ([]*conn, []routing.Route) {
	r.mu.Lock()
	p, gone := r.pending, r.gone
	r.pending, r.gone = nil, nil
	r.mu.Unlock()
	return p, gone
}

// runRegistrar is the registrar's goroutine.
func (g *Gateway) runRegistrar() {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.RouteTTL / 3)
	defer tick.Stop()
	leaseTick := time.NewTicker(g.cfg.LeaseTTL / 3)
	defer leaseTick.Stop()
	leaseRetry := time.NewTimer(time.Hour)
	leaseRetry.Stop()
	defer leaseRetry.Stop()
	unregRetry := time.NewTimer(time.Hour)
	unregRetry.Stop()
	defer unregRetry.Stop()
	unregArmed := false // unregRetry runs
	var refresh []*conn // connections still to refresh in this round
	for {
		stopping := false
		select {
		case <-g.stop:
			stopping = true
		case <-g.reg.wake:
		case <-g.reg.refreshNow:
			g.renewLease(leaseRetry)
			if len(refresh) == 0 {
				refresh = g.authenticated(refresh[:0])
			}
		case <-tick.C:
			if len(refresh) == 0 {
				refresh = g.authenticated(refresh[:0])
			}
		case <-leaseTick.C:
			if g.renewLease(leaseRetry) && len(refresh) == 0 {
				refresh = g.authenticated(refresh[:0])
			}
		case <-leaseRetry.C:
			if g.renewLease(leaseRetry) && len(refresh) == 0 {
				refresh = g.authenticated(refresh[:0])
			}
		case <-unregRetry.C:
			unregArmed = false
			g.reg.retryDue()
		}
		for {
			pending, gone := g.reg.take()
			if len(pending) == 0 && len(gone) == 0 && (len(refresh) == 0 || stopping) {
				break
			}
			for len(pending) > 0 {
				n := min(len(pending), registryBatch)
				g.registerNew(pending[:n], stopping)
				pending = pending[n:]
			}
			for len(gone) > 0 {
				n := min(len(gone), registryBatch)
				if !g.unregisterRoutes(gone[:n]) && !stopping {
					// A failure while the timer runs adds its routes to the
					// retry it will make.
					g.reg.requeue(g, gone[:n])
					if !unregArmed {
						unregRetry.Reset(g.reg.nextRetry())
						unregArmed = true
					}
				}
				gone = gone[n:]
			}
			if len(refresh) > 0 && !stopping {
				n := min(len(refresh), registryBatch)
				g.refreshRoutes(refresh[:n])
				clear(refresh[:n])
				refresh = refresh[n:]
			}
		}
		if stopping {
			return
		}
	}
}

// renewLease renews the gateway's registry lease. On failure it arms retry
// for 1s. It reports whether the routes need a full refresh: the renewal
// succeeded but the previous success was more than LeaseTTL ago.
func (g *Gateway) renewLease(retry *time.Timer) (lapsed bool) {
	ctx, cancel := g.registryCtx()
	err := g.deps.Registry.Lease(ctx, g.id, g.cfg.LeaseTTL)
	cancel()
	g.m.registryCalls.WithLabelValues("lease").Inc()
	if err != nil {
		g.m.registryErrors.Inc()
		g.log.Warn("gateway: renew registry lease; retrying in 1s", "err", err)
		retry.Reset(time.Second)
		return false
	}
	now := time.Now().UnixNano()
	prev := g.leasedAt.Swap(now)
	return time.Duration(now-prev) >= g.cfg.LeaseTTL
}

func (g *Gateway) registryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.ctx, g.cfg.HandshakeTimeout)
}

// registerNew registers the routes of newly authenticated connections and
// then queues their WELCOME.
func (g *Gateway) registerNew(cs []*conn, stopping bool) {
	var err error
	if stopping {
		err = errStopping
	} else {
		routes := make([]routing.Route, 0, len(cs))
		for _, c := range cs {
			routes = append(routes, c.route())
		}
		ctx, cancel := g.registryCtx()
		err = g.deps.Registry.Register(ctx, routes, g.cfg.RouteTTL)
		cancel()
		g.m.registryCalls.WithLabelValues("register").Inc()
	}
	if err != nil {
		if !stopping {
			g.m.registryErrors.Inc()
			g.log.Warn("gateway: register routes", "routes", len(cs), "err", err)
		}
		for _, c := range cs {
			g.m.handshakeFailed("registry_error")
			code := wire.CodeUnavailable
			if stopping {
				code = wire.CodeShuttingDown
			}
			c.goaway(code, 1000, ws.StatusGoingAway, reasonRegistry)
		}
		return
	}
	nowMS := uint64(time.Now().UnixMilli())
	var undo []routing.Route
	online := make([]string, 0, len(cs))
	for _, c := range cs {
		w := wire.Welcome{
			Version:       wire.Version,
			Caps:          c.caps,
			HeartbeatMS:   uint64(g.cfg.HeartbeatInterval.Milliseconds()),
			IdleTimeoutMS: uint64(g.cfg.IdleTimeout.Milliseconds()),
			MaxFrame:      wire.MaxFrameSize,
			ServerTimeMS:  nowMS,
			UserID:        c.userBytes(),
			DeviceID:      c.deviceBytes(),
		}
		welcome := encodeFrame(&w)
		c.mu.Lock()
		if c.state.Load() != stateRegistering {
			// Closed (or closing) while its Register was in flight.
			c.mu.Unlock()
			undo = append(undo, c.route())
			continue
		}
		g.wheel.set(c, g.nowTick()+g.idTicks)
		c.state.Store(stateAuthenticated)
		c.registered = true
		online = append(online, c.user())
		c.appendOutLocked(welcome, wire.TypeWelcome)
		// Routed frames may now follow the WELCOME in the queue.
		g.connsMu.Lock()
		g.conns[c.id] = c
		g.connsMu.Unlock()
		// Input that arrived between HELLO and WELCOME is held in pend;
		// the drain task processes it after the WELCOME (cheap if none).
		c.resume = true
		sched := c.scheduleLocked()
		c.mu.Unlock()
		g.m.authenticated.Inc()
		if sched {
			g.schedule(c)
		}
	}
	// Unregistered by the registrar's loop right after this call, with
	// retries like any closed connection's.
	for _, rt := range undo {
		g.reg.unregister(g, rt)
	}
	// Every new connection announces its user online, a second device
	// too: telling watchers "online" again is cheaper than asking whether
	// another device already was.
	slices.Sort(online)
	g.announce(slices.Compact(online), true, nil)
}

// unregisterRoutes unregisters routes and announces the users left without
// a device offline. It reports whether the Unregister succeeded.
func (g *Gateway) unregisterRoutes(routes []routing.Route) bool {
	ctx, cancel := g.registryCtx()
	defer cancel()
	g.m.registryCalls.WithLabelValues("unregister").Inc()
	if err := g.deps.Registry.Unregister(ctx, routes); err != nil {
		g.m.registryErrors.Inc()
		g.log.Warn("gateway: unregister routes; retrying", "routes", len(routes), "err", err)
		return false
	}
	g.reg.unregistered()
	g.announceOffline(ctx, routes)
	return true
}

// announceOffline announces the users of routes that have no device left
// online (one Presence call for the batch), with their last seen.
func (g *Gateway) announceOffline(ctx context.Context, routes []routing.Route) {
	if g.deps.Presence == nil {
		return
	}
	users := make([]string, 0, len(routes))
	for _, r := range routes {
		users = append(users, r.User)
	}
	slices.Sort(users)
	users = slices.Compact(users)
	st, err := g.deps.Presence.Presence(ctx, users, nil)
	if err != nil {
		g.log.Warn("gateway: presence after unregister", "users", len(users), "err", err)
		return
	}
	offline := users[:0]
	seen := make(map[string]int64, len(st))
	for _, s := range st {
		if !s.Online {
			offline = append(offline, s.User)
			seen[s.User] = s.LastSeenMS
		}
	}
	g.announce(offline, false, seen)
}

// authenticated appends every routable connection to dst.
func (g *Gateway) authenticated(dst []*conn) []*conn {
	g.connsMu.RLock()
	for _, c := range g.conns {
		dst = append(dst, c)
	}
	g.connsMu.RUnlock()
	return dst
}

// refreshRoutes registers again the routes of cs that are still live. A
// connection that closes after this check is unregistered after this call
// (same goroutine), so a refresh never resurrects a closed route.
func (g *Gateway) refreshRoutes(cs []*conn) {
	routes := make([]routing.Route, 0, len(cs))
	for _, c := range cs {
		if c.state.Load() == stateAuthenticated {
			routes = append(routes, c.route())
		}
	}
	if len(routes) == 0 {
		return
	}
	ctx, cancel := g.registryCtx()
	defer cancel()
	g.m.registryCalls.WithLabelValues("refresh").Inc()
	if err := g.deps.Registry.Register(ctx, routes, g.cfg.RouteTTL); err != nil {
		g.m.registryErrors.Inc()
		g.log.Warn("gateway: refresh routes; retrying the whole refresh in 1s", "routes", len(routes), "err", err)
		// The registry may have lost these routes (a restarted Redis):
		// retry soon rather than at the next periodic refresh.
		if g.refreshRetry.CompareAndSwap(false, true) {
			time.AfterFunc(time.Second, func() {
				g.refreshRetry.Store(false)
				g.RefreshRoutes()
			})
		}
	}
}

type stoppingError struct{}

func (stoppingError) Error() string { return "gateway: stopping" }

var errStopping error = stoppingError{}
