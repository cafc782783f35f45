package sysmon

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	cases := []struct {
		name    string
		in      []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"A=1"}, []string{"A=1", "GODEBUG=" + Setting}, true},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + Setting, "A=1"}, true},
		{"other settings kept", []string{"GODEBUG=gctrace=1"}, []string{"GODEBUG=gctrace=1," + Setting}, true},
		{"operator's schedtrace wins", []string{"GODEBUG=gctrace=1,schedtrace=1000"}, []string{"GODEBUG=gctrace=1,schedtrace=1000"}, false},
		{"already set by a previous exec", []string{"GODEBUG=" + Setting}, []string{"GODEBUG=" + Setting}, false},
		{"only the first GODEBUG counts", []string{"GODEBUG=x=1", "GODEBUG=schedtrace=5"}, []string{"GODEBUG=x=1," + Setting, "GODEBUG=schedtrace=5"}, true},
	}
	for _, c := range cases {
		in := slices.Clone(c.in)
		got, changed := Env(in)
		if changed != c.changed || !slices.Equal(got, c.want) {
			t.Errorf("%s: Env(%q) = %q, %v; want %q, %v", c.name, c.in, got, changed, c.want, c.changed)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("%s: Env modified its argument: %q", c.name, in)
		}
	}
}

// TestSteadyReexecutes runs this test binary as a child that calls Steady:
// the child must come back (re-executed, same arguments) with the setting
// in its environment, exactly once.
func TestSteadyReexecutes(t *testing.T) {
	if os.Getenv("SYSMON_TEST_CHILD") == "1" {
		before := os.Getenv("GODEBUG")
		if err := Steady(); err != nil {
			t.Fatalf("Steady: %v", err)
		}
		// Reached only when no exec was needed: after the re-exec.
		os.Stdout.WriteString("GODEBUG=" + before + "\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSteadyReexecutes$", "-test.v")
	cmd.Env = append(os.Environ(), "SYSMON_TEST_CHILD=1", "GODEBUG=gctrace=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "GODEBUG=gctrace=0,"+Setting+"\n") {
		t.Fatalf("child did not run with the setting:\n%s", out)
	}
	if n := strings.Count(string(out), "GODEBUG="); n != 1 {
		t.Fatalf("child printed %d lines, want 1 (one exec, then none):\n%s", n, out)
	}
}

// TestWanted: the environment variable reads as chatd's bool flag does.
func TestWanted(t *testing.T) {
	for v, want := range map[string]bool{"": true, "true": true, "1": true, "false": false, "0": false, "F": false, "FALSE": false, "nonsense": true} {
		if got := Wanted(func(k string) string {
			if k != EnvVar {
				t.Fatalf("read %s", k)
			}
			return v
		}); got != want {
			t.Errorf("%s=%q: Wanted = %v, want %v", EnvVar, v, got, want)
		}
	}
}
