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
	// RedisBin is the redis-server binary (default: from PATH).
	RedisBin string
	// ExtraArgs are passed to every chatd.
	ExtraArgs []string
	// Log receives the processes' stderr (nil: os.Stderr).
	Log io.Writer
}

// Proc is one chatd process of a cluster.
type Proc struct {
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
	GatewayURL string // ws://host:port/chat/v1/ws (one port for every gateway)
	APIURL     string
	Core       *Proc   // nil with one all-roles process
	Gateways   []*Proc // the processes holding connections
	Signer     *auth.Signer
	redis      *exec.Cmd
	RedisAddr  string
	mu         sync.Mutex
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
	dir, err := os.MkdirTemp("", "chatbench-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, dir: dir}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	gwAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c.GatewayURL = "ws://" + gwAddr + "/chat/v1/ws"
	common := []string{"--dev", "--data-dir", dir, "--log-level", "warn", "--admin-addr", "127.0.0.1:0"}
	if cfg.GatewayProcs == 1 && !cfg.Split {
		p, err := c.start(ctx, "all", append(append(common, "--gateway-addr", gwAddr, "--api-addr", "127.0.0.1:0"), cfg.ExtraArgs...))
		if err != nil {
			return nil, err
		}
		c.Gateways = []*Proc{p}
		c.APIURL = p.Ready["api"]
	} else {
		if err := c.startRedis(ctx); err != nil {
			return nil, err
		}
		core, err := c.start(ctx, "core", append(append(common, "--roles", "core", "--redis", c.RedisAddr, "--api-addr", "127.0.0.1:0"), cfg.ExtraArgs...))
		if err != nil {
			return nil, err
		}
		c.Core, c.APIURL = core, core.Ready["api"]
		for i := 0; i < cfg.GatewayProcs; i++ {
			p, err := c.start(ctx, "gateway", append(append(common, "--roles", "gateway", "--redis", c.RedisAddr,
				"--brokers", core.Ready["kafka"], "--gateway-addr", gwAddr, "--reuseport",
				"--gateway-id", fmt.Sprintf("gw-%d-%d", os.Getpid(), i)), cfg.ExtraArgs...))
			if err != nil {
				return nil, fmt.Errorf("gateway %d: %w", i, err)
			}
			c.Gateways = append(c.Gateways, p)
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

// start runs one chatd and waits for its readiness line.
func (c *Cluster) start(ctx context.Context, roles string, args []string) (*Proc, error) {
	p := &Proc{Roles: roles, args: args}
	if roles == "gateway" {
		p.env = c.cfg.GatewayEnv
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
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start chatd: %w", err)
	}
	ready := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "chatd ready "); ok && !sent {
				f := map[string]string{}
				for _, kv := range strings.Fields(rest) {
					k, v, _ := strings.Cut(kv, "=")
					f[k] = v
				}
				ready <- f
				sent = true
			}
		}
		if !sent {
			close(ready)
		}
	}()
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
	bin := c.cfg.RedisBin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return errors.New("redis-server not found: several gateway processes share routing through Redis; run `make test-deps` (installs it) or use --gateway-procs 1")
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	c.redis = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", c.dir, "--maxclients", "10000", "--loglevel", "warning")
	// redis-server's start-up banner and warnings go to a file in the
	// data dir, not into the run's output.
	if f, err := os.Create(filepath.Join(c.dir, "redis.log")); err == nil {
		c.redis.Stdout, c.redis.Stderr = f, f
		defer f.Close()
	}
	if err := c.redis.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	c.RedisAddr = addr
	for i := 0; i < 100; i++ {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
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
// the data dir.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	stop := func(p *Proc) {
		defer wg.Done()
		if p == nil || p.cmd == nil || p.cmd.Process == nil {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	for _, p := range c.Gateways {
		wg.Add(1)
		go stop(p)
	}
	wg.Wait()
	wg.Add(1)
	stop(c.Core)
	if c.redis != nil && c.redis.Process != nil {
		_ = c.redis.Process.Kill()
		_ = c.redis.Wait()
	}
	_ = os.RemoveAll(c.dir)
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
