package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/bench/limits"
	"github.com/chatd-dev/chatd/bench/swarm"
)

// DensityConfig is a connection-density run: Conns clients complete the
// WebSocket upgrade and HELLO, each pair does one message round trip
// (OPEN_DIRECT, SEND/ACK, MSG, RECEIPT), then they stay idle with
// heartbeats for Hold before memory is read.
type DensityConfig struct {
	ChatdBin string // chatd binary
	SelfBin  string // chatbench binary, executed as "chatbench swarm-worker"
	Conns    int
	// GatewayProcs and ClientProcs: 0 picks the fewest processes the
	// open-files limit allows.
	GatewayProcs int
	ClientProcs  int
	// DialRate is new connections per second over all clients (default
	// 2,000: about what this 2-core box completes; a faster ramp queues
	// handshakes past the gateway's 5 s deadline).
	DialRate int
	// Hold is how long connections stay idle, heartbeating, after setup
	// and before memory is read (default 10s).
	Hold time.Duration
	// Heartbeat overrides the server's heartbeat interval for the clients.
	Heartbeat time.Duration
	// ClientTick is the load workers' swarm.Config.Tick (default 20ms; a
	// negative value wakes them per event).
	ClientTick time.Duration
	// ServerHeartbeat is the heartbeat interval the gateways announce
	// (chatd --heartbeat; 0: chatd's default, 30s). Clients follow it
	// unless Heartbeat overrides it.
	ServerHeartbeat time.Duration
	// SetupTimeout bounds setup (default 60s + 1s per 1,000 connections:
	// half the default dial rate, since a box that holds many connections
	// already sets new ones up more slowly).
	SetupTimeout time.Duration
	// GatewayEnv is added to the gateway processes' environment.
	GatewayEnv []string
	Log        io.Writer
	// Progress, when set, gets a line per second.
	Progress func(string)
}

// DensityResult is what a density run measured. Per-connection figures
// divide totals (not deltas) by the established connections, so each
// process's fixed cost is included; the *_marginal_* fields divide the
// growth from before the clients connected.
type DensityResult struct {
	ConnsTarget             int              `json:"conns_target"`
	ConnsEstablished        int64            `json:"conns_established"`
	ConnsRoundTripped       int64            `json:"conns_round_tripped"`
	Failures                int64            `json:"failures"`
	FailureReasons          map[string]int64 `json:"failure_reasons,omitempty"`
	GatewayProcesses        int              `json:"gateway_processes"`
	ClientProcesses         int              `json:"client_processes"`
	GatewayRSSBytesPerConn  float64          `json:"gateway_rss_bytes_per_conn"`
	GatewayHeapBytesPerConn float64          `json:"gateway_heap_bytes_per_conn"`
	GatewayRSSMarginal      float64          `json:"gateway_rss_marginal_bytes_per_conn"`
	GatewayHeapMarginal     float64          `json:"gateway_heap_marginal_bytes_per_conn"`
	GatewayRSSTotalBytes    int64            `json:"gateway_rss_total_bytes"`
	// GatewayAnon*: RssAnon, the gateways' private memory (heap, stacks,
	// runtime) without the file pages of the binary, which every chatd
	// process on the machine shares.
	GatewayAnonBytesPerConn float64 `json:"gateway_anon_bytes_per_conn"`
	GatewayAnonMarginal     float64 `json:"gateway_anon_marginal_bytes_per_conn"`
	KernelBytesPerSocket    float64 `json:"kernel_bytes_per_socket"`
	GatewayGoroutines       int64   `json:"gateway_goroutines"`
	ClientRSSBytesPerConn   float64 `json:"client_rss_bytes_per_conn"`
	SetupSeconds            float64 `json:"setup_seconds"`
	SetupRate               float64 `json:"setup_conns_per_second"`
	HoldSeconds             float64 `json:"hold_seconds"`
	PingsSent               int64   `json:"pings_sent"`
	PongsReceived           int64   `json:"pongs_received"`
	PongsMissed             int64   `json:"pongs_missed"`
	// HoldCPU is the CPU each part used while the connections idled (in
	// percent of one CPU; "machine" counts everything, kernel included).
	HoldCPU map[string]float64 `json:"hold_cpu_percent"`
	// SetupCPU is the same for the setup (connect, HELLO, round trip), and
	// SetupCPUPerConnUS the machine's busy CPU per connection set up.
	SetupCPU          map[string]float64 `json:"setup_cpu_percent"`
	SetupCPUPerConnUS float64            `json:"setup_cpu_us_per_conn"`
	// HoldHeartbeatsPerSec is PINGs answered per second during the hold,
	// and HoldCPUPerHeartbeatUS the machine's busy CPU during the hold per
	// heartbeat: both ends, the kernel's loopback TCP and everything else
	// that ran (see "other" in HoldCPU).
	HoldHeartbeatsPerSec  float64 `json:"hold_heartbeats_per_second"`
	HoldCPUPerHeartbeatUS float64 `json:"hold_cpu_us_per_heartbeat"`
	// HoldRedisRoundTripsPerHeartbeat and HoldRedisCommandsPerHeartbeat are
	// the Redis round trips and commands of every chatd process together
	// during the hold, per heartbeat interval (the hold's count times
	// interval / hold). The gateways renew their leases every 30 s, so a
	// hold of a minute or more gives a steady figure. Absent without Redis
	// (one gateway process).
	HoldRedisRoundTripsPerHeartbeat float64 `json:"hold_redis_round_trips_per_heartbeat_interval,omitempty"`
	HoldRedisCommandsPerHeartbeat   float64 `json:"hold_redis_commands_per_heartbeat_interval,omitempty"`

	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	RoundTripP99Ms float64 `json:"round_trip_p99_ms"`
	Limits         string  `json:"limits_report"`
}

