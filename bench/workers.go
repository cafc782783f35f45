package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/bench/swarm"
)

// WorkersConfig spreads Conns client connections over Procs load-generator
// processes ("chatbench swarm-worker"), one loopback source address each.
type WorkersConfig struct {
	SelfBin   string
	Conns     int
	Procs     int
	DialRate  int           // all workers together
	Heartbeat time.Duration // 0: the server's
	// RoundTrip pairs the connections (within a worker) and runs one
	// message round trip per pair; otherwise connections only HELLO and
	// heartbeat.
	RoundTrip bool
	// Reconnect makes connections come back after the server drops them,
	// and RESUME (storm).
	Reconnect bool
	// Tick is the workers' swarm.Config.Tick: each event loop wakes at
	// most once per Tick (0: per event).
	Tick time.Duration
	// Prefix starts every user id (default: a random run id).
	Prefix string
	Log    io.Writer
}

// Worker is one load-generator process.
type Worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	stats swarm.WorkerStats
	done  chan struct{}
	err   string
}

// DefaultClientTick is the load workers' swarm.Config.Tick in every
// scenario: they share the machine with the server, and waking per event
// would cost it more than their work (swarm.Config.Tick).
const DefaultClientTick = 20 * time.Millisecond

// SourceIPsPerWorker is how many loopback source addresses each of procs
// workers binds for conns connections: enough that none carries more than
// swarm.PortsPerSourceIP.
func SourceIPsPerWorker(conns, procs int) int {
	perProc := (conns + procs - 1) / max(procs, 1)
	return max(1, (perProc+swarm.PortsPerSourceIP-1)/swarm.PortsPerSourceIP)
}

// sourceIPs returns n loopback addresses from the first-th on (see
// sourceIP).
func sourceIPs(first, n int) []string {
	a := make([]string, n)
	for k := range a {
		a[k] = sourceIP(first + k)
	}
	return a
}

// PID is the worker's process id.
func (w *Worker) PID() int { return w.cmd.Process.Pid }

// SpawnWorkers mints tokens with the cluster's key and starts the workers.
// On error the workers already started are stopped.
func SpawnWorkers(cl *Cluster, c WorkersConfig) (ws []*Worker, err error) {
	if c.Procs <= 0 {
		c.Procs = 1
	}
	if c.DialRate <= 0 {
		c.DialRate = 10_000
	}
	if c.Prefix == "" {
		c.Prefix = "w" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	if c.RoundTrip {
		c.Conns &^= 1
	}
	defer func() {
		if err != nil {
			StopWorkers(ws)
			ws = nil
		}
	}()
	target := strings.TrimSuffix(strings.TrimPrefix(cl.GatewayURL, "ws://"), "/chat/v1/ws")
	perWorker := SourceIPsPerWorker(c.Conns, c.Procs)
	for w := 0; w < c.Procs; w++ {
		lo, hi := w*c.Conns/c.Procs, (w+1)*c.Conns/c.Procs
		if c.RoundTrip {
			lo, hi = lo&^1, hi&^1
			if w == c.Procs-1 {
				hi = c.Conns
			}
		}
		wc := swarm.Config{
			Target:        target,
			SourceIPs:     sourceIPs(w*perWorker, perWorker),
			DialRate:      max(1, c.DialRate/c.Procs),
			PipelineHello: true,
			Heartbeat:     c.Heartbeat,
			Tick:          c.Tick,
			RoundTrip:     c.RoundTrip,
			Reconnect:     c.Reconnect,
			// Reconnecting clients back off like the Go SDK: 250 ms
			// doubling to 30 s, full jitter.
			FullJitter:   c.Reconnect,
			ReconnectMin: 250 * time.Millisecond,
			ReconnectMax: 30 * time.Second,
			RunID:        fmt.Sprintf("%s-%d", c.Prefix, w),
			Conns:        make([]swarm.ConnSpec, 0, hi-lo),
		}
		for i := lo; i < hi; i++ {
			user := fmt.Sprintf("%s-%d", c.Prefix, i)
			tok, err := cl.Signer.Mint(user, "bench", 24*time.Hour)
			if err != nil {
				return ws, err
			}
			spec := swarm.ConnSpec{Token: tok, Device: "bench", Peer: -1}
			if c.RoundTrip {
				k := len(wc.Conns)
				if i%2 == 0 {
					spec.Peer, spec.PeerUser, spec.Initiator = k+1, fmt.Sprintf("%s-%d", c.Prefix, i+1), true
				} else {
					spec.Peer = k - 1
				}
			}
			wc.Conns = append(wc.Conns, spec)
		}
		wk, err := startWorker(c.SelfBin, wc, c.Log)
		if err != nil {
			return ws, err
		}
		ws = append(ws, wk)
	}
	return ws, nil
}

func startWorker(self string, cfg swarm.Config, log io.Writer) (*Worker, error) {
	w := &Worker{done: make(chan struct{})}
	w.cmd = exec.Command(self, "swarm-worker")
	w.cmd.Stderr = log
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start load worker: %w", err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var s swarm.WorkerStats
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				w.mu.Lock()
				w.stats = s
				if s.Error != "" {
					w.err = s.Error
				}
				w.mu.Unlock()
			}
		}
		_ = w.cmd.Wait()
	}()
	// The config goes on stdin; stdin then stays open (EOF stops the worker).
	if err := json.NewEncoder(w.stdin).Encode(cfg); err != nil {
		return nil, fmt.Errorf("configure load worker: %w", err)
	}
	return w, nil
}

