//go:build !linux

package bench

import "os/exec"

// setDeathSignal does nothing here: a worker stops when its stdin ends.
func setDeathSignal(*exec.Cmd) {}
