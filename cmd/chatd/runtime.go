package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
)

// Runtime defaults for a process that runs the core role, measured in
// docs/benchmarks.md ("GC settings of the core"):
//
//   - GOGC 400: the core's allocation is Kafka request and response churn
//     (kgo and kfake) over a small live heap, so Go's default (a collection
//     every time the heap doubles) ran a cycle every 0.6 s at 10,000 msg/s.
//     Each cycle's mark phase stalled the write path for 20-50 ms. Four
//     times fewer cycles for a heap about 2.5 times larger.
//   - GOMAXPROCS at least 4: during marking the GC takes a quarter of the
//     Ps for itself, rounded to whole Ps. With 2 Ps that is one, half the
//     CPU, for the whole mark phase; with 4 it is a quarter, as intended.
//     Machines with 4 or more CPUs are left alone.
//
// A gateway-only process keeps Go's defaults: its heap is mostly idle
// connections, and GOGC 400 would multiply its memory per connection.
const (
	coreGOGC      = 400
	coreMinProcs  = 4
	defaultGOGC   = 100
	gogcEnv       = "GOGC"
	gomaxprocsEnv = "GOMAXPROCS"
)

// runtimeSettings decides GOGC and GOMAXPROCS. flagGOGC and flagProcs are
// the --gogc and --gomaxprocs flags (0: automatic); an environment variable
// that is set wins over the automatic choice but not over a flag. It
// returns 0 for a setting to leave as the runtime has it.
func runtimeSettings(roles []string, flagGOGC, flagProcs int, getenv func(string) string, numCPU int) (gogc, procs int) {
	core := len(roles) == 0 || slices.Contains(roles, "core")
	switch {
	case flagGOGC != 0:
		gogc = flagGOGC
	case getenv(gogcEnv) != "":
	case core:
		gogc = coreGOGC
	}
	switch {
	case flagProcs > 0:
		procs = flagProcs
	case getenv(gomaxprocsEnv) != "":
	case core && numCPU < coreMinProcs:
		procs = coreMinProcs
	}
	return gogc, procs
}

// applyRuntime applies runtimeSettings and describes the result for the
// startup log.
func applyRuntime(gogc, procs int) string {
	if gogc != 0 {
		debug.SetGCPercent(gogc) // negative: off, like GOGC=off
	}
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	cur := debug.SetGCPercent(defaultGOGC)
	debug.SetGCPercent(cur)
	return fmt.Sprintf("gogc=%d gomaxprocs=%d", cur, runtime.GOMAXPROCS(0))
}
