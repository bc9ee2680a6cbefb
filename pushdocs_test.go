package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/duet-im/duet/push"
)

// startDir is the package directory, taken before any test runs, so that
// files of the repository are found whatever a test does to the working
// directory.
var startDir, _ = os.Getwd()

// TestDocsPushExampleStarts: the `push:` example of docs/push.md is
// complete for all seven vendors, has no misspelt key, and goes through the
// real config loader and starts the pusher with no error and no warning.
// Its two key files are stand-ins written here (a P-256 .p8 key, a service
// account JSON).
func TestDocsPushExampleStarts(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(startDir, "docs/push.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/push.md")
	}
	var root struct {
		Push push.Config `yaml:"push"`
	}
	dec := yaml.NewDecoder(strings.NewReader(block))
	dec.KnownFields(true) // a misspelt key in the docs fails here
	if err := dec.Decode(&root); err != nil {
		t.Fatal(err)
	}
	c := root.Push
	if c.Grace != 3*time.Second || c.RetryBase != time.Second || c.MaxAttempts != 8 {
		t.Errorf("timings: %+v", c)
	}
	if c.APNs == nil || c.APNs.KeyID == "" || c.APNs.TeamID == "" || c.APNs.BundleID == "" || c.APNs.KeyFile == "" {
		t.Errorf("apns: %+v", c.APNs)
	}
	if c.FCM == nil || c.FCM.ServiceAccountFile == "" {
		t.Errorf("fcm: %+v", c.FCM)
	}
	// Every vendor's IM class is spelt out in the example (docs/push.md,
	// "Message classes"), not left to the defaults.
	if c.Huawei == nil || c.Huawei.AppID == "" || c.Huawei.AppSecret == "" || c.Huawei.Category != "IM" {
		t.Errorf("huawei: %+v", c.Huawei)
	}
	if c.Xiaomi == nil || c.Xiaomi.AppSecret == "" || c.Xiaomi.PackageName == "" || c.Xiaomi.ChannelID == "" {
		t.Errorf("xiaomi: %+v", c.Xiaomi)
	}
	if c.OPPO == nil || c.OPPO.AppKey == "" || c.OPPO.MasterSecret == "" || c.OPPO.Category != "IM" || c.OPPO.NotifyLevel == 0 {
		t.Errorf("oppo: %+v", c.OPPO)
	}
	if c.VIVO == nil || c.VIVO.AppID == "" || c.VIVO.AppKey == "" || c.VIVO.AppSecret == "" ||
		c.VIVO.Classification == nil || *c.VIVO.Classification != 1 || c.VIVO.Category != "IM" {
		t.Errorf("vivo: %+v", c.VIVO)
	}
	if c.Meizu == nil || c.Meizu.AppID == "" || c.Meizu.AppSecret == "" || c.Meizu.NoticeMsgType == nil || *c.Meizu.NoticeMsgType != 1 {
		t.Errorf("meizu: %+v", c.Meizu)
	}
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pemOf := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	p8 := filepath.Join(dir, "AuthKey.p8")
	sa := filepath.Join(dir, "service-account.json")
	saJSON, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "demo", "private_key_id": "k1",
		"private_key": pemOf(rk), "client_email": "push@demo.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"})
	for name, data := range map[string]string{p8: pemOf(ec), sa: string(saJSON)} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for from, to := range map[string]string{"/etc/duet/AuthKey_ABC123DEFG.p8": p8, "/etc/duet/firebase-service-account.json": sa} {
		if !strings.Contains(block, from) {
			t.Fatalf("the example no longer names %s", from)
		}
		block = strings.ReplaceAll(block, from, to)
	}
	file := filepath.Join(dir, "duet.yaml")
	if err := os.WriteFile(file, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig("test", []string{"--config", file})
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	p, err := push.New(push.Options{Config: cfg.Push, Log: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("the documented example does not start: %v", err)
	}
	for _, v := range push.Vendors {
		if !p.Enabled(v) {
			t.Errorf("%s is not configured by the example", v)
		}
	}
	if len(p.Warnings()) != 0 || logged.Len() != 0 {
		t.Errorf("the documented example starts with warnings: %q %s", p.Warnings(), logged.String())
	}
}
