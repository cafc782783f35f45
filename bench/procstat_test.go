package bench

import (
	"os"
	"testing"
	"time"
)

// TestProcCPU: the scheduler's run time of this process grows with work
// it does, the machine's busy time stays within its total, and CPUGroups
// attributes the work to the group holding this process.
func TestProcCPU(t *testing.T) {
	pid := os.Getpid()
	g := CPUGroups{"self": {pid}, "gone": {1 << 30}}
	start := g.Snapshot()
	before := ProcCPU(pid)
	spinUntil := time.Now().Add(50 * time.Millisecond)
	x := 0
	for time.Now().Before(spinUntil) {
		x++
	}
	after := ProcCPU(pid)
	if after-before < 10*time.Millisecond {
		t.Fatalf("50 ms of spinning (%d loops) counted %v of CPU", x, after-before)
	}
	if ProcCPU(1<<30) != 0 {
		t.Fatal("a missing process has CPU time")
	}
	busy, total := MachineCPU()
	if busy <= 0 || busy > total {
		t.Fatalf("machine busy %v of %v", busy, total)
	}
	use := g.Since(start)
	if use.Percent["self"] <= 0 || use.Percent["gone"] != 0 || use.Seconds <= 0 {
		t.Fatalf("use %+v", use)
	}
	if _, ok := use.Percent["machine"]; !ok {
		t.Fatalf("no machine figure in %+v", use.Percent)
	}
	if ProcAnon(pid) <= 0 {
		t.Fatal("RssAnon of this process is 0")
	}
}
