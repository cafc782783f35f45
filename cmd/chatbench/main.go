// Command chatbench is chatd's capacity harness.
//
//	chatbench latency [flags]   1:1 send->ack and send->deliver latency
//	chatbench fanout [flags]    a group message to every online member
//	chatbench receipts [flags]  receipt cost when everyone in a group reads
//
// By default it starts its own chatd (embedded defaults, temporary data
// dir) and stops it at the end; --server/--api point it at a running one.
// With --json the last line of stdout is one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/bench/limits"
	"github.com/chatd-dev/chatd/bench/report"
	"github.com/chatd-dev/chatd/bench/swarm"
	"github.com/chatd-dev/chatd/cmd/internal/sysmon"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	// The load processes get the same steady sysmon as chatd (package
	// sysmon): they share the CPUs with the server. Its processes inherit
	// the setting; CHATD_SYSMON_STEADY=false (or 0) turns it off for all of them.
	if sysmon.Wanted(os.Getenv) {
		if err := sysmon.Steady(); err != nil {
			fmt.Fprintln(os.Stderr, "chatbench: could not re-execute with a steady sysmon:", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "latency":
		err = latency(ctx, os.Args[2:])
	case "density":
		err = density(ctx, os.Args[2:])
	case "storm":
		err = storm(ctx, os.Args[2:])
	case "fanout":
		err = group(ctx, "fanout", os.Args[2:], false)
	case "receipts":
		err = group(ctx, "receipts", os.Args[2:], true)
	case "cluster":
		err = cluster(ctx, os.Args[2:])
	case "swarm-worker":
		// A load-generator process started by density/storm; not for people.
		os.Exit(swarm.WorkerMain(os.Args[2:]))
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: chatbench <scenario> [flags]   (chatbench <scenario> -h for its flags)

scenarios:
  latency   1:1 send->ack and send->deliver latency, open loop
  density   hold N authenticated, heartbeating connections; memory per connection
  storm     SIGKILL and restart the gateways under N clients; recovery time, loss, duplicates
  fanout    one group, every member online: time until the last member has a message, deliveries/s
  receipts  the same group where everyone reads: receipt frames, store writes, Redis commands per message

other:
  cluster up|down   start (detached) or stop a local cluster: broker, store, Redis, cores, gateways`)
}

type serverFlags struct {
	server, api, chatd *string
}

func addServerFlags(fs *flag.FlagSet) serverFlags {
	return serverFlags{
		server: fs.String("server", "", "gateway WebSocket URL of a running chatd (empty: start one)"),
		api:    fs.String("api", "", "API base URL of that chatd (required with --server; it must run with --dev)"),
		chatd:  fs.String("chatd", "", "chatd binary to start (default: next to chatbench, then PATH)"),
	}
}

// target returns the server to use and a stop function.
func (s serverFlags) target(ctx context.Context) (gw, api string, stop func(), err error) {
	if *s.server != "" {
		if *s.api == "" {
			return "", "", nil, fmt.Errorf("--api is required with --server")
		}
		return *s.server, *s.api, func() {}, nil
	}
	bin, err := bench.FindChatd(*s.chatd)
	if err != nil {
		return "", "", nil, err
	}
	c, err := bench.StartChatd(ctx, bin, "")
	if err != nil {
		return "", "", nil, err
	}
	return c.GatewayURL, c.APIURL, c.Stop, nil
}

func latency(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chatbench latency", flag.ExitOnError)
	sf := addServerFlags(fs)
	var (
		pairs    = fs.Int("pairs", 0, "sender/receiver pairs, one direct conversation each (0: rate/25, so each sender stays under the gateway's 50 frames/s flood limit)")
		idle     = fs.Int("idle", 0, "idle background connections (authenticated, heartbeating) held during the run")
		rate     = fs.Float64("rate", 2000, "messages per second, all pairs together (open loop)")
		duration = fs.Duration("duration", 10*time.Second, "measured sending time")
		warmup   = fs.Duration("warmup", 2*time.Second, "sending time before measuring")
		body     = fs.Int("body", 32, "message body bytes")
		gwProcs  = fs.Int("gateway-procs", 0, "gateway processes sharing the port (0: the fewest the open-files limit allows)")
		cores    = fs.Int("cores", 0, "run the local cluster instead (a broker, a store, Redis and this many core processes; --gateway-procs gateways, at least 2)")
		serverHB = fs.Duration("server-heartbeat", 0, "heartbeat interval the gateways announce (chatd --heartbeat; 0: chatd's default, 30s); the idle connections PING at it")
		findMax  = fs.Bool("find-max", false, "after the run, raise the rate step by step and report the highest whose deliver P99 stays under 100 ms")
		outDir   = fs.String("out", "bench/out", "directory for the reports (JSON, Markdown, SVG)")
		asJSON   = fs.Bool("json", false, "print the result as one JSON object on the last line")
		gwEnv    envFlag
		coreEnv  envFlag
	)
	fs.Var(&gwEnv, "gateway-env", "KEY=VALUE added to the gateway processes' environment (repeatable; e.g. GOMAXPROCS=1)")
	fs.Var(&coreEnv, "core-env", "KEY=VALUE added to the environment of the process(es) running the core role (repeatable; e.g. GOMAXPROCS=1)")
	_ = fs.Parse(args)
	var gw, api string
	procs := 1
	var idleWorkers []*bench.Worker
	var topo *bench.Cluster
	if *sf.server != "" {
		if *idle > 0 {
			return fmt.Errorf("--idle needs chatbench to start chatd (it mints the idle clients' tokens with its key); drop --server")
		}
		if *sf.api == "" {
			return fmt.Errorf("--api is required with --server")
		}
		gw, api = *sf.server, *sf.api
	} else {
		bin, err := bench.FindChatd(*sf.chatd)
		if err != nil {
			return err
		}
		procs = *gwProcs
		if procs <= 0 {
			procs = bench.GatewayProcsFor(*idle + 2*max(*pairs, int(*rate/25)+1))
			if *cores > 0 {
				procs = max(procs, 2)
			}
		}
		cl, err := bench.StartCluster(ctx, bench.ClusterConfig{ChatdBin: bin, GatewayProcs: procs, Cores: *cores, GatewayEnv: gwEnv, CoreEnv: coreEnv, Heartbeat: *serverHB})
		if err != nil {
			return err
		}
		defer cl.Stop()
		topo = cl
		gw, api = cl.GatewayURL, cl.APIURL
		if *idle > 0 {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			idleWorkers, err = bench.SpawnWorkers(cl, bench.WorkersConfig{SelfBin: self, Conns: *idle, Procs: bench.GatewayProcsFor(*idle), Tick: bench.DefaultClientTick})
			if err != nil {
				return err
			}
			defer bench.StopWorkers(idleWorkers)
			if err := bench.WaitEstablished(ctx, idleWorkers, *idle, func(s string) { fmt.Fprintln(os.Stderr, s) }); err != nil {
				return err
			}
		}
	}
	var cpu bench.CPUGroups
	if topo != nil {
		cpu = bench.TopologyCPU(topo, idleWorkers)
		cpu["bench"] = []int{os.Getpid()}
	}
	run := func(r float64) (*bench.LatencyResult, error) {
		start := cpu.Snapshot()
		var rt0, cmds0 float64
		if topo != nil {
			rt0, cmds0, _ = topo.RedisClientStats()
		}
		res, err := bench.RunLatency(ctx, bench.LatencyConfig{
			GatewayURL: gw, APIURL: api, Pairs: *pairs, Rate: r,
			Duration: *duration, Warmup: *warmup, BodySize: *body,
		})
		if err != nil {
			return nil, err
		}
		res.GatewayProcesses = procs
		res.SchedAutogroup = limits.SchedAutogroup()
		if cpu != nil {
			use := cpu.Since(start)
			res.CPU, res.Sched = use.Percent, use.Sched
		}
		if topo != nil && res.Sent > 0 {
			if rt, cmds, ok := topo.RedisClientStats(); ok {
				res.RedisRoundTripsPerMsg = (rt - rt0) / float64(res.Sent)
				res.RedisCommandsPerMsg = (cmds - cmds0) / float64(res.Sent)
			}
		}
		if idleWorkers != nil {
			res.IdleConns = bench.Aggregate(idleWorkers).Established
		}
		return res, nil
	}
	res, err := run(*rate)
	if err != nil {
		return err
	}
	printLatency(res, *duration)
	if *findMax {
		best := 0.0
		if res.DeliverP99ms < 100 && res.Lost == 0 {
			best = res.Rate
		}
		for r := *rate * 1.5; r <= *rate*64 && best == r/1.5; r *= 1.5 {
			step, err := run(r)
			if err != nil {
				return err
			}
			printLatency(step, *duration)
			if step.DeliverP99ms < 100 && step.Lost == 0 {
				best = r
			}
		}
		res.MaxRateP99Under100ms = best
		fmt.Printf("highest rate with deliver P99 under 100 ms: %.0f msg/s\n", best)
	}
	writeLatencyReport(*outDir, args, res, []report.LatencySeries{
		report.FromHistogram("send->ack", res.AckHist, time.Microsecond),
		report.FromHistogram("send->deliver", res.DeliverHist, time.Microsecond),
	})
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if res.Lost > 0 {
		return fmt.Errorf("%d messages lost", res.Lost)
	}
	return nil
}

func printLatency(res *bench.LatencyResult, d time.Duration) {
	fmt.Printf("1:1 latency: %d pairs, %d idle connections, %.0f msg/s target (%.0f achieved), %s measured\n", res.Pairs, res.IdleConns, res.Rate, res.AchievedRate, d)
	fmt.Printf("  sent %d  acked %d  delivered %d  lost %d  duplicates %d  errors %v\n", res.Sent, res.Acked, res.Delivered, res.Lost, res.Duplicates, res.Errors)
	fmt.Printf("  send->ack      p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", res.AckP50ms, res.AckP99ms, res.AckMaxms)
	fmt.Printf("  send->deliver  p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.2f ms\n",
		res.DeliverP50ms, res.DeliverP90ms, res.DeliverP99ms, res.DeliverP999, res.DeliverMaxms)
	if res.CPU != nil {
		fmt.Printf("  CPU %% of one core: %s\n", formatCPU(res.CPU))
	}
	if res.Sched != nil {
		fmt.Printf("  run-queue wait per run (runs/s): %s\n", formatSched(res.Sched))
	}
	if res.RedisRoundTripsPerMsg > 0 {
		fmt.Printf("  Redis per message (all chatd processes): %.3f round trips, %.2f commands\n", res.RedisRoundTripsPerMsg, res.RedisCommandsPerMsg)
	}
	if res.SchedAutogroup == 1 {
		fmt.Println("  note: kernel.sched_autogroup_enabled=1: a busy process in another session takes a whole CPU at once and these latencies stall with it; kernel-tuning/apply sets it to 0")
	}
}

func density(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chatbench density", flag.ExitOnError)
	var (
		conns     = fs.Int("conns", 2000, "connections to open and hold")
		gwProcs   = fs.Int("gateway-procs", 0, "gateway processes sharing the port (0: the fewest the open-files limit allows)")
		cliProcs  = fs.Int("client-procs", 0, "load-generator processes, one source address each (0: the fewest the limit allows)")
		dialRate  = fs.Int("dial-rate", 2000, "new connections per second, all clients together (this 2-core box completes about 2,000 handshakes a second; faster ramps queue past the 5 s handshake deadline)")
		hold      = fs.Duration("hold", 10*time.Second, "idle time with heartbeats before memory is read")
		heartbeat = fs.Duration("heartbeat", 0, "client heartbeat interval (0: the server's)")
		setupTO   = fs.Duration("setup-timeout", 0, "give up on connections not set up (connected and round-tripped) by then (0: 60s + 1s per 1,000 connections)")
		tick      = fs.Duration("client-tick", 0, "load workers wake at most once per tick (0: 20ms; negative: per event, which costs the box a wake-up per PING and per PONG)")
		serverHB  = fs.Duration("server-heartbeat", 0, "heartbeat interval the gateways announce (chatd --heartbeat; 0: chatd's default, 30s)")
		gogc      = fs.Int("gateway-gogc", 0, "GOGC for the gateway processes (0: Go's default, 100)")
		chatd     = fs.String("chatd", "", "chatd binary (default: next to chatbench, then PATH)")
		outDir    = fs.String("out", "bench/out", "directory for the reports (JSON, Markdown, SVG)")
		asJSON    = fs.Bool("json", false, "print the result as one JSON object on the last line")
		gwEnv     envFlag
	)
	fs.Var(&gwEnv, "gateway-env", "KEY=VALUE added to the gateway processes' environment (repeatable; e.g. GOMAXPROCS=1)")
	_ = fs.Parse(args)
	bin, self, err := binaries(*chatd)
	if err != nil {
		return err
	}
	env := []string(gwEnv)
	if *gogc > 0 {
		env = append(env, fmt.Sprintf("GOGC=%d", *gogc))
	}
	res, samples, err := bench.RunDensity(ctx, bench.DensityConfig{GatewayEnv: env,
		ChatdBin: bin, SelfBin: self, Conns: *conns, GatewayProcs: *gwProcs, ClientProcs: *cliProcs,
		DialRate: *dialRate, Hold: *hold, Heartbeat: *heartbeat, ServerHeartbeat: *serverHB, SetupTimeout: *setupTO, ClientTick: *tick,
		Progress: func(s string) { fmt.Fprintln(os.Stderr, s) },
	})
	if err != nil {
		return err
	}
	fmt.Printf("density: %d/%d connections established (%d round-tripped, %d failures) on %d gateway process(es), %d client process(es)\n",
		res.ConnsEstablished, res.ConnsTarget, res.ConnsRoundTripped, res.Failures, res.GatewayProcesses, res.ClientProcesses)
	fmt.Printf("  gateway: %.0f B RSS/conn (%.0f marginal), %.0f B Go heap/conn (%.0f marginal), %d goroutines\n",
		res.GatewayRSSBytesPerConn, res.GatewayRSSMarginal, res.GatewayHeapBytesPerConn, res.GatewayHeapMarginal, res.GatewayGoroutines)
	fmt.Printf("  gateway private memory (RssAnon, without the shared binary): %.0f B/conn (%.0f marginal)\n",
		res.GatewayAnonBytesPerConn, res.GatewayAnonMarginal)
	fmt.Printf("  kernel: %.0f B/socket   clients: %.0f B RSS/conn   setup: %.1fs (%.0f conns/s)\n",
		res.KernelBytesPerSocket, res.ClientRSSBytesPerConn, res.SetupSeconds, res.SetupRate)
	fmt.Printf("  setup: %.0f µs machine CPU per connection; CPU %% of one core: %s\n",
		res.SetupCPUPerConnUS, formatCPU(res.SetupCPU))
	fmt.Printf("  hold: %.0f heartbeats/s, %.0f µs machine CPU per heartbeat; CPU %% of one core: %s\n",
		res.HoldHeartbeatsPerSec, res.HoldCPUPerHeartbeatUS, formatCPU(res.HoldCPU))
	if res.HoldRedisCommandsPerHeartbeat > 0 {
		fmt.Printf("  hold: Redis per heartbeat interval (all chatd processes): %.1f round trips, %.1f commands\n",
			res.HoldRedisRoundTripsPerHeartbeat, res.HoldRedisCommandsPerHeartbeat)
	}
	writeDensityReport(*outDir, args, res, samples)
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if res.Failures > 0 || res.ConnsEstablished < int64(res.ConnsTarget) {
		return fmt.Errorf("%d of %d connections failed", res.ConnsTarget-int(res.ConnsEstablished), res.ConnsTarget)
	}
	return nil
}

func storm(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chatbench storm", flag.ExitOnError)
	var (
		clients  = fs.Int("clients", 2000, "connected clients (pairs, each did one message round trip)")
		gwProcs  = fs.Int("gateway-procs", 0, "gateway processes sharing the port (0: the fewest the open-files limit allows)")
		senders  = fs.Int("sender-pairs", 10, "SDK sender/receiver pairs sending throughout: the app-level loss and duplicate witnesses")
		rate     = fs.Float64("rate", 200, "messages per second over all sender pairs")
		downtime = fs.Duration("downtime", time.Second, "how long the gateways stay dead")
		chatd    = fs.String("chatd", "", "chatd binary (default: next to chatbench, then PATH)")
		outDir   = fs.String("out", "bench/out", "directory for the reports (JSON, Markdown, SVG)")
		asJSON   = fs.Bool("json", false, "print the result as one JSON object on the last line")
	)
	_ = fs.Parse(args)
	bin, self, err := binaries(*chatd)
	if err != nil {
		return err
	}
	res, samples, err := bench.RunStorm(ctx, bench.StormConfig{
		ChatdBin: bin, SelfBin: self, Clients: *clients, GatewayProcs: *gwProcs, SenderPairs: *senders,
		Rate: *rate, Downtime: *downtime, Progress: func(s string) { fmt.Fprintln(os.Stderr, s) },
	})
	if err != nil {
		return err
	}
	fmt.Printf("storm: %d clients on %d gateway process(es): %d reconnected, back and caught up after %.1fs (recovered: %v)\n",
		res.Clients, res.GatewayProcesses, res.Reconnected, res.RecoverySeconds, res.Recovered)
	fmt.Printf("  witnesses: %d sent, %d acked, %d delivered, %d lost, %d duplicates\n", res.Sent, res.Acked, res.Delivered, res.Lost, res.Duplicates)
	writeStormReport(*outDir, args, res, samples)
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if !res.Recovered || res.Lost > 0 || res.Duplicates > 0 {
		return fmt.Errorf("storm: recovered=%v lost=%d duplicates=%d", res.Recovered, res.Lost, res.Duplicates)
	}
	return nil
}

// binaries returns the chatd binary to start and this executable (run as
// the load workers).
func binaries(chatd string) (bin, self string, err error) {
	if bin, err = bench.FindChatd(chatd); err != nil {
		return "", "", err
	}
	self, err = os.Executable()
	return bin, self, err
}

// formatCPU prints a CPU breakdown in a fixed order.
func formatCPU(p map[string]float64) string {
	var b strings.Builder
	for _, k := range []string{"machine", "gateways", "core", "redis", "clients", "bench", "other"} {
		if v, ok := p[k]; ok {
			fmt.Fprintf(&b, "%s %.1f  ", k, v)
		}
	}
	return strings.TrimSpace(b.String())
}

// formatSched prints each group's wait for a CPU in formatCPU's order.
func formatSched(s map[string]bench.SchedUse) string {
	var b strings.Builder
	for _, k := range []string{"gateways", "core", "redis", "clients", "bench"} {
		if v, ok := s[k]; ok {
			fmt.Fprintf(&b, "%s %.0f µs (%.0f)  ", k, v.WaitPerRunUS, v.RunsPerSecond)
		}
	}
	return strings.TrimSpace(b.String())
}

// envFlag collects repeated KEY=VALUE flags.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}