// Sample is one point of a run's time series.
type Sample struct {
	T           float64 // seconds since start
	Established int64
	GatewayRSS  int64
}

// ConnsPerProcess is how many connections one of several processes takes:
// below the open-files limit (20,000 here), with room for SO_REUSEPORT's
// uneven spread (a few hundred either way at this size).
func ConnsPerProcess() int {
	return max(1000, int(float64(fileLimit())*0.92))
}

// GatewayProcsFor is the fewest gateway processes for conns: one while a
// single process's open files allow (no uneven spread to allow for), else
// as many as ConnsPerProcess needs.
func GatewayProcsFor(conns int) int {
	if conns <= fileLimit()-500 {
		return 1
	}
	per := ConnsPerProcess()
	return (conns + per - 1) / per
}

func fileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max > 1<<20 {
		return 20_000
	}
	return int(lim.Max)
}

// RunDensity runs the scenario.
func RunDensity(ctx context.Context, cfg DensityConfig) (*DensityResult, []Sample, error) {
	if cfg.Conns < 2 {
		return nil, nil, errors.New("density needs at least 2 connections")
	}
	cfg.Conns &^= 1 // pairs
	if cfg.GatewayProcs <= 0 {
		cfg.GatewayProcs = GatewayProcsFor(cfg.Conns)
	}
	if cfg.ClientProcs <= 0 {
		cfg.ClientProcs = GatewayProcsFor(cfg.Conns)
	}
	if cfg.DialRate <= 0 {
		cfg.DialRate = 2_000
	}
	switch {
	case cfg.ClientTick == 0:
		cfg.ClientTick = DefaultClientTick
	case cfg.ClientTick < 0:
		cfg.ClientTick = 0
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 10 * time.Second
	}
	if cfg.SetupTimeout <= 0 {
		cfg.SetupTimeout = 60*time.Second + time.Duration(cfg.Conns/1000)*time.Second
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	rep, err := limits.Check(limits.Need{Conns: cfg.Conns, GatewayProcs: cfg.GatewayProcs, ClientProcs: cfg.ClientProcs,
		SourceIPs: cfg.ClientProcs * SourceIPsPerWorker(cfg.Conns, cfg.ClientProcs), ClientsOnThisHost: true,
		Heartbeat: heartbeatOf(cfg)})
	if err != nil {
		return nil, nil, err
	}
	if !rep.OK() {
		return nil, nil, fmt.Errorf("this machine cannot hold the run; turn the knobs named below and retry:\n%s", rep.String())
	}
	res := &DensityResult{ConnsTarget: cfg.Conns, GatewayProcesses: cfg.GatewayProcs, ClientProcesses: cfg.ClientProcs, Limits: rep.String()}

	kernelBefore := KernelMemory()
	// The core runs apart so the gateway figures are the gateway's alone.
	cl, err := StartCluster(ctx, ClusterConfig{ChatdBin: cfg.ChatdBin, GatewayProcs: cfg.GatewayProcs, Split: true,
		GatewayEnv: cfg.GatewayEnv, Heartbeat: cfg.ServerHeartbeat, Log: cfg.Log})
	if err != nil {
		return nil, nil, err
	}
	defer cl.Stop()
	for _, p := range cl.Gateways {
		p.GC()
	}
	rssBefore, heapBefore, _ := gatewayMemory(cl)
	anonBefore := gatewayAnon(cl)

	// Workers: a source address per 10,000 connections each, pairs within
	// a worker.
	start := time.Now()
	workers, err := SpawnWorkers(cl, WorkersConfig{
		SelfBin: cfg.SelfBin, Conns: cfg.Conns, Procs: cfg.ClientProcs, DialRate: cfg.DialRate,
		Heartbeat: cfg.Heartbeat, Tick: cfg.ClientTick, RoundTrip: true, Log: cfg.Log,
	})
	if err != nil {
		return nil, nil, err
	}
	defer StopWorkers(workers)

	cpu := TopologyCPU(cl, workers)
	cpuSetup := cpu.Snapshot()
	var samples []Sample
	sample := func() swarm.Stats {
		agg := Aggregate(workers)
		// RSS only, from /proc: a metrics scrape of every gateway every
		// second would be CPU in the gateway figures that is the bench's.
		var rss int64
		for _, p := range cl.Gateways {
			rss += p.RSS()
		}
		samples = append(samples, Sample{T: time.Since(start).Seconds(), Established: agg.Established, GatewayRSS: rss})
		return agg
	}
	deadline := time.Now().Add(cfg.SetupTimeout)
	var agg swarm.Stats
	for {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		agg = sample()
		progress(fmt.Sprintf("%5.0fs established %d/%d round-tripped %d failures %d", time.Since(start).Seconds(), agg.Established, cfg.Conns, agg.RoundTripped, agg.FailuresTotal))
		if agg.RoundTripped+agg.FailuresTotal >= int64(cfg.Conns) || time.Now().After(deadline) {
			break
		}
		if exited := ExitedWorkers(workers); exited != "" {
			return nil, nil, fmt.Errorf("load worker exited: %s", exited)
		}
	}
	res.SetupSeconds = time.Since(start).Seconds()
	res.SetupRate = float64(agg.Established) / res.SetupSeconds

	setupUse := cpu.Since(cpuSetup)
	res.SetupCPU = setupUse.Percent
	if agg.Established > 0 {
		res.SetupCPUPerConnUS = float64(setupUse.MachineBusy.Microseconds()) / float64(agg.Established)
	}
	cpuStart, pongsStart := cpu.Snapshot(), agg.PongsReceived
	rt0, cmds0, _ := cl.RedisClientStats()
	holdEnd := time.Now().Add(cfg.Hold)
	for time.Now().Before(holdEnd) {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		agg = sample()
		progress(fmt.Sprintf("%5.0fs holding: established %d pings %d pongs %d", time.Since(start).Seconds(), agg.Established, agg.PingsSent, agg.PongsReceived))
	}
	res.HoldSeconds = cfg.Hold.Seconds()
	use := cpu.Since(cpuStart)
	if rt, cmds, ok := cl.RedisClientStats(); ok && use.Seconds > 0 {
		intervals := use.Seconds / heartbeatOf(cfg).Seconds()
		res.HoldRedisRoundTripsPerHeartbeat = (rt - rt0) / intervals
		res.HoldRedisCommandsPerHeartbeat = (cmds - cmds0) / intervals
	}
	res.HoldCPU = use.Percent
	if beats := agg.PongsReceived - pongsStart; beats > 0 {
		res.HoldHeartbeatsPerSec = float64(beats) / use.Seconds
		res.HoldCPUPerHeartbeatUS = float64(use.MachineBusy.Microseconds()) / float64(beats)
	}

	// Memory, read while every connection is open and idle, after a GC in
	// every gateway so the heap figure is live memory, not garbage.
	for _, p := range cl.Gateways {
		p.GC()
	}
	rss, heap, goroutines := gatewayMemory(cl)
	kernelAfter := KernelMemory()
	est := max(agg.Established, 1)
	res.ConnsEstablished, res.ConnsRoundTripped = agg.Established, agg.RoundTripped
	res.Failures, res.FailureReasons = agg.FailuresTotal, agg.Failures
	res.GatewayRSSTotalBytes = rss
	res.GatewayRSSBytesPerConn = float64(rss) / float64(est)
	res.GatewayHeapBytesPerConn = float64(heap) / float64(est)
	res.GatewayRSSMarginal = float64(rss-rssBefore) / float64(est)
	res.GatewayHeapMarginal = float64(heap-heapBefore) / float64(est)
	anon := gatewayAnon(cl)
	res.GatewayAnonBytesPerConn = float64(anon) / float64(est)
	res.GatewayAnonMarginal = float64(anon-anonBefore) / float64(est)
	// Both ends of every connection are sockets on this machine.
	res.KernelBytesPerSocket = float64(kernelAfter-kernelBefore) / float64(2*est)
	res.GatewayGoroutines = goroutines
	res.ClientRSSBytesPerConn = float64(WorkersRSS(workers)) / float64(est)
	res.PingsSent, res.PongsReceived, res.PongsMissed = agg.PingsSent, agg.PongsReceived, agg.PongsMissed
	res.ConnectP99Ms, res.RoundTripP99Ms = agg.ConnectP99Ms, agg.RoundTripP99Ms
	return res, samples, nil
}

// heartbeatOf is the interval the run's clients PING at.
func heartbeatOf(cfg DensityConfig) time.Duration {
	switch {
	case cfg.Heartbeat > 0:
		return cfg.Heartbeat
	case cfg.ServerHeartbeat > 0:
		return cfg.ServerHeartbeat
	}
	return 30 * time.Second // chatd's default --heartbeat
}

// sourceIP returns the n-th loopback source address of the load workers:
// 127.0.0.2, 127.0.0.3, ... continuing into 127.0.1.x. Each has its own
// ephemeral port range toward the one gateway port.
func sourceIP(i int) string {
	n := i + 2
	return fmt.Sprintf("127.0.%d.%d", n/254, n%254+1)
}

// gatewayMemory sums RSS, Go heap allocated (live after a GC) and
// goroutines over the gateway processes.
func gatewayMemory(cl *Cluster) (rss, heap, goroutines int64) {
	for _, p := range cl.Gateways {
		rss += p.RSS()
		if v, err := p.Metric("go_memstats_heap_alloc_bytes"); err == nil {
			heap += int64(v)
		}
		if v, err := p.Metric("go_goroutines"); err == nil {
			goroutines += int64(v)
		}
	}
	return rss, heap, goroutines
}

// gatewayAnon sums RssAnon over the gateway processes.
func gatewayAnon(cl *Cluster) (anon int64) {
	for _, p := range cl.Gateways {
		anon += ProcAnon(p.PID())
	}
	return anon
}

// KernelMemory is the kernel memory that grows with sockets: slab (socket,
// inode, file, dentry, epoll objects) plus the pages charged to TCP socket
// buffers (/proc/net/sockstat "mem").
func KernelMemory() int64 {
	var slab int64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Slab:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				slab = kb << 10
			}
		}
	}
	var pages int64
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "TCP:"); ok {
				f := strings.Fields(rest)
				for i := 0; i+1 < len(f); i += 2 {
					if f[i] == "mem" {
						pages, _ = strconv.ParseInt(f[i+1], 10, 64)
					}
				}
			}
		}
	}
	return slab + pages*int64(os.Getpagesize())
}
