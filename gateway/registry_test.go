package gateway

import (
	"context"
	"sync"
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

// The registry TTL is shorter than the test: only the refresh keeps the
// route alive.
func TestRegistryRefreshKeepsRoute(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.RegistryTTL = 300 * time.Millisecond })
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

// Concurrent HELLOs share Register calls: while one call runs, the next
// HELLOs queue and go out together.
func TestRegisterBatchesConcurrentHellos(t *testing.T) {
	t.Parallel()
	cr := &countingRegistry{delay: 50 * time.Millisecond}
	e := startGateway(t, func(_ *Config, d *Deps) {
		cr.Registry = d.Registry
		d.Registry = cr
	})
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, e.url)
			c.send(helloFrame("user", string(rune('A'+i)), 0))
			if _, p, err := c.readWS(); err != nil || wire.Type(p[0]) != wire.TypeWelcome {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if cr.routes.Load() != n {
		t.Fatalf("%d routes registered, want %d", cr.routes.Load(), n)
	}
	if calls := cr.registers.Load(); calls > n/4 {
		t.Fatalf("%d Register calls for %d concurrent HELLOs", calls, n)
	}
}

func TestRegistryFailure(t *testing.T) {
	t.Parallel()
	cr := &countingRegistry{}
	cr.fail.Store(true)
	e := startGateway(t, func(_ *Config, d *Deps) {
		cr.Registry = d.Registry
		d.Registry = cr
	})
	c := dial(t, e.url)
	c.send(helloFrame("alice", "phone", 0))
	c.expectGoaway(wire.CodeUnavailable)
	c.expectClosed()
}

// A second connection of the same device replaces the route; closing the
// first does not remove the second's.
func TestReconnectKeepsNewRoute(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	old := login(t, e, "alice", "phone")
	oldID := e.connID(t, "alice", "phone")
	login(t, e, "alice", "phone")
	newID := e.connID(t, "alice", "phone")
	if newID == oldID {
		t.Fatal("same conn id")
	}
	old.conn.Close()
	eventually(t, "old connection closed", func() bool { return e.g.Conns() == 1 })
	time.Sleep(50 * time.Millisecond) // let the Unregister run
	routes, _ := e.mem.Lookup(context.Background(), []string{"alice"}, nil)
	if len(routes) != 1 || routes[0].Conn != newID {
		t.Fatalf("routes %+v, want conn %d", routes, newID)
	}
}

var _ routing.Registry = (*countingRegistry)(nil)
