package push

import (
	"strings"
	"testing"
)

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

// Configured names the vendors with a section, in Vendors' order: the
// start-up line lists them, and cluster mode refuses any.
func TestConfigured(t *testing.T) {
	if got := (Config{}).Configured(); len(got) != 0 {
		t.Fatalf("no section: %v", got)
	}
	all := Config{APNs: &APNsConfig{}, FCM: &FCMConfig{}, Huawei: &HuaweiConfig{}, Xiaomi: &XiaomiConfig{},
		OPPO: &OPPOConfig{}, VIVO: &VIVOConfig{}, Meizu: &MeizuConfig{}}
	if got := all.Configured(); strings.Join(got, ",") != strings.Join(Vendors, ",") {
		t.Fatalf("every section: %v, want %v", got, Vendors)
	}
	if got := (Config{Meizu: &MeizuConfig{}, FCM: &FCMConfig{}}).Configured(); strings.Join(got, ",") != "fcm,meizu" {
		t.Fatalf("fcm and meizu: %v", got)
	}
}
