package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/cmd/internal/sysmon"
)

func TestRuntimeSettings(t *testing.T) {
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	none := env(nil)
	for _, tc := range []struct {
		name            string
		roles           []string
		flagGOGC, flagP int
		getenv          func(string) string
		cpus            int
		wantGOGC, wantP int
	}{
		{"all roles on 2 CPUs", nil, 0, 0, none, 2, 400, 4},
		{"core on 2 CPUs", []string{"core"}, 0, 0, none, 2, 400, 4},
		{"core on 8 CPUs keeps its Ps", []string{"core"}, 0, 0, none, 8, 400, 0},
		{"gateway only keeps Go's defaults", []string{"gateway"}, 0, 0, none, 2, 0, 0},
		{"gateway and core", []string{"gateway", "core"}, 0, 0, none, 2, 400, 4},
		{"environment wins over automatic", nil, 0, 0, env(map[string]string{"GOGC": "50", "GOMAXPROCS": "2"}), 2, 0, 0},
		{"flags win over environment", nil, 150, 3, env(map[string]string{"GOGC": "50", "GOMAXPROCS": "2"}), 2, 150, 3},
		{"flags on a gateway", []string{"gateway"}, 25, 1, none, 2, 25, 1},
		{"gc off", []string{"gateway"}, -1, 0, none, 2, -1, 0},
	} {
		g, p := runtimeSettings(tc.roles, tc.flagGOGC, tc.flagP, tc.getenv, tc.cpus)
		if g != tc.wantGOGC || p != tc.wantP {
			t.Errorf("%s: got gogc=%d procs=%d, want %d %d", tc.name, g, p, tc.wantGOGC, tc.wantP)
		}
	}
}

// TestSysmonSteady: a started chatd runs with the steady-sysmon setting in
// its environment (it re-executed itself, keeping its pid and stdout), and
// CHATD_SYSMON_STEADY=false leaves the environment alone.
func TestSysmonSteady(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want bool
	}{
		{[]string{"GODEBUG=gctrace=0"}, true},
		{[]string{"GODEBUG=gctrace=0", "CHATD_SYSMON_STEADY=false"}, false},
	} {
		s := newServer(t)
		s.env = c.env
		s.start()
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		var godebug string
		for kv := range strings.SplitSeq(string(environ), "\x00") {
			if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
				godebug = v
				break
			}
		}
		want := "gctrace=0"
		if c.want {
			want += "," + sysmon.Setting
		}
		if godebug != want {
			t.Errorf("env %q: chatd runs with GODEBUG=%q, want %q", c.env, godebug, want)
		}
		s.kill()
	}
}
