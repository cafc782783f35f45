package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/core/auth"
)

// ClusterConfig describes a chatd topology on this machine.
type ClusterConfig struct {
	ChatdBin string
	// GatewayProcs is the number of gateway processes sharing one port
	// with SO_REUSEPORT. 1 runs a single chatd with every role and the
	// in-process registry (the embedded default); more run a core process,
	// a redis-server for the registry and router, and that many
	// gateway-only processes.
	GatewayProcs int
	// Split runs the core in its own process (with Redis) even for one
	// gateway process, so gateway figures hold nothing but the gateway.
	Split bool
	// GatewayEnv is added to the gateway processes' environment (e.g.
	// GOGC=50).
	GatewayEnv []string
	// CoreEnv is added to the environment of the processes that run the
	// core role (the core, the cores of the scaled-out topology, or the
	// one chatd of a single-process run), e.g. GOMAXPROCS=1.
	CoreEnv []string
	// RedisBin is the redis-server binary (default: from PATH).
	RedisBin string
	// Cores > 0 runs the scaled-out topology: a broker process (the
	// embedded Kafka broker, persisted in the data dir), a store process
	// (the embedded store, served to the cores), a redis-server, Cores core
	// processes in one consumer group sharing that store, and GatewayProcs
	// gateway processes.
	Cores int
	// Dir is the data dir (default: a new temporary one, removed by Stop).
	// A given Dir is kept.
	Dir string
	// GatewayAddr is the gateways' shared listener (default: a free port).
	GatewayAddr string
	// APIPort, when not 0, puts core i's API on 127.0.0.1:APIPort+i
	// (default: free ports).
	APIPort int
	// Detach starts every process in its own session with its output in
	// files in Dir (NAME.out, NAME.log), so that they outlive this process
	// (chatbench cluster up); Stop or StopDetached ends them.
	Detach bool
	// Heartbeat is the heartbeat interval the gateways announce (chatd
	// --heartbeat); 0 keeps chatd's default.
	Heartbeat time.Duration
	// ExtraArgs are passed to every chatd.
	ExtraArgs []string
	// Log receives the processes' stderr (nil: os.Stderr).
	Log io.Writer
}

// Proc is one chatd process of a cluster.
type Proc struct {
	Name      string // core-0, gateway-1, broker, store, ...
	Roles     string
	AdminAddr string
	Ready     map[string]string // the readiness line's fields
	cmd       *exec.Cmd
	args      []string
	env       []string
	exited    chan struct{}
}

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Cluster is a running local topology.
type Cluster struct {
	cfg        ClusterConfig
	dir        string
	tempDir    bool
	GatewayURL string // ws://host:port/chat/v1/ws (one port for every gateway)
	APIURL     string
	Core       *Proc   // nil with one all-roles process; Cores[0] with Cores > 0
	Cores      []*Proc // with ClusterConfig.Cores > 0
	Broker     *Proc   // with ClusterConfig.Cores > 0
	Store      *Proc   // with ClusterConfig.Cores > 0
	Gateways   []*Proc // the processes holding connections
	Signer     *auth.Signer
	redis      *exec.Cmd
	redisPort  string
	RedisAddr  string
	mu         sync.Mutex
}

// Dir is the cluster's data dir.
func (c *Cluster) Dir() string { return c.dir }

// Procs returns every chatd process of the cluster.
func (c *Cluster) Procs() []*Proc {
	var ps []*Proc
	for _, p := range append([]*Proc{c.Broker, c.Store}, c.Cores...) {
		if p != nil {
			ps = append(ps, p)
		}
	}
	if c.Core != nil && len(c.Cores) == 0 {
		ps = append(ps, c.Core)
	}
	return append(ps, c.Gateways...)
}

