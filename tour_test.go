package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/logcapture"
	"github.com/duet-im/duet/internal/wait"
)

// tourBlocks returns the shell blocks of README.md's tour, in order.
func tourBlocks(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(startDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, tour, ok := strings.Cut(string(raw), "## A two-minute tour")
	tour, _, ok2 := strings.Cut(tour, "\n## ")
	if !ok || !ok2 {
		t.Fatal("README.md has no tour section")
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(tour, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestReadmeTour runs the README's tour as written, twice in a row, in a
// scratch directory: the server block, then the UserSig, subscriber and
// request blocks. Only the ports are moved off the defaults (so that the
// test never meets a server a developer is running), `go run .` is the
// binary the tests built, and the subscriber runs in the background with a
// time limit. Both runs must deliver the message and print an OK reply.
func TestReadmeTour(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary and mosquitto's clients")
	}
	for _, tool := range []string{"mosquitto_sub", "mosquitto_rr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: make deps installs mosquitto-clients", tool)
		}
	}
	blocks := tourBlocks(t)
	if len(blocks) != 4 || !strings.HasPrefix(blocks[0], "go run . --auto-accounts &") ||
		!strings.Contains(blocks[1], "usersig") || !strings.HasPrefix(blocks[2], "mosquitto_sub") ||
		!strings.HasPrefix(blocks[3], "mosquitto_rr") {
		t.Fatalf("the tour's blocks changed; adapt this test:\n%q", blocks)
	}
	dir := t.TempDir()
	bin := buildDuet(t)
	mqttAddr, httpAddr, wsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, mqttPort, _ := strings.Cut(mqttAddr, ":")
	ports := strings.NewReplacer("-p 1883", "-p "+mqttPort)

	// Block 0: the server, started where the tour's commands run.
	server := exec.Command(bin, "--auto-accounts", "--mqtt", mqttAddr, "--http", httpAddr, "--ws", wsAddr)
	server.Dir = dir
	logs := &logcapture.Buffer{}
	server.Stdout, server.Stderr = logs, logs
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { server.Process.Signal(syscall.SIGTERM); server.Wait() }()
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "duet started") {
			return fmt.Errorf("server not started:\n%s", logs)
		}
		return nil
	})
	// Block 1 builds ./duet with `go build -o duet .`: the binary is built.
	if err := os.Link(bin, filepath.Join(dir, "duet")); err != nil {
		raw, _ := os.ReadFile(bin)
		if err := os.WriteFile(filepath.Join(dir, "duet"), raw, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sigs := strings.Replace(blocks[1], "go build -o duet .\n", "", 1)

	for run := 1; run <= 2; run++ {
		sub := filepath.Join(dir, fmt.Sprintf("sub%d.out", run))
		script := fmt.Sprintf("set -e\n%s\ntimeout 30 %s > %s 2>&1 &\necho $! > %s.pid\n", sigs, strings.TrimSpace(ports.Replace(blocks[2])), sub, sub)
		// The tour sends once the subscriber is connected: it waits for
		// sync_complete, as a reader would.
		script += fmt.Sprintf("for i in $(seq 300); do grep -q sync_complete %s && break; sleep 0.1; done\n", sub)
		script += ports.Replace(blocks[3])
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run %d: %v\n%s\nserver log:\n%s", run, err, out, logs)
		}
		if !strings.Contains(string(out), `"ActionStatus":"OK","ErrorCode":0`) {
			t.Fatalf("run %d: the request's reply is not OK:\n%s", run, out)
		}
		want := fmt.Sprintf(`{"Seq":%d,"Event":"msg","From_Account":"alice"`, run)
		wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
			got, _ := os.ReadFile(sub)
			if !strings.Contains(string(got), want) || !strings.Contains(string(got), "hi bob") {
				return fmt.Errorf("run %d: bob's phone printed:\n%s", run, got)
			}
			return nil
		})
		if raw, err := os.ReadFile(sub + ".pid"); err == nil {
			exec.Command("kill", strings.TrimSpace(string(raw))).Run() // the tour's Ctrl-C
		}
	}
}
