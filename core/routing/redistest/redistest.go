// Package redistest starts a real redis-server for tests: its own process on
// a free loopback port, in a temporary directory, with persistence off.
//
// Tests never skip when redis-server is missing: they fail and say to run
// `make test-deps`, which installs it from Debian's packages.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process started by StartServer. It is stopped
// by the test's Cleanup; Kill and Restart simulate a crash and a comeback
// on the same address.
type Server struct {
	// Addr is "127.0.0.1:port"; it stays the same across Restart.
	Addr string

	tb   testing.TB
	bin  string
	port int
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil while killed
	out  *syncWriter   // what cmd printed
	done chan struct{} // closed when cmd has exited
}

// Start starts a redis-server and returns its address and a stop function
// (also run by t.Cleanup; calling it twice is fine).
func Start(t testing.TB) (addr string, stop func()) {
	t.Helper()
	s := StartServer(t)
	return s.Addr, s.Stop
}

// StartServer starts a redis-server on a free loopback port and registers
// its Stop with t.Cleanup. It fails the test if redis-server is not
// installed or does not come up.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found in PATH (%v): run `make test-deps` to install it", err)
	}
	s := &Server{tb: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	// A free port can be taken by someone else between choosing and
	// binding it: try a few.
	var last error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		if last = s.start(); last == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", last)
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	out := &syncWriter{w: new(bytes.Buffer)}
	cmd.Stdout, cmd.Stderr = out, out
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.Addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on %s did not answer PING within %v: %v\n%s", s.Addr, startTimeout, err, out)
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited: %v\n%s", s.Addr, waitErr, out)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.mu.Lock()
	s.cmd, s.out, s.done = cmd, out, done
	s.mu.Unlock()
	return nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Kill stops the server with SIGKILL, like a crash: no shutdown, clients
// see their connections reset. The address stays reserved for Restart.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Pause stops the server process with SIGSTOP: connections stay open and
// nothing answers, like a hung or partitioned Redis. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.tb.Fatalf("redistest: %v: server not running", sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: %v: %v", sig, err)
	}
}

// Restart kills the server (if it runs) and starts a fresh, empty one on
// the same address.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	var err error
	// The old process released the port when it died; a new bind can
	// still race with the kernel, so try for a little while.
	deadline := time.Now().Add(startTimeout)
	for {
		if err = s.start(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
}

// Stop kills the server and removes nothing else (t.TempDir does). It may
// be called more than once.
func (s *Server) Stop() { s.Kill() }

// Log returns what the current server process printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}
