package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	mem := routing.NewMemory()
	deps := Deps{Auth: fakeAuth{}, Producer: nopProducer{}, Registry: mem, Router: mem}
	cases := []struct {
		name string
		cfg  Config
		deps Deps
		want string
	}{
		{name: "missing deps", deps: Deps{Auth: fakeAuth{}}, want: "required"},
		{name: "heartbeat above idle", cfg: Config{HeartbeatInterval: time.Minute, IdleTimeout: time.Second}, deps: deps, want: "HeartbeatInterval"},
		{name: "queue below a frame", cfg: Config{MaxQueueBytes: 1000}, deps: deps, want: "MaxQueueBytes"},
		{name: "id too long", cfg: Config{ID: strings.Repeat("x", 65)}, deps: deps, want: "ID"},
	}
	for _, tc := range cases {
		if _, err := New(tc.cfg, tc.deps); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	g, err := New(Config{}, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(context.Background())
	if !strings.HasPrefix(g.ID(), "gw-") || g.cfg.IdleTimeout != 75*time.Second || g.cfg.MaxQueueBytes != 256<<10 {
		t.Fatalf("defaults: id %q %+v", g.ID(), g.cfg)
	}
	g2, err := New(Config{}, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close(context.Background())
	if g2.ID() == g.ID() {
		t.Fatal("two gateways share a generated id")
	}
}

// Two gateways share one port with ReusePort; without it the second fails.
func TestReusePort(t *testing.T) {
	t.Parallel()
	a := startGateway(t, func(c *Config, _ *Deps) { c.ReusePort = true })
	b := startGateway(t, func(c *Config, _ *Deps) {
		c.ReusePort = true
		c.Addr = a.g.Addr().String()
	})
	if a.g.Addr().String() != b.g.Addr().String() {
		t.Fatalf("addresses %v and %v", a.g.Addr(), b.g.Addr())
	}
	for i := 0; i < 8; i++ {
		login(t, a, "alice", deviceName(i))
	}
	if a.g.Conns()+b.g.Conns() != 8 {
		t.Fatalf("connections: %d + %d", a.g.Conns(), b.g.Conns())
	}
	mem := routing.NewMemory()
	c, err := New(Config{Addr: a.g.Addr().String()}, Deps{Auth: fakeAuth{}, Producer: nopProducer{}, Registry: mem, Router: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.Start(); err == nil {
		t.Fatal("a third gateway without ReusePort bound the same port")
	}
}
