package gateway

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// No goroutine per connection, idle or not: 1,000 authenticated
// connections that each did a PING round trip and got a routed frame leave
// the goroutine count where it was (netpoll's and ants' workers exit when
// idle). Not parallel: it counts the process's goroutines.
func TestGoroutinesDoNotGrowWithConnections(t *testing.T) {
	e := startGateway(t, func(c *Config, _ *Deps) {
		c.InboundRate, c.InboundBurst = 1000, 1000
	})
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	const n = 1000
	clients := make([]*client, n)
	ids := make([]uint64, n)
	for i := range clients {
		c := dial(t, e.url)
		c.hello("user", deviceName(i), 0)
		c.ping(uint64(i))
		clients[i] = c
		ids[i] = e.connID(t, "user", deviceName(i))
	}
	frame := msgFrame(1, []byte("to all"))
	e.publish(t, ids, frame)
	for _, c := range clients {
		c.expect(wire.TypeMsg)
	}
	if e.g.Conns() != n {
		t.Fatalf("Conns() = %d", e.g.Conns())
	}
	var now int
	deadline := time.Now().Add(10 * time.Second)
	for {
		now = runtime.NumGoroutine()
		if now-base < 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d with %d idle connections", base, now, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("goroutines: %d before, %d with %d idle connections", base, now, n)
}

func deviceName(i int) string { return "dev-" + strconv.Itoa(i) }
