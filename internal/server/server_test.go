package server_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/duet-im/duet/internal/server"
)

// A New that fails part-way (here: the MQTT port is taken, found after the
// store and the command layer were built) must undo what it built: the
// error names the listener and its flag, and the data directory is free
// for the next start.
func TestFailedNewReleasesDataDirectory(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := server.Config{
		Data: t.TempDir(), Secret: "server-test", MQTT: busy.Addr().String(), SDKAppID: 1400000000,
		NoMedia: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if _, err := server.New(cfg); err == nil || !strings.Contains(err.Error(), "--mqtt") {
		t.Fatalf("New on a busy port: %v, want the MQTT listener's --mqtt named", err)
	}
	cfg.MQTT = "127.0.0.1:0"
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("New after a failed New on the same data directory: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if srv.Addr("tcp") == "" || srv.Store() == nil || srv.Service() == nil || srv.Pusher() == nil {
		t.Fatalf("started server lacks a part: mqtt %q", srv.Addr("tcp"))
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed, the directory is free again.
	again, err := server.New(cfg)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	again.Close()
}
