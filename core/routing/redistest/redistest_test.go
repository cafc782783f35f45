package redistest_test

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/core/routing/redistest"
)

// fatalTB records Fatalf instead of failing the real test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingServerFailsWithHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.Start(f)
		f.msg = "Start returned"
	}()
	<-done
	if !strings.Contains(f.msg, "make test-deps") {
		t.Fatalf("missing redis-server: got %q, want a failure that says to run make test-deps", f.msg)
	}
}

func TestRestartKeepsAddress(t *testing.T) {
	s := redistest.StartServer(t)
	addr := s.Addr
	s.Restart()
	if s.Addr != addr {
		t.Fatalf("address changed: %s -> %s", addr, s.Addr)
	}
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	c.Close()
	s.Stop()
	if c, err := net.Dial("tcp", s.Addr); err == nil {
		c.Close()
		t.Fatal("still listening after Stop")
	}
	s.Stop() // twice is fine
}
