package media_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestComposeClusterFile validates docker-compose.cluster.yml (docs/cluster.md
// §19) with docker-compose config, as TestComposeFile does the single-node
// file: three Duet nodes of one cluster, routed to each other, each with its
// own data volume and ports, media on in the one MinIO they share (cluster
// mode needs a shared S3, docs/cluster.md §14.3) with the same media URL;
// and no default for any secret — without them compose refuses and says
// what to set.
func TestComposeClusterFile(t *testing.T) {
	bin, _ := composeFile(t)
	file := filepath.Join(testDir, "..", "docker-compose.cluster.yml")
	secrets := []string{"DUET_SECRET", "DUET_CLUSTER_SECRET", "MINIO_ROOT_PASSWORD"}
	// An env file of our own, so that a developer's .env or environment
	// does not count.
	config := func(env string) (string, error) {
		envFile := filepath.Join(t.TempDir(), "test.env")
		if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-f", file, "--env-file", envFile, "config")
		for _, kv := range os.Environ() {
			if !slices.ContainsFunc(secrets, func(s string) bool { return strings.HasPrefix(kv, s+"=") }) {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Each secret missing in turn: refused, naming it.
	for _, missing := range secrets {
		var env strings.Builder
		for _, s := range secrets {
			if s != missing {
				fmt.Fprintf(&env, "%s=set-%s\n", s, strings.ToLower(s))
			}
		}
		if out, err := config(env.String()); err == nil || !strings.Contains(out, "set "+missing+" in .env") {
			t.Errorf("without %s: err %v, want a refusal naming it:\n%s", missing, err, out)
		}
	}

	out, err := config("DUET_SECRET=usersig-key\nDUET_CLUSTER_SECRET=route-pw\nMINIO_ROOT_PASSWORD=minio-pw\n")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var cf struct {
		Services map[string]struct {
			Build       any
			Ports       []struct{ Published, Target int }
			Volumes     []string
			Healthcheck map[string]any
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
			Environment map[string]string
		}
		Volumes map[string]any
	}
	if err := yaml.Unmarshal([]byte(out), &cf); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	nodes := []string{"duet1", "duet2", "duet3"}
	if minio := cf.Services["minio"]; minio.Healthcheck == nil || minio.Environment["MINIO_ROOT_PASSWORD"] != "minio-pw" {
		t.Errorf("minio: healthcheck %v, password %q", minio.Healthcheck, minio.Environment["MINIO_ROOT_PASSWORD"])
	}
	if _, ok := cf.Services["minio-init"]; !ok {
		t.Error("no bucket-creating service")
	}
	volumes, published := map[string]string{}, map[int]string{}
	for _, name := range nodes {
		s, ok := cf.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		env := s.Environment
		if s.Build == nil {
			t.Errorf("%s is not built from the Dockerfile", name)
		}
		want := map[string]string{
			"DUET_NODE": name, "DUET_CLUSTER_NAME": cf.Services[nodes[0]].Environment["DUET_CLUSTER_NAME"],
			"DUET_CLUSTER_SECRET": "route-pw", "DUET_SECRET": "usersig-key",
			"DUET_CLUSTER_LISTEN": "0.0.0.0:6222", "DUET_REPLICAS": "3",
			"DUET_S3_ENDPOINT": "minio:9000", "DUET_S3_SECRET_KEY": "minio-pw",
			"DUET_MEDIA_URL": cf.Services[nodes[0]].Environment["DUET_MEDIA_URL"],
		}
		if v, set := env["DUET_MEDIA"]; set && v != "true" {
			t.Errorf("%s: DUET_MEDIA=%q: media is off", name, v)
		}
		if s.DependsOn["minio"].Condition != "service_healthy" || s.DependsOn["minio-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s does not wait for a healthy MinIO and its bucket: %+v", name, s.DependsOn)
		}
		for k, v := range want {
			if env[k] != v || v == "" {
				t.Errorf("%s: %s=%q, want %q", name, k, env[k], v)
			}
		}
		routes := strings.Split(env["DUET_CLUSTER_ROUTES"], ",")
		for _, peer := range nodes {
			if !slices.Contains(routes, "nats://"+peer+":6222") {
				t.Errorf("%s's routes %q lack %s", name, routes, peer)
			}
		}
		if len(s.Volumes) != 1 || !strings.HasSuffix(strings.TrimSuffix(s.Volumes[0], ":rw"), ":/data") {
			t.Errorf("%s: volumes %q, want one at /data", name, s.Volumes)
		} else {
			vol, _, _ := strings.Cut(s.Volumes[0], ":")
			if other, dup := volumes[vol]; dup {
				t.Errorf("%s and %s share the volume %s", name, other, vol)
			}
			if _, declared := cf.Volumes[vol]; !declared {
				t.Errorf("%s's volume %s is not a named volume", name, vol)
			}
			volumes[vol] = name
		}
		for _, target := range []int{1883, 8083, 8080} {
			i := slices.IndexFunc(s.Ports, func(p struct{ Published, Target int }) bool { return p.Target == target })
			if i < 0 {
				t.Errorf("%s does not publish its port %d", name, target)
				continue
			}
			if other, dup := published[s.Ports[i].Published]; dup {
				t.Errorf("%s and %s both publish host port %d", name, other, s.Ports[i].Published)
			}
			published[s.Ports[i].Published] = name
		}
	}
}
