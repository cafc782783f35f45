package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/stat times. Linux fixes USER_HZ at 100
// for user space on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcCPU returns the CPU time a process's threads have run, or 0 if it is
// gone. It sums the scheduler's own run time of every thread
// (/proc/<pid>/task/*/schedstat, nanoseconds), not utime+stime: on a
// kernel with tick-based accounting (this one: 250 Hz) those are samples
// of whoever was on the CPU at each tick, which over-charges processes that
// wake up on timers and run briefly, as idle gateways and load workers do.
// Softirq work done on a thread's behalf (loopback TCP) is in its run time.
func ProcCPU(pid int) time.Duration {
	run, _, _ := ProcSched(pid)
	return run
}

// ProcSched returns, summed over a process's threads, the three figures of
// /proc/<pid>/task/*/schedstat: the time run on a CPU, the time spent
// runnable but waiting on a run queue, and how many times a thread was put
// on a CPU (runs: each wake-up, and each return after a preemption). All
// are zero if the process is gone. Wait per run is how long, on average,
// work that became ready waited for a CPU: on a machine whose CPUs are
// shared by every process of a run, each hop of a message pays it.
func ProcSched(pid int) (run, wait time.Duration, runs int64) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, 0
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			continue
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		n, _ := strconv.ParseInt(f[2], 10, 64)
		run += time.Duration(r)
		wait += time.Duration(w)
		runs += n
	}
	return run, wait, runs
}

// MachineCPU returns the machine's busy and total CPU time since boot over
// every CPU. Busy is total minus idle and iowait: on a tickless kernel the
// idle figures are measured, not sampled, unlike the other /proc/stat
// fields.
func MachineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest is in user).
	var idle time.Duration
	for k, v := range f[1:min(len(f), 9)] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += time.Duration(n) * clockTick
		if k == 3 || k == 4 {
			idle += time.Duration(n) * clockTick
		}
	}
	return total - idle, total
}

// ProcAnon reads RssAnon of a process: its private anonymous memory (Go
// heap, stacks, runtime), without the file pages of its binary, which
// every process of the same binary shares with the others.
func ProcAnon(pid int) int64 { return procStatusKB(pid, "RssAnon:") }

func procStatusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// CPUGroups measures the CPU that named groups of processes use over an
// interval, beside the whole machine's. Start with Snapshot, end with
// Since.
type CPUGroups map[string][]int

// CPUSnapshot is the cumulative CPU of every group and of the machine.
type CPUSnapshot struct {
	at     time.Time
	groups map[string]time.Duration
	waits  map[string]time.Duration // run-queue wait
	runs   map[string]int64
	idle   time.Duration // the machine's idle and iowait since boot
}

// Snapshot reads the groups' and the machine's CPU now.
func (g CPUGroups) Snapshot() CPUSnapshot {
	s := CPUSnapshot{
		at:     time.Now(),
		groups: make(map[string]time.Duration, len(g)),
		waits:  make(map[string]time.Duration, len(g)),
		runs:   make(map[string]int64, len(g)),
	}
	for name, pids := range g {
		for _, pid := range pids {
			run, wait, runs := ProcSched(pid)
			s.groups[name] += run
			s.waits[name] += wait
			s.runs[name] += runs
		}
	}
	busy, total := MachineCPU()
	s.idle = total - busy
	return s
}

// CPUUse is what an interval cost: per group and for the machine, in
// percent of one CPU (200 is both CPUs of a 2-CPU machine, busy), and the
// machine's busy CPU time.
type CPUUse struct {
	Percent     map[string]float64  `json:"percent_of_one_cpu"`
	Sched       map[string]SchedUse `json:"sched"`
	MachineBusy time.Duration       `json:"-"`
	Seconds     float64             `json:"seconds"`
}

// SchedUse is how a group's threads got the CPU over an interval: how often
// one was put on a CPU, and how long each waited for it on average
// (ProcSched).
type SchedUse struct {
	RunsPerSecond float64 `json:"runs_per_second"`
	WaitPerRunUS  float64 `json:"run_queue_wait_us_per_run"`
}

// Since is the CPU used between s and now by each group ("machine" is every
// process and the kernel; "other" is the machine minus the groups).
func (g CPUGroups) Since(s CPUSnapshot) CPUUse {
	now := g.Snapshot()
	wall := now.at.Sub(s.at)
	u := CPUUse{Percent: make(map[string]float64, len(g)+2), Sched: make(map[string]SchedUse, len(g)), Seconds: wall.Seconds()}
	if wall <= 0 {
		return u
	}
	var ours time.Duration
	for name := range g {
		d := now.groups[name] - s.groups[name]
		ours += d
		u.Percent[name] = 100 * float64(d) / float64(wall)
		// A thread that exited between the snapshots takes its counts
		// with it; clamp rather than report a negative rate.
		runs := max(now.runs[name]-s.runs[name], 0)
		su := SchedUse{RunsPerSecond: float64(runs) / wall.Seconds()}
		if w := now.waits[name] - s.waits[name]; runs > 0 && w > 0 {
			su.WaitPerRunUS = float64(w) / float64(runs) / 1e3
		}
		u.Sched[name] = su
	}
	// The sampled busy fields lag; wall time x CPUs minus measured idle
	// does not.
	u.MachineBusy = time.Duration(runtime.NumCPU())*wall - (now.idle - s.idle)
	u.Percent["machine"] = 100 * float64(u.MachineBusy) / float64(wall)
	u.Percent["other"] = 100 * float64(u.MachineBusy-ours) / float64(wall)
	return u
}

// TopologyCPU groups a run's processes: "gateways", "core" (every chatd
// process that holds no connections: cores, broker, store), "redis" and
// "clients" (the load workers).
func TopologyCPU(cl *Cluster, workers []*Worker) CPUGroups {
	g := CPUGroups{}
	for _, p := range cl.Gateways {
		g["gateways"] = append(g["gateways"], p.PID())
	}
	for _, p := range cl.Procs() {
		if !isGateway(cl, p) {
			g["core"] = append(g["core"], p.PID())
		}
	}
	if pid := cl.RedisPID(); pid != 0 {
		g["redis"] = []int{pid}
	}
	for _, w := range workers {
		g["clients"] = append(g["clients"], w.PID())
	}
	return g
}

func isGateway(cl *Cluster, p *Proc) bool {
	for _, gw := range cl.Gateways {
		if gw == p {
			return true
		}
	}
	return false
}
