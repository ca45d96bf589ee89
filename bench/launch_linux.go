package bench

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill the worker when the coordinator
// dies, so that no worker outlives a killed bench.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
