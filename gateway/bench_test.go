package gateway

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

var (
	idleConns   = flag.Int("gateway.idleconns", 2000, "connections opened by BenchmarkIdleConnBytes")
	idleNetpoll = flag.String("gateway.netpoll", "release",
		"netpoll buffers for BenchmarkIdleConnBytes: release (DefaultNetpollBuffers), netpoll (netpoll's own defaults), small (1 KiB nodes)")
)

// netpollPresets are the settings BenchmarkIdleConnBytes can compare.
var netpollPresets = map[string]NetpollBuffers{
	"release": DefaultNetpollBuffers,
	"netpoll": {},
	"small":   {BufferSize: 1 << 10, LinkBufferCap: 1 << 10},
}

type nopProducer struct{}

func (nopProducer) Produce(_ context.Context, _, _ []byte, done func(error)) { done(nil) }

// BenchmarkIdleConnBytes measures the Go heap the server holds per idle
// connection. The gateway runs in a child process (this test binary,
// TestIdleServerProcess), so the client side's memory is not counted; the
// clients are raw sockets. Each connection upgrades, says HELLO, does one
// PING/PONG round trip and receives one routed frame; then the child's heap
// is measured after GC and compared with its heap before the connections.
// The timed loop is PING round trips over the idle set.
//
//	go test -run '^$' -bench IdleConnBytes -benchtime 1x ./gateway/ [-gateway.idleconns 2000] [-gateway.netpoll release]
func BenchmarkIdleConnBytes(b *testing.B) {
	b.ReportAllocs()
	n := *idleConns
	if _, ok := netpollPresets[*idleNetpoll]; !ok {
		b.Fatalf("unknown -gateway.netpoll %q", *idleNetpoll)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CHATD_GATEWAY_IDLE_SERVER="+*idleNetpoll)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		fmt.Fprintln(stdin, "quit")
		_ = cmd.Wait()
	}()
	out := bufio.NewScanner(stdout)
	ask := func(cmdline string) []string {
		fmt.Fprintln(stdin, cmdline)
		for out.Scan() {
			if f := strings.Fields(out.Text()); len(f) > 0 && f[0] == "child:" {
				return f[1:]
			}
		}
		b.Fatalf("child exited: %v", out.Err())
		return nil
	}
	addr := ask("addr")[0]
	base := ask("measure")

	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	const par = 16
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += par {
				c, br, err := rawClient(addr, i)
				if err != nil {
					failed.Store(err)
					return
				}
				conns[i], readers[i] = c, br
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	ask("publish")
	for i, br := range readers {
		if err := expectFrame(conns[i], br, wire.TypeMsg); err != nil {
			b.Fatalf("conn %d: routed frame: %v", i, err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // idle workers (ants, netpoll's pool) expire
	after := ask("measure")

	val := func(f []string, i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
	if got := val(after, 3); got != float64(n) {
		b.Fatalf("server has %v connections, want %d", got, n)
	}

	ping := maskedFrame(b, ws.OpBinary, (&wire.Ping{Nonce: 1}).Append(nil, 0))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % n
		if _, err := conns[k].Write(ping); err != nil {
			b.Fatal(err)
		}
		if err := expectFrame(conns[k], readers[k], wire.TypePong); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Reported after the timed loop: ResetTimer deletes reported metrics.
	b.ReportMetric((val(after, 1)-val(base, 1))/float64(n), "heap-bytes/conn")
	b.ReportMetric((val(after, 0)-val(base, 0))/float64(n), "live-bytes/conn")
	b.ReportMetric(val(after, 2)-val(base, 2), "goroutines-delta")
}

// rawClient upgrades, says HELLO and PINGs in one write, and reads the
// 101, the WELCOME and the PONG.
func rawClient(addr string, i int) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	msg := []byte(upgradeRequest)
	hello := &wire.Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("ok:user"), DeviceID: []byte(deviceName(i))}
	for _, f := range [][]byte{hello.Append(nil, 0), (&wire.Ping{Nonce: uint64(i)}).Append(nil, 0)} {
		fr, _ := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewBinaryFrame(f)))
		msg = append(msg, fr...)
	}
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for { // the 101 response's header
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		if line == "\r\n" {
			break
		}
	}
	for _, t := range []wire.Type{wire.TypeWelcome, wire.TypePong} {
		if err := expectFrame(c, br, t); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, br, nil
}

func expectFrame(c net.Conn, br *bufio.Reader, t wire.Type) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(br)
	if err != nil {
		return err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil {
		return err
	}
	if len(p) == 0 || wire.Type(p[0]) != t {
		return fmt.Errorf("got %x, want %v", p, t)
	}
	return nil
}

// TestIdleServerProcess is the child of BenchmarkIdleConnBytes; it does
// nothing in a normal test run. It answers lines on stdin with lines
// starting "child:" on stdout.
func TestIdleServerProcess(t *testing.T) {
	preset := os.Getenv("CHATD_GATEWAY_IDLE_SERVER")
	if preset == "" {
		t.Skip("child process of BenchmarkIdleConnBytes")
	}
	if err := ConfigureNetpoll(netpollPresets[preset]); err != nil {
		t.Fatal(err)
	}
	profile := os.Getenv("CHATD_GATEWAY_IDLE_PROFILE") // heap profile path, for docs/gateway.md
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	mem := routing.NewMemory()
	g, err := New(Config{
		Addr:             "127.0.0.1:0",
		HandshakeTimeout: time.Minute, HelloTimeout: time.Minute,
		HeartbeatInterval: time.Minute, IdleTimeout: 10 * time.Minute,
		InboundRate: 1_000_000, InboundBurst: 1_000_000,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, Deps{Auth: fakeAuth{}, Producer: nopProducer{}, Registry: mem, Router: mem})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Close(context.Background())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "addr":
			fmt.Printf("child: %s\n", g.Addr())
		case "measure":
			var ms runtime.MemStats
			for i := 0; i < 3; i++ { // the third GC also empties sync.Pools' victim caches
				runtime.GC()
			}
			runtime.ReadMemStats(&ms)
			fmt.Printf("child: %d %d %d %d\n", ms.HeapAlloc, ms.HeapInuse, runtime.NumGoroutine(), g.Conns())
			if profile != "" {
				f, err := os.Create(profile)
				if err != nil {
					t.Fatal(err)
				}
				if err := pprof.WriteHeapProfile(f); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
		case "publish":
			ids := make([]uint64, 0, g.Conns())
			for _, c := range g.authenticated(nil) {
				ids = append(ids, c.id)
			}
			_ = mem.Publish(context.Background(), g.ID(), wire.AppendBatch(nil, ids, msgFrame(1, []byte("routed"))))
			fmt.Println("child: ok")
		case "quit":
			return
		}
	}
}

// BenchmarkRoutedFrame is the write path of one routed frame to one
// connection: batch decode, lookup, the one copy, queueing, the drain and
// its Flush (a syscall).
func BenchmarkRoutedFrame(b *testing.B) {
	e := startGateway(b, nil)
	c := login(b, e, "alice", "phone")
	id := e.connID(b, "alice", "phone")
	frame := msgFrame(1, bytes.Repeat([]byte("m"), 100))
	batch := wire.AppendBatch(nil, []uint64{id}, frame)
	wsLen := int64(serverHeaderLen(len(frame)) + len(frame))

	var got atomic.Int64
	done := make(chan struct{})
	go func() { // the client reads everything
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.br.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.g.onBatch(batch)
		if i%256 == 255 { // stay far below MaxQueueBytes
			for got.Load() < int64(i+1)*wsLen {
				runtime.Gosched()
			}
		}
	}
	for got.Load() < int64(b.N)*wsLen {
		runtime.Gosched()
	}
	b.StopTimer()
	c.conn.Close()
	<-done
}

// BenchmarkInboundSend is the input path of one SEND on an authenticated
// connection, without the socket: WebSocket header parse and unmask, token
// bucket, frame decode, validation, the envelope and the (no-op) produce.
func BenchmarkInboundSend(b *testing.B) {
	mem := routing.NewMemory()
	g, err := New(Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Deps{Auth: fakeAuth{}, Producer: nopProducer{}, Registry: mem, Router: mem})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close(context.Background())
	c := &conn{g: g, id: 1, ud: "alicephone", ulen: 5, slot: -1}
	c.state.Store(stateAuthenticated)
	send := (&wire.Send{ConvID: 42, ClientMsgID: []byte("0123456789abcdef"), Kind: wire.KindText,
		Body: bytes.Repeat([]byte("hello "), 20)}).Append(nil, 0)
	masked := maskedFrame(b, ws.OpBinary, send)
	buf := make([]byte, len(masked))
	b.ReportAllocs()
	b.SetBytes(int64(len(send)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(buf, masked) // unmasking works in place
		c.tokens = g.burstMilli
		c.in.Lock()
		if used := g.process(c, buf); used != len(buf) {
			b.Fatalf("processed %d of %d bytes", used, len(buf))
		}
		c.in.Unlock()
	}
	b.StopTimer()
	if v := g.m.produced; v == nil {
		b.Fatal("no metrics")
	}
}
