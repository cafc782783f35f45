package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// Test doubles: a unit test of one component (the gateway) against fakes
// of its ports, over real sockets (the client side is gobwas/ws's client).

// fakeAuth accepts "ok:<user>", refuses "expired" as expired and anything
// else as invalid.
type fakeAuth struct{}

func (fakeAuth) Authenticate(token []byte, _ time.Time) (string, wire.Code) {
	s := string(token)
	switch {
	case strings.HasPrefix(s, "ok:"):
		return s[3:], 0
	case s == "expired":
		return "", wire.CodeTokenExpired
	}
	return "", wire.CodeTokenInvalid
}

type record struct{ key, value []byte }

// recProducer records what it is given. fail makes done report an error.
type recProducer struct {
	mu      sync.Mutex
	records []record
	fail    atomic.Bool
	notify  chan struct{}
}

func newRecProducer() *recProducer { return &recProducer{notify: make(chan struct{}, 1024)} }

func (p *recProducer) Produce(_ context.Context, key, value []byte, done func(error)) {
	r := record{key: append([]byte(nil), key...), value: append([]byte(nil), value...)}
	fail := p.fail.Load()
	if !fail {
		p.mu.Lock()
		p.records = append(p.records, r)
		p.mu.Unlock()
	}
	// Complete asynchronously, like a real producer; the gateway must not
	// care which goroutine runs done.
	go func() {
		var err error
		if fail {
			err = errors.New("bus down")
		}
		done(err)
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}()
}

func (p *recProducer) waitRecords(t *testing.T, n int) []record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		rs := append([]record(nil), p.records...)
		p.mu.Unlock()
		if len(rs) >= n {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d records, want %d", len(rs), n)
		}
		select {
		case <-p.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// countingRegistry counts Register calls and can slow them down.
type countingRegistry struct {
	routing.Registry
	registers atomic.Int64
	routes    atomic.Int64
	delay     time.Duration
	fail      atomic.Bool
}

func (r *countingRegistry) Register(ctx context.Context, routes []routing.Route, ttl time.Duration) error {
	r.registers.Add(1)
	r.routes.Add(int64(len(routes)))
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	if r.fail.Load() {
		return errors.New("registry down")
	}
	return r.Registry.Register(ctx, routes, ttl)
}

type testEnv struct {
	g    *Gateway
	mem  *routing.Memory
	prod *recProducer
	reg  *prometheus.Registry
	url  string
}

// startGateway starts a gateway on 127.0.0.1:0 with short timeouts, closed
// at the end of the test.
func startGateway(t testing.TB, tweak func(*Config, *Deps)) *testEnv {
	t.Helper()
	mem := routing.NewMemory()
	env := &testEnv{mem: mem, prod: newRecProducer(), reg: prometheus.NewRegistry()}
	cfg := Config{
		Addr:              "127.0.0.1:0",
		HandshakeTimeout:  2 * time.Second,
		HelloTimeout:      2 * time.Second,
		HeartbeatInterval: 3 * time.Second,
		IdleTimeout:       10 * time.Second,
		WriteTimeout:      2 * time.Second,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	deps := Deps{Auth: fakeAuth{}, Producer: env.prod, Registry: mem, Router: mem, Metrics: env.reg}
	if tweak != nil {
		tweak(&cfg, &deps)
	}
	g, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	env.g = g
	env.url = "ws://" + g.Addr().String() + Path
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return env
}

// metric returns the value of the counter or gauge name{label=value}, or
// the sample count of such a histogram (label "" for none), 0 if absent.
func (e *testEnv) metric(name, label, value string) float64 {
	mfs, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
			if m.Histogram != nil {
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// eventually polls cond until it holds or 5s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a test WebSocket client.
type client struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	dec  wire.Decoder
}

func dial(t testing.TB, url string) *client {
	t.Helper()
	return dialWith(t, url, ws.Dialer{Timeout: 5 * time.Second})
}

func dialWith(t testing.TB, url string, d ws.Dialer) *client {
	t.Helper()
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, br: br}
}

// writeWS writes one masked frame in a single write.
func (c *client) writeWS(op ws.OpCode, fin bool, p []byte) {
	c.t.Helper()
	f := ws.MaskFrameInPlace(ws.NewFrame(op, fin, append([]byte(nil), p...)))
	b, err := ws.CompileFrame(f)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) send(f wire.Frame) { c.t.Helper(); c.writeWS(ws.OpBinary, true, f.Append(nil, 0)) }

func (c *client) sendRaw(frame []byte) { c.t.Helper(); c.writeWS(ws.OpBinary, true, frame) }

// readWS reads one frame (any opcode) with a deadline.
func (c *client) readWS() (ws.OpCode, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return 0, nil, err
	}
	if h.Masked {
		return 0, nil, errors.New("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return 0, nil, err
	}
	return h.OpCode, p, nil
}

// read reads the next chatd frame; WebSocket control frames fail the test.
func (c *client) read() []byte {
	c.t.Helper()
	op, p, err := c.readWS()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if op != ws.OpBinary {
		c.t.Fatalf("read: opcode %v (payload %q), want binary", op, p)
	}
	return p
}

// expect reads the next frame, checks its type and decodes it into c.dec.
func (c *client) expect(t wire.Type) {
	c.t.Helper()
	f := c.read()
	got, _, err := c.dec.Decode(f)
	if err != nil {
		c.t.Fatalf("decode %v: %v", wire.Type(f[0]), err)
	}
	if got != t {
		msg := ""
		if got == wire.TypeError {
			msg = fmt.Sprintf(" (ERROR %v %q)", c.dec.Error.Code, c.dec.Error.Message)
		} else if got == wire.TypeGoaway {
			msg = fmt.Sprintf(" (GOAWAY %v)", c.dec.Goaway.Code)
		}
		c.t.Fatalf("got %v%s, want %v", got, msg, t)
	}
}

func (c *client) expectError(code wire.Code) *wire.Error {
	c.t.Helper()
	c.expect(wire.TypeError)
	if c.dec.Error.Code != code {
		c.t.Fatalf("ERROR code %v (%q), want %v", c.dec.Error.Code, c.dec.Error.Message, code)
	}
	return &c.dec.Error
}

func (c *client) expectGoaway(code wire.Code) {
	c.t.Helper()
	c.expect(wire.TypeGoaway)
	if c.dec.Goaway.Code != code {
		c.t.Fatalf("GOAWAY code %v, want %v", c.dec.Goaway.Code, code)
	}
}

// expectClosed reads until the server closes: a WebSocket close frame (its
// status is returned) or EOF (0). Binary frames before it fail the test.
func (c *client) expectClosed() ws.StatusCode {
	c.t.Helper()
	for {
		op, p, err := c.readWS()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("connection not closed: %v", err)
			}
			return 0
		}
		switch op {
		case ws.OpClose:
			var st ws.StatusCode
			if len(p) >= 2 {
				st = ws.StatusCode(uint16(p[0])<<8 | uint16(p[1]))
			}
			// The server closes the socket right after its close frame.
			_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.br.ReadByte(); err == nil {
				c.t.Fatalf("bytes after the close frame")
			}
			return st
		case ws.OpBinary:
			f := append([]byte(nil), p...)
			c.t.Fatalf("frame %v before close", wire.Type(f[0]))
		}
	}
}

