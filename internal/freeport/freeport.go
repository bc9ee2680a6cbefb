// Package freeport picks loopback ports for listeners that must be named
// before they are opened: a test cluster's route listeners, which every
// node's route list names, and the listeners of processes a test starts.
//
// A port from listening on :0 and closing is in the kernel's ephemeral
// range (32768–60999 on Linux), from which every outgoing connection of
// every test process running at the same time also takes its local port:
// between the close and the node's own listen another connection took it
// now and then ("bind: address already in use", seen in CI). These ports
// come from below that range, where only listeners that ask for a port by
// number go, at random, checked free, and never the same twice in one
// process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// The range ports are picked from: below Linux's default ephemeral range.
const (
	low  = 20000
	high = 32000
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Addr returns "127.0.0.1:PORT" for a port nothing listens on now.
func Addr(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := low + rand.IntN(high-low)
		if given[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return addr
	}
	t.Fatalf("no free port between %d and %d", low, high)
	return ""
}

// Addrs returns n addresses of Addr.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = Addr(t)
	}
	return out
}
