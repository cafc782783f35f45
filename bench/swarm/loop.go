package swarm

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"math/rand/v2"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chatd-dev/chatd/wire"
)

// Connection states.
const (
	stIdle        uint8 = iota // queued for its first dial
	stConnecting               // non-blocking connect in progress
	stUpgrading                // upgrade request sent, waiting for the 101
	stHello                    // HELLO sent, waiting for WELCOME
	stEstablished              // WELCOME received
	stDraining                 // the server announced a close; waiting for it
	stBackoff                  // closed, waiting to reconnect
	stDone                     // closed for good
)

var stageNames = [...]string{"idle", "connect", "upgrade", "hello", "established", "draining", "backoff", "done"}

// Connection flags.
const (
	flEverUp    uint16 = 1 << iota // had a WELCOME: the next one follows a reconnect
	flHelloSent                    // HELLO was pipelined with the upgrade request
	flPingOut                      // a PING is waiting for its PONG
	flConvAsked                    // OPEN_DIRECT in flight
	flSent                         // SEND in flight (no ACK yet)
	flAcked                        // the current SEND was acknowledged
	flRTDone                       // this side of the round trip is complete
	flWaitPeer                     // ready to SEND once the peer has its WELCOME
	flRetry                        // retry the round trip's request at the next heartbeat
	flRcptDue                      // a RECEIPT is owed for replayed messages, sent after RESUMED
	flBroken                       // a write failed: read what is left, then close (see writeFailed)

	// flConnFlags are the flags about one socket, cleared when it closes.
	flConnFlags = flHelloSent | flPingOut | flConvAsked | flSent | flWaitPeer | flRetry | flRcptDue | flBroken
)

// conn is one client connection: 72 bytes, no pointers but aux, which is
// nil while the connection is idle.
type conn struct {
	fd      int32  // socket, -1 when closed
	gen     uint32 // dial generation, in epoll's data to drop stale events
	hidx    int32  // position in the loop's timer heap, -1 when not scheduled
	state   uint8
	missed  uint8 // PINGs in a row without PONG
	tries   uint8 // consecutive failures (backoff exponent)
	sends   uint8 // round-trip SENDs issued: the client_msg_id suffix
	flags   uint16
	when    int64 // timer: handshake deadline, next PING, drain deadline or redial time (ns since start)
	mark    int64 // dial start until WELCOME; SEND time until the round trip completes
	conv    uint64
	lastSeq uint64 // highest seq seen in conv (the RESUME cursor)
	sentSeq uint64 // seq of the acknowledged round-trip message
	aux     *connAux
}

// connAux is what a connection needs only now and then.
type connAux struct {
	in             []byte // unprocessed input: a partial response or frame
	out            []byte // bytes the socket did not take yet
	frag           []byte // fragmented message being reassembled
	fragging       bool
	hasKey         bool
	key            [keyLen]byte // Sec-WebSocket-Key while upgrading
	reconnectAfter time.Duration
	werr           error // the failed write's error (flBroken)
}

const (
	readBufSize  = 64 << 10
	maxEvents    = 512
	maxWait      = 50 * time.Millisecond
	maxTimersRun = 8192    // timers handled per loop iteration, so I/O is not starved
	maxOutBytes  = 1 << 20 // a connection's unsent bytes beyond which it is dropped
)

// loop is one event-loop goroutine with its epoll instance.
type loop struct {
	r    *runner
	id   int
	epfd int

	events []unix.EpollEvent
	rbuf   []byte // shared read buffer
	wbuf   []byte // WebSocket frame scratch
	fbuf   []byte // chatd frame scratch
	cbuf   []byte // client_msg_id scratch
	dec    wire.Decoder
	rng    *rand.Rand
	curs   [1]wire.Cursor

	heap     []int32 // timer min-heap of connection indices by conn.when
	dialQ    []int32 // first dials, in order
	dialHead int
	redialQ  []int32 // reconnects due
	broken   []int32 // connections whose write failed, to be closed at the end of the iteration
	inflight int     // connections between connect and WELCOME

	rate       float64 // dials per second for this loop
	credit     float64
	lastRefill int64
	now        int64 // ns since the run started

	hb        time.Duration // heartbeat interval (Config.Heartbeat or WELCOME's)
	deadAfter int
	nonce     uint64
}

