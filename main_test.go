package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// parseConfig is a command's configuration from args (with the YAML file
// and DUET_ environment they name), as loadConfig and the flag set make it.
func parseConfig(t *testing.T, args ...string) *Config {
	t.Helper()
	cfg, fl, err := loadConfig("test", args)
	if err != nil {
		t.Fatal(err)
	}
	if err := fl.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A flag beats the environment, which beats the YAML file, which beats the
// default.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "duet.yaml")
	if err := os.WriteFile(file, []byte("mqtt: 127.0.0.1:1111\nws: 127.0.0.1:2222\nhttp: 127.0.0.1:3333\nwindow: 7\nmax-lifetime: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DUET_WS", "127.0.0.1:4444")
	t.Setenv("DUET_HTTP", "127.0.0.1:5555")
	cfg := parseConfig(t, "--config", file, "--http", "127.0.0.1:6666")
	for _, c := range []struct{ name, got, want string }{
		{"file", cfg.MQTT, "127.0.0.1:1111"},
		{"env over file", cfg.WS, "127.0.0.1:4444"},
		{"flag over env", cfg.HTTP, "127.0.0.1:6666"},
		{"default", cfg.Admins, "administrator"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
	if cfg.Window != 7 || cfg.MaxLifeTime != time.Hour {
		t.Errorf("window %d, lifetime %v", cfg.Window, cfg.MaxLifeTime)
	}
	t.Setenv("DUET_WINDOW", "many")
	if _, _, err := loadConfig("test", nil); err == nil {
		t.Error("a malformed DUET_WINDOW was accepted")
	}
}

// A start that fails part-way (here: the HTTP port is taken) releases what
// it had started, so the same data directory starts cleanly afterwards.
func TestStartFailureReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0", "", busy.Addr().String()
	cfg.Secret = "start-failure"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := start(cfg, log); err == nil {
		t.Fatal("start succeeded on a taken HTTP port")
	}
	cfg.HTTP = "127.0.0.1:0"
	srv, err := start(cfg, log)
	if err != nil {
		t.Fatalf("second start on the same data directory: %v", err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}
