package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// The embedded S3 gateway is a child process of duet (media/gateway.go). It
// stops with the server however the server ends: a normal stop (SIGTERM)
// closes it, and a SIGKILLed server, which runs no code at all, leaves no
// orphan (the child gets the parent-death signal and its stdin reaches EOF).
// Its credentials never appear on its command line, which ps shows.
func TestGatewayChildEndsWithServer(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to find the child")
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			server, logs := duetServe(t, "--data", dir, "--secret", "s")
			child := 0
			wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
				child = gatewayChildOf(server.Process.Pid)
				if child == 0 {
					return fmt.Errorf("no s3-gateway child of pid %d", server.Process.Pid)
				}
				return nil
			})
			var keys struct{ AccessKey, SecretKey string }
			raw, _ := os.ReadFile(filepath.Join(dir, "s3", "s3.key"))
			if err := json.Unmarshal(raw, &keys); err != nil || keys.SecretKey == "" {
				t.Fatalf("s3.key: %v %q", err, raw)
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
			if strings.Contains(string(cmdline), keys.SecretKey) || strings.Contains(string(cmdline), keys.AccessKey) {
				t.Errorf("the gateway's command line shows its credentials: %q", cmdline)
			}
			// The child's output goes to the server's log at debug level:
			// at the default level, none of versitygw's notices shows.
			if out := logs.String(); strings.Contains(out, "No IAM service configured") {
				t.Errorf("the gateway's output reached the server's log at info level:\n%s", out)
			}
			server.Process.Signal(sig)
			server.Wait()
			wait.For(t, 15*time.Second, 20*time.Millisecond, func() error {
				if alive(child) {
					return fmt.Errorf("the gateway (pid %d) outlived the server stopped by %s", child, sig)
				}
				return nil
			})
		})
	}
}

// gatewayChildOf is the pid of parent's s3-gateway child, or 0.
func gatewayChildOf(parent int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := procStat(pid); ppid != parent {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if args := strings.Split(string(cmdline), "\x00"); len(args) > 1 && args[1] == "s3-gateway" {
			return pid
		}
	}
	return 0
}

// procStat is a process's parent pid and state from /proc/PID/stat (state 0
// when there is no such process).
func procStat(pid int) (ppid int, state byte) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
	i := strings.LastIndexByte(string(raw), ')')
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 2 {
		return 0, 0
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0][0]
}

// alive: the process exists and is not a zombie (a container's init may
// not reap the orphans it adopts).
func alive(pid int) bool {
	_, state := procStat(pid)
	return state != 0 && state != 'Z' && state != 'X'
}

// Built with the tag nos3gateway, duet leaves the embedded gateway (and most
// of its third-party packages, docs/media.md) out, and says what to set
// instead when no S3 endpoint is given.
func TestBuildWithoutGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary again")
	}
	bin := filepath.Join(t.TempDir(), "duet")
	if out, err := exec.Command("go", "build", "-tags", "nos3gateway", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A binary that started would serve until killed: bound the wait.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--data", filepath.Join(t.TempDir(), "data"), "--mqtt", "127.0.0.1:0", "--ws", "", "--http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "DUET_S3_ENDPOINT=")
	out, err := cmd.CombinedOutput()
	want := "built without the embedded S3 gateway (tag nos3gateway): set --s3-endpoint (DUET_S3_ENDPOINT)"
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("serve: %v\n%s\nwant %q", err, out, want)
	}
}