func (c *client) ping(nonce uint64) {
	c.t.Helper()
	c.send(&wire.Ping{Nonce: nonce})
	c.expect(wire.TypePong)
	if c.dec.Pong.Nonce != nonce {
		c.t.Fatalf("PONG nonce %d, want %d", c.dec.Pong.Nonce, nonce)
	}
}

func helloFrame(user, device string, caps uint64) *wire.Hello {
	return &wire.Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("ok:" + user), DeviceID: []byte(device), Caps: caps}
}

// hello authenticates c and returns the WELCOME.
func (c *client) hello(user, device string, caps uint64) wire.Welcome {
	c.t.Helper()
	c.send(helloFrame(user, device, caps))
	c.expect(wire.TypeWelcome)
	w := c.dec.Welcome
	w.UserID = append([]byte(nil), w.UserID...)
	w.DeviceID = append([]byte(nil), w.DeviceID...)
	return w
}

// login dials and authenticates.
func login(t testing.TB, e *testEnv, user, device string) *client {
	t.Helper()
	c := dial(t, e.url)
	c.hello(user, device, 0)
	return c
}

// connID returns the connection id the registry has for user's device.
func (e *testEnv) connID(t testing.TB, user, device string) uint64 {
	t.Helper()
	routes, err := e.mem.Lookup(context.Background(), []string{user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Device == device {
			return r.Conn
		}
	}
	t.Fatalf("no route for %s/%s", user, device)
	return 0
}

func (e *testEnv) publish(t testing.TB, conns []uint64, frame []byte) {
	t.Helper()
	if err := e.mem.Publish(context.Background(), e.g.ID(), wire.AppendBatch(nil, conns, frame)); err != nil {
		t.Fatal(err)
	}
}

func (p *recProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}
