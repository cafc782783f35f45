package bench

import (
	"os"
	"runtime"
	"sync"
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

// TestProcSchedWaits: with more spinning threads than CPUs, one of them is
// always runnable but off a CPU, so the group's run-queue wait and runs
// grow; a process that is gone reports nothing.
func TestProcSchedWaits(t *testing.T) {
	pid := os.Getpid()
	g := CPUGroups{"self": {pid}, "gone": {1 << 30}}
	n := runtime.NumCPU() + 1
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n + 1))
	_, wait0, runs0 := ProcSched(pid)
	start := g.Snapshot()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
			}
		}()
	}
	wg.Wait()
	use := g.Since(start)
	_, wait1, runs1 := ProcSched(pid)
	if wait1 <= wait0 || runs1 <= runs0 {
		t.Fatalf("%d threads spinning on %d CPUs: run-queue wait %v -> %v, runs %d -> %d", n, runtime.NumCPU(), wait0, wait1, runs0, runs1)
	}
	if s := use.Sched["self"]; s.RunsPerSecond <= 0 || s.WaitPerRunUS <= 0 {
		t.Fatalf("self: %+v", s)
	}
	if s := use.Sched["gone"]; s != (SchedUse{}) {
		t.Fatalf("a missing process: %+v", s)
	}
	if r, w, n := ProcSched(1 << 30); r != 0 || w != 0 || n != 0 {
		t.Fatalf("a missing process: %v %v %d", r, w, n)
	}
}
