package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// inprocListener is the embedded broker's listener. It accepts TCP
// connections from other processes (gateways, other cores) and, through
// dial, connections made by Kafka clients in this process, which are
// in-memory pipes that never touch the kernel.
//
// Why: in a process that runs the broker and the core, every record
// crossed loopback TCP twice or more (produce, fetch, and their responses),
// 14 writes and 22 reads per message at 200 msg/s, each waking a thread
// through the runtime's poller. A pipe hands the bytes from one goroutine to
// the other. The Kafka protocol, the broker and the clients are unchanged;
// only the byte transport differs.
type inprocListener struct {
	net.Listener // TCP
	log          *slog.Logger

	accepted chan acceptResult
	pipes    chan net.Conn
	done     chan struct{}
	once     sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

// listenInproc is a kfake.ListenFn. The returned listener's accept loop
// runs until Close.
func listenInproc(network, address string, log *slog.Logger) (*inprocListener, error) {
	tl, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &inprocListener{
		Listener: tl,
		log:      log,
		accepted: make(chan acceptResult),
		pipes:    make(chan net.Conn),
		done:     make(chan struct{}),
	}
	go l.acceptTCP()
	return l, nil
}

// acceptTCP feeds Accept with TCP connections. A transient accept error
// (out of file descriptors, a connection reset before accept) is retried
// after a backoff instead of being returned: kfake stops listening for good
// on any Accept error, and one EMFILE would otherwise cut every gateway off
// the broker until restart.
func (l *inprocListener) acceptTCP() {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			select {
			case <-time.After(backoff):
				backoff = min(2*backoff, time.Second)
				continue
			case <-l.done:
				return
			}
		}
		backoff = 5 * time.Millisecond
		if c != nil {
			c = &guardConn{Conn: c, log: l.log}
		}
		select {
		case l.accepted <- acceptResult{c, err}:
			if err != nil {
				return
			}
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
	}
}

// Accept returns the next TCP or in-process connection.
func (l *inprocListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.accepted:
		return r.c, r.err
	case c := <-l.pipes:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops both kinds of accept; dial fails from then on, like a
// connect to a closed port.
func (l *inprocListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// dial connects to the listener in memory. It fails like a refused TCP
// connect once the listener is closed.
func (l *inprocListener) dial(ctx context.Context, network string) (net.Conn, error) {
	client, server := memPipe(l.Addr())
	select {
	case l.pipes <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
		_ = client.Close()
		_ = server.Close()
		return nil, ctx.Err()
	}
	_ = client.Close()
	_ = server.Close()
	return nil, &net.OpError{Op: "dial", Net: network, Addr: l.Addr(), Err: syscall.ECONNREFUSED}
}

// inprocDialer dials the listeners in this process in memory and anything
// else over the network.
type inprocDialer struct {
	mu  sync.Mutex
	lns map[string]*inprocListener // by listen address (host:port)
}

func (d *inprocDialer) add(l *inprocListener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lns == nil {
		d.lns = make(map[string]*inprocListener)
	}
	d.lns[l.Addr().String()] = l
}

// DialContext has kgo.Dialer's signature.
func (d *inprocDialer) DialContext(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	l := d.lns[host]
	d.mu.Unlock()
	if l != nil {
		return l.dial(ctx, network)
	}
	nd := net.Dialer{Timeout: 10 * time.Second} // kgo's default dial timeout
	return nd.DialContext(ctx, network, host)
}

// maxRequestBytes is the largest Kafka request the broker accepts from a
// TCP client: Kafka's own default socket.request.max.bytes, and franz-go's
// default BrokerMaxWriteBytes, so no request of our clients is refused.
const maxRequestBytes = 100 << 20

// guardConn is a TCP connection to the embedded broker that refuses a
// request larger than maxRequestBytes before the broker sees its size.
//
// Why: kfake allocates (and zeroes) a buffer of whatever size a request's
// first four bytes claim. A stray HTTP request to the Kafka port ("GET "
// reads as 1.2 GB) cost 1.2 GB and a second of CPU per connection; a port
// scanner could exhaust the process's memory. A real broker closes such a
// connection, and so does this: the bytes of the bad size are never
// delivered, and every Read from then on fails.
type guardConn struct {
	net.Conn
	log  *slog.Logger
	left int64   // body bytes of the current request still to pass
	hdr  [4]byte // size prefix bytes seen so far
	hn   int
	bad  error
}

func (g *guardConn) Read(b []byte) (int, error) {
	if g.bad != nil {
		return 0, g.bad
	}
	n, err := g.Conn.Read(b)
	for i := 0; i < n; {
		if g.left > 0 {
			k := int(min(int64(n-i), g.left))
			g.left -= int64(k)
			i += k
			continue
		}
		start := i - g.hn // where this size prefix began, if in b
		g.hdr[g.hn] = b[i]
		g.hn++
		i++
		if g.hn < 4 {
			continue
		}
		g.hn = 0
		size := binary.BigEndian.Uint32(g.hdr[:])
		if size > maxRequestBytes {
			g.bad = fmt.Errorf("bus: kafka request of %d bytes from %s refused (limit %d): not a Kafka client?", size, g.RemoteAddr(), maxRequestBytes)
			g.log.Warn("embedded kafka: connection closed", "err", g.bad)
			_ = g.Conn.Close()
			return max(start, 0), g.bad
		}
		g.left = int64(size)
	}
	return n, err
}
