package redistest

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill redis-server if the test process dies
// without running its cleanups (a panic, a timeout, SIGKILL), so no server
// outlives its test binary.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