// RedisClientStats sums, over every chatd process of the cluster, the
// Redis round trips and commands it counted (chatd_redis_round_trips_total
// and chatd_redis_commands_total). ok is false when no process has them:
// the cluster runs without Redis.
func (c *Cluster) RedisClientStats() (roundTrips, commands float64, ok bool) {
	for _, p := range c.Procs() {
		rt, err := p.Metric("chatd_redis_round_trips_total")
		if err != nil {
			continue // a broker or store process, or no Redis at all
		}
		cmds, err := p.Metric("chatd_redis_commands_total")
		if err != nil {
			continue
		}
		roundTrips, commands, ok = roundTrips+rt, commands+cmds, true
	}
	return roundTrips, commands, ok
}

// RedisPID is the redis-server's process id (0 when there is none).
func (c *Cluster) RedisPID() int {
	if c.redis == nil || c.redis.Process == nil {
		return 0
	}
	return c.redis.Process.Pid
}

// StartCluster starts the topology in a temporary data dir and waits until
// every process is ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.GatewayProcs <= 0 {
		cfg.GatewayProcs = 1
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	dir, temp := cfg.Dir, false
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "chatbench-"); err != nil {
			return nil, err
		}
		temp = true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, dir: dir, tempDir: temp}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	gwAddr := cfg.GatewayAddr
	if gwAddr == "" {
		var err error
		if gwAddr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	c.GatewayURL = "ws://" + gwAddr + "/chat/v1/ws"
	common := []string{"--dev", "--data-dir", dir, "--log-level", "warn", "--admin-addr", "127.0.0.1:0"}
	apiAddr := func(i int) string {
		if cfg.APIPort == 0 {
			return "127.0.0.1:0"
		}
		return fmt.Sprintf("127.0.0.1:%d", cfg.APIPort+i)
	}
	switch {
	case cfg.Cores > 0:
		if err := c.startRedis(ctx); err != nil {
			return nil, err
		}
		kafkaAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, kafkaPort, _ := net.SplitHostPort(kafkaAddr)
		if c.Broker, err = c.start(ctx, "broker", "broker", append(append(common, "--roles", "broker", "--kafka-port", kafkaPort), cfg.ExtraArgs...)); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		brokers := c.Broker.Ready["kafka"]
		// A fixed port, so that a restarted store is where the cores look.
		storeAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if c.Store, err = c.start(ctx, "store", "store", append(append(common, "--roles", "store", "--store-addr", storeAddr), cfg.ExtraArgs...)); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		for i := 0; i < cfg.Cores; i++ {
			p, err := c.start(ctx, fmt.Sprintf("core-%d", i), "core", append(append(common, "--roles", "core", "--redis", c.RedisAddr,
				"--brokers", brokers, "--store", c.Store.Ready["store"], "--api-addr", apiAddr(i),
				"--node-id", strconv.Itoa(i+1)), cfg.ExtraArgs...))
			if err != nil {
				return nil, fmt.Errorf("core %d: %w", i, err)
			}
			c.Cores = append(c.Cores, p)
		}
		c.Core, c.APIURL = c.Cores[0], c.Cores[0].Ready["api"]
		if err := c.startGateways(ctx, common, gwAddr, brokers); err != nil {
			return nil, err
		}
	case cfg.GatewayProcs == 1 && !cfg.Split:
		p, err := c.start(ctx, "chatd", "all", append(append(common, "--gateway-addr", gwAddr, "--api-addr", apiAddr(0)), cfg.ExtraArgs...))
		if err != nil {
			return nil, err
		}
		c.Gateways = []*Proc{p}
		c.APIURL = p.Ready["api"]
	default:
		if err := c.startRedis(ctx); err != nil {
			return nil, err
		}
		core, err := c.start(ctx, "core-0", "core", append(append(common, "--roles", "core", "--redis", c.RedisAddr, "--api-addr", apiAddr(0)), cfg.ExtraArgs...))
		if err != nil {
			return nil, err
		}
		c.Core, c.APIURL = core, core.Ready["api"]
		if err := c.startGateways(ctx, common, gwAddr, core.Ready["kafka"]); err != nil {
			return nil, err
		}
	}
	key, err := auth.LoadKey(filepath.Join(dir, "keys", "token.key"))
	if err != nil {
		return nil, err
	}
	if c.Signer, err = auth.NewSigner(key); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// startGateways starts cfg.GatewayProcs gateway-only processes on gwAddr.
func (c *Cluster) startGateways(ctx context.Context, common []string, gwAddr, brokers string) error {
	for i := 0; i < c.cfg.GatewayProcs; i++ {
		p, err := c.start(ctx, fmt.Sprintf("gateway-%d", i), "gateway", append(append(common, "--roles", "gateway", "--redis", c.RedisAddr,
			"--brokers", brokers, "--gateway-addr", gwAddr, "--reuseport",
			"--gateway-id", fmt.Sprintf("gw-%d-%d", os.Getpid(), i)), c.cfg.ExtraArgs...))
		if err != nil {
			return fmt.Errorf("gateway %d: %w", i, err)
		}
		c.Gateways = append(c.Gateways, p)
	}
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// start runs one chatd and waits for its readiness line.
func (c *Cluster) start(ctx context.Context, name, roles string, args []string) (*Proc, error) {
	p := &Proc{Name: name, Roles: roles, args: args}
	if roles == "core" || roles == "all" {
		p.env = c.cfg.CoreEnv
	}
	if roles == "gateway" {
		p.env = c.cfg.GatewayEnv
		// As many gateway processes as CPUs or more: one P each, like
		// one-thread event-loop workers. With more Ps, every hand-off
		// between goroutines (poller -> OnRequest -> writer) may wake
		// another thread, and on this VM a wake-up of an idle thread
		// costs tens of µs: measured, 90 -> 64 µs of gateway CPU per
		// heartbeat and 930 -> 780 µs of machine CPU per connection set
		// up (docs/benchmarks.md). The environment wins.
		if c.cfg.GatewayProcs >= runtime.NumCPU() && !hasEnv(p.env, "GOMAXPROCS") {
			p.args = append(p.args, "--gomaxprocs", "1")
		}

	}
	if (roles == "gateway" || roles == "all") && c.cfg.Heartbeat > 0 {
		p.args = append(p.args, "--heartbeat", c.cfg.Heartbeat.String())
	}
	if err := c.launch(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

func (c *Cluster) launch(ctx context.Context, p *Proc) error {
	p.cmd = exec.Command(c.cfg.ChatdBin, p.args...)
	p.cmd.Stderr = c.cfg.Log
	if len(p.env) > 0 {
		p.cmd.Env = append(os.Environ(), p.env...)
	}
	p.exited = make(chan struct{})
	ready := make(chan map[string]string, 1)
	if c.cfg.Detach {
		// Own session (a terminal's ^C does not reach it) and output in
		// files, so the process outlives this one; the readiness line is
		// read back from its .out file.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		outPath := filepath.Join(c.dir, p.Name+".out")
		out, err := os.Create(outPath)
		if err != nil {
			return err
		}
		defer out.Close()
		errf, err := os.OpenFile(filepath.Join(c.dir, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer errf.Close()
		p.cmd.Stdout, p.cmd.Stderr = out, errf
		if err := p.cmd.Start(); err != nil {
			return fmt.Errorf("start chatd: %w", err)
		}
		go func() {
			for {
				b, _ := os.ReadFile(outPath)
				if f, ok := readyFields(string(b)); ok {
					ready <- f
					return
				}
				select {
				case <-p.exited:
					close(ready)
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	} else {
		out, err := p.cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := p.cmd.Start(); err != nil {
			return fmt.Errorf("start chatd: %w", err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			sent := false
			for sc.Scan() {
				if f, ok := readyFields(sc.Text()); ok && !sent {
					ready <- f
					sent = true
				}
			}
			if !sent {
				close(ready)
			}
		}()
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	select {
	case f, ok := <-ready:
		if !ok {
			return errors.New("chatd exited before it was ready")
		}
		p.Ready, p.AdminAddr = f, f["admin"]
		return nil
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		return errors.New("chatd not ready within 90s")
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		return ctx.Err()
	}
}

// readyFields parses chatd's readiness line ("chatd ready k=v ...") out of
// text.
func readyFields(text string) (map[string]string, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, "chatd ready ")
		if !ok {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		return f, true
	}
	return nil, false
}

// Kill SIGKILLs the process and waits for it to exit.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Signal sends sig to the process (SIGSTOP and SIGCONT make a broker
// unreachable for a while without losing its state).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Restart starts a killed process again with the same arguments.
func (c *Cluster) Restart(ctx context.Context, p *Proc) error { return c.launch(ctx, p) }

// KillRedis SIGKILLs the redis-server (it keeps nothing: the cluster runs
// it without persistence).
func (c *Cluster) KillRedis() {
	if c.redis != nil && c.redis.Process != nil {
		_ = c.redis.Process.Kill()
		_ = c.redis.Wait()
	}
}

// RestartRedis starts the redis-server again, empty, on the same port.
func (c *Cluster) RestartRedis(ctx context.Context) error { return c.runRedis(ctx) }

// KillGateway SIGKILLs gateway i and waits for it to exit.
func (c *Cluster) KillGateway(i int) {
	p := c.Gateways[i]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// RestartGateway starts gateway i again with the same arguments (same
// port, same gateway id).
func (c *Cluster) RestartGateway(ctx context.Context, i int) error {
	return c.launch(ctx, c.Gateways[i])
}

func (c *Cluster) startRedis(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	c.RedisAddr = addr
	_, c.redisPort, _ = net.SplitHostPort(addr)
	return c.runRedis(ctx)
}

func (c *Cluster) runRedis(ctx context.Context) error {
	bin := c.cfg.RedisBin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return errors.New("redis-server not found: several gateway processes share routing through Redis; run `make test-deps` (installs it) or use --gateway-procs 1")
		}
	}
	c.redis = exec.Command(bin, "--port", c.redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", c.dir, "--maxclients", "10000", "--loglevel", "warning")
	if c.cfg.Detach {
		c.redis.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	// redis-server's start-up banner and warnings go to a file in the
	// data dir, not into the run's output.
	if f, err := os.OpenFile(filepath.Join(c.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		c.redis.Stdout, c.redis.Stderr = f, f
		defer f.Close()
	}
	if err := c.redis.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	for i := 0; i < 100; i++ {
		if conn, err := net.DialTimeout("tcp", c.RedisAddr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.New("redis-server did not start")
}

// Stop stops every process (SIGTERM, then SIGKILL after 15s) and removes
// the data dir when it is a temporary one.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	stop := func(p *Proc) {
		defer wg.Done()
		if p == nil || p.cmd == nil || p.cmd.Process == nil {
			return
		}
		select {
		case <-p.exited:
			return // killed by a test, not restarted
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	// Gateways first (their clients get GOAWAY), then cores, then what
	// the cores use.
	for _, group := range [][]*Proc{c.Gateways, c.coreProcs(), {c.Store, c.Broker}} {
		for _, p := range group {
			wg.Add(1)
			go stop(p)
		}
		wg.Wait()
	}
	if c.redis != nil && c.redis.Process != nil {
		_ = c.redis.Process.Kill()
		_ = c.redis.Wait()
	}
	if c.tempDir {
		_ = os.RemoveAll(c.dir)
	}
}

func (c *Cluster) coreProcs() []*Proc {
	if len(c.Cores) > 0 {
		return c.Cores
	}
	return []*Proc{c.Core}
}

// Metric reads one unlabelled metric from a process's admin listener.
func (p *Proc) Metric(name string) (float64, error) {
	resp, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// GC makes the process run a garbage collection (through pprof's heap
// endpoint, which collects before profiling).
func (p *Proc) GC() {
	resp, err := http.Get("http://" + p.AdminAddr + "/debug/pprof/heap?gc=1")
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// RSS returns the process's resident set size in bytes.
func (p *Proc) RSS() int64 { return ProcRSS(p.PID()) }

// ProcRSS reads VmRSS of a process from /proc.
func ProcRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Args returns the process's command-line arguments.
func (p *Proc) Args() []string { return p.args }
