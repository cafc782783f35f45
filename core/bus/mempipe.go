package bus

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// memPipeBuffer is how many unread bytes one direction of a memPipe holds
// before Write waits for the reader, like a socket's send buffer.
const memPipeBuffer = 1 << 20

// memPipe returns the two ends of an in-memory, full-duplex connection
// whose addresses both read as addr.
//
// Unlike net.Pipe, each direction is buffered: Write copies and returns
// without waiting for the reader to be scheduled, as a write to a TCP socket
// does. With net.Pipe every Kafka request and response waited for the other
// side's goroutine to be scheduled, which a busy process may not do for a
// while; the broker and franz-go were written against sockets that buffer.
func memPipe(addr net.Addr) (net.Conn, net.Conn) {
	ab, ba := newMemHalf(), newMemHalf()
	a := &memConn{r: ba, w: ab, addr: addr, closed: make(chan struct{})}
	b := &memConn{r: ab, w: ba, addr: addr, closed: make(chan struct{})}
	a.rdl.init()
	a.wdl.init()
	b.rdl.init()
	b.wdl.init()
	return a, b
}

// memHalf is one direction of a memPipe: bytes written by one end and not
// yet read by the other.
type memHalf struct {
	mu       sync.Mutex
	buf      []byte
	off      int  // buf[off:] is unread
	eof      bool // the writing end closed: reads drain buf, then io.EOF
	gone     bool // the reading end closed: writes fail
	canRead  chan struct{}
	canWrite chan struct{}
}

func newMemHalf() *memHalf {
	return &memHalf{canRead: make(chan struct{}, 1), canWrite: make(chan struct{}, 1)}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read copies unread bytes into b. ok is false when there is nothing to
// return yet.
func (h *memHalf) read(b []byte) (n int, ok bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off == len(h.buf) {
		if h.eof {
			return 0, true, io.EOF
		}
		return 0, len(b) == 0, nil
	}
	n = copy(b, h.buf[h.off:])
	h.off += n
	if h.off == len(h.buf) {
		// Drained: drop a large buffer instead of pinning it to an idle
		// connection.
		if cap(h.buf) > 64<<10 {
			h.buf = nil
		} else {
			h.buf = h.buf[:0]
		}
		h.off = 0
	} else {
		notify(h.canRead) // more for the next read
	}
	notify(h.canWrite)
	return n, true, nil
}

// write copies as much of b as the buffer has room for.
func (h *memHalf) write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gone || h.eof {
		return 0, io.ErrClosedPipe
	}
	room := memPipeBuffer - (len(h.buf) - h.off)
	if room <= 0 {
		return 0, nil
	}
	if h.off > 0 && h.off >= len(h.buf)/2 {
		h.buf = h.buf[:copy(h.buf, h.buf[h.off:])]
		h.off = 0
	}
	n := min(room, len(b))
	h.buf = append(h.buf, b[:n]...)
	notify(h.canRead)
	return n, nil
}

// memConn is one end of a memPipe.
//
// As on a TCP socket, one Write is never interleaved with another Write of
// the same end, and Reads are serialized: a Write larger than the free
// buffer goes out in pieces while the reader drains it, and a concurrent
// writer must not slip its bytes between them (Kafka frames would tear).
type memConn struct {
	rmu, wmu sync.Mutex
	r, w     *memHalf
	addr     net.Addr
	rdl, wdl memDeadline
	once     sync.Once
	closed   chan struct{}
}

func (c *memConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		default:
		}
		n, ok, err := c.r.read(b)
		if ok {
			return n, err
		}
		exp := c.rdl.expired()
		select {
		case <-c.r.canRead:
		case <-exp:
			return 0, os.ErrDeadlineExceeded
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for {
		select {
		case <-c.closed:
			return n, net.ErrClosed
		case <-c.wdl.expired():
			return n, os.ErrDeadlineExceeded
		default:
		}
		k, err := c.w.write(b[n:])
		n += k
		if err != nil || n == len(b) {
			return n, err
		}
		select {
		case <-c.w.canWrite:
		case <-c.wdl.expired():
			return n, os.ErrDeadlineExceeded
		case <-c.closed:
			return n, net.ErrClosed
		}
	}
}

// Close ends both directions: the peer reads what was written, then EOF;
// its writes fail from now on.
func (c *memConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.w.mu.Lock()
		c.w.eof = true
		c.w.mu.Unlock()
		notify(c.w.canRead)
		c.r.mu.Lock()
		c.r.gone = true
		c.r.buf, c.r.off = nil, 0
		c.r.mu.Unlock()
		notify(c.r.canWrite)
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return c.addr }
func (c *memConn) RemoteAddr() net.Addr { return c.addr }

func (c *memConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}
func (c *memConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// memDeadline is a read or write deadline: a channel closed when it passes,
// replaced when the deadline is moved.
type memDeadline struct {
	mu    sync.Mutex
	timer *time.Timer
	done  chan struct{}
}

func (d *memDeadline) init() { d.done = make(chan struct{}) }

func (d *memDeadline) expired() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done
}

func (d *memDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.done // the timer fired: its close has happened or is happening
	}
	d.timer = nil
	passed := false
	select {
	case <-d.done:
		passed = true
	default:
	}
	if t.IsZero() {
		if passed {
			d.done = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !passed {
			close(d.done)
		}
		return
	}
	if passed {
		d.done = make(chan struct{})
	}
	done := d.done
	d.timer = time.AfterFunc(dur, func() { close(done) })
}
