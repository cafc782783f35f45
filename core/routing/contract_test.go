package routing_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/routing/redistest"
	"github.com/chatd-dev/chatd/core/routing/routingtest"
)

func TestMemoryContract(t *testing.T) {
	routingtest.Run(t, func(t *testing.T) (routing.Registry, routing.Router) {
		m := routing.NewMemory()
		return m, m
	})
}

func TestRedisContract(t *testing.T) {
	addr, _ := redistest.Start(t)
	routingtest.Run(t, func(t *testing.T) (routing.Registry, routing.Router) {
		r := newRedis(t, addr)
		return r, r
	})
}

var prefixes atomic.Int64

// newRedis returns a Redis on addr with a key prefix of its own, so subtests
// sharing one redis-server never see each other's keys or channels.
func newRedis(t testing.TB, addr string) *routing.Redis {
	t.Helper()
	r, err := routing.NewRedis(routing.RedisConfig{
		Addrs:     []string{addr},
		KeyPrefix: fmt.Sprintf("t%d:", prefixes.Add(1)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestMemoryPresence(t *testing.T) {
	routingtest.RunPresence(t, func(t *testing.T) routingtest.RegistryPresence { return routing.NewMemory() })
}

func TestRedisPresence(t *testing.T) {
	addr, _ := redistest.Start(t)
	routingtest.RunPresence(t, func(t *testing.T) routingtest.RegistryPresence { return newRedis(t, addr) })
}
