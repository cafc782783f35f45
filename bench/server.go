package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Chatd is a chatd process the harness started (or one it was pointed at).
type Chatd struct {
	GatewayURL string
	APIURL     string
	AdminAddr  string
	Kafka      string // the embedded broker's address, when chatd runs one
	cmd        *exec.Cmd
	dataDir    string
	ownDir     bool
}

// StartChatd runs bin (a chatd binary) in dev mode on loopback with free
// ports and dataDir ("" = a temporary directory removed on Stop), and waits
// for its readiness line.
func StartChatd(ctx context.Context, bin, dataDir string, extra ...string) (*Chatd, error) {
	c := &Chatd{dataDir: dataDir}
	if dataDir == "" {
		d, err := os.MkdirTemp("", "chatbench-")
		if err != nil {
			return nil, err
		}
		c.dataDir, c.ownDir = d, true
	}
	args := append([]string{"--dev", "--data-dir", c.dataDir, "--gateway-addr", "127.0.0.1:0",
		"--api-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stderr = os.Stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "chatd ready "); ok {
				for _, f := range strings.Fields(rest) {
					k, v, _ := strings.Cut(f, "=")
					switch k {
					case "gateway":
						c.GatewayURL = v
					case "api":
						c.APIURL = v
					case "admin":
						c.AdminAddr = v
					case "kafka":
						c.Kafka = v
					}
				}
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- errors.New("chatd exited before it was ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			_ = c.cmd.Wait()
			return nil, err
		}
	case <-time.After(60 * time.Second):
		c.Stop()
		return nil, errors.New("chatd not ready within 60s")
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	}
	return c, nil
}

// PID is the process id (0 when not started by the harness).
func (c *Chatd) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to exit.
func (c *Chatd) Kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// Stop asks chatd to shut down (SIGTERM), kills it after 15s, and removes
// its data dir when the harness created it.
func (c *Chatd) Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	if c.ownDir {
		_ = os.RemoveAll(c.dataDir)
	}
}

// FindChatd returns the chatd binary: explicit if set, else "chatd" next to
// the running executable, else chatd on PATH.
func FindChatd(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "chatd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("chatd"); err == nil {
		return p, nil
	}
	return "", errors.New("no chatd binary: run `make build` or pass --chatd")
}