// Last is the worker's latest stats line.
func (w *Worker) Last() swarm.WorkerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Stop ends the worker (EOF on stdin, then SIGKILL after 10s) and returns
// its last stats line.
func (w *Worker) Stop() swarm.WorkerStats {
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
	return w.Last()
}

// StopWorkers stops every worker concurrently.
func StopWorkers(ws []*Worker) {
	var wg sync.WaitGroup
	for _, w := range ws {
		if w != nil {
			wg.Add(1)
			go func() { defer wg.Done(); w.Stop() }()
		}
	}
	wg.Wait()
}

// ExitedWorkers describes the first worker that exited, "" when all run.
func ExitedWorkers(ws []*Worker) string {
	for i, w := range ws {
		select {
		case <-w.done:
			w.mu.Lock()
			e := w.err
			w.mu.Unlock()
			return fmt.Sprintf("worker %d: %s", i, e)
		default:
		}
	}
	return ""
}

// Aggregate merges the workers' latest stats.
func Aggregate(ws []*Worker) swarm.Stats {
	var agg swarm.Stats
	for _, w := range ws {
		agg.Merge(w.Last().Stats)
	}
	return agg
}

// WorkersRSS sums the workers' resident memory.
func WorkersRSS(ws []*Worker) (rss int64) {
	for _, w := range ws {
		rss += w.Last().RSSBytes
	}
	return rss
}

// WaitEstablished waits until n connections of the workers are
// established.
func WaitEstablished(ctx context.Context, ws []*Worker, n int, progress func(string)) error {
	return WaitFor(ctx, ws, n, "idle connections established", func(s swarm.Stats) int64 { return s.Established }, progress)
}

// WaitFor waits until count(merged stats) reaches n, or every connection
// not counted has failed for good, reporting progress each second. It
// fails when a worker exits or after 60 s plus 1 s per 2,000 connections.
func WaitFor(ctx context.Context, ws []*Worker, n int, what string, count func(swarm.Stats) int64, progress func(string)) error {
	start := time.Now()
	timeout := 60*time.Second + time.Duration(n/2000)*time.Second
	for {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		agg := Aggregate(ws)
		got := count(agg)
		progress(fmt.Sprintf("%5.0fs %s %d/%d, failures %d", time.Since(start).Seconds(), what, got, n, agg.FailuresTotal))
		if got >= int64(n) {
			return nil
		}
		if agg.FailuresTotal > 0 && got+agg.FailuresTotal >= int64(n) {
			return fmt.Errorf("%d connections failed: %v", agg.FailuresTotal, agg.Failures)
		}
		if e := ExitedWorkers(ws); e != "" {
			return fmt.Errorf("load worker exited: %s", e)
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("only %d of %d %s after %s (failures %v)", got, n, what, timeout, agg.Failures)
		}
	}
}
