package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// NetpollBuffers are netpoll's process-wide buffer knobs. They are global to
// the process (netpoll reads them from package variables), so they are set
// once, before the first connection exists.
//
// What an idle netpoll connection keeps (netpoll v0.7.2, see
// nocopy_linkbuffer.go and connection_impl.go):
//
//   - input: a node of BufferSize bytes is allocated at accept. After the
//     input is consumed, connection.Release drops that node only when the
//     connection's maxSize exceeds netpoll's 8 KiB pagesize
//     (LinkBuffer.resetTail); maxSize starts at BufferSize. So with
//     BufferSize <= 8 KiB every connection keeps its input node for life,
//     and with BufferSize > 8 KiB it keeps none while idle (a read event
//     borrows a node from netpoll's size-class cache and gives it back).
//   - output: the first write allocates a node of max(n, LinkBufferCap)
//     bytes. LinkBuffer.Flush appends an empty tail only when that node is
//     larger than 8 KiB, and only then can the sent node be released. So
//     with LinkBufferCap <= 8 KiB every connection that ever wrote keeps an
//     output node, and with LinkBufferCap > 8 KiB it keeps none.
//
// netpoll's size-class cache rounds up to powers of two, so 16 KiB is the
// smallest setting that releases both buffers; the price is that a read
// event and a write borrow a 16 KiB buffer for their duration instead of
// 4-8 KiB. docs/gateway.md has the measured heap per idle connection for
// each setting (BenchmarkIdleConnBytes).
type NetpollBuffers struct {
	BufferSize    int // netpoll.Config.BufferSize: a connection's first input node (bytes)
	LinkBufferCap int // netpoll.LinkBufferCap: the smallest node netpoll allocates (bytes)
}

// DefaultNetpollBuffers releases both buffers of an idle connection.
var DefaultNetpollBuffers = NetpollBuffers{BufferSize: 16 << 10, LinkBufferCap: 16 << 10}

var (
	netpollOnce sync.Once
	netpollSet  NetpollBuffers
)

var errNetpollConfigured = errors.New("gateway: netpoll already configured")

// ConfigureNetpoll sets netpoll's process-wide buffer sizes. Only the first
// call has an effect (New calls it with DefaultNetpollBuffers); later calls
// return an error unless they ask for the settings already in place. Call it
// before New to choose other sizes. A zero field keeps netpoll's default
// (8 KiB input node, 4 KiB minimum node).
func ConfigureNetpoll(b NetpollBuffers) error {
	if b.BufferSize < 0 || b.LinkBufferCap < 0 {
		return errors.New("gateway: negative netpoll buffer size")
	}
	var err error
	first := false
	netpollOnce.Do(func() {
		first = true
		netpollSet = b
		if b.LinkBufferCap > 0 {
			netpoll.LinkBufferCap = b.LinkBufferCap
		}
		// Configure also applies LoadBalance (zero is RoundRobin, netpoll's
		// default) and resets AlwaysNoCopyRead to its default (false).
		err = netpoll.Configure(netpoll.Config{BufferSize: b.BufferSize})
	})
	if err != nil {
		return fmt.Errorf("gateway: configure netpoll: %w", err)
	}
	if !first && netpollSet != b {
		return fmt.Errorf("%w with %+v", errNetpollConfigured, netpollSet)
	}
	return nil
}

// listen opens the TCP listener, with SO_REUSEPORT when asked, and hands it
// to netpoll.
func listen(addr string, reusePort bool) (netpoll.Listener, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	nl, err := netpoll.ConvertListener(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return nl, nil
}
