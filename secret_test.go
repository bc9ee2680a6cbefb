package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// A secret.key that is empty (a first start that crashed mid-write, a disk
// that was full) must stop the server: an empty HMAC key lets anyone make
// a valid UserSig for any account, administrator included.
func TestEmptySecretFileIsRefused(t *testing.T) {
	for _, content := range []string{"", "\n", "  \t\n"} {
		cfg := defaultConfig()
		cfg.Data = t.TempDir()
		if err := os.WriteFile(filepath.Join(cfg.Data, "secret.key"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := cfg.secretKey(slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			t.Errorf("secret.key %q gave key %q and no error", content, key)
		}
	}
	cfg := defaultConfig()
	cfg.Data = t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := cfg.secretKey(log)
	if err != nil || len(first) != 64 {
		t.Fatalf("generated key %q, %v", first, err)
	}
	if again, err := cfg.secretKey(log); err != nil || again != first {
		t.Fatalf("second read %q, %v; want %q", again, err, first)
	}
}
