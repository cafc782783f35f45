// Package swarm is chatd's high-density load generator: it holds tens of
// thousands of authenticated, heartbeating WebSocket client connections in
// one process with one or two goroutines, so that a million connections fit
// on the same box as the gateway under test.
//
// # Design
//
// A goroutine and a net.Conn per connection would cost 8+ KiB each on the
// client side (stack, bufio buffers, runtime poller state). Instead each
// event loop is one goroutine over raw non-blocking sockets and one epoll
// instance (edge triggered), and a connection is a 72-byte struct in one
// slice: its state, a timer (heartbeat, handshake deadline or backoff) kept
// in the loop's binary heap, and the few numbers the round trip needs.
// Nothing is allocated per idle connection: reads go through one shared
// 64 KiB buffer per loop, frames are built in per-loop scratch, and a
// connection gets a small side allocation (connAux) only while it has a
// partial frame to keep, a partial write to finish or a handshake under way.
//
// # One connection's life
//
//	dial (bind SourceIP, non-blocking connect) -> HTTP upgrade (random
//	Sec-WebSocket-Key, 101 and Sec-WebSocket-Accept verified) -> HELLO
//	(masked, as every client frame) -> WELCOME -> [RESUME, after a
//	reconnect] -> [round trip] -> PING every heartbeat (first one jittered
//	over a whole interval), PONG expected before the next PING.
//
// The round trip, per pair of connections in Config.Conns: the initiator
// sends OPEN_DIRECT (unless ConnSpec.Conv names the conversation), waits
// for CONV and for its peer's WELCOME, sends SEND and gets ACK; the peer
// gets MSG and answers RECEIPT delivered; the initiator gets that RECEIPT.
// A connection is "round-tripped" when it has seen its side: ACK and
// RECEIPT for the initiator, MSG for the peer.
//
// A GOAWAY, a closing ERROR, an HTTP refusal or a server close is counted
// as a failure with its reason (Stats.Failures). The client then waits for
// the server to close the socket, so that TIME_WAIT stays on the server's
// side and does not eat the client's ports; connections the client gives up
// on (timeouts, protocol violations) are reset instead (SO_LINGER 0). With
// Config.Reconnect the connection is dialled again after
// max(reconnect_after_ms, exponential backoff with jitter), and after its
// WELCOME it sends RESUME with the cursor of its conversation.
package swarm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chatd-dev/chatd/wire"
)

// DefaultPath is the gateway's WebSocket path.
const DefaultPath = "/chat/v1/ws"

// ConnSpec describes one client connection.
type ConnSpec struct {
	Token  string `json:"token"`  // HELLO token (a JWT)
	Device string `json:"device"` // HELLO device_id, 1..64 bytes ("" = "swarm")
	// Peer is the index in Config.Conns of the connection this one is
	// paired with for the round trip, -1 for none. Pairs are symmetric
	// and have exactly one Initiator. Ignored unless Config.RoundTrip.
	Peer int `json:"peer"`
	// PeerUser is the peer's user id, for the initiator's OPEN_DIRECT.
	PeerUser string `json:"peer_user,omitempty"`
	// Conv is the pair's conversation if it is known; 0: the initiator
	// opens it with OPEN_DIRECT.
	Conv uint64 `json:"conv,omitempty"`
	// Initiator sends the round trip's message.
	Initiator bool `json:"initiator,omitempty"`
}

// PortsPerSourceIP is how many connections a load generator should open
// from one source address toward one server port: 10,000 keeps each
// connect() quick (see Config.SourceIPs) with the default ephemeral range.
const PortsPerSourceIP = 10_000

