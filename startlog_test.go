package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/internal/wait"
)

// TestServeWritesOnlyItsOwnLog runs `duet serve` as a user does and reads
// everything it prints from start, through a device's connect and
// disconnect, to shut-down (issue 16: "no stray third-party lines at
// start", no empty-message warnings): every line is one of Duet's log
// lines, with a message, and mochi's start-up steps stay at debug.
func TestServeWritesOnlyItsOwnLog(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildDuet(t)
	dir := t.TempDir()
	mqttAddr, httpAddr, wsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "serve", "--data", filepath.Join(dir, "data"), "--auto-accounts",
		"--mqtt", mqttAddr, "--http", httpAddr, "--ws", wsAddr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})

	sig, err := exec.Command(bin, "usersig", "--data", filepath.Join(dir, "data"), "--user", "alice").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("alice:phone").
		SetUsername("alice").SetPassword(strings.TrimSpace(string(sig))).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	c.Disconnect(100)

	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGINT")
	}

	for i, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		where := fmt.Sprintf("line %d %q", i+1, line)
		switch {
		case !strings.HasPrefix(line, "time=") || !strings.Contains(line, " level="):
			t.Errorf("%s: not one of Duet's log lines", where)
		case strings.Contains(line, ` msg="" `) || strings.Contains(line, " msg= "):
			t.Errorf("%s: empty message", where)
		case strings.Contains(line, "component=mqtt") && !strings.Contains(line, "level=DEBUG"):
			t.Errorf("%s: mochi's chatter above debug", where)
		}
	}
}
