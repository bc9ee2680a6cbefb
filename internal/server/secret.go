package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// SecretKey returns secret when set, or the key kept in data/secret.key,
// generating it (mode 0600) on first start.
func SecretKey(data, secret string, log *slog.Logger) (string, error) {
	if secret != "" {
		return secret, nil
	}
	path := filepath.Join(data, "secret.key")
	raw, err := os.ReadFile(path)
	if err == nil {
		// An empty HMAC key would let anyone sign a UserSig for any account.
		if key := strings.TrimSpace(string(raw)); key != "" {
			return key, nil
		}
		return "", fmt.Errorf("%s is empty (an interrupted first start?): delete it to generate a new key, or set --secret", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", err
	}
	if log != nil {
		log.Info("generated a UserSig secret key", "path", path)
	}
	return key, nil
}
