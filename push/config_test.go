package push

import (
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestDocsConfigExample keeps docs/push.md's example in step with Config.
func TestDocsConfigExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/push.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/push.md")
	}
	var root struct {
		Push Config `yaml:"push"`
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
	if c.Huawei == nil || c.Huawei.AppID == "" || c.Huawei.AppSecret == "" {
		t.Errorf("huawei: %+v", c.Huawei)
	}
	if c.Xiaomi == nil || c.Xiaomi.AppSecret == "" || c.Xiaomi.PackageName == "" {
		t.Errorf("xiaomi: %+v", c.Xiaomi)
	}
	if c.OPPO == nil || c.OPPO.AppKey == "" || c.OPPO.MasterSecret == "" {
		t.Errorf("oppo: %+v", c.OPPO)
	}
	if c.VIVO == nil || c.VIVO.AppID == "" || c.VIVO.AppKey == "" || c.VIVO.AppSecret == "" {
		t.Errorf("vivo: %+v", c.VIVO)
	}
	if c.Meizu == nil || c.Meizu.AppID == "" || c.Meizu.AppSecret == "" {
		t.Errorf("meizu: %+v", c.Meizu)
	}
}

func TestMissingCredentials(t *testing.T) {
	for name, c := range map[string]Config{
		"apns":   {APNs: &APNsConfig{KeyID: "k"}},
		"fcm":    {FCM: &FCMConfig{ProjectID: "p"}},
		"huawei": {Huawei: &HuaweiConfig{AppID: "1"}},
		"xiaomi": {Xiaomi: &XiaomiConfig{AppSecret: "s"}},
		"oppo":   {OPPO: &OPPOConfig{AppKey: "k"}},
		"vivo":   {VIVO: &VIVOConfig{AppID: "x", AppKey: "k", AppSecret: "s"}},
		"meizu":  {Meizu: &MeizuConfig{AppID: "1"}},
	} {
		if _, err := New(Options{Config: c}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}