func newLoop(r *runner, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.New("swarm: epoll_create1: " + err.Error())
	}
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return &loop{
		r:         r,
		id:        id,
		epfd:      epfd,
		events:    make([]unix.EpollEvent, maxEvents),
		rbuf:      make([]byte, readBufSize),
		wbuf:      make([]byte, 0, 1024),
		fbuf:      make([]byte, 0, 1024),
		rng:       rand.New(rand.NewChaCha8(seed)),
		rate:      float64(r.cfg.DialRate) / float64(r.cfg.Loops),
		hb:        r.cfg.Heartbeat,
		deadAfter: r.cfg.DeadAfterMissed,
	}, nil
}

func (l *loop) clock() int64 { return int64(time.Since(l.r.start)) }

// run serves until ctx ends. The sockets stay open: the runner closes
// them once every loop has stopped.
func (l *loop) run(ctx context.Context) {
	done := ctx.Done()
	l.now = l.clock()
	l.lastRefill = l.now
	for {
		select {
		case <-done:
			return
		default:
		}
		l.dial()
		timeout := l.timeout()
		if tick := int64(l.r.cfg.Tick); tick > 0 && timeout != 0 {
			// Sleep out the tick, then take whatever came due meanwhile
			// (events, timers, dials) without blocking again.
			if rest := tick - (l.clock() - l.now); rest > 0 {
				time.Sleep(time.Duration(rest))
			}
			timeout = 0
		}
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		l.now = l.clock()
		if err != nil && err != unix.EINTR {
			l.r.st.failure("epoll_wait:" + errnoName(err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			l.event(ev.Fd, uint32(ev.Pad), ev.Events)
		}
		l.timers()
		l.closeBroken()
	}
}

// teardown closes the epoll instance. Connections are closed by the runner.
func (l *loop) teardown() { _ = unix.Close(l.epfd) }

// timeout is epoll_wait's timeout in ms: until the next timer or dial.
func (l *loop) timeout() int {
	wait := int64(maxWait)
	if len(l.heap) > 0 {
		wait = min(wait, l.r.conns[l.heap[0]].when-l.now)
	}
	if l.inflight < l.r.cfg.MaxInFlightDials {
		if len(l.redialQ) > 0 {
			wait = 0
		} else if l.dialHead < len(l.dialQ) {
			wait = min(wait, int64((1-l.credit)/l.rate*1e9))
		}
	}
	if wait <= 0 {
		return 0
	}
	return int((wait + 999_999) / 1_000_000)
}

// dial starts the connections that are due: reconnects first (bounded by
// MaxInFlightDials only), then first dials at DialRate.
func (l *loop) dial() {
	cfg := l.r.cfg
	l.credit = min(l.credit+float64(l.now-l.lastRefill)*l.rate/1e9, max(1, l.rate/20))
	l.lastRefill = l.now
	for len(l.redialQ) > 0 && l.inflight < cfg.MaxInFlightDials {
		i := l.redialQ[len(l.redialQ)-1]
		l.redialQ = l.redialQ[:len(l.redialQ)-1]
		l.connect(i)
	}
	for l.dialHead < len(l.dialQ) && l.inflight < cfg.MaxInFlightDials && l.credit >= 1 {
		i := l.dialQ[l.dialHead]
		l.dialHead++
		l.credit--
		l.connect(i)
	}
	if l.dialHead > 0 && l.dialHead == len(l.dialQ) {
		l.dialQ, l.dialHead = nil, 0
	}
}

// setState moves c to s, keeping the gauges.
func (l *loop) setState(c *conn, s uint8) {
	st := l.r.st
	switch c.state {
	case stConnecting, stUpgrading, stHello:
		st.dialing.Add(-1)
		l.inflight--
	case stEstablished:
		st.established.Add(-1)
	case stBackoff:
		st.backoff.Add(-1)
	case stDone:
		st.done.Add(-1)
	}
	switch s {
	case stConnecting, stUpgrading, stHello:
		st.dialing.Add(1)
		l.inflight++
	case stEstablished:
		st.established.Add(1)
	case stBackoff:
		st.backoff.Add(1)
	case stDone:
		st.done.Add(1)
	}
	c.state = s
}

func (l *loop) aux(c *conn) *connAux {
	if c.aux == nil {
		c.aux = new(connAux)
	}
	return c.aux
}

// trimAux drops c.aux once it holds nothing.
func (l *loop) trimAux(c *conn) {
	if a := c.aux; a != nil && len(a.in) == 0 && len(a.out) == 0 && !a.fragging && !a.hasKey &&
		c.state != stDraining && c.flags&flBroken == 0 {
		c.aux = nil
	}
}

// connect starts dialing connection i.
func (l *loop) connect(i int32) {
	r := l.r
	c := &r.conns[i]
	if c.gen > 0 {
		r.st.reconns.Add(1)
	}
	c.gen++
	r.st.dials.Add(1)
	l.setState(c, stConnecting)
	c.mark = l.now
	l.schedule(i, l.now+int64(r.cfg.HandshakeTimeout))
	family := unix.AF_INET
	if _, ok := r.target.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.fail(i, c, "socket:"+errnoName(err), false, 0)
		return
	}
	c.fd = int32(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if n := len(r.sources); n > 0 {
		// Choose the port at connect, by 4-tuple, instead of at bind,
		// where a port is taken for every destination.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, r.sources[int(i)%n]); err != nil {
			l.fail(i, c, "bind:"+errnoName(err), false, 0)
			return
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: i, Pad: int32(c.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.fail(i, c, "epoll_ctl:"+errnoName(err), false, 0)
		return
	}
	if err := unix.Connect(fd, r.target); err != nil && err != unix.EINPROGRESS {
		l.fail(i, c, "connect:"+errnoName(err), false, 0)
	}
	// Completion (or refusal) comes as EPOLLOUT / EPOLLERR.
}

// event handles epoll's report for connection i.
func (l *loop) event(i int32, gen uint32, ev uint32) {
	if i < 0 || int(i) >= len(l.r.conns) {
		return
	}
	c := &l.r.conns[i]
	if c.gen != gen || c.fd < 0 {
		return // stale: the socket it was about is closed
	}
	if c.state == stConnecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			l.fail(i, c, "connect:"+errnoName(err), false, 0)
			return
		}
		if !l.connected(i, c) {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.read(i, c, ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
		if c.fd < 0 {
			return
		}
	}
	if ev&unix.EPOLLOUT != 0 && c.aux != nil && len(c.aux.out) > 0 && c.flags&flBroken == 0 {
		l.flush(i, c)
	}
}

// connected sends the upgrade request (and the HELLO when pipelined).
func (l *loop) connected(i int32, c *conn) bool {
	l.setState(c, stUpgrading)
	a := l.aux(c)
	var raw [16]byte
	for k := 0; k < 16; k += 8 {
		u := l.rng.Uint64()
		for j := 0; j < 8; j++ {
			raw[k+j] = byte(u >> (8 * j))
		}
	}
	newKey(&a.key, raw)
	a.hasKey = true
	b := append(l.wbuf[:0], l.r.reqHead...)
	b = append(b, a.key[:]...)
	b = append(b, "\r\n\r\n"...)
	if l.r.cfg.PipelineHello {
		b = l.appendHello(b, i)
		c.flags |= flHelloSent
	}
	l.wbuf = b
	if !l.write(i, c, b) {
		return false
	}
	l.schedule(i, l.now+int64(l.r.cfg.HandshakeTimeout))
	return true
}

func (l *loop) appendHello(dst []byte, i int32) []byte {
	s := &l.r.cfg.Conns[i]
	dev := s.Device
	if dev == "" {
		dev = "swarm"
	}
	h := wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version, Token: sb(s.Token), DeviceID: sb(dev)}
	l.fbuf = h.Append(l.fbuf[:0], 0)
	return appendClientFrame(dst, opBinary, l.fbuf, l.rng.Uint32())
}

// read drains the socket (edge triggered). A short read means it is empty,
// unless the peer hung up, in which case the EOF must be read too.
func (l *loop) read(i int32, c *conn, hup bool) {
	for {
		n, err := unix.Read(int(c.fd), l.rbuf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			l.lost(i, c, errnoName(err))
			return
		case n == 0:
			l.lost(i, c, "eof")
			return
		}
		l.r.st.bytesIn.Add(int64(n))
		l.input(i, c, l.rbuf[:n])
		if c.fd < 0 || (n < len(l.rbuf) && !hup) {
			return
		}
	}
}

// lost handles a socket the server closed or reset.
func (l *loop) lost(i int32, c *conn, what string) {
	if c.state == stDraining {
		after := c.aux.reconnectAfter
		l.closeFD(c, false)
		l.next(i, c, after)
		return
	}
	l.fail(i, c, stageNames[c.state]+":"+what, false, 0)
}

// input processes bytes read from c, keeping an incomplete tail in c.aux.
func (l *loop) input(i int32, c *conn, data []byte) {
	fromAux := c.aux != nil && len(c.aux.in) > 0
	if fromAux {
		c.aux.in = append(c.aux.in, data...)
		data = c.aux.in
	}
	used := l.consume(i, c, data)
	if c.fd < 0 {
		return
	}
	rest := data[used:]
	switch {
	case fromAux && len(rest) == 0:
		c.aux.in = nil
	case fromAux:
		n := copy(c.aux.in, rest)
		c.aux.in = c.aux.in[:n]
		if cap(c.aux.in) > 4096 && cap(c.aux.in) > 4*n {
			c.aux.in = append([]byte(nil), c.aux.in...)
		}
	case len(rest) > 0:
		l.aux(c).in = append(make([]byte, 0, len(rest)+256), rest...)
	}
	l.trimAux(c)
}

// consume handles the complete units at the start of b and returns how
// many bytes they took.
func (l *loop) consume(i int32, c *conn, b []byte) int {
	off := 0
	if c.state == stUpgrading {
		n, res, status := checkResponse(b, c.aux.key[:])
		switch res {
		case upgradeIncomplete:
			return 0
		case upgradeOK:
		case upgradeBadStatus:
			l.drain(i, c, "upgrade:status_"+strconv.Itoa(status), 0)
			return len(b)
		case upgradeBadAccept:
			l.fail(i, c, "upgrade:bad_accept", true, 0)
			return len(b)
		case upgradeTooLarge:
			l.fail(i, c, "upgrade:response_too_large", true, 0)
			return len(b)
		default:
			l.fail(i, c, "upgrade:malformed_response", true, 0)
			return len(b)
		}
		off = n
		c.aux.hasKey = false
		l.setState(c, stHello)
		if c.flags&flHelloSent == 0 {
			l.wbuf = l.appendHello(l.wbuf[:0], i)
			if !l.write(i, c, l.wbuf) {
				return len(b)
			}
		}
		l.schedule(i, l.now+int64(l.r.cfg.HandshakeTimeout))
	}
	for off < len(b) {
		if c.fd < 0 || c.state == stDraining {
			return len(b) // nothing more is read from a closing connection
		}
		h, werr := parseServerHeader(b[off:])
		if werr != "" {
			l.fail(i, c, "ws:"+string(werr), true, 0)
			return len(b)
		}
		if h.hlen == 0 || len(b)-off-h.hlen < h.length {
			break
		}
		p := b[off+h.hlen : off+h.hlen+h.length]
		off += h.hlen + h.length
		l.wsFrame(i, c, h, p)
	}
	return off
}

// wsFrame handles one WebSocket frame from the server.
func (l *loop) wsFrame(i int32, c *conn, h serverHeader, p []byte) {
	switch h.op {
	case opBinary, opCont:
		fragging := c.aux != nil && c.aux.fragging
		if (h.op == opCont) != fragging {
			l.fail(i, c, "ws:bad_continuation", true, 0)
			return
		}
		if !h.fin || fragging {
			a := l.aux(c)
			if len(a.frag)+len(p) > maxMessage {
				l.fail(i, c, "ws:message_too_large", true, 0)
				return
			}
			a.frag = append(a.frag, p...)
			a.fragging = true
			if !h.fin {
				return
			}
			p = a.frag
			a.frag, a.fragging = nil, false
		}
		l.frame(i, c, p)
	case opText:
		l.fail(i, c, "ws:text_message", true, 0)
	case opClose:
		status := 1005
		if len(p) >= 2 {
			status = int(p[0])<<8 | int(p[1])
		}
		l.drain(i, c, "wsclose:"+strconv.Itoa(status), 0)
	case opPing:
		l.wbuf = appendClientFrame(l.wbuf[:0], opPong, p, l.rng.Uint32())
		l.write(i, c, l.wbuf)
	case opPong:
	}
}

// send writes one chatd frame (in l.fbuf) as a binary message.
func (l *loop) send(i int32, c *conn) bool {
	l.wbuf = appendClientFrame(l.wbuf[:0], opBinary, l.fbuf, l.rng.Uint32())
	return l.write(i, c, l.wbuf)
}

// write writes b, keeping what the socket does not take in c.aux.out.
func (l *loop) write(i int32, c *conn, b []byte) bool {
	if c.flags&flBroken != 0 {
		return false
	}
	if c.aux != nil && len(c.aux.out) > 0 {
		if len(c.aux.out)+len(b) > maxOutBytes {
			l.fail(i, c, stageNames[c.state]+":write_backlog", true, 0)
			return false
		}
		c.aux.out = append(c.aux.out, b...)
		return true
	}
	for len(b) > 0 {
		n, err := unix.Write(int(c.fd), b)
		if n > 0 {
			l.r.st.bytesOut.Add(int64(n))
			b = b[n:]
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			l.aux(c).out = append(make([]byte, 0, len(b)+64), b...)
			return true
		}
		l.writeFailed(i, c, err)
		return false
	}
	return true
}

// writeFailed marks c broken. A write fails (EPIPE, ECONNRESET) when the
// server closed the socket, usually right after a GOAWAY that is still
// unread in the socket's receive queue: so c is not failed here but read
// to its end at the end of the loop iteration (the read buffer may be in
// use now), and counted with the reason found there.
func (l *loop) writeFailed(i int32, c *conn, err error) {
	c.flags |= flBroken
	l.aux(c).werr = err
	l.broken = append(l.broken, i)
}

// closeBroken reads what is left on the broken connections, then closes
// them.
func (l *loop) closeBroken() {
	for k, i := range l.broken {
		l.broken[k] = -1
		c := &l.r.conns[i]
		if c.fd < 0 || c.flags&flBroken == 0 {
			continue
		}
		err := c.aux.werr
		c.flags &^= flBroken // reads may answer frames again; writes fail at once
		l.read(i, c, true)
		if c.fd < 0 {
			continue
		}
		if c.state == stDraining {
			after := c.aux.reconnectAfter
			l.closeFD(c, true)
			l.next(i, c, after)
			continue
		}
		l.fail(i, c, stageNames[c.state]+":"+errnoName(err), true, 0)
	}
	l.broken = l.broken[:0]
}

// flush writes c's pending output.
func (l *loop) flush(i int32, c *conn) {
	out := c.aux.out
	for len(out) > 0 {
		n, err := unix.Write(int(c.fd), out)
		if n > 0 {
			l.r.st.bytesOut.Add(int64(n))
			out = out[n:]
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.aux.out = out
			return
		}
		c.aux.out = nil
		l.writeFailed(i, c, err)
		return
	}
	c.aux.out = nil
	l.trimAux(c)
}

// fail counts a failure and closes c (resetting it when abort), then
// schedules its reconnect or retires it.
func (l *loop) fail(i int32, c *conn, reason string, abort bool, after time.Duration) {
	l.r.st.failure(reason)
	l.closeFD(c, abort)
	l.next(i, c, after)
}

// drain counts a failure the server announced (GOAWAY, closing ERROR, HTTP
// refusal, WebSocket close) and waits for the server to close the socket.
func (l *loop) drain(i int32, c *conn, reason string, after time.Duration) {
	if c.state == stDraining {
		return
	}
	l.r.st.failure(reason)
	l.setState(c, stDraining)
	l.aux(c).reconnectAfter = after
	l.schedule(i, l.now+int64(l.r.cfg.DrainTimeout))
}

// closeFD closes c's socket. abort resets the connection (no TIME_WAIT
// here, the server sees ECONNRESET).
func (l *loop) closeFD(c *conn, abort bool) {
	if c.fd >= 0 {
		if abort {
			_ = unix.SetsockoptLinger(int(c.fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		}
		_ = unix.Close(int(c.fd))
		c.fd = -1
	}
	c.aux = nil
	c.flags &^= flConnFlags
	c.missed = 0
	l.unschedule(c)
}

// next schedules c's reconnect, or retires it.
func (l *loop) next(i int32, c *conn, after time.Duration) {
	cfg := l.r.cfg
	if !cfg.Reconnect {
		l.setState(c, stDone)
		return
	}
	c.tries = min(c.tries+1, 32)
	b := cfg.ReconnectMin << (c.tries - 1)
	if b <= 0 || b > cfg.ReconnectMax {
		b = cfg.ReconnectMax
	}
	j := b/2 + time.Duration(l.rng.Int64N(int64(b/2)+1))
	if cfg.FullJitter {
		j = time.Duration(l.rng.Int64N(int64(b) + 1))
	}
	d := max(after, j)
	l.setState(c, stBackoff)
	l.schedule(i, l.now+int64(d))
}

// frame handles one chatd frame from the server.
func (l *loop) frame(i int32, c *conn, f []byte) {
	st := l.r.st
	t, fl, err := l.dec.Decode(f)
	if err != nil {
		st.error("decode")
		return
	}
	d := &l.dec
	switch t {
	case wire.TypeWelcome:
		if c.state == stHello {
			l.welcome(i, c, &d.Welcome)
		}
	case wire.TypeError:
		l.onError(i, c, &d.Error)
	case wire.TypeGoaway:
		l.drain(i, c, "goaway:"+codeName(d.Goaway.Code), time.Duration(d.Goaway.ReconnectAfterMS)*time.Millisecond)
	case wire.TypePong:
		st.pongs.Add(1)
		c.flags &^= flPingOut
		c.missed = 0
	case wire.TypeConv:
		s := &l.r.cfg.Conns[i]
		if c.flags&flConvAsked != 0 && d.Conv.ReqID == 1 && s.Initiator {
			c.flags &^= flConvAsked
			c.conv = d.Conv.ConvID
			l.rtAdvance(i)
		}
	case wire.TypeAck:
		l.onAck(i, c, &d.Ack)
	case wire.TypeMsg:
		l.onMsg(i, c, &d.Msg, fl&wire.FlagReplay != 0)
	case wire.TypeReceipt:
		st.receipts.Add(1)
		r := &d.Receipt
		if c.flags&(flAcked|flRTDone) == flAcked && r.ConvID == c.conv && r.UpToSeq >= c.sentSeq {
			st.record(st.rtH, time.Duration(l.now-c.mark))
			l.rtDone(c)
		}
	case wire.TypeResumed:
		st.resumed.Add(1)
		if d.Resumed.Truncated {
			l.sendResume(i, c)
		} else if c.flags&flRcptDue != 0 {
			c.flags &^= flRcptDue
			l.sendReceipt(i, c, c.lastSeq)
		}
	}
}

func (l *loop) welcome(i int32, c *conn, w *wire.Welcome) {
	cfg := l.r.cfg
	st := l.r.st
	l.setState(c, stEstablished)
	st.welcomes.Add(1)
	st.record(st.connectH, time.Duration(l.now-c.mark))
	if l.hb <= 0 {
		l.hb = time.Duration(w.HeartbeatMS) * time.Millisecond
		if l.hb <= 0 {
			l.hb = 30 * time.Second
		}
	}
	if l.deadAfter <= 0 {
		idle := time.Duration(w.IdleTimeoutMS) * time.Millisecond
		l.deadAfter = max(2, int((idle+l.hb-1)/l.hb))
	}
	l.deadAfter = min(l.deadAfter, 255)
	c.missed, c.tries = 0, 0
	// The first PING is jittered over a whole interval so that
	// connections established together do not ping together.
	l.schedule(i, l.now+l.rng.Int64N(int64(l.hb))+1)
	s := &cfg.Conns[i]
	if c.conv == 0 && s.Conv != 0 {
		c.conv = s.Conv
	}
	reconnect := c.flags&flEverUp != 0
	c.flags |= flEverUp
	if reconnect || cfg.ResumeOnConnect {
		if !l.sendResume(i, c) {
			return
		}
	}
	if cfg.RoundTrip {
		l.rtAdvance(i)
		if p := s.Peer; p >= 0 && c.fd >= 0 {
			if pc := &l.r.conns[p]; pc.state == stEstablished && pc.flags&flWaitPeer != 0 {
				l.rtAdvance(int32(p))
			}
		}
	}
}

func (l *loop) onError(i int32, c *conn, e *wire.Error) {
	name := codeName(e.Code)
	if e.Code.Fatal() {
		stage := "error:"
		if c.state == stHello {
			stage = "hello:"
		}
		l.drain(i, c, stage+name, 0)
		return
	}
	l.r.st.error(name)
	var bit uint16
	switch e.RefType {
	case wire.TypeSend:
		bit = flSent
	case wire.TypeOpenDirect:
		bit = flConvAsked
	default:
		return
	}
	if c.flags&bit != 0 {
		c.flags &^= bit
		if e.Code.Retryable() {
			c.flags |= flRetry // at the next heartbeat
		}
	}
}

// rtAdvance issues the initiator's next round-trip request, if any.
func (l *loop) rtAdvance(i int32) {
	r := l.r
	c := &r.conns[i]
	s := &r.cfg.Conns[i]
	if !s.Initiator || c.flags&(flRTDone|flSent|flConvAsked) != 0 || c.state != stEstablished {
		return
	}
	if c.conv == 0 {
		c.conv = s.Conv
	}
	if c.conv == 0 {
		od := wire.OpenDirect{ReqID: 1, Peer: sb(s.PeerUser)}
		l.fbuf = od.Append(l.fbuf[:0], 0)
		c.flags |= flConvAsked
		l.send(i, c)
		return
	}
	if c.flags&flAcked != 0 {
		// Acknowledged on an earlier connection whose RECEIPT was lost
		// with it: send a new message.
		c.flags &^= flAcked
		c.sends++
	}
	if s.Peer >= 0 && r.conns[s.Peer].state != stEstablished {
		c.flags |= flWaitPeer
		return
	}
	c.flags &^= flWaitPeer
	l.cbuf = r.appendCMID(l.cbuf[:0], int(i), c.sends)
	m := wire.Send{ConvID: c.conv, ClientMsgID: l.cbuf, Kind: wire.KindText, Body: r.body}
	l.fbuf = m.Append(l.fbuf[:0], 0)
	c.flags |= flSent
	c.mark = l.now
	r.st.sends.Add(1)
	l.send(i, c)
}

func (l *loop) onAck(i int32, c *conn, a *wire.Ack) {
	if c.flags&flSent == 0 {
		return
	}
	l.cbuf = l.r.appendCMID(l.cbuf[:0], int(i), c.sends)
	if !bytes.Equal(l.cbuf, a.ClientMsgID) {
		return
	}
	l.r.st.acks.Add(1)
	c.flags = c.flags&^flSent | flAcked
	c.sentSeq = a.Seq
	if a.ConvID == c.conv {
		c.lastSeq = max(c.lastSeq, a.Seq)
	}
	if l.r.cfg.Conns[i].Peer < 0 {
		l.rtDone(c) // nobody here to send a RECEIPT
	}
}

func (l *loop) onMsg(i int32, c *conn, m *wire.Msg, replay bool) {
	st := l.r.st
	st.msgs.Add(1)
	if replay {
		st.replayed.Add(1)
	}
	s := &l.r.cfg.Conns[i]
	if c.conv == 0 && !s.Initiator {
		c.conv = m.ConvID
	}
	if m.ConvID != c.conv {
		return
	}
	c.lastSeq = max(c.lastSeq, m.Seq)
	if !l.r.cfg.RoundTrip || s.Initiator {
		return
	}
	if c.flags&flRTDone == 0 {
		l.rtDone(c)
	}
	if replay {
		c.flags |= flRcptDue // one RECEIPT after RESUMED
		return
	}
	l.sendReceipt(i, c, m.Seq)
}

func (l *loop) rtDone(c *conn) {
	c.flags |= flRTDone
	l.r.st.roundTripped.Add(1)
}

func (l *loop) sendReceipt(i int32, c *conn, seq uint64) bool {
	if c.conv == 0 || seq == 0 {
		return true
	}
	rc := wire.Receipt{ConvID: c.conv, Kind: wire.ReceiptDelivered, UpToSeq: seq}
	l.fbuf = rc.Append(l.fbuf[:0], 0)
	return l.send(i, c)
}

// sendResume sends RESUME with c's cursor (none if c knows no conversation
// yet: the server then replays the newest messages of every conversation).
func (l *loop) sendResume(i int32, c *conn) bool {
	rs := wire.Resume{ReqID: 1}
	if c.conv != 0 {
		l.curs[0] = wire.Cursor{ConvID: c.conv, LastSeq: c.lastSeq}
		rs.Cursors = l.curs[:]
	}
	l.fbuf = rs.Append(l.fbuf[:0], 0)
	l.r.st.resumes.Add(1)
	return l.send(i, c)
}

// timers handles the timers that are due.
func (l *loop) timers() {
	conns := l.r.conns
	for k := 0; k < maxTimersRun && len(l.heap) > 0; k++ {
		i := l.heap[0]
		c := &conns[i]
		if c.when > l.now {
			return
		}
		l.unschedule(c)
		l.expire(i, c)
	}
}

func (l *loop) expire(i int32, c *conn) {
	switch c.state {
	case stConnecting, stUpgrading, stHello:
		l.fail(i, c, "timeout:"+stageNames[c.state], true, 0)
	case stEstablished:
		l.heartbeat(i, c)
	case stDraining:
		after := c.aux.reconnectAfter
		l.closeFD(c, true)
		l.next(i, c, after)
	case stBackoff:
		l.redialQ = append(l.redialQ, i)
	}
}

func (l *loop) heartbeat(i int32, c *conn) {
	st := l.r.st
	if c.flags&flRetry != 0 {
		c.flags &^= flRetry
		l.rtAdvance(i)
		if c.fd < 0 {
			return
		}
	}
	if c.flags&flPingOut != 0 {
		st.missed.Add(1)
		c.missed++
		if int(c.missed) >= l.deadAfter {
			l.fail(i, c, "timeout:pong", true, 0)
			return
		}
	}
	l.nonce++
	p := wire.Ping{Nonce: l.nonce}
	l.fbuf = p.Append(l.fbuf[:0], 0)
	if !l.send(i, c) {
		return
	}
	c.flags |= flPingOut
	st.pings.Add(1)
	l.schedule(i, l.now+int64(l.hb))
}

// Timer heap: a binary min-heap of connection indices ordered by
// conn.when, with each connection's position in conn.hidx.

func (l *loop) schedule(i int32, when int64) {
	c := &l.r.conns[i]
	c.when = when
	if c.hidx < 0 {
		c.hidx = int32(len(l.heap))
		l.heap = append(l.heap, i)
		l.up(int(c.hidx))
		return
	}
	if !l.down(int(c.hidx)) {
		l.up(int(c.hidx))
	}
}

func (l *loop) unschedule(c *conn) {
	h := int(c.hidx)
	if h < 0 {
		return
	}
	last := len(l.heap) - 1
	if h != last {
		l.swap(h, last)
	}
	l.heap = l.heap[:last]
	c.hidx = -1
	if h != last {
		if !l.down(h) {
			l.up(h)
		}
	}
}

func (l *loop) less(a, b int) bool {
	return l.r.conns[l.heap[a]].when < l.r.conns[l.heap[b]].when
}

func (l *loop) swap(a, b int) {
	h := l.heap
	h[a], h[b] = h[b], h[a]
	l.r.conns[h[a]].hidx = int32(a)
	l.r.conns[h[b]].hidx = int32(b)
}

func (l *loop) up(j int) {
	for j > 0 {
		p := (j - 1) / 2
		if !l.less(j, p) {
			return
		}
		l.swap(j, p)
		j = p
	}
}

func (l *loop) down(i int) bool {
	j0 := i
	n := len(l.heap)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && l.less(r, c) {
			c = r
		}
		if !l.less(c, i) {
			break
		}
		l.swap(i, c)
		i = c
	}
	return i > j0
}

func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return "errno_" + strconv.Itoa(int(e))
	}
	return err.Error()
}

func codeName(c wire.Code) string {
	if s := c.String(); s != "unknown" {
		return s
	}
	return "code_" + strconv.FormatUint(uint64(c), 10)
}
