package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

func TestRouteLifecycle(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.hello("alice", "phone", wire.CapZstd)
	// Registered before the WELCOME was written.
	routes, err := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
	if err != nil || len(routes) != 1 {
		t.Fatalf("routes %v, err %v", routes, err)
	}
	r := routes[0]
	if r.Gateway != e.g.ID() || r.Device != "phone" || r.Caps != wire.CapZstd || r.Conn == 0 {
		t.Fatalf("route %+v", r)
	}
	c.conn.Close()
	eventually(t, "route removed", func() bool {
		routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
		return len(routes) == 0
	})
}

// The route TTL is shorter than the test: only the refresh keeps the route
// alive.
func TestRegistryRefreshKeepsRoute(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.RouteTTL = 300 * time.Millisecond })
	login(t, e, "alice", "phone")
	for i := 0; i < 10; i++ { // ~1s: more than three TTLs
		time.Sleep(100 * time.Millisecond)
		routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
		if len(routes) != 1 {
			t.Fatalf("route expired at %d00ms", i+1)
		}
	}
	if v := e.metric("chatd_gateway_registry_calls_total", "op", "refresh"); v < 2 {
		t.Fatalf("refresh calls = %v", v)
	}
}

// The lease TTL is shorter than the test: one Lease call per interval keeps
// every route live, with no per-route refresh.
func TestRegistryLeaseKeepsRoutes(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.LeaseTTL = 300 * time.Millisecond })
	login(t, e, "alice", "phone")
	login(t, e, "bob", "phone")
	for i := 0; i < 10; i++ { // ~1s: more than three TTLs
		time.Sleep(100 * time.Millisecond)
		routes, _ := e.mem.Lookup(context.Background(), []string{"alice", "bob"}, nil)
		if len(routes) != 2 {
			t.Fatalf("routes lost at %d00ms: %v", i+1, routes)
		}
	}
	if v := e.metric("chatd_gateway_registry_calls_total", "op", "lease"); v < 2 {
		t.Fatalf("lease calls = %v", v)
	}
	if v := e.metric("chatd_gateway_registry_calls_total", "op", "refresh"); v != 0 {
		t.Fatalf("refresh calls = %v, want none", v)
	}
}

// flakyLease fails Lease while down is set and records every Lease ttl.
type flakyLease struct {
	routing.Registry
	down atomic.Bool
	mu   sync.Mutex
	ttls []time.Duration
}

func (f *flakyLease) Lease(ctx context.Context, gw string, ttl time.Duration) error {
	if f.down.Load() {
		return errors.New("registry unreachable")
	}
	f.mu.Lock()
	f.ttls = append(f.ttls, ttl)
	f.mu.Unlock()
	return f.Registry.Lease(ctx, gw, ttl)
}

// install puts f in front of the gateway's registry.
func (f *flakyLease) install(d *Deps) { f.Registry, d.Registry = d.Registry, f }

// A lease that lapsed (renewals failed for longer than LeaseTTL) may have
// cost the gateway its routes: once a renewal succeeds again, every route
// is registered again.
func TestRegistryLapsedLeaseRefreshes(t *testing.T) {
	t.Parallel()
	fl := &flakyLease{}
	e := startGateway(t, func(c *Config, d *Deps) {
		c.LeaseTTL = 300 * time.Millisecond
		fl.install(d)
	})
	login(t, e, "alice", "phone")
	routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
	if len(routes) != 1 {
		t.Fatalf("routes %v", routes)
	}
	fl.down.Store(true)
	eventually(t, "the lease lapses", func() bool {
		got, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
		return len(got) == 0
	})
	// What a registry may do to a gateway without a lease (Redis' reaper
	// does it on the next Lookup): drop its routes.
	if err := e.mem.Unregister(context.Background(), routes); err != nil {
		t.Fatal(err)
	}
	fl.down.Store(false)
	eventually(t, "the route is registered again once the lease is back", func() bool {
		got, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
		return len(got) == 1
	})
	if v := e.metric("chatd_gateway_registry_calls_total", "op", "refresh"); v < 1 {
		t.Fatalf("refresh calls = %v", v)
	}
}

// Close ends the lease (Lease with ttl 0) after its connections are gone.
func TestCloseEndsLease(t *testing.T) {
	t.Parallel()
	fl := &flakyLease{}
	e := startGateway(t, func(_ *Config, d *Deps) { fl.install(d) })
	login(t, e, "alice", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if n := len(fl.ttls); n < 2 || fl.ttls[0] <= 0 || fl.ttls[n-1] > 0 {
		t.Fatalf("lease ttls %v: want a lease at start and ttl 0 last", fl.ttls)
	}
}

// flakyUnregister fails Unregister while down, counting the calls.
type flakyUnregister struct {
	routing.Registry
	down  atomic.Bool
	calls atomic.Int64
}

func (f *flakyUnregister) Unregister(ctx context.Context, routes []routing.Route) error {
	f.calls.Add(1)
	if f.down.Load() {
		return errors.New("registry unreachable")
	}
	return f.Registry.Unregister(ctx, routes)
}

// install puts f in front of the gateway's registry.
func (f *flakyUnregister) install(d *Deps) { f.Registry, d.Registry = d.Registry, f }

// A failed Unregister is retried: while the gateway holds its lease, a
// route left in the registry would keep its user online until RouteTTL.
func TestUnregisterRetriedUntilItSucceeds(t *testing.T) {
	t.Parallel()
	fu := &flakyUnregister{}
	e := startGateway(t, func(_ *Config, d *Deps) { fu.install(d) })
	c := login(t, e, "alice", "phone")
	fu.down.Store(true)
	c.conn.Close()
	eventually(t, "a retry of the failed Unregister", func() bool { return fu.calls.Load() >= 2 })
	if routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil); len(routes) != 1 {
		t.Fatalf("routes while Unregister fails: %v, want alice's still there", routes)
	}
	fu.down.Store(false)
	eventually(t, "the route removed once Unregister succeeds", func() bool {
		routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
		return len(routes) == 0
	})
}