// Config configures a Run. Zero values mean the documented defaults.
// Durations are nanoseconds in JSON.
type Config struct {
	Target   string `json:"target"`              // gateway host:port
	Path     string `json:"path,omitempty"`      // default /chat/v1/ws
	SourceIP string `json:"source_ip,omitempty"` // local address to bind before connecting; "" = any
	// SourceIPs are more local addresses: connection i binds the
	// (i mod n)-th of SourceIP followed by SourceIPs. connect() picks the
	// port by 4-tuple and tries ports of one parity first, half the
	// ephemeral range (14,116 of the default 32768-60999); once those are
	// taken toward the gateway's one port, every connect() scans all of
	// them first (measured: 230 µs per connect() at 19,000 on one address,
	// 80% of a load worker's CPU). So keep each address well under half
	// the range (PortsPerSourceIP).
	SourceIPs []string   `json:"source_ips,omitempty"`
	Conns     []ConnSpec `json:"conns"`

	// DialRate is new connections started per second (default 5000);
	// reconnects are not paced by it, only by MaxInFlightDials.
	DialRate int `json:"dial_rate,omitempty"`
	// MaxInFlightDials bounds connections between connect and WELCOME
	// (default 1000).
	MaxInFlightDials int `json:"max_in_flight_dials,omitempty"`
	// HandshakeTimeout bounds each of connect, upgrade and HELLO->WELCOME
	// (default 30s); past it the connection fails with timeout:<stage>.
	HandshakeTimeout time.Duration `json:"handshake_timeout,omitempty"`
	// PipelineHello sends the HELLO in the same write as the upgrade
	// request instead of after the 101 (one write and one round trip less
	// per connection; the gateway accepts it).
	PipelineHello bool `json:"pipeline_hello,omitempty"`

	// Tick, when set, makes each event loop wake at most once per Tick:
	// after handling a batch it sleeps out the rest of the Tick, then takes
	// every event and timer that came due meanwhile in one go. A loop then
	// costs one wake-up per Tick instead of two per heartbeat (the timer,
	// then the PONG): on this VM a wake-up of an idle thread costs tens of
	// µs of CPU (docs/benchmarks.md), so a worker waking per event spends
	// most of its CPU waking up. Timings it measures (connect, round
	// trip) are then coarse by up to a Tick; the server still sees each
	// connection's PINGs at its own jittered times. 0: wake per event.
	Tick time.Duration `json:"tick,omitempty"`

	// Heartbeat is the PING interval; 0: WELCOME's heartbeat_ms.
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	// DeadAfterMissed closes a connection (timeout:pong) after that many
	// PINGs in a row went unanswered until the next was due. Default:
	// enough PINGs to cover WELCOME's idle_timeout_ms, at least 2.
	DeadAfterMissed int `json:"dead_after_missed,omitempty"`

	// RoundTrip runs one message round trip per pair (see ConnSpec).
	RoundTrip bool `json:"round_trip,omitempty"`
	// BodySize is the round-trip message's body size (default 16).
	BodySize int `json:"body_size,omitempty"`
	// RunID prefixes client_msg_ids so they stay unique across runs and
	// processes (default: random).
	RunID string `json:"run_id,omitempty"`

	// Reconnect dials a connection again after it failed, waiting
	// max(GOAWAY reconnect_after_ms, backoff): backoff starts at
	// ReconnectMin (default 500ms), doubles per consecutive failure up to
	// ReconnectMax (default 30s), and is jittered over [b/2, b].
	Reconnect    bool          `json:"reconnect,omitempty"`
	ReconnectMin time.Duration `json:"reconnect_min,omitempty"`
	// FullJitter draws each backoff from [0, b] instead of [b/2, b]: the
	// policy of chatd's Go SDK (sdk.Config), for scenarios that model it.
	FullJitter   bool          `json:"full_jitter,omitempty"`
	ReconnectMax time.Duration `json:"reconnect_max,omitempty"`
	// ResumeOnConnect sends RESUME after the first WELCOME too (it is
	// always sent after a reconnect's WELCOME).
	ResumeOnConnect bool `json:"resume_on_connect,omitempty"`

	// Loops is the number of event-loop goroutines (default 1). A pair
	// always lives on one loop.
	Loops int `json:"loops,omitempty"`
	// DrainTimeout is how long to wait for the server to close a socket it
	// announced closing (GOAWAY, closing ERROR) before closing it here
	// (default 5s).
	DrainTimeout time.Duration `json:"drain_timeout,omitempty"`
}

func (c *Config) setDefaults() {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.DialRate, 5000)
	def(&c.MaxInFlightDials, 1000)
	def(&c.BodySize, 16)
	def(&c.Loops, 1)
	defD(&c.HandshakeTimeout, 30*time.Second)
	defD(&c.ReconnectMin, 500*time.Millisecond)
	defD(&c.ReconnectMax, 30*time.Second)
	defD(&c.DrainTimeout, 5*time.Second)
	if c.RunID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.RunID = hex.EncodeToString(b[:])
	}
}

