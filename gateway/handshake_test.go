package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

const upgradeRequest = "GET " + Path + " HTTP/1.1\r\n" +
	"Host: chatd.test\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n\r\n"

func maskedFrame(t testing.TB, op ws.OpCode, p []byte) []byte {
	t.Helper()
	b, err := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewFrame(op, true, append([]byte(nil), p...))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawDial(t testing.TB, e *testEnv) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads an HTTP response from c.
func readResponse(t testing.TB, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp
}

// expectEOF checks that the server closes c without sending anything more.
func expectEOF(t testing.TB, c net.Conn, br io.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if br == nil {
		br = c
	}
	b, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Fatalf("want EOF, got %v after %q", err, b)
	}
	if len(b) > 0 {
		t.Fatalf("unexpected bytes before EOF: %q", b)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestHelloWelcome(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) {
		c.HeartbeatInterval = 7 * time.Second
		c.IdleTimeout = 21 * time.Second
	})
	c := dial(t, e.url)
	before := uint64(time.Now().UnixMilli())
	w := c.hello("alice", "phone", wire.CapZstd|1<<7)
	switch {
	case w.Version != wire.Version:
		t.Errorf("version %d", w.Version)
	case w.Caps != wire.CapZstd:
		t.Errorf("caps %#x, want only zstd", w.Caps)
	case w.HeartbeatMS != 7000 || w.IdleTimeoutMS != 21000:
		t.Errorf("heartbeat %d idle %d", w.HeartbeatMS, w.IdleTimeoutMS)
	case w.MaxFrame != wire.MaxFrameSize:
		t.Errorf("max frame %d", w.MaxFrame)
	case w.ServerTimeMS < before || w.ServerTimeMS > uint64(time.Now().UnixMilli()):
		t.Errorf("server time %d", w.ServerTimeMS)
	case string(w.UserID) != "alice" || string(w.DeviceID) != "phone":
		t.Errorf("user %q device %q", w.UserID, w.DeviceID)
	}
	if e.g.Conns() != 1 {
		t.Errorf("Conns() = %d", e.g.Conns())
	}
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	for i := uint64(1); i <= 3; i++ {
		c.ping(i * 1000)
	}
	// WebSocket-level pings are answered too.
	c.writeWS(ws.OpPing, true, []byte("hey"))
	op, p, err := c.readWS()
	if err != nil || op != ws.OpPong || string(p) != "hey" {
		t.Fatalf("ws pong: %v %q %v", op, p, err)
	}
}

// The upgrade request and the HELLO arrive in one TCP segment: the HELLO
// must not be swallowed by the upgrade.
func TestPipelinedUpgradeAndHello(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	conn := rawDial(t, e)
	msg := []byte(upgradeRequest)
	msg = append(msg, maskedFrame(t, ws.OpBinary, helloFrame("alice", "phone", 0).Append(nil, 0))...)
	msg = append(msg, maskedFrame(t, ws.OpBinary, (&wire.Ping{Nonce: 42}).Append(nil, 0))...)
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if resp := readResponse(t, br); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c := &client{t: t, conn: conn, br: br}
	c.expect(wire.TypeWelcome)
	c.expect(wire.TypePong)
	if c.dec.Pong.Nonce != 42 {
		t.Fatalf("nonce %d", c.dec.Pong.Nonce)
	}
}

func TestRequestInOneByteWrites(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	conn := rawDial(t, e)
	for i := 0; i < len(upgradeRequest); i++ {
		if _, err := conn.Write([]byte{upgradeRequest[i]}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	hello := maskedFrame(t, ws.OpBinary, helloFrame("alice", "phone", 0).Append(nil, 0))
	for i := range hello { // the frame, byte by byte too
		if _, err := conn.Write(hello[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	br := bufio.NewReader(conn)
	if resp := readResponse(t, br); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c := &client{t: t, conn: conn, br: br}
	c.expect(wire.TypeWelcome)
	c.ping(7)
	// Partial input never made netpoll spin: a handful of calls per write.
	if n := e.g.onRequestCalls.Load(); n > 10*int64(len(upgradeRequest)+len(hello)) {
		t.Fatalf("%d OnRequest calls for %d writes", n, len(upgradeRequest)+len(hello))
	}
}

func TestWrongPathIs404(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	conn := rawDial(t, e)
	req := strings.Replace(upgradeRequest, Path, "/other", 1)
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp := readResponse(t, br)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	expectEOF(t, conn, br)
	if v := e.metric("chatd_gateway_handshakes_failed_total", "reason", "not_found"); v != 1 {
		t.Fatalf("handshakes_failed{not_found} = %v", v)
	}
}

func TestHeadersTooLargeIs431(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	conn := rawDial(t, e)
	big := strings.Replace(upgradeRequest, "Host:", "X-Pad: "+strings.Repeat("a", MaxRequestHeaderBytes)+"\r\nHost:", 1)
	go conn.Write([]byte(big)) // the server may close before reading it all
	br := bufio.NewReader(conn)
	resp := readResponse(t, br)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	expectEOF(t, conn, br)
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.HandshakeTimeout = 200 * time.Millisecond })
	conn := rawDial(t, e)
	expectEOF(t, conn, nil)
	eventually(t, "handshake timeout metric", func() bool {
		return e.metric("chatd_gateway_handshakes_failed_total", "reason", "timeout") == 1
	})
}

// Slowloris: half a request, then silence. The connection is closed at the
// handshake deadline, and holds no worker meanwhile (netpoll is not left
// spinning on unread input).
func TestSlowlorisHalfRequest(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.HandshakeTimeout = 300 * time.Millisecond })
	conn := rawDial(t, e)
	if _, err := conn.Write([]byte(upgradeRequest[:len(upgradeRequest)/2])); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, conn, nil)
	if n := e.g.onRequestCalls.Load(); n > 5 {
		t.Fatalf("OnRequest ran %d times for one write: netpoll is spinning on unread input", n)
	}
	eventually(t, "connection count", func() bool { return e.g.Conns() == 0 })
}

func TestHelloTimeout(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) { c.HelloTimeout = 200 * time.Millisecond })
	c := dial(t, e.url)
	c.expectGoaway(wire.CodeHelloTimeout)
	c.expectClosed()
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) {
		c.HeartbeatInterval = 100 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	})
	c := login(t, e, "alice", "phone")
	c.expectGoaway(wire.CodeIdleTimeout)
	c.expectClosed()
	if v := e.metric("chatd_gateway_closes_total", "reason", "idle_timeout"); v != 1 {
		t.Fatalf("closes{idle_timeout} = %v", v)
	}
}

// Frames push the idle deadline: a client that pings more often than the
// idle timeout stays connected well past it.
func TestIdleRefreshedByFrames(t *testing.T) {
	t.Parallel()
	e := startGateway(t, func(c *Config, _ *Deps) {
		c.HeartbeatInterval = 100 * time.Millisecond
		c.IdleTimeout = 400 * time.Millisecond
	})
	c := login(t, e, "alice", "phone")
	for i := uint64(0); i < 12; i++ { // ~1.2s, three idle timeouts
		time.Sleep(100 * time.Millisecond)
		c.ping(i)
	}
}

func TestUpgradeRequiresGET(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	conn := rawDial(t, e)
	if _, err := conn.Write([]byte(strings.Replace(upgradeRequest, "GET", "POST", 1))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp := readResponse(t, br)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("status %d", resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(body, []byte("method")) {
		t.Logf("body %q", body)
	}
}
