package media

import "syscall"

// gatewaySysProcAttr: the kernel sends the child SIGTERM when the parent
// dies (even by SIGKILL). Strictly, when the OS thread that started it ends,
// which Go does only for a goroutine that exits locked to its thread; such
// a spurious stop is a child death like any other, and restarted. The
// child's stdin reaching EOF stops it as well, on every system.
func gatewaySysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// selfExecutable is the running binary, even when its file was replaced or
// removed since it started.
func selfExecutable() string { return "/proc/self/exe" }
