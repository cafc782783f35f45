// Package sysmon keeps the Go runtime's monitor thread on its steady
// 10 ms period, out of the deep sleep that every system call must then
// wake it from.
//
// The runtime's sysmon thread parks in a deep sleep whenever every P is
// idle, and the next goroutine to enter a system call wakes it (a futex
// wake: a context switch on another thread). Awake, it polls every 20 µs
// and only backs off towards 10 ms after 1 ms of finding nothing to do.
// A chatd or chatbench process goes idle and busy again hundreds of times
// a second (a gateway on one P handling socket events), so its sysmon
// cycles through that all the time: ~1,200 context switches a second and
// ~2.7% of a CPU per gateway process on the benchmark VM, where a context
// switch is a hypercall (docs/benchmarks.md, "sysmon").
//
// The runtime keeps sysmon out of deep sleep when GODEBUG's schedtrace is
// set, so that it can print on time. schedtrace is read from the
// environment once, at start, so the process re-executes itself with it
// set. Its value is the largest the runtime accepts, 2^31-1 ms (24.8
// days): the trace line is printed when the monotonic clock (time since
// boot) passes a multiple of it, so at most one short line to stderr per
// 24.8 days of uptime. One more effect: a fatal runtime error prints the
// scheduler's state before the goroutine dump.
package sysmon

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Setting is what Env adds to GODEBUG.
const Setting = "schedtrace=2147483647"

// EnvVar turns the setting off when false. It is chatd's
// --sysmon-steady flag read from the environment (CHATD_ + the flag's
// name), so chatbench, whose processes inherit its environment, reads it
// the same way: as a Go flag reads a bool.
const EnvVar = "CHATD_SYSMON_STEADY"

// Wanted reports whether getenv(EnvVar) leaves the setting on: unset or
// not a bool (chatd refuses that value at its flag parsing), it does.
func Wanted(getenv func(string) string) bool {
	on, err := strconv.ParseBool(getenv(EnvVar))
	return on || err != nil
}

// Env returns env with Setting added to its GODEBUG, and whether it
// changed anything. It changes nothing when GODEBUG already names
// schedtrace: the operator's value wins, and a re-executed process finds
// its own setting there and does not execute again.
func Env(env []string) ([]string, bool) {
	// The runtime reads the first GODEBUG entry, as os.Getenv does.
	for i, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(v, ",") {
			if strings.HasPrefix(strings.TrimSpace(f), "schedtrace=") {
				return env, false
			}
		}
		out := slices.Clone(env)
		if v == "" {
			out[i] = "GODEBUG=" + Setting
		} else {
			out[i] = kv + "," + Setting
		}
		return out, true
	}
	return append(slices.Clone(env), "GODEBUG="+Setting), true
}

// Steady re-executes the running binary, with the same arguments, under
// Env(os.Environ()), unless that changes nothing. It returns only when no
// exec was needed (nil) or the exec failed (the process then goes on with
// sysmon as the runtime has it). Call it first thing in main, before the
// process opens files or listeners: the exec replaces the process image
// and keeps its pid and open descriptors.
func Steady() error {
	env, changed := Env(os.Environ())
	if !changed {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, env)
}
