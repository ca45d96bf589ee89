//go:build !linux

package redistest

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; the test's
// cleanup kills the server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
