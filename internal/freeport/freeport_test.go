package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Addrs are distinct, free (a listener can take each) and below the
// kernel's ephemeral range.
func TestAddrs(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range Addrs(t, 50) {
		if seen[a] {
			t.Fatalf("%s given twice", a)
		}
		seen[a] = true
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(p); n < low || n >= high {
			t.Fatalf("port %d outside [%d, %d)", n, low, high)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		l.Close()
	}
}
