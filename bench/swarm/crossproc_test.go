package swarm

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoEnv, when set in a test binary's environment as "network address",
// makes it dial that address, echo everything it reads, and exit at EOF
// instead of running tests (TestMain).
const echoEnv = "SWARM_PINGPONG_ECHO"

func TestMain(m *testing.M) {
	if v := os.Getenv(echoEnv); v != "" {
		os.Exit(echo(v))
	}
	os.Exit(m.Run())
}

func echo(spec string) int {
	network, addr, _ := strings.Cut(spec, " ")
	c, err := net.Dial(network, addr)
	if err != nil {
		return 2
	}
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return 3
	}
	return 0
}

// BenchmarkCrossProcessPingPong is what one message and its reply cost
// between two processes that sleep while they wait, as every process of a
// chatd run does: 300 bytes written, echoed by a child process, read back.
// It reports each side's CPU per round trip (getrusage: this process, and
// the child after it exits), over loopback TCP and over a unix-domain
// socket. docs/benchmarks.md uses it to tell the cost of the TCP stack
// from the cost of waking the other side.
func BenchmarkCrossProcessPingPong(b *testing.B) {
	for _, network := range []string{"tcp", "unix"} {
		b.Run(network, func(b *testing.B) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(b.TempDir(), "echo.sock")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), echoEnv+"="+network+" "+ln.Addr().String(), "GOMAXPROCS=1")
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			c, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			msg, buf := make([]byte, 300), make([]byte, 4096)
			var self0, child0 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
			syscall.Getrusage(syscall.RUSAGE_CHILDREN, &child0)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var self1, child1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
			c.Close()
			if err := cmd.Wait(); err != nil {
				b.Fatalf("echo process: %v", err)
			}
			syscall.Getrusage(syscall.RUSAGE_CHILDREN, &child1)
			n := float64(b.N)
			b.ReportMetric(float64(cpuOf(&self1)-cpuOf(&self0))/1e3/n, "self-cpu-µs/op")
			b.ReportMetric(float64(cpuOf(&child1)-cpuOf(&child0))/1e3/n, "echo-cpu-µs/op")
		})
	}
}

func cpuOf(r *syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
