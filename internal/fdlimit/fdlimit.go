// Package fdlimit runs a server in a child process (a copy of the test
// binary) with a low RLIMIT_NOFILE and fills it with idle connections, for
// tests of what the server does when it runs out of file descriptors. Linux
// only (it counts /proc/{pid}/fd).
package fdlimit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Lower sets the process's descriptor limit to the descriptors open now plus
// headroom, and returns the limit.
func Lower(headroom int) (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	limit := len(ents) + headroom
	return limit, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(limit), Max: uint64(limit)})
}

// Ready prints the line the parent waits for, then serves until the parent
// closes stdin (it ends, or the test does).
func Ready(fields ...any) {
	fmt.Println(append([]any{"FDCHILD"}, fields...)...)
	io.Copy(io.Discard, os.Stdin)
}

// Child is the test binary running one test in child mode.
type Child struct {
	Fields []string // what the child passed to Ready
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    strings.Builder
}

// Start runs test (a test name) of this binary with env (NAME=value) added
// and waits until it calls Ready. The child is stopped when t ends.
func Start(t testing.TB, test, env string) *Child {
	t.Helper()
	c := &Child{cmd: exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")}
	c.cmd.Env = append(os.Environ(), env)
	stdin, _ := c.cmd.StdinPipe()
	stdout, _ := c.cmd.StdoutPipe()
	stderr, _ := c.cmd.StderrPipe()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); c.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.log.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
		}
	}()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == "FDCHILD" {
			c.Fields = f[1:]
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if c.Fields == nil {
		t.Fatalf("child %s never got ready; it logged:\n%s", test, c.Log())
	}
	return c
}

// Log is what the child wrote to stderr so far.
func (c *Child) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// Exhaust opens idle connections to addr until the child holds limit
// descriptors (the kernel completes more into the listen backlog than the
// child can accept) and returns them.
func (c *Child) Exhaust(t testing.TB, addr string, limit int) []net.Conn {
	t.Helper()
	var idle []net.Conn
	for range limit + 100 {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		idle = append(idle, conn)
	}
	dir := filepath.Join("/proc", fmt.Sprint(c.cmd.Process.Pid), "fd")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) >= limit {
			return idle
		}
		if time.Now().After(deadline) {
			t.Fatalf("child holds %d descriptors, never its limit %d", len(ents), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
