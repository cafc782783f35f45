//go:build linux

package limits

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelTuningScripts runs kernel-tuning/test.sh: the profile, apply and
// check assertions. It writes only to temporary fake /proc trees; against the
// real /proc it runs apply --dry-run and check, which only read.
func TestKernelTuningScripts(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "kernel-tuning", "test.sh"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, script).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "not ok") || strings.HasPrefix(line, "#") {
			t.Log(line)
		}
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	if !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatalf("no summary line:\n%s", out)
	}
}
