//go:build !linux

package media

import "syscall"

// gatewaySysProcAttr: no parent-death signal outside Linux; the child stops
// when its stdin reaches EOF, which also happens when the parent dies.
func gatewaySysProcAttr() *syscall.SysProcAttr { return nil }

// selfExecutable: "" runs os.Executable()'s path.
func selfExecutable() string { return "" }
