package bench

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing/redistest"
)

// TestRedisCommands: the counts come from a real redis-server and grow by
// exactly the commands sent (plus the INFO of each reading).
func TestRedisCommands(t *testing.T) {
	addr, stop := redistest.Start(t)
	defer stop()
	total0, by0, err := RedisCommands(addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		if _, err := fmt.Fprintf(c, "SET k%d v\r\n", i); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil { // +OK
			t.Fatal(err)
		}
	}
	total1, by1, err := RedisCommands(addr)
	if err != nil {
		t.Fatal(err)
	}
	if d := by1["set"] - by0["set"]; d != 3 {
		t.Errorf("set grew by %v, want 3", d)
	}
	if d := total1 - total0; d != 4 { // 3 SET + the first INFO
		t.Errorf("total grew by %v, want 4 (%v -> %v)", d, by0, by1)
	}
}
