package media

import "syscall"

// gatewaySysProcAttr: the kernel sends the child SIGTERM when the parent
// dies (even by SIGKILL). Its stdin reaching EOF stops it as well, on every
// system; this is the faster path on Linux.
func gatewaySysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