// Validate checks cfg (with defaults applied) and resolves its addresses.
func (c *Config) validate() (target unix.Sockaddr, sources []unix.Sockaddr, err error) {
	if c.Target == "" {
		return nil, nil, errors.New("swarm: Target is required")
	}
	ap, err := resolve(c.Target)
	if err != nil {
		return nil, nil, fmt.Errorf("swarm: target %q: %w", c.Target, err)
	}
	target = sockaddr(ap.Addr(), int(ap.Port()))
	srcs := c.SourceIPs
	if c.SourceIP != "" {
		srcs = append([]string{c.SourceIP}, srcs...)
	}
	for _, a := range srcs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, nil, fmt.Errorf("swarm: source ip: %w", err)
		}
		if ip.Unmap().Is4() != ap.Addr().Unmap().Is4() {
			return nil, nil, errors.New("swarm: a source IP and Target are of different address families")
		}
		sources = append(sources, sockaddr(ip, 0))
	}
	if len(c.RunID) > 24 {
		return nil, nil, errors.New("swarm: RunID longer than 24 bytes")
	}
	if len(c.Conns) > 1<<31-1 {
		return nil, nil, errors.New("swarm: too many connections")
	}
	for i, s := range c.Conns {
		if len(s.Device) > wire.MaxIDLen || len(s.Token) > wire.MaxTokenLen {
			return nil, nil, fmt.Errorf("swarm: conn %d: device or token too long", i)
		}
		if !c.RoundTrip || s.Peer == -1 {
			if c.RoundTrip && s.Initiator && s.Conv == 0 && s.PeerUser == "" {
				return nil, nil, fmt.Errorf("swarm: conn %d: initiator needs Conv or PeerUser", i)
			}
			continue
		}
		p := s.Peer
		if p < 0 || p >= len(c.Conns) || p == i {
			return nil, nil, fmt.Errorf("swarm: conn %d: bad peer %d", i, p)
		}
		if c.Conns[p].Peer != i {
			return nil, nil, fmt.Errorf("swarm: conn %d pairs with %d, which pairs with %d", i, p, c.Conns[p].Peer)
		}
		if s.Initiator == c.Conns[p].Initiator {
			return nil, nil, fmt.Errorf("swarm: pair %d/%d needs exactly one initiator", i, p)
		}
		if s.Initiator && s.Conv == 0 && s.PeerUser == "" {
			return nil, nil, fmt.Errorf("swarm: conn %d: initiator needs Conv or PeerUser", i)
		}
	}
	return target, sources, nil
}

func resolve(hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap, nil
	}
	a, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return a.AddrPort(), nil
}

func sockaddr(ip netip.Addr, port int) unix.Sockaddr {
	ip = ip.Unmap()
	if ip.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
	}
	return &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
}

// Run holds cfg's connections open until ctx ends, calling progress (if not
// nil) with a snapshot every second and once more, with the histograms,
// right before the connections are closed. It returns nil when ctx ended
// and an error only for a bad Config or a failure to set up the event
// loops; connection failures are counted in Stats, never returned.
func Run(ctx context.Context, cfg Config, progress func(Stats)) error {
	cfg.setDefaults()
	target, sources, err := cfg.validate()
	if err != nil {
		return err
	}
	r := &runner{
		cfg:     &cfg,
		target:  target,
		sources: sources,
		conns:   make([]conn, len(cfg.Conns)),
		st:      newCounters(),
		start:   time.Now(),
	}
	r.host = cfg.Target
	r.reqHead = []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Target +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
	r.body = make([]byte, cfg.BodySize)
	for i := range r.body {
		r.body[i] = 'a' + byte(i%26)
	}
	for i := range r.conns {
		r.conns[i] = conn{fd: -1, hidx: -1}
	}
	loops := make([]*loop, cfg.Loops)
	for i := range loops {
		l, err := newLoop(r, i)
		if err != nil {
			for _, l := range loops[:i] {
				l.teardown()
			}
			return err
		}
		loops[i] = l
	}
	for i, s := range cfg.Conns {
		owner := i
		if cfg.RoundTrip && s.Peer >= 0 {
			owner = min(i, s.Peer)
		}
		l := loops[owner%len(loops)]
		l.dialQ = append(l.dialQ, int32(i))
	}

	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(loopCtx)
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
wait:
	for {
		select {
		case <-tick.C:
			if progress != nil {
				progress(r.snapshot(false))
			}
		case <-done:
			break wait
		}
	}
	if progress != nil {
		progress(r.snapshot(true))
	}
	for i := range r.conns {
		if fd := r.conns[i].fd; fd >= 0 {
			_ = unix.Close(int(fd))
			r.conns[i].fd = -1
		}
	}
	for _, l := range loops {
		l.teardown()
	}
	return nil
}

// runner is the state shared by a run's loops. Each connection belongs to
// exactly one loop, which alone touches its conn.
type runner struct {
	cfg     *Config
	target  unix.Sockaddr
	sources []unix.Sockaddr // bind addresses, by connection index mod len
	host    string
	reqHead []byte // upgrade request up to the key
	body    []byte // round-trip message body
	conns   []conn
	st      *counters
	start   time.Time
}

func (r *runner) snapshot(hists bool) Stats {
	return r.st.snapshot(time.Since(r.start), len(r.conns), hists)
}

// appendCMID appends connection i's client_msg_id number n.
func (r *runner) appendCMID(dst []byte, i int, n uint8) []byte {
	dst = append(dst, r.cfg.RunID...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, uint64(i), 36)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, uint64(n), 36)
}
