package media_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestComposeFile validates docker-compose.yml with Debian's docker-compose
// (no container engine runs here: `config` parses, checks the schema and
// interpolates without one) and checks what the deployment needs of it.
func TestComposeFile(t *testing.T) {
	bin, file := composeFile(t)
	cmd := exec.Command(bin, "-f", file, "config")
	// The file has no default MinIO password (compose_password_test.go).
	cmd.Env = append(os.Environ(), "MINIO_ROOT_PASSWORD=validation-only")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var cf struct {
		Services map[string]struct {
			Image       string
			Build       any
			Ports       []struct{ Published, Target int }
			Volumes     []any
			Healthcheck map[string]any
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
			Environment map[string]string
		}
		Volumes map[string]any
	}
	if err := yaml.Unmarshal(out, &cf); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	duet, minio := cf.Services["duet"], cf.Services["minio"]
	if duet.Build == nil {
		t.Error("duet is not built from the Dockerfile")
	}
	for _, p := range []int{1883, 8083, 8080} {
		if !slices.ContainsFunc(duet.Ports, func(x struct{ Published, Target int }) bool { return x.Published == p && x.Target == p }) {
			t.Errorf("duet does not publish port %d: %+v", p, duet.Ports)
		}
	}
	if minio.Healthcheck == nil {
		t.Error("minio has no healthcheck")
	}
	if duet.DependsOn["minio"].Condition != "service_healthy" {
		t.Errorf("duet does not wait for a healthy minio: %+v", duet.DependsOn)
	}
	for _, k := range []string{"DUET_S3_ENDPOINT", "DUET_S3_ACCESS_KEY", "DUET_S3_SECRET_KEY", "DUET_S3_BUCKET"} {
		if duet.Environment[k] == "" {
			t.Errorf("duet lacks %s", k)
		}
	}
	if len(duet.Volumes) == 0 || len(minio.Volumes) == 0 || len(cf.Volumes) < 2 {
		t.Error("duet and minio need named volumes for their data")
	}
	if _, ok := cf.Services["minio-init"]; !ok {
		t.Error("no bucket-creating service")
	}
	dockerfile, err := os.ReadFile(filepath.Join(testDir, "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(dockerfile), "\nFROM "); n < 1 || !strings.HasPrefix(string(dockerfile), "#") ||
		!slices.ContainsFunc(strings.Split(string(dockerfile), "\n"), func(l string) bool { return strings.HasPrefix(l, "FROM golang:1.26") }) {
		t.Error("the Dockerfile is not a multi-stage build on Go 1.26")
	}
}

// composeFile finds Debian's docker-compose (make deps installs it; in CI
// its absence fails the test) and the repository's docker-compose.yml.
func composeFile(t *testing.T) (bin, file string) {
	t.Helper()
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("docker-compose is not installed (make deps installs it)")
		}
		t.Skip("docker-compose is not installed (make deps installs it)")
	}
	return bin, filepath.Join(testDir, "..", "docker-compose.yml")
}
