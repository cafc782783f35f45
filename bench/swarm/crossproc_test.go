package swarm_test

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/bench"
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
// It reports each side's CPU per round trip (the run time of all of a
// process's threads, start-up excluded), over loopback TCP and over a
// unix-domain socket. docs/benchmarks.md uses it to tell the cost of the TCP stack
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
			roundTrip := func() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
					b.Fatal(err)
				}
			}
			roundTrip() // the echo process has started and connected
			self0, echo0 := bench.ProcCPU(os.Getpid()), bench.ProcCPU(cmd.Process.Pid)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
			b.StopTimer()
			self1, echo1 := bench.ProcCPU(os.Getpid()), bench.ProcCPU(cmd.Process.Pid)
			c.Close()
			if err := cmd.Wait(); err != nil {
				b.Fatalf("echo process: %v", err)
			}
			n := float64(b.N)
			b.ReportMetric(float64(self1-self0)/1e3/n, "self-cpu-µs/op")
			b.ReportMetric(float64(echo1-echo0)/1e3/n, "echo-cpu-µs/op")
		})
	}
}
