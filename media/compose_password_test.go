package media_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestComposeNeedsMinioPassword: docker-compose.yml has no default MinIO
// password; without MINIO_ROOT_PASSWORD (in the environment or .env)
// compose refuses to start and says what to set (issue 16). With it, MinIO
// and Duet get that password and no other.
func TestComposeNeedsMinioPassword(t *testing.T) {
	bin, file := composeFile(t)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "change-me") {
		t.Error("docker-compose.yml still has a default password")
	}
	// An env file of our own, so that a developer's .env does not count.
	config := func(envFile string, env ...string) (string, error) {
		cmd := exec.Command(bin, "-f", file, "--env-file", envFile, "config")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "MINIO_ROOT_PASSWORD=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.env")
	os.WriteFile(empty, nil, 0o600)

	out, err := config(empty)
	if err == nil {
		t.Fatalf("compose accepted the file without MINIO_ROOT_PASSWORD:\n%s", out)
	}
	if !strings.Contains(out, "set MINIO_ROOT_PASSWORD in .env") {
		t.Errorf("the refusal does not say what to set:\n%s", out)
	}

	// Set in an env file, as docs/media.md says.
	withPassword := filepath.Join(dir, "with.env")
	os.WriteFile(withPassword, []byte("MINIO_ROOT_PASSWORD=3b1f0c9e8d7a6b5c4d3e2f1a\n"), 0o600)
	out, err = config(withPassword)
	if err != nil {
		t.Fatalf("compose refused the file with MINIO_ROOT_PASSWORD set: %v\n%s", err, out)
	}
	if n := strings.Count(out, "3b1f0c9e8d7a6b5c4d3e2f1a"); n != 3 {
		t.Errorf("the password reaches %d places, want 3 (minio, minio-init, duet's S3 secret key):\n%s", n, out)
	}
}
