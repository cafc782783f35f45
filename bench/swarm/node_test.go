package swarm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/chatd-dev/chatd/bench/swarm"
	"github.com/chatd-dev/chatd/core/node"
	"github.com/chatd-dev/chatd/gateway"
)

// These tests run a whole chatd node in process (as core/node's tests do)
// and drive it with the swarm over loopback.

const waitFor = 25 * time.Second // generous upper bound, never asserted as a timing

func startNode(t *testing.T, dir, gwAddr string) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir:     dir,
		GatewayAddr: gwAddr,
		APIAddr:     "127.0.0.1:0",
		AdminAddr:   "127.0.0.1:0",
		Dev:         true,
		Partitions:  4,
		Gateway:     gateway.Config{},
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { closeNode(n) })
	return n
}

func closeNode(n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Close(ctx)
}

// pairs mints tokens for npairs pairs of users: connection 2p (the
// initiator) is paired with 2p+1.
func pairs(t *testing.T, n *node.Node, npairs int, prefix string) []swarm.ConnSpec {
	t.Helper()
	specs := make([]swarm.ConnSpec, 2*npairs)
	mint := func(user string) string {
		tok, err := n.Signer().Mint(user, "d", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for p := 0; p < npairs; p++ {
		ua, ub := fmt.Sprintf("%s%da", prefix, p), fmt.Sprintf("%s%db", prefix, p)
		specs[2*p] = swarm.ConnSpec{Token: mint(ua), Device: "d", Peer: 2*p + 1, PeerUser: ub, Initiator: true}
		specs[2*p+1] = swarm.ConnSpec{Token: mint(ub), Device: "d", Peer: 2 * p}
	}
	return specs
}

// bgRun is a swarm.Run in the background.
type bgRun struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	last   swarm.Stats
	calls  int
}

func start(t *testing.T, cfg swarm.Config) *bgRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &bgRun{cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- swarm.Run(ctx, cfg, func(s swarm.Stats) {
			r.mu.Lock()
			r.last, r.calls = s, r.calls+1
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *bgRun) stats() swarm.Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// wait polls the progress snapshots until cond holds.
func (r *bgRun) wait(t *testing.T, what string, cond func(swarm.Stats) bool) swarm.Stats {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s := r.stats()
		if cond(s) {
			return s
		}
		select {
		case err := <-r.done:
			t.Fatalf("%s: Run returned early: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(s)
			t.Fatalf("%s: not reached; last stats %s", what, b)
		}
	}
}

// stop ends the run and returns its final snapshot.
func (r *bgRun) stop(t *testing.T) swarm.Stats {
	t.Helper()
	r.cancel()
	if r.done != nil {
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		r.done = nil
	}
	return r.stats()
}

// TestSwarmRoundTripAndShutdown: 2,000 connections (1,000 pairs) connect,
// each pair completes one message round trip, heartbeats get PONGs, and
// closing the node gives every connection a GOAWAY shutting_down.
func TestSwarmRoundTripAndShutdown(t *testing.T) {
	const npairs = 1000
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	cfg := swarm.Config{
		Target:    n.Gateway().Addr().String(),
		Conns:     pairs(t, n, npairs, "rt"),
		RoundTrip: true,
		Heartbeat: 200 * time.Millisecond,
	}
	r := start(t, cfg)
	const total = 2 * npairs
	s := r.wait(t, "all established and round-tripped", func(s swarm.Stats) bool {
		return s.Established == total && s.RoundTripped == total && s.PongsReceived > 0
	})
	if s.FailuresTotal != 0 || len(s.Errors) != 0 {
		t.Fatalf("failures %v, errors %v", s.Failures, s.Errors)
	}
	if s.Dials != total || s.Welcomes != total || s.Sends != npairs || s.Acks != npairs {
		t.Fatalf("dials %d welcomes %d sends %d acks %d", s.Dials, s.Welcomes, s.Sends, s.Acks)
	}
	if s.PingsSent == 0 || s.BytesIn == 0 || s.BytesOut == 0 || s.ConnectMaxMs <= 0 || s.RoundTripMaxMs <= 0 {
		t.Fatalf("counters not moving: %+v", s)
	}
	t.Logf("established %d, round-tripped %d, pings %d, pongs %d, missed %d, connect p50 %.1fms p99 %.1fms, round trip p50 %.1fms p99 %.1fms",
		s.Established, s.RoundTripped, s.PingsSent, s.PongsReceived, s.PongsMissed,
		s.ConnectP50Ms, s.ConnectP99Ms, s.RoundTripP50Ms, s.RoundTripP99Ms)

	closeNode(n)
	s = r.wait(t, "GOAWAY shutting_down everywhere", func(s swarm.Stats) bool {
		return s.Done == total
	})
	if got := s.Failures["goaway:shutting_down"]; got != total || s.FailuresTotal != total {
		t.Fatalf("goaway:shutting_down %d of %d; failures %v", got, total, s.Failures)
	}
	if s.Established != 0 || s.Dialing != 0 {
		t.Fatalf("established %d dialing %d after shutdown", s.Established, s.Dialing)
	}
	final := r.stop(t)
	if final.ConnectHist == "" || final.RoundTripHist == "" {
		t.Fatal("final snapshot has no histograms")
	}
}

// TestSwarmSourceIP binds every connection to 127.0.0.2 and checks, in the
// kernel's socket table, that the connections come from there.
func TestSwarmSourceIP(t *testing.T) {
	const npairs = 100
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	addr := n.Gateway().Addr().String()
	r := start(t, swarm.Config{
		Target:        addr,
		SourceIP:      "127.0.0.2",
		Conns:         pairs(t, n, npairs, "src"),
		RoundTrip:     true,
		PipelineHello: true,
	})
	s := r.wait(t, "established and round-tripped", func(s swarm.Stats) bool {
		return s.Established == 2*npairs && s.RoundTripped == 2*npairs
	})
	if s.FailuresTotal != 0 {
		t.Fatalf("failures %v", s.Failures)
	}
	port := uint16(n.Gateway().Addr().(*net.TCPAddr).Port)
	if got := countConns(t, "0200007F", port); got != 2*npairs {
		t.Fatalf("%d established sockets from 127.0.0.2 to port %d, want %d", got, port, 2*npairs)
	}
}

// TestSwarmReconnectResume restarts the node under the swarm: every
// connection gets GOAWAY shutting_down, reconnects with backoff once the
// node is back on the same port, sends RESUME and is established again.
// A second run with ResumeOnConnect gets the first run's messages replayed.
func TestSwarmReconnectResume(t *testing.T) {
	const npairs = 50
	const total = 2 * npairs
	dir := t.TempDir()
	n := startNode(t, dir, "127.0.0.1:0")
	addr := n.Gateway().Addr().String()
	specs := pairs(t, n, npairs, "rc")
	r := start(t, swarm.Config{
		Target:       addr,
		Conns:        specs,
		RoundTrip:    true,
		Heartbeat:    200 * time.Millisecond,
		Reconnect:    true,
		ReconnectMin: 100 * time.Millisecond,
		ReconnectMax: 400 * time.Millisecond,
	})
	r.wait(t, "round trip", func(s swarm.Stats) bool { return s.RoundTripped == total && s.Established == total })
	closeNode(n)
	r.wait(t, "everyone told to go away", func(s swarm.Stats) bool {
		return s.Failures["goaway:shutting_down"] == total && s.Established == 0
	})
	startNode(t, dir, addr)
	s := r.wait(t, "everyone back", func(s swarm.Stats) bool {
		return s.Established == total && s.Resumed >= total
	})
	if s.Reconnects < total || s.Welcomes < 2*total || s.Resumes < total {
		t.Fatalf("reconnects %d welcomes %d resumes %d", s.Reconnects, s.Welcomes, s.Resumes)
	}
	if s.RoundTripped != total {
		t.Fatalf("round-tripped %d", s.RoundTripped)
	}
	t.Logf("failures during the restart: %v", s.Failures)
	r.stop(t)

	// A new run of the same users with no cursors: RESUME replays each
	// conversation's newest messages (here the one round-trip message).
	r2 := start(t, swarm.Config{Target: addr, Conns: specs, ResumeOnConnect: true})
	s = r2.wait(t, "replayed", func(s swarm.Stats) bool { return s.Resumed == total && s.Established == total })
	if s.Replayed < total {
		t.Fatalf("replayed %d, want at least %d", s.Replayed, total)
	}
}

// TestClientMemoryPerConn runs 5,000 heartbeating connections in a worker
// child process (WorkerMain, fed its Config on stdin like cmd/chatbench
// does) and reports the swarm's heap per connection. The node's 5,000
// server sockets stay in this process, so neither process is near the
// 20,000 open-files limit.
//
// SWARM_MEM_CONNS sets another (even) number of connections, up to a full
// worker's 19,500: SWARM_MEM_CONNS=19500 go test -run
// TestClientMemoryPerConn -v ./bench/swarm/
func TestClientMemoryPerConn(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: opens 5,000 connections and a child process (make test runs it)")
	}
	npairs := 2500
	if v := os.Getenv("SWARM_MEM_CONNS"); v != "" {
		c, err := strconv.Atoi(v)
		if err != nil || c < 2 || c > 19_500 {
			t.Fatalf("SWARM_MEM_CONNS=%q: want 2..19500", v)
		}
		npairs = c / 2
	}
	total := int64(2 * npairs)
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	specs := pairs(t, n, npairs, "mem")
	cfg := swarm.Config{
		Target:    n.Gateway().Addr().String(),
		SourceIP:  "127.0.0.3",
		Conns:     specs,
		RoundTrip: true,
		Heartbeat: time.Second,
	}
	specBytes := int64(len(specs)) * int64(unsafe.Sizeof(swarm.ConnSpec{}))
	for _, s := range specs {
		specBytes += int64(len(s.Token) + len(s.Device) + len(s.PeerUser))
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerProcess$")
	cmd.Env = append(os.Environ(), "SWARM_WORKER=1", "SWARM_WORKER_ARGS=-gc")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := json.NewEncoder(stdin).Encode(cfg); err != nil {
		t.Fatal(err)
	}

	lines := make(chan []byte, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	next := func() []byte {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("worker exited")
			}
			return l
		case <-time.After(waitFor):
			t.Fatal("no line from the worker")
		}
		return nil
	}
	var base struct {
		Heap int64 `json:"baseline_heap_inuse"`
		RSS  int64 `json:"baseline_rss"`
	}
	if err := json.Unmarshal(next(), &base); err != nil || base.Heap == 0 {
		t.Fatalf("baseline line: %v", err)
	}
	var ws swarm.WorkerStats
	deadline := time.Now().Add(waitFor)
	steady := 0
	for steady < 2 { // two full lines (each after a GC) once everything is up
		if err := json.Unmarshal(next(), &ws); err != nil {
			t.Fatal(err)
		}
		if ws.Error != "" || ws.FailuresTotal != 0 {
			t.Fatalf("worker: %s %v", ws.Error, ws.Failures)
		}
		if ws.Established == total && ws.RoundTripped == total && ws.PongsReceived > 0 {
			steady++
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not steady: established %d round-tripped %d", ws.Established, ws.RoundTripped)
		}
	}
	heap := ws.HeapInuseBytes - base.Heap
	perConn := float64(heap) / float64(total)
	engine := float64(heap-specBytes) / float64(total)
	t.Logf("client, %d connections: heap %d B over a %d B baseline = %.0f B/conn (%.0f B/conn without the %d B of ConnSpecs: tokens, ids); RSS %.1f MiB over %.1f MiB = %.0f B/conn; goroutines %d",
		total, ws.HeapInuseBytes, base.Heap, perConn, engine, specBytes,
		float64(ws.RSSBytes)/(1<<20), float64(base.RSS)/(1<<20), float64(ws.RSSBytes-base.RSS)/float64(total), ws.Goroutines)
	if !raceEnabled && engine > 1024 {
		t.Errorf("swarm heap %.0f B per connection, target < 1 KiB", engine)
	}

	_ = stdin.Close() // EOF ends the worker
	var final swarm.WorkerStats
	for l := range lines {
		if err := json.Unmarshal(l, &final); err != nil {
			t.Fatal(err)
		}
	}
	if !final.Final || final.ConnectHist == "" {
		t.Fatalf("no final line: %+v", final)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("worker exit: %v", err)
	}
}

// TestWorkerProcess is the child process of TestClientMemoryPerConn.
func TestWorkerProcess(t *testing.T) {
	if os.Getenv("SWARM_WORKER") != "1" {
		t.Skip("helper process for TestClientMemoryPerConn")
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := json.Marshal(map[string]int64{"baseline_heap_inuse": int64(ms.HeapAlloc), "baseline_rss": swarm.ReadRSS()})
	_, _ = os.Stdout.Write(append(b, '\n'))
	os.Exit(swarm.WorkerMain(strings.Fields(os.Getenv("SWARM_WORKER_ARGS"))))
}

// countConns counts established TCP sockets in /proc/net/tcp from the
// local address hexIP (as the kernel prints it) to remote port port.
func countConns(t *testing.T, hexIP string, port uint16) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	remote := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		fs := strings.Fields(line)
		if len(fs) < 4 || fs[3] != "01" { // ESTABLISHED
			continue
		}
		if strings.HasPrefix(fs[1], hexIP+":") && strings.HasSuffix(fs[2], remote) {
			n++
		}
	}
	return n
}
